"""``match(X, Y, method=…)``: one front door over the matchers, validation at the boundary."""
from __future__ import annotations

import logging
import numbers
from typing import Any

import numpy as np

from align._validation import (InputTypeError, check_array, check_choice, check_float, check_int, check_memory,
                               check_not_constant, check_partial_match, is_torch)

from ._assign import assign
from ._kernels import KERNELS, kernel_factor, kernel_matrix
from ._methods import METHODS, MethodInfo, check_method_params, check_params, list_methods, _spec  # noqa: F401
from ._result import MatchResult

log = logging.getLogger(__name__)

__all__ = ["match", "list_methods", "check_params", "MethodInfo", "local_cka", "faq_features", "seeds_start",
           "TWO_OPT_AUTO_MAX", "SEEDS_INIT_MAX"]

#: ``two_opt="auto"`` refines when there are at most this many free items (see benchmarks/README.md).
TWO_OPT_AUTO_MAX = 400
#: ``init="seeds"`` starts from the known pairs up to this many free items; above, the barycenter start measured
#: better (benchmarks/README.md, "Matching defaults").
SEEDS_INIT_MAX = 400


def local_cka(X: Any, Y: Any, partial_match: np.ndarray, *, kernel: str = "linear", device: Any = None) -> MatchResult:
    r"""Local CKA matching (Maniparambil et al., CVPR 2024): score each pair by the CKA of the seeds plus that pair.

    For a query ``i`` of ``X`` and ``j`` of ``Y``, :math:`S_{ij} = \mathrm{CKA}(K[S_x \cup i], L[S_y \cup j])` with the
    ``kernel`` over all items (see :func:`matching.kernel_matrix`); then a linear assignment of the queries. Computed
    for all pairs at once (:func:`matching.local_cka_scores`), equal to the loop over pairs. Needs at least
    2 known pairs. ``similarity`` holds the scores of non-seed pairs (zeros elsewhere).
    """
    import torch

    from align._backend import resolve_device

    from ._cka import _scores

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
        block = _scores(K, L, t(partial_match[:, 0]), t(partial_match[:, 1]), t(free_x), t(free_y))
        S[t(free_x)[:, None], t(free_y)[None, :]] = block
    return assign(S, partial_match, "local_cka")


def _uses_factors(kernel: str, low_rank: Any, x_shape: tuple, y_shape: tuple) -> bool:
    """Whether :func:`faq_features` hands the solver ``(n, d)`` kernel factors instead of ``n x n`` kernels."""
    return kernel in ("linear", "cosine") and (
        low_rank is True or (low_rank == "auto" and max(x_shape[1], y_shape[1]) < 0.6 * min(x_shape[0], y_shape[0])))


def _sinkhorn_log(L, max_iter: int = 10000, tol: float = 1e-9):
    """The doubly stochastic matrix ``diag(u) exp(L) diag(v)`` (Sinkhorn scaling, float64).

    Scaling in the exponential domain (matrix-vector products) when ``exp(L - max L)`` cannot underflow to zero,
    else in the log domain; the marginal error is checked every 10 sweeps.
    """
    import torch

    if float(L.max() - L.min()) < 600.0:
        K = torch.exp(L - L.max())
        u = torch.ones(L.shape[0], dtype=L.dtype, device=L.device)
        for it in range(max_iter):
            v = 1.0 / (K.T @ u)
            u = 1.0 / (K @ v)
            if it % 10 == 9 and float((v * (K.T @ u) - 1).abs().max()) < tol:
                break
        P = u[:, None] * K * v[None, :]
    else:
        f = torch.zeros(L.shape[0], dtype=L.dtype, device=L.device)
        g = torch.zeros(L.shape[1], dtype=L.dtype, device=L.device)
        for it in range(max_iter):
            f = -torch.logsumexp(L + g[None, :], dim=1)
            g = -torch.logsumexp(L + f[:, None], dim=0)
            if it % 10 == 9 and float((torch.logsumexp(L + f[:, None] + g[None, :], dim=0).exp() - 1).abs().max()) < tol:
                break
        P = torch.exp(L + f[:, None] + g[None, :])
    # round to exact marginals (Altschuler et al. 2017, Alg. 2) where Sinkhorn stopped short (very small temperature)
    one_r = torch.ones(P.shape[0], dtype=P.dtype, device=P.device)
    one_c = torch.ones(P.shape[1], dtype=P.dtype, device=P.device)
    P = P * torch.clamp(one_r / P.sum(dim=1), max=1.0)[:, None]
    P = P * torch.clamp(one_c / P.sum(dim=0), max=1.0)[None, :]
    err_r, err_c = one_r - P.sum(dim=1), one_c - P.sum(dim=0)
    if float(err_r.abs().sum()) > 0:
        P = P + torch.outer(err_r, err_c) / err_r.abs().sum()
    return torch.clamp(P, min=0.0)  # rounding noise of order 1e-18


def _balanced(M: np.ndarray, max_iter: int = 10000, tol: float = 1e-10) -> np.ndarray:
    """Sinkhorn balancing of a positive, nearly doubly stochastic matrix to rows and columns summing to 1."""
    for _ in range(max_iter):
        M = M / M.sum(axis=0, keepdims=True)
        M = M / M.sum(axis=1, keepdims=True)
        if np.abs(M.sum(axis=0) - 1).max() < tol:
            break
    return M


def seeds_start(Rx, Ry, temperature: float):
    r"""FAQ start from the known pairs: the Sinkhorn projection of :math:`\exp(S / \tau)`, ``S`` the correlations
    of the free items' kernel rows over the known pairs.

    ``Rx`` (m, k): kernel entries :math:`K^x_{i s}` of each free item ``i`` of ``X`` with the ``k`` seeds (in the
    seeds' order), ``Ry`` likewise for ``Y``. Each row is standardised over the seeds; :math:`S_{ij} =
    \langle z(R^x_i), z(R^y_j)\rangle / k \in [-1, 1]` is the relative-representation similarity of Moschella et
    al. (2023) of item ``i`` and item ``j``. The start is the doubly stochastic matrix nearest (in KL) to
    :math:`\exp(S/\tau)`: soft for large ``temperature``, near the assignment of ``S`` for small.
    """
    import torch

    def z(R):
        R = R - R.mean(dim=1, keepdim=True)
        return R / torch.clamp(torch.linalg.vector_norm(R, dim=1, keepdim=True), min=1e-300)

    S = z(Rx) @ z(Ry).T
    return _sinkhorn_log(S / temperature)


def faq_features(X: Any, Y: Any, partial_match: np.ndarray, *, kernel: str = "cosine", low_rank: Any = "auto",
                 n_init: int = 1, init: Any = "seeds", two_opt: Any = "auto", seeds_temperature: float = 0.1,
                 device: Any = None, rng: Any = None, **options) -> MatchResult:
    """FAQ on the kernel matrices of ``X`` and ``Y``: what ``match(method="faq")`` runs.

    The defaults here (the best measured settings, ``benchmarks/README.md`` "Matching defaults") differ from the
    low-level solver :func:`matching.faq`, which keeps scipy's (one barycenter start, no 2-opt):

    - ``init="seeds"``: with at least 2 known pairs, ``n_x == n_y`` and at most :data:`SEEDS_INIT_MAX` free
      items, start from :func:`seeds_start` (the relative-representation similarity of the free items over the
      known pairs, Sinkhorn-balanced at ``seeds_temperature``); restarts ``r >= 1`` average it with a random doubly
      stochastic matrix. Otherwise (no or one known pair, unequal sizes, more free items) the solver's ``"auto"``
      start: the barycenter, randomized for restarts ``r >= 1``. ``"auto"``, ``"barycenter"``,
      ``"randomized"`` and arrays go to :func:`matching.faq` as they are.
    - ``two_opt="auto"``: 2-opt refinement of the result when there are at most :data:`TWO_OPT_AUTO_MAX` free
      items (each swap costs two ``n x n`` products), else off; ``True`` / ``False`` force it.
    - ``n_init=1``.

    ``low_rank="auto"`` passes the ``(n, d)`` factors of the ``linear`` / ``cosine`` kernels to the solver when
    ``d < 0.6 n``, where :math:`2(n^2 d + n d^2) < 2 n^3` (gradient in :math:`O(n^2 d)`); ``False`` always forms the
    kernels. Other ``options`` (``transport``, ``max_iter``, …) go to :func:`matching.faq`.
    """
    from align._backend import as_torch, resolve_device
    from align._validation import check_rng

    from ._faq import _random_doubly_stochastic, faq

    check_choice("kernel", kernel, KERNELS)
    dev = resolve_device(device, X, Y)
    import torch

    dtype = options.pop("dtype", None) or torch.float64
    if low_rank not in ("auto", True, False):
        raise ValueError(f"`low_rank` must be 'auto', True or False, got {low_rank!r}")
    seeds_temperature = check_float("seeds_temperature", seeds_temperature, min_value=0.0, inclusive=False)
    n_init = check_int("n_init", n_init, min_value=1)
    rng = check_rng(rng)
    n_x, n_y, s = X.shape[0], Y.shape[0], len(partial_match)
    m = max(n_x, n_y) - s
    if isinstance(two_opt, str):
        check_choice("two_opt", two_opt, ("auto",))
        two_opt = m <= TWO_OPT_AUTO_MAX
    factors = _uses_factors(kernel, low_rank, X.shape, Y.shape)
    if factors:
        Fx = kernel_factor(as_torch(X, device=dev, dtype=dtype), kernel)
        Fy = kernel_factor(as_torch(Y, device=dev, dtype=dtype), kernel)
        operands = dict(A=None, B=None, _factors=(Fx, Fy))
    else:
        Kx = kernel_matrix(X, kernel, device=dev, dtype=dtype)
        Ky = kernel_matrix(Y, kernel, device=dev, dtype=dtype)
        operands = dict(A=Kx, B=Ky)
    if isinstance(init, str) and init == "seeds":
        if s >= 2 and n_x == n_y and 0 < m <= SEEDS_INIT_MAX:
            free_x = torch.from_numpy(np.setdiff1d(np.arange(n_x), partial_match[:, 0])).to(dev)
            free_y = torch.from_numpy(np.setdiff1d(np.arange(n_y), partial_match[:, 1])).to(dev)
            sx = torch.from_numpy(partial_match[:, 0]).to(dev)
            sy = torch.from_numpy(partial_match[:, 1]).to(dev)
            if factors:
                Rx, Ry = Fx[free_x] @ Fx[sx].T, Fy[free_y] @ Fy[sy].T
            else:
                Rx, Ry = Kx[free_x][:, sx], Ky[free_y][:, sy]
            P0 = seeds_start(Rx.to(torch.float64), Ry.to(torch.float64), seeds_temperature).cpu().numpy()
            if n_init == 1:
                init = P0
            else:  # restart 0 from the seeds, the others halfway to a random doubly stochastic matrix
                children = [np.random.default_rng(c) for c in
                            np.random.SeedSequence(int(rng.integers(2**63))).spawn(n_init)]
                init = np.stack([P0] + [_balanced((P0 + _random_doubly_stochastic(m, children[r])) / 2)
                                        for r in range(1, n_init)])
        else:
            init = "auto"
    return faq(partial_match=partial_match, n_init=n_init, init=init, two_opt=two_opt, device=dev, dtype=dtype,
               rng=rng, **operands, **options)


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
    elif method == "blind":  # both kernels padded, 2-opt's B_p, A B_p and gains, GW's coupling, gradient, logits
        need = 8 * (4 * kernels + 10 * pairs)
    elif method == "local_cka":
        need = 8 * (2 * kernels + 8 * pairs)
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
        - ``"relative"``, ``"asif"``: relative representations over the known pairs (``asif``: on uncentred
          features, with ASIF's ``topk`` sparsification and ``power``; by default all anchors, power 1).

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
    info = check_params(method, **params)
    func, min_seeds = _spec(method).func, info.min_known_pairs
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
    if info.stochastic:
        params["rng"] = rng
    log.info("match: method=%s n_x=%d n_y=%d seeds=%d", method, n_x, n_y, len(seeds))
    return func(X, Y, seeds, **params)
