"""Validation at the public boundary.

Every public function of unialign validates its inputs once, here, and then works on normalised values.
Messages read "`param` must be …, got …" plus a hint that names the fix; wrong types raise :class:`InputTypeError`
(a ``TypeError`` that is also a ``ValueError``), wrong values or shapes raise ``ValueError``. The CLI turns both
into one-line messages; any other ``TypeError`` is a bug and keeps its traceback.
"""
from __future__ import annotations

import numbers
import re
from typing import Any, Iterable

import numpy as np

__all__ = [
    "check_array",
    "check_paired",
    "check_rng",
    "check_choice",
    "did_you_mean",
    "check_int",
    "check_float",
    "check_partial_match",
    "check_not_constant",
    "is_torch",
    "InputTypeError",
    "MemoryBudgetError",
    "available_memory",
    "check_memory",
]


# The error classes live in align.exceptions (one hierarchy); re-exported here, where the library imports them.
from .exceptions import InputTypeError, MemoryBudgetError, MissingPackageError  # noqa: E402,F401


def is_torch(x: Any) -> bool:
    """True when ``x`` is a ``torch.Tensor`` (without importing torch when it is not loaded)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _describe(x: Any) -> str:
    if is_torch(x) or isinstance(x, np.ndarray):
        return f"an array of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def check_array(
    X: Any,
    name: str = "X",
    *,
    ndim: int = 2,
    min_rows: int = 1,
    min_cols: int = 1,
    allow_nan: bool = False,
    dtype: Any = None,
):
    """Validate a feature array and return it as a floating-point numpy array or torch tensor.

    numpy arrays (and anything ``np.asarray`` accepts, such as nested lists) come back as numpy; torch tensors come
    back as torch tensors on their own device. Integer and boolean inputs are converted to ``float64`` (numpy) or
    the default float dtype (torch); ``dtype`` forces a dtype.

    Raises
    ------
    TypeError
        For objects that are not array-like, or complex / object / string arrays.
    ValueError
        For the wrong number of dimensions, too few rows or columns, or non-finite values.
    """
    if is_torch(X):
        import torch

        if X.is_complex():
            raise InputTypeError(f"`{name}` must be a real-valued array, got {_describe(X)}")
        if not X.is_floating_point():
            X = X.to(torch.get_default_dtype() if dtype is None else dtype)
        elif dtype is not None:
            X = X.to(dtype)
    else:
        if isinstance(X, (str, bytes)) or X is None or isinstance(X, dict):
            raise InputTypeError(f"`{name}` must be a numpy array or torch tensor, got {_describe(X)}")
        try:
            X = np.asarray(X)
        except Exception as exc:  # ragged lists and the like
            raise InputTypeError(f"`{name}` must be a numpy array or torch tensor, got {type(X).__name__}: {exc}") from None
        if X.dtype.kind not in "biuf":
            raise InputTypeError(
                f"`{name}` must be a real-valued numeric array, got dtype {X.dtype}; "
                "convert it with np.asarray(X, dtype=float)"
            )
        if dtype is not None:
            X = X.astype(dtype, copy=False)
        elif X.dtype.kind != "f":
            X = X.astype(np.float64)
    if X.ndim != ndim:
        hint = ""
        if ndim == 2 and X.ndim == 1:
            hint = "; a single feature vector needs X.reshape(1, -1), a single feature X.reshape(-1, 1)"
        elif ndim == 2 and X.ndim > 2:
            hint = "; flatten or pool the extra axes first (e.g. X.reshape(len(X), -1) or mean over tokens)"
        raise ValueError(f"`{name}` must be {ndim}-D, got {_describe(X)}{hint}")
    if ndim >= 1 and X.shape[0] < min_rows:
        raise ValueError(f"`{name}` must have at least {min_rows} row(s), got {_describe(X)}")
    if ndim >= 2 and X.shape[1] < min_cols:
        raise ValueError(f"`{name}` must have at least {min_cols} column(s), got {_describe(X)}")
    if not allow_nan:
        finite = bool(X.isfinite().all()) if is_torch(X) else bool(np.isfinite(X).all())
        if not finite:
            raise ValueError(
                f"`{name}` contains NaN or infinite values; drop or impute those rows before calling this"
            )
    return X


def check_paired(X: Any, Y: Any, *, min_rows: int = 2, names: tuple[str, str] = ("X", "Y"), **kwargs):
    """Validate two feature arrays whose row i describes the same item; return them normalised."""
    X = check_array(X, names[0], min_rows=min_rows, **kwargs)
    Y = check_array(Y, names[1], min_rows=min_rows, **kwargs)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same number of rows (row i of each describes item i), "
            f"got {X.shape[0]} and {Y.shape[0]}"
        )
    if is_torch(X) != is_torch(Y):
        raise InputTypeError(
            f"`{names[0]}` and `{names[1]}` must both be numpy arrays or both torch tensors, got "
            f"{type(X).__name__} and {type(Y).__name__}"
        )
    return X, Y


def check_rng(rng: Any = None) -> np.random.Generator:
    """Turn ``rng`` (None, an int seed, or a ``np.random.Generator``) into a ``np.random.Generator``."""
    if rng is None or isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, bool):
        if rng is not None and int(rng) < 0:
            raise ValueError(f"`rng` must be a non-negative integer seed, got {rng}")
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise InputTypeError(
        f"`rng` must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}; "
        "np.random.RandomState is not accepted, use np.random.default_rng(seed)"
    )


def check_choice(name: str, value: Any, valid: Iterable[str]) -> str:
    """Check that ``value`` is one of ``valid`` names; the error lists the valid ones."""
    valid = list(valid)
    if not isinstance(value, str):
        raise InputTypeError(f"`{name}` must be a string, one of {', '.join(map(repr, valid))}; got {type(value).__name__}")
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}: valid values are {', '.join(map(repr, valid))}"
                         f"{did_you_mean_hint(value, valid)}")
    return value


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[_\-:./\s]+", name.lower()) if t]


def did_you_mean(value: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The names of ``valid`` that ``value`` most likely meant, best first (at most ``n``; empty when none is close).

    Spelling variants first (case, ``-`` for ``_``), then names that contain ``value`` as one of their ``_`` /
    ``-`` separated words, ending with it before elsewhere (``cka`` -> ``linear_cka``, ``rbf_cka``, … in the order
    of ``valid``, not ``cknna``), then names that contain it as a substring (those starting with it first:
    ``lin`` -> ``linear``), then names contained in ``value`` (``linear_cka2`` -> ``linear_cka``,
    ``timm/resnet50`` -> ``timm:``), then names ending with the same word, then :func:`difflib.get_close_matches`
    (typos). Within the last two groups the closest spelling comes first.
    """
    import difflib

    valid = list(dict.fromkeys(str(v) for v in valid))
    v = str(value).strip()
    key = v.lower().replace("-", "_")
    if not key:
        return []
    vt = _tokens(v)
    ratio = {c: difflib.SequenceMatcher(None, key, c.lower().replace("-", "_")).ratio() for c in valid}
    groups: list[list[str]] = [[] for _ in range(7)]
    for c in valid:
        ck, ct = c.lower().replace("-", "_"), _tokens(c)
        if ck == key or ct == vt:
            g = 0
        elif vt and len(ct) > len(vt) and ct[-len(vt):] == vt:
            g = 1  # a whole-word suffix: cka -> linear_cka
        elif vt and any(ct[i:i + len(vt)] == vt for i in range(len(ct))):
            g = 2  # a whole word elsewhere: e5 -> e5-small
        elif len(key) >= 3 and key in ck:
            g = 3  # a substring: net -> efficientnet-lite0
        elif (len(ck) >= 3 and ck in key) or (ct and len(vt) > len(ct) and vt[:len(ct)] == ct):
            g = 4  # the name inside what was typed: linear_cka_biased -> linear_cka
        elif vt and ct and len(vt[-1]) >= 3 and vt[-1] == ct[-1]:
            g = 5  # the same last word: kernel_cka -> linear_cka
        elif ratio[c] >= 0.6:
            g = 6  # a typo
        else:
            continue
        groups[g].append(c)
    if groups[0]:
        return groups[0][:n]  # a spelling variant: nothing else is worth a mention
    groups[3].sort(key=lambda c: not c.lower().replace("-", "_").startswith(key))  # an abbreviation first: lin -> linear
    groups[4].sort(key=len, reverse=True)
    for g in (5, 6):
        groups[g].sort(key=lambda c: -ratio[c])
    return [c for group in groups for c in group][:n]


def did_you_mean_hint(value: str, valid: Iterable[str], n: int = 3) -> str:
    """``"; did you mean 'linear_cka' (or 'rbf_cka', 'unbiased_cka')?"`` for an error message, or ``""``."""
    close = did_you_mean(value, valid, n)
    if not close:
        return ""
    more = f" (or {', '.join(map(repr, close[1:]))})" if len(close) > 1 else ""
    return f"; did you mean {close[0]!r}{more}?"


def check_int(name: str, value: Any, *, min_value: int | None = None, max_value: int | None = None) -> int:
    """Check an integer parameter (bools are rejected) and its range."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise InputTypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f"`{name}` must be >= {min_value}, got {value}")
    if max_value is not None and value > max_value:
        raise ValueError(f"`{name}` must be <= {max_value}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    inclusive: bool = True,
) -> float:
    """Check a real, finite parameter and its range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}")
    if min_value is not None and (value < min_value if inclusive else value <= min_value):
        raise ValueError(f"`{name}` must be {'>=' if inclusive else '>'} {min_value}, got {value}")
    if max_value is not None and (value > max_value if inclusive else value >= max_value):
        raise ValueError(f"`{name}` must be {'<=' if inclusive else '<'} {max_value}, got {value}")
    return value


def check_partial_match(partial_match: Any, n_x: int, n_y: int, *, name: str = "partial_match") -> np.ndarray:
    """Validate known pairs ``(i, j)``: row ``i`` of X corresponds to row ``j`` of Y.

    Returns a ``(k, 2)`` int64 array in the caller's order (no sorting is imposed). ``None`` gives ``(0, 2)``.
    Duplicates in either column and out-of-range indices are errors.
    """
    if partial_match is None:
        return np.zeros((0, 2), dtype=np.int64)
    if is_torch(partial_match):
        partial_match = partial_match.detach().cpu().numpy()
    pm = np.asarray(partial_match)
    if pm.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if pm.dtype.kind == "f" and np.all(np.mod(pm, 1) == 0):
        pm = pm.astype(np.int64)
    if pm.dtype.kind not in "iu":
        raise InputTypeError(f"`{name}` must be an integer array of (i, j) pairs, got dtype {pm.dtype}")
    if pm.ndim != 2 or pm.shape[1] != 2:
        raise ValueError(f"`{name}` must have shape (k, 2) with rows (i, j), got shape {pm.shape}")
    pm = pm.astype(np.int64)
    for col, (label, n) in enumerate((("first", n_x), ("second", n_y))):
        c = pm[:, col]
        if c.min() < 0 or c.max() >= n:
            raise ValueError(
                f"`{name}` {label} column must index rows 0..{n - 1}, got values in [{c.min()}, {c.max()}]"
            )
        uniq, counts = np.unique(c, return_counts=True)
        if (counts > 1).any():
            raise ValueError(
                f"`{name}` {label} column has duplicates (e.g. {int(uniq[counts > 1][0])}); "
                "each item can be matched at most once"
            )
    return pm


def check_not_constant(X: Any, name: str = "X", *, chunk_rows: int = 65536) -> None:
    """Raise a one-line ``ValueError`` when every row of ``X`` (at least 2 rows) is the same.

    Such features carry no information about which item is which: matching them or fitting a map from them gives a
    chance-level answer that looks like a result. Reads a memory-mapped array in chunks and stops at the first chunk
    with a different row.
    """
    if X.shape[0] < 2:
        return
    first = X[:1]
    for start in range(0, X.shape[0], chunk_rows):
        if not bool((X[start:start + chunk_rows] == first).all()):
            return
    raise ValueError(
        f"`{name}` is constant (every row is the same), so no item can be told from another; "
        "check that the features were extracted from different inputs"
    )


def available_memory(device: Any = None) -> int | None:
    """Bytes that can be allocated now: free GPU memory for a CUDA ``device``, else ``MemAvailable`` of
    ``/proc/meminfo`` (Linux), else free physical pages; None when unknown."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None  # unknown: the device check that follows says what is wrong
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    limit = _cgroup_headroom()
    if free is not None or limit is not None:
        return min(v for v in (free, limit) if v is not None)
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


# (limit, usage) files of the cgroup memory controller: v2, then v1.
CGROUP_MEMORY_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                       ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit (containers, SLURM jobs), or None without a limit."""
    for limit_file, usage_file in CGROUP_MEMORY_FILES:
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:  # v1 writes "no limit" as a huge number
            return None
        return max(0, int(limit) - usage)
    return None


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(nbytes: float, what: str, fix: str, *, device: Any = None) -> None:
    """Refuse, before allocating, a computation whose estimated peak ``nbytes`` exceed the memory available now.

    ``what`` names the allocation ("faq on 1,000,000 x 1,000,000 kernel matrices"), ``fix`` the way out ("use the
    features route" / "match fewer items"); the message is one line. Unknown available memory never refuses.

    Raises
    ------
    MemoryBudgetError
        A ``ValueError`` (and ``MemoryError``) naming the memory needed, the memory available and the fix.
    """
    avail = available_memory(device)
    if avail is None or nbytes <= avail:
        return
    where = "GPU memory" if device is not None and str(device).startswith("cuda") else "memory"
    raise MemoryBudgetError(
        f"{what} needs about {_human_bytes(nbytes)} but only {_human_bytes(avail)} of {where} is available; {fix}"
    )
