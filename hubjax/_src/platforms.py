"""The platforms a program is planned for, and the one dispatch that picks the plan of the
platform it is lowered for (never the tracing host's backend)."""

from __future__ import annotations

import functools
import os

import jax
from jax.extend import core
from jax.interpreters import ad, batching, mlir

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
    """``run(plan, *args)`` with the plan of the platform the program is lowered for.

    ``plans`` maps each of :data:`PLATFORMS` to a static plan; ``args`` are pytrees of arrays.
    Where all plans agree, ``run`` is simply called. Otherwise the program holds one branch per
    distinct plan, and the one of the platform it is lowered for is the one compiled.

    Each branch is **traced only for a platform it is lowered for**: the branch of the tracing
    host's platform at once (it gives the result's shapes and is the one a program run where it
    was traced compiles), any other when a program is lowered for that platform
    (``.lower(lowering_platforms=...)``, ``jax.export``). The host's platform decides only what
    is traced first, never which plan a program runs: a CPU program runs the CPU plan whatever
    traced it. A search's branches are most of its trace (two or three per program where plans
    differ), so this shortens every first call.

    That needs ``run`` to take every traced value as an argument: a branch traced at lowering
    cannot read a tracer of the trace that has ended. A ``run`` that reads one from its closure
    raises ``TypeError`` when it is traced (on any host).
    """
    default = plans["gpu"]
    if all(plan == default for plan in plans.values()):
        return run(default, *args)
    host = _host_platform()
    flat, in_tree = jax.tree.flatten(args)
    if not any(isinstance(a, jax.core.Tracer) for a in flat):
        return run(plans[host], *args)  # eager: ops run on the default backend's platform
    flat_run = _FlatRun(run, in_tree)
    traced = jax.make_jaxpr(functools.partial(flat_run, plans[host]))(*flat)
    if any(isinstance(c, jax.core.Tracer) for c in traced.consts):
        raise TypeError(
            f"per_platform: {getattr(run, '__qualname__', run)} reads traced values from its "
            "closure; pass them as arguments."
        )
    if traced.effects:
        raise TypeError("per_platform: branches with side effects are not supported.")
    out = _per_platform_p.bind(
        *flat,
        traced=traced,
        traced_platforms=tuple(p for p in PLATFORMS if plans[p] == plans[host]),
        plans=tuple((p, plans[p]) for p in PLATFORMS),
        flat_run=flat_run,
    )
    return jax.tree.unflatten(flat_run.out_tree, out)


def _host_platform() -> str:
    """The :data:`PLATFORMS` entry of the tracing host: only which branch is traced first."""
    backend = jax.default_backend()
    return backend if backend in ("cpu", "tpu") else "gpu"


class _FlatRun:
    """``run`` on flat leaves, remembering the output's tree (the same for every plan)."""

    def __init__(self, run, in_tree):
        self.run, self.in_tree, self.out_tree = run, in_tree, None

    def __call__(self, plan, *leaves):
        out, tree = jax.tree.flatten(self.run(plan, *jax.tree.unflatten(self.in_tree, leaves)))
        if self.out_tree is None:
            self.out_tree = tree
        elif tree != self.out_tree:
            raise TypeError(f"per_platform: plan {plan!r} returns {tree}, not {self.out_tree}.")
        return out


class _Batched:
    """A flat ``run`` mapped over a batch (the batching rule's branches)."""

    def __init__(self, flat_run, in_axes, size):
        self.flat_run, self.in_axes, self.size = flat_run, in_axes, size

    def __call__(self, plan, *leaves):
        one = functools.partial(self.flat_run, plan)
        return jax.vmap(one, in_axes=self.in_axes, axis_size=self.size)(*leaves)


_per_platform_p = core.Primitive("hubjax_per_platform")
_per_platform_p.multiple_results = True


@_per_platform_p.def_abstract_eval
def _abstract_eval(*avals, traced, **params):
    return traced.out_avals


@_per_platform_p.def_impl
def _impl(*args, traced, **params):
    # evaluated eagerly (a jaxpr run op by op): the host's branch, as eager per_platform
    return core.jaxpr_as_fun(traced)(*args)


def _batching_rule(args, dims, *, traced, traced_platforms, plans, flat_run):
    in_axes = tuple(None if d is batching.not_mapped else d for d in dims)
    size = next(a.shape[d] for a, d in zip(args, in_axes, strict=True) if d is not None)
    # the traced branch batched from its jaxpr (run is not traced again)
    as_fun = core.jaxpr_as_fun(traced)
    batched = jax.make_jaxpr(jax.vmap(as_fun, in_axes=in_axes, axis_size=size))(*args)
    out = _per_platform_p.bind(
        *args,
        traced=batched,
        traced_platforms=traced_platforms,
        plans=plans,
        flat_run=_Batched(flat_run, in_axes, size),
    )
    return out, [0] * len(out)


batching.primitive_batchers[_per_platform_p] = _batching_rule


def _jvp_rule(primals, tangents, **params):
    # reached only where an input carries a tangent (JAX skips the rule for symbolic zeros)
    raise TypeError(
        "hubjax's exact search is not differentiable: its neighbours are a discrete choice. "
        "Stop the gradient at its inputs (jax.lax.stop_gradient) and, where distances need "
        "gradients, recompute them from the returned indices."
    )


ad.primitive_jvps[_per_platform_p] = _jvp_rule


def _lowering(platform: str):
    def rule(ctx, *args, traced, traced_platforms, plans, flat_run):
        if platform not in traced_platforms:  # traced now, from the operands' shapes
            branch = functools.partial(flat_run, dict(plans)[platform])
            specs = [
                jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in ctx.avals_in
            ]
            traced = jax.make_jaxpr(branch)(*specs)
        # the same lowering either way: a program does not depend on what traced it first
        return mlir.core_call_lowering(ctx, *args, name="per_platform", call_jaxpr=traced)

    return rule


mlir.register_lowering(_per_platform_p, _lowering("cpu"), platform="cpu")
mlir.register_lowering(_per_platform_p, _lowering("tpu"), platform="tpu")
mlir.register_lowering(_per_platform_p, _lowering("gpu"))
