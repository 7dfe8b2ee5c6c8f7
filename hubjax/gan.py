"""Small Flax NNX GANs for low-dimensional data, trained with optax.

Two generators, both test beds for latent samplers:

* :class:`Generator` -- a plain MLP ``z -> x`` trained by :func:`train` (non-saturating loss);
* :class:`StyleGenerator` -- StyleGAN-like: a mapping network ``z -> w`` and a synthesis network
  that starts from a learned constant and is modulated by ``w`` at every layer (per-feature
  scale and shift from an affine map of ``w``), with the average ``w_avg`` stored for the
  truncation trick in W. Trained by :func:`train_style` (non-saturating loss, R1 penalty on
  real data, Adam with ``b1 = 0`` as in StyleGAN2, a packed discriminator against mode
  collapse).

Checkpoints are plain ``.npz`` files of the state leaves plus the model configuration;
:func:`load_generator` rebuilds either kind.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hubjax import sampling

__all__ = [
    "GANConfig",
    "StyleConfig",
    "MLP",
    "Generator",
    "Discriminator",
    "MappingNetwork",
    "Synthesis",
    "StyleGenerator",
    "WAverage",
    "train",
    "train_style",
    "save",
    "load_generator",
]

try:
    import optax
    from flax import nnx
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "hubjax.gan needs flax and optax: pip install flax optax (or, in the hubjax repository, "
        "pip install '.[gan]')"
    ) from None


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


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """Sizes of a :class:`StyleGenerator` (all static)."""

    latent_dim: int
    data_dim: int
    w_dim: int = 32
    mapping_layers: int = 3
    hidden: int = 128
    synthesis_layers: int = 3


class WAverage(nnx.Variable):
    """The mean of ``w`` over the prior (not trained by the optimiser; set after training)."""


class MappingNetwork(nnx.Module):
    """``z [n, latent_dim] -> w [n, w_dim]``: an MLP with leaky-ReLU.

    Unlike StyleGAN2 it does not normalise ``z`` to unit length first: with that
    normalisation the truncation trick in Z (``psi * z``) would change nothing, and the study
    compares it. ``w_avg`` (:class:`WAverage`) is the mean of ``w`` over ``z ~ N(0, I)``.
    """

    def __init__(self, config: StyleConfig, *, rngs: nnx.Rngs):
        sizes = (config.latent_dim, *([config.w_dim] * config.mapping_layers))
        self.net = MLP(sizes, rngs=rngs)
        self.w_avg = WAverage(jnp.zeros((config.w_dim,), jnp.float32))

    def __call__(self, z):
        return self.net(z)


class Synthesis(nnx.Module):
    """``w [n, w_dim] -> x [n, data_dim]``: a learned constant modulated by ``w`` per layer.

    Layer ``l`` computes ``leaky_relu(dense_l(h) * (1 + s_l(w)) + b_l(w))`` with ``s_l, b_l``
    an affine map of ``w`` (StyleGAN's styles, here as per-feature scale and shift); the
    output layer is linear.
    """

    def __init__(self, config: StyleConfig, *, rngs: nnx.Rngs):
        h = config.hidden
        self.const = nnx.Param(jax.random.normal(rngs.params(), (h,)))
        self.layers = nnx.List(
            [nnx.Linear(h, h, rngs=rngs) for _ in range(config.synthesis_layers)]
        )
        self.styles = nnx.List(
            [
                nnx.Linear(config.w_dim, 2 * h, kernel_init=nnx.initializers.zeros, rngs=rngs)
                for _ in range(config.synthesis_layers)
            ]
        )
        self.out = nnx.Linear(h, config.data_dim, rngs=rngs)

    def __call__(self, w):
        h = jnp.broadcast_to(self.const[...], (w.shape[0], self.const.shape[0]))
        for layer, style in zip(self.layers, self.styles, strict=True):
            scale, shift = jnp.split(style(w), 2, axis=-1)
            h = jax.nn.leaky_relu(layer(h) * (1.0 + scale) + shift, 0.2)
        return self.out(h)


class StyleGenerator(nnx.Module):
    """StyleGAN-like generator: ``x = synthesis(mapping(z))``.

    Attributes:
      mapping: :class:`MappingNetwork` ``z -> w``; pass it as ``mapping_fn`` to
        :func:`hubjax.sampling.hubness_sample` to score latents in W (the paper's code). It is
        an ``nnx.Module``, so its weights are traced, never baked into a compiled sampler.
      synthesis: :class:`Synthesis` ``w -> x``.

    Example:
      >>> import jax, hubjax.gan as gan
      >>> from flax import nnx
      >>> g = gan.StyleGenerator(gan.StyleConfig(latent_dim=8, data_dim=2), rngs=nnx.Rngs(0))
      >>> z = jax.random.normal(jax.random.key(1), (5, 8))
      >>> g(z).shape, g.mapping(z).shape
      ((5, 2), (5, 32))
    """

    def __init__(self, config: StyleConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.mapping = MappingNetwork(config, rngs=rngs)
        self.synthesis = Synthesis(config, rngs=rngs)

    def __call__(self, z, *, psi: float = 1.0):
        """``z [n, latent_dim] -> x [n, data_dim]``; ``psi < 1`` truncates in W."""
        w = self.mapping(z)
        if psi != 1.0:
            w = sampling.truncate(w, self.mapping.w_avg[...], psi=psi)
        return self.synthesis(w)


def train_style(
    key: jax.Array,
    data,
    *,
    config: StyleConfig | None = None,
    latent_dim: int = 32,
    steps: int = 4000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    r1_gamma: float = 0.1,
    pack: int = 2,
    ema_decay: float = 0.999,
    w_avg_samples: int = 65_536,
    log_every: int = 0,
) -> tuple[StyleGenerator, Discriminator]:
    """Trains a :class:`StyleGenerator` on ``data [n, data_dim]``.

    Non-saturating loss, R1 penalty ``r1_gamma / 2 * |grad D(real)|^2`` on real data, Adam
    ``(learning_rate, b1=0, b2=0.99)`` for both networks as in StyleGAN2, and a discriminator
    that sees ``pack`` samples at once (PacGAN, Lin et al. 2018), which keeps small GANs from
    dropping modes. The returned generator is the exponential moving average of the trained
    one (decay ``ema_decay``, StyleGAN's G_ema) with ``mapping.w_avg`` set to the mean of
    ``w`` over ``w_avg_samples`` latents drawn from ``key``.

    Args:
      key: PRNG key; the same key gives the same model on the same machine.
      data: ``[n, data_dim]`` training data.
      config: model sizes; default ``StyleConfig(latent_dim, data_dim)``.
      latent_dim: used when ``config`` is None.
      steps, batch_size, learning_rate, r1_gamma, pack, ema_decay: as above (``batch_size``
        must be a multiple of ``pack``).
      w_avg_samples: latents averaged for ``w_avg``.
      log_every: print the losses every this many steps (0: never).

    Returns:
      ``(generator, discriminator)``.

    Example:
      >>> import jax, hubjax.gan as gan
      >>> data = jax.random.normal(jax.random.key(0), (512, 2))
      >>> g, d = gan.train_style(jax.random.key(1), data, latent_dim=4, steps=3)
      >>> g(jax.numpy.zeros((3, 4))).shape, g.mapping.w_avg.shape
      ((3, 2), (32,))
    """
    data = jnp.asarray(data, jnp.float32)
    if data.ndim != 2:
        raise ValueError(f"data must be [n, data_dim], got shape {data.shape}")
    if batch_size % pack:
        raise ValueError(f"batch_size={batch_size} must be a multiple of pack={pack}")
    config = config or StyleConfig(latent_dim, data.shape[1])
    if config.data_dim != data.shape[1]:
        raise ValueError(f"config.data_dim={config.data_dim} but data has {data.shape[1]} columns")
    k_g, k_d, k_w, key = jax.random.split(key, 4)
    gen = StyleGenerator(config, rngs=nnx.Rngs(k_g))
    ema = StyleGenerator(config, rngs=nnx.Rngs(k_g))
    disc_config = GANConfig(config.latent_dim, config.data_dim * pack, (config.hidden,) * 2)
    disc = Discriminator(disc_config, rngs=nnx.Rngs(k_d))
    tx = optax.adam(learning_rate, b1=0.0, b2=0.99)
    opt_g = nnx.Optimizer(gen, tx, wrt=nnx.Param)
    opt_d = nnx.Optimizer(disc, tx, wrt=nnx.Param)
    n_latent = config.latent_dim

    def packed(x):
        return x.reshape(x.shape[0] // pack, pack * x.shape[1])

    @nnx.jit
    def step(gen, ema, disc, opt_g, opt_d, key):
        k_idx, k_z1, k_z2 = jax.random.split(key, 3)
        real = data[jax.random.randint(k_idx, (batch_size,), 0, data.shape[0])]
        fake = jax.lax.stop_gradient(gen(jax.random.normal(k_z1, (batch_size, n_latent))))

        def d_loss(disc):
            logits_real = disc(packed(real))
            grad = jax.grad(lambda r: jnp.sum(disc(packed(r))))(real)
            r1 = jnp.sum(grad**2) / (batch_size // pack)
            loss = jnp.mean(jax.nn.softplus(-logits_real) + jax.nn.softplus(disc(packed(fake))))
            return loss + 0.5 * r1_gamma * r1

        def g_loss(gen):
            z = jax.random.normal(k_z2, (batch_size, n_latent))
            return jnp.mean(jax.nn.softplus(-disc(packed(gen(z)))))

        ld, grads_d = nnx.value_and_grad(d_loss)(disc)
        opt_d.update(disc, grads_d)
        lg, grads_g = nnx.value_and_grad(g_loss)(gen)
        opt_g.update(gen, grads_g)
        averaged = jax.tree.map(
            lambda e, p: ema_decay * e + (1.0 - ema_decay) * p,
            nnx.state(ema, nnx.Param),
            nnx.state(gen, nnx.Param),
        )
        nnx.update(ema, averaged)
        return ld, lg

    with jax.numpy_dtype_promotion("standard"):
        nnx.update(ema, nnx.state(gen, nnx.Param))
        for i in range(steps):
            key, sub = jax.random.split(key)
            ld, lg = step(gen, ema, disc, opt_g, opt_d, sub)
            if log_every and (i + 1) % log_every == 0:
                print(f"step {i + 1}: d_loss {float(ld):.3f} g_loss {float(lg):.3f}", flush=True)
    z = jax.random.normal(k_w, (w_avg_samples, n_latent))
    ema.mapping.w_avg[...] = jnp.mean(ema.mapping(z), axis=0)
    return ema, disc


def save(model: nnx.Module, path) -> None:
    """Writes a generator's state leaves and its config to ``path`` (.npz).

    Works for :class:`Generator` and :class:`StyleGenerator` (the kind is stored with the
    config; ``w_avg`` is saved with the weights).
    """
    _, state = nnx.split(model)
    leaves = jax.tree.leaves(state)
    kind = "style" if isinstance(model, StyleGenerator) else "mlp"
    config = json.dumps({"kind": kind, **dataclasses.asdict(model.config)})
    arrays = {f"arr_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    np.savez(path, config=np.array(config), **arrays)


def load_generator(path) -> Generator | StyleGenerator:
    """Rebuilds a :class:`Generator` or :class:`StyleGenerator` saved with :func:`save`.

    Raises:
      ValueError: the stored arrays do not fit the stored configuration.
    """
    with np.load(Path(path), allow_pickle=False) as f:
        config = json.loads(str(f["config"]))
        kind = config.pop("kind", "mlp")
        if kind == "style":
            gen = StyleGenerator(StyleConfig(**config), rngs=nnx.Rngs(0))
        else:
            config["hidden"] = tuple(config["hidden"])
            gen = Generator(GANConfig(**config), rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(gen)
        leaves, treedef = jax.tree.flatten(state)
        if len([name for name in f.files if name.startswith("arr_")]) != len(leaves):
            raise ValueError(f"checkpoint {path} does not match a {kind} generator")
        loaded = [jnp.asarray(f[f"arr_{i}"]) for i in range(len(leaves))]
    for old, new in zip(leaves, loaded, strict=True):
        if old.shape != new.shape:
            raise ValueError(
                f"checkpoint {path} does not match the model ({old.shape} vs {new.shape})"
            )
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, loaded))
