"""The platforms a program is planned for, and the one dispatch that picks the plan of the
platform it is lowered for (never the tracing host's backend)."""

from __future__ import annotations

import functools

from jax import lax

# The platforms plans are made for: "gpu" is every platform without a branch of its own.
PLATFORMS = ("cpu", "tpu", "gpu")


def per_platform(run, plans: dict, *args):
    """``run(plan, *args)`` with the plan of the platform the program is lowered for:
    ``plans`` maps each of :data:`PLATFORMS` to a static plan; one ``lax.platform_dependent``
    branch per plan that differs from the GPU's (the default), none where all agree."""
    default = plans["gpu"]
    branches = {p: functools.partial(run, plan) for p, plan in plans.items() if plan != default}
    if not branches:
        return run(default, *args)
    return lax.platform_dependent(*args, **branches, default=functools.partial(run, default))
