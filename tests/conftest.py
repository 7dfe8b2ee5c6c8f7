"""Strict test configuration: runs in every test process before JAX initialises its backend.

* 8 fake CPU devices, so multi-device code is testable on one CPU.
* XLA's backend at optimisation level 0 (``FAST_COMPILE_FLAGS``), unless the caller's
  ``XLA_FLAGS`` names a level or ``HUBJAX_TEST_XLA=default`` asks for users' configuration.
  The suite compiles about 4 500 programs and runs most of them once on a few hundred points,
  so LLVM's optimisation passes were most of its time: the whole suite took 895-909 s at the
  default level and 649-675 s at level 0, on 2 cores. The level changes how fast the machine code
  is, not what it computes (XLA:CPU uses no fast-math at either level): every pinned digest
  of ``test_search_digests.py`` (the whole grid) and every bitwise test of the suite hold at
  both, and that module also checks a share of the digests in a fresh process at the default
  level, the one users run. Tests that measure memory start their subprocesses at the default
  level too (``helpers.default_level_env``). XLA's older fusion emitters
  (``--xla_cpu_use_fusion_emitters=false``) would compile faster still, but they round some
  transcendental functions differently by one ulp depending on the fusion (the sampler's
  normal draws then differ from eager ones): not used.
* One persistent compilation cache per test run (JAX's disk cache) for the subprocesses tests
  start, which compile the same programs again and again; the test processes do not use it
  (below). The folder is created by the process that starts the run and deleted when it ends,
  so nothing carries over between runs; a ``JAX_COMPILATION_CACHE_DIR`` set by the caller is
  used as it is, by every process, and kept.
* One seed for the sampled parameter grids (``helpers.sample``), drawn by the process that
  starts the run so every xdist worker collects the same cases, and printed in the summary:
  ``HUBJAX_GRID_SEED=<seed>`` reruns the same cases, ``HUBJAX_GRID_SEED=full`` every case.
"""

import os
import random
import shutil
import tempfile

#: What this file adds to ``XLA_FLAGS`` for speed only; ``helpers.default_level_env`` removes it.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0",)
_flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
_chosen = any(f.split("=")[0] in _flags for f in FAST_COMPILE_FLAGS)
if not _chosen and os.environ.get("HUBJAX_TEST_XLA", "fast") != "default":
    _flags += " " + " ".join(FAST_COMPILE_FLAGS)
    os.environ["HUBJAX_TEST_ADDED_XLA_FLAGS"] = " ".join(FAST_COMPILE_FLAGS)
os.environ["XLA_FLAGS"] = _flags.strip()

# Each run checks a different seeded share of the large grids, so over runs every case is
# checked; a failure names its seed (summary) and reproduces with it.
os.environ.setdefault("HUBJAX_GRID_SEED", str(random.SystemRandom().randrange(10**6)))

_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="hubjax-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ["HUBJAX_TEST_RUN_CACHE"] = _OWN_CACHE
    # Most test programs compile in well under JAX's default threshold of 1 s.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    # Loading a cached XLA:CPU executable logs one error line per tuning flag of the host
    # (``+prefer-no-gather``, ...) although the program was compiled on this very machine.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
if os.environ.get("HUBJAX_TEST_RUN_CACHE") == os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    # The run's own cache serves the subprocesses tests start (the CLI, the README's commands,
    # the notebook, the sdist's tests), which compile the same programs again and again. The
    # test processes themselves do not use it: writing their thousands of programs to disk
    # cost more than the few they loaded back (exactness + approximate modules: 144 s with
    # it, 129 s without; knn + reduction: 95 s against 87 s).
    jax.config.update("jax_enable_compilation_cache", False)

import gc  # noqa: E402

import pytest  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    # the summary, not the header: ``-q`` (the README's command) hides the header
    seed = os.environ["HUBJAX_GRID_SEED"]
    terminalreporter.write_line(
        f"hubjax grid seed: {seed} (rerun these cases with HUBJAX_GRID_SEED={seed})"
    )


def pytest_unconfigure(config):
    # xdist workers inherit the variable and never own the folder; the starting process does.
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Frees each module's compiled executables when it is done.

    Every XLA:CPU executable keeps memory mappings for its code until it is freed, and jit
    caches keep them alive; a few hundred distinct compilations in one process reach the
    kernel's limit of 65 530 mappings (``vm.max_map_count``), and the next compilation then
    crashes inside LLVM. Clearing the caches between modules keeps the suite far below it.
    (Clearing only above a mapping budget, so later modules could reuse earlier programs, made
    a whole run no faster: the modules share few shapes, and the caches grew.)
    """
    yield
    jax.clear_caches()
    gc.collect()
