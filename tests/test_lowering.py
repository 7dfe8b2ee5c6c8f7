"""Programs for GPU and TPU, lowered and exported on this CPU machine.

The candidate source and its block sizes are chosen for the platform a program is lowered for
(``lax.platform_dependent``), never from the tracing host's backend or core count: an export
for ``cuda`` or ``tpu`` made here is the same program as one made on that platform, and holds
none of the CPU kernel's custom calls.
"""

from __future__ import annotations

import hashlib
import os
import re

import jax
import jax.numpy as jnp
import pytest
from helpers import knn_dense, random_points, sample
from jax.extend.core import jaxpr_as_fun

import hubjax
from hubjax._src import numerics, platforms, search
from hubjax._src.kernels import cpu
from hubjax._src.metric import COSINE, SQEUCLIDEAN

SPEC = jax.ShapeDtypeStruct((600, 40), jnp.float32)


def _export_text(fn, platform):
    jax.clear_caches()
    exported = jax.export.export(jax.jit(fn), platforms=(platform,))(SPEC)
    # source locations name the calling lines (the test's own frames), not the program
    text = re.sub(r"^#loc.*$", "", exported.mlir_module(), flags=re.M)
    return re.sub(r" ?loc\((?:[^()]|\([^()]*\))*\)", "", text)


def _program(text: str) -> str:
    """``main`` of a module's text with every function it calls named by its content,
    recursively: two lowerings of one program that outline the same code into more or fewer
    functions (JAX shares a function between call sites where their jaxprs are one object)
    give the same string; any other difference shows."""
    bodies = dict(re.findall(r"^  func\.func (?:\w+ )?@([\w.$-]+)(.*?)^  }$", text, re.M | re.S))
    named: dict[str, str] = {}

    def name(f):
        if f not in named:
            body = re.sub(r"@([\w.$-]+)", lambda m: "@" + call(m.group(1)), bodies[f])
            named[f] = hashlib.sha256(body.encode()).hexdigest()[:16]
        return named[f]

    def call(f):
        return name(f) if f in bodies else f

    return re.sub(r"@([\w.$-]+)", lambda m: "@" + call(m.group(1)), bodies["main"])


@pytest.mark.parametrize("platform,backend", [("cuda", "gpu"), ("tpu", "tpu")])
def test_export_does_not_depend_on_the_tracing_host(platform, backend, monkeypatch):
    def hub(x):
        return hubjax.hub_values(x, k=10)

    here = _export_text(hub, platform)
    assert "hubjax_" not in here  # no CPU kernel custom call leaks into the program
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    there = _export_text(hub, platform)
    # the host decides only which branch is traced first (platforms.per_platform)
    assert _program(there) == _program(here)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_public_entry_points_lower_for_accelerators(platform):
    calls = {
        "knn": lambda x: hubjax.knn(x, k=5),
        "knn_xy": lambda x: hubjax.knn(x[:100], x, k=5, metric="cosine"),
        "hubness": lambda x: hubjax.hubness(x, k=5).k_skewness,
        "pairwise": lambda x: hubjax.pairwise_distances(x[:50], metric="dot"),
        "approximate": lambda x: hubjax.knn(x, k=5, approximate=True),
        "retrieval": lambda x: hubjax.retrieval.search(
            x[:100],
            x[100:],
            hubjax.retrieval.bank_statistics(x[:300], x[100:], method="qb_norm"),
            k=5,
        ),
    }
    for name, fn in calls.items():
        text = jax.jit(fn).trace(SPEC).lower(lowering_platforms=(platform,)).as_text()
        assert "hubjax_" not in text, name


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_vmapped_search_lowers_with_the_groups_of_its_platform(platform):
    """Under vmap the sets are searched in groups sized per platform (``search.batch_group``):
    8 sets of 5 000 x 64 make groups of 1 on CPU, 5 on TPU and 8 on GPU, so the rule branches
    on the platform; the program lowered for an accelerator holds no CPU kernel."""
    groups = {p: search.batch_group(5000, 5000, 64, p) for p in platforms.PLATFORMS}
    assert groups["cpu"] == 1 and 1 < groups["tpu"] < 8 <= groups["gpu"]
    fn = jax.vmap(lambda x: hubjax.hub_values(x, k=10, check_finite=False))
    spec = jax.ShapeDtypeStruct((8, 5000, 64), jnp.float32)
    text = jax.jit(fn).trace(spec).lower(lowering_platforms=(platform,)).as_text()
    assert "hubjax_" not in text


def test_cpu_program_uses_the_kernel_where_built():
    """The same call lowered for CPU takes the CPU branch (the compiled kernel where it is
    built), so the platform choice is real, not a constant."""
    if not cpu.enabled():
        pytest.skip("the compiled CPU kernel is not built or switched off")
    text = jax.jit(lambda x: hubjax.hub_values(x, k=10)).trace(SPEC).lower().as_text()
    assert "hubjax_" in text


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_every_matrix_product_is_full_float32(platform):
    """DEFAULT precision is one bf16 pass on TPU and TF32 on GPU: every product of the search,
    the approximate index and the sample metrics asks for HIGHEST."""
    calls = {
        "hub_values": lambda x: hubjax.hub_values(x, k=5),
        "knn_xy_dot": lambda x: hubjax.knn(x[:100], x, k=5, metric="dot"),
        "approximate": lambda x: hubjax.knn(x, k=5, approximate=True),
        "frechet": lambda x: hubjax.metrics.frechet_distance(x[:300], x[300:]),
        "precision_recall": lambda x: hubjax.metrics.precision_recall(x[:300], x[300:]),
    }
    for name, fn in calls.items():
        text = jax.jit(fn).trace(SPEC).lower(lowering_platforms=(platform,)).as_text()
        dots = re.findall(r"stablehlo\.dot_general[^\n]*", text)
        assert dots, name
        low = [d for d in dots if "precision = [HIGHEST, HIGHEST]" not in d]
        assert not low, (name, low[0][-160:])


def _top_k_rows(text):
    """``(rows, width, k)`` of every ``top_k`` in a lowered program."""
    found = re.findall(r"chlo\.top_k\(%[\w#]+, k = (\d+)\) : tensor<(\d+)x(\d+)xf32>", text)
    return [(int(r), int(w), int(k)) for k, r, w in found]


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_accelerator_programs_select_from_short_rows_and_aligned_products(platform):
    """Structure of in-sample hub values of 100 000 x 128 lowered for an accelerator (measured
    on an H200: benchmarks/results/device-2026-12-04-nvidia-h200.md): every ``top_k`` of the
    candidate search reads the group minima (3 125 per row) or the chosen groups' members
    (19 x 32 or 59 x 32), never a whole row of 100 000; only the re-check of rows that fail to
    certify (a few rows at a time, zero trips when all certify) does. The
    ranking products contract over d + 2 = 130 on GPU and over d = 128 on TPU, whose matrix
    unit would pad 130 to 256."""
    spec = jax.ShapeDtypeStruct((100_000, 128), jnp.float32)
    for k, keep in ((10, 19), (50, 59)):
        fn = jax.jit(lambda x, k=k: hubjax.hub_values(x, k=k, check_finite=False))
        text = fn.trace(spec).lower(lowering_platforms=(platform,)).as_text()
        tops = _top_k_rows(text)
        search_tops = [t for t in tops if t[1] < 100_000]
        assert search_tops and all(t[2] == keep for t in search_tops), tops
        assert max(t[1] for t in search_tops) <= 4096, tops
        assert {(t[1], t[2]) for t in tops if t not in search_tops} == {(100_000, k)}  # re-check
        contractions = {
            int(w)
            for w in re.findall(
                r"dot_general[^\n]*: \(tensor<\d+x(\d+)xf32>, tensor<\d+x\d+xf32>\)", text
            )
        }
        assert contractions == ({128} if platform == "tpu" else {130}), contractions


def _loops(text: str) -> tuple[int, int]:
    """``(static, data)``: the program's ``stablehlo.while`` loops whose condition compares
    the counter with a constant (a length fixed at compilation), and the others, whose length
    is data (on a GPU, each step a host round trip)."""
    static = data = 0
    for cond in re.findall(r"stablehlo\.while\(.*?\n\s*cond \{\n(.*?)\n\s*\} do \{", text, re.S):
        consts = set(re.findall(r"(%\w+) = stablehlo\.constant", cond))
        compare = re.search(r"stablehlo\.compare\s+\w+,\s*(%\w+),\s*(%\w+)", cond)
        if compare and consts & set(compare.groups()):
            static += 1
        else:
            data += 1
    return static, data


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_approximate_search_has_no_loop_stepped_by_its_lists(platform):
    """The IVF probing lowered for an accelerator: one loop of static length over the units
    every input needs, then the rest in static blocks (``ivf.PROBE_BLOCK``), the only loop
    whose length is data besides the re-check of rows left short. It had a loop over each
    pass's query chunks and, in each, one over the list's column tiles: a host round trip per
    tile on a GPU."""
    spec = jax.ShapeDtypeStruct((5000, 32), jnp.float32)
    for fn in (
        lambda x: hubjax.knn(x, k=5, approximate=True),
        lambda x: hubjax.knn(x[:700], x, k=5, approximate=True),
    ):
        text = jax.jit(fn).trace(spec).lower(lowering_platforms=(platform,)).as_text()
        assert _loops(text)[1] == 2, _loops(text)  # the probing blocks and the re-check
    exact = jax.jit(lambda x: hubjax.knn(x, k=5)).trace(spec).lower(lowering_platforms=(platform,))
    assert _loops(exact.as_text())[1] == 1  # the re-check: the parser tells the two apart


def test_reports_survive_export_serialisation(monkeypatch):
    """``jax.export`` serialises the result pytrees (HubnessReport, SampledHubnessReport,
    SamplingInfo, retrieval's AuditReport and BankStatistics): exported for GPU/TPU here, and
    run back on CPU through the portable path (the compiled kernel's custom calls carry no export
    compatibility guarantee)."""
    pytest.importorskip("flatbuffers")
    x = jax.random.normal(jax.random.key(0), (300, 16))
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    calls = {
        "hubness": lambda x: hubjax.hubness(x, k=5),
        "sampled": lambda x: hubjax.hubness(x, k=5, num_queries=100, key=jax.random.key(1)),
        "sampler": lambda x: hubjax.sampling.hubness_sample(
            jax.random.key(2), 4, latent_dim=16, k=5, threshold=5, batch_size=64
        )[1],
        "audit": lambda x: hubjax.retrieval.audit(x[:100], x[100:], k=5),
        "bank": lambda x: hubjax.retrieval.bank_statistics(x[:100], x[100:], method="nnn"),
    }
    for name, fn in calls.items():
        for platform in ("cuda", "tpu"):
            exported = jax.export.export(jax.jit(fn), platforms=(platform,))(spec)
            back = jax.export.deserialize(exported.serialize())
            assert back.out_tree == exported.out_tree, name
    monkeypatch.setenv("HUBJAX_SELECT", "portable")
    jax.clear_caches()
    exported = jax.export.export(jax.jit(calls["hubness"]), platforms=("cpu",))(spec)
    report = jax.export.deserialize(exported.serialize()).call(x)
    want = hubjax.hubness(x, k=5)
    assert type(report) is type(want) and (report.k, report.metric) == (want.k, want.metric)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), report, want))


def test_tpu_selection_with_approx_min_k_is_opt_in_and_exports(monkeypatch):
    """``HUBJAX_TPU_SELECT=approx_min_k``: the TPU program chooses the selection's groups with
    ``lax.approx_min_k`` (XLA's ApproxTopK, a custom call that ``jax.export`` guarantees
    stable) over the group minima, 3 125 per row at 100 000 points; the exact ``top_k`` of the
    minima stays only in the branch that redoes a tile where too many rows miss. Not in the
    GPU program, nor in the TPU program by default; an unknown value is refused."""
    spec = jax.ShapeDtypeStruct((100_000, 128), jnp.float32)

    def lowered(platform):
        jax.clear_caches()  # the variable is read when a program is traced
        fn = jax.jit(lambda x: hubjax.hub_values(x, k=10, check_finite=False))
        return fn.trace(spec).lower(lowering_platforms=(platform,)).as_text()

    assert "ApproxTopK" not in lowered("tpu")
    monkeypatch.setenv("HUBJAX_TPU_SELECT", "approx_min_k")
    text = lowered("tpu")
    approx = re.findall(r"custom_call @ApproxTopK\(%[\w#]+, [^\n]*?tensor<(\d+)x(\d+)xf32>", text)
    assert approx and {int(w) for _, w in approx} == {3125}, approx
    assert "ApproxTopK" not in lowered("cuda")
    jax.clear_caches()
    exported = jax.export.export(jax.jit(lambda x: hubjax.knn(x, k=5)), platforms=("tpu",))(SPEC)
    assert "ApproxTopK" in exported.mlir_module()
    monkeypatch.setenv("HUBJAX_TPU_SELECT", "fast")
    with pytest.raises(ValueError, match="HUBJAX_TPU_SELECT='fast'"):
        lowered("tpu")
    jax.clear_caches()


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_accelerator_sources_give_the_same_bits_on_cpu(platform, monkeypatch):
    """The sources chosen for GPU and TPU (wide strips; symmetric from 512 features; on TPU the
    ranking products over the features only, with the exact or, ``HUBJAX_TPU_SELECT``, the
    certified ``approx_min_k`` selection, one of the two a run), run here: the same bits as
    the dense reference."""
    if platform == "tpu":
        (selection,) = sample(["exact", "approx_min_k"], 1, key="tpu-selection")
        monkeypatch.setenv("HUBJAX_TPU_SELECT", selection)
    chosen = search.choose_source
    monkeypatch.setattr(search, "choose_source", lambda *args: chosen(*args[:-1], platform))
    jax.clear_caches()
    # every metric once; strips (d = 40) in-sample and against y, symmetric blocks (d = 520)
    cases = (
        (40, "sqeuclidean", False),
        (40, "cosine", True),
        (40, "dot", True),
        (520, "euclidean", False),
        (520, "dot", False),
    )
    for d, metric, with_y in sample(cases, 3, key=f"accelerator_sources/{platform}"):
        x = jnp.asarray(random_points(403, d, seed=d) + 5.0)
        y = x[::3] if with_y else None
        got = hubjax.knn(x, y, k=9, metric=metric)
        want = knn_dense(x, y, k=9, metric=metric)
        assert jnp.array_equal(got[1], want[1]), (d, metric, with_y)
        assert jnp.array_equal(got[0], want[0]), (d, metric, with_y)
    jax.clear_caches()


def test_split_ranking_equals_the_one_product():
    """The TPU form of a ranking tile (products over the features, offsets added after) is the
    same d + 2 term sum as the single product, up to its order: the ranking picks the same
    candidates and the padding rows still rank last (+inf)."""
    x = jnp.asarray(random_points(70, 33, seed=4) + 3.0)
    for metric in (SQEUCLIDEAN, COSINE):
        p = metric.prepare(x, jnp.float32)
        shift = metric.centre(p)
        q = metric.ranking_operands(p, "query", shift).operands
        r = numerics.pad_reference(metric.ranking_operands(p, "reference", shift).operands, 96)
        one = numerics.ranking_tile(q, r)
        split = numerics.ranking_tile(q, r, split=True)
        assert jnp.all(jnp.isinf(split[:, 70:])) and jnp.all(jnp.isfinite(split[:, :70]))
        scale = jnp.max(jnp.abs(one[:, :70]))
        assert jnp.max(jnp.abs(split[:, :70] - one[:, :70])) <= 1e-5 * scale
        assert jnp.array_equal(
            jnp.argsort(split[:, :70], axis=1)[:, :5], jnp.argsort(one[:, :70], axis=1)[:, :5]
        )


def test_per_platform_traces_each_branch_for_its_platform_only():
    """``platforms.per_platform`` runs the plan of the platform lowered for, eagerly, under
    ``jit`` and ``vmap``; a branch is traced when its platform's program is lowered (the
    host's at once), and a branch reading a tracer from its closure is refused."""
    traced = []

    def run(plan, a):
        traced.append(plan)
        return {"out": a * plan}

    plans = {"cpu": 2.0, "tpu": 3.0, "gpu": 5.0}
    a = jnp.arange(4.0)
    assert (platforms.per_platform(run, plans, a)["out"] == 2 * a).all()
    assert traced == [2.0]
    f = jax.jit(lambda a: platforms.per_platform(run, plans, a)["out"])
    # a jaxpr holding it, evaluated op by op, runs the host's branch
    jaxpr = jax.make_jaxpr(lambda a: platforms.per_platform(run, plans, a)["out"])(a)
    assert (jaxpr_as_fun(jaxpr)(a)[0] == 2 * a).all()
    assert (jax.vmap(f)(jnp.stack([a, a + 1])) == 2 * jnp.stack([a, a + 1])).all()
    for platform, plan in [("tpu", 3.0), ("cuda", 5.0)]:
        del traced[:]
        text = f.trace(a).lower(lowering_platforms=(platform,)).as_text()
        assert traced[-1] == plan and ({3.0, 5.0} - {plan}).isdisjoint(traced), platform
        assert f"{plan:e}" in text or str(plan) in text, platform

    # one program for two platforms holds both branches, each traced for its platform
    both = jax.export.export(f, platforms=("tpu", "cuda"))(a).mlir_module()
    assert all(f"{plan:e}" in both or str(plan) in both for plan in (3.0, 5.0))

    def closing(a):
        return platforms.per_platform(lambda plan, b: b * plan + a, plans, a)

    with pytest.raises(TypeError, match="closure"):
        jax.jit(closing)(a)

    # a clear error under differentiation; none where the inputs carry no tangent
    with pytest.raises(TypeError, match="not differentiable"):
        jax.grad(lambda a: f(a).sum())(a)
    assert (jax.grad(lambda a: f(jax.lax.stop_gradient(a)).sum() + a.sum())(a) == 1).all()
