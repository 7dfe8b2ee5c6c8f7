"""The sdist and the wheel hold what they should, and the sdist's own tests run from it."""

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build(kind: str, out: Path) -> Path:
    code = f"import sys; from setuptools import build_meta as b; print(b.build_{kind}(sys.argv[1]))"
    res = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out / res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    return _build("sdist", tmp_path_factory.mktemp("sdist"))


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
        "hubjax/_cpu_select.cc",
        "tests/conftest.py",
        "tests/reference.py",
        "docs/conf.py",
        "docs/api.rst",
    ):
        assert required in names, required
    assert not any(name.endswith(".so") for name in names)


def test_sdist_tests_run_from_the_sdist(sdist, tmp_path):
    with tarfile.open(sdist) as tar:
        try:
            tar.extractall(tmp_path, filter="data")
        except TypeError:  # Python without extraction filters
            tar.extractall(tmp_path)
    (top,) = tmp_path.iterdir()
    env = dict(os.environ, PYTHONPATH=str(top))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_measures.py",
            "-k",
            "formulas or constant or pytree",
        ],
        cwd=top,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout


def test_wheel_contents(tmp_path):
    wheel = _build("wheel", tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "hubjax/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), names
    assert not any(name.startswith("tests/") for name in names)
    if sys.platform == "linux":  # built where a C++ compiler exists (CI)
        assert any(name.startswith("hubjax/_cpu_select") and name.endswith(".so") for name in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert (
        "Requires-Dist: jax!=0.10.2,>=0.7.1" in text or "Requires-Dist: jax>=0.7.1,!=0.10.2" in text
    )
