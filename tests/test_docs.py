"""The API reference site builds with warnings as errors and covers every public name."""

import importlib
import pathlib
import subprocess
import sys
import types

import pytest

import hubjax

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

pytest.importorskip("sphinx", reason="the docs extra (sphinx) is part of the test extra")


MODULES = (
    "approximate",
    "distributed",
    "metrics",
    "reduction",
    "sampling",
    "sklearn",
    "gan",
    "streaming",
)


def public_names():
    names = []
    for name in hubjax.__all__:
        value = getattr(hubjax, name)
        if isinstance(value, types.ModuleType):
            continue
        names.append(f"hubjax.{name}")
    for module in MODULES:
        mod = importlib.import_module(f"hubjax.{module}")
        names += [f"hubjax.{module}.{name}" for name in mod.__all__ if name != "METHODS"]
    return names


def test_every_public_module_declares_all():
    for module in MODULES:
        mod = importlib.import_module(f"hubjax.{module}")
        defined = {
            name
            for name, value in vars(mod).items()
            if not name.startswith("_")
            and getattr(value, "__module__", None) == mod.__name__
            and callable(value)
        }
        assert defined <= set(mod.__all__), (module, defined - set(mod.__all__))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_docs_build_without_warnings(built):
    assert (built / "index.html").exists()
    assert (built / "migration.html").exists()


def test_api_reference_covers_every_public_name(built):
    html = (built / "api.html").read_text()
    missing = [name for name in public_names() if f'id="{name}"' not in html]
    assert not missing, missing


def test_documented_objects_have_docstrings():
    for name in public_names():
        module, _, attr = name.rpartition(".")
        value = getattr(importlib.import_module(module), attr)
        assert (value.__doc__ or "").strip(), name
