"""hubjax.retrieval against float64 NumPy implementations of the published formulas.

Inverted softmax (Smith et al., ICLR 2017), QB-Norm's dynamic inverted softmax (Bogolin et al.,
CVPR 2022), DBNorm's dual inverted softmax (Wang et al., EMNLP 2023), NNN (2024) and CSLS
(Conneau et al., ICLR 2018), each written from its paper's formula in float64; the audit's
robust z-score from its definition. Sizes do not divide the tiles (bank tiles of 8 rows are
forced in places, strips of 8 query rows).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_points, tie_points

from hubjax import __main__ as entry
from hubjax import retrieval
from hubjax._src import banks

BETA = 20.0


def similarities(a, b, metric):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
    return a @ b.T


def lse_reference(bank, gallery, beta, metric):
    z = beta * similarities(bank, gallery, metric)
    top = z.max(axis=0)
    return top + np.log(np.exp(z - top).sum(axis=0))


def top_mean_reference(bank, gallery, k, metric):
    s = similarities(bank, gallery, metric)
    return -np.sort(-s, axis=0)[:k].mean(axis=0)


def bias_reference(method, bank, gallery, metric, *, beta=BETA, k=None, gallery_bank=None):
    """The per-item shift of each published score, divided by the query-independent factor."""
    if method in ("inverted_softmax", "qb_norm"):
        return lse_reference(bank, gallery, beta, metric) / beta
    if method == "db_norm":
        both = lse_reference(bank, gallery, beta, metric)
        both = both + lse_reference(gallery_bank, gallery, beta, metric)
        return both / (2 * beta)
    if method == "nnn":
        return 0.75 * top_mean_reference(bank, gallery, k or 128, metric)
    return top_mean_reference(bank, gallery, k or 10, metric) / 2


def scores_reference(queries, gallery, bias, active, method, metric):
    s = similarities(queries, gallery, metric)
    t = np.ones(len(queries))
    if method == "qb_norm":
        t = active[np.argmax(s, axis=1)].astype(float)  # argmax: ties to the smaller index
    return s - t[:, None] * np.asarray(bias, np.float64)[None, :]


def top_k_reference(scores, k):
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores))
    idx = order[:, :k]
    return np.take_along_axis(scores, idx, 1), idx


def data(n_bank=203, n_gallery=77, n_queries=45, d=24, seed=0, shape="gaussian"):
    """Bank, gallery, queries, gallery bank: Gaussian, or uncentred ReLU features (embeddings
    from a network: nonnegative, a common direction)."""
    parts = [
        random_points(n, d, seed + i) for i, n in enumerate((n_bank, n_gallery, n_queries, 61))
    ]
    if shape == "relu":
        parts = [np.maximum(p + 0.7, 0) for p in parts]
    return parts


def statistics(method, bank, gallery, gbank, metric, **kw):
    extra = {"gallery_bank": gbank} if method == "db_norm" else {}
    if method in ("nnn", "csls"):
        extra["k"] = kw.get("k", 7)
    return retrieval.bank_statistics(bank, gallery, method=method, metric=metric, **extra)


@pytest.mark.parametrize(
    ("method", "metric", "shape"),
    [
        ("inverted_softmax", "cosine", "gaussian"),
        ("qb_norm", "cosine", "relu"),
        ("db_norm", "dot", "relu"),
        ("nnn", "cosine", "relu"),
        ("csls", "dot", "gaussian"),
    ],
)
def test_statistics_and_search_match_the_published_formulas(method, metric, shape):
    bank, gallery, queries, gbank = data(shape=shape)
    stats = statistics(method, bank, gallery, gbank, metric)
    k_bank = 7 if method in ("nnn", "csls") else None
    want = bias_reference(method, bank, gallery, metric, k=k_bank, gallery_bank=gbank)
    scale = np.abs(similarities(bank, gallery, metric)).max()
    np.testing.assert_allclose(np.asarray(stats.bias), want, rtol=2e-5, atol=2e-5 * scale)
    if method == "qb_norm":
        s = similarities(bank, gallery, metric)
        want_active = np.zeros(len(gallery), bool)
        want_active[np.argmax(s, axis=1)] = True
        np.testing.assert_array_equal(np.asarray(stats.active), want_active)
    k = 9
    scores, idx = (np.asarray(a) for a in retrieval.search(queries, gallery, stats, k=k))
    ref = scores_reference(queries, gallery, stats.bias, np.asarray(stats.active), method, metric)
    ref_scores, ref_idx = top_k_reference(ref, k)
    tol = 1e-5 * (np.abs(ref).max() + 1)
    # returned scores are the items' scores, in order, and no better item is left out
    np.testing.assert_allclose(scores, np.take_along_axis(ref, idx, 1), atol=tol)
    np.testing.assert_allclose(scores, ref_scores, atol=tol)
    assert (np.diff(scores, axis=1) <= 0).all()
    # equal beyond rounding: only near-ties may order differently
    differ = idx != ref_idx
    assert differ.mean() < 0.02


@pytest.mark.parametrize("method", ["nnn", "csls", None])
def test_exact_on_ties_and_duplicates(method):
    """Integer features, dot products: every score is exact in float32, so the lists equal the
    reference's exactly, equal scores ordered by the smaller index."""
    bank, gallery, queries = (tie_points(n, 6, seed=s) for s, n in enumerate((50, 37, 29)))
    gallery[5] = gallery[3]  # duplicates
    stats = None
    if method is not None:
        stats = retrieval.bank_statistics(bank, gallery, method=method, metric="dot", k=4)
    scores, idx = retrieval.search(queries, gallery, stats, k=11, metric="dot", block_size=8)
    bias = np.zeros(len(gallery)) if stats is None else np.asarray(stats.bias, np.float64)
    ref = similarities(queries, gallery, "dot") - bias[None, :]
    ref_scores, ref_idx = top_k_reference(ref, 11)
    np.testing.assert_array_equal(np.asarray(idx), ref_idx)
    np.testing.assert_array_equal(np.asarray(scores), ref_scores)


def test_stable_at_beta_100_with_similarities_near_one():
    rng = np.random.default_rng(3)
    centre = rng.normal(size=32)
    near = lambda n: (centre + 0.02 * rng.normal(size=(n, 32))).astype(np.float32)  # noqa: E731
    bank, gallery, queries = near(150), near(40), near(20)
    assert similarities(bank, gallery, "cosine").min() > 0.99
    with np.errstate(over="ignore"):  # what an unshifted float32 sum does
        assert np.isinf(
            np.exp(100 * similarities(bank, gallery, "cosine").astype(np.float32)).sum()
        )
    lse = np.asarray(retrieval.log_sum_exp(bank, gallery, beta=100.0))
    assert np.isfinite(lse).all()
    np.testing.assert_allclose(lse, lse_reference(bank, gallery, 100.0, "cosine"), rtol=1e-6)
    stats = retrieval.bank_statistics(bank, gallery, method="qb_norm", beta=100.0)
    scores, _ = retrieval.search(queries, gallery, stats, k=5)
    assert np.isfinite(np.asarray(scores)).all()


def test_non_finite_rows_follow_the_library_convention():
    bank, gallery, queries, _ = data(n_bank=40, n_gallery=23, n_queries=9, d=8)
    clean = retrieval.bank_statistics(bank, gallery, method="inverted_softmax")
    bank_nan, gallery_nan, queries_nan = bank.copy(), gallery.copy(), queries.copy()
    bank_nan = np.concatenate([bank, np.full((1, 8), np.nan, np.float32)])
    gallery_nan[4, 2] = np.inf
    queries_nan[2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        retrieval.bank_statistics(bank_nan, gallery, method="inverted_softmax")
    stats = retrieval.bank_statistics(
        bank_nan, gallery_nan, method="inverted_softmax", check_finite=False
    )
    keep = np.arange(23) != 4
    # a non-finite bank row is left out; the other items' statistics are unchanged
    np.testing.assert_allclose(
        np.asarray(stats.bias)[keep], np.asarray(clean.bias)[keep], rtol=1e-6
    )
    assert np.asarray(stats.bias)[4] == np.inf
    scores, idx = (
        np.asarray(a)
        for a in retrieval.search(queries_nan, gallery_nan, stats, k=23, check_finite=False)
    )
    assert (idx[2] == -1).all() and (scores[2] == -np.inf).all()  # the NaN query
    assert not (idx == 4).any()  # the inf item is never retrieved
    assert (idx[np.arange(9) != 2, -1] == -1).all()  # 23 slots, 22 finite items
    mean = retrieval.top_mean(bank_nan, gallery_nan, k=3, check_finite=False)
    assert np.isnan(np.asarray(mean)[4]) and np.isfinite(np.asarray(mean)[keep]).all()


def test_jit_equals_eager_and_vmap_equals_a_loop():
    sets = [data(n_bank=30, n_gallery=19, n_queries=11, d=8, seed=10 * s) for s in range(3)]
    bank, gallery, queries, _ = (np.stack(parts) for parts in zip(*sets, strict=True))

    def run(b, g, q):
        stats = retrieval.bank_statistics(b, g, method="qb_norm", check_finite=False)
        return retrieval.search(q, g, stats, k=4, check_finite=False)

    batched = jax.vmap(run)(bank, gallery, queries)
    for i in range(3):
        eager = run(bank[i], gallery[i], queries[i])
        jitted = jax.jit(run)(bank[i], gallery[i], queries[i])
        for a, b, c in zip(eager, jitted, batched, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            np.testing.assert_array_equal(np.asarray(a), np.asarray(c)[i])


def test_block_sizes_and_tiles_do_not_change_the_bits():
    bank, gallery, queries, _ = data(n_bank=101, n_gallery=45, n_queries=37, d=16, seed=5)
    stats = retrieval.bank_statistics(bank, gallery, method="nnn", k=5)
    a = retrieval.search(queries, gallery, stats, k=6)
    b = retrieval.search(queries, gallery, stats, k=6, block_size=8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the log-sum-exp over bank tiles of 8 rows (12 whole, one of 5) and of all rows at once
    metric = retrieval._similarity_metric("cosine")
    small = banks.log_sum_exp(bank, gallery, BETA, metric=metric, rows=8)
    whole = banks.log_sum_exp(bank, gallery, BETA, metric=metric, rows=101)
    np.testing.assert_allclose(np.asarray(small), np.asarray(whole), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(small), lse_reference(bank, gallery, BETA, "cosine"), rtol=1e-6
    )


@pytest.mark.parametrize("shape", ["ties", "relu"])
def test_fused_bank_top1_equals_the_exact_search(shape, monkeypatch):
    """QB-Norm's bank top-1 items come from the log-sum-exp's tiles, certified and re-checked by
    the finisher: the same set as the exact k = 1 search, exact ties and duplicates included.
    Tiles of 8 bank rows x 10 gallery columns: 4 whole column chunks and one of 1 (fewer than
    the 9 candidates kept), 11 whole row blocks and one of 2."""
    monkeypatch.setattr(banks, "TILE_BYTES", 8 * 4 * 10)
    jax.clear_caches()
    if shape == "ties":
        bank, gallery = tie_points(90, 5, seed=1), tie_points(41, 5, seed=2)
        gallery[7] = gallery[2]
    else:
        bank, gallery = (
            np.maximum(random_points(n, 12, seed=s) + 0.7, 0) for s, n in ((3, 90), (4, 41))
        )
    bank[4] = np.nan
    dot = retrieval._similarity_metric("dot")
    lse, active = banks.log_sum_exp(bank, gallery, BETA, metric=dot, rows=8, top1=True)
    want = retrieval.bank_top1(bank, gallery, metric="dot", check_finite=False)
    s = similarities(np.delete(bank, 4, axis=0), gallery, "dot")
    np.testing.assert_allclose(
        np.asarray(lse), lse_reference(np.delete(bank, 4, axis=0), gallery, BETA, "dot"), rtol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(active), np.asarray(want))
    reference = np.zeros(41, bool)
    reference[np.argmax(s, axis=1)] = True  # first maximum: ties to the smaller index
    np.testing.assert_array_equal(np.asarray(active), reference)


@pytest.mark.parametrize(
    "shape, configs", [("ties", ((1, None), (40, 16))), ("uncentred", ((10, 24),))]
)
def test_one_pass_gives_each_search_its_own_bits(shape, configs):
    """QB-Norm's plain and normalised lists come from one pass over the similarity tiles
    (``search.search_both``): each is bitwise the exact search of its own rows (the queries
    with their last feature 1, and 0), at several block sizes, k from 1 to beyond a block,
    with ties, duplicates and non-finite rows."""
    from hubjax._src import search
    from hubjax._src.metric import DOT

    if shape == "ties":
        q, g = tie_points(61, 5, seed=1), tie_points(97, 5, seed=2)
        g[9] = g[3]
    else:
        q, g = random_points(61, 12, seed=3) + 2, random_points(97, 12, seed=4) + 2
    q[5], g[11] = np.nan, np.nan
    bias = np.round(random_points(97, 1, seed=5)[:, 0], 1)  # ties in the offsets too
    x = np.concatenate([q, np.ones((61, 1), np.float32)], axis=1)
    y = np.concatenate([g, -bias[:, None]], axis=1)
    x_off = x.copy()
    x_off[:, -1] = 0
    both = jax.jit(search.search_both, static_argnames="options")
    for k, block in configs:
        options = search.Options(k, DOT, block_size=block)
        got = both(x, y, options)
        for rows, (dist, idx) in zip((x, x_off), got, strict=True):
            want_d, want_i = search.knn(rows, y, options)
            np.testing.assert_array_equal(np.asarray(idx), np.asarray(want_i))
            np.testing.assert_array_equal(
                np.asarray(dist).view(np.uint32), np.asarray(want_d).view(np.uint32)
            )


def test_repeat_calls_and_new_parameters_do_not_recompile():
    bank, gallery, _, _ = data(n_bank=33, n_gallery=21, n_queries=10, d=8, seed=7)
    retrieval.bank_statistics(bank, gallery, method="inverted_softmax", beta=5.0)
    before = banks.log_sum_exp._cache_size()
    for beta in (6.0, 50.0):  # beta is traced
        retrieval.bank_statistics(bank, gallery, method="inverted_softmax", beta=beta)
    assert banks.log_sum_exp._cache_size() == before


def test_planted_hub_is_flagged_and_a_clean_gallery_rarely_is():
    rng = np.random.default_rng(0)
    offset = 0.5  # embeddings share a direction, as real ones do
    false_flags = []
    for seed in range(4):
        queries = random_points(400, 32, seed=100 + seed) + offset
        gallery = random_points(200, 32, seed=200 + seed) + offset
        clean = retrieval.audit(queries, gallery, k=10)
        false_flags.append(float(np.mean(np.asarray(clean.flagged))))
        planted = gallery.copy()
        planted[rng.integers(200)] = queries.mean(axis=0)  # near every query
        hit = int(np.flatnonzero((planted == queries.mean(axis=0)).all(axis=1))[0])
        report = retrieval.audit(queries, planted, k=10)
        assert bool(report.flagged[hit])
        assert float(report.robust_z[hit]) == float(np.asarray(report.robust_z).max())
    # clean galleries have natural hubs too: 2.0 % of items flagged here (16 of 800), the rate
    # docs/retrieval.md states
    assert np.mean(false_flags) <= 0.04


def test_audit_measures_match_their_definitions():
    _, gallery, queries, _ = data(n_bank=10, n_gallery=31, n_queries=57, d=12, seed=9)
    result = retrieval.audit(queries, gallery, k=4, threshold=2.0)
    s = similarities(queries, gallery, "cosine")
    _, idx = top_k_reference(s, 4)
    counts = np.bincount(idx.ravel(), minlength=31)
    np.testing.assert_array_equal(np.asarray(result.report.k_occurrence), counts)
    centre = np.median(counts)
    mad = np.median(np.abs(counts - centre)) / 0.6745
    spread = mad if mad > 0 else np.mean(np.abs(counts - centre)) / 0.7979
    z = (counts - centre) / spread
    np.testing.assert_allclose(np.asarray(result.robust_z), z, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(result.flagged), z > 2.0)
    assert float(result.top1_flagged_share) == pytest.approx(np.mean((z > 2.0)[idx[:, 0]]))
    assert "items flagged" in str(result)
    # MAD = 0 (most items never retrieved): the mean absolute deviation takes over
    sparse = np.asarray(banks.robust_z(jnp.array([0, 0, 0, 0, 0, 1, 9])))
    dev = np.array([0, 0, 0, 0, 0, 1, 9.0])
    np.testing.assert_allclose(sparse, dev / (dev.mean() / 0.7979), rtol=1e-6)
    assert (np.asarray(banks.robust_z(jnp.array([3, 3, 3]))) == 0).all()


def test_recall_at_k():
    idx = np.array([[3, 1, 2], [0, 2, -1], [4, 4, 4], [1, 2, 3]])
    truth = np.array([[1, -1], [2, 5], [-1, -1], [9, 3]])
    for k in (1, 2, 3):
        want = np.mean([bool(set(idx[i, :k]) & set(truth[i][truth[i] >= 0])) for i in (0, 1, 3)])
        assert float(retrieval.recall_at_k(idx, truth, k=k)) == pytest.approx(want)
    assert float(retrieval.recall_at_k(idx, np.array([1, 0, 4, 7]), k=2)) == 0.75
    with pytest.raises(ValueError, match="larger than"):
        retrieval.recall_at_k(idx, truth, k=4)
    with pytest.raises(TypeError, match="integers"):
        retrieval.recall_at_k(idx.astype(float), truth)


def test_bad_arguments_are_refused_with_a_clear_error():
    bank, gallery, queries, gbank = data(n_bank=20, n_gallery=9, n_queries=4, d=5)
    cases = [
        (dict(method="softmax"), ValueError, "Unknown method"),
        (dict(method="nnn", metric="euclidean"), ValueError, "similarity"),
        (dict(method="nnn", k=21), ValueError, "larger than"),
        (dict(method="inverted_softmax", beta=0.0), ValueError, "positive finite"),
        (dict(method="inverted_softmax", beta=float("nan")), ValueError, "positive finite"),
        (dict(method="inverted_softmax", k=3), ValueError, "k applies"),
        (dict(method="db_norm"), ValueError, "needs gallery_bank"),
        (dict(method="csls", gallery_bank=gbank), ValueError, "db_norm only"),
        (dict(method="nnn", alpha=float("inf")), ValueError, "finite"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            retrieval.bank_statistics(bank, gallery, **kwargs)
    with pytest.raises(ValueError, match="same number of features"):
        retrieval.bank_statistics(bank[:, :4], gallery, method="csls")
    stats = retrieval.bank_statistics(bank, gallery, method="csls", k=3)
    with pytest.raises(ValueError, match="9 gallery items"):
        retrieval.search(queries, gallery[:8], stats)
    with pytest.raises(ValueError, match="metric 'cosine'"):
        retrieval.search(queries, gallery, stats, metric="dot")
    with pytest.raises(ValueError, match="larger than"):
        retrieval.search(queries, gallery, stats, k=10)
    with pytest.raises(ValueError, match="threshold must be finite"):
        retrieval.audit(queries, gallery, k=2, threshold=float("nan"))


def test_cli_audit_text_json_plot_and_bad_input(tmp_path, capsys):
    queries = random_points(120, 16, seed=1) + 0.5
    gallery = random_points(60, 16, seed=2) + 0.5
    gallery[11] = queries.mean(axis=0)
    np.save(tmp_path / "q.npy", queries)
    np.savetxt(tmp_path / "g.csv", gallery, delimiter=",")
    q, g = str(tmp_path / "q.npy"), str(tmp_path / "g.csv")
    assert entry.main(["audit", q, g, "--k", "5", "--plot", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "flagged items" in text and "row       12" in text
    assert (tmp_path / "g_audit.png").stat().st_size > 0
    assert entry.main(["audit", q, g, "--k", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    direct = retrieval.audit(queries, gallery.astype(np.float32), k=5)
    assert out["k_occurrence"] == np.asarray(direct.report.k_occurrence).tolist()
    assert out["flagged"][0]["index"] == 11 and out["flagged"][0]["row"] == 12
    np.save(tmp_path / "narrow.npy", gallery[:, :5])
    bad = [
        (["--threshold", "nan"], "--threshold must be a finite number"),
        (["--hub-size", "-1"], "--hub-size must be a positive"),
        (["--k", "0"], "--k must be at least 1"),
        (["--k", "61"], "larger than the gallery's 60 items"),
        (["--plot", str(tmp_path / "no" / "x.png")], "does not exist"),
    ]
    for extra, message in bad:
        assert entry.main(["audit", q, g, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert entry.main(["audit", q, str(tmp_path / "narrow.npy")]) == 2
    assert "must match" in capsys.readouterr().err
