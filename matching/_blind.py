"""Blind matching: a correspondence between two sets of embeddings with no known pair (``match(..., method="blind")``).

The algorithm lives in :mod:`align._blind` (shared with the blind projector); this module validates, converts and
wraps its outcome in a :class:`BlindResult`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from align._validation import check_choice, check_float, check_int, check_rng

from ._result import MatchResult

log = logging.getLogger(__name__)

__all__ = ["blind", "BlindResult"]

REFINE = ("gw+two_opt", "two_opt", "gw", "none")


@dataclass(frozen=True)
class BlindResult(MatchResult):
    """A :class:`MatchResult` with the confidence report of a blind matching (usable wherever a MatchResult is).

    Attributes
    ----------
    confidence : dict
        See :func:`align._blind.confidence_report`: ``confident`` (bool, the rule in ``rule``), ``alignment`` with
        its permutation null (``null_mean``, ``null_std``, ``z``), ``stability`` across starts,
        ``holdout_agreement`` (maps fitted on half of the pairs predict the other half), ``mutual_nn`` and
        ``chance``.
    candidates : ndarray of shape (n_candidates, n_x)
        The refined matching of every start, best first by the objective.
    """

    confidence: dict = field(default_factory=dict, compare=False)
    candidates: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    @property
    def confident(self) -> bool:
        """``confidence["confident"]``: whether the report trusts this matching (see its ``rule``)."""
        return bool(self.confidence.get("confident", False))

    @property
    def match(self) -> MatchResult:
        """The plain :class:`MatchResult` (without the report)."""
        return MatchResult(col_ind=self.col_ind, score=self.score, n_iter=self.n_iter, converged=self.converged,
                           method=self.method, similarity=self.similarity, n_restarts=self.n_restarts)

    def to_dict(self) -> dict[str, Any]:
        """:meth:`MatchResult.to_dict` plus ``"confidence"``."""
        out = super().to_dict()
        out["confidence"] = {k: (v if isinstance(v, (str, bool)) else float(v)) for k, v in self.confidence.items()}
        return out


def blind(X: Any, Y: Any, partial_match: Any = None, *, n_components: int = 8, n_candidates: int = 8,
          epsilon: float = 0.01, gw_max_iter: int = 100, refine: str = "gw+two_opt", self_learning: bool = True,
          csls_k: int = 10, n_null: int = 200, n_holdout: int = 5, rng: Any = None) -> BlindResult:
    r"""Match the rows of ``X`` to the rows of ``Y`` from structure alone, with a confidence report.

    Rows are centred and scaled to unit norm; the objective is the QAP on the cosine kernels,
    :math:`\max_P \mathrm{tr}(K_x P K_y P^\top)`. Stages (details and references in :mod:`align._blind`):

    1. starts: for every sign pattern of the ``n_components`` leading principal axes (``2^k`` starts),
       Procrustes / assignment alternation in those ``k`` dimensions (Wasserstein–Procrustes, Grave et al. 2019);
       the best ``n_candidates`` distinct matchings go on;
    2. refinement of each: entropic Gromov–Wasserstein from it (``epsilon``, on kernels scaled to max 1), then
       2-opt on the QAP (``refine``); the best objective wins;
    3. self-learning (``self_learning``): pairs stable across the starts seed a Procrustes + CSLS dictionary loop
       (VecMap, Artetxe et al. 2018; Conneau et al. 2018), kept only if it raises the QAP objective;
    4. the confidence report (:class:`BlindResult`).

    Parameters
    ----------
    X : array or tensor of shape (n_x, d_x)
    Y : array or tensor of shape (n_y, d_y)
    partial_match : None
        Must be empty: with known pairs use ``method="faq"``.
    n_components : int, default 8
        ``k``: principal axes whose sign patterns are enumerated (``2^k`` starts, at most 256 run).
    n_candidates : int, default 8
        Distinct starting matchings refined.
    epsilon : float, default 0.01
        Entropic regularisation of the GW refinement.
    gw_max_iter : int, default 100
    refine : {"gw+two_opt", "two_opt", "gw", "none"}
    self_learning : bool, default True
    csls_k : int, default 10
        Neighbourhood of CSLS.
    n_null, n_holdout : int
        Random matchings of the objective's null; random halvings of the hold-out agreement.
    rng : int, Generator or None
        Randomness of the null and the hold-out splits (and of the starts when there are more than 256 patterns);
        the matching itself is deterministic for fixed inputs.

    Returns
    -------
    BlindResult
        ``col_ind`` (``-1`` for rows left unmatched when ``n_x > n_y``), ``score`` the QAP objective, and
        ``confidence``. Accuracy on real data and how the report separates success from failure:
        ``benchmarks/README.md`` ("Blind matching").
    """
    from align._backend import to_numpy
    from align._blind import blind_align

    if partial_match is not None and len(partial_match):
        raise ValueError("method 'blind' uses no known pairs; pass partial_match=None, or use method='faq' with the "
                         "known pairs as seeds")
    n_components = check_int("n_components", n_components, min_value=1, max_value=16)
    n_candidates = check_int("n_candidates", n_candidates, min_value=1)
    epsilon = check_float("epsilon", epsilon, min_value=0.0, inclusive=False)
    gw_max_iter = check_int("gw_max_iter", gw_max_iter, min_value=1)
    check_choice("refine", refine, REFINE)
    csls_k = check_int("csls_k", csls_k, min_value=1)
    n_null = check_int("n_null", n_null, min_value=2)
    n_holdout = check_int("n_holdout", n_holdout, min_value=1)
    gen = check_rng(rng)
    Xn = np.asarray(to_numpy(X), dtype=np.float64)
    Yn = np.asarray(to_numpy(Y), dtype=np.float64)
    if min(len(Xn), len(Yn)) < 3:
        raise ValueError(f"method 'blind' needs at least 3 rows on each side, got {len(Xn)} and {len(Yn)}")
    out = blind_align(Xn, Yn, n_components=n_components, n_candidates=n_candidates, epsilon=epsilon,
                      gw_max_iter=gw_max_iter, refine=refine, self_learning=bool(self_learning), csls_k=csls_k,
                      n_null=n_null, n_holdout=n_holdout, rng=gen)
    log.info("blind: n_x=%d n_y=%d confident=%s stability=%.2f holdout=%.2f", len(Xn), len(Yn),
             out.report["confident"], out.report["stability"], out.report["holdout_agreement"])
    return BlindResult(col_ind=out.col, score=float(out.objective), n_iter=int(out.n_iter), converged=True,
                       method="blind", similarity=None, n_restarts=len(out.candidates), confidence=out.report,
                       candidates=np.stack(out.candidates))
