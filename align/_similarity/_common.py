"""Shared plumbing of the similarity measures: row chunks in float64, validation passes, block sizes.

Every measure reads its inputs in row chunks and converts each chunk to ``float64`` on the compute device, so a
``float32`` array, a tensor on a GPU or a memory-mapped ``.npy`` larger than memory are all handled the same way and
every sum is accumulated in double precision.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._validation import check_array, check_int, is_torch

# Working-set budget of one chunk of rows (or one block of a Gram matrix), in bytes.
CHUNK_BYTES = 64 * 2**20


def iter_chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive row chunks of at most ``size`` rows."""
    for start in range(0, n, size):
        yield start, min(start + size, n)


def rows_per_chunk(width: int, batch_size: int | None, *, copies: int = 2) -> int:
    """Rows per chunk: ``batch_size`` if given, else as many as fit ``CHUNK_BYTES`` at ``width`` float64 columns."""
    if batch_size is not None:
        return batch_size
    return int(max(16, CHUNK_BYTES // (8 * max(1, width) * copies)))


def _from_numpy(a: np.ndarray):
    import torch

    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # a read-only memmap: torch warns on read-only buffers, and we never write to it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(a)
    return torch.from_numpy(a)


def chunk64(X: Any, start: int, stop: int, device) -> torch.Tensor:  # noqa: F821
    """Rows ``start:stop`` of ``X`` (numpy, memmap or tensor) as a float64 tensor on ``device``."""
    import torch

    if is_torch(X):
        return X[start:stop].detach().to(device=device, dtype=torch.float64)
    return _from_numpy(X[start:stop]).to(device=device, dtype=torch.float64)


def take64(X: Any, index: np.ndarray, device) -> torch.Tensor:  # noqa: F821
    """Rows ``index`` (an int array) of ``X`` as a float64 tensor on ``device``."""
    import torch

    if is_torch(X):
        return X[torch.as_tensor(index, device=X.device)].detach().to(device=device, dtype=torch.float64)
    return _from_numpy(X[np.asarray(index)]).to(device=device, dtype=torch.float64)


def load64(X: Any, device, batch_size: int | None = None) -> torch.Tensor:  # noqa: F821
    """All of ``X`` as one float64 tensor (n × d memory, never n × n), read in chunks."""
    import torch

    n, d = X.shape
    out = torch.empty((n, d), dtype=torch.float64, device=device)
    for s, e in iter_chunks(n, rows_per_chunk(d, batch_size, copies=1)):
        out[s:e] = chunk64(X, s, e, device)
    return out


def check_finite_chunk(chunk, name: str, start: int, stop: int) -> None:
    """Raise a one-line ``ValueError`` if a float64 chunk holds NaN or inf."""
    import torch

    if not bool(torch.isfinite(chunk).all()):
        raise ValueError(
            f"`{name}` contains NaN or infinite values (in rows {start}..{stop - 1}); "
            "drop or impute those rows before measuring similarity"
        )


def constant_error(name: str) -> ValueError:
    return ValueError(
        f"`{name}` is constant (every row is the same), so its similarity to anything is undefined; "
        "check that the features were extracted from different inputs"
    )


def validate_pair(X: Any, Y: Any, *, min_rows: int, metric: str):
    """Shape and type checks at the public boundary, without reading the whole of a memory-mapped array.

    Finite values are checked chunk by chunk where the data is read (``check_finite_chunk`` / ``scan``), so a
    memory-mapped file is read once, not twice.
    """
    X = check_array(X, "X", allow_nan=True)
    Y = check_array(Y, "Y", allow_nan=True)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            "`X` and `Y` must have the same number of rows (row i of each describes item i), "
            f"got {X.shape[0]} and {Y.shape[0]}"
        )
    if is_torch(X) != is_torch(Y):
        raise TypeError(
            f"`X` and `Y` must both be numpy arrays or both torch tensors, got {type(X).__name__} and "
            f"{type(Y).__name__}"
        )
    if X.shape[0] < min_rows:
        raise ValueError(f"{metric} needs at least {min_rows} rows (items), got {X.shape[0]}")
    return X, Y


def scan(X: Any, name: str, device, batch_size: int | None = None) -> None:
    """One chunked pass that rejects non-finite values and constant arrays (all rows equal)."""
    import torch

    n, d = X.shape
    lo = hi = None
    for s, e in iter_chunks(n, rows_per_chunk(d, batch_size, copies=1)):
        c = chunk64(X, s, e, device)
        check_finite_chunk(c, name, s, e)
        cmin, cmax = c.amin(0), c.amax(0)
        lo = cmin if lo is None else torch.minimum(lo, cmin)
        hi = cmax if hi is None else torch.maximum(hi, cmax)
    if bool((lo == hi).all()):
        raise constant_error(name)


def check_batch_size(batch_size: Any, *, min_value: int = 1) -> int | None:
    if batch_size is None:
        return None
    return check_int("batch_size", batch_size, min_value=min_value)


def compute_device(device: Any, X: Any, Y: Any):
    """``device`` (default: the inputs' device, CPU for numpy) as a ``torch.device``; unknown or absent devices are
    a ``ValueError`` naming the fix."""
    import torch

    from .._backend import resolve_device

    try:
        dev = resolve_device(device, X, Y)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"`device` must be a torch device such as 'cpu' or 'cuda:0', got {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` {device!r} asks for CUDA but no CUDA device is available; use device='cpu'")
    return dev
