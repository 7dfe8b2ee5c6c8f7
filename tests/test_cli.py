import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import random_points

import hubjax
from hubjax import __main__ as entry
from hubjax import cli


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
        ("nan_npy", [], "non-finite values (NaN or inf) in 1 row(s): 5 (rows numbered from 1)"),
        ("text_csv", [], "line 2, column 2: 'x' is not a number (delimiter comma"),
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
        path = tmp_path / "p.dat"
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
    assert (
        code == 2 and "line 1, column 2: empty value" in err and len(err.strip().splitlines()) == 1
    )


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


# --- start-up without JAX, text files, reports, the compilation cache ------------------------

_NO_JAX = """
import sys
from hubjax.__main__ import main
code = main(sys.argv[1:])
assert "jax" not in sys.modules, "imported jax"
print("exit", code)
"""


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        ([], "usage: hubjax"),
        (["analyze", "--help"], "--drop-columns"),
        (["analyze", "MISSING.npy"], "no such file"),
        (["analyze", "BAD.csv"], "line 2, column 1"),
        (["analyze", "MISSING.npy", "--hub-size", "nan"], "--hub-size"),
        (["analyze", "OK.npy", "--plot", "NOFOLDER/p.png"], "does not exist"),
        (["analyze", "OK.npy", "--plot", "p.xyz"], "unsupported image type"),
    ],
)
def test_usage_and_input_errors_answer_without_importing_jax(tmp_path, args, expect):
    """``hubjax --help``, a bad option, a bad file or plot path: answered before JAX is
    imported (2.7 s on a 2-core CPU before; a fraction of a second now)."""
    (tmp_path / "BAD.csv").write_text("1,2\nx,3\n")
    np.save(tmp_path / "OK.npy", random_points(20, 3))
    out = subprocess.run(
        [sys.executable, "-c", _NO_JAX, *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert expect in out.stdout + out.stderr, out
    assert out.returncode in (0, 2) and "imported jax" not in out.stderr, out.stderr
    if args and args[-1] != "--help":
        assert "exit 2" in out.stdout and len(out.stderr.strip().splitlines()) == 1, out


def test_unwritable_plot_path_fails_before_the_work(data, capsys, tmp_path):
    _, path = data
    code, out, err = run(capsys, path, "--plot", tmp_path / "no" / "such" / "folder.png")
    assert code == 2 and out == "" and "does not exist" in err


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ('"{0}","{1}","{2}"', []),  # quoted numbers
        ("{0};{1};{2}", []),  # semicolons, detected
        ("{0}  {1}   {2}", []),  # runs of spaces
        ("{0}\t{1}\t{2}", ["--delimiter", "tab"]),
        ("{0}|{1}|{2}", ["--delimiter", "|"]),
        ("{0},{1},{2},cat", ["--drop-columns", "4"]),  # a label column, by number
        ("{0},{1},{2},cat", ["--drop-columns", "label"]),  # by header name
        ("id{3},{0},{1},{2}", ["--columns", "a,b,c"]),  # kept columns, by name
    ],
)
def test_delimited_text_files(tmp_path, capsys, text, options):
    x = np.round(random_points(30, 3, seed=11), 4).astype(np.float64)
    header = {"label": "a,b,c,label", "a,b,c": "id,a,b,c"}.get(options[-1] if options else "")
    lines = [text.format(*row, i) for i, row in enumerate(x)]
    path = tmp_path / "p.csv"
    path.write_text("\n".join(([header] if header else []) + lines) + "\n")
    code, out, err = run(capsys, path, "--k", 4, "--json", *options)
    assert code == 0, err
    expected = hubjax.hub_values(x.astype(np.float32), k=4)
    np.testing.assert_array_equal(json.loads(out)["k_occurrence"], expected)


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        ("a,b,label\n1,2,x\n3,4,y\n", [], "column 3 ('label'): 'x' is not a number"),
        ("1;2\n3;4\n", ["--delimiter", ","], "delimiter comma"),
        ("1,2\n3,4\n", ["--columns", "7"], "--columns: no column '7'"),
        ("1,2\n3,4\n", ["--drop-columns", "1,2"], "leaves no column"),
        ("1,2\n3,4\n", ["--delimiter", "ab"], "--delimiter must be one character"),
        ("1,2\n3,4\n", ["--columns", "1", "--drop-columns", "2"], "not both"),
    ],
)
def test_text_file_errors_name_the_delimiter_and_columns(
    tmp_path, capsys, content, options, message
):
    path = tmp_path / "p.csv"
    path.write_text(content)
    code, out, err = run(capsys, path, *options)
    assert code == 2 and out == "" and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_npz_with_several_arrays_needs_a_key_and_the_report_names_it(tmp_path, capsys):
    path = tmp_path / "two.npz"
    np.savez(path, labels=np.arange(30.0), points=random_points(30, 4))
    code, out, err = run(capsys, path)
    assert code == 2 and "several arrays ['labels', 'points']; choose one with --key" in err
    code, out, err = run(capsys, path, "--key", "points", "--k", 3)
    assert code == 0 and out.splitlines()[0].startswith(f"{path}[points]: 30 points")
    code, out, err = run(capsys, path, "--key", "points", "--k", 3, "--json")
    assert json.loads(out)["key"] == "points"
    code, out, err = run(capsys, tmp_path / "x.npy", "--key", "points")
    assert code == 2 and "--key names an array inside a .npz file" in err


def test_json_measures_have_float32_digits_and_hubs_name_rows_from_one(data, capsys):
    x, path = data
    code, out, err = run(capsys, path, "--k", 7, "--json")
    assert code == 0, err
    result = json.loads(out)
    report = hubjax.hubness(x, k=7)
    for name, value in report.measures().items():
        got = result["measures"][name]
        assert np.float32(got) == np.float32(value)  # the same float32
        assert len(repr(got)) <= 12, got  # its shortest digits, not a widened double
    top = result["top_hubs"][0]
    assert top["row"] == top["index"] + 1
    _, out, _ = run(capsys, path, "--k", 7)
    assert f"row {top['row']} ({top['k_occurrence']})" in out


def test_files_of_nearby_sizes_share_one_compiled_search(tmp_path, capsys):
    """Row-count buckets: 57 and 60 points are padded to 64; the second file compiles no
    search (its report program, which depends on the count, is small)."""
    from benchmarks.compiles import compiled

    for n in (57, 60):
        np.save(tmp_path / f"p{n}.npy", random_points(n, 6, seed=n))
    with compiled() as names:
        assert run(capsys, tmp_path / "p57.npy", "--k", 5)[0] == 0
    assert "jit(knn)" in names
    with compiled() as names:
        _, out, _ = run(capsys, tmp_path / "p60.npy", "--k", 5, "--json")
    assert "jit(knn)" not in names, names
    expected = hubjax.hub_values(random_points(60, 6, seed=60), k=5)
    np.testing.assert_array_equal(json.loads(out)["k_occurrence"], expected)


def test_compilation_cache_folder_reuse_and_off_switch(tmp_path):
    """A repeated run loads its programs from the cache folder (HUBJAX_CACHE_DIR, else
    XDG_CACHE_HOME/hubjax/jax); HUBJAX_CACHE_DIR=off writes nothing. A folder the caller set
    for JAX (as this test suite does) is kept: see ``use_compilation_cache``."""
    import os

    np.save(tmp_path / "p.npy", random_points(40, 5))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.pop("HUBJAX_CACHE_DIR", None)
    argv = [sys.executable, "-m", "hubjax", "analyze", "p.npy", "--k", "3", "--json"]

    def analyze(**extra):
        out = subprocess.run(
            argv, capture_output=True, text=True, cwd=tmp_path, env={**env, **extra}
        )
        assert out.returncode == 0, out.stderr
        assert out.stderr == "", out.stderr  # no log lines when programs load from the cache
        return json.loads(out.stdout)

    xdg = tmp_path / "xdg"
    first = analyze(XDG_CACHE_HOME=str(xdg))
    cached = sorted(p.name for p in (xdg / "hubjax" / "jax").iterdir())
    assert any(name.startswith("jit_knn") for name in cached), cached
    assert analyze(XDG_CACHE_HOME=str(xdg)) == first
    assert sorted(p.name for p in (xdg / "hubjax" / "jax").iterdir()) == cached  # all loaded
    off = tmp_path / "off"
    assert analyze(XDG_CACHE_HOME=str(off), HUBJAX_CACHE_DIR="off") == first
    assert not off.exists()


def test_the_histogram_plot_draws_every_count_and_marks_the_top_hubs():
    """A hub at 888 on an axis of ~900 units: one-unit bars were thinner than a pixel and the
    tail vanished; every non-zero count is now a marker on a stem, O = 0 included."""
    hist = np.zeros(900, int)
    hist[[0, 1, 2, 10, 888]] = [310, 400, 280, 9, 1]
    result = {
        "path": "x.npy",
        "k": 10,
        "hub_size": 2.0,
        "n_antihubs": 310,
        "histogram": hist.tolist(),
        "measures": {"k_skewness": float("nan")},
        "top_hubs": [{"index": 41, "row": 42, "k_occurrence": 888}],
    }
    fig = cli.figure(result)
    ax = fig.axes[0]
    drawn = np.concatenate([np.asarray(line.get_xdata(), float) for line in ax.get_lines()])
    assert {0, 1, 2, 10, 888} <= set(drawn.tolist())
    assert ax.get_xlim()[0] < 0 < 888 < ax.get_xlim()[1]  # O = 0 and the largest hub in view
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["row 42"]
    assert "undefined" in fig._suptitle.get_text()
