"""Hubness-prior sampling vs random and truncation sampling on small GANs (main demo).

    python examples/gan_hubness.py           # uses the shipped checkpoints; ~2-4 min on 2 cores
    python examples/gan_hubness.py --train   # trains the three GANs from scratch first
    python examples/gan_hubness.py --train ring2d   # retrains one of them

Three offline datasets: a ring of 8 Gaussians in 2-D, the same ring embedded in 32-D, and
scikit-learn's bundled 8x8 digits (metrics on the hidden features of a small classifier trained
here). For each, 2000 samples from random latents, the truncation trick at several psi, and
hubness-prior sampling at several thresholds t (k = 5 counting self, batches of 5000, Z space),
scored by precision/recall (k = 3), density/coverage (k = 5), Fréchet distance and, for the
rings, the share of samples within 3 standard deviations of a mode. Writes
examples/results/gan_hubness.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hubjax import gan, metrics, sampling

HERE = Path(__file__).resolve().parent
CHECKPOINTS = HERE / "checkpoints"
RESULTS = HERE / "results"
LATENT_DIM = 32
NUM_SAMPLES = 2000
BATCH = 5000
RING_STD = 0.05
# Training settings per dataset (steps, learning rate, hidden layers): chosen by a few short
# trials; the rings' GANs still drop some modes, as small GANs on tight mixtures do.
TRAINING = {
    "ring2d": (4000, 1e-3, (256, 256, 256)),
    "ring32d": (4000, 2e-4, (128, 128)),
    "digits": (6000, 2e-4, (128, 128)),
}


def ring_centres():
    angles = 2 * np.pi * np.arange(8) / 8
    return 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)


def embedding():
    q, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(32, 2)))
    return q.T.astype(np.float32)  # [2, 32], orthonormal rows


def make_data(name: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "digits":
        from sklearn.datasets import load_digits

        return (load_digits().data / 8.0 - 1.0).astype(np.float32)
    x = ring_centres()[rng.integers(0, 8, n)] + RING_STD * rng.normal(size=(n, 2))
    if name == "ring32d":
        x = x @ embedding() + 0.02 * rng.normal(size=(n, 32))
    return x.astype(np.float32)


def ring_quality(name: str, x: np.ndarray) -> float:
    """Share of samples within 3 standard deviations of a mode (in the ring's plane)."""
    plane = x @ embedding().T if name == "ring32d" else x
    nearest = np.min(np.linalg.norm(plane[:, None, :] - ring_centres()[None], axis=-1), axis=1)
    return float(np.mean(nearest <= 3 * RING_STD))


class Classifier(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(64, 64, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def features(self, x):
        return jax.nn.relu(self.hidden(x))

    def __call__(self, x):
        return self.out(self.features(x))


def digit_features():
    """Trains a small classifier on the digits; returns its feature map and test accuracy."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = jnp.asarray(digits.data / 8.0 - 1.0, jnp.float32)
    y = jnp.asarray(digits.target)
    train, test = np.arange(len(x)) % 5 != 0, np.arange(len(x)) % 5 == 0
    model = Classifier(nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        def loss(model):
            logits = model(x[train])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[train]).mean()

        grads = nnx.grad(loss)(model)
        opt.update(model, grads)

    for _ in range(400):
        step(model, opt)
    accuracy = float(jnp.mean(model(x[test]).argmax(1) == y[test]))
    return model.features, accuracy


def latents_for(method: str, param, key):
    if method == "random":
        return jax.random.normal(key, (NUM_SAMPLES, LATENT_DIM)), 1.0
    if method == "truncation":
        return sampling.truncated_latents(key, NUM_SAMPLES, latent_dim=LATENT_DIM, psi=param), 1.0
    z, info = sampling.hubness_sample(
        key,
        NUM_SAMPLES,
        latent_dim=LATENT_DIM,
        k=5,
        threshold=param,
        batch_size=BATCH,
        include_self=True,
        max_batches=400,
    )
    return z, float(info.acceptance_rate)


def thresholds() -> list[int]:
    """Hub-value thresholds accepting roughly 20 %, 5 % and 1 % of latents."""
    z = jax.random.normal(jax.random.key(123), (BATCH, LATENT_DIM))
    scores = np.asarray(sampling.hub_scores(z, k=5, include_self=True))
    return [int(np.quantile(scores, q)) for q in (0.8, 0.95, 0.99)]


def evaluate(name, generator, feature_fn, real, ts):
    rows = []
    real_f = feature_fn(jnp.asarray(real))
    plans = [("random", None)] + [("truncation", p) for p in (0.8, 0.6, 0.4)]
    plans += [("hubness", t) for t in ts]
    samples = {}
    for i, (method, param) in enumerate(plans):
        z, rate = latents_for(method, param, jax.random.key(1000 + i))
        x = np.asarray(generator(z))
        fake_f = feature_fn(jnp.asarray(x))
        p, r = metrics.precision_recall(real_f, fake_f, k=3)
        d, c = metrics.density_coverage(real_f, fake_f, k=5)
        row = {
            "dataset": name,
            "method": method
            if param is None
            else f"{method} {'psi' if method == 'truncation' else 't'}={param}",
            "acceptance": rate,
            "precision": float(p),
            "recall": float(r),
            "density": float(d),
            "coverage": float(c),
            "fd": float(metrics.frechet_distance(real_f, fake_f)),
        }
        if name != "digits":
            row["mode_quality"] = ring_quality(name, x)
        rows.append(row)
        samples[row["method"]] = x
        print(
            f"  {row['method']:<20} precision {row['precision']:.3f} recall {row['recall']:.3f} "
            f"FD {row['fd']:.4f} acceptance {rate:.3f}",
            flush=True,
        )
    return rows, samples


def to_markdown(rows) -> str:
    lines = [
        "| dataset | sampler | acceptance | precision | recall | density | coverage | FD "
        "| in 3 sd of a mode |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mq = f"{r['mode_quality']:.3f}" if "mode_quality" in r else "-"
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['acceptance']:.3f} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['density']:.3f} | {r['coverage']:.3f} | {r['fd']:.4f} | {mq} |"
        )
    return "\n".join(lines)


def figure(rows, samples, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    ring = samples["ring2d"]
    for ax, key in zip(
        axes[0, :3],
        [k for k in ring if k.split()[0] in ("random",)]
        + [k for k in ring if "psi=0.6" in k]
        + [k for k in ring if k.startswith("hubness")][1:2],
        strict=False,
    ):
        ax.scatter(*ring[key][:, :2].T, s=2, alpha=0.5)
        ax.scatter(*ring_centres().T, marker="x", color="red")
        ax.set_title(f"ring2d: {key}")
        ax.set_aspect("equal")
    for ax, name in zip(
        [axes[0, 3], axes[1, 3], axes[1, 2]], ["ring2d", "ring32d", "digits"], strict=True
    ):
        for family, marker in (("truncation", "s"), ("hubness", "o"), ("random", "*")):
            pts = [
                (r["recall"], r["precision"])
                for r in rows
                if r["dataset"] == name and r["method"].startswith(family)
            ]
            if pts:
                ax.plot(*np.array(pts).T, marker=marker, label=family)
        ax.set(xlabel="recall", ylabel="precision", title=f"{name}: precision / recall")
        ax.legend()
    digits = samples["digits"]
    for ax, key in zip(
        axes[1, :2], ["random", [k for k in digits if k.startswith("hubness")][1]], strict=True
    ):
        grid = np.clip((digits[key][:64].reshape(8, 8, 8, 8) + 1) / 2, 0, 1)
        ax.imshow(grid.transpose(0, 2, 1, 3).reshape(64, 64), cmap="gray_r")
        ax.set_title(f"digits: {key}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--train",
        nargs="*",
        metavar="NAME",
        help="train the GANs from scratch (all, or the named ones: ring2d ring32d digits)",
    )
    parser.add_argument("--no-figure", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    CHECKPOINTS.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    ts = thresholds()
    print(f"hubness thresholds (k=5 with self, batch {BATCH}, d={LATENT_DIM}): {ts}")
    features, accuracy = digit_features()
    print(f"digit classifier test accuracy (features for the digit metrics): {accuracy:.3f}")
    rows, all_samples = [], {}
    for i, name in enumerate(("ring2d", "ring32d", "digits")):
        ckpt = CHECKPOINTS / f"{name}.npz"
        data = make_data(name, 20_000, seed=i)
        retrain = args.train is not None and (not args.train or name in args.train)
        if retrain or not ckpt.exists():
            steps, lr, hidden = TRAINING[name]
            print(f"training {name} ({steps} steps)...", flush=True)
            generator, _ = gan.train(
                jax.random.key(i),
                data,
                latent_dim=LATENT_DIM,
                steps=steps,
                learning_rate=lr,
                hidden=hidden,
            )
            gan.save(generator, ckpt)
        generator = gan.load_generator(ckpt)
        real = data if name == "digits" else make_data(name, NUM_SAMPLES, seed=100 + i)
        feature_fn = features if name == "digits" else (lambda a: a)
        print(f"{name}:")
        r, s = evaluate(name, generator, feature_fn, real, ts)
        rows += r
        all_samples[name] = s
    markdown = to_markdown(rows)
    print(markdown)
    (RESULTS / "gan_hubness.md").write_text(markdown + "\n")
    (RESULTS / "gan_hubness.json").write_text(
        json.dumps({"thresholds": ts, "classifier_accuracy": accuracy, "rows": rows}, indent=1)
    )
    if not args.no_figure:
        figure(rows, all_samples, RESULTS / "gan_hubness.png")
    print(f"done in {time.perf_counter() - start:.0f} s; results in {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
