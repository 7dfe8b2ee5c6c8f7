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

import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Frees each module's compiled executables when it is done.

    Every XLA:CPU executable keeps memory mappings for its code until it is freed, and jit
    caches keep them alive; a few hundred distinct compilations in one process reach the
    kernel's limit of 65 530 mappings (``vm.max_map_count``), and the next compilation then
    crashes inside LLVM. Clearing the caches between modules keeps the suite far below it.
    """
    yield
    jax.clear_caches()
    gc.collect()
