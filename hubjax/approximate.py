"""Approximate k-NN: an inverted-file index (IVF) with static shapes, exact re-ranking.

Layout (every shape static, so it runs under ``jit`` and ``vmap`` and compiles once per shape):

1. **Coarse partition.** k-means (Lloyd, ``iterations`` rounds, initial centroids a random
   sample drawn from ``seed``) on at most ``train_size`` reference points (one random point
   from each of ``train_size`` equal runs of the input order) gives ``nlist`` centroids;
   every reference point joins its nearest centroid's list, and the reference points are
   stored sorted by list (each list contiguous).
2. **Per-query probing.** Each query probes up to ``nprobe`` of its own nearest lists: those
   whose centroid's squared distance is within ``1 + ratio`` times its nearest centroid's
   (``ratio=None``: exactly ``nprobe``, as faiss's ``IndexIVFFlat``). The search runs in
   ``nprobe`` passes: in pass j the queries are
   grouped by their j-th nearest list and cut into chunks of ``chunk`` queries; a chunk
   multiplies against its list's points in slices of ``columns`` (one ``chunk x columns``
   ranking tile, in cache) and merges each tile into the queries' running lists of the
   ``k + 8`` best by the (centred) matrix-product ranking. The work is one flat sequence of
   units (pass, chunk, slice), so no work is padded to the largest list; the running lists
   ``[n, k + 8]`` are the only per-query state. How many units there are is data: the CPU
   program loops over exactly those; on GPU and TPU, where each step of a loop whose length
   is data is a host round trip, a loop of static length runs the units every input needs
   (the first pass's chunks; in-sample, the work of equal lists), then the rest run in static
   blocks of 64 units, idle past the last, one round trip per block. Every schedule gives the
   same bits (tested).
3. **Re-rank.** The candidates are re-ranked by hubjax's exact per-pair distance; ties to the
   smaller index. A query whose probed lists held fewer than k candidates is searched again
   against every point (exactly), so no slot is left empty while finite candidates remain.

Memory: the prepared points sorted by list (``[m, d]``; in-sample the prepared copy in input
order is freed once they are sorted), their ranking operands (``[m, d + 2]`` float32, built
block by block), in query-vs-reference search the queries' operands (``[n, d + 2]``), the probe
table ``[n, nprobe]`` and the running lists ``[n, k + 9]``; no ``[n, m]`` or ``[n, nlist]``
matrix. The large buffers start only when their step does (each is made to depend on the step
before it, so XLA cannot allocate them all at the start): XLA's arena for 1M x 128 in-sample
is 1.15 GB besides the 0.5 GB input (``compiled.memory_analysis()``; 1.85 GB without that
ordering).
Results are deterministic for a fixed ``seed``. With ``nprobe = nlist`` and ``ratio=None`` every
list is probed and the result equals the exact search (tested).

On TPU, ``lax.approx_min_k`` is the better engine for a brute-force approximate search (it
reaches recall targets at a fraction of a sort's cost there, and is a full sort elsewhere).
hubjax does not search with it approximately: applied to whole ranking rows, its candidates
could only be certified by a second pass over the ranking products. It serves the *exact*
search instead, as an opt-in on TPU (``HUBJAX_TPU_SELECT=approx_min_k`` before tracing): it
picks which groups of a row's columns the two-stage selection reads, in place of the exact
``top_k`` of the group minima (a sort on TPU), and a certificate from those minima sends every
row it may have got wrong to the exact selection, so the result is the exact search's bit for
bit (:func:`hubjax._src.select.smallest_k_certified`). No TPU was available to measure whether
it pays; ``python -m benchmarks.device`` times both selections on one.
"""

# tune's limits, read by the command line (attributes of this module, not in __all__)
from hubjax._src.approximate import MAX_PROBED as MAX_PROBED
from hubjax._src.approximate import TARGET_RECALL as TARGET_RECALL
from hubjax._src.approximate import Tuned, knn, sampled_recall, tune
from hubjax._src.ivf import IVF, as_settings, kmeans, recall

__all__ = [
    "IVF",
    "Tuned",
    "knn",
    "recall",
    "sampled_recall",
    "as_settings",
    "kmeans",
    "tune",
]
