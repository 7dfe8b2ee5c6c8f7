import importlib
import importlib.util
import os
import pathlib
import random
import sys
import types

import numpy as np
import reference

import hubjax
from hubjax._src import metric as _metric
from hubjax._src import search

GRID_SEED = os.environ.get("HUBJAX_GRID_SEED", "0")


def sample(cases, keep, *, key):
    """A seeded share of a parameter grid: ``keep`` of ``cases``, in their order.

    Large grids (every metric x engine x block size x data shape) cost one compilation per
    case, most of the suite's time. Each run checks ``keep`` of them, chosen by the run's seed
    (``tests/conftest.py`` draws it, the run's summary prints it) and ``key`` (the test's name), so
    successive runs cover the whole grid and a failure reproduces with
    ``HUBJAX_GRID_SEED=<seed>``; ``HUBJAX_GRID_SEED=full`` runs every case.
    """
    cases = list(cases)
    if GRID_SEED == "full" or keep >= len(cases):
        return cases
    chosen = random.Random(f"{GRID_SEED}/{key}").sample(range(len(cases)), keep)
    return [cases[i] for i in sorted(chosen)]


#: For ``hypothesis.seed``: property tests draw their examples from the run's seed too.
HYPOTHESIS_SEED = int(GRID_SEED) if GRID_SEED.isdigit() else 0


def examples(sampled, full):
    """``max_examples`` for a property test: ``sampled`` per run, ``full`` with
    ``HUBJAX_GRID_SEED=full``."""
    return full if GRID_SEED == "full" else sampled


def default_level_env(**extra) -> dict[str, str]:
    """The environment for a subprocess that must compile as users' programs do.

    ``tests/conftest.py`` adds XLA flags that make the test processes compile faster
    (``FAST_COMPILE_FLAGS``); a test that measures memory, or pins results as users compile
    them, starts its subprocess with this environment instead: the same variables without
    those flags, plus ``extra``.
    """
    env = dict(os.environ, **extra)
    added = env.pop("HUBJAX_TEST_ADDED_XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if f not in added)
    return env


def random_points(n, d, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(dtype)


def tie_points(n, d, seed=0, levels=3):
    """Integer grid points: exact duplicates and exact distance ties everywhere."""
    return np.random.default_rng(seed).integers(0, levels, size=(n, d)).astype(np.float32)


def assert_knn_exact(result, ref):
    """Exact (distance, index) order; distances to float32 rounding."""
    dist, idx = (np.asarray(a) for a in result)
    np.testing.assert_array_equal(idx, ref[1])
    np.testing.assert_allclose(dist, ref[0], rtol=1e-5, atol=1e-5)


def assert_knn_close(result, x, y, ref, metric, *, rtol=1e-4, atol=1e-4):
    """For data whose float32 distances round differently from float64: every returned
    neighbour is at the reference's k-th smallest distances (up to rounding), lists are
    distinct, and indices agree wherever the reference has no near-tie."""
    dist, idx = (np.asarray(a) for a in result)
    ref_dist, ref_idx = ref
    np.testing.assert_allclose(dist, ref_dist, rtol=rtol, atol=atol)
    full = reference.distances(x, x if y is None else y, metric)
    got = np.take_along_axis(full, idx, axis=1)
    in_sample = y is None
    if in_sample:
        rows = np.arange(len(idx))[:, None]
        got = np.where(idx == rows, ref_dist, got)  # self entries (include_self) checked above
    np.testing.assert_allclose(got, ref_dist, rtol=rtol, atol=atol)
    for row in idx:
        assert len(set(row.tolist())) == len(row)
    # The distance just past the list: a near-tie there makes the last position ambiguous.
    after = np.empty(len(idx))
    for i, row in enumerate(full):
        cand = np.delete(row, i) if in_sample else row
        used = len(ref_idx[i]) - int(in_sample and ref_idx[i][0] == i)
        after[i] = np.sort(cand)[used] if used < len(cand) else np.inf
    padded = np.concatenate([ref_dist, after[:, None]], axis=1)
    gaps = np.diff(padded, axis=1)
    clear = gaps > atol
    clear[:, 1:] &= gaps[:, :-1] > atol
    np.testing.assert_array_equal(idx[clear], ref_idx[clear])


EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def assert_same_draws(actual, expected):
    """Normal draws made inside a compiled program against the same draws made eagerly.

    ``jax.random.normal`` maps uniform bits through ``erfinv``; XLA may round that by an ulp
    or two differently inside a larger fused program than in an eager call (it depends on the
    fusion, the XLA flags and the CPU). The same key and shape give the same draws to within
    a few ulps, which still tells every draw apart, so the rows a sampler kept, their number
    and their order are checked exactly, the values to 4 ulps of float32.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=4 * np.finfo(np.float32).eps, atol=1e-7)


def load_example(name: str) -> types.ModuleType:
    """``examples/<name>.py`` as a module, registered in ``sys.modules`` under ``name`` (an
    example's dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_dexter():
    """scikit-hubness's copy of the UCI dexter training set: float32 ``[300, 20000]``, labels
    (``examples/dexter.py`` reads it for the examples and the tests)."""
    return load_example("dexter").load()


# every public module, as the package's lazy face declares them (the optional ones need extras)
PUBLIC_MODULES = (*hubjax._MODULES, *hubjax._OPTIONAL)


def public_names():
    """Every public name the API reference must document, as ``hubjax.module.name``."""
    names = []
    for name in hubjax.__all__:
        value = getattr(hubjax, name)
        if isinstance(value, types.ModuleType):
            continue
        names.append(f"hubjax.{name}")
    for module in PUBLIC_MODULES:
        mod = importlib.import_module(f"hubjax.{module}")
        names += [f"hubjax.{module}.{name}" for name in mod.__all__ if name != "METHODS"]
    return names


def engine_knn(
    x,
    y=None,
    *,
    k,
    metric="sqeuclidean",
    include_self=False,
    block_size=None,
    engine="auto",
    group=None,
):
    """The jitted exact search with a forced candidate source (``engine``): "auto", "strip",
    "symmetric" or "tiled"."""
    options = search.Options(
        k,
        _metric.resolve(metric),
        include_self=include_self,
        block_size=block_size,
        source=engine,
        group=group,
    )
    return search.knn(x, y, options)


def knn_dense(x, y=None, *, k, metric="sqeuclidean", include_self=False):
    """The clear reference of the exact search (every per-pair distance, then a sort)."""
    return search.knn_dense(x, y, k=k, metric=_metric.resolve(metric), include_self=include_self)
