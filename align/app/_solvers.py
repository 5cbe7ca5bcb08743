"""The few solver-side calls whose public names are landing in the solver packages now; each goes through the
package's public API when it has it.

Temporary bridge: ``matching.check_params``, ``matching.list_methods() -> list[MethodInfo]`` and
``matching.evaluate(n_known=, known_selection=, query=)`` are being added by matching's owners. Until they land,
the fallbacks below keep today's behaviour (the one private import is a listed exception of tests/test_imports.py);
delete them once the public names exist.
"""
from __future__ import annotations

import inspect
from typing import Any

import matching

__all__ = ["QUERY_IN_EVALUATE", "check_match_params", "evaluate", "method_infos", "min_known_pairs"]


def min_known_pairs(method: str, params: dict) -> int:
    """Check ``method`` and its parameters (names, and values where matching checks them); return the minimum number
    of known pairs it needs. Raises ``ValueError`` (or a subclass) naming the parameter."""
    check = getattr(matching, "check_params", None)
    if check is not None:
        return int(check(method, **params).min_known_pairs)
    from matching._api import check_method_params  # known exception until matching.check_params lands

    return int(check_method_params(method, params)[1])


_TRIED: dict[tuple, str | None] = {}  # fallback stand-in runs already done in this process -> error or None


def check_match_params(method: str, params: dict, dims=((None, None),)) -> int:
    """Check a matching method's parameter names and values; return the minimum number of known pairs it needs.

    With :func:`matching.check_params` the values are checked by matching itself. Without it (until it lands) the
    method is run once on a small random stand-in of each pair's widths ``dims`` (the old preflight), so a value it
    rejects still fails before any work.
    """
    check = getattr(matching, "check_params", None)
    if check is not None:
        return int(check(method, **params).min_known_pairs)
    need = min_known_pairs(method, params)
    import json
    import warnings

    import numpy as np

    for dx, dy in dims:
        k, dx, dy = max(2, need), dx or 8, dy or 8
        token = (method, json.dumps(params, sort_keys=True, default=str), k, dx, dy)
        if token not in _TRIED:
            pm = np.stack([np.arange(k), np.arange(k)], axis=1)
            gen = np.random.default_rng(0)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    matching.match(gen.normal(size=(k + 6, dx)), np.random.default_rng(1).normal(size=(k + 6, dy)),
                                   method, partial_match=pm, rng=0, **params)
                _TRIED[token] = None
            except (TypeError, ValueError) as exc:
                _TRIED[token] = str(exc).splitlines()[0]
        if _TRIED[token] is not None:
            raise ValueError(_TRIED[token])
    return need


def method_infos() -> list[dict]:
    """One plain dict per matching method (``name``, what it needs, …): ``MethodInfo.to_dict()`` when matching
    returns info objects, else the names with their minimum number of known pairs."""
    out = []
    for m in matching.list_methods():
        if hasattr(m, "to_dict"):
            out.append(m.to_dict())
        else:
            out.append({"name": m, "min_known_pairs": min_known_pairs(m, {})})
    return out


# read once, from the real function (tests may swap matching.evaluate for a counting wrapper)
_KNOWN_NAMES = "n_known" in inspect.signature(matching.evaluate).parameters
#: Whether matching.evaluate draws queries from another feature set itself (``query=(XQ, YQ)``).
QUERY_IN_EVALUATE = "query" in inspect.signature(matching.evaluate).parameters


def evaluate(X: Any, Y: Any, method: str, *, n_known: int, n_query: int, n_splits: int,
             known_selection: str = "random", rng: Any = None, query: tuple | None = None, **params):
    """:func:`matching.evaluate` with the known-pair names (``n_known``, ``known_selection``) and, when given,
    queries from another feature set (``query=(XQ, YQ)``)."""
    kw: dict[str, Any] = {"n_query": n_query, "n_splits": n_splits, "rng": rng}
    if _KNOWN_NAMES:
        kw.update(n_known=n_known, known_selection=known_selection)
    else:
        kw.update(n_seeds=n_known, seed_selection=known_selection)
    if query is not None:  # only when given, so an evaluate without `query` still serves the plain protocol
        kw["query"] = query
    return matching.evaluate(X, Y, method, **kw, **params)
