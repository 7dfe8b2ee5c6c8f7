"""Heavy integration tests, each run once: sdist -> wheel -> install, the docs build, the Colab
notebook and a two-process distributed run on loopback.

They build packages, run Sphinx or start several Python processes (about a minute together), so
they live in this one module: under pytest-xdist (``--dist loadfile``, the README's test command)
they run one after another on one worker. Everything is built in temporary folders -- the wheel
from the unpacked sdist, as pip builds it, and the notebook installs that wheel -- never in the
repository's ``build/``, so a parallel or repeated run cannot collide with another.
"""

import json
import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import public_names

import hubjax

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOK = ROOT / "examples" / "distributed_hub_values.ipynb"


def _build(kind: str, source: Path, out: Path) -> Path:
    code = f"import sys; from setuptools import build_meta as b; print(b.build_{kind}(sys.argv[1]))"
    res = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out / res.stdout.strip().splitlines()[-1]


# --- sdist, wheel, install ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    return _build("sdist", ROOT, tmp_path_factory.mktemp("sdist"))


@pytest.fixture(scope="module")
def unpacked(sdist, tmp_path_factory):
    out = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(sdist) as tar:
        try:
            tar.extractall(out, filter="data")
        except TypeError:  # Python without extraction filters
            tar.extractall(out)
    (top,) = out.iterdir()
    return top


@pytest.fixture(scope="module")
def wheel(unpacked, tmp_path_factory):
    """The wheel built from the unpacked sdist (what ``pip install`` of a clone does)."""
    return _build("wheel", unpacked, tmp_path_factory.mktemp("wheel"))


def test_sdist_contents(sdist):
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for required in (
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "CITATION.cff",
        "pyproject.toml",
        "setup.py",
        "hubjax/py.typed",
        "hubjax/_src/kernels/_cpu_select.cc",
        "hubjax/_src/kernels/_cpu_select_kernels.inc",
        "hubjax/_src/kernels/_avx512_emulation.h",
        "tests/conftest.py",
        "tests/reference.py",
        "docs/conf.py",
        "docs/api.rst",
    ):
        assert required in names, required
    assert not any(name.endswith(".so") for name in names)


def test_sdist_tests_run_from_the_sdist(unpacked):
    env = dict(os.environ, PYTHONPATH=str(unpacked))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "tests/test_measures.py",
            "-k",
            "formulas or constant or pytree",
        ],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout


def test_wheel_contents(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "hubjax/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), names
    assert not any(name.startswith("tests/") for name in names)
    if sys.platform == "linux":  # built where a C++ compiler exists (CI)
        assert any(
            name.startswith("hubjax/_src/kernels/_cpu_select") and name.endswith(".so")
            for name in names
        )
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert (
        "Requires-Dist: jax!=0.10.2,>=0.7.1" in text or "Requires-Dist: jax>=0.7.1,!=0.10.2" in text
    )


# --- the Colab notebook ------------------------------------------------------------------------


def test_notebook_runs_in_a_colab_layout(wheel, tmp_path):
    """Colab's working directory (/content) holds the clone, named ``hubjax``; the notebook's
    install cell installs it as a regular package. Here the package built from the clone (the
    wheel above) goes to a private folder, and the cells run with that folder on the path and a
    ``hubjax`` clone in the working directory, exactly where an editable install used to be
    shadowed."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code, installs = [], []
    for cell in cells:
        if cell["cell_type"] == "code":
            for line in "".join(cell["source"]).splitlines():
                stripped = line.lstrip()
                if stripped.startswith("%pip install"):
                    installs.append(stripped.split()[-1])
                elif not stripped.startswith(("%", "!")):
                    code.append(line)
    assert installs == ["/content/hubjax"]  # the install cell names the clone
    (tmp_path / "hubjax").symlink_to(ROOT)  # the clone in the working directory
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    source = "\n".join(code).replace("(20_003, 256)", "(2_003, 32)")  # smaller for CI
    script = tmp_path / "notebook.py"
    script.write_text("import sys; sys.path.insert(0, '')\n" + source)
    env = dict(os.environ, PYTHONPATH=str(site))
    res = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("True") >= 3, res.stdout


# --- the docs site -----------------------------------------------------------------------------


def test_docs_build_without_warnings_and_cover_every_public_name(tmp_path):
    pytest.importorskip("sphinx", reason="the docs extra (sphinx) is part of the test extra")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", DOCS, tmp_path],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "migration.html").exists()
    html = (tmp_path / "api.html").read_text()
    missing = [name for name in public_names() if f'id="{name}"' not in html]
    assert not missing, missing
    # one Parameters list per function and no internal type names (jaxtyping's hints rendered
    # as ``Float[jaxlib._jax.Array, 'n d']`` 73 times, and as a second Parameters list)
    assert "jaxlib" not in html
    knn = html[html.index('id="hubjax.knn"') : html.index('id="hubjax.pairwise_distances"')]
    assert knn.count(">Parameters<") == 1
    assert (tmp_path / "cli.html").exists()


# --- two processes, one mesh -------------------------------------------------------------------

TWO_PROCESS = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.distributed.initialize(
        coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2])
    )
    import numpy as np
    from jax.experimental import multihost_utils
    import hubjax

    assert jax.device_count() == 8 and jax.local_device_count() == 4
    x = np.random.default_rng(0).normal(size=(203, 16)).astype(np.float32)
    counts = hubjax.distributed.hub_values(x, k=5)
    _, idx = hubjax.distributed.knn(x, k=5)
    counts = multihost_utils.process_allgather(counts, tiled=True)
    idx = multihost_utils.process_allgather(idx, tiled=True)
    print(json.dumps({"counts": np.asarray(counts).tolist(), "idx": np.asarray(idx).tolist()}))
    jax.distributed.shutdown()
    """
)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_two_processes_on_loopback_match_single_process(tmp_path):
    with socket.socket() as s:  # a free port, chosen by the OS (parallel runs cannot collide)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "two_process.py"
    script.write_text(TWO_PROCESS)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), f"127.0.0.1:{port}", str(pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for pid in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    x = np.random.default_rng(0).normal(size=(203, 16)).astype(np.float32)
    for out, _ in outs:
        result = json.loads(out.strip().splitlines()[-1])
        np.testing.assert_array_equal(result["counts"], hubjax.hub_values(x, k=5))
        np.testing.assert_array_equal(result["idx"], hubjax.knn(x, k=5)[1])
