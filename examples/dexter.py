"""The UCI dexter training set (scikit-hubness's copy in ``tests/data/dexter``): 300 labelled
bag-of-words documents x 20 000 features, read by the examples and the tests."""

from __future__ import annotations

import pathlib

import numpy as np

FOLDER = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "dexter"


def load() -> tuple[np.ndarray, np.ndarray]:
    """``(x float32 [300, 20000], labels int [300])``, labels -1 or +1 as in the files."""
    rows = (FOLDER / "dexter_train.data").read_text().splitlines()
    x = np.zeros((len(rows), 20_000), np.float32)
    for i, row in enumerate(rows):
        for item in row.split():
            j, value = item.split(":")
            x[i, int(j) - 1] = float(value)  # 1-based feature ids
    return x, np.loadtxt(FOLDER / "dexter_train.labels", dtype=int)
