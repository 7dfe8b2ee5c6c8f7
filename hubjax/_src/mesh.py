"""Arrays from the user's mesh.

Since jax 0.9 ``jax.make_mesh`` gives *Explicit* axes: an array sharded on one carries its
sharding in its type, and a ``dot_general`` of two arrays sharded on the same axis is a
``ShardingTypeError``. The jitted cores call :func:`gather` on their inputs first: points sharded
on Explicit axes are resharded to replicated (on device, no host round-trip), the computation
runs as on one device, and :func:`scatter` puts the results back along the points axis of the
user's mesh. Arrays on Auto meshes need nothing: XLA's partitioner handles them (inside the
user's ``jit`` too). To spread the *work* over devices, use :mod:`hubjax.distributed`.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


class Placement(NamedTuple):
    """Where results go: the user's mesh and the axis (or axes) its points were sharded on."""

    mesh: object
    points: object


def _explicit(a):
    try:
        sharding = jax.typeof(a).sharding
    except Exception:  # not a jax value
        return None
    mesh = getattr(sharding, "mesh", None)
    spec = getattr(sharding, "spec", None)
    if mesh is None or spec is None or not getattr(mesh, "axis_names", ()):
        return None
    explicit = {
        name
        for name, kind in zip(mesh.axis_names, mesh.axis_types, strict=True)
        if kind == jax.sharding.AxisType.Explicit
    }
    used = {
        n
        for part in spec
        if part is not None
        for n in (part if isinstance(part, tuple) else (part,))
    }
    return (mesh, spec) if used & explicit else None


def gather(*arrays):
    """``(arrays, placement)``: explicitly sharded arrays replicated; ``placement`` is None when
    none was (then nothing changes)."""
    placement = None
    out = []
    for a in arrays:
        found = None if a is None else _explicit(a)
        if found is not None:
            mesh, spec = found
            if placement is None:
                placement = Placement(mesh, spec[0] if len(spec) else None)
            a = jax.sharding.reshard(a, NamedSharding(mesh, P()))
        out.append(a)
    return tuple(out), placement


def context(placement: Placement | None):
    """The user's (abstract) mesh as the context of the computation, so arrays it creates
    (buffers, constants) live on the same mesh as the replicated inputs."""
    if placement is None:
        return contextlib.nullcontext()
    use = getattr(jax.sharding, "use_abstract_mesh", None)
    if use is None:  # jax < 0.8 has it only privately
        from jax._src.mesh import use_abstract_mesh as use
    mesh = placement.mesh
    return use(getattr(mesh, "abstract_mesh", mesh))


def scatter(tree, placement: Placement | None):
    """Results sharded along the points axis (their first) of the user's mesh."""
    if placement is None:
        return tree

    def place(a):
        if a.ndim == 0 or placement.points is None:
            return jax.sharding.reshard(a, NamedSharding(placement.mesh, P()))
        size = 1
        for name in (
            placement.points if isinstance(placement.points, tuple) else (placement.points,)
        ):
            size *= placement.mesh.shape[name]
        spec = P(placement.points) if a.shape[0] % size == 0 else P()
        return jax.sharding.reshard(a, NamedSharding(placement.mesh, spec))

    return jax.tree.map(place, tree)
