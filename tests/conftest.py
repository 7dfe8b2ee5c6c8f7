"""Strict test configuration: runs in every test process before JAX initialises its backend.

* 8 fake CPU devices, so multi-device code is testable on one CPU.
* Fast compilation (``FAST_COMPILE_FLAGS``): XLA's backend at optimisation level 0 and its
  older, simpler fusion emitters, each unless the caller's ``XLA_FLAGS`` names that flag, the
  installed XLA does not know it (a throwaway process is asked once per run), or
  ``HUBJAX_TEST_XLA=default`` asks for users' configuration. The suite compiles about 4 500
  programs and runs most of them once on a few hundred points, so compilation, LLVM's passes
  above all, was most of its time (whole suite on 2 cores: 895-909 s with users' flags,
  649-675 s at level 0, 443 s with both). The flags change how fast the machine
  code is, not what hubjax computes (XLA:CPU uses no fast-math under either): every pinned
  digest of ``test_search_digests.py`` (the whole grid) and every bitwise test of the suite
  hold under both, and that module also checks a share of the digests in a fresh process with
  users' flags. Tests that measure memory start their subprocesses with users' flags too
  (``helpers.default_level_env``). One thing differs by an ulp: ``jax.random.normal``'s
  ``erfinv`` is rounded per fusion, so a sampler's draws inside its program match eager draws
  to a few ulps, not bitwise, under either configuration; ``helpers.assert_same_draws`` says so.
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
import subprocess
import sys
import tempfile

#: What this file adds to ``XLA_FLAGS`` for speed only; ``helpers.default_level_env`` removes it.
FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
    # one LLVM module per program: splitting it for parallel codegen costs more than it gains
    # where two test processes share two cores (test_reduction.py alone: 48 -> 43 s)
    "--xla_cpu_parallel_codegen_split_count=1",
)
#: The ones every supported XLA knows (the others are asked for, below).
_LONG_STANDING = {"--xla_backend_optimization_level=0"}


def _xla_knows(flag: str) -> bool:
    # An unknown name in XLA_FLAGS aborts the process that starts a backend, and XLA renames
    # or retires flags between releases: ask a throwaway process (about 1 s, once per run:
    # the xdist workers inherit the decision through XLA_FLAGS).
    env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
    probe = [sys.executable, "-c", "import jax; jax.devices()"]
    return subprocess.run(probe, env=env, capture_output=True, timeout=300).returncode == 0


_flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
if os.environ.get("HUBJAX_TEST_XLA", "fast") != "default":
    _added = [
        f
        for f in FAST_COMPILE_FLAGS
        if f.split("=")[0] not in _flags and (f in _LONG_STANDING or _xla_knows(f))
    ]
    if _added:
        _flags += " " + " ".join(_added)
        _before = os.environ.get("HUBJAX_TEST_ADDED_XLA_FLAGS", "").split()
        os.environ["HUBJAX_TEST_ADDED_XLA_FLAGS"] = " ".join(_before + _added)
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
