"""A small Flax NNX GAN for low-dimensional data, trained with optax.

MLP generator and discriminator with the non-saturating GAN loss -- enough for Gaussian
mixtures and 8x8 digits on a CPU in well under a minute, and a test bed for latent samplers.
Checkpoints are plain ``.npz`` files of the parameter leaves plus the model configuration.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["GANConfig", "MLP", "Generator", "Discriminator", "train", "save", "load_generator"]

try:
    import optax
    from flax import nnx
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError("hubjax.gan needs flax and optax: pip install 'hubjax[gan]'") from None


class MLP(nnx.Module):
    """Dense layers with leaky-ReLU between them."""

    def __init__(self, sizes: tuple[int, ...], *, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.leaky_relu(layer(x), 0.2)
        return self.layers[-1](x)


@dataclasses.dataclass(frozen=True)
class GANConfig:
    latent_dim: int
    data_dim: int
    hidden: tuple[int, ...] = (128, 128)


class Generator(nnx.Module):
    """``z [n, latent_dim] -> x [n, data_dim]`` (a plain MLP, linear output)."""

    def __init__(self, config: GANConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.net = MLP((config.latent_dim, *config.hidden, config.data_dim), rngs=rngs)

    def __call__(self, z):
        return self.net(z)


class Discriminator(nnx.Module):
    """``x [n, data_dim] -> logits [n]``."""

    def __init__(self, config: GANConfig, *, rngs: nnx.Rngs):
        self.net = MLP((config.data_dim, *config.hidden, 1), rngs=rngs)

    def __call__(self, x):
        return self.net(x)[:, 0]


def train(
    key: jax.Array,
    data,
    *,
    latent_dim: int = 32,
    hidden: tuple[int, ...] = (128, 128),
    steps: int = 3000,
    batch_size: int = 256,
    learning_rate: float = 2e-4,
    log_every: int = 0,
) -> tuple[Generator, Discriminator]:
    """Trains a GAN on ``data [n, data_dim]`` (non-saturating loss, Adam(lr, b1=0.5)).

    Example:
      >>> import jax, hubjax.gan as gan
      >>> data = jax.random.normal(jax.random.key(0), (512, 2))
      >>> g, d = gan.train(jax.random.key(1), data, latent_dim=4, hidden=(16,), steps=5)
      >>> g(jax.numpy.zeros((3, 4))).shape
      (3, 2)
    """
    data = jnp.asarray(data, jnp.float32)
    config = GANConfig(latent_dim, data.shape[1], tuple(hidden))
    k_g, k_d, key = jax.random.split(key, 3)
    gen = Generator(config, rngs=nnx.Rngs(k_g))
    disc = Discriminator(config, rngs=nnx.Rngs(k_d))
    tx = optax.adam(learning_rate, b1=0.5)
    opt_g = nnx.Optimizer(gen, tx, wrt=nnx.Param)
    opt_d = nnx.Optimizer(disc, tx, wrt=nnx.Param)

    @nnx.jit
    def step(gen, disc, opt_g, opt_d, key):
        k_idx, k_z1, k_z2 = jax.random.split(key, 3)
        real = data[jax.random.randint(k_idx, (batch_size,), 0, data.shape[0])]
        fake = jax.lax.stop_gradient(gen(jax.random.normal(k_z1, (batch_size, latent_dim))))

        def d_loss(disc):
            return jnp.mean(jax.nn.softplus(-disc(real)) + jax.nn.softplus(disc(fake)))

        def g_loss(gen):
            return jnp.mean(
                jax.nn.softplus(-disc(gen(jax.random.normal(k_z2, (batch_size, latent_dim)))))
            )

        ld, grads_d = nnx.value_and_grad(d_loss)(disc)
        opt_d.update(disc, grads_d)
        lg, grads_g = nnx.value_and_grad(g_loss)(gen)
        opt_g.update(gen, grads_g)
        return ld, lg

    # optax's Adam mixes Python floats with its int32 step count, which strict dtype promotion
    # rejects; train under standard promotion whatever the caller's setting.
    with jax.numpy_dtype_promotion("standard"):
        for i in range(steps):
            key, sub = jax.random.split(key)
            ld, lg = step(gen, disc, opt_g, opt_d, sub)
            if log_every and (i + 1) % log_every == 0:
                print(f"step {i + 1}: d_loss {float(ld):.3f} g_loss {float(lg):.3f}", flush=True)
    return gen, disc


def save(model: nnx.Module, path) -> None:
    """Writes the model's state leaves and its config to ``path`` (.npz)."""
    _, state = nnx.split(model)
    leaves = jax.tree.leaves(state)
    config = json.dumps(dataclasses.asdict(model.config))
    arrays = {f"arr_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    np.savez(path, config=np.array(config), **arrays)


def load_generator(path) -> Generator:
    """Rebuilds a :class:`Generator` saved with :func:`save`."""
    with np.load(Path(path), allow_pickle=False) as f:
        config = json.loads(str(f["config"]))
        config["hidden"] = tuple(config["hidden"])
        gen = Generator(GANConfig(**config), rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(gen)
        leaves, treedef = jax.tree.flatten(state)
        loaded = [jnp.asarray(f[f"arr_{i}"]) for i in range(len(leaves))]
    for old, new in zip(leaves, loaded, strict=True):
        if old.shape != new.shape:
            raise ValueError(
                f"checkpoint {path} does not match the model ({old.shape} vs {new.shape})"
            )
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, loaded))
