"""A projector fitted from unpaired samples: ``make_projector("blind").fit(X, Y)`` with rows of X and Y NOT paired."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from align._validation import (
    check_array,
    check_choice,
    check_float,
    check_int,
    check_not_constant,
    check_rng,
)

from ._base import Projector, register

log = logging.getLogger(__name__)

__all__ = ["BlindProjector"]


@register("blind", "from UNPAIRED samples: blind matching (no known pairs) then Procrustes or ridge on the pseudo-pairs")
class BlindProjector(Projector):
    r"""A map from X's space into Y's space learned without any known pair.

    ``fit(X, Y)`` takes two *unpaired* sets (row ``i`` of ``X`` need not be row ``i`` of ``Y``; ``n_x`` and ``n_y``
    may differ, ideally samples of the same items or of the same distribution of items). It

    1. finds a one-to-one correspondence between (at most ``max_items`` random rows of) the two sets from structure
       alone: the pipeline of :mod:`align._blind` (rotation starts over the sign patterns of the principal axes,
       entropic Gromov–Wasserstein, 2-opt on the QAP of the cosine kernels, self-learning with Procrustes and
       CSLS), with its confidence report (``confidence_``);
    2. fits the map on those pseudo-pairs, in the centred, unit-norm geometry the matching used:
       ``base="procrustes"``: :math:`W = \mathrm{polar}(\tilde X_P^\top \tilde Y_P)` (semi-orthogonal
       ``(d_x, d_y)``); ``base="linear"``: ridge :math:`W = (\tilde X_P^\top \tilde X_P + \alpha I)^{-1}
       \tilde X_P^\top \tilde Y_P`.

    ``transform(X)`` :math:`= \rho_y\, \mathrm{unit}(\mathrm{unit}(X - \mu_x) W) + \mu_y`, with
    :math:`\rho_y` the mean norm of the centred rows of Y: points land in Y's own space (its mean and spread), so
    they can be compared with Y's raw embeddings by cosine (zero-shot with the stitched pair, retrieval).
    ``transform_y`` is the identity.

    Parameters
    ----------
    base : {"procrustes", "linear"}
    alpha : float
        Ridge penalty of ``base="linear"``.
    max_items : int
        Rows of each side the blind matching runs on (a random subset when there are more); its cost grows as
        :math:`O(n^2 d)` per refinement step.
    n_components, n_candidates, epsilon, gw_max_iter, refine, self_learning
        The settings of the blind matching (:func:`matching.blind` documents them).
    rng : int or None
        Seed of the subsets, the null and the hold-out splits.

    Attributes
    ----------
    pairs_ : int ndarray of shape (k, 2)
        The pseudo-pairs (row of X, row of Y given to ``fit``) the map was fitted on.
    confidence_ : dict
        The blind matching's confidence report; ``confidence_["confident"]`` is its verdict (rule in ``"rule"``).
        A map fitted on a matching the report does not trust is likely meaningless.
    """

    def __init__(self, *, base: str = "procrustes", alpha: float = 1.0, max_items: int = 1000,
                 n_components: int = 8, n_candidates: int = 8, epsilon: float = 0.01, gw_max_iter: int = 100,
                 refine: str = "gw+two_opt", self_learning: bool = True, rng: Any = 0):
        self.base = base
        self.alpha = alpha
        self.max_items = max_items
        self.n_components = n_components
        self.n_candidates = n_candidates
        self.epsilon = epsilon
        self.gw_max_iter = gw_max_iter
        self.refine = refine
        self.self_learning = self_learning
        self.rng = rng

    def fit(self, X: Any, Y: Any) -> BlindProjector:
        import torch

        from align._backend import to_numpy
        from align._blind import blind_align

        check_choice("base", self.base, ("procrustes", "linear"))
        check_choice("refine", self.refine, ("gw+two_opt", "two_opt", "gw", "none"))
        alpha = check_float("alpha", self.alpha, min_value=0.0)
        max_items = check_int("max_items", self.max_items, min_value=3)
        n_components = check_int("n_components", self.n_components, min_value=1, max_value=16)
        n_candidates = check_int("n_candidates", self.n_candidates, min_value=1)
        epsilon = check_float("epsilon", self.epsilon, min_value=0.0, inclusive=False)
        X = check_array(X, "X")
        Y = check_array(Y, "Y")
        check_not_constant(X, "X")
        check_not_constant(Y, "Y")
        if min(X.shape[0], Y.shape[0]) < 3:
            raise ValueError(f"a blind projector needs at least 3 rows on each side, got {X.shape[0]} and "
                             f"{Y.shape[0]}")
        gen = check_rng(self.rng)
        Xn = np.asarray(to_numpy(X), dtype=np.float64)
        Yn = np.asarray(to_numpy(Y), dtype=np.float64)
        mx, my = Xn.mean(axis=0), Yn.mean(axis=0)
        rows_x = np.sort(gen.choice(len(Xn), max_items, replace=False)) if len(Xn) > max_items else np.arange(len(Xn))
        rows_y = np.sort(gen.choice(len(Yn), max_items, replace=False)) if len(Yn) > max_items else np.arange(len(Yn))
        out = blind_align(Xn[rows_x], Yn[rows_y], n_components=n_components, n_candidates=n_candidates,
                          epsilon=epsilon, gw_max_iter=check_int("gw_max_iter", self.gw_max_iter, min_value=1),
                          refine=self.refine, self_learning=bool(self.self_learning), rng=gen)
        matched = np.flatnonzero(out.col >= 0)
        self.pairs_ = np.stack([rows_x[matched], rows_y[out.col[matched]]], axis=1).astype(np.int64)
        self.confidence_ = dict(out.report)
        if not self.confidence_["confident"]:
            log.warning("blind projector: the blind matching is not confident (%s); the map is likely meaningless",
                        self.confidence_["rule"])
        Xs = self._unit(Xn - mx)[self.pairs_[:, 0]]
        Ys = self._unit(Yn - my)[self.pairs_[:, 1]]
        if self.base == "procrustes":
            U, _, Vt = np.linalg.svd(Xs.T @ Ys, full_matrices=False)
            W = U @ Vt
        else:
            W = np.linalg.solve(Xs.T @ Xs + alpha * np.eye(Xs.shape[1]), Xs.T @ Ys)
        self.weights_ = torch.from_numpy(W)
        self.mean_x_ = torch.from_numpy(mx)
        self.mean_y_ = torch.from_numpy(my)
        self.radius_y_ = float(np.linalg.norm(Yn - my, axis=1).mean())
        self.n_features_in_, self.n_features_y_ = Xn.shape[1], Yn.shape[1]
        return self

    @property
    def confident_(self) -> bool:
        """``confidence_["confident"]``."""
        return bool(self.confidence_.get("confident", False))

    @staticmethod
    def _unit(Z):
        return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)

    def _transform_torch(self, X, side):
        import torch

        if side == "y":
            return X
        Z = X.to(torch.float64) - self.mean_x_.to(X.device)
        Z = Z / torch.clamp(torch.linalg.vector_norm(Z, dim=1, keepdim=True), min=1e-12)
        Z = Z @ self.weights_.to(X.device)
        Z = Z / torch.clamp(torch.linalg.vector_norm(Z, dim=1, keepdim=True), min=1e-12)
        return self.radius_y_ * Z + self.mean_y_.to(X.device)

    def _get_state(self):
        import torch

        conf = {k: (v if isinstance(v, (str, bool)) else float(v)) for k, v in self.confidence_.items()}
        return {"weights": self.weights_.cpu(), "mean_x": self.mean_x_.cpu(), "mean_y": self.mean_y_.cpu(),
                "radius_y": self.radius_y_, "pairs": torch.from_numpy(self.pairs_), "confidence": conf}

    def _set_state(self, s):
        self.weights_, self.mean_x_, self.mean_y_ = s["weights"], s["mean_x"], s["mean_y"]
        self.radius_y_ = float(s["radius_y"])
        self.pairs_ = s["pairs"].numpy()
        self.confidence_ = dict(s["confidence"])
