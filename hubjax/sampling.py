"""Hubness-prior latent sampling (Liang et al., ICML 2022).

Draw a batch of latents, compute each latent's hub value within the batch (optionally in the
space a mapping network sends them to), keep those whose hub value reaches a threshold, repeat
until enough are kept, feed them to a generator. Two published variants:

* paper code (defaults): ``k=5`` counting the point itself (``include_self=True``), accept
  ``hub value >= 50``, batch 10 000, hub values in W space (``mapping_fn`` = the mapping net).
* blog recipe: ``include_self=False, strict=True`` (5 other neighbours, ``> 50``), Z space.

On ``z ~ N(0, I_512)`` with batch 10 000 the first accepts about 1.2-1.5 % of latents, the
second about 1.8-1.9 %.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from hubjax import neighbors, occurrence
from hubjax._src import callables as _callables
from hubjax._src import checks as _checks
from hubjax._src import counting, exportable, numerics, pairs, search
from hubjax._src import metric as _metric

__all__ = [
    "hubness_sample",
    "hub_scores",
    "generate",
    "truncated_latents",
    "truncate",
    "acceptance_rate",
    "HubPool",
    "SamplingInfo",
    "SamplingError",
]


def hub_scores(
    latents: Float[Array, "n d"],
    *,
    k: int = 5,
    include_self: bool = True,
    metric: str = "euclidean",
    mapping_fn: Callable | None = None,
    block_size: int | None = None,
) -> Int[Array, " n"]:
    """Hub value of every latent within its batch, in the space ``mapping_fn`` maps to.

    Args:
      latents: a batch ``[n, d]``.
      k: neighbours per list (static).
      include_self: the paper code's convention (each point is one of its own k neighbours,
        so the smallest score is 1) when True; the blog's (k other points) when False.
      metric: as in :func:`hubjax.knn`; Euclidean by default, as in the paper.
      mapping_fn: ``latents [n, d] -> features [n, e]`` (e.g. StyleGAN's mapping network to W),
        or None to score in Z. Its output must have one row per latent (checked). A latent
        whose features are not finite is nobody's neighbour and has hub value 0.
      block_size: as in :func:`hubjax.knn`.

    Returns:
      int32 hub values ``[n]``.

    Example:
      >>> import jax, hubjax
      >>> z = jax.random.normal(jax.random.key(0), (1000, 64))
      >>> scores = hubjax.sampling.hub_scores(z, k=5)
      >>> int(scores.sum()), int(scores.min()) >= 1
      (5000, True)
    """
    latents = _checks.as_points(latents, "latents")
    feats = latents if mapping_fn is None else _mapped(mapping_fn, latents)
    return occurrence.hub_values(
        feats,
        k=k,
        metric=metric,
        include_self=include_self,
        block_size=block_size,
        check_finite=False,
    )


@exportable.register
@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["acceptance_rate", "batches", "accepted", "filled"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class SamplingInfo:
    """What :func:`hubness_sample` did.

    Attributes:
      acceptance_rate: accepted / drawn over all batches drawn.
      batches: number of batches drawn.
      accepted: latents accepted in total (may exceed the buffer; extra ones are dropped).
      filled: True when all ``num_samples`` rows hold accepted latents. When False, the missing
        rows are NaN -- never silently reused draws.
    """

    acceptance_rate: jax.Array
    batches: jax.Array
    accepted: jax.Array
    filled: jax.Array


class SamplingError(RuntimeError):
    """Raised (outside ``jit``) when ``max_batches`` did not yield ``num_samples`` latents."""


def hubness_sample(
    key: jax.Array,
    num_samples: int,
    *,
    latent_dim: int,
    k: int = 5,
    threshold: float = 50,
    batch_size: int = 10_000,
    include_self: bool = True,
    strict: bool = False,
    mapping_fn: Callable | None = None,
    prior: Callable | None = None,
    max_batches: int = 100,
    metric: str = "euclidean",
    progress: bool = False,
    raise_on_shortfall: bool = True,
) -> tuple[Float[Array, "num_samples latent_dim"], SamplingInfo]:
    """Latents whose in-batch hub value reaches ``threshold``, drawn batch by batch.

    Fully jit-compiled: a ``lax.while_loop`` draws batches of ``batch_size`` latents from
    ``prior``, scores them with :func:`hub_scores` and writes the accepted ones, in draw order,
    into a fixed buffer of ``num_samples`` rows until it is full or ``max_batches`` batches were
    drawn. The same key gives the same latents.

    Args:
      key: PRNG key.
      num_samples: latents wanted (static).
      latent_dim: latent size (static).
      k, include_self, metric, mapping_fn: as in :func:`hub_scores` (static).
      threshold: accept ``score >= threshold`` (``score > threshold`` with ``strict``).
      batch_size: latents per batch (static); hub values are computed within each batch.
      strict: see ``threshold``.
      prior: ``(key, shape) -> latents``; default ``jax.random.normal``.
        ``mapping_fn`` and ``prior`` may be any callable: an ``nnx.Module`` or a
        ``jax.tree_util.Partial`` has its weights passed as traced arguments (an in-place
        update is seen, new weights do not recompile); a plain function is static (it must not
        close over weights that change).
      max_batches: give up after this many batches (static).
      progress: print batches drawn and latents accepted after every batch (works under jit,
        through ``jax.debug.callback``).
      raise_on_shortfall: when the result is concrete and the buffer did not fill, raise
        :class:`SamplingError` (default). Under ``jit`` check ``info.filled``; missing rows are NaN.

    Returns:
      ``(latents [num_samples, latent_dim], info)``, see :class:`SamplingInfo`.

    Example:
      >>> import jax, hubjax
      >>> z, info = hubjax.sampling.hubness_sample(
      ...     jax.random.key(0), 20, latent_dim=32, threshold=15, batch_size=1000)
      >>> z.shape, bool(info.filled)
      ((20, 32), True)
    """
    num_samples = _checks.check_static_int(num_samples, "num_samples")
    latent_dim = _checks.check_static_int(latent_dim, "latent_dim")
    batch_size = _checks.check_static_int(batch_size, "batch_size", minimum=2)
    max_batches = _checks.check_static_int(max_batches, "max_batches")
    metric = _metric.resolve(metric)
    limit = batch_size if include_self else batch_size - 1
    k = _checks.check_k(k, limit, f"batch_size={batch_size}")
    mapping_static, mapping_arrays = _callables.split(mapping_fn)
    prior_static, prior_arrays = _callables.split(prior)
    latents, info = _sample(
        key,
        jnp.asarray(threshold, jnp.float32),
        mapping_arrays,
        prior_arrays,
        mapping_static=mapping_static,
        prior_static=prior_static,
        num_samples=num_samples,
        latent_dim=latent_dim,
        k=k,
        batch_size=batch_size,
        include_self=bool(include_self),
        strict=bool(strict),
        max_batches=max_batches,
        metric=metric,
        progress=bool(progress),
    )
    if raise_on_shortfall and _checks.is_concrete(info.filled) and not bool(info.filled):
        raise SamplingError(
            f"only {int(info.accepted)} of {num_samples} latents accepted in {max_batches} "
            f"batches of {batch_size} (acceptance rate {float(info.acceptance_rate):.4%}); "
            "lower the threshold or raise max_batches."
        )
    return latents, info


def _mapped(mapping_fn, latents):
    """``mapping_fn(latents)``, checked to return one rank-2 feature row per latent."""
    feats = mapping_fn(latents)
    shape = tuple(getattr(feats, "shape", ()))
    if len(shape) != 2 or shape[0] != latents.shape[0]:
        raise ValueError(
            f"mapping_fn must return features [n, e] with one row per latent (n = "
            f"{latents.shape[0]}), got shape {shape}."
        )
    return feats


def _report_progress(batches, accepted, wanted):
    print(f"hubness_sample: batch {int(batches)}, accepted {int(min(accepted, wanted))}/{wanted}")


@functools.partial(
    jax.jit,
    static_argnames=(
        "num_samples",
        "latent_dim",
        "k",
        "batch_size",
        "include_self",
        "strict",
        "mapping_static",
        "prior_static",
        "max_batches",
        "metric",
        "progress",
    ),
)
def _sample(
    key,
    threshold,
    mapping_arrays,
    prior_arrays,
    *,
    mapping_static,
    prior_static,
    num_samples,
    latent_dim,
    k,
    batch_size,
    include_self,
    strict,
    max_batches,
    metric,
    progress,
):
    mapping_fn = _callables.merge(mapping_static, mapping_arrays)
    prior = _callables.merge(prior_static, prior_arrays)
    draw = prior or (lambda key, shape: jax.random.normal(key, shape))

    def cond(state):
        _, _, filled, batches, _ = state
        return (filled < num_samples) & (batches < max_batches)

    def body(state):
        key, buffer, filled, batches, accepted_total = state
        key, sub = jax.random.split(key)
        z = draw(sub, (batch_size, latent_dim))
        if tuple(z.shape) != (batch_size, latent_dim):
            raise ValueError(
                f"prior returned shape {tuple(z.shape)} for the requested "
                f"{(batch_size, latent_dim)}; it must honour the shape argument."
            )
        z = z.astype(buffer.dtype)
        feats = z if mapping_fn is None else _mapped(mapping_fn, z)
        # scored like hub_scores, without its eager checks (the batch is traced here)
        _, idx = search.knn(feats, None, search.Options(k, metric, include_self=include_self))
        scores = counting.counts_of(idx, batch_size).astype(jnp.float32)
        accept = scores > threshold if strict else scores >= threshold
        # a latent whose features are not finite is never accepted, whatever the threshold
        accept = accept & jnp.all(jnp.isfinite(feats), axis=1) & jnp.all(jnp.isfinite(z), axis=1)
        slots = filled + jnp.cumsum(accept) - 1
        slots = jnp.where(accept, slots, num_samples)  # rejected rows: out of range, dropped
        buffer = buffer.at[slots].set(z, mode="drop")
        count = jnp.sum(accept, dtype=jnp.int32)
        filled = jnp.minimum(filled + count, num_samples)
        batches = batches + 1
        if progress:
            jax.debug.callback(_report_progress, batches, accepted_total + count, num_samples)
        return key, buffer, filled, batches, accepted_total + count

    buffer = jnp.full((num_samples, latent_dim), jnp.nan, jnp.float32)
    zero = jnp.zeros((), jnp.int32)
    _, buffer, filled, batches, accepted = jax.lax.while_loop(
        cond, body, (key, buffer, zero, zero, zero)
    )
    drawn = jnp.maximum(batches * batch_size, 1)
    info = SamplingInfo(
        acceptance_rate=accepted.astype(jnp.float32) / drawn.astype(jnp.float32),
        batches=batches,
        accepted=accepted,
        filled=filled == num_samples,
    )
    return buffer, info


def generate(
    key: jax.Array,
    generator: Callable,
    num_samples: int,
    *,
    latent_dim: int,
    mapping_fn: Callable | None = None,
    **sampling_kwargs,
):
    """Hubness-prior samples of a generator: ``(samples, latents, info)``.

    Args:
      key: PRNG key.
      generator: any pure function ``latents [n, latent_dim] -> samples`` -- a Flax linen
        ``functools.partial(model.apply, params)``, a Flax NNX module, a plain function.
      num_samples: samples wanted.
      latent_dim: latent size.
      mapping_fn: where hub values are computed (see :func:`hub_scores`); the generator still
        receives the latents themselves.
      **sampling_kwargs: the options of :func:`hubness_sample` (k, threshold, batch_size, ...).

    Example:
      >>> import jax, jax.numpy as jnp, hubjax
      >>> gen = lambda z: jnp.tanh(z[:, :2])
      >>> x, z, info = hubjax.sampling.generate(
      ...     jax.random.key(1), gen, 10, latent_dim=16, threshold=12, batch_size=500)
      >>> x.shape
      (10, 2)
    """
    latents, info = hubness_sample(
        key, num_samples, latent_dim=latent_dim, mapping_fn=mapping_fn, **sampling_kwargs
    )
    return generator(latents), latents, info


def truncated_latents(
    key: jax.Array, num_samples: int, *, latent_dim: int, psi: float
) -> Float[Array, "num_samples latent_dim"]:
    """The truncation-trick baseline in Z: ``psi * z`` with ``z ~ N(0, I)``.

    ``psi = 1`` is plain random sampling; smaller ``psi`` pulls latents toward the mean (the
    StyleGAN form ``w_avg + psi (w - w_avg)`` with ``w_avg = 0``), trading diversity for quality.
    """
    return psi * jax.random.normal(key, (num_samples, latent_dim))


def truncate(
    w: Float[Array, "n e"], centre: Float[Array, " e"], *, psi: float
) -> Float[Array, "n e"]:
    """StyleGAN's truncation trick in W: ``centre + psi * (w - centre)``.

    ``centre`` is usually the generator's average ``w`` (``w_avg``, see
    :class:`hubjax.gan.MappingNetwork`); ``psi = 1`` returns ``w``, ``psi = 0`` returns the
    centre for every row.

    Example:
      >>> import jax.numpy as jnp, hubjax
      >>> hubjax.sampling.truncate(jnp.array([[2.0, 4.0]]), jnp.array([1.0, 1.0]), psi=0.5)
      Array([[1.5, 2.5]], dtype=float32)
    """
    w = jnp.asarray(w)
    centre = jnp.asarray(centre, w.dtype)
    if w.ndim != 2 or centre.shape != w.shape[1:]:
        raise ValueError(f"w must be [n, e] and centre [e]; got {w.shape} and {centre.shape}")
    return centre + psi * (w - centre)


@exportable.register
@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["points", "radii"],
    meta_fields=["k", "metric", "include_self"],
)
@dataclasses.dataclass(frozen=True)
class HubPool:
    """Streaming hub scorer against a fixed pool of latents.

    ``HubPool.build(pool, k=...)`` computes once the k-NN radius ``r(p)`` of every pool point
    (its distance to its k-th nearest other pool point; with ``include_self`` to its (k-1)-th,
    since the point itself fills one slot). ``score(x)`` is then the number of pool points p with
    ``d(p, x) < r(p)`` (plus one with ``include_self``): exactly the hub value x gets if it
    joined the pool as its last point (ties go to the smaller, older index). Cost per candidate
    ``O(pool * d)``, no sorting, any batch of candidates.

    Relation to the in-batch definition: a latent scored by ``hub_scores`` within a fresh batch
    of N competes with N - 1 other fresh latents; scored against a pool of N - 1 it faces the
    same distribution, so at equal N and threshold the two acceptance rates agree in expectation
    (tested). The pool version fixes the competitors once, so its decisions are independent
    across candidates and it can score one latent at a time.
    """

    points: jax.Array
    radii: jax.Array  # reported k-th distances (squared for the Euclidean metrics)
    k: int
    metric: str
    include_self: bool

    @classmethod
    def build(
        cls,
        pool: Float[Array, "m d"],
        *,
        k: int = 5,
        metric: str = "euclidean",
        include_self: bool = True,
    ) -> HubPool:
        """Pool with the radii of every point; ``k`` as in :func:`hub_scores`."""
        pool = _checks.as_points(pool, "pool")
        metric = _metric.resolve(metric)
        _checks.check_finite(pool, "pool")
        others = k - 1 if include_self else k
        if include_self and k < 2:
            raise ValueError("HubPool with include_self=True needs k >= 2.")
        dist, _ = neighbors.knn(pool, k=others, metric=metric.ranked_by.name)
        return cls(pool, dist[:, -1], k, metric.name, bool(include_self))

    def score(self, candidates: Float[Array, "c d"], *, block_size: int = 1024) -> Int[Array, " c"]:
        """Hub value each candidate would get in the pool; int32 ``[c]``.

        Candidates with NaN/inf values score 0 (they would be nobody's neighbour).
        """
        candidates = _checks.as_points(candidates, "candidates")
        _checks.check_same_features(candidates, self.points)
        block_size = _checks.check_static_int(block_size, "block_size")
        return _pool_score(self, candidates, block_size=min(block_size, candidates.shape[0]))


@functools.partial(jax.jit, static_argnames=("block_size",))
def _pool_score(pool, candidates, *, block_size):
    """Per-pair distances (the ones :func:`hubjax.knn` reports) against the pool radii.

    Both sides are scaled by the pool's power of two, exactly as :func:`hubjax.knn` on the pool
    scaled them, so a candidate equal to a pool point gets bitwise the same distances.
    """
    ranking = _metric.resolve(pool.metric).ranked_by
    dtype = _checks.compute_dtype(candidates, pool.points)
    points = pool.points.astype(dtype)
    e = ranking.exponent(points)
    pp = ranking.prepare(points, dtype, e)
    n = candidates.shape[0]
    rows = numerics.pair_rows(block_size, points.shape[1], points.shape[0])
    blocks = -(-n // rows)
    cp = numerics.pad(ranking.prepare(candidates.astype(dtype), dtype, e), blocks * rows)

    def one(block):
        d = ranking.finish(pairs.pair_tile(block, pp, ranking), e)  # [b, m]
        return jnp.sum(d < pool.radii[None, :], axis=1, dtype=jnp.int32)

    blocked = jax.tree.map(lambda a: a.reshape(blocks, rows, *a.shape[1:]), cp)
    counts = jax.lax.map(one, blocked).reshape(-1)[:n]
    finite = cp.penalty[:n] == 0
    return jnp.where(finite, counts + jnp.int32(pool.include_self), 0)


def acceptance_rate(scores, threshold, *, strict=False) -> float:
    """Share of ``scores`` accepted at ``threshold`` (``>=``, or ``>`` with ``strict``)."""
    scores = np.asarray(scores)
    return float(np.mean(scores > threshold if strict else scores >= threshold))
