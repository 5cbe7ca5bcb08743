"""Linear assignment: from a pair-score matrix to a matching (seeds fixed, a LAP on the rest), and the LAP
helpers of :func:`matching.faq` (scipy or LAPJV, one matrix or a batch with the unique-argmin shortcut)."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._result import MatchResult

__all__ = ["assign"]


def assign(S, seeds: np.ndarray, method: str, *, n_iter: int = 0, converged: bool = True) -> MatchResult:
    """Maximum-weight matching of the non-seed rows and columns of ``S`` (n_x, n_y); seed pairs kept as given."""
    from align._backend import to_numpy

    S = np.asarray(to_numpy(S), dtype=np.float64)
    n_x, n_y = S.shape
    col_ind = np.full(n_x, -1, dtype=np.int64)
    col_ind[seeds[:, 0]] = seeds[:, 1]
    free_x = np.setdiff1d(np.arange(n_x), seeds[:, 0])
    free_y = np.setdiff1d(np.arange(n_y), seeds[:, 1])
    if len(free_x) and len(free_y):
        r, c = linear_sum_assignment(S[np.ix_(free_x, free_y)], maximize=True)
        col_ind[free_x[r]] = free_y[c]
    matched = col_ind >= 0
    score = float(S[np.arange(n_x)[matched], col_ind[matched]].sum())
    return MatchResult(col_ind=col_ind, score=score, n_iter=n_iter, converged=converged, method=method, similarity=S)


def assign_max_batch(G: np.ndarray) -> tuple[np.ndarray, int]:
    """Maximum-weight assignment of each square matrix in the batch ``G`` (r, m, m): columns (r, m), LAPs solved.

    Where every row of ``G[k]`` has a strict maximum and these row argmaxes are all distinct, they are the unique
    optimum (any other assignment leaves some row below its maximum), so scipy's ``linear_sum_assignment`` would
    return exactly them; it is called only for the other matrices. The check costs O(m^2), a LAP O(m^3).
    """
    r, m, _ = G.shape
    arg = G.argmax(axis=2)
    top = np.take_along_axis(G, arg[:, :, None], axis=2)
    strict = (G >= top).sum(axis=2) == 1  # no other entry of the row reaches its maximum (False for NaN rows)
    hit = np.zeros((r, m), dtype=bool)
    hit[np.arange(r)[:, None], arg] = True  # m distinct argmaxes hit all m columns
    unique = strict.all(axis=1) & hit.all(axis=1)
    cols = arg
    solve = np.flatnonzero(~unique)
    for k in solve:
        cols[k] = linear_sum_assignment(G[k], maximize=True)[1]
    return cols, len(solve)


class _UserLap:
    """A callable ``lap_solver``: ``fn(cost) -> col_ind`` for a square minimum-cost assignment, output checked.

    ``fn`` gets a read-only view of FAQ's buffer (a copy is the caller's to make) and must return ``col_ind`` of
    shape (m,), each column ``0 … m-1`` once (row ``i`` takes column ``col_ind[i]``).
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, cost: np.ndarray) -> np.ndarray:
        view = cost.view()
        view.flags.writeable = False
        cols = np.asarray(self.fn(view))
        m = len(cost)
        if (cols.shape != (m,) or not np.issubdtype(cols.dtype, np.integer)
                or not np.array_equal(np.sort(cols), np.arange(m))):
            raise ValueError(
                f"`lap_solver` must return the column of each row of an assignment (an int array of shape ({m},) "
                f"holding each of 0..{m - 1} once), got {cols.dtype} of shape {cols.shape}; for example "
                "lap_solver=lambda cost: scipy.optimize.linear_sum_assignment(cost)[1]"
            )
        return cols.astype(np.int64, copy=False)


def _lap_solver(name):
    """The LAP routine for ``lap_solver``: ``lap.lapjvx`` (LAPJV, package ``lapx``), None for scipy's, or a
    :class:`_UserLap` around a callable."""
    if callable(name):
        return _UserLap(name)
    if name == "scipy":
        return None
    try:
        import lap  # the lapx package (module `lap`): LAPJV, several times scipy's speed on FAQ's gradients

        return lap.lapjvx
    except ImportError:
        if name == "lapjv":
            from align._validation import MissingPackageError

            raise MissingPackageError("lap_solver='lapjv' needs the lapx package: pip install lapx "
                                      "(or use lap_solver='scipy')") from None
        return None


def _strict_ties(solver) -> bool:
    """Whether a row-argmin assignment may stand in for the LAP only when it is the unique optimum (strict row
    minima): for scipy's solver and a callable, whose own choice among tied optima is then kept; LAPJV (``lapx``)
    breaks ties its own way anyway, so there distinct argmins suffice."""
    return solver is None or isinstance(solver, _UserLap)


def _solve_min(cost: np.ndarray, solver, projection: bool = False) -> np.ndarray:
    """Columns of a minimum-cost assignment of the square ``cost`` (rows in order).

    ``projection``: ``cost`` is a negated near-permutation ``P``, where ``lap.lapjv`` measured faster than
    ``lapjvx`` (on FAQ's gradients ``lapjvx`` is the faster); both are the same LAPJV.
    """
    if solver is None:
        return linear_sum_assignment(cost)[1]
    if isinstance(solver, _UserLap):
        return solver(cost)
    if projection:
        import lap

        return lap.lapjv(cost, return_cost=False)[0].astype(np.int64)
    rows, cols = solver(cost, return_cost=False)
    out = np.empty(len(cost), dtype=np.int64)
    out[rows] = cols
    return out


def _assign_min_batch(cost: np.ndarray, solver, projection: bool = False) -> tuple[np.ndarray, int]:
    """Minimum-cost assignment of each square matrix of ``cost`` (r, m, m): columns (r, m), and LAPs solved.

    Where the row argmins are distinct (a permutation), every row sits at its minimum, so that assignment is
    optimal, and it is the only optimum unless some row ties; the LAP runs for the other matrices only. With scipy's
    solver or a callable the row minima must also be strict (then it is the unique optimum, exactly what that
    solver would return, so ties still break as it breaks them); LAPJV breaks ties its own way anyway, so there
    distinct argmins suffice (:func:`_strict_ties`).
    """
    r, m, _ = cost.shape
    arg = cost.argmin(axis=2)
    ok = np.zeros((r, m), dtype=bool)
    ok[np.arange(r)[:, None], arg] = True
    ok = ok.all(axis=1)
    if _strict_ties(solver) and ok.any():
        top = np.take_along_axis(cost, arg[:, :, None], axis=2)
        ok &= ((cost <= top).sum(axis=2) == 1).all(axis=1)
    solve = np.flatnonzero(~ok)
    for k in solve:
        arg[k] = _solve_min(cost[k], solver, projection)
    return arg, len(solve)

