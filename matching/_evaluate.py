"""The base/query evaluation protocol of Maniparambil et al. (CVPR 2024) for any matcher."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from align._validation import check_choice, check_int, check_not_constant, check_paired, check_rng

log = logging.getLogger(__name__)

__all__ = ["evaluate", "EvaluationResult"]


@dataclass(frozen=True)
class EvaluationResult:
    """Matching accuracy (and retrieval where the method scores pairs) over several base/query splits.

    ``accuracy`` is the fraction of query items of ``X`` matched to their true partner, per split in
    ``accuracies``; ``recall`` maps k to the mean Recall@k of ranking the query items of ``Y`` for each query of
    ``X`` by the method's pair scores (``None`` for methods without scores, such as ``faq``).
    """

    method: str
    accuracy: float
    accuracy_std: float
    accuracies: tuple
    recall: Optional[dict]
    recall_std: Optional[dict]
    n_seeds: int
    n_query: int
    n_splits: int
    seed_selection: str
    seconds: float
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "accuracies": list(self.accuracies),
            "recall": None if self.recall is None else {str(k): v for k, v in self.recall.items()},
            "recall_std": None if self.recall_std is None else {str(k): v for k, v in self.recall_std.items()},
            "n_seeds": self.n_seeds,
            "n_query": self.n_query,
            "n_splits": self.n_splits,
            "seed_selection": self.seed_selection,
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
    n_seeds: int = 30,
    n_query: int = 100,
    n_splits: int = 5,
    seed_selection: str = "random",
    recall_at: tuple = (1, 5, 10),
    rng: Any = None,
    **params,
) -> EvaluationResult:
    r"""Matching accuracy of ``method`` on paired features, as in Maniparambil et al. (CVPR 2024).

    For each of ``n_splits`` splits: draw ``n_seeds + n_query`` items; the base (seed) items are chosen at random
    or as the k-means medoids of ``X`` over the drawn items (``seed_selection="kmeans"``); the query items of ``Y``
    are shuffled so their correspondence is hidden; :func:`matching.match` gets the base pairs as
    ``partial_match``; accuracy is the fraction of queries matched to their true partner (methods that score pairs
    are turned into a matching by a linear assignment). Reported as mean ± std over splits.

    Parameters
    ----------
    X, Y : arrays of shape (n, d_x), (n, d_y)
        Paired features: row ``i`` of each is item ``i``.
    method : str or callable
        Any of :func:`matching.list_methods`; ``params`` go to it. A callable
        ``method(X, Y, partial_match=..., rng=..., **params)`` returning an object with ``col_ind`` (and optionally
        ``similarity``) is evaluated the same way, e.g. a peer library's matcher.
    n_seeds, n_query, n_splits : int
        Known pairs, hidden query items and splits per evaluation (``n_seeds + n_query <= n``).
    seed_selection : {"random", "kmeans"}
    recall_at : tuple of int
        Recall@k reported for methods that return pair scores.
    rng : int, Generator or None
        Draws the splits and the method's own randomness (one child generator per split).
    """
    from align._backend import to_numpy

    from ._api import check_method_params, match

    if callable(method):
        run, method_name = method, getattr(method, "__name__", "callable")
    else:
        check_method_params(method, params)
        run, method_name = match, method
    X, Y = check_paired(X, Y)
    X, Y = to_numpy(X), to_numpy(Y)
    check_not_constant(X, "X")
    check_not_constant(Y, "Y")
    n = X.shape[0]
    n_seeds = check_int("n_seeds", n_seeds, min_value=0)
    n_query = check_int("n_query", n_query, min_value=1)
    n_splits = check_int("n_splits", n_splits, min_value=1)
    check_choice("seed_selection", seed_selection, ("random", "kmeans"))
    if n_seeds + n_query > n:
        raise ValueError(f"`n_seeds` + `n_query` must be <= the number of items ({n}), got {n_seeds} + {n_query}; "
                         "lower them or pass more items")
    recall_at = tuple(check_int("recall_at", k, min_value=1) for k in recall_at)
    rng = check_rng(rng)

    accs, recalls, t0 = [], [], time.perf_counter()
    for split in range(n_splits):
        pool = rng.choice(n, n_seeds + n_query, replace=False)
        if seed_selection == "kmeans" and n_seeds > 0:
            pos = _medoid_seeds(X[pool].astype(np.float64), n_seeds, rng)
        else:
            pos = np.arange(n_seeds)
        seeds = pool[pos]
        queries = np.setdiff1d(pool, seeds)
        rng.shuffle(queries)
        hide = rng.permutation(n_query)  # Y's query rows in a hidden order
        X_sub = X[np.concatenate([seeds, queries])]
        Y_sub = Y[np.concatenate([seeds, queries[hide]])]
        truth = n_seeds + np.argsort(hide)  # row n_seeds + a of X is row truth[a] of Y
        pm = np.stack([np.arange(n_seeds), np.arange(n_seeds)], axis=1)
        if callable(method):
            res = run(X_sub, Y_sub, partial_match=pm, rng=rng.spawn(1)[0], **params)
        else:
            res = run(X_sub, Y_sub, method=method, partial_match=pm, rng=rng.spawn(1)[0], **params)
        accs.append(float(np.mean(res.col_ind[n_seeds:] == truth)))
        if res.similarity is not None:
            S = np.asarray(res.similarity)[n_seeds:, n_seeds:]
            true_scores = S[np.arange(n_query), truth - n_seeds]
            rank = (S > true_scores[:, None]).sum(axis=1)  # 0 = ranked first
            recalls.append({k: float(np.mean(rank < k)) for k in recall_at})
        log.info("evaluate %s split %d: accuracy %.3f", method_name, split, accs[-1])
    seconds = time.perf_counter() - t0
    rec = rec_std = None
    if recalls:
        rec = {k: float(np.mean([r[k] for r in recalls])) for k in recall_at}
        rec_std = {k: _std([r[k] for r in recalls]) for k in recall_at}
    return EvaluationResult(method=method_name, accuracy=float(np.mean(accs)), accuracy_std=_std(accs),
                            accuracies=tuple(accs), recall=rec, recall_std=rec_std, n_seeds=n_seeds,
                            n_query=n_query, n_splits=n_splits, seed_selection=seed_selection, seconds=seconds,
                            params=dict(params))
