"""The public names of the metrics and the hubness reductions, in a module that imports nothing,
so the command line's parser (``hubjax --help``) lists them without importing JAX.
:mod:`hubjax._src.metric` and :mod:`hubjax.reduction` take their tuples from here."""

METRICS = ("sqeuclidean", "euclidean", "cosine", "dot")
# The metrics with a similarity (hubjax.retrieval).
SIMILARITIES = ("cosine", "dot")

REDUCTIONS = (
    "mp_empiric",
    "mp_gaussian",
    "local_scaling",
    "nicdm",
    "dis_sim_local",
    "dis_sim_global",
    "csls",
)
