"""Seeded graph matching by FAQ (Frank–Wolfe on the relaxed QAP), restarts batched in torch: the front door.

:func:`faq` checks its inputs, moves the seeds first, draws the starts (random doubly stochastic matrices,
balanced as scipy's), runs the restarts in batches sized by ``memory_budget`` and refines the best by 2-opt. The
iterations live in :mod:`matching._faq_frank_wolfe` (assignment directions) and :mod:`matching._faq_transport`
(``transport=True``); the LAP helpers in :mod:`matching._assign`.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from align._validation import (check_array, check_choice, check_float, check_int, check_partial_match, check_rng,
                               is_torch)

from ._assign import _lap_solver
from ._faq_frank_wolfe import _FrankWolfe, _Operand, _score, exact_in_float32
from ._faq_transport import _Blocks, _transport_batch
from ._result import MatchResult

log = logging.getLogger(__name__)

__all__ = ["faq", "random_doubly_stochastic"]


def random_doubly_stochastic(m: int, rng: Any = None, *, tol: float = 1e-3, max_iter: int = 1000) -> np.ndarray:
    r"""A random doubly stochastic ``(m, m)`` matrix: uniform(0, 1) entries balanced by Sinkhorn–Knopp.

    The random part ``K`` of the ``"randomized"`` start :math:`(J + K) / 2` of :func:`faq` (``J`` the barycenter,
    all entries ``1/m``), drawn and balanced as scipy's ``quadratic_assignment(P0="randomized")``: the entries of
    ``rng.uniform(size=(m, m))``, then alternating column and row scalings until every row and column sum is within
    ``tol`` of 1 (or ``max_iter`` steps). Use it to build explicit starts for ``faq(init=...)`` that another solver
    (scipy's ``P0``) starts from as well, so the two run side by side from the same points; both check an explicit
    start's sums to about 1e-6, so pass a small ``tol`` (such as 1e-8) there, or the default 1e-3 may be refused.

    Parameters
    ----------
    m : int
        Size (at least 1): the number of free items, for a start of :func:`faq`.
    rng : int, Generator or None
        The one source of the ``m * m`` uniform draws.
    tol : float, default 1e-3
        Largest deviation of a row or column sum from 1 (scipy's value).
    max_iter : int, default 1000
        Most balancing steps.

    Returns
    -------
    ndarray of shape (m, m), float64

    Examples
    --------
    Four randomized starts over the free items, one child generator each, for ``faq`` and scipy alike:

    >>> m = 5
    >>> children = [np.random.default_rng(s) for s in np.random.SeedSequence(0).spawn(4)]
    >>> starts = np.stack([(random_doubly_stochastic(m, c, tol=1e-8) + 1.0 / m) / 2 for c in children])
    >>> bool(np.allclose(starts.sum(axis=1), 1, atol=1e-8) and np.allclose(starts.sum(axis=2), 1, atol=1e-8))
    True
    """
    m = check_int("m", m, min_value=1)
    tol = check_float("tol", tol, min_value=0.0, inclusive=False)
    max_iter = check_int("max_iter", max_iter, min_value=1)
    return _random_doubly_stochastic(m, check_rng(rng), tol, max_iter)


def _random_doubly_stochastic(m: int, rng: np.random.Generator, tol: float = 1e-3, max_iter: int = 1000) -> np.ndarray:
    """One random doubly stochastic matrix: uniform(0, 1) entries balanced by Sinkhorn (the "randomized" start).

    The reference for :func:`_random_doubly_stochastic_batch`, which computes the same for many at once.
    """
    K = np.empty((1, m, m))
    return _random_doubly_stochastic_batch(K, [rng], tol, max_iter)[0]


def _random_doubly_stochastic_batch(K: np.ndarray, rngs: list, tol: float = 1e-3, max_iter: int = 1000) -> np.ndarray:
    """Random doubly stochastic matrices for a whole batch at once, in place in ``K`` (r, m, m); returns ``K``.

    ``K[k]`` is drawn from ``rngs[k]`` (uniform(0, 1), as ``rng.uniform(size=(m, m))``) and balanced as scipy's
    ``quadratic_assignment`` balances its ``P0="randomized"`` start (``scipy.optimize._qap._doubly_stochastic``):
    scalings ``c = 1 / (r K)``, ``r = 1 / (K c)`` until every row and column sum of ``diag(r) K diag(c)`` is within
    ``tol`` of 1, each problem stopping on its own (its scalings are frozen), so ``K[k]`` does not depend on the
    other problems of the batch. Two batched matrix–vector products per step and no ``(r, m, m)`` temporaries.
    """
    for k, g in enumerate(rngs):
        g.random(out=K[k])
    c = 1.0 / K.sum(axis=1)  # (r, m)
    Kc = np.matmul(K, c[:, :, None])[:, :, 0]
    r = 1.0 / Kc
    alive = np.ones(len(K), dtype=bool)
    for _ in range(max_iter):
        rK = np.matmul(r[:, None, :], K)[:, 0]
        ok = (np.abs(r * Kc - 1) < tol).all(axis=1) & (np.abs(c * rK - 1) < tol).all(axis=1)
        alive &= ~ok
        if not alive.any():
            break
        c = np.where(alive[:, None], 1.0 / rK, c)
        Kc = np.matmul(K, c[:, :, None])[:, :, 0]
        r = np.where(alive[:, None], 1.0 / Kc, r)
    K *= r[:, :, None]
    K *= c[:, None, :]
    return K


def _two_opt_delta(A: np.ndarray, Bp: np.ndarray) -> np.ndarray:
    """Change of :math:`\\sum_{ab} A_{ab} B_{p_a p_b}` for every transposition of ``p_i`` and ``p_j`` (n, n).

    ``Bp = B[p][:, p]``. Costs two n x n matrix products; equals the brute-force change (see the tests).
    """
    M = A @ Bp.T
    N = A.T @ Bp
    dM, dN, dA, dB = np.diag(M), np.diag(N), np.diag(A), np.diag(Bp)
    rows_all = M - dM[:, None] - dM[None, :] + M.T
    cols_all = N - dN[:, None] - dN[None, :] + N.T
    At, Bt = A.T, Bp.T
    rows_block = (dA[:, None] - At) * (Bt - dB[:, None]) + (A - dA[None, :]) * (dB[None, :] - Bp)
    cols_block = (dA[:, None] - A) * (Bp - dB[:, None]) + (At - dA[None, :]) * (dB[None, :] - Bt)
    exact_block = (dA[:, None] - dA[None, :]) * (dB[None, :] - dB[:, None]) + (A - At) * (Bt - Bp)
    return rows_all - rows_block + cols_all - cols_block + exact_block


def _two_opt(A: np.ndarray, B: np.ndarray, perm: np.ndarray, free: np.ndarray, max_iter: int) -> tuple[np.ndarray, int]:
    """Best-improvement 2-opt over the free rows: swap the pair with the largest gain until none gains."""
    perm = perm.copy()
    scale = max(float(np.abs(A).sum() * np.abs(B).max()), 1.0)
    mask = np.zeros((len(perm), len(perm)), dtype=bool)
    mask[np.ix_(free, free)] = True
    np.fill_diagonal(mask, False)
    for it in range(max_iter):
        delta = _two_opt_delta(A, B[perm][:, perm])
        delta[~mask] = -np.inf
        i, j = np.unravel_index(np.argmax(delta), delta.shape)
        if not delta[i, j] > 1e-12 * scale:
            return perm, it
        perm[i], perm[j] = perm[j], perm[i]
    return perm, max_iter


def _check_square(M: Any, name: str):
    M = check_array(M, name)
    if M.shape[0] != M.shape[1]:
        raise ValueError(
            f"`{name}` must be a square (n, n) matrix, got shape {tuple(M.shape)}; to match feature arrays use "
            "matching.match(X, Y, method='faq', kernel=...), which builds the kernels"
        )
    return M


#: Bytes of the ``(batch, m, m)`` buffers of one batch of restarts, all together, by default: restarts run together
#: until their buffers would pass this (at least one restart). scipy's FAQ holds about ten ``m x m`` matrices;
#: this keeps the memory FAQ adds within about twice that at ``n = 1,000`` (benchmarks/README.md measures it).
BATCH_BYTES = 64 * 2**20

# Entries of one (batch, m, m) tensor at most, by default (what matching.check_match_memory budgets for).
BATCH_ENTRIES = BATCH_BYTES // 8 // 2


def restart_batch(n_init: int, m: int, tensors: int = 5, itemsize: int = 8, memory_budget: Optional[int] = None) -> int:
    """Restarts per batch: as many as keep ``tensors`` buffers of shape ``(batch, m, m)`` within ``memory_budget``
    bytes (default :data:`BATCH_BYTES`), at least one."""
    budget = BATCH_BYTES if memory_budget is None else memory_budget
    return max(1, min(n_init, int(budget) // max(tensors * m * m * itemsize, 1)))


def faq(
    A: Any,
    B: Any,
    partial_match: Any = None,
    *,
    n_init: int = 1,
    init: Any = "auto",
    max_iter: int = 30,
    tol: float = 0.03,
    transport: bool = False,
    transport_reg: float = 100.0,
    transport_max_iter: int = 1000,
    transport_tol: float = 0.05,
    two_opt: bool = False,
    two_opt_max_iter: int = 1000,
    batch_size: Optional[int] = None,
    memory_budget: Optional[int] = None,
    lap_solver: str = "auto",
    device: Any = None,
    dtype: Any = None,
    rng: Any = None,
    _factors: Optional[tuple] = None,
) -> MatchResult:
    r"""Seeded graph matching: approximately maximise :math:`\mathrm{tr}(A P B^\top P^\top)` over permutations.

    FAQ (Vogelstein et al. 2015) with seeds (Fishkind et al. 2019): Frank–Wolfe on the doubly stochastic
    relaxation, then projection to the nearest permutation. With ``k`` seeds fixed and ``m = n - k`` free items,
    each iteration computes the gradient

    .. math:: \nabla f(P) = A_{21} B_{21}^\top + A_{12}^\top B_{12} + A_{22} P B_{22}^\top + A_{22}^\top P B_{22},

    solves a linear assignment problem on it (the direction ``Q``), and takes the exact line-search step along
    ``Q - P``. The QAP is NP-hard; results are approximations, and restarts help.

    Parameters
    ----------
    A : array or tensor of shape (n_a, n_a)
    B : array or tensor of shape (n_b, n_b)
        Square weight / kernel matrices. Unequal sizes are padded with zero rows and columns (isolated dummy
        nodes, graspologic's "naive" padding); items matched to a dummy come back as ``-1``. Zero is neutral only
        for zero-mean weights, such as centred kernels; centre positive weights first.
    partial_match : int array of shape (k, 2), optional
        Known pairs ``(i, j)``: row ``i`` of ``A`` is item ``j`` of ``B``. Any order.
    n_init : int, default 1
        Restarts, run together in batches (buffers of shape ``(batch, m, m)``, see ``memory_budget``); the best by
        objective wins (the first of equals).
    init : {"auto", "barycenter", "randomized"} or array of shape (m, m) or (n_init, m, m)
        Start of each restart. ``"barycenter"``: all entries ``1/m``. ``"randomized"``: ``(J + K) / 2`` with ``J``
        the barycenter and ``K`` a random doubly stochastic matrix (scipy's ``P0="randomized"``). ``"auto"``: the
        barycenter for restart 0 and randomized for the others, so more restarts never do worse than one.
        An array gives explicit doubly stochastic starts over the free rows of ``A`` and free rows of ``B``, each in
        increasing index order (as in scipy's ``P0``).
    max_iter, tol : int, float
        Frank–Wolfe stops after ``max_iter`` iterations or when :math:`\lVert P_{t+1} - P_t\rVert_F / \sqrt{m} <`
        ``tol`` (scipy's defaults, 30 and 0.03).
    transport : bool, default False
        Replace the assignment step by entropic optimal transport (GOAT, Saad-Eldin et al. 2021, graspologic's
        ``transport=True``): the direction is the Sinkhorn solution with regulariser ``max|grad| / transport_reg``.
        Smoother path; it recovered unseeded matches where plain FAQ did not. The Sinkhorn step is POT's
        ``sinkhorn_knopp`` as graspologic calls it (same iterates and stopping rule), each restart stopping on its
        own.
    transport_reg, transport_max_iter, transport_tol
        Sinkhorn settings (graspologic's defaults 100, 1000, 0.05).
    two_opt : bool, default False
        Refine the best restart's permutation by best-improvement 2-opt over the free items (each sweep costs two
        n x n products; for modest n).
    batch_size : int, optional
        Restarts per batch (one set of ``(batch, m, m)`` buffers, allocated once and reused). Default: as many as
        fit in ``memory_budget``. Results do not depend on it.
    memory_budget : int, optional
        Bytes for the batch buffers (default :data:`BATCH_BYTES`, 64 MiB): 2 ``(m, m)`` matrices per restart for
        kernel factors, 5 for symmetric dense sides, 6 otherwise (10 with ``transport=True``), at least one
        restart. Sizes the batch when ``batch_size`` is not given.
    lap_solver : {"auto", "lapjv", "scipy"} or callable, default "auto"
        The linear assignment solver of the direction step and the final projection: ``"lapjv"`` is
        Jonker–Volgenant (``lap.lapjvx`` of the ``lapx`` package), ``"scipy"`` is
        ``scipy.optimize.linear_sum_assignment``; ``"auto"`` takes ``lapx`` when it is installed, else scipy. Both
        are exact: where the optimum is unique they return the same assignment, and only ties (several optimal
        assignments, as on unweighted graphs) may break differently, so the path can differ from scipy's FAQ
        while being as valid. Timings: benchmarks/README.md. A callable ``lap_solver(cost) -> col_ind`` solves
        the *minimum*-cost assignment of a square float64 array ``cost`` (m, m) (a read-only view: copy it to
        keep it) and returns the column of each row, an int array of shape (m,), e.g. ``lambda cost:
        linear_sum_assignment(cost)[1]``, which gives exactly ``"scipy"``'s path. It is called for every
        direction step whose row minima are not distinct and strict (only a unique optimum is taken without it,
        so ties break as the callable breaks them) and for every final projection whose row maxima are not
        (with ``cost = -P``); any other return is a ``ValueError``. With ``transport=True`` the solver is
        unused: the direction is a Sinkhorn plan and the projection scipy's.
    device, dtype
        Where and in what precision to compute (default: the input's device, float64). The assignment step runs
        on CPU.
    rng : int, Generator or None
        Randomised starts draw from one child generator per restart, so results do not depend on ``batch_size``.

    Returns
    -------
    MatchResult
        ``col_ind[i]`` the row of ``B`` matched to row ``i`` of ``A``; ``score`` the objective
        :math:`\sum_{ik} A_{ik} B_{c_i c_k}`; ``n_iter`` / ``converged`` of the best restart.

    Notes
    -----
    Cost per iteration and restart: one ``m x m`` product for symmetric inputs, two otherwise (scipy's
    implementation does six), plus one linear assignment. The gradient products are updated, not recomputed: after
    the step :math:`P \leftarrow (1-t)P + tQ`, :math:`A P B^\top \leftarrow (1-t) A P B^\top + t\, A Q B^\top`, and
    for a permutation ``Q`` the term :math:`A Q B^\top` is a row gather of :math:`B^\top` and one product. The
    step size needs no product: :math:`\langle A D B^\top, D\rangle` for ``D = Q - P`` comes from the kept
    products and gathers, and :math:`\langle C, P\rangle`, :math:`\langle A P B^\top, P\rangle`,
    :math:`\lVert P\rVert^2` follow from the step by recurrences, so the last iteration (step 0) costs only its
    assignment; up to :data:`matching._faq_frank_wolfe.PRODUCT_FIRST_MAX_M` free items the product comes first
    and the quadratic term is a gather of it. The objective of each answer comes from the same gathers. When the
    matrices are kernels ``F F^T`` of ``n x d`` features (see :func:`matching.match`), the solver keeps the
    ``d x d`` core ``F^T P G`` instead of ``A P B^T`` and the products cost :math:`O(m^2 d)` instead of
    :math:`O(m^3)`. The restarts of a batch share buffers allocated once per call (``memory_budget``); the random
    starts of a batch are balanced together. The assignment (:math:`O(m^3)`) is skipped when the gradient's row
    maxima lie in distinct columns (for ``lap_solver="scipy"`` or a callable also strict: then it is the unique
    optimum, the one that solver would return). The one-product symmetric path is taken for exactly symmetric inputs
    (``torch.equal(A, A.T)``); :func:`matching.kernel_matrix` returns such matrices. With ``transport=True`` each
    step runs Sinkhorn on the dense ``Q`` instead, and the products with ``Q`` are full products (no gather). Speed
    and memory against scipy: benchmarks/README.md.

    References
    ----------
    Vogelstein et al., "Fast approximate quadratic programming for graph matching", PLOS ONE 2015.
    Fishkind et al., "Seeded graph matching", Pattern Recognition 2019.
    Saad-Eldin et al., "Graph matching via optimal transport", arXiv:2111.05366, 2021.
    """
    import torch

    from align._backend import as_torch, resolve_device

    n_init = check_int("n_init", n_init, min_value=1)
    max_iter = check_int("max_iter", max_iter, min_value=1)
    tol = check_float("tol", tol, min_value=0.0)
    transport_reg = check_float("transport_reg", transport_reg, min_value=0.0, inclusive=False)
    transport_max_iter = check_int("transport_max_iter", transport_max_iter, min_value=1)
    transport_tol = check_float("transport_tol", transport_tol, min_value=0.0, inclusive=False)
    two_opt_max_iter = check_int("two_opt_max_iter", two_opt_max_iter, min_value=0)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, min_value=1)
    if memory_budget is not None:
        memory_budget = check_int("memory_budget", memory_budget, min_value=1)
    if not callable(lap_solver):
        check_choice("lap_solver", lap_solver, ("auto", "lapjv", "scipy"))
    rng = check_rng(rng)
    dev = resolve_device(device, A, B) if _factors is None else resolve_device(device, *_factors)
    dtype = dtype or torch.float64

    if _factors is not None:
        a = _Operand(factor=as_torch(_factors[0], device=dev, dtype=dtype))
        b = _Operand(factor=as_torch(_factors[1], device=dev, dtype=dtype))
    else:
        A = _check_square(A, "A")
        B = _check_square(B, "B")
        a = _Operand(dense=as_torch(A, device=dev, dtype=dtype))
        b = _Operand(dense=as_torch(B, device=dev, dtype=dtype))
    n_a, n_b = a.n, b.n
    seeds = check_partial_match(partial_match, n_a, n_b)
    n = max(n_a, n_b)
    a, b = a.padded(n), b.padded(n)
    s = len(seeds)
    m = n - s

    free_a, free_b = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    free_a[seeds[:, 0]] = free_b[seeds[:, 1]] = False
    free_a, free_b = np.flatnonzero(free_a), np.flatnonzero(free_b)
    order_a = np.concatenate([seeds[:, 0], free_a])
    order_b = np.concatenate([seeds[:, 1], free_b])

    def full_perm(cols_free: np.ndarray) -> np.ndarray:
        perm = np.empty(n, dtype=np.int64)
        perm[order_a] = order_b[np.concatenate([np.arange(s), s + cols_free])]
        return perm

    def finish(perm: np.ndarray, score: float, n_iter: int, converged: bool, n_restarts: int) -> MatchResult:
        col_ind = perm[:n_a].copy()
        col_ind[col_ind >= n_b] = -1
        return MatchResult(col_ind=col_ind, score=score, n_iter=n_iter, converged=converged, method="faq",
                           n_restarts=n_restarts)

    if m == 0:
        perm = full_perm(np.zeros(0, dtype=np.int64))
        return finish(perm, _score(a, b, torch.from_numpy(perm).to(dev)), 0, True, 0)

    # starts
    if isinstance(init, str):
        check_choice("init", init, ("auto", "barycenter", "randomized"))
        starts = None
    else:
        starts = np.asarray(init.detach().cpu() if is_torch(init) else init, dtype=np.float64)
        if starts.ndim == 2:
            starts = starts[None]
        if starts.shape[1:] != (m, m) or starts.shape[0] not in (1, n_init):
            raise ValueError(
                f"`init` must have shape ({m}, {m}) or ({n_init}, {m}, {m}) (free items of A by free items of B), "
                f"got {starts.shape}"
            )
        rows_ok = np.allclose(starts.sum(2), 1, atol=1e-6)
        if (starts < 0).any() or not (rows_ok and np.allclose(starts.sum(1), 1, atol=1e-6)):
            raise ValueError("`init` must be doubly stochastic (non-negative, rows and columns summing to 1)")
        starts = np.broadcast_to(starts, (n_init, m, m))
    children = [np.random.default_rng(c) for c in np.random.SeedSequence(int(rng.integers(2**63))).spawn(n_init)]

    def fill_starts(P, lo: int, hi: int) -> None:
        """Starts of restarts ``lo..hi-1`` into ``P[:hi - lo]``; the random ones balanced together (one batch)."""
        if starts is not None:
            P[: hi - lo].copy_(torch.from_numpy(np.array(starts[lo:hi])))
            return
        first = lo + 1 if (init == "auto" and lo == 0) else lo  # restart 0 of "auto" is the barycenter
        if init == "barycenter":
            first = hi
        P[: first - lo].fill_(1.0 / m)
        if first < hi:
            view = P[first - lo: hi - lo]
            inplace = view.device.type == "cpu" and view.dtype == torch.float64
            K = view.numpy() if inplace else np.empty(tuple(view.shape))
            _random_doubly_stochastic_batch(K, children[first:hi])
            K += 1.0 / m  # (J + K) / 2, as scipy's P0="randomized"
            K /= 2.0
            if not inplace:
                view.copy_(torch.from_numpy(K))

    ra = a.reordered(torch.from_numpy(order_a).to(dev))
    rb = b.reordered(torch.from_numpy(order_b).to(dev))
    best = None  # (score, perm, n_iter, converged)
    if not transport:
        sym = ra.factor is not None or (ra.is_symmetric() and rb.is_symmetric())
        itemsize = torch.empty((), dtype=dtype).element_size()
        exact32 = exact_in_float32(ra, rb, s, dtype)
        if batch_size is None:
            batch_size = restart_batch(n_init, m, _FrankWolfe.n_buffers(ra.factor is not None, sym, exact32),
                                       itemsize, memory_budget)
        fw = _FrankWolfe(ra, rb, s, min(batch_size, n_init), _lap_solver(lap_solver), dev, dtype, sym, exact32)
        for lo in range(0, n_init, batch_size):
            hi = min(n_init, lo + batch_size)
            fill_starts(fw.P, lo, hi)
            for r, (cols, score, it, conv) in zip(range(lo, hi), fw.run(hi - lo, max_iter, tol)):
                log.debug("faq restart %d: score %.6g after %d iterations", r, score, it)
                if best is None or score > best[0]:
                    best = (score, full_perm(cols), it, conv)
        log.debug("faq: %d of %d assignment steps needed a LAP", fw.laps, fw.assignments)
        del fw
    else:
        blocks = _Blocks(ra, rb, s)
        if batch_size is None:
            batch_size = restart_batch(n_init, m, 10, torch.empty((), dtype=dtype).element_size(), memory_budget)
        for lo in range(0, n_init, batch_size):
            best = _transport_batch(blocks, a, b, lo, min(n_init, lo + batch_size), fill_starts, full_perm, best,
                                    m, max_iter, tol, transport_reg, transport_max_iter, transport_tol, dev, dtype)

    score, perm, it_best, conv_best = best
    if two_opt:
        A_full = (a.dense if a.dense is not None else a.factor @ a.factor.T).detach().cpu().numpy()
        B_full = (b.dense if b.dense is not None else b.factor @ b.factor.T).detach().cpu().numpy()
        perm, swaps = _two_opt(A_full, B_full, perm, free_a, two_opt_max_iter)
        if swaps:
            score = float((A_full * B_full[perm][:, perm]).sum())
        log.debug("2-opt: %d swaps, score %.6g", swaps, score)
    return finish(perm, score, it_best, conv_best, n_init)

