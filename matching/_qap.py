"""``scipy.optimize.quadratic_assignment`` as a drop-in, solved by :func:`matching.faq`.

A scipy user changes one import::

    from scipy.optimize import quadratic_assignment     # before
    from matching import quadratic_assignment           # after: same call, same OptimizeResult

and may then add unialign's options (``n_init`` restarts batched in torch, ``two_opt`` refinement, ``transport``
(GOAT), ``device``) to the same ``options`` dict.
"""
from __future__ import annotations

import logging
import numbers
import warnings
from typing import Any

import numpy as np

from align._validation import InputTypeError, is_torch

from ._faq import faq

log = logging.getLogger(__name__)

__all__ = ["quadratic_assignment"]

# options of scipy's method="faq" and unialign's extras (passed on to matching.faq)
_SCIPY_OPTIONS = ("maximize", "partial_match", "rng", "P0", "shuffle_input", "maxiter", "tol")
_EXTRA_OPTIONS = ("n_init", "two_opt", "two_opt_max_iter", "transport", "transport_reg", "transport_max_iter",
                  "transport_tol", "batch_size", "device", "dtype", "lap_solver")


def _as_numpy(M: Any) -> np.ndarray:
    if is_torch(M):
        return M.detach().cpu().numpy()
    return np.asarray(M)


def _check_inputs(A: Any, B: Any, partial_match: Any):
    """scipy's common validation, in scipy's order and with its messages (each followed by the fix)."""
    A = np.atleast_2d(_as_numpy(A))
    B = np.atleast_2d(_as_numpy(B))
    for name, M in (("A", A), ("B", B)):
        if M.dtype.kind not in "biuf":
            raise InputTypeError(f"`{name}` must be a real-valued matrix, got dtype {M.dtype}")
    pm = np.zeros((0, 2), dtype=np.int64) if partial_match is None else np.atleast_2d(_as_numpy(partial_match))
    if pm.size == 0:
        pm = np.zeros((0, 2), dtype=np.int64)
    if pm.dtype.kind not in "iuf":
        raise InputTypeError(f"`partial_match` must be an integer array of (i, j) pairs, got dtype {pm.dtype}")
    msg = None
    if A.shape[0] != A.shape[1]:
        msg = f"`A` must be square, got shape {A.shape}; pass the (n, n) adjacency/weight matrix"
    elif B.shape[0] != B.shape[1]:
        msg = f"`B` must be square, got shape {B.shape}; pass the (n, n) adjacency/weight matrix"
    elif A.ndim != 2 or B.ndim != 2:
        msg = f"`A` and `B` must have exactly two dimensions, got {A.ndim} and {B.ndim}"
    elif A.shape != B.shape:
        msg = (f"`A` and `B` matrices must be of equal size, got {A.shape} and {B.shape}; matching.faq pads "
               "unequal sizes with isolated dummy nodes")
    elif pm.shape[0] > A.shape[0]:
        msg = f"`partial_match` can have only as many seeds as there are nodes ({A.shape[0]}), got {pm.shape[0]}"
    elif pm.shape[1] != 2:
        msg = f"`partial_match` must have two columns (i, j), got shape {pm.shape}"
    elif pm.ndim != 2:
        msg = f"`partial_match` must have exactly two dimensions (k, 2), got shape {pm.shape}"
    elif pm.dtype.kind == "f" and not np.all(np.mod(pm, 1) == 0):
        msg = "`partial_match` must hold integer node indices (i, j), got fractional values"
    elif (pm < 0).any():
        msg = "`partial_match` must contain only positive indices (node numbers 0..n-1)"
    elif (pm >= len(A)).any():
        msg = f"`partial_match` entries must be less than number of nodes ({len(A)})"
    elif len(set(pm[:, 0])) != len(pm) or len(set(pm[:, 1])) != len(pm):
        msg = "`partial_match` column entries must be unique: each node is matched at most once"
    if msg is not None:
        raise ValueError(msg)
    return A, B, pm.astype(np.int64)


def _rng(rng: Any):
    """A generator with ``uniform`` and ``permutation``: None / int seeds go through ``np.random.default_rng``
    (the behaviour scipy announces for 1.17 on); a ``Generator`` or legacy ``RandomState`` is used as given."""
    if rng is None or (isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return rng
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise InputTypeError(f"`rng` must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}")


def _sinkhorn_balance(P: np.ndarray, tol: float = 1e-3, max_iter: int = 1000) -> np.ndarray:
    """Scale the rows and columns of a positive matrix until both sum to 1 within ``tol`` (Sinkhorn–Knopp).

    The iteration of scipy's ``P0="randomized"`` start, from the same uniform draws; scipy stops at ``tol=1e-3``,
    here it goes on to ``1e-10`` (``matching.faq`` checks its starts to ``1e-6``), a few more steps towards the same
    limit.
    """
    c = 1.0 / P.sum(axis=0)
    r = 1.0 / (P @ c)
    out = P
    for _ in range(max_iter):
        if (np.abs(out.sum(axis=1) - 1) < tol).all() and (np.abs(out.sum(axis=0) - 1) < tol).all():
            break
        c = 1.0 / (r @ P)
        r = 1.0 / (P @ c)
        out = r[:, None] * P * c
    return out


def _randomized_start(m: int, rng) -> np.ndarray:
    J = np.full((m, m), 1.0 / m)
    return (J + _sinkhorn_balance(rng.uniform(size=(m, m)), tol=1e-10)) / 2


def quadratic_assignment(A: Any, B: Any, method: str = "faq", options: dict | None = None):
    r"""Approximate the quadratic assignment problem, with scipy's signature and result.

    Finds a permutation :math:`p` of the nodes of ``B`` that minimises (or, with ``maximize=True``, maximises)

    .. math:: f(p) = \sum_{i,j} A_{ij} B_{p_i p_j} = \mathrm{tr}(A^\top P B P^\top),

    by FAQ (Vogelstein et al. 2015) with seeds (Fishkind et al. 2019): Frank–Wolfe on the doubly stochastic
    relaxation, then projection to the nearest permutation. It is ``scipy.optimize.quadratic_assignment(A, B,
    method="faq", options=...)`` computed by :func:`matching.faq`: with scipy's options only, it runs the same
    iteration from the same start (a ``"randomized"`` start from the same draws of the same ``rng``, balanced more
    tightly), and the options below add restarts and refinements scipy does not have.

    Parameters
    ----------
    A, B : array_like of shape (n, n)
        Square matrices of the same size (numpy arrays, nested lists or torch tensors). For unequal sizes use
        :func:`matching.faq`, which pads the smaller one.
    method : {"faq"}
        scipy's ``"2opt"`` method is not offered; ``options={"two_opt": True}`` refines FAQ's answer by 2-opt.
    options : dict, optional
        scipy's options:

        maximize : bool, default False
            Maximise the objective instead of minimising it (graph matching).
        partial_match : int array of shape (k, 2), optional
            Fixed pairs: node ``partial_match[i, 0]`` of ``A`` is node ``partial_match[i, 1]`` of ``B``.
        rng : None, int, ``numpy.random.Generator`` (or legacy ``RandomState``)
            Source of the randomised starts and of ``shuffle_input``. Int seeds go through
            ``np.random.default_rng``.
        P0 : {"barycenter", "randomized"} or array of shape (n - k, n - k), default "barycenter"
            Start of the first (or only) restart: the flat matrix :math:`J = 1/m`, ``(J + K) / 2`` with ``K`` a random
            doubly stochastic matrix, or an explicit doubly stochastic matrix over the free nodes (rows: free nodes of
            ``A`` in increasing order; columns: free nodes of ``B``, in increasing order unless shuffled).
        shuffle_input : bool, default False
            Visit the free nodes of ``B`` in a random order (breaks ties at random).
        maxiter : int, default 30
            Frank–Wolfe iterations per restart (positive).
        tol : float, default 0.03
            Stop when :math:`\lVert P_{t+1} - P_t \rVert_F / \sqrt{m} <` ``tol`` (positive).

        unialign's extras (see :func:`matching.faq`):

        n_init : int, default 1
            Restarts, batched in torch: the first from ``P0``, the others from randomised starts drawn from ``rng``;
            the best objective wins, so more restarts never do worse than one.
        two_opt : bool, default False
            Refine the best restart by best-improvement 2-opt over the free nodes (``two_opt_max_iter`` swaps).
        transport, transport_reg, transport_max_iter, transport_tol
            GOAT's entropic-transport direction instead of the assignment step (Saad-Eldin et al. 2021).
        device, dtype, batch_size
            Where and in what precision the products run (a CUDA device for large n), restarts per batch.
        lap_solver : {"scipy", "lapjv", "auto"}, default "scipy"
            The linear assignment of each step. A drop-in follows scipy's own choice among tied assignments, so the
            default is scipy's ``linear_sum_assignment``; ``"lapjv"`` (the ``lapx`` package) is faster at large n
            but breaks ties differently, so its iterates may differ from scipy's where the gradient has ties; a
            callable ``lap_solver(cost) -> col_ind`` is your own (see :func:`matching.faq`).

        Unknown options are ignored with an ``OptimizeWarning``, as in scipy.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``col_ind`` (n,): node ``i`` of ``A`` is matched to node ``col_ind[i]`` of ``B``; ``fun``: the objective
        :math:`f` at ``col_ind`` (computed from the inputs as given, so integer inputs give an integer); ``nit``:
        Frank–Wolfe iterations of the winning restart; also ``converged`` (it met ``tol`` before ``maxiter``) and
        ``n_init``.

    Notes
    -----
    Minimisation runs :func:`matching.faq` (a maximiser) on :math:`-A`; its objective is the exact negative, and
    its assignment steps break ties as scipy's ``linear_sum_assignment`` does on scipy's gradient. Cost per
    iteration and restart: one or two :math:`m \times m` products (scipy does six) and a linear assignment.

    References
    ----------
    Vogelstein et al., "Fast approximate quadratic programming for graph matching", PLOS ONE 2015.
    Fishkind et al., "Seeded graph matching", Pattern Recognition 2019.
    SciPy's ``scipy.optimize.quadratic_assignment`` (whose interface this follows).

    Examples
    --------
    >>> import numpy as np
    >>> from matching import quadratic_assignment
    >>> A = np.array([[0, 5, 8, 6], [5, 0, 5, 1], [8, 5, 0, 2], [6, 1, 2, 0]])
    >>> B = np.array([[0, 1, 8, 4], [1, 0, 5, 2], [8, 5, 0, 5], [4, 2, 5, 0]])
    >>> res = quadratic_assignment(A, B, options={"maximize": True})
    >>> res.col_ind.tolist(), int(res.fun)
    ([2, 3, 0, 1], 286)
    """
    import operator

    from scipy.optimize import OptimizeResult, OptimizeWarning

    if not isinstance(method, str):
        raise InputTypeError(f"`method` must be a string, got {type(method).__name__}")
    if method.lower() != "faq":
        hint = " (for 2-opt use options={'two_opt': True}, or scipy's method='2opt')" if method.lower() == "2opt" \
            else ""
        raise ValueError(f"method {method!r} is not supported: use method='faq'{hint}")
    options = dict(options or {})
    unknown = [k for k in options if k not in _SCIPY_OPTIONS + _EXTRA_OPTIONS]
    if unknown:
        warnings.warn(f"Unknown solver options: {', '.join(map(str, unknown))}", OptimizeWarning, stacklevel=2)
    maximize = bool(options.get("maximize", False))
    P0 = options.get("P0", "barycenter")
    shuffle_input = options.get("shuffle_input", False)
    if not isinstance(shuffle_input, (bool, np.bool_)):
        raise InputTypeError(f"'shuffle_input' must be a bool, got {type(shuffle_input).__name__}")
    try:
        maxiter = operator.index(options.get("maxiter", 30))
    except TypeError:
        raise InputTypeError(f"'maxiter' must be a positive integer, got {options.get('maxiter')!r}") from None
    tol = options.get("tol", 0.03)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise InputTypeError(f"'tol' must be a positive float, got {type(tol).__name__}")

    A, B, pm = _check_inputs(A, B, options.get("partial_match"))
    msg = None
    if isinstance(P0, str) and P0 not in ("barycenter", "randomized"):
        msg = f"Invalid 'P0' parameter string {P0!r}: use 'barycenter', 'randomized' or a doubly stochastic matrix"
    elif maxiter <= 0:
        msg = f"'maxiter' must be a positive integer, got {maxiter}"
    elif not tol > 0:
        msg = f"'tol' must be a positive float, got {tol}"
    if msg is not None:
        raise ValueError(msg)
    rng = _rng(options.get("rng"))
    n = len(A)
    k = len(pm)
    m = n - k
    n_init = options.get("n_init", 1)
    if isinstance(n_init, bool) or not isinstance(n_init, (numbers.Integral, np.integer)) or n_init < 1:
        raise ValueError(f"'n_init' must be a positive integer (restarts), got {n_init!r}")
    n_init = int(n_init)

    # the first start (scipy's P0), drawn before the shuffle as scipy does
    if not isinstance(P0, str):
        P0 = np.atleast_2d(_as_numpy(P0)).astype(np.float64)
        if P0.shape != (m, m):
            raise ValueError(f"`P0` matrix must have shape m' x m', where m'=n-m: ({m}, {m}) for {n} nodes and {k} "
                             f"seeds, got {P0.shape}")
        if (P0 < 0).any() or not np.allclose(P0.sum(axis=0), 1) or not np.allclose(P0.sum(axis=1), 1):
            raise ValueError("`P0` matrix must be doubly stochastic (non-negative, rows and columns summing to 1)")
        first = P0
    elif P0 == "barycenter":
        first = np.full((m, m), 1.0 / m) if m else np.zeros((0, 0))
    else:
        first = _randomized_start(m, rng) if m else np.zeros((0, 0))

    def result(col_ind, nit, converged):
        col_ind = np.asarray(col_ind, dtype=np.int64)
        fun = np.sum(A * B[col_ind][:, col_ind]) if n else 0
        return OptimizeResult(col_ind=col_ind, fun=fun, nit=int(nit), converged=bool(converged), n_init=n_init)

    if n == 0 or m == 0:  # nothing left to choose
        return result(pm[np.argsort(pm[:, 0]), 1] if n else np.zeros(0, np.int64), 0, True)

    # B's free nodes in scipy's visiting order (sorted, or shuffled): relabel B so that faq's sorted order is it
    free_b = np.setdiff1d(np.arange(n), pm[:, 1])
    relabel = np.arange(n)
    if shuffle_input:
        relabel[free_b] = rng.permutation(free_b)  # relabel[new] = old
    Bw = B[relabel][:, relabel] if shuffle_input else B
    inverse = np.empty(n, dtype=np.int64)
    inverse[relabel] = np.arange(n)
    pm_w = np.stack([pm[:, 0], inverse[pm[:, 1]]], axis=1) if k else None

    starts = np.empty((n_init, m, m))
    starts[0] = first
    for r in range(1, n_init):
        starts[r] = _randomized_start(m, rng)
    extras = {key: options[key] for key in _EXTRA_OPTIONS if key in options and key != "n_init"}
    extras.setdefault("lap_solver", "scipy")  # scipy's tie-breaking, so scipy's iterates (see the docstring)
    Af = np.asarray(A, dtype=np.float64)
    res = faq(Af if maximize else -Af, np.asarray(Bw, dtype=np.float64), pm_w, n_init=n_init,
              init=starts if n_init > 1 else starts[0], max_iter=maxiter, tol=float(tol), **extras)
    col_ind = relabel[res.col_ind]
    log.debug("quadratic_assignment: faq objective %.6g after %d iterations (%d restarts)", res.score, res.n_iter,
              n_init)
    return result(col_ind, res.n_iter, res.converged)
