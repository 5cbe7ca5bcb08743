"""Paired training rows: checking them (without reading memory-maps into RAM) and splitting them into training and
validation rows by group."""
from __future__ import annotations

from typing import Any

import numpy as np

from align._validation import (
    check_array,
    check_float,
    check_int,
    check_not_constant,
    check_paired,
    check_rng,
    is_torch,
)


def _check_training_pairs(X, Y):
    """Validate shapes and finiteness without copying memory-maps into RAM (finiteness read chunk by chunk)."""
    if is_torch(X) or is_torch(Y):  # the trainer reads rows from host memory; tensors come over once
        from align._backend import to_numpy_f32

        X, Y = check_paired(X, Y)
        X, Y = to_numpy_f32(X), to_numpy_f32(Y)
        check_not_constant(X, "X")
        check_not_constant(Y, "Y")
        return X, Y
    X, Y = np.asarray(X), np.asarray(Y)
    check_paired(X[:2], Y[:2])  # types, ndim, columns
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"`X` and `Y` must have the same number of rows (row i of each describes item i), "
            f"got {X.shape[0]} and {Y.shape[0]}"
        )
    for name, A in (("X", X), ("Y", Y)):
        for s in range(0, A.shape[0], 65536):
            check_array(A[s:s + 65536], name)
        check_not_constant(A, name)
    return X, Y


def _check_groups(groups, n, name):
    g = np.asarray(groups)
    if g.shape != (n,) or g.dtype.kind not in "iu":
        raise ValueError(f"`{name}` must be an int array with one group id per row ({n},), got {g.dtype} {g.shape}")
    return g.astype(np.int64)


def split_pairs(n: int, groups: Any = None, fraction: float = 0.1, rng: Any = 0):
    """Split ``n`` paired rows into training and validation rows; all rows of one group land on the same side.

    Parameters
    ----------
    n : int
        Number of pairs.
    groups : int array of shape (n,), optional
        Group id per row (e.g. the image of each caption); groups, not rows, are drawn.
    fraction : float
        Share of the groups (rows) held out, in [0, 0.9]; 0 gives no validation rows.
    rng : int, numpy.random.Generator or None
        An int gives the same split every call (and the split the projectors make with ``rng=`` that int).

    Returns
    -------
    train_rows : int array
    val_rows : int array or None
        None when ``fraction == 0``.
    """
    n = check_int("n", n, min_value=1)
    fraction = check_float("fraction", fraction, min_value=0.0, max_value=0.9)
    if fraction <= 0:
        return np.arange(n), None
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        gen = np.random.default_rng([check_int("rng", rng, min_value=0), 7919])
    else:
        gen = check_rng(rng)
    if groups is not None:
        groups = _check_groups(groups, n, "groups")
    keys = np.arange(n) if groups is None else np.unique(groups)
    n_val = round(fraction * len(keys))
    if n_val < 2 or len(keys) - n_val < 2:
        raise ValueError(
            f"`val_fraction`={fraction} leaves too few items on one side ({len(keys)} items); "
            "use more data or val_fraction=0"
        )
    val_keys = gen.choice(keys, size=n_val, replace=False)
    is_val = np.isin(np.arange(n) if groups is None else groups, val_keys)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def split_by_group(n: int, groups, val_fraction: float, seed: int):
    """Deprecated alias of :func:`split_pairs` (positional ``seed``), kept for callers of the old private name."""
    return split_pairs(n, groups, val_fraction, seed)
