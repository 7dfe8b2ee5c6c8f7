import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import random_points

import hubjax
from hubjax import __main__ as entry


def run(capsys, *args):
    code = entry.main(["analyze", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def data(tmp_path):
    x = random_points(150, 20, seed=1)
    path = tmp_path / "points.npy"
    np.save(path, x)
    return x, path


def test_json_report_equals_api(data, capsys):
    x, path = data
    code, out, err = run(capsys, path, "--k", 7, "--metric", "cosine", "--json")
    assert code == 0, err
    result = json.loads(out)
    report = hubjax.hubness(x, k=7, metric="cosine")
    for name, value in report.measures().items():
        assert result["measures"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert result["k_occurrence"] == np.asarray(report.k_occurrence).tolist()
    assert result["n_points"] == 150 and result["n_features"] == 20
    top = result["top_hubs"][0]
    assert top["k_occurrence"] == int(report.k_occurrence.max())


def test_json_report_with_reduction_equals_api(data, capsys):
    x, path = data
    code, out, _ = run(
        capsys, path, "--k", 5, "--reduction", "mp_gaussian", "--candidates", 30, "--json"
    )
    assert code == 0
    report = hubjax.hubness(x, k=5, reduction="mp_gaussian", candidates=30)
    result = json.loads(out)
    assert result["k_occurrence"] == np.asarray(report.k_occurrence).tolist()
    assert result["measures"]["k_skewness"] == pytest.approx(float(report.k_skewness), rel=1e-6)


def test_readable_report_and_plot(data, capsys, tmp_path):
    _, path = data
    png = tmp_path / "hist.png"
    code, out, _ = run(capsys, path, "--plot", png)
    assert code == 0
    assert "k_skewness" in out and "top hubs" in out and "anti-hubs" in out
    assert len(out.splitlines()) < 25
    assert png.stat().st_size > 1000


def test_csv_with_header_and_npz(tmp_path, capsys):
    x = random_points(40, 3, seed=2)
    csv = tmp_path / "p.csv"
    csv.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in x))
    code, out, _ = run(capsys, csv, "--k", 3, "--json")
    assert code == 0
    expected = hubjax.hub_values(np.loadtxt(csv, delimiter=",", skiprows=1), k=3)
    assert json.loads(out)["k_occurrence"] == np.asarray(expected).tolist()
    npz = tmp_path / "p.npz"
    np.savez(npz, other=np.zeros(3), points=x)
    code, out, _ = run(capsys, npz, "--key", "points", "--k", 3, "--json")
    assert code == 0 and json.loads(out)["n_points"] == 40


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, [], "no such file"),
        ("txt", [], "unsupported file type"),
        ("garbage_npy", [], "cannot read"),
        ("strings_npy", [], "not numeric"),
        ("nan_npy", [], "non-finite"),
        ("text_csv", [], "non-numeric value"),
        ("ragged_csv", [], "different numbers of columns"),
        ("empty_csv", [], "empty"),
        ("ok_npy", ["--k", 40], "too large"),
        ("ok_npy", ["--k", 0], "at least 1"),
        ("ok_npy", ["--k", 5, "--reduction", "nicdm", "--candidates", 3], "too large"),
        ("cube_npy", [], "2-D array"),
        ("ok_npz", ["--key", "nope"], "has no array"),
        ("ok_npy", ["--k", 3, "--reduction", "dis_sim_local", "--metric", "dot"], "Euclidean"),
    ],
)
def test_bad_input_is_one_line_on_stderr(tmp_path, capsys, make, args, message):
    path = tmp_path / "missing.npy"
    if make == "txt":
        path = tmp_path / "p.txt"
        path.write_text("1,2\n")
    elif make == "garbage_npy":
        path.write_bytes(b"not an npy file at all")
    elif make == "strings_npy":
        np.save(path, np.array([["a", "b"]]))
    elif make == "nan_npy":
        x = random_points(10, 2)
        x[4, 1] = np.nan
        np.save(path, x)
    elif make == "text_csv":
        path = tmp_path / "p.csv"
        path.write_text("1,2\n3,x\n")
    elif make == "ragged_csv":
        path = tmp_path / "p.csv"
        path.write_text("1,2\n3,4,5\n")
    elif make == "empty_csv":
        path = tmp_path / "p.csv"
        path.write_text("\n")
    elif make == "ok_npy":
        np.save(path, random_points(40, 3))
    elif make == "cube_npy":
        np.save(path, np.zeros((2, 3, 4)))
    elif make == "ok_npz":
        path = tmp_path / "p.npz"
        np.savez(path, a=np.zeros((3, 2)))
    code, out, err = run(capsys, path, *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err


def test_console_entry_point_subprocess(data):
    _, path = data
    res = subprocess.run(
        [sys.executable, "-m", "hubjax", "analyze", str(path), "--k", "3", "--json"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0 and json.loads(res.stdout)["k"] == 3
    res = subprocess.run(
        [sys.executable, "-m", "hubjax", "analyze", "/nonexistent.npy"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_csv_with_bom_keeps_its_first_row(tmp_path, capsys):
    x = random_points(30, 3, seed=4)
    path = tmp_path / "bom.csv"
    text = "\n".join(",".join(map(str, r.tolist())) for r in x)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    code, out, err = run(capsys, path, "--k", 3, "--json")
    assert code == 0, err
    assert json.loads(out)["n_points"] == 30


def test_csv_empty_cell_is_an_error_not_a_header(tmp_path, capsys):
    path = tmp_path / "gap.csv"
    path.write_text("1.0,,3.0\n4,5,6\n7,8,9\n1,1,1\n")
    code, _out, err = run(capsys, path, "--k", 1)
    assert code == 2 and "line 1: empty value" in err and len(err.strip().splitlines()) == 1


def test_float64_offset_data_is_centred_before_the_cast(tmp_path, capsys):
    rng = np.random.default_rng(5)
    x = 1e6 + rng.normal(scale=0.01, size=(200, 4))
    path = tmp_path / "wide.npy"
    np.save(path, x)
    code, out, err = run(capsys, path, "--k", 5, "--json")
    assert code == 0, err
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    ref = np.bincount(np.argsort(d, axis=1)[:, :5].ravel(), minlength=200)
    got = np.asarray(json.loads(out)["k_occurrence"])
    assert (got != ref).sum() <= 2  # float32 near-ties only


def test_float64_beyond_float32_range_is_rescaled(tmp_path, capsys):
    x = random_points(60, 3, seed=6).astype(np.float64) * 1e300
    path = tmp_path / "huge.npy"
    np.save(path, x)
    code, out, err = run(capsys, path, "--k", 4, "--json")
    assert code == 0, err
    expected = hubjax.hub_values(random_points(60, 3, seed=6), k=4)
    np.testing.assert_array_equal(json.loads(out)["k_occurrence"], expected)


@pytest.mark.parametrize("stream", [False, True])
def test_finite_rows_beyond_float32_among_small_ones_are_refused_by_name(tmp_path, capsys, stream):
    """One finite row at 1e300 among rows near 1: float32 cannot hold both, so rescaling would
    collapse the small rows and the huge one would turn into a non-finite nobody's-neighbour:
    the run used to exit 0 with those counts. Now an error naming the row."""
    x = random_points(40, 3, seed=7).astype(np.float64)
    x[5] = 1e300
    path = tmp_path / "one_huge.npy"
    np.save(path, x)
    code, out, err = run(capsys, path, "--k", 3, *(["--stream"] if stream else []))
    assert code == 2 and out == "", out
    assert len(err.strip().splitlines()) == 1
    assert "beyond float32's range" in err and "rows 5," in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hub-size", "nan"], "--hub-size must be a positive finite number"),
        (["--hub-size", "-1"], "--hub-size must be a positive finite number"),
        (["--hub-size", "inf"], "--hub-size must be a positive finite number"),
        (["--hub-size", "0"], "--hub-size must be a positive finite number"),
        (["--block-mb", "-5"], "--block-mb must be at least 1"),
        (["--block-mb", "0", "--stream"], "--block-mb must be at least 1"),
        (["--approximate", "--min-recall", "2"], "--min-recall must lie in [0, 1]"),
        (["--approximate", "--min-recall", "nan"], "--min-recall must lie in [0, 1]"),
        (["--approximate", "--min-recall", "-0.1"], "--min-recall must lie in [0, 1]"),
    ],
)
def test_numeric_options_without_meaning_are_refused_before_any_work(data, capsys, args, message):
    _, path = data
    code, out, err = run(capsys, path, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("hubjax analyze: error: ")
    assert message in err


def test_json_is_strict_and_plot_path_is_reported(tmp_path, capsys):
    path = tmp_path / "const.npy"
    np.save(path, np.tile(np.arange(4.0, dtype=np.float32), (12, 1)) + np.eye(12, 4))
    code, out, err = run(capsys, path, "--k", 11, "--json")
    assert code == 0, err
    assert "NaN" not in out
    json.loads(out)  # strict parse
    folder = tmp_path / "plots"
    folder.mkdir()
    code, out, err = run(capsys, path, "--k", 3, "--plot", folder)
    assert code == 0, err
    written = folder / "const_hubness.png"
    assert written.exists() and f"plot written to {written}" in out
    code, out, err = run(capsys, path, "--k", 3, "--plot", tmp_path / "noext")
    assert (tmp_path / "noext.png").exists() and "noext.png" in out


def test_truncated_npz_and_bad_option_values_are_one_line(tmp_path, capsys):
    path = tmp_path / "cut.npz"
    np.savez(path, a=random_points(100, 5))
    path.write_bytes(path.read_bytes()[:200])
    code, _, err = run(capsys, path)
    assert code == 2 and "cannot read" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        entry.main(["analyze", str(path), "--k", "abc"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid int value" in err


def test_version_and_top_level_help(capsys):
    with pytest.raises(SystemExit):
        entry.main(["--version"])
    assert hubjax.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        entry.main(["--help"])
    out = capsys.readouterr().out
    assert "analyze" in out and "demo" in out
