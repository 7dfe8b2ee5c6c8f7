"""The approximate (IVF) engine: equal to the exact one when every list is probed, recall at
partial probing, determinism, jit/vmap, front ends and bad settings."""

import json

import jax
import numpy as np
import pytest
from helpers import random_points, sample

import hubjax
from hubjax import __main__ as entry
from hubjax import approximate
from hubjax._src import ivf, search
from hubjax._src.metric import SQEUCLIDEAN
from hubjax.approximate import IVF


def mixture(n, d, clusters=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)) * 4
    spreads = rng.uniform(0.3, 2.0, clusters)
    label = rng.integers(0, clusters, n)
    x = centres[label] + rng.normal(size=(n, d)) * spreads[label, None]
    return (x + 50.0).astype(np.float32)  # uncentred


ALL = IVF(nlist=6, nprobe=6, chunk=64, ratio=None)  # every list probed: exact


@pytest.mark.parametrize(
    "metric", sample(["sqeuclidean", "euclidean", "cosine", "dot"], 1, key="probing_every_list")
)
def test_probing_every_list_equals_the_exact_search(metric):
    x = mixture(1000, 12)
    x[300] = x[20]  # a duplicate
    for include_self in (False, True):
        got = hubjax.knn(x, k=7, metric=metric, include_self=include_self, approximate=ALL)
        want = hubjax.knn(x, k=7, metric=metric, include_self=include_self)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    q = mixture(333, 12, seed=1)
    got = hubjax.knn(q, x, k=5, metric=metric, approximate=ALL)
    want = hubjax.knn(q, x, k=5, metric=metric)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_front_ends_with_every_list_probed():
    x = mixture(600, 10, seed=2)
    np.testing.assert_array_equal(
        hubjax.hub_values(x, k=5, approximate=ALL), hubjax.hub_values(x, k=5)
    )
    assert hubjax.hubness(x, k=5, approximate=ALL).measures() == hubjax.hubness(x, k=5).measures()
    got = hubjax.reduction.knn(x, k=4, method="nicdm", candidates=20, approximate=ALL)
    want = hubjax.reduction.knn(x, k=4, method="nicdm", candidates=20)
    np.testing.assert_array_equal(got[1], want[1])
    assert approximate.sampled_recall(x, k=5, settings=ALL, num_queries=200) == 1.0


def test_recall_with_partial_probing_and_determinism():
    x = random_points(4000, 16, seed=3)  # no clusters: a hard case for any partition
    _, exact = hubjax.knn(x, k=10)
    settings = IVF(nprobe=4, chunk=128)  # 16 lists of ~250 points, a quarter probed
    _, a = hubjax.knn(x, k=10, approximate=settings)
    _, b = hubjax.knn(x, k=10, approximate=settings)
    np.testing.assert_array_equal(a, b)  # fixed seed: deterministic
    rec = float(approximate.recall(a, exact))
    assert 0.5 <= rec < 0.9, rec  # measured 0.60
    low = float(
        approximate.recall(hubjax.knn(x, k=10, approximate=IVF(nprobe=1, chunk=128))[1], exact)
    )
    assert low < rec  # fewer probes, lower recall: the setting matters
    assert not (np.asarray(a) == np.arange(4000)[:, None]).any()


def test_ratio_rule_bounds():
    """ratio=0 probes the own list only (as nprobe=1); a huge ratio probes all nprobe lists."""
    x = mixture(1500, 8, seed=4)
    base = {"nlist": 10, "chunk": 64, "columns": 128}
    own = hubjax.knn(x, k=6, approximate=IVF(nprobe=1, ratio=None, **base))
    zero = hubjax.knn(x, k=6, approximate=IVF(nprobe=5, ratio=0.0, **base))
    np.testing.assert_array_equal(zero[1], own[1])
    fixed = hubjax.knn(x, k=6, approximate=IVF(nprobe=5, ratio=None, **base))
    huge = hubjax.knn(x, k=6, approximate=IVF(nprobe=5, ratio=1e9, **base))
    np.testing.assert_array_equal(huge[1], fixed[1])
    _, exact = hubjax.knn(x, k=6)
    mid = hubjax.knn(x, k=6, approximate=IVF(nprobe=5, ratio=0.5, **base))[1]
    recalls = [float(approximate.recall(i, exact)) for i in (own[1], mid, fixed[1])]
    assert recalls[0] < recalls[1] <= recalls[2], recalls


@pytest.mark.parametrize("include_self", [False, True])
def test_lists_too_small_for_k_are_searched_again_never_left_empty(include_self):
    """k = 200 of 200 references used to leave 4181 of 6000 slots empty (-1, recall 0.30): the
    probed lists held fewer than k points. Such rows are now searched again against every
    point, exactly, so they equal the exact search bit for bit (ties included)."""
    y = np.random.default_rng(3).integers(0, 2, (200, 16)).astype(np.float32)  # ties
    x = random_points(30, 16, seed=4)
    got = hubjax.knn(x, y, k=200, approximate=True)
    assert (np.asarray(got[1]) >= 0).all()
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(hubjax.knn(x, y, k=200)[1]))
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(hubjax.knn(x, y, k=200)[0]))
    k = 150 + int(include_self)
    one_list = IVF(nlist=8, nprobe=1)  # each query sees about 25 points
    got = hubjax.knn(y, k=k, approximate=one_list, include_self=include_self)
    exact = hubjax.knn(y, k=k, include_self=include_self)
    for a, b in zip(got, exact, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if jax.device_count() >= 8:  # the distributed front end's shard of queries
        dist = hubjax.distributed.knn(y, k=k, approximate=one_list, include_self=include_self)
        for a, b in zip(dist, exact, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's buffer assignment")
def test_probing_schedules_give_the_same_bits(monkeypatch):
    """The CPU runs exactly the probing units there are; GPUs and TPUs a static prefix of
    them, then static blocks where units past the last change nothing
    (:func:`hubjax._src.ivf.probe_plan`). Forced here on CPU, each gives the CPU's bits: on
    uneven clusters with duplicates and a NaN row, in-sample with small tiles and the ratio
    rule, and queries apart whose lists are too short for k."""
    x = mixture(900, 10, clusters=7, seed=3)
    x[::3] = x[1::3][: len(x[::3])]  # duplicates
    x[40] = np.nan
    y = x[::-1][:600].copy()
    small = IVF(nlist=12, chunk=32, columns=64)  # many chunks and tiles per list
    calls = ((x, None, 5, small), (x[:60], y[:90], 70, True))

    def search(a, b, k, s):
        return hubjax.knn(a, b, k=k, approximate=s, check_finite=False)

    want = [search(*call) for call in calls]
    cpu_plan = ivf.probe_plan
    plans = {
        "accelerator": lambda *a: cpu_plan(*a[:-1], "gpu"),
        "tiny blocks": lambda *a: (3, 5),  # 3 units, then blocks of 5, the last partly idle
    }
    for name, plan in plans.items():
        monkeypatch.setattr(ivf, "probe_plan", plan)
        jax.clear_caches()
        for call, (d, i) in zip(calls, want, strict=True):
            got = search(*call)
            np.testing.assert_array_equal(got[1], i, err_msg=name)
            np.testing.assert_array_equal(got[0], d, err_msg=name)


def test_scratch_memory_stays_near_the_input_size():
    """XLA's scratch memory of the in-sample search (compiled, not run): the large buffers start
    when their step does (hubjax._src.ivf._after), so it stays under 3.2 times the input
    (2.7 at 100k x 64; 4.6 when XLA:CPU started them all at the top of the program)."""
    n, d = 100_000, 64
    x = jax.ShapeDtypeStruct((n, d), np.float32)
    settings = IVF().validate(n)
    options = search.Options(10, SQEUCLIDEAN, approximate=settings)
    lowered = search._knn.lower(x, None, options)
    scratch = lowered.compile().memory_analysis().temp_size_in_bytes
    assert scratch < 3.2 * n * d * 4, scratch / (n * d * 4)


def test_jit_vmap_and_no_recompile():
    xb = np.stack([mixture(300, 6, seed=s) for s in range(3)])
    settings = IVF(nlist=4, nprobe=2, chunk=32)

    def f(x):
        return hubjax.knn(x, k=4, approximate=settings)

    batched = jax.jit(jax.vmap(f))(xb)
    for b in range(3):
        np.testing.assert_array_equal(batched[1][b], f(xb[b])[1])
    before = search._knn._cache_size()
    f(xb[0] + 1.0)
    assert search._knn._cache_size() == before


def test_bad_settings_name_the_values():
    x = random_points(100, 4)
    with pytest.raises(ValueError, match=r"nlist=200 .* m = 100"):
        hubjax.knn(x, k=3, approximate=IVF(nlist=200))
    with pytest.raises(ValueError, match=r"nprobe=9 .* nlist=4"):
        hubjax.knn(x, k=3, approximate=IVF(nlist=4, nprobe=9))
    with pytest.raises(ValueError, match="train_size=2"):
        hubjax.knn(x, k=3, approximate=IVF(nlist=4, train_size=2))
    with pytest.raises(ValueError, match="ratio=-1"):
        hubjax.knn(x, k=3, approximate=IVF(nlist=4, ratio=-1))
    with pytest.raises(TypeError, match="approximate must be"):
        hubjax.knn(x, k=3, approximate="fast")


def test_cli_reports_recall_and_never_hides_a_shortfall(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, mixture(3000, 16, seed=4))
    code = entry.main(
        ["analyze", str(path), "--approximate", "--nprobe", "1", "--min-recall", "0.999", "--json"]
    )
    out = capsys.readouterr()
    assert code == 0
    result = json.loads(out.out)["approximate"]
    assert result["recall_sampled"] < 0.999 and result["recall_ok"] is False
    assert "below --min-recall" in out.err
    code = entry.main(["analyze", str(path), "--nprobe", "3"])
    assert code == 2 and "--nprobe needs --approximate" in capsys.readouterr().err
    code = entry.main(["analyze", str(path), "--approximate", "--ratio", "abc"])
    assert code == 2 and "--ratio must be a number or 'none'" in capsys.readouterr().err


def test_cli_searches_exactly_where_an_index_cannot_pay(tmp_path, capsys):
    """Without --nprobe, --approximate chooses: below APPROXIMATE_MIN_POINTS points (or when the
    recall target needs more than a quarter of the lists) it searches exactly and says so."""
    x = mixture(3000, 16, seed=5)
    path = tmp_path / "x.npy"
    np.save(path, x)
    code = entry.main(["analyze", str(path), "--approximate", "--k", "5", "--json"])
    out = capsys.readouterr()
    assert code == 0
    result = json.loads(out.out)
    assert result["approximate"]["used"] is False and "searched exactly" in out.err
    np.testing.assert_array_equal(result["k_occurrence"], hubjax.hub_values(x, k=5))
    code = entry.main(["analyze", str(path), "--approximate", "--k", "5"])
    assert "exact search (--approximate would not pay here" in capsys.readouterr().out


def test_tune_probes_until_the_recall_target_or_advises_the_exact_search():
    x = mixture(4000, 16, seed=6)
    lists = IVF(nlist=32)  # a quarter is 8 probes: the default, tried with and without ratio
    tuned = approximate.tune(x, k=10, settings=lists, target_recall=0.9, num_queries=300)
    assert tuned.settings is not None and tuned.settings.nlist == 32
    last = tuned.trials[-1]
    assert tuned.recall >= 0.9 and last == (8, tuned.settings.ratio, tuned.recall)
    # unclustered data (same shapes: the same programs): the target needs more lists
    g = np.random.default_rng(7).normal(size=(4000, 16)).astype(np.float32)
    hard = approximate.tune(g, k=10, settings=lists, target_recall=0.9, num_queries=300)
    assert hard.settings is None
    assert [(p, ratio) for p, ratio, _ in hard.trials] == [(8, 0.15), (8, None)]
    assert all(r < 0.9 for _, _, r in hard.trials)
    # too few lists for an index: nothing is tried
    quick = approximate.tune(g, k=10)
    assert quick.settings is None and quick.trials == () and np.isnan(quick.recall)
    with pytest.raises(ValueError, match="target_recall"):
        approximate.tune(g, k=10, target_recall=1.5)
