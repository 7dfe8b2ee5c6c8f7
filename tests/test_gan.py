from pathlib import Path

import jax
import numpy as np
import pytest

from hubjax import gan, sampling

CHECKPOINTS = Path(__file__).resolve().parents[1] / "examples" / "checkpoints"


def test_train_save_load_roundtrip(tmp_path):
    data = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    gen, disc = gan.train(jax.random.key(0), data, latent_dim=4, hidden=(16,), steps=20)
    path = tmp_path / "g.npz"
    gan.save(gen, path)
    again = gan.load_generator(path)
    z = jax.random.normal(jax.random.key(1), (7, 4))
    np.testing.assert_array_equal(gen(z), again(z))
    assert disc(gen(z)).shape == (7,)


@pytest.mark.parametrize("name", ["ring2d", "ring32d", "digits"])
def test_shipped_checkpoints_generate_with_hubness_sampling(name):
    gen = gan.load_generator(CHECKPOINTS / f"{name}.npz")
    x, _, info = sampling.generate(
        jax.random.key(2),
        gen,
        16,
        latent_dim=gen.config.latent_dim,
        threshold=7,
        batch_size=1000,
    )
    assert x.shape == (16, gen.config.data_dim) and bool(info.filled)
    assert np.isfinite(np.asarray(x)).all()
