from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import assert_same_draws

from hubjax import gan, occurrence, sampling

CHECKPOINTS = Path(__file__).resolve().parents[1] / "examples" / "checkpoints"
SEEDS = range(5)


def small_style(seed=0, latent_dim=6, data_dim=3):
    g = gan.StyleGenerator(
        gan.StyleConfig(latent_dim, data_dim, w_dim=8, hidden=16), rngs=nnx.Rngs(seed)
    )
    # the styles start at zero (training starts from an unmodulated synthesis); give them
    # weights so that the output depends on w
    for i, style in enumerate(g.synthesis.styles):
        shape = style.kernel[...].shape
        style.kernel[...] = 0.5 * jax.random.normal(jax.random.key(100 * seed + i), shape)
    return g


def test_train_save_load_roundtrip(tmp_path):
    data = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    gen, disc = gan.train(jax.random.key(0), data, latent_dim=4, hidden=(16,), steps=20)
    path = tmp_path / "g.npz"
    gan.save(gen, path)
    again = gan.load_generator(path)
    z = jax.random.normal(jax.random.key(1), (7, 4))
    np.testing.assert_array_equal(gen(z), again(z))
    assert disc(gen(z)).shape == (7,)


def test_style_train_save_load_roundtrip_keeps_w_avg(tmp_path):
    data = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    config = gan.StyleConfig(6, 3, w_dim=8, hidden=16)
    gen, disc = gan.train_style(jax.random.key(0), data, config=config, steps=5, batch_size=32)
    z = jax.random.normal(jax.random.key(1), (4096, 6))
    # w_avg is the mean of w over the prior (a different draw of the same size agrees closely)
    np.testing.assert_allclose(gen.mapping.w_avg[...], gen.mapping(z).mean(0), atol=0.05)
    assert float(jnp.abs(gen.mapping.w_avg[...]).sum()) > 0
    path = tmp_path / "s.npz"
    gan.save(gen, path)
    again = gan.load_generator(path)
    assert isinstance(again, gan.StyleGenerator) and again.config == config
    np.testing.assert_array_equal(again.mapping.w_avg[...], gen.mapping.w_avg[...])
    np.testing.assert_array_equal(gen(z[:7], psi=0.5), again(z[:7], psi=0.5))
    assert disc(jnp.zeros((4, 6))).shape == (4,)  # packed: pack=2 samples of 3 per row


def test_style_training_is_deterministic():
    data = np.random.default_rng(0).normal(size=(128, 2)).astype(np.float32)
    kw = dict(latent_dim=4, steps=4, batch_size=16, w_avg_samples=256)
    a, _ = gan.train_style(jax.random.key(3), data, **kw)
    b, _ = gan.train_style(jax.random.key(3), data, **kw)
    z = jax.random.normal(jax.random.key(1), (5, 4))
    np.testing.assert_array_equal(a(z), b(z))


def test_style_training_bad_input():
    data = np.zeros((64, 3), np.float32)
    with pytest.raises(ValueError, match="multiple of pack"):
        gan.train_style(jax.random.key(0), data, latent_dim=4, steps=1, batch_size=33)
    with pytest.raises(ValueError, match="data_dim=2"):
        gan.train_style(jax.random.key(0), data, config=gan.StyleConfig(4, 2), steps=1)
    with pytest.raises(ValueError, match="data must be"):
        gan.train_style(jax.random.key(0), data[0], latent_dim=4, steps=1)


def test_checkpoint_of_other_kind_is_rejected(tmp_path):
    path = tmp_path / "g.npz"
    gan.save(small_style(), path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["config"] = np.array('{"latent_dim": 6, "data_dim": 3, "hidden": [16]}')
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="does not match"):
        gan.load_generator(path)


def test_truncation_in_w_convention():
    """psi pulls w toward w_avg (StyleGAN's form), not z toward 0."""
    g = small_style()
    g.mapping.w_avg[...] = jnp.arange(8.0) / 8
    z = jax.random.normal(jax.random.key(0), (5, 6))
    w = g.mapping(z)
    w_avg = g.mapping.w_avg[...]
    np.testing.assert_allclose(g(z, psi=1.0), g.synthesis(w), rtol=1e-6)
    at_avg = np.asarray(g(z, psi=0.0))
    np.testing.assert_allclose(
        at_avg, np.broadcast_to(g.synthesis(w_avg[None])[0], (5, 3)), rtol=1e-5, atol=1e-6
    )
    half = sampling.truncate(w, w_avg, psi=0.5)
    # centre + psi (w - centre) in float32 rounds twice (the difference, then the sum), so it
    # differs from the float64 value by up to ~2 ulps of the operands' scale, not of the result
    # (which can be far smaller where w is close to -w_avg): a relative tolerance on the result
    # fails on some CPUs' instruction mixes.
    w64, avg64 = np.asarray(w, np.float64), np.asarray(w_avg, np.float64)
    scale = np.maximum(np.abs(w64), np.abs(avg64))
    err = np.abs(np.asarray(half, np.float64) - (w64 + avg64) / 2)
    assert (err <= 4 * np.finfo(np.float32).eps * scale).all(), err.max()
    np.testing.assert_allclose(g(z, psi=0.5), g.synthesis(half), rtol=1e-5, atol=1e-6)
    # truncation in Z is a different thing: psi * z through the whole generator
    assert not np.allclose(g(0.5 * z), g(z, psi=0.5), atol=1e-4)
    with pytest.raises(ValueError, match="centre"):
        sampling.truncate(w, w_avg[:3], psi=0.5)


def test_hubness_in_w_scores_mapped_latents():
    """The paper's code: hub values of mapping(z) decide; z itself is returned."""
    g = small_style(seed=1)
    key, batch, t = jax.random.key(5), 400, 9
    z, info = sampling.hubness_sample(
        key,
        400,
        latent_dim=6,
        k=5,
        threshold=t,
        batch_size=batch,
        mapping_fn=g.mapping,
        max_batches=1,
        raise_on_shortfall=False,
    )
    first = jax.random.normal(jax.random.split(key)[1], (batch, 6))
    in_w = occurrence.hub_values(g.mapping(first), k=5, include_self=True)
    in_z = occurrence.hub_values(first, k=5, include_self=True)
    expected = np.asarray(first)[np.asarray(in_w) >= t]
    assert int(info.accepted) == len(expected) > 0
    assert_same_draws(np.asarray(z)[: len(expected)], expected)
    assert not np.array_equal(np.asarray(in_w) >= t, np.asarray(in_z) >= t)


def test_hubness_in_w_sees_updated_mapping_weights():
    g = small_style(seed=2)
    kw = dict(latent_dim=6, k=5, threshold=6, batch_size=300, mapping_fn=g.mapping)
    before, _ = sampling.hubness_sample(jax.random.key(0), 30, **kw)
    layer = g.mapping.net.layers[0]
    layer.kernel[...] = -2 * layer.kernel[...]
    after, _ = sampling.hubness_sample(jax.random.key(0), 30, **kw)
    assert not np.array_equal(np.asarray(before), np.asarray(after))


def ring_modes(x):
    angles = 2 * np.pi * np.arange(8) / 8
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    dist = np.linalg.norm(x[:, None] - centres[None], axis=-1)
    good = dist.min(1) <= 3 * 0.05
    shares = np.bincount(dist.argmin(1)[good], minlength=8) / len(x)
    return int(np.sum(shares >= 0.01))


@pytest.mark.parametrize("seed", SEEDS)
def test_shipped_ring_generators_cover_the_modes(seed):
    g = gan.load_generator(CHECKPOINTS / f"ring_s{seed}.npz")
    x = np.asarray(g(jax.random.normal(jax.random.key(seed), (2000, g.config.latent_dim))))
    assert ring_modes(x) >= 7


@pytest.mark.parametrize("name", ["ring", "digits"])
def test_shipped_checkpoints_generate_with_hubness_sampling_in_w(name):
    gen = gan.load_generator(CHECKPOINTS / f"{name}_s0.npz")
    x, _, info = sampling.generate(
        jax.random.key(2),
        gen,
        16,
        latent_dim=gen.config.latent_dim,
        mapping_fn=gen.mapping,
        threshold=7,
        batch_size=1000,
    )
    assert x.shape == (16, gen.config.data_dim) and bool(info.filled)
    assert np.isfinite(np.asarray(x)).all()
