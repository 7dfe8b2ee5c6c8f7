"""Does hubness-prior sampling give better samples? A seeded study in Z and W (main demo).

    python examples/sample_quality.py            # quick mode, shipped checkpoints, ~2-3 min
    python examples/sample_quality.py --full     # retrains all generators, regenerates results
    python examples/sample_quality.py --tiny     # small deterministic run (the tests use it)

Two StyleGAN-like generators (:class:`hubjax.gan.StyleGenerator`: mapping network z -> w,
synthesis from w) per training seed, five training seeds each, shipped in
``examples/checkpoints/{ring,digits}_s{seed}.npz``:

* ``ring`` -- 8 Gaussians (standard deviation 0.05) on a circle of radius 2: the quality of
  every sample is known (its distance to the nearest mode);
* ``digits`` -- scikit-learn's 8x8 digits, judged by a small digit classifier trained here
  (its confidence is the per-sample quality; its hidden layer gives the features of the
  distribution metrics).

Samplers, each at several strengths:

* ``random``: z ~ N(0, I);
* ``truncation`` in Z (``psi * z``) and in W (``w_avg + psi (w - w_avg)``, StyleGAN's form);
* ``hubness`` in Z (the blog recipe's space) and in W (the paper's code: hub values of
  ``mapping(z)``), k = 5 counting self, within batches; the threshold of each row accepts the
  nominal share ``param`` of a reference batch (in W the reference is mapped by each seed's
  own generator);
* ``radius`` in Z and W -- the matched-strength control for hubness: of ``num / param`` draws
  keep the ``num`` closest to the centre (``|z|`` or ``|w - w_avg|``), so it accepts exactly
  the share hubness is calibrated to;
* ``polarity`` (Humayun et al., CVPR 2022): draws from a pool of 10 x ``num`` latents with
  probability proportional to ``prod_i sigma_i(J_G(z)) ** rho`` (Gumbel top-k, without
  replacement); rho < 0 favours latents the generator contracts, i.e. dense regions.

Metrics on ``num`` samples per sampler and seed: precision, recall, density and coverage
(k = 5) and Fréchet distance on the classifier's features (digits) or the coordinates (ring),
plus the per-sample quality (digits: classifier confidence; ring: distance to the nearest mode
in standard deviations, the share within 3 of them, the modes holding at least 1 % of the
samples within 3 of them). Seeds vary **both** training and sampling: seed s uses the generator
trained with seed s and sampling keys derived from s. Each metric is reported as the mean over
seeds with a 95 % Student-t interval.

Quick mode (the README's command 1) uses the shipped checkpoints, 1000 samples and batches of
5000 and writes ``examples/results/quick/``; full mode retrains, uses 2000 samples and writes
``examples/results/sample_quality.{json,md}``, the figures and the study section of
``docs/sampling.md``; tiny mode (100 samples, batches of 500, seeds 0 and 1) writes
``examples/results/tiny/``.
``--rewrite`` rebuilds the markdown, figures and that section from the shipped JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
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
README = HERE.parent / "docs" / "sampling.md"  # the study section lives there
DATASETS = ("ring", "digits")
LATENT_DIM = 32
K = 5
RING_STD = 0.05
SHARES = (0.2, 0.05, 0.01)  # nominal acceptance of hubness / radius rows
PSIS = (0.9, 0.7, 0.5)
RHOS = (-0.25, -0.5, -1.0)
POOL = 10  # polarity draws num from POOL * num latents
# Per dataset: model sizes and training steps (chosen by short trials: every ring seed covers
# all 8 modes with random sampling; digits are recognised with the confidences reported).
CONFIGS = {
    "ring": (gan.StyleConfig(LATENT_DIM, 2, w_dim=32, hidden=128), 6000),
    "digits": (gan.StyleConfig(LATENT_DIM, 64, w_dim=32, hidden=128), 4000),
}


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    num: int  # samples per sampler and seed
    batch: int  # hubness batch size
    seeds: tuple[int, ...]
    train: bool
    out: Path


MODES = {
    "quick": Mode("quick", 1000, 5000, (0, 1, 2, 3, 4), False, RESULTS / "quick"),
    "full": Mode("full", 2000, 5000, (0, 1, 2, 3, 4), True, RESULTS),
    "tiny": Mode("tiny", 100, 500, (0, 1), False, RESULTS / "tiny"),
}


# ----------------------------------------------------------------------------- data


def ring_centres() -> np.ndarray:
    angles = 2 * np.pi * np.arange(8) / 8
    return 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)


def ring_data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = ring_centres()[rng.integers(0, 8, n)] + RING_STD * rng.normal(size=(n, 2))
    return x.astype(np.float32)


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 8.0 - 1.0).astype(np.float32), d.target


def training_data(name: str) -> np.ndarray:
    return ring_data(20_000, seed=0) if name == "ring" else digits_data()[0]


# ----------------------------------------------------------------------------- judges


class Classifier(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(64, 64, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def features(self, x):
        return jax.nn.relu(self.hidden(x))

    def __call__(self, x):
        return self.out(self.features(x))


def digit_classifier() -> tuple[Classifier, dict]:
    """A small classifier on 4/5 of the digits (seed 0); its held-out accuracy and confidence."""
    x, y = digits_data()
    x, y = jnp.asarray(x), jnp.asarray(y)
    test = np.arange(len(x)) % 5 == 0
    model = Classifier(nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adamw(3e-3, weight_decay=1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        def loss(model):
            logits = model(x[~test])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[~test]).mean()

        opt.update(model, nnx.grad(loss)(model))

    with jax.numpy_dtype_promotion("standard"):
        for _ in range(500):
            step(model, opt)
    probs = jax.nn.softmax(model(x[test]))
    info = {
        "test_accuracy": float(jnp.mean(probs.argmax(1) == y[test])),
        "test_confidence": float(jnp.mean(probs.max(1))),
    }
    return model, info


def quality(name: str, x: np.ndarray, classifier) -> dict[str, float]:
    """Per-sample quality, averaged over the samples."""
    if name == "digits":
        probs = np.asarray(jax.nn.softmax(classifier(jnp.asarray(x))))
        return {"confidence": float(probs.max(1).mean())}
    dist = np.linalg.norm(x[:, None, :] - ring_centres()[None], axis=-1)
    near, which = dist.min(1) / RING_STD, dist.argmin(1)
    good = near <= 3
    shares = np.bincount(which[good], minlength=8) / len(x)
    return {
        "mode_distance_sd": float(np.mean(near)),
        "within_3sd": float(np.mean(good)),
        "modes_covered": float(np.sum(shares >= 0.01)),
    }


def features(name: str, x, classifier):
    return classifier.features(jnp.asarray(x)) if name == "digits" else jnp.asarray(x)


# ----------------------------------------------------------------------------- models


def checkpoint(name: str, seed: int) -> Path:
    return CHECKPOINTS / f"{name}_s{seed}.npz"


def generator(name: str, seed: int, *, train: bool) -> gan.StyleGenerator:
    path = checkpoint(name, seed)
    if train or not path.exists():
        config, steps = CONFIGS[name]
        print(f"training {name} seed {seed} ({steps} steps)...", flush=True)
        g, _ = gan.train_style(
            jax.random.key(seed), training_data(name), config=config, steps=steps
        )
        CHECKPOINTS.mkdir(exist_ok=True)
        gan.save(g, path)
    return gan.load_generator(path)


# ----------------------------------------------------------------------------- samplers


def plans() -> list[tuple[str, str | None, float | None]]:
    """``(sampler, space, param)`` of every row, in table order."""
    rows = [("random", None, None)]
    rows += [("truncation", s, p) for s in ("z", "w") for p in PSIS]
    rows += [(f, s, q) for f in ("hubness", "radius") for s in ("z", "w") for q in SHARES]
    rows += [("polarity", "z", r) for r in RHOS]
    return rows


def hub_thresholds(g, batch: int) -> dict[str, list[int]]:
    """Thresholds accepting about each of SHARES of a fixed reference batch, in Z and in W."""
    z = jax.random.normal(jax.random.key(123), (batch, LATENT_DIM))
    out = {}
    for space, fn in (("z", None), ("w", g.mapping)):
        scores = np.asarray(sampling.hub_scores(z, k=K, include_self=True, mapping_fn=fn))
        out[space] = [max(2, int(np.quantile(scores, 1 - q))) for q in SHARES]
    return out


@jax.jit
def log_volume(g, z):
    """``sum_i log sigma_i(J_G(z))`` per latent (the polarity sampler's log density factor)."""

    def one(v):
        jac = jax.jacfwd(lambda u: g(u[None])[0])(v)
        return jnp.sum(jnp.log(jnp.linalg.svd(jac, compute_uv=False) + 1e-12))

    return jax.lax.map(one, z, batch_size=256)


def sample(g, sampler, space, param, key, *, num, batch, thresholds):
    """``(samples [num, data_dim], acceptance)`` of one sampler."""
    if sampler == "random":
        return g(jax.random.normal(key, (num, LATENT_DIM))), 1.0
    if sampler == "truncation":
        if space == "z":
            return g(sampling.truncated_latents(key, num, latent_dim=LATENT_DIM, psi=param)), 1.0
        z = jax.random.normal(key, (num, LATENT_DIM))
        return g(z, psi=param), 1.0  # in W: w_avg + psi (w - w_avg)
    if sampler == "hubness":
        t = thresholds[space][SHARES.index(param)]
        z, info = sampling.hubness_sample(
            key,
            num,
            latent_dim=LATENT_DIM,
            k=K,
            threshold=t,
            batch_size=batch,
            include_self=True,
            mapping_fn=g.mapping if space == "w" else None,
            max_batches=max(50, math.ceil(40 * num / (min(SHARES) * batch))),  # one compile
        )
        return g(z), float(info.acceptance_rate)
    if sampler == "radius":
        pool = round(num / param)
        z = jax.random.normal(key, (pool, LATENT_DIM))
        centre = z if space == "z" else g.mapping(z) - g.mapping.w_avg[...]
        keep = jnp.argsort(jnp.linalg.norm(centre, axis=1))[:num]
        return g(z[keep]), num / pool
    if sampler == "polarity":
        k_pool, k_gumbel = jax.random.split(key)
        z = jax.random.normal(k_pool, (POOL * num, LATENT_DIM))
        logits = param * log_volume(g, z)
        _, keep = jax.lax.top_k(logits + jax.random.gumbel(k_gumbel, logits.shape), num)
        return g(z[keep]), 1.0 / POOL
    raise ValueError(f"unknown sampler {sampler!r}")


# ----------------------------------------------------------------------------- study


def interval(values) -> dict:
    """Mean and 95 % Student-t interval over seeds."""
    v = np.asarray(values, np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "ci95": [mean, mean]}
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def run(mode: Mode, *, log=print) -> tuple[list[dict], dict]:
    """All rows of the study (see the module docstring) and the settings used."""
    classifier, judge = digit_classifier()
    log(
        f"digit classifier: held-out accuracy {judge['test_accuracy']:.3f}, "
        f"confidence {judge['test_confidence']:.3f}"
    )
    real = {"ring": ring_data(2000, seed=100), "digits": digits_data()[0]}
    per_seed: dict[tuple, list[dict]] = {}
    acceptances: dict[tuple, list[float]] = {}
    settings = {"mode": mode.name, "num_samples": mode.num, "batch": mode.batch, "k": K}
    settings["seeds"] = list(mode.seeds)
    settings["thresholds"] = {}
    settings["classifier"] = judge
    for name in DATASETS:
        real_f = features(name, real[name], classifier)
        for seed in mode.seeds:
            start = time.perf_counter()
            g = generator(name, seed, train=mode.train)
            ts = hub_thresholds(g, mode.batch)
            settings["thresholds"][f"{name}_s{seed}"] = ts
            for i, (sampler, space, param) in enumerate(plans()):
                key = jax.random.fold_in(jax.random.key(1000 + seed), i)
                x, rate = sample(
                    g, sampler, space, param, key, num=mode.num, batch=mode.batch, thresholds=ts
                )
                fake_f = features(name, x, classifier)
                p, r = metrics.precision_recall(real_f, fake_f, k=K)
                d, c = metrics.density_coverage(real_f, fake_f, k=K)
                row = {
                    "precision": float(p),
                    "recall": float(r),
                    "density": float(d),
                    "coverage": float(c),
                    "fd": float(metrics.frechet_distance(real_f, fake_f)),
                }
                row.update(quality(name, np.asarray(x), classifier))
                per_seed.setdefault((name, sampler, space, param), []).append(row)
                acceptances.setdefault((name, sampler, space, param), []).append(rate)
            log(f"{name} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for (name, sampler, space, param), values in per_seed.items():
        rows.append(
            {
                "dataset": name,
                "sampler": sampler,
                "space": space,
                "param": param,
                "acceptance": float(np.mean(acceptances[(name, sampler, space, param)])),
                "seeds": list(mode.seeds),
                "metrics": {m: interval([v[m] for v in values]) for m in values[0]},
            }
        )
    return rows, settings


# ----------------------------------------------------------------------------- outputs

COLUMNS = {
    "ring": ("precision", "recall", "density", "coverage", "fd", "mode_distance_sd", "within_3sd",
             "modes_covered"),
    "digits": ("precision", "recall", "density", "coverage", "fd", "confidence"),
}  # fmt: skip


def label(row) -> str:
    if row["sampler"] == "random":
        return "random"
    what = {"truncation": "psi", "polarity": "rho"}.get(row["sampler"], "top")
    param = f"{row['param']:.0%}" if what == "top" else f"{row['param']:g}"
    return f"{row['sampler']} {row['space']} {what} {param}"


def cell(m) -> str:
    lo, hi = m["ci95"]
    return f"{m['mean']:.3f} ± {(hi - lo) / 2:.3f}"


def to_markdown(rows, settings) -> str:
    out = []
    for name in DATASETS:
        cols = COLUMNS[name]
        out.append(f"**{name}**\n")
        out.append("| sampler | acceptance | " + " | ".join(cols) + " |")
        out.append("| --- | --- | " + " | ".join("---" for _ in cols) + " |")
        for r in rows:
            if r["dataset"] == name:
                cells = " | ".join(cell(r["metrics"][c]) for c in cols)
                out.append(f"| {label(r)} | {r['acceptance']:.3f} | {cells} |")
        out.append("")
    return "\n".join(out)


def find(rows, name, sampler, space=None, param=None):
    for r in rows:
        if (r["dataset"], r["sampler"], r["space"], r["param"]) == (name, sampler, space, param):
            return r
    raise KeyError((name, sampler, space, param))


def compare(a, b, metric, *, lower_better=False) -> str:
    """'higher'/'lower'/'no clear difference' of a vs b (disjoint 95 % intervals)."""
    ma, mb = a["metrics"][metric], b["metrics"][metric]
    if ma["ci95"][0] > mb["ci95"][1]:
        word = "worse" if lower_better else "better"
    elif ma["ci95"][1] < mb["ci95"][0]:
        word = "better" if lower_better else "worse"
    else:
        return f"{metric} {ma['mean']:.3f} vs {mb['mean']:.3f} (intervals overlap)"
    return f"{metric} {ma['mean']:.3f} vs {mb['mean']:.3f} ({word}, intervals disjoint)"


def reading(rows) -> str:
    """Plain sentences comparing hubness with random sampling and with its matched-strength
    control, per dataset, space and share (generated from the numbers, not curated)."""
    lines = []
    for name in DATASETS:
        q_metric = "confidence" if name == "digits" else "within_3sd"
        random = find(rows, name, "random")
        for space in ("z", "w"):
            for q in SHARES:
                hub = find(rows, name, "hubness", space, q)
                rad = find(rows, name, "radius", space, q)
                versus = [
                    f"{compare(hub, other, 'precision')}; {compare(hub, other, 'recall')}; "
                    f"{compare(hub, other, q_metric)}; "
                    f"{compare(hub, other, 'fd', lower_better=True)}"
                    for other in (random, rad)
                ]
                lines.append(
                    f"- {name}, {space.upper()}, top {q:.0%}: hubness vs random: {versus[0]}. "
                    f"Hubness vs radius (same share kept): {versus[1]}."
                )
    return "\n".join(lines)


def figures(rows, samples, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DATASETS), figsize=(6.5 * len(DATASETS), 5.5))
    for ax, name in zip(np.atleast_1d(axes), DATASETS, strict=True):
        families = sorted({(r["sampler"], r["space"]) for r in rows if r["dataset"] == name},
                          key=str)  # fmt: skip
        for sampler, space in families:
            pts = [r for r in rows if (r["dataset"], r["sampler"], r["space"]) == (name, sampler,
                   space)]  # fmt: skip
            rec = np.array([r["metrics"]["recall"]["mean"] for r in pts])
            pre = np.array([r["metrics"]["precision"]["mean"] for r in pts])
            xerr = np.array([np.abs(np.array(r["metrics"]["recall"]["ci95"]) - m)
                             for r, m in zip(pts, rec, strict=True)]).T  # fmt: skip
            yerr = np.array([np.abs(np.array(r["metrics"]["precision"]["ci95"]) - m)
                             for r, m in zip(pts, pre, strict=True)]).T  # fmt: skip
            lab = sampler if space is None else f"{sampler} {space.upper()}"
            ax.errorbar(rec, pre, xerr=xerr, yerr=yerr, marker="o", capsize=2, label=lab)
        ax.set(xlabel="recall", ylabel="precision", title=f"{name}: precision / recall (95 % CI)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sample_quality_pr.png", dpi=90)
    plt.close(fig)

    shown = [p for p in plans() if p[2] in (None, 0.7, 0.05, -0.5)]
    fig, axes = plt.subplots(len(DATASETS), len(shown), figsize=(2.2 * len(shown), 4.8))
    for i, name in enumerate(DATASETS):
        for j, plan in enumerate(shown):
            ax, x = axes[i, j], samples[(name, *plan)]
            if name == "digits":
                grid = np.clip((x[:36].reshape(6, 6, 8, 8) + 1) / 2, 0, 1)
                ax.imshow(grid.transpose(0, 2, 1, 3).reshape(48, 48), cmap="gray_r")
            else:
                ax.scatter(*x[:, :2].T, s=1, alpha=0.4)
                ax.scatter(*ring_centres().T, marker="x", color="red", s=12)
                ax.set(xlim=(-2.7, 2.7), ylim=(-2.7, 2.7), aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
            row = {"sampler": plan[0], "space": plan[1], "param": plan[2]}
            ax.set_title(label(row), fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sample_quality_samples.png", dpi=90)
    plt.close(fig)


def grid_samples(mode: Mode, thresholds: dict) -> dict:
    """Samples of the first seed for the figure (its generators and keys; ``thresholds`` as
    :func:`run` recorded them in the settings)."""
    out = {}
    seed = mode.seeds[0]
    for name in DATASETS:
        g = generator(name, seed, train=False)
        ts = thresholds[f"{name}_s{seed}"]
        for i, plan in enumerate(plans()):
            if plan[2] in (None, 0.7, 0.05, -0.5):
                key = jax.random.fold_in(jax.random.key(1000 + seed), i)
                x, _ = sample(g, *plan, key, num=min(mode.num, 1000), batch=mode.batch,
                              thresholds=ts)  # fmt: skip
                out[(name, *plan)] = np.asarray(x)
    return out


def readme_section(rows, settings, md) -> str:
    j = settings["classifier"]
    return (
        f"`python examples/sample_quality.py --full` ({settings['mode']} mode, 2-core CPU; "
        f"seeds {settings['seeds']} vary training and sampling; {settings['num_samples']} "
        f"samples per sampler and seed; hub values with k = {K} counting self within batches "
        f"of {settings['batch']}; digit metrics on the hidden features of a classifier with "
        f"held-out accuracy {j['test_accuracy']:.3f} and mean confidence "
        f"{j['test_confidence']:.3f} on real digits). Mean ± half-width of the 95 % interval "
        "over seeds; `top q` keeps the share q of latents; plots in "
        "`examples/results/sample_quality_{pr,samples}.png`.\n\n"
        f"{md}\nHubness against random sampling and against the matched-strength control "
        "(sentences generated from the numbers; 'better'/'worse' only where the 95 % intervals "
        "are disjoint):\n\n"
        f"{reading(rows)}\n"
    )


def write(rows, settings, mode: Mode, samples=None) -> str:
    mode.out.mkdir(parents=True, exist_ok=True)
    (mode.out / "sample_quality.json").write_text(json.dumps(rows, indent=1) + "\n")
    (mode.out / "sample_quality_settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    md = to_markdown(rows, settings)
    (mode.out / "sample_quality.md").write_text(md + "\n" + reading(rows) + "\n")
    if samples is not None:
        figures(rows, samples, mode.out)
    return md


def update_readme(section: str, path: Path = README) -> None:
    text = path.read_text()
    new = re.sub(
        r"(<!-- study:start -->\n).*?(<!-- study:end -->)",
        lambda m: m.group(1) + section + m.group(2),
        text,
        flags=re.S,
    )
    if new == text and section not in text:
        raise RuntimeError(f"{path} has no <!-- study:start --> ... <!-- study:end --> section")
    path.write_text(new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--full", action="store_true", help="retrain and regenerate everything")
    group.add_argument("--tiny", action="store_true", help="small deterministic run")
    parser.add_argument("--out", type=Path, help="output folder (default by mode)")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="with --full: evaluate the shipped checkpoints instead of retraining them "
        "(training is deterministic, so this equals a full run on the machine that made them)",
    )
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="rebuild the markdown, figures and docs/sampling.md section from the shipped JSON",
    )
    args = parser.parse_args(argv)
    mode = MODES["full" if args.full or args.rewrite else "tiny" if args.tiny else "quick"]
    if args.out is not None:
        mode = dataclasses.replace(mode, out=args.out)
    if args.keep_checkpoints:
        mode = dataclasses.replace(mode, train=False)
    start = time.perf_counter()
    if args.rewrite:
        rows = json.loads((mode.out / "sample_quality.json").read_text())
        settings = json.loads((mode.out / "sample_quality_settings.json").read_text())
    else:
        rows, settings = run(mode)
    samples = None if args.no_figure else grid_samples(mode, settings["thresholds"])
    md = write(rows, settings, mode, samples)
    print(md)
    print(reading(rows))
    if settings["mode"] == "full" and mode.out == RESULTS:
        update_readme(readme_section(rows, settings, md))
    print(f"done in {time.perf_counter() - start:.0f} s; results in {mode.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
