"""The metric table: each metric's implementation, parameters, kind and declared invariances."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._validation import InputTypeError, check_choice, check_float, check_int
from . import _kernel, _minibatch, _moments, _neighbors
from . import _rsa as _rsa_module

INVARIANCES = ("rotation", "isotropic_scale", "translation", "invertible_linear")


@dataclass(frozen=True)
class MetricInfo:
    """What :func:`align.list_metrics` shows for one metric.

    ``invariances`` lists the transformations of either input (applied to all rows) that leave the value
    unchanged with the default parameters; ``kind`` says whether larger means more similar ("similarity") or
    less similar ("distance").
    """

    name: str
    kind: str
    invariances: tuple[str, ...]
    symmetric: bool
    description: str
    reference: str
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "invariances": list(self.invariances),
            "symmetric": self.symmetric, "description": self.description, "reference": self.reference,
            "defaults": dict(self.defaults),
        }


@dataclass(frozen=True)
class _Spec:
    info: MetricInfo
    compute: Callable  # (X, Y, device, batch_size, **params) -> (value, settings)
    check: Callable  # (params: dict) -> dict of normalised params
    min_rows: int = 2
    # Moment-based fast path (permutation null without re-reading X): value from Moments, and when it applies.
    from_moments: Callable | None = None
    higher: bool = False
    uses_features: Callable | None = None  # (n, dx, dy, params) -> bool


def features_route(n: int, dx: int, dy: int) -> bool:
    """Feature-space moments cost n (dx^2 + dy^2 + dx dy); the Gram route n^2 (dx + dy). Pick the cheaper."""
    return n * (dx + dy) >= dx * dx + dy * dy + dx * dy


# -- implementations with the (X, Y, device, batch_size, **params) signature --------------------------------------

def _linear_cka(X, Y, device, batch_size):
    n, dx = X.shape
    if features_route(n, dx, Y.shape[1]):
        return _moments.linear_cka_from_moments(_moments.accumulate(X, Y, device, batch_size=batch_size))
    return _kernel.linear_gram_value(X, Y, device, unbiased=False, batch_size=batch_size)


def _unbiased_cka(X, Y, device, batch_size, kernel="linear", sigma="median", median_scale=1.0):
    n, dx = X.shape
    if kernel == "rbf":
        return _kernel.rbf_cka_value(X, Y, device, sigma=sigma, median_scale=median_scale, unbiased=True,
                                     batch_size=batch_size)
    if features_route(n, dx, Y.shape[1]):
        return _moments.unbiased_cka_from_moments(
            _moments.accumulate(X, Y, device, batch_size=batch_size, higher=True))
    return _kernel.linear_gram_value(X, Y, device, unbiased=True, batch_size=batch_size)


def _rbf_cka(X, Y, device, batch_size, sigma="median", median_scale=1.0):
    return _kernel.rbf_cka_value(X, Y, device, sigma=sigma, median_scale=median_scale, unbiased=False,
                                 batch_size=batch_size)


def _minibatch_cka(X, Y, device, batch_size, minibatch_size=1024, rng=None):
    from .._validation import check_rng

    rng = None if rng is None else check_rng(rng)
    return _minibatch.minibatch_cka_value(X, Y, device, batch_size=minibatch_size, rng=rng,
                                        dx_dy=(X.shape[1], Y.shape[1]))


def _mutual_knn(X, Y, device, batch_size, k=10, normalize=True):
    return _neighbors.mutual_knn_value(X, Y, device, k=k, normalize=normalize, batch_size=batch_size)


def _cknna(X, Y, device, batch_size, k=10, normalize=True):
    return _neighbors.cknna_value(X, Y, device, k=k, normalize=normalize, batch_size=batch_size)


def _cycle_knn(X, Y, device, batch_size, k=10, normalize=True):
    return _neighbors.cycle_knn_value(X, Y, device, k=k, normalize=normalize, batch_size=batch_size)


def _svcca(X, Y, device, batch_size, variance=0.99, n_components=None):
    m = _moments.accumulate(X, Y, device, batch_size=batch_size)
    return _moments.svcca_from_moments(m, variance=variance, n_components=n_components)


def _pwcca(X, Y, device, batch_size):
    return _moments.pwcca_from_moments(_moments.accumulate(X, Y, device, batch_size=batch_size))


def _procrustes(X, Y, device, batch_size, form="angular"):
    n, dx = X.shape
    if features_route(n, dx, Y.shape[1]):
        return _moments.procrustes_from_moments(_moments.accumulate(X, Y, device, batch_size=batch_size), form=form)
    import math

    import torch

    zx = _kernel.centred(X, device, batch_size, check="X")
    zy = _kernel.centred(Y, device, batch_size, check="Y")
    rx = torch.linalg.qr(zx.T, mode="r")[1]  # zx^T = Q R  =>  zx^T zy = Qx Rx Ry^T Qy^T
    ry = torch.linalg.qr(zy.T, mode="r")[1]
    nuc = float(torch.linalg.svdvals(rx @ ry.T).sum())
    cos = nuc / math.sqrt(float((zx * zx).sum()) * float((zy * zy).sum()))
    return _moments.procrustes_value(cos, form), {"form": form, "route": "qr"}


def _rsa(X, Y, device, batch_size, dissimilarity="correlation", correlation="spearman", max_pairs=50_000_000):
    return _rsa_module.rsa_value(X, Y, device, dissimilarity=dissimilarity, correlation=correlation,
                          max_pairs=max_pairs, batch_size=batch_size)


# -- parameter checks ------------------------------------------------------------------------------------------

def _check_sigma(p):
    s = p.get("sigma", "median")
    if isinstance(s, str):
        check_choice("sigma", s, ("median", "platonic"))
    else:
        p["sigma"] = check_float("sigma", s, min_value=0.0, inclusive=False)
    p["median_scale"] = check_float("median_scale", p.get("median_scale", 1.0), min_value=0.0, inclusive=False)
    return p


def _check_k(p):
    p["k"] = check_int("k", p.get("k", 10), min_value=1)
    if not isinstance(p.get("normalize", True), bool):
        raise InputTypeError(f"`normalize` must be True or False, got {p['normalize']!r}")
    return p


def _check_unbiased(p):
    if check_choice("kernel", p.get("kernel", "linear"), ("linear", "rbf")) == "linear":
        p.pop("sigma", None)  # a bandwidth means nothing for the linear kernel; keep it out of the settings
        p.pop("median_scale", None)
        return p
    return _check_sigma(p)


def _check_minibatch(p):
    p["minibatch_size"] = check_int("minibatch_size", p.get("minibatch_size", 1024), min_value=4)
    return p


def _check_svcca(p):
    p["variance"] = check_float("variance", p.get("variance", 0.99), min_value=0.0, max_value=1.0)
    if p["variance"] <= 0:
        raise ValueError(f"`variance` must be in (0, 1], got {p['variance']}")
    if p.get("n_components") is not None:
        p["n_components"] = check_int("n_components", p["n_components"], min_value=1)
    return p


def _check_procrustes(p):
    check_choice("form", p.get("form", "angular"), ("angular", "euclidean"))
    return p


def _check_rsa(p):
    check_choice("dissimilarity", p.get("dissimilarity", "correlation"), ("correlation", "euclidean", "cosine"))
    check_choice("correlation", p.get("correlation", "spearman"), ("spearman", "pearson"))
    p["max_pairs"] = check_int("max_pairs", p.get("max_pairs", 50_000_000), min_value=1)
    return p


def _no_check(p):
    return p


def _defaults(fn) -> dict:
    sig = inspect.signature(fn)
    return {k: v.default for k, v in list(sig.parameters.items())[4:]}


_ROT_SCALE_TRANS = ("rotation", "isotropic_scale", "translation")


def _spec(name, fn, check, kind, inv, symmetric, description, reference, **kw) -> _Spec:
    return _Spec(MetricInfo(name, kind, tuple(inv), symmetric, description, reference, _defaults(fn)), fn, check,
                 **kw)


SPECS: dict[str, _Spec] = {
    s.info.name: s
    for s in (
        _spec("linear_cka", _linear_cka, _no_check, "similarity", _ROT_SCALE_TRANS, True,
              "Linear CKA, ||Xc'Yc||_F^2 / (||Xc'Xc||_F ||Yc'Yc||_F); feature-space moments when n > d.",
              "Kornblith et al. 2019",
              from_moments=_moments.linear_cka_from_moments, uses_features=lambda n, dx, dy, p: features_route(n, dx, dy)),
        _spec("rbf_cka", _rbf_cka, _check_sigma, "similarity", _ROT_SCALE_TRANS, True,
              "CKA with Gaussian kernels; bandwidth sigma = median_scale * sqrt(median squared distance) by default, "
              "'platonic' = 1.0 (Huh et al.'s code), or a number. Isotropic-scale invariance holds for the median "
              "bandwidth only.",
              "Kornblith et al. 2019"),
        _spec("unbiased_cka", _unbiased_cka, _check_unbiased, "similarity", _ROT_SCALE_TRANS, True,
              "CKA from Song et al.'s unbiased HSIC estimator (needs n >= 4); near 0 for independent data at any n.",
              "Song et al. 2012; Nguyen et al. 2021", min_rows=4,
              from_moments=_moments.unbiased_cka_from_moments, higher=True,
              uses_features=lambda n, dx, dy, p: p.get("kernel", "linear") == "linear" and features_route(n, dx, dy)),
        _spec("minibatch_cka", _minibatch_cka, _check_minibatch, "similarity", _ROT_SCALE_TRANS, True,
              "Unbiased HSIC averaged over minibatches of minibatch_size rows; streams a memory-mapped file.",
              "Nguyen, Raghu & Kornblith 2021", min_rows=4),
        _spec("mutual_knn", _mutual_knn, _check_k, "similarity", ("rotation", "isotropic_scale"), True,
              "Mean fraction of shared k nearest neighbours (cosine similarity when normalize=True).",
              "Huh et al. 2024"),
        _spec("cknna", _cknna, _check_k, "similarity", ("rotation", "isotropic_scale"), False,
              "Unbiased CKA of the inner-product kernels restricted to mutual k-nearest-neighbour pairs (the "
              "Platonic code's formula, whose 1'AB1 term makes it slightly asymmetric).",
              "Huh et al. 2024", min_rows=4),
        _spec("cycle_knn", _cycle_knn, _check_k, "similarity", ("rotation", "isotropic_scale"), False,
              "Fraction of items reached again by a k-NN step in Y followed by a k-NN step in X.",
              "Huh et al. 2024"),
        _spec("svcca", _svcca, _check_svcca, "similarity", _ROT_SCALE_TRANS, True,
              "Mean canonical correlation after keeping the principal directions that explain `variance`.",
              "Raghu et al. 2017",
              from_moments=lambda m, variance=0.99, n_components=None: _moments.svcca_from_moments(
                  m, variance=variance, n_components=n_components),
              uses_features=lambda n, dx, dy, p: True),
        _spec("pwcca", _pwcca, _no_check, "similarity", ("translation", "isotropic_scale"), False,
              "Canonical correlations weighted by how much of the (fewer-dimensional) side each variate explains.",
              "Morcos, Raghu & Bengio 2018",
              from_moments=_moments.pwcca_from_moments, uses_features=lambda n, dx, dy, p: True),
        _spec("procrustes", _procrustes, _check_procrustes, "distance", _ROT_SCALE_TRANS, True,
              "Orthogonal Procrustes shape distance of centred, unit-norm X and Y: arccos(||Xc'Yc||_* / "
              "(||Xc|| ||Yc||)) (form='angular') or sqrt(2 - 2 ||Xc'Yc||_* / (||Xc|| ||Yc||)) (form='euclidean').",
              "Williams et al. 2021; Ding et al. 2021",
              from_moments=lambda m, form="angular": _moments.procrustes_from_moments(m, form=form),
              uses_features=lambda n, dx, dy, p: features_route(n, dx, dy)),
        _spec("rsa", _rsa, _check_rsa, "similarity", ("isotropic_scale",), True,
              "Spearman correlation of the representational dissimilarity matrices (1 - Pearson r between items "
              "by default); O(n^2) memory.",
              "Kriegeskorte et al. 2008", min_rows=3),
    )
}


def get_spec(metric: Any) -> _Spec:
    return SPECS[check_choice("metric", metric, SPECS)]


def bind_params(spec: _Spec, params: Mapping[str, Any]) -> dict:
    """Check parameter names (listing the valid ones) and values; fill defaults."""
    valid = spec.info.defaults
    unknown = sorted(set(params) - set(valid))
    if unknown:
        names = ", ".join(map(repr, valid)) or "none besides batch_size and device"
        raise InputTypeError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for metric {spec.info.name!r}; "
                             f"its parameters are {names}")
    p = {**valid, **params}
    return spec.check(p)
