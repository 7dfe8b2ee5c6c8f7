import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from flax import linen, nnx
from helpers import assert_same_draws, random_points, tie_points

import hubjax
from hubjax import sampling


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("data", ["random", "ties"])
def test_hub_scores_match_numpy(include_self, data):
    z = random_points(300, 16, seed=1) if data == "random" else tie_points(300, 3, seed=1)
    scores = sampling.hub_scores(z, k=5, include_self=include_self)
    idx = reference.knn(z, k=5, metric="euclidean", include_self=include_self)[1]
    np.testing.assert_array_equal(scores, reference.k_occurrence(idx, 300))
    assert int(np.min(scores)) >= (1 if include_self else 0)


def test_acceptance_rates_on_standard_normal_512():
    """design.md: ~1.2-1.5 % accepted counting self (>= 50), ~1.8-1.9 % without (> 50)."""
    z = jax.random.normal(jax.random.key(0), (10_000, 512))
    paper = sampling.hub_scores(z, k=5, include_self=True)
    blog = sampling.hub_scores(z, k=5, include_self=False)
    assert 0.011 <= sampling.acceptance_rate(paper, 50) <= 0.016
    assert 0.016 <= sampling.acceptance_rate(blog, 50, strict=True) <= 0.021
    assert 0.45 <= float(np.mean(np.asarray(blog) == 0)) <= 0.55
    assert int(blog.max()) > 100


def test_mapping_fn_scaling_invariance():
    z = random_points(400, 24, seed=2)
    w = jnp.asarray(np.random.default_rng(3).normal(size=(24, 32)).astype(np.float32))
    base = sampling.hub_scores(z, mapping_fn=lambda z: z @ w)
    scaled = sampling.hub_scores(z, mapping_fn=lambda z: 7.5 * (z @ w))
    np.testing.assert_array_equal(base, scaled)
    assert not np.array_equal(base, sampling.hub_scores(z))  # the mapping matters


def test_hubness_sample_accepts_by_threshold_and_is_deterministic():
    key = jax.random.key(4)
    kwargs = dict(latent_dim=16, k=5, threshold=12, batch_size=500, max_batches=50)
    z1, info = sampling.hubness_sample(key, 40, **kwargs)
    z2, _ = sampling.hubness_sample(key, 40, **kwargs)
    np.testing.assert_array_equal(z1, z2)
    assert bool(info.filled) and not np.isnan(np.asarray(z1)).any()
    # the first batch's accepted latents come first, in draw order, with score >= threshold
    first = jax.random.normal(jax.random.split(key)[1], (500, 16))
    scores = np.asarray(sampling.hub_scores(first, k=5))
    accepted = np.asarray(first)[scores >= 12]
    n = min(len(accepted), 40)
    assert_same_draws(np.asarray(z1)[:n], accepted[:n])
    rate = float(info.acceptance_rate)
    assert abs(rate - float(info.accepted) / (int(info.batches) * 500)) < 1e-6


def test_blog_variant_strict_and_without_self():
    z, _ = sampling.hubness_sample(
        jax.random.key(5),
        10,
        latent_dim=32,
        k=5,
        threshold=10,
        batch_size=400,
        include_self=False,
        strict=True,
    )
    first = jax.random.normal(jax.random.split(jax.random.key(5))[1], (400, 32))
    scores = np.asarray(sampling.hub_scores(first, k=5, include_self=False))
    expected = np.asarray(first)[scores > 10][:10]
    assert_same_draws(np.asarray(z)[: len(expected)], expected)


def test_too_high_threshold_raises_or_flags():
    kwargs = dict(latent_dim=8, threshold=10_000, batch_size=200, max_batches=3)
    with pytest.raises(sampling.SamplingError, match="only 0 of 5"):
        sampling.hubness_sample(jax.random.key(6), 5, **kwargs)
    z, info = jax.jit(lambda key: sampling.hubness_sample(key, 5, **kwargs))(jax.random.key(6))
    assert not bool(info.filled) and int(info.batches) == 3
    assert np.isnan(np.asarray(z)).all()


def test_progress_under_jit(capsys):
    sampling.hubness_sample(
        jax.random.key(7), 3, latent_dim=8, threshold=5, batch_size=100, progress=True
    )
    assert "batch 1, accepted" in capsys.readouterr().out


class LinenGen(linen.Module):
    @linen.compact
    def __call__(self, z):
        return jnp.tanh(linen.Dense(3)(z))


class NNXGen(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, z):
        return jnp.tanh(self.dense(z))


def test_generate_with_linen_nnx_and_plain_function():
    kwargs = dict(latent_dim=16, threshold=8, batch_size=300)
    model = LinenGen()
    params = model.init(jax.random.key(0), jnp.ones((1, 16)))
    key = jax.random.key(8)
    x1, z1, info = sampling.generate(key, functools.partial(model.apply, params), 12, **kwargs)
    assert x1.shape == (12, 3) and bool(info.filled)
    np.testing.assert_allclose(x1, model.apply(params, z1), rtol=1e-6)
    gen = NNXGen(nnx.Rngs(0))
    x2, z2, _ = sampling.generate(key, gen, 12, **kwargs)
    np.testing.assert_array_equal(z1, z2)
    np.testing.assert_allclose(x2, gen(z2), rtol=1e-6)
    x3, _, _ = sampling.generate(key, lambda z: z[:, :2], 12, **kwargs)
    np.testing.assert_array_equal(x3, z1[:, :2])


@pytest.mark.parametrize("include_self", [True, False])
def test_pool_score_equals_hub_value_after_joining(include_self):
    pool = tie_points(120, 3, seed=9)
    cands = tie_points(15, 3, seed=10)
    hp = sampling.HubPool.build(pool, k=4, include_self=include_self)
    got = np.asarray(hp.score(cands, block_size=4))
    for i, c in enumerate(cands):
        joined = np.concatenate([pool, c[None]])
        idx = reference.knn(joined, k=4, metric="euclidean", include_self=include_self)[1]
        assert got[i] == reference.k_occurrence(idx, 121)[-1]


def test_pool_acceptance_rate_matches_in_batch_rate():
    n, d = 2000, 64
    pool = sampling.HubPool.build(jax.random.normal(jax.random.key(11), (n - 1, d)), k=5)
    cands = jax.random.normal(jax.random.key(12), (4000, d))
    pool_scores = np.asarray(pool.score(cands))
    batch_scores = np.concatenate(
        [
            np.asarray(sampling.hub_scores(jax.random.normal(jax.random.key(s), (n, d)), k=5))
            for s in (13, 14)
        ]
    )
    for t in (10, 20):
        a, b = (sampling.acceptance_rate(s, t) for s in (pool_scores, batch_scores))
        assert abs(a - b) < 0.35 * b + 0.005, (t, a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="larger than"):
        sampling.hubness_sample(
            jax.random.key(0), 3, latent_dim=4, k=10, batch_size=9, include_self=False
        )
    with pytest.raises(TypeError, match="num_samples"):
        sampling.hubness_sample(jax.random.key(0), 2.5, latent_dim=4)
    with pytest.raises(ValueError, match="same number of features"):
        sampling.HubPool.build(random_points(20, 3), k=3).score(random_points(2, 4))
    hubjax.sampling.truncated_latents(jax.random.key(0), 3, latent_dim=2, psi=0.5)


@pytest.mark.parametrize("include_self", [True, False])
def test_pool_score_of_exact_copies_equals_joining(include_self):
    """Candidates that duplicate pool points, on uncentred data: bitwise the same distances."""
    pool = (100.0 + random_points(200, 24, seed=31)).astype(np.float32)
    cands = np.concatenate([pool[:6], pool[50:53] + np.float32(1e-3)])
    hp = sampling.HubPool.build(pool, k=5, include_self=include_self)
    got = np.asarray(hp.score(cands, block_size=3))
    for i, c in enumerate(cands):
        joined = np.concatenate([pool, c[None]])
        expected = hubjax.hub_values(joined, k=5, include_self=include_self)[-1]
        assert got[i] == int(expected), i
    nan = np.full((1, 24), np.nan, np.float32)
    assert int(hp.score(nan)[0]) == 0


def test_sampler_never_accepts_non_finite_features():
    def mapping(z):
        return jnp.where(jnp.arange(z.shape[0])[:, None] < 4, jnp.nan, z)

    scores = sampling.hub_scores(random_points(400, 8, seed=32), mapping_fn=mapping)
    assert (np.asarray(scores)[:4] == 0).all()
    assert int(np.asarray(scores).sum()) == 396 * 5
    _z, info = sampling.hubness_sample(
        jax.random.key(0),
        5,
        latent_dim=8,
        threshold=0,
        batch_size=100,
        mapping_fn=mapping,
        max_batches=1,
        raise_on_shortfall=False,
    )
    assert int(info.accepted) == 96  # everything but the 4 NaN rows


def test_sampler_checks_shapes_of_mapping_and_prior():
    with pytest.raises(ValueError, match="one row per latent"):
        sampling.hub_scores(random_points(50, 4), mapping_fn=lambda z: z[:-1])
    with pytest.raises(ValueError, match="one row per latent"):
        sampling.hubness_sample(
            jax.random.key(0), 2, latent_dim=4, batch_size=50, mapping_fn=lambda z: z[:10]
        )
    with pytest.raises(ValueError, match="prior returned shape"):
        sampling.hubness_sample(
            jax.random.key(0),
            2,
            latent_dim=4,
            batch_size=50,
            prior=lambda key, shape: jax.random.normal(key, (shape[0], 3)),
        )


def test_nnx_module_updated_in_place_is_never_stale():
    mapping = nnx.Linear(8, 8, rngs=nnx.Rngs(0))
    kwargs = dict(latent_dim=8, threshold=12, batch_size=200, max_batches=20)
    first, _ = sampling.hubness_sample(jax.random.key(3), 5, mapping_fn=mapping, **kwargs)
    before = sampling._sample._cache_size()
    w = np.asarray(mapping.kernel[...]).copy()
    w[:, 0] *= 30.0  # stretches W along one axis: changes the neighbour lists
    mapping.kernel[...] = jnp.asarray(w)
    second, _ = sampling.hubness_sample(jax.random.key(3), 5, mapping_fn=mapping, **kwargs)
    assert sampling._sample._cache_size() == before  # same shapes: nothing recompiled
    fresh = nnx.Linear(8, 8, rngs=nnx.Rngs(0))
    fresh.kernel[...] = jnp.asarray(w)
    expected, _ = sampling.hubness_sample(jax.random.key(3), 5, mapping_fn=fresh, **kwargs)
    np.testing.assert_array_equal(np.asarray(second), np.asarray(expected))
    assert not np.array_equal(np.asarray(first), np.asarray(second))


def test_partial_with_new_weights_compiles_once():
    def apply(w, z):
        return z @ w

    kwargs = dict(latent_dim=6, threshold=12, batch_size=200, max_batches=20)
    results = []
    sampling.hubness_sample(
        jax.random.key(0),
        5,
        mapping_fn=jax.tree_util.Partial(apply, jnp.eye(6)),
        **kwargs,
    )
    before = sampling._sample._cache_size()
    for seed in range(3):
        w = jax.random.normal(jax.random.key(seed), (6, 6))
        z, _ = sampling.hubness_sample(
            jax.random.key(0), 5, mapping_fn=jax.tree_util.Partial(apply, w), **kwargs
        )
        results.append(np.asarray(z))
    assert sampling._sample._cache_size() == before
    assert not np.array_equal(results[0], results[1])  # the weights were used, not baked in
