"""Subspace selection: pick the shared dimension k by held-out matching or retrieval, in front of any kind.

"Escaping Plato's Cave" (Hadgi et al. 2025) shows that 3D and text encoders align much better in a well-chosen
low-dimensional subspace (e.g. CCA), but chooses the dimension by hand. :class:`SubspaceProjector` chooses it: it
holds out part of the pairs, reduces both sides to each candidate k (CCA's shared space, or each side's own PCA),
fits the downstream projector on the rest, scores held-out R@1 (or one-to-one matching accuracy), keeps the best k
and refits everything on all pairs.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from align._validation import check_choice, check_float, check_int, check_paired

from ._base import _REGISTRY, Projector, make_projector, register

log = logging.getLogger(__name__)


def _default_grid(k_max: int) -> list[int]:
    grid, k = [], 2
    while k < k_max:
        grid.append(k)
        k *= 2
    return grid + [k_max]


@register("subspace", "choose a CCA/PCA subspace dimension k by held-out retrieval or matching, then any kind")
class SubspaceProjector(Projector):
    r"""Reduce both sides to a k-dimensional subspace chosen on held-out pairs, then apply a projector there.

    For each candidate :math:`k`, both sides are reduced (``method="cca"``: the first :math:`k` canonical
    directions, already a shared space; ``method="pca"``: each side's top-:math:`k` principal components), the
    downstream ``projector`` is fitted on the training part, and held-out pairs are scored by mean R@1 of both
    retrieval directions (``criterion="retrieval"``) or by one-to-one assignment accuracy (``"matching"``, Hungarian
    algorithm on cosine similarity). The best :math:`k` (smallest on ties) wins and everything is refitted on all pairs.

    Parameters
    ----------
    method : {"cca", "pca"}
    n_components : int or sequence of int, optional
        Candidate dimensions; default 2, 4, 8, … up to ``min(d_x, d_y)``. A single int skips the search.
    projector : str, optional
        The kind applied in the subspace; default none for CCA (its space is shared) and ``"procrustes"`` for PCA.
    projector_params : dict, optional
        Parameters of that kind.
    criterion : {"retrieval", "matching"}
    val_fraction : float
        Share of pairs held out for the choice.
    reg : float
        CCA ridge (keeps the covariance invertible).
    rng : int
        Seed of the split.

    Attributes
    ----------
    n_components_ : int
        The chosen k.
    scores_ : dict
        Held-out score of every candidate k.
    """

    def __init__(
        self,
        *,
        method: str = "cca",
        n_components: int | Sequence[int] | None = None,
        projector: str | None = None,
        projector_params: dict | None = None,
        criterion: str = "retrieval",
        val_fraction: float = 0.2,
        reg: float = 1e-4,
        rng: int = 0,
    ):
        self.method = method
        self.n_components = n_components
        self.projector = projector
        self.projector_params = projector_params
        self.criterion = criterion
        self.val_fraction = val_fraction
        self.reg = reg
        self.rng = rng

    # ---- helpers -------------------------------------------------------------------------------------------------
    def _basis(self, X, Y, k_max: int):
        """Means and (d, k_max) bases of both sides, float64 torch."""
        import torch

        from ._linear import CCAProjector, moments

        if self.method == "cca":
            cca = CCAProjector(n_components=k_max, reg=self.reg).fit(X, Y)
            return cca.mean_x_, cca.x_weights_, cca.mean_y_, cca.y_weights_
        mx, my, sxx, _, syy = moments(X, Y)
        out = []
        for mu, s in ((mx, sxx), (my, syy)):
            _, evecs = torch.linalg.eigh(s)
            comps = evecs.flip(1)[:, :k_max]
            from ._linear import _svd_flip

            comps, _ = _svd_flip(comps, comps)
            out += [mu, comps]
        return tuple(out)

    @staticmethod
    def _reduce(A, mu, basis, k):
        import torch

        from align._backend import as_torch

        return ((as_torch(A, dtype=torch.float64).to(basis.device) - mu) @ basis[:, :k]).cpu().numpy()

    def _inner(self):
        kind = self.projector
        if kind is None:
            kind = "identity" if self.method == "cca" else "procrustes"
        if kind == "identity":
            return None
        if kind == "subspace":
            raise ValueError("`projector` cannot be 'subspace' itself; name the kind to apply inside the subspace")
        return make_projector(kind, **(self.projector_params or {}))

    def _score(self, inner, Xv, Yv) -> float:
        from align.evaluation import matching_accuracy, retrieval_metrics

        Q = inner.transform(Xv) if inner is not None else Xv
        G = inner.transform_y(Yv) if inner is not None else Yv
        if self.criterion == "retrieval":
            return retrieval_metrics(Q, G, ks=(1,)).recall_at(1)
        from scipy.optimize import linear_sum_assignment

        Qn = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
        Gn = G / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-12)
        _, col = linear_sum_assignment(-(Qn @ Gn.T))
        return matching_accuracy(col, np.arange(len(Q)))

    def _validate_params(self) -> None:
        check_choice("method", self.method, ("cca", "pca"))
        check_choice("criterion", self.criterion, ("retrieval", "matching"))
        check_float("val_fraction", self.val_fraction, min_value=0.0, max_value=0.9, inclusive=False)
        check_float("reg", self.reg, min_value=0.0)

    # ---- estimator -----------------------------------------------------------------------------------------------
    def fit(self, X: Any, Y: Any) -> SubspaceProjector:
        from ._pairs import split_pairs

        check_choice("method", self.method, ("cca", "pca"))
        check_choice("criterion", self.criterion, ("retrieval", "matching"))
        if self.projector is not None:
            check_choice("projector", self.projector, sorted(set(_REGISTRY) | {"identity"}))
        X, Y = check_paired(X, Y, min_rows=4)
        X, Y = np.asarray(X, dtype=np.float64) if not hasattr(X, "detach") else X.detach().cpu().double().numpy(), \
            np.asarray(Y, dtype=np.float64) if not hasattr(Y, "detach") else Y.detach().cpu().double().numpy()
        n = X.shape[0]
        d_min = min(X.shape[1], Y.shape[1])
        if self.n_components is None:
            grid = _default_grid(d_min)
        elif isinstance(self.n_components, (int, np.integer)):
            grid = [check_int("n_components", self.n_components, min_value=1, max_value=d_min)]
        else:
            grid = sorted({check_int("n_components", k, min_value=1, max_value=d_min) for k in self.n_components})
            if not grid:
                raise ValueError("`n_components` must list at least one candidate dimension")
        scores: dict[int, float] = {}
        if len(grid) > 1:
            vf = check_float("val_fraction", self.val_fraction, min_value=0.0, max_value=0.9, inclusive=False)
            tr, va = split_pairs(n, None, vf, check_int("rng", self.rng, min_value=0))
            mx, bx, my, by = self._basis(X[tr], Y[tr], max(grid))
            for k in grid:
                Xt, Yt = self._reduce(X[tr], mx, bx, k), self._reduce(Y[tr], my, by, k)
                Xv, Yv = self._reduce(X[va], mx, bx, k), self._reduce(Y[va], my, by, k)
                inner = self._inner()
                if inner is not None:
                    inner.fit(Xt, Yt)
                scores[k] = float(self._score(inner, Xv, Yv))
                log.info("subspace k=%d: held-out %s %.4f", k, self.criterion, scores[k])
            best = max(grid, key=lambda k: (scores[k], -k))
        else:
            best = grid[0]
        mx, bx, my, by = self._basis(X, Y, best)
        inner = self._inner()
        if inner is not None:
            inner.fit(self._reduce(X, mx, bx, best), self._reduce(Y, my, by, best))
        self.mean_x_, self.basis_x_, self.mean_y_, self.basis_y_ = mx.cpu(), bx.cpu(), my.cpu(), by.cpu()
        self.inner_ = inner
        self.n_components_ = int(best)
        self.scores_ = scores
        self.n_features_in_, self.n_features_y_ = X.shape[1], Y.shape[1]
        return self

    def _transform_torch(self, X, side):
        import torch

        mu, B = (self.mean_x_, self.basis_x_) if side == "x" else (self.mean_y_, self.basis_y_)
        Z = (X.to(torch.float64) - mu.to(X.device)) @ B.to(X.device)
        if self.inner_ is None:
            return Z
        inner_out = self.inner_.transform(Z) if side == "x" else self.inner_.transform_y(Z)
        return inner_out.to(torch.float64)

    def _get_state(self):
        inner = self.inner_
        return {
            "mean_x": self.mean_x_, "basis_x": self.basis_x_, "mean_y": self.mean_y_, "basis_y": self.basis_y_,
            "n_components": self.n_components_, "scores": {str(k): v for k, v in self.scores_.items()},
            "inner_kind": inner.kind if inner is not None else None,
            "inner_params": _inner_params(inner),
            "inner_state": inner._get_state() if inner is not None else None,
        }

    def _set_state(self, s):
        self.mean_x_, self.basis_x_, self.mean_y_, self.basis_y_ = s["mean_x"], s["basis_x"], s["mean_y"], s["basis_y"]
        self.n_components_ = int(s["n_components"])
        self.scores_ = {int(k): float(v) for k, v in s["scores"].items()}
        self.inner_ = None
        if s["inner_kind"] is not None:
            cls = _REGISTRY[s["inner_kind"]]
            inner = cls(**{k: v for k, v in s["inner_params"].items() if k in cls._param_names()})
            inner.n_features_in_ = inner.n_features_y_ = self.n_components_
            inner._set_state(s["inner_state"])
            self.inner_ = inner


def _inner_params(inner):
    from ._base import _primitive

    return _primitive(inner.get_params()) if inner is not None else None
