"""Strict test configuration: runs before JAX initialises its backend.

* 8 fake CPU devices, so multi-device code is testable on one CPU.
* Strict dtype promotion: hubjax must never rely on implicit promotion.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
