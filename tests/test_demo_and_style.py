import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hubjax import __main__ as cli
from hubjax import demo

ROOT = Path(__file__).resolve().parents[1]


def test_dimension_sweep_shows_hubness_growing():
    rows = demo.dimension_sweep(n=400, k=5, dimensions=(2, 256), samples=2)
    assert rows[1]["k_skewness"] > rows[0]["k_skewness"] + 0.5
    assert rows[1]["max_k_occurrence"] > rows[0]["max_k_occurrence"]
    assert rows[1]["antihub_occurrence"] > rows[0]["antihub_occurrence"]
    assert all(int(r["counts"].sum()) == 400 * 5 and r["samples"] == 2 for r in rows)
    assert all(r["k_skewness_sd"] > 0 for r in rows)  # two different sets, averaged


def test_demo_command_writes_table_and_plot(tmp_path, capsys):
    png = tmp_path / "demo.png"
    args = ["--n", "150", "--k", "3", "--samples", "2", "--max-dim", "100", "--plot", str(png)]
    assert cli.main(["demo", *args]) == 0
    out = capsys.readouterr().out
    assert "skewness" in out and "mean over 2 sets" in out
    assert "    64 " in out and "128" not in out  # d = 2 ... 64
    for bad in (["--samples", "0"], ["--max-dim", "1"], ["--k", "5", "--n", "5"]):
        assert cli.main(["demo", *bad]) == 2
    assert png.stat().st_size > 1000


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_check_and_format():
    for args in (["check", "."], ["format", "--check", "."]):
        res = subprocess.run(["ruff", *args], cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


def test_python_dash_m_entry_point():
    res = subprocess.run(
        [sys.executable, "-m", "hubjax", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0 and "demo" in res.stdout
