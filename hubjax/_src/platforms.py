"""The platforms a program is planned for, and the one dispatch that picks the plan of the
platform it is lowered for (never the tracing host's backend)."""

from __future__ import annotations

import functools
import os

from jax import lax

# The platforms plans are made for: "gpu" is every platform without a branch of its own.
PLATFORMS = ("cpu", "tpu", "gpu")

# The group selections a TPU program may use (HUBJAX_TPU_SELECT): "exact", the default, whose
# cost was measured on a GPU; "approx_min_k", lax.approx_min_k's partial reduction with the
# exact certificate of hubjax._src.select.smallest_k_certified (the same bits), not measured on
# a TPU: an opt-in.
TPU_SELECTIONS = ("exact", "approx_min_k")


def tpu_selection() -> str:
    """``HUBJAX_TPU_SELECT`` (one of :data:`TPU_SELECTIONS`, default ``"exact"``), read when a
    program is traced: a program already traced keeps the selection it was traced with (set
    the variable before the first call, or call ``jax.clear_caches()`` after changing it)."""
    value = os.environ.get("HUBJAX_TPU_SELECT", "exact")
    if value not in TPU_SELECTIONS:
        raise ValueError(f"HUBJAX_TPU_SELECT={value!r}: expected one of {TPU_SELECTIONS}.")
    return value


def per_platform(run, plans: dict, *args):
    """``run(plan, *args)`` with the plan of the platform the program is lowered for:
    ``plans`` maps each of :data:`PLATFORMS` to a static plan; one ``lax.platform_dependent``
    branch per plan that differs from the GPU's (the default), none where all agree."""
    default = plans["gpu"]
    branches = {p: functools.partial(run, plan) for p, plan in plans.items() if plan != default}
    if not branches:
        return run(default, *args)
    return lax.platform_dependent(*args, **branches, default=functools.partial(run, default))
