"""Result pytrees that ``jax.export`` can serialise.

An exported function's outputs are a pytree whose every node type needs a registered
serialisation; the report dataclasses register theirs here (their static fields, JSON-encoded).
"""

from __future__ import annotations

import json

import jax


def register(cls):
    """Class decorator: ``jax.export`` serialisation of a ``register_dataclass`` pytree whose
    static fields are JSON values (numbers, strings, booleans). Apply it above
    ``jax.tree_util.register_dataclass``."""
    jax.export.register_pytree_node_serialization(
        cls,
        serialized_name=f"hubjax.{cls.__name__}",
        serialize_auxdata=lambda aux: json.dumps(list(aux)).encode(),
        deserialize_auxdata=lambda data: tuple(json.loads(data.decode())),
    )
    return cls
