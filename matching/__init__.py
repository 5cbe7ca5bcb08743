"""Training-free correspondences between two sets of frozen features.

``match(X, Y, method=…, partial_match=…, rng=…) -> MatchResult`` is the front door; the solvers are also exported
flat (POT style): ``faq`` (seeded FAQ / GOAT on square matrices, restarts batched in torch), ``local_cka`` (its pair
scores alone: ``local_cka_scores``),
``gromov_wasserstein``, ``entropic_gw``, ``fused_gw``, ``blind`` (no known pairs, with a confidence report), ``procrustes``, ``lstsq``, ``relative``, ``asif``;
``kernel_matrix`` builds the kernels; ``evaluate`` runs the base/query protocol of Maniparambil et al. (CVPR 2024);
``quadratic_assignment`` is scipy's call of the same name and options, solved by ``faq``;
``random_doubly_stochastic`` draws the random part of ``faq``'s randomized starts (explicit starts to share).
``list_methods()`` describes every method (:class:`MethodInfo`: what it needs, its cost class, its parameters) and
``check_params(method, **params)`` validates a configuration (names and values) without running anything.

``match(method="faq")`` uses the measured best settings (a start from the known pairs, 2-opt for up to a few hundred
free items; see :func:`matching._api.faq_features`); the low-level QAP solver ``faq(A, B)`` keeps scipy's defaults.
"""
from ._api import local_cka, match
from ._cka import local_cka_scores
from ._blind import BlindResult, blind
from ._evaluate import EvaluationResult, evaluate
from ._faq import faq, random_doubly_stochastic
from ._kernels import KERNELS, kernel_matrix
from ._linear import asif, lstsq, procrustes, relative
from ._ot import entropic_gw, fused_gw, gromov_wasserstein
from ._qap import quadratic_assignment
from ._methods import METHODS, MethodInfo, check_params, list_methods
from ._result import MatchResult

__all__ = [
    "match",
    "list_methods",
    "check_params",
    "MethodInfo",
    "METHODS",
    "MatchResult",
    "BlindResult",
    "blind",
    "evaluate",
    "EvaluationResult",
    "faq",
    "quadratic_assignment",
    "random_doubly_stochastic",
    "local_cka",
    "local_cka_scores",
    "gromov_wasserstein",
    "entropic_gw",
    "fused_gw",
    "procrustes",
    "lstsq",
    "relative",
    "asif",
    "kernel_matrix",
    "KERNELS",
]
