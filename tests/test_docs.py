"""Every public module declares ``__all__`` and every documented name has a docstring (the
Sphinx build itself runs once, in ``test_heavy_integration.py``)."""

import importlib
from pathlib import Path

from helpers import PUBLIC_MODULES, public_names

from hubjax.__main__ import build_parser


def test_every_public_module_declares_all():
    for module in PUBLIC_MODULES:
        mod = importlib.import_module(f"hubjax.{module}")
        defined = {
            name
            for name, value in vars(mod).items()
            if not name.startswith("_")
            and getattr(value, "__module__", None) == mod.__name__
            and callable(value)
        }
        assert defined <= set(mod.__all__), (module, defined - set(mod.__all__))


def test_documented_objects_have_docstrings():
    for name in public_names():
        module, _, attr = name.rpartition(".")
        value = getattr(importlib.import_module(module), attr)
        assert (value.__doc__ or "").strip(), name


def test_the_command_line_reference_lists_every_option():
    """``docs/cli.rst`` names every option of every command, so the reference cannot fall
    behind the parser."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.rst").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        assert f"hubjax {name}" in page, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"``{flag}" in page or f"[{flag}" in page, (name, flag)
