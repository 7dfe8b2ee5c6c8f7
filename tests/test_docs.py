"""Every public module declares ``__all__`` and every documented name has a docstring (the
Sphinx build itself runs once, in ``test_heavy_integration.py``)."""

import importlib

from helpers import PUBLIC_MODULES, public_names


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
