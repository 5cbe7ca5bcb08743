"""The base/query evaluation protocol of Maniparambil et al. (CVPR 2024) for any matcher."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from align._validation import (InputTypeError, check_choice, check_int, check_not_constant, check_paired,
                               check_rng)

log = logging.getLogger(__name__)

__all__ = ["evaluate", "EvaluationResult"]


@dataclass(frozen=True)
class EvaluationResult:
    """Matching accuracy (and retrieval where the method scores pairs) over several base/query splits.

    ``accuracy`` is the fraction of query items of ``X`` matched to their true partner, per split in
    ``accuracies``; ``recall`` maps k to the mean Recall@k of ranking the query items of ``Y`` for each query of
    ``X`` by the method's pair scores (``None`` for methods without scores, such as ``faq``); ``recall_splits`` the
    same per split. ``n_known`` known pairs and ``n_query`` hidden items per split; ``query`` says whether the
    queries came from a separate query set. ``confidence_splits``: per split, the confidence report of a method that
    gives one (``"blind"``: :class:`matching.BlindResult`), else ``None``.
    """

    method: str
    accuracy: float
    accuracy_std: float
    accuracies: tuple
    recall: Optional[dict]
    recall_std: Optional[dict]
    n_known: int
    n_query: int
    n_splits: int
    known_selection: str
    seconds: float
    params: dict = field(default_factory=dict)
    recall_splits: Optional[tuple] = None
    query: bool = False
    confidence_splits: Optional[tuple] = None

    @property
    def n_seeds(self) -> int:
        """Deprecated alias of ``n_known``."""
        return self.n_known

    @property
    def seed_selection(self) -> str:
        """Deprecated alias of ``known_selection``."""
        return self.known_selection

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the old keys ``n_seeds`` and ``seed_selection`` are kept (same values) for a release."""
        return {
            "method": self.method,
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "accuracies": list(self.accuracies),
            "recall": None if self.recall is None else {str(k): v for k, v in self.recall.items()},
            "recall_std": None if self.recall_std is None else {str(k): v for k, v in self.recall_std.items()},
            "recall_splits": None if self.recall_splits is None else
            [{str(k): v for k, v in r.items()} for r in self.recall_splits],
            "n_known": self.n_known,
            "n_query": self.n_query,
            "n_splits": self.n_splits,
            "known_selection": self.known_selection,
            "query": self.query,
            "confidence_splits": None if self.confidence_splits is None else [dict(c) for c in self.confidence_splits],
            "n_seeds": self.n_known,
            "seed_selection": self.known_selection,
            "seconds": self.seconds,
            "params": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                       for k, v in self.params.items()},
        }


def _medoid_seeds(Z: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (into ``Z``) of the items nearest to k-means centroids, one distinct item per centroid."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=3, random_state=int(rng.integers(2**31 - 1))).fit(Z)
    d = ((Z[:, None, :] - km.cluster_centers_[None, :, :]) ** 2).sum(-1)  # (n, k)
    chosen: list[int] = []
    for c in range(k):
        for i in np.argsort(d[:, c]):
            if int(i) not in chosen:
                chosen.append(int(i))
                break
    return np.asarray(chosen, dtype=np.int64)


def _std(values) -> float:
    """Sample standard deviation over splits (ddof=1, as in the reports); 0 for a single split."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def evaluate(
    X: Any,
    Y: Any,
    method: str = "faq",
    *,
    n_known: Optional[int] = None,
    n_query: int = 100,
    n_splits: int = 5,
    known_selection: Optional[str] = None,
    query: Optional[tuple] = None,
    recall_at: tuple = (1, 5, 10),
    rng: Any = None,
    n_seeds: Optional[int] = None,
    seed_selection: Optional[str] = None,
    **params,
) -> EvaluationResult:
    r"""Matching accuracy of ``method`` on paired features, as in Maniparambil et al. (CVPR 2024).

    For each of ``n_splits`` splits: draw ``n_known`` known pairs and ``n_query`` query items; the query items of
    ``Y`` are shuffled so their correspondence is hidden; :func:`matching.match` gets the known pairs as
    ``partial_match``; accuracy is the fraction of queries matched to their true partner (methods that score pairs
    are turned into a matching by a linear assignment). Reported as mean ± std over splits. The split draws
    ``n_known + n_query`` items in all: ``unialign match --n-seeds 30 --n-query 70`` matches 100 items.

    Parameters
    ----------
    X, Y : arrays of shape (n, d_x), (n, d_y)
        Paired features: row ``i`` of each is item ``i``. The known pairs (the base set), and the queries too
        unless ``query`` is given.
    method : str or callable
        Any of :func:`matching.list_methods`; ``params`` go to it (checked first by :func:`matching.check_params`).
        A callable ``method(X, Y, partial_match=..., rng=..., **params)`` returning an object with ``col_ind`` (and
        optionally ``similarity``) is evaluated the same way, e.g. a peer library's matcher.
    n_known : int, default 30
        Known pairs per split. Without ``query``, ``n_known + n_query <= n``.
    n_query, n_splits : int
        Hidden query items and splits.
    known_selection : {"random", "kmeans"}, default "random"
        The known pairs at random among the drawn items, or the k-means medoids of ``X`` over them (without
        ``query`` only).
    query : tuple (XQ, YQ) of paired arrays, optional
        A separate query set (base/query protocol: e.g. COCO known pairs, NoCaps queries): each split draws
        ``n_known`` base pairs from ``(X, Y)`` and ``n_query`` queries from ``(XQ, YQ)``, each without
        replacement; the matcher sees the base rows first, then the queries.
    recall_at : tuple of int
        Recall@k reported for methods that return pair scores.
    rng : int, Generator or None
        Draws the splits and the method's own randomness (one child generator per split).
    n_seeds, seed_selection
        Deprecated aliases of ``n_known`` and ``known_selection`` (a ``DeprecationWarning``).
    """
    import warnings

    from align._backend import to_numpy

    known_name = "n_seeds" if n_seeds is not None and n_known is None else "n_known"  # as the caller spelled it

    from ._api import match
    from ._methods import check_params

    if n_seeds is not None:
        warnings.warn("evaluate(n_seeds=) is deprecated; use n_known=", DeprecationWarning, stacklevel=2)
        if n_known is not None and n_known != n_seeds:
            raise ValueError(f"`n_known` ({n_known}) and its deprecated alias `n_seeds` ({n_seeds}) disagree")
        n_known = n_seeds
    if seed_selection is not None:
        warnings.warn("evaluate(seed_selection=) is deprecated; use known_selection=", DeprecationWarning,
                      stacklevel=2)
        if known_selection is not None and known_selection != seed_selection:
            raise ValueError(f"`known_selection` ({known_selection!r}) and its deprecated alias `seed_selection` "
                             f"({seed_selection!r}) disagree")
        known_selection = seed_selection
    n_known = 30 if n_known is None else n_known
    known_selection = "random" if known_selection is None else known_selection
    if callable(method):
        run, method_name = method, getattr(method, "__name__", "callable")
    else:
        check_params(method, **params)
        run, method_name = match, method
    X, Y = check_paired(X, Y)
    X, Y = to_numpy(X), to_numpy(Y)
    check_not_constant(X, "X")
    check_not_constant(Y, "Y")
    n_known = check_int(known_name, n_known, min_value=0)
    n_query = check_int("n_query", n_query, min_value=1)
    n_splits = check_int("n_splits", n_splits, min_value=1)
    check_choice("known_selection", known_selection, ("random", "kmeans"))
    n = X.shape[0]
    if query is not None:
        if not isinstance(query, (tuple, list)) or len(query) != 2:
            raise InputTypeError(f"`query` must be a pair (XQ, YQ) of paired feature arrays, got "
                                 f"{type(query).__name__}")
        XQ, YQ = check_paired(query[0], query[1], names=("XQ", "YQ"))
        XQ, YQ = to_numpy(XQ), to_numpy(YQ)
        if XQ.shape[1] != X.shape[1] or YQ.shape[1] != Y.shape[1]:
            raise ValueError(f"`query` features must have the widths of X and Y ({X.shape[1]}, {Y.shape[1]}), got "
                             f"({XQ.shape[1]}, {YQ.shape[1]})")
        if known_selection != "random":
            raise ValueError("known_selection='kmeans' needs the known pairs and queries drawn together; with "
                             "`query` use known_selection='random'")
        if n_known > n:
            raise ValueError(f"`n_known` must be <= the number of base items ({n}), got {n_known}")
        if n_query > XQ.shape[0]:
            raise ValueError(f"`n_query` must be <= the number of query items ({XQ.shape[0]}), got {n_query}")
    elif n_known + n_query > n:
        raise ValueError(f"`{known_name}` + `n_query` must be <= the number of items ({n}), got {n_known} + "
                         f"{n_query}; "
                         "lower them or pass more items")
    recall_at = tuple(check_int("recall_at", k, min_value=1) for k in recall_at)
    rng = check_rng(rng)

    accs, recalls, confidences, t0 = [], [], [], time.perf_counter()
    for split in range(n_splits):
        if query is not None:  # the draws of align.experiment's base/query cells, in the same order
            base = rng.choice(n, n_known, replace=False)
            queries = rng.choice(XQ.shape[0], n_query, replace=False)
            hide = rng.permutation(n_query)
            X_sub = np.concatenate([X[base], XQ[queries]])
            Y_sub = np.concatenate([Y[base], YQ[queries[hide]]])
        else:
            pool = rng.choice(n, n_known + n_query, replace=False)
            if known_selection == "kmeans" and n_known > 0:
                pos = _medoid_seeds(X[pool].astype(np.float64), n_known, rng)
            else:
                pos = np.arange(n_known)
            seeds = pool[pos]
            queries = np.setdiff1d(pool, seeds)
            rng.shuffle(queries)
            hide = rng.permutation(n_query)  # Y's query rows in a hidden order
            X_sub = X[np.concatenate([seeds, queries])]
            Y_sub = Y[np.concatenate([seeds, queries[hide]])]
        truth = n_known + np.argsort(hide)  # row n_known + a of X is row truth[a] of Y
        pm = np.stack([np.arange(n_known), np.arange(n_known)], axis=1)
        if callable(method):
            res = run(X_sub, Y_sub, partial_match=pm, rng=rng.spawn(1)[0], **params)
        else:
            res = run(X_sub, Y_sub, method=method, partial_match=pm, rng=rng.spawn(1)[0], **params)
        accs.append(float(np.mean(np.asarray(res.col_ind)[n_known:] == truth)))
        if getattr(res, "confidence", None):
            confidences.append({k: (v if isinstance(v, (str, bool)) else float(v)) for k, v in res.confidence.items()})
        if getattr(res, "similarity", None) is not None:
            S = np.asarray(res.similarity, dtype=np.float64)[n_known:, n_known:]
            true_scores = S[np.arange(n_query), truth - n_known]
            rank = (S > true_scores[:, None]).sum(axis=1)  # 0 = ranked first
            recalls.append({k: float(np.mean(rank < k)) for k in recall_at})
        log.info("evaluate %s split %d: accuracy %.3f", method_name, split, accs[-1])
    seconds = time.perf_counter() - t0
    rec = rec_std = None
    if recalls:
        rec = {k: float(np.mean([r[k] for r in recalls])) for k in recall_at}
        rec_std = {k: _std([r[k] for r in recalls]) for k in recall_at}
    return EvaluationResult(method=method_name, accuracy=float(np.mean(accs)), accuracy_std=_std(accs),
                            accuracies=tuple(accs), recall=rec, recall_std=rec_std, n_known=n_known,
                            n_query=n_query, n_splits=n_splits, known_selection=known_selection, seconds=seconds,
                            params=dict(params), recall_splits=tuple(recalls) if recalls else None,
                            query=query is not None, confidence_splits=tuple(confidences) if confidences else None)
