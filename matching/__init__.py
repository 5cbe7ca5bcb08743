"""Training-free correspondences between two sets of frozen features.

``match(X, Y, method=…, partial_match=…, rng=…) -> MatchResult`` is the front door; the solvers are also exported
flat (POT style): ``faq`` (seeded FAQ / GOAT on square matrices, restarts batched in torch), ``local_cka``,
``gromov_wasserstein``, ``entropic_gw``, ``fused_gw``, ``blind`` (no known pairs, with a confidence report), ``procrustes``, ``lstsq``, ``relative``, ``asif``;
``kernel_matrix`` builds the kernels; ``evaluate`` runs the base/query protocol of Maniparambil et al. (CVPR 2024).
"""
from ._api import list_methods, local_cka, match
from ._blind import BlindResult, blind
from ._evaluate import EvaluationResult, evaluate
from ._faq import faq
from ._kernels import KERNELS, kernel_matrix
from ._linear import asif, lstsq, procrustes, relative
from ._ot import entropic_gw, fused_gw, gromov_wasserstein
from ._result import MatchResult

__all__ = [
    "match",
    "list_methods",
    "MatchResult",
    "BlindResult",
    "blind",
    "evaluate",
    "EvaluationResult",
    "faq",
    "local_cka",
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
