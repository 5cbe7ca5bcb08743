"""``match(X, Y, method=…)``: one front door over the matchers, validation at the boundary."""
from __future__ import annotations

import inspect
import logging
import numbers
from typing import Any, Callable

import numpy as np

from align._validation import (InputTypeError, check_array, check_choice, check_memory, check_not_constant,
                               check_partial_match, is_torch)

from ._assign import assign
from ._kernels import KERNELS, kernel_factor, kernel_matrix
from ._result import MatchResult

log = logging.getLogger(__name__)

__all__ = ["match", "list_methods", "local_cka", "faq_features"]


def local_cka(X: Any, Y: Any, partial_match: np.ndarray, *, kernel: str = "linear", device: Any = None) -> MatchResult:
    r"""Local CKA matching (Maniparambil et al., CVPR 2024): score each pair by the CKA of the seeds plus that pair.

    For a query ``i`` of ``X`` and ``j`` of ``Y``, :math:`S_{ij} = \mathrm{CKA}(K[S_x \cup i], L[S_y \cup j])` with the
    ``kernel`` over all items (see :func:`matching.kernel_matrix`); then a linear assignment of the queries. Computed
    for all pairs at once (:func:`matching._cka.local_cka_scores`), equal to the loop over pairs. Needs at least
    2 known pairs. ``similarity`` holds the scores of non-seed pairs (zeros elsewhere).
    """
    import torch

    from align._backend import resolve_device

    from ._cka import local_cka_scores

    check_choice("kernel", kernel, KERNELS)
    dev = resolve_device(device, X, Y)
    K = kernel_matrix(X, kernel, device=dev)
    L = kernel_matrix(Y, kernel, device=dev)
    n_x, n_y = K.shape[0], L.shape[0]
    free_x = np.setdiff1d(np.arange(n_x), partial_match[:, 0])
    free_y = np.setdiff1d(np.arange(n_y), partial_match[:, 1])
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
    S = torch.zeros((n_x, n_y), dtype=K.dtype, device=dev)
    if len(free_x) and len(free_y):
        block = local_cka_scores(K, L, t(partial_match[:, 0]), t(partial_match[:, 1]), t(free_x), t(free_y))
        S[t(free_x)[:, None], t(free_y)[None, :]] = block
    return assign(S, partial_match, "local_cka")


def _uses_factors(kernel: str, low_rank: Any, x_shape: tuple, y_shape: tuple) -> bool:
    """Whether :func:`faq_features` hands the solver ``(n, d)`` kernel factors instead of ``n x n`` kernels."""
    return kernel in ("linear", "cosine") and (
        low_rank is True or (low_rank == "auto" and max(x_shape[1], y_shape[1]) < 0.6 * min(x_shape[0], y_shape[0])))


def faq_features(X: Any, Y: Any, partial_match: np.ndarray, *, kernel: str = "cosine", low_rank: Any = "auto",
                 device: Any = None, **options) -> MatchResult:
    """FAQ on the kernel matrices of ``X`` and ``Y`` (see :func:`matching.faq` for ``options``).

    ``low_rank="auto"`` passes the ``(n, d)`` factors of the ``linear`` / ``cosine`` kernels to the solver when
    ``d < 0.6 n``, where :math:`2(n^2 d + n d^2) < 2 n^3` (gradient in :math:`O(n^2 d)`); ``False`` always forms the
    kernels.
    """
    from align._backend import as_torch, resolve_device

    from ._faq import faq

    check_choice("kernel", kernel, KERNELS)
    dev = resolve_device(device, X, Y)
    import torch

    dtype = options.pop("dtype", None) or torch.float64
    if low_rank not in ("auto", True, False):
        raise ValueError(f"`low_rank` must be 'auto', True or False, got {low_rank!r}")
    if _uses_factors(kernel, low_rank, X.shape, Y.shape):
        Fx = kernel_factor(as_torch(X, device=dev, dtype=dtype), kernel)
        Fy = kernel_factor(as_torch(Y, device=dev, dtype=dtype), kernel)
        return faq(None, None, partial_match, device=dev, dtype=dtype, _factors=(Fx, Fy), **options)
    Kx = kernel_matrix(X, kernel, device=dev, dtype=dtype)
    Ky = kernel_matrix(Y, kernel, device=dev, dtype=dtype)
    return faq(Kx, Ky, partial_match, device=dev, dtype=dtype, **options)


def _methods() -> dict[str, tuple[Callable, int]]:
    """name -> (function taking features, minimum number of known pairs)."""
    from ._blind import blind
    from ._linear import asif, lstsq, procrustes, relative
    from ._ot import entropic_gw, fused_gw, gromov_wasserstein

    return {
        "faq": (faq_features, 0),
        "local_cka": (local_cka, 2),
        "gw": (gromov_wasserstein, 0),
        "entropic_gw": (entropic_gw, 0),
        "fused_gw": (fused_gw, 1),
        "procrustes": (procrustes, 2),
        "lstsq": (lstsq, 2),
        "relative": (relative, 2),
        "asif": (asif, 2),
        "blind": (blind, 0),
    }


METHODS = ("faq", "local_cka", "gw", "entropic_gw", "fused_gw", "procrustes", "lstsq", "relative", "asif", "blind")


def list_methods() -> list[str]:
    """Names accepted by :func:`match`'s ``method``."""
    return list(METHODS)


def _valid_params(func: Callable) -> list[str]:
    names = [p.name for p in inspect.signature(func).parameters.values()
             if p.kind == p.KEYWORD_ONLY and not p.name.startswith("_")]
    if func.__name__ == "faq_features":
        from ._faq import faq

        names += [n for n in _valid_params(faq) if n not in names]
    return names


def check_method_params(method: str, params: dict) -> tuple[Callable, int]:
    """Check the method name and its parameter names; return (function, minimum number of known pairs)."""
    check_choice("method", method, METHODS)
    func, min_seeds = _methods()[method]
    valid = _valid_params(func)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise InputTypeError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for method {method!r}; valid: "
                             f"{', '.join(valid)}")
    return func, min_seeds


def check_match_memory(method: str, n_x: int, n_y: int, options: dict, dims: tuple[int, int] = (0, 0),
                       device: Any = None) -> None:
    """Refuse, before allocating, a matching whose dense ``n x n`` matrices cannot fit in the free memory.

    Raises :class:`align._validation.MemoryBudgetError` (a ``ValueError``) naming the memory needed and the fix.

    Estimates in float64 bytes, set above the peaks measured on CPU at n = 400-1,000 (which vary by up to 50%
    between runs): a guard against computations far beyond the memory, not an exact budget. The structural methods hold both kernel matrices with their
    temporaries and a few ``n_x x n_y`` matrices; faq about 12 of those plus 10 per entry of its batch of restarts in
    flight (:func:`matching._faq.restart_batch`: at most ``max(n^2, BATCH_ENTRIES)`` entries, however many restarts);
    the anchor methods one score matrix and the assignment's copy.
    """
    from ._faq import BATCH_ENTRIES

    pairs = float(n_x) * float(n_y)
    kernels = float(n_x) ** 2 + float(n_y) ** 2
    n_init = options.get("n_init") or 1
    n_init = int(n_init) if isinstance(n_init, numbers.Integral) and n_init > 0 else 1
    if method == "faq":
        m = max(n_x, n_y)  # free items <= n: the batch entries below only grow with m
        in_flight = min(n_init * m * m, max(m * m, BATCH_ENTRIES))
        factors = _uses_factors(options.get("kernel", "cosine"), options.get("low_rank", "auto"), (n_x, dims[0]),
                                (n_y, dims[1]))
        need = 8.0 * ((0 if factors else 20 * kernels) + 12 * pairs + 10 * in_flight)
    elif method in ("gw", "entropic_gw", "fused_gw"):
        need = 8 * (8 * kernels + 20 * pairs)
    elif method == "local_cka":
        need = 8 * (2 * kernels + 8 * pairs)
    elif method == "blind":  # both kernels padded, 2-opt's B_p, A B_p and gains, GW's coupling, gradient, logits
        need = 8 * (4 * kernels + 10 * pairs)
    else:  # procrustes, lstsq, relative, asif: one similarity matrix, assigned
        need = 8 * 3 * pairs
    check_memory(need, f"method {method!r} on {n_x:,} x {n_y:,} items (dense {n_x:,} x {n_y:,} matrices)",
                 "match fewer items (a subset, or the evaluation protocol: matching.evaluate, `unialign match "
                 "--n-seeds --n-query`) or use a machine with more memory", device=device)


def match(X: Any, Y: Any, method: str = "faq", partial_match: Any = None, rng: Any = None, **params) -> MatchResult:
    r"""Find which row of ``Y`` corresponds to each row of ``X`` without training, from structure and a few known pairs.

    Parameters
    ----------
    X : array or tensor of shape (n_x, d_x)
    Y : array or tensor of shape (n_y, d_y)
        Two sets of items embedded by two encoders; the widths may differ, and so may ``n_x`` and ``n_y``.
    method : str, default "faq"
        - ``"faq"``: seeded graph matching of the two kernel matrices (:func:`matching.faq`; ``kernel``, ``n_init``,
          ``transport``, ``two_opt``, …). Maximises :math:`\mathrm{tr}(K_x P K_y P^\top)`.
        - ``"local_cka"``: each pair scored by the CKA of seeds + pair (:func:`matching.local_cka`).
        - ``"gw"``, ``"entropic_gw"``, ``"fused_gw"``: Gromov–Wasserstein couplings through POT.
        - ``"procrustes"``, ``"lstsq"``: a map fitted on the known pairs, then nearest assignment.
        - ``"relative"``, ``"asif"``: relative representations over the known pairs.
        - ``"blind"``: no known pairs at all; returns a :class:`matching.BlindResult` with a confidence report
          (:func:`matching.blind`).

        Pick ``faq`` (with ``n_init`` restarts and ``two_opt=True``) or ``gw`` when the two spaces share structure
        and known pairs are few; the anchor methods are much cheaper but need more pairs. On Multi30k captions
        (MiniLM English vs multilingual-E5 German, 30 known pairs, 100 hidden items) ``faq`` with 30 restarts
        matched 0.91 of the items, 0.98 with ``two_opt=True``; see ``benchmarks/README.md`` for all methods.
    partial_match : int array of shape (k, 2), optional
        Known pairs ``(i, j)`` (row ``i`` of ``X`` is row ``j`` of ``Y``), in any order. Required (≥ 2) by all
        methods except ``faq``, ``gw`` and ``entropic_gw``.
    rng : int, Generator or None
        Randomness of ``faq``'s restarts; the other methods are deterministic.
    **params
        The chosen method's settings; an unknown name is an error that lists the valid ones.

    Returns
    -------
    MatchResult
        ``col_ind[i]`` = row of ``Y`` matched to row ``i`` of ``X`` (``-1`` if none); known pairs are kept.

    Examples
    --------
    >>> res = match(X, Y, method="faq", partial_match=seeds, n_init=30, rng=0)   # doctest: +SKIP
    >>> accuracy = (res.col_ind[queries] == truth).mean()                          # doctest: +SKIP
    """
    func, min_seeds = check_method_params(method, params)
    X = check_array(X, "X")
    Y = check_array(Y, "Y")
    check_match_memory(method, X.shape[0], Y.shape[0], params, dims=(X.shape[1], Y.shape[1]),
                       device=params.get("device") or (X.device if is_torch(X) else None))
    if not is_torch(X) and not X.flags.writeable:  # memory-mapped caches: torch wants writable memory
        X = np.array(X)
    if not is_torch(Y) and not Y.flags.writeable:
        Y = np.array(Y)
    if is_torch(X) != is_torch(Y):
        raise InputTypeError(f"`X` and `Y` must both be numpy arrays or both torch tensors, got "
                             f"{type(X).__name__} and {type(Y).__name__}")
    check_not_constant(X, "X")
    check_not_constant(Y, "Y")
    n_x, n_y = X.shape[0], Y.shape[0]
    pm = np.asarray(partial_match.detach().cpu() if is_torch(partial_match) else partial_match) \
        if partial_match is not None else None
    if pm is not None and pm.ndim == 2 and pm.shape[1] == 2 and len(pm) > min(n_x, n_y):
        raise ValueError(f"`partial_match` has {len(pm)} pairs but X has {n_x} and Y has {n_y} rows; there cannot be "
                         "more known pairs than items")
    seeds = check_partial_match(pm, n_x, n_y)
    if len(seeds) < min_seeds:
        raise ValueError(f"method {method!r} needs at least {min_seeds} known pairs in `partial_match`, got "
                         f"{len(seeds)}; use method='faq' or 'gw' to match from structure alone")
    if method in ("faq", "blind"):
        params["rng"] = rng
    log.info("match: method=%s n_x=%d n_y=%d seeds=%d", method, n_x, n_y, len(seeds))
    return func(X, Y, seeds, **params)
