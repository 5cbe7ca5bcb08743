"""The solver-side calls the app wing makes, through the solver packages' public APIs only."""
from __future__ import annotations

from typing import Any

import matching

__all__ = ["check_match_params", "evaluate", "method_infos", "min_known_pairs"]

def min_known_pairs(method: str, params: dict) -> int:
    """Check ``method`` and its parameters (names and values, by :func:`matching.check_params`, which runs no
    solver); return the minimum number of known pairs it needs. Raises ``ValueError`` naming the parameter."""
    return int(matching.check_params(method, **params).min_known_pairs)


def check_match_params(method: str, params: dict, dims=((None, None),)) -> int:
    """:func:`min_known_pairs`; ``dims`` (the feature widths) is accepted for the callers' signature only."""
    return min_known_pairs(method, params)


def method_infos() -> list[dict]:
    """One plain dict per matching method (``MethodInfo.to_dict()``: name, what it needs, cost class, params)."""
    return [m.to_dict() for m in matching.list_methods()]


def evaluate(X: Any, Y: Any, method: str, *, n_known: int, n_query: int, n_splits: int,
             known_selection: str = "random", rng: Any = None, query: tuple | None = None, **params):
    """:func:`matching.evaluate` with the known-pair names; ``query=(XQ, YQ)`` draws the queries from another set."""
    kw: dict[str, Any] = {"n_query": n_query, "n_splits": n_splits, "rng": rng, "n_known": n_known,
                          "known_selection": known_selection}
    if query is not None:
        kw["query"] = query
    return matching.evaluate(X, Y, method, **kw, **params)
