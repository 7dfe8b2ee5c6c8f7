"""The sample-quality study (issue 14): its tiny mode, its shipped results and the README."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import load_example, sample

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "examples" / "results"


@pytest.fixture(scope="module")
def study():
    return load_example("sample_quality")


def check_rows(study, rows, seeds):
    plans = study.plans()
    assert len(rows) == len(plans) * len(study.DATASETS)
    for row in rows:
        assert set(row) == {
            "dataset",
            "sampler",
            "space",
            "param",
            "acceptance",
            "seeds",
            "metrics",
        }
        assert row["seeds"] == list(seeds)
        assert (row["sampler"], row["space"], row["param"]) in plans
        assert 0 < row["acceptance"] <= 1
        assert set(row["metrics"]) == set(study.COLUMNS[row["dataset"]])
        for m in row["metrics"].values():
            lo, hi = m["ci95"]
            assert lo <= m["mean"] <= hi and np.isfinite([lo, hi]).all()
        if row["sampler"] in ("random", "truncation"):
            assert row["acceptance"] == 1.0
        if row["sampler"] in ("hubness", "radius"):
            # calibrated to the nominal share on a reference batch: same order of magnitude
            assert row["param"] / 3 <= row["acceptance"] <= row["param"] * 3


def test_tiny_mode_runs_and_is_deterministic(study, tmp_path, monkeypatch):
    """The tiny mode on one of its data sets per run, chosen by the run's grid seed (both: 36 s
    on two cores, compilation above all; ``HUBJAX_GRID_SEED=full`` runs both)."""
    monkeypatch.setattr(study, "DATASETS", tuple(sample(study.DATASETS, 1, key="study_data")))
    mode = dataclasses.replace(study.MODES["tiny"], out=tmp_path)
    rows, settings = study.run(mode, log=lambda *a, **k: None)
    check_rows(study, rows, mode.seeds)
    study.write(rows, settings, mode)
    again = json.loads((tmp_path / "sample_quality.json").read_text())
    assert again == json.loads(json.dumps(rows))
    assert "hubness w top 5%" in (tmp_path / "sample_quality.md").read_text()


def test_the_same_keys_give_the_same_samples(study):
    """One sampler of the tiny run redone twice (its own test: the tiny run alone is close to
    a minute on two cores)."""
    g = study.generator("ring", 0, train=False)
    ts = study.hub_thresholds(g, study.MODES["tiny"].batch)
    plan = study.plans().index(("hubness", "w", 0.05))
    key = study.jax.random.fold_in(study.jax.random.key(1000), plan)
    a, _ = study.sample(g, "hubness", "w", 0.05, key, num=50, batch=500, thresholds=ts)
    b, _ = study.sample(g, "hubness", "w", 0.05, key, num=50, batch=500, thresholds=ts)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_quick_mode_uses_the_shipped_checkpoints(study):
    quick = study.MODES["quick"]
    assert not quick.train and len(quick.seeds) >= 5
    for name in study.DATASETS:
        for seed in quick.seeds:
            assert study.checkpoint(name, seed).exists()


def test_shipped_results_have_five_seeds_and_intervals(study):
    rows = json.loads((RESULTS / "sample_quality.json").read_text())
    check_rows(study, rows, list(range(5)))
    random_ring = study.find(rows, "ring", "random")
    assert random_ring["metrics"]["modes_covered"]["mean"] >= 7


def test_readme_section_is_generated_from_the_shipped_results(study):
    rows = json.loads((RESULTS / "sample_quality.json").read_text())
    settings = json.loads((RESULTS / "sample_quality_settings.json").read_text())
    section = study.readme_section(rows, settings, study.to_markdown(rows, settings))
    text = (ROOT / "docs" / "sampling.md").read_text()
    assert "<!-- study:start -->\n" + section + "<!-- study:end -->" in text


def test_samplers_reject_unknown_names(study):
    g = study.generator("ring", 0, train=False)
    with pytest.raises(ValueError, match="unknown sampler"):
        study.sample(g, "nope", None, None, study.jax.random.key(0), num=4, batch=10, thresholds={})
