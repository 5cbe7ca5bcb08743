"""The method table: each matcher's function, what it needs, its cost class and its declared parameter checks.

One table (:data:`_TABLE`) gives :data:`METHODS`, :func:`list_methods` (``list[MethodInfo]``) and
:func:`check_params`, which validates parameter names *and values* at call time (as the similarity registry does),
so a configuration can be checked without running a solver on stand-in data.
"""
from __future__ import annotations

import inspect
import numbers
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from align._validation import InputTypeError, check_choice, check_float, check_int, is_torch

from ._kernels import KERNELS

__all__ = ["MethodInfo", "METHODS", "list_methods", "check_params", "check_method_params"]


@dataclass(frozen=True)
class MethodInfo:
    """What :func:`matching.list_methods` shows for one matcher.

    Attributes
    ----------
    name : str
        The ``method=`` name of :func:`matching.match`.
    min_known_pairs : int
        Fewest known pairs (``partial_match`` rows) the method accepts.
    needs : tuple of str
        What it uses: ``"known pairs"`` (anchors), ``"kernels"`` (the structure of each space), ``"features"``
        (the coordinates of each space, through a map fitted on the known pairs).
    cost : str
        Cost class in the number of items ``n``, width ``d`` and known pairs ``k``.
    description : str
        One line.
    params : mapping
        Keyword parameters with their defaults.
    stochastic : bool
        Whether ``rng`` changes the result (:func:`matching.match` passes it only to these).
    """

    name: str
    min_known_pairs: int
    needs: tuple[str, ...]
    cost: str
    description: str
    params: Mapping[str, Any] = field(default_factory=dict)
    stochastic: bool = False

    def to_dict(self) -> dict:
        return {"name": self.name, "min_known_pairs": self.min_known_pairs, "needs": list(self.needs),
                "cost": self.cost, "description": self.description, "stochastic": self.stochastic,
                "params": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                           for k, v in self.params.items()}}


# -- declared value checks: name -> (value -> normalised value) -------------------------------------------------

def _bool(name):
    def check(v):
        if not isinstance(v, (bool,)) and not (hasattr(v, "dtype") and getattr(v, "dtype", None) == bool):
            raise InputTypeError(f"`{name}` must be True or False, got {type(v).__name__} {v!r}")
        return bool(v)
    return check


def _int(name, lo):
    return lambda v: check_int(name, v, min_value=lo)


def _opt_int(name, lo):
    return lambda v: None if v is None else check_int(name, v, min_value=lo)


def _float(name, lo, inclusive=True, hi=None):
    return lambda v: check_float(name, v, min_value=lo, max_value=hi, inclusive=inclusive)


def _opt_pos_float(name):
    return lambda v: None if v is None else check_float(name, v, min_value=0.0, inclusive=False)


def _choice(name, valid):
    return lambda v: check_choice(name, v, valid)


def _kernel(v):
    return check_choice("kernel", v, KERNELS)


def _low_rank(v):
    if v not in ("auto", True, False) or isinstance(v, numbers.Number) and not isinstance(v, bool):
        raise ValueError(f"`low_rank` must be 'auto', True or False, got {v!r}")
    return v


def _faq_init(v):
    if isinstance(v, str):
        return check_choice("init", v, ("auto", "seeds", "barycenter", "randomized"))
    import numpy as np

    if not (is_torch(v) or isinstance(v, np.ndarray)) or v.ndim not in (2, 3):
        raise InputTypeError(f"`init` must be 'auto', 'seeds', 'barycenter', 'randomized' or an array of shape (m, m) "
                             f"or (n_init, m, m), got {type(v).__name__}")
    return v


def _lstsq_alpha(v):
    if isinstance(v, str):
        return check_choice("alpha", v, ("auto",))
    return check_float("alpha", v, min_value=0.0)


def _two_opt(v):
    if isinstance(v, str):
        return check_choice("two_opt", v, ("auto",))
    return _bool("two_opt")(v)


def _lap_solver(v):
    return v if callable(v) else check_choice("lap_solver", v, ("auto", "lapjv", "scipy"))


def _any(v):
    return v


_CHECKS: dict[str, Callable] = {
    "kernel": _kernel, "device": _any, "dtype": _any,
    # faq
    "low_rank": _low_rank, "n_init": _int("n_init", 1), "init": _faq_init, "max_iter": _int("max_iter", 1),
    "tol": _float("tol", 0.0), "transport": _bool("transport"),
    "transport_reg": _float("transport_reg", 0.0, inclusive=False),
    "transport_max_iter": _int("transport_max_iter", 1),
    "transport_tol": _float("transport_tol", 0.0, inclusive=False), "two_opt": _two_opt,
    "two_opt_max_iter": _int("two_opt_max_iter", 0), "batch_size": _opt_int("batch_size", 1),
    "seeds_temperature": _float("seeds_temperature", 0.0, inclusive=False),
    "lap_solver": _lap_solver, "memory_budget": _opt_int("memory_budget", 1),
    # OT
    "epsilon": _opt_pos_float("epsilon"),
    # anchors
    "n_refine": _int("n_refine", 0), "topk": _opt_int("topk", 1), "power": _float("power", 0.0, inclusive=False),
}
# parameters whose check differs by method
_METHOD_CHECKS: dict[tuple[str, str], Callable] = {
    ("gw", "init"): _choice("init", ("entropic", "product")),
    ("fused_gw", "alpha"): _float("alpha", 0.0, hi=1.0),
    ("lstsq", "alpha"): _lstsq_alpha,
    ("blind", "n_components"): _int("n_components", 1),
    ("blind", "n_candidates"): _int("n_candidates", 1),
    ("blind", "epsilon"): _float("epsilon", 0.0, inclusive=False),
    ("blind", "gw_max_iter"): _int("gw_max_iter", 0),
    ("blind", "refine"): _choice("refine", ("gw+two_opt", "two_opt", "gw", "none")),
    ("blind", "self_learning"): _bool("self_learning"),
    ("blind", "csls_k"): _int("csls_k", 1),
    ("blind", "n_null"): _int("n_null", 1),
    ("blind", "n_holdout"): _int("n_holdout", 1),
}


@dataclass(frozen=True)
class _Spec:
    info: MethodInfo
    func: Callable
    checks: Mapping[str, Callable]


def _keyword_params(func: Callable) -> dict[str, Any]:
    return {p.name: p.default for p in inspect.signature(func).parameters.values()
            if p.kind == p.KEYWORD_ONLY and not p.name.startswith("_") and p.name != "rng"}


def _build() -> dict[str, _Spec]:
    from ._api import faq_features, local_cka
    from ._blind import blind
    from ._faq import faq
    from ._linear import asif, lstsq, procrustes, relative
    from ._ot import entropic_gw, fused_gw, gromov_wasserstein

    faq_params = {**{k: v for k, v in _keyword_params(faq).items()}, **_keyword_params(faq_features)}
    rows = [
        # name, function, min known pairs, needs, cost, description, params, stochastic
        ("faq", faq_features, 0, ("kernels",),
         "O(n^2 d) per iteration for linear/cosine kernels with d < 0.6 n, else O(n^3); 2-opt O(n^3) per swap",
         "seeded graph matching of the two kernel matrices (FAQ / GOAT), known pairs optional", faq_params, True),
        ("local_cka", local_cka, 2, ("known pairs", "kernels"), "O(n^2 k) scores + one O(n^3) assignment",
         "each pair scored by the CKA of the known pairs plus that pair", None, False),
        ("gw", gromov_wasserstein, 0, ("kernels",), "O(n^3) per iteration (entropic start, then exact steps)",
         "exact Gromov-Wasserstein from the entropic coupling: polishes entropic_gw's objective", None, False),
        ("entropic_gw", entropic_gw, 0, ("kernels",), "O(n^3) per iteration",
         "entropic Gromov-Wasserstein coupling, then an assignment", None, False),
        ("fused_gw", fused_gw, 1, ("known pairs", "kernels"), "O(n^3) per iteration",
         "fused Gromov-Wasserstein with the known pairs as the linear term", None, False),
        ("procrustes", procrustes, 2, ("known pairs", "features"), "O(k d^2 + d^3) fit + one O(n^3) assignment",
         "orthogonal map fitted on the known pairs, then nearest assignment", None, False),
        ("lstsq", lstsq, 2, ("known pairs", "features"), "O(k^2 d + n d^2) fit + one O(n^3) assignment",
         "ridge map fitted on the known pairs, then nearest assignment", None, False),
        ("relative", relative, 2, ("known pairs", "features"), "O(n^2 k) + one O(n^3) assignment",
         "relative representations over the known pairs as anchors", None, False),
        ("asif", asif, 2, ("known pairs", "features"), "O(n^2 k) + one O(n^3) assignment",
         "ASIF: relative representations on uncentred features, top-k kept, raised to a power", None, False),
        ("blind", blind, 0, ("features",), "O(2^k n^2 + n_candidates (GW + 2-opt: O(n^3)))",
         "no known pairs: structure-only starts, GW + 2-opt, self-learning, and a confidence report", None, True),
    ]
    table = {}
    for name, func, min_k, needs, cost, desc, params, stochastic in rows:
        params = _keyword_params(func) if params is None else params
        checks = {p: _METHOD_CHECKS.get((name, p), _CHECKS.get(p)) for p in params}
        missing = [p for p, c in checks.items() if c is None]
        if missing:  # a new parameter without a declared check is a bug of this table
            raise RuntimeError(f"matching method {name!r}: no declared check for {missing}")
        info = MethodInfo(name=name, min_known_pairs=min_k, needs=needs, cost=cost, description=desc,
                          params=types.MappingProxyType(dict(params)), stochastic=stochastic)
        table[name] = _Spec(info=info, func=func, checks=types.MappingProxyType(checks))
    return table


METHODS = ("faq", "local_cka", "gw", "entropic_gw", "fused_gw", "procrustes", "lstsq", "relative", "asif", "blind")
_TABLE: dict[str, _Spec] = {}


def _spec(method: str) -> _Spec:
    if not _TABLE:
        _TABLE.update(_build())
        assert tuple(_TABLE) == METHODS
    check_choice("method", method, METHODS)
    return _TABLE[method]


def list_methods() -> list[MethodInfo]:
    """The matchers :func:`matching.match` accepts, in table order, as :class:`MethodInfo` (``.name``, ``.needs``…)."""
    return [_spec(m).info for m in METHODS]


def check_params(method: str, **params) -> MethodInfo:
    """Check a method name and its parameters, names and values; return its :class:`MethodInfo`.

    Raises ``ValueError`` (or :class:`align._validation.InputTypeError` for wrong types) with a one-line message:
    an unknown name lists the valid ones, a bad value says what is allowed. Runs no solver. ``rng`` is accepted
    for every method (ignored by the deterministic ones).
    """
    spec = _spec(method)
    unknown = sorted(set(params) - set(spec.checks) - {"rng"})
    if unknown:
        raise InputTypeError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for method {method!r}; valid: "
                             f"{', '.join(spec.checks)}")
    for name, value in params.items():
        if name != "rng":
            spec.checks[name](value)
    return spec.info


def check_method_params(method: str, params: dict) -> tuple[Callable, int]:
    """Legacy form of :func:`check_params` for existing callers: returns (function, minimum number of known pairs).

    Prefer :func:`check_params`, which returns a :class:`MethodInfo`.
    """
    info = check_params(method, **params)
    return _spec(method).func, info.min_known_pairs
