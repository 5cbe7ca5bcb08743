"""Shared plumbing of the similarity measures: row chunks in float64, validation passes, block sizes.

Every measure reads its inputs in row chunks and converts each chunk to ``float64`` on the compute device, so a
``float32`` array, a tensor on a GPU or a memory-mapped ``.npy`` larger than memory are all handled the same way and
every sum is accumulated in double precision.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._validation import InputTypeError, check_array, check_int, is_torch

# Working-set budget of one chunk of rows (or one block of a Gram matrix), in bytes.
CHUNK_BYTES = 64 * 2**20

# Bytes of one block of kernel rows held at once by the row-block engines (k-NN, RSA) and the refinement fallback.
BLOCK_BYTES = 128 * 2**20
# Unit roundoff of float32 (round to nearest).
U32 = 2.0**-24


def block_rows(n: int, batch_size: int | None) -> int:
    """Rows of one ``b × n`` block of kernel rows (the row-block engines of k-NN and RSA)."""
    if batch_size is not None:
        return batch_size
    return int(max(1, min(n, BLOCK_BYTES // (8 * 4 * max(n, 1)))))


# The largest absolute entry of an input must lie in [MIN_SCALE, MAX_SCALE] (see RowChecks).
MIN_SCALE, MAX_SCALE = 1e-60, 1e60


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
    """``a`` as a CPU tensor sharing its memory (a read-only memmap too, without torch's warning)."""
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


def load64(X: Any, device, batch_size: int | None = None, *, check: str | None = None) -> torch.Tensor:  # noqa: F821
    """All of ``X`` as one float64 tensor (n × d memory, never n × n), read in chunks.

    With ``check=name`` the same pass rejects NaN / inf and constant inputs (:class:`RowChecks`), so a memory-mapped
    file is read once.
    """
    import torch

    n, d = X.shape
    out = torch.empty((n, d), dtype=torch.float64, device=device)
    checks = RowChecks(check) if check else None
    direct = out.device.type == "cpu" and not is_torch(X)
    view = out.numpy() if direct else None
    for s, e in iter_chunks(n, rows_per_chunk(d, batch_size, copies=1)):
        if direct:  # numpy / memmap rows converted straight into the float64 buffer: one copy
            view[s:e] = X[s:e]
        else:
            out[s:e] = chunk64(X, s, e, device)
        if checks is not None:
            checks.update(view[s:e] if direct else out[s:e], s, e)
    if checks is not None:
        checks.finish()
    return out


def _torch_f64():
    import torch

    return torch.float64


class RowChecks:
    """Finite values, a workable magnitude and "not every row the same", chunk by chunk, for about three
    reductions per chunk.

    A NaN or an infinity makes the chunk's float64 sum non-finite (finite values can only overflow to inf), so the
    sum decides; only then are the rows searched, to name the first bad one. Magnitude: the largest absolute entry
    must lie in ``[MIN_SCALE, MAX_SCALE]``, where sums of products of up to four entries (the unbiased HSIC) neither
    overflow nor underflow in float64; outside it a metric would return inf, NaN or 0 (every metric but a fixed-sigma
    RBF CKA is invariant to the rescaling that the error suggests). Constancy: the last row of a chunk is compared
    with the first row seen (O(d)); whole chunks are compared only while every row so far equals it.
    """

    def __init__(self, name: str):
        self.name = name
        self.first = None
        self.constant = True
        self.largest = 0.0

    def update(self, c, start: int, stop: int, *, finite: bool = True, scale: bool = True) -> None:
        """Check rows ``start:stop`` (``c``). ``finite=False``: the caller has checked them (e.g. from a sum it
        needed anyway, calling :meth:`nonfinite` when that sum is not finite); ``scale=False``: the source dtype
        cannot leave the magnitude range (:func:`scale_bounded`)."""
        if finite:
            total = c.sum(dtype=_torch_f64()) if is_torch(c) else c.sum(dtype=np.float64)
            if not math.isfinite(float(total)):
                self.nonfinite(c, start, stop)
        if c.shape[0] == 0:
            return
        if scale:
            largest = float(c.abs().max()) if is_torch(c) else max(float(c.max()), -float(c.min()))
            if not math.isfinite(largest):
                self.nonfinite(c, start, stop)
            if largest > MAX_SCALE:
                raise self._scale_error(largest)
            self.largest = max(self.largest, largest)
        if self.constant:
            if self.first is None:
                self.first = c[0].clone() if is_torch(c) else c[0].copy()
            if bool((c[-1] != self.first).any()) or not bool((c == self.first).all()):
                self.constant = False

    def finish(self, *, allow_constant: bool = False) -> None:
        """Raise for a constant input (unless ``allow_constant``: the caller reports it later) or entries too small."""
        if self.constant and not allow_constant:
            raise constant_error(self.name)
        if 0.0 < self.largest < MIN_SCALE:
            raise self._scale_error(self.largest)

    def _scale_error(self, largest: float) -> ValueError:
        return ValueError(
            f"`{self.name}` has entries up to {largest:.3g} in absolute value, outside [{MIN_SCALE:g}, {MAX_SCALE:g}] "
            "where float64 sums of products stay finite and exact enough; rescale it, e.g. X / np.abs(X).max() "
            "(every metric but rbf_cka with a fixed sigma is invariant to that)"
        )

    def nonfinite(self, c, start: int, stop: int) -> None:
        """Raise for non-finite rows ``start:stop`` (``c``), naming the first bad row."""
        bad = ~(c.isfinite() if is_torch(c) else np.isfinite(c)).all(1)
        rows = (bad.nonzero()[0] if not is_torch(bad) else bad.nonzero()[:, 0])
        if len(rows):
            raise ValueError(
                f"`{self.name}` contains NaN or infinite values (first in row {start + int(rows[0])}); "
                "drop or impute those rows before measuring similarity"
            )
        raise ValueError(
            f"`{self.name}` has values too large to sum in float64 (rows {start}..{stop - 1} overflow); "
            "rescale the features (e.g. divide by their largest absolute value)"
        )


def scale_bounded(X: Any) -> bool:
    """True when ``X``'s dtype cannot hold a nonzero magnitude outside ``[MIN_SCALE, MAX_SCALE]``: float32 / float16
    / bfloat16 (largest finite ~3.4e38, smallest subnormal ~1e-45) and integers, so the per-chunk max / min pass of
    :class:`RowChecks` can be skipped for them."""
    name = str(getattr(X, "dtype", "float64")).replace("torch.", "")
    return name in ("float32", "float16", "bfloat16") or name.startswith(("int", "uint", "bool"))


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
        raise InputTypeError(
            f"`X` and `Y` must both be numpy arrays or both torch tensors, got {type(X).__name__} and "
            f"{type(Y).__name__}"
        )
    if X.shape[0] < min_rows:
        raise ValueError(f"{metric} needs at least {min_rows} rows (items), got {X.shape[0]}")
    return X, Y


def scan(X: Any, name: str, device, batch_size: int | None = None) -> None:
    """One chunked pass that rejects non-finite values and constant arrays (all rows equal)."""
    n, d = X.shape
    checks = RowChecks(name)
    for s, e in iter_chunks(n, rows_per_chunk(d, batch_size, copies=1)):
        checks.update(X[s:e] if not is_torch(X) else X[s:e].detach(), s, e)
    checks.finish()


def check_batch_size(batch_size: Any, *, min_value: int = 1) -> int | None:
    if batch_size is None:
        return None
    return check_int("batch_size", batch_size, min_value=min_value)


def cka_ratio(h_xy: float, h_xx: float, h_yy: float) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); a non-positive self term (possible for the unbiased estimator on
    tiny samples) is an error, not a NaN."""
    if not (h_xx > 0 and h_yy > 0):
        raise ValueError(
            "the HSIC of a representation with itself is not positive "
            f"(HSIC(X, X) = {h_xx:.3g}, HSIC(Y, Y) = {h_yy:.3g}); CKA is undefined here. This happens for the "
            "unbiased estimator on very few items: use more rows or the biased estimator (linear_cka)"
        )
    return h_xy / math.sqrt(h_xx * h_yy)


# --------------------------------------------------------------------------------------------------------------
# Array operations: numpy on CPU, torch elsewhere
# --------------------------------------------------------------------------------------------------------------


class _NumpyOps:
    """numpy views of CPU float64 tensors (no copies)."""

    f32, f64, i64 = np.float32, np.float64, np.int64
    is_numpy = True

    @staticmethod
    def chunk(X, start: int, stop: int):
        """Rows ``start:stop`` of ``X`` as a float numpy array in its own precision (a view where possible; never
        written to): arithmetic with a float64 array promotes to float64, so centring converts in the same pass."""
        if is_torch(X):
            return X[start:stop].detach().to(device="cpu", dtype=_torch_f64()).numpy()
        return np.asarray(X[start:stop])

    @staticmethod
    def take(X, index):
        if is_torch(X):
            import torch

            return X[torch.as_tensor(index, device=X.device)].detach().to(device="cpu", dtype=torch.float64).numpy()
        return np.asarray(X[np.asarray(index)])

    @staticmethod
    def tensor(a):
        """On CPU the moments stay numpy arrays (no torch import for the numpy-only routes)."""
        return np.asarray(a)

    @staticmethod
    def wrap(t):
        return t.numpy() if hasattr(t, "numpy") else np.asarray(t)

    @staticmethod
    def empty(n, dtype):
        return np.empty(n, dtype=dtype)

    @staticmethod
    def zeros(n, dtype=np.float64):
        return np.zeros(n, dtype=dtype)

    @staticmethod
    def ones(n, dtype=np.float64):
        return np.ones(n, dtype=dtype)

    @staticmethod
    def mm(a, b, out):
        """``a @ b.T`` into ``out``."""
        return np.matmul(a, b.T, out=out)

    @staticmethod
    def gram(a):
        return a @ a.T  # syrk: numpy sees the same buffer transposed

    @staticmethod
    def exp_(x):
        return np.exp(x, out=x)

    @staticmethod
    def vdot(a, b) -> float:
        return float(np.dot(a.reshape(-1), b.reshape(-1)))

    @staticmethod
    def fill_diag(x, value):
        np.fill_diagonal(x, value)

    @staticmethod
    def diag(x):
        return np.diagonal(x).copy()

    @staticmethod
    def count(mask) -> int:
        return int(np.count_nonzero(mask))

    @staticmethod
    def flatnonzero(mask):
        return np.flatnonzero(mask)

    @staticmethod
    def cat(parts, dtype):
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    @staticmethod
    def kth(x, ks) -> list[float]:
        """The ``ks``-th smallest values (0-based) of the 1-D ``x``."""
        return [float(v) for v in np.partition(x, ks)[ks]]

    @staticmethod
    def index(idx, like):
        return np.asarray(idx)

    @staticmethod
    def to_numpy(x):
        return np.asarray(x)

    @staticmethod
    def astype(x, dtype):
        return x.astype(dtype)

    @staticmethod
    def rowdot(a, b):
        return np.einsum("ij,ij->i", a, b)


class _TorchOps:
    """The same operations on torch tensors (any device)."""

    is_numpy = False

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device
        self.f32, self.f64, self.i64 = torch.float32, torch.float64, torch.int64

    def chunk(self, X, start: int, stop: int):
        return chunk64(X, start, stop, self.device)

    def take(self, X, index):
        return take64(X, index, self.device)

    @staticmethod
    def tensor(a):
        return a

    def wrap(self, t):
        return t

    def empty(self, n, dtype):
        return self.torch.empty(n, dtype=dtype, device=self.device)

    def zeros(self, n, dtype=None):
        return self.torch.zeros(n, dtype=dtype or self.f64, device=self.device)

    def ones(self, n, dtype=None):
        return self.torch.ones(n, dtype=dtype or self.f64, device=self.device)

    def mm(self, a, b, out):
        return self.torch.mm(a, b.T, out=out)

    def gram(self, a):
        return a @ a.T

    @staticmethod
    def exp_(x):
        return x.exp_()

    @staticmethod
    def vdot(a, b) -> float:
        return float(a.reshape(-1) @ b.reshape(-1))

    @staticmethod
    def fill_diag(x, value):
        x.fill_diagonal_(value)

    @staticmethod
    def diag(x):
        return x.diagonal().clone()

    @staticmethod
    def count(mask) -> int:
        return int(mask.sum())

    @staticmethod
    def flatnonzero(mask):
        return mask.reshape(-1).nonzero().squeeze(1)

    def cat(self, parts, dtype):
        return self.torch.cat(parts) if parts else self.torch.empty(0, dtype=dtype, device=self.device)

    def kth(self, x, ks) -> list[float]:
        return [float(self.torch.kthvalue(x, k + 1).values) for k in ks]

    def index(self, idx, like):
        return self.torch.as_tensor(np.asarray(idx), device=like.device)

    @staticmethod
    def to_numpy(x):
        return x.detach().cpu().numpy()

    @staticmethod
    def astype(x, dtype):
        return x.to(dtype)

    @staticmethod
    def rowdot(a, b):
        return (a * b).sum(1)


def ops_for(device):
    """numpy on CPU, torch elsewhere."""
    return _NumpyOps() if getattr(device, "type", str(device)) == "cpu" else _TorchOps(device)
