"""Evaluation: retrieval metrics between two embedded sets and matching accuracy.

Retrieval compares every query ``Q[i]`` with every gallery item ``G[j]`` by cosine (or dot-product) similarity and
asks where the true partner(s) land in the ranking. Matching accuracy scores a one-to-one correspondence
(``col_ind[i]`` = the row of Y matched to row i of X) against the truth.

Everything is computed in query chunks, so memory stays ``O(chunk_size * n_gallery)`` however many queries there
are; scores are computed in float32 (the ranking of unit vectors is stable at that precision) and the summary
statistics are accumulated in float64.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np

from ._validation import check_array, check_int, is_torch

log = logging.getLogger(__name__)

__all__ = ["DirectionMetrics", "RetrievalResult", "retrieval_metrics", "matching_accuracy"]


@dataclasses.dataclass(frozen=True)
class DirectionMetrics:
    """Retrieval quality in one direction (queries ranked against a gallery).

    Attributes
    ----------
    recall : dict
        ``{k: R@k}``: the fraction of queries with at least one positive among the top ``k`` gallery items.
    median_rank, mean_rank : float
        Median / mean (1-based) rank of the best-ranked positive of each query.
    mean_average_precision : float
        Mean over queries of the average precision over all of the query's positives.
    n_queries, n_gallery : int
    """

    recall: dict
    median_rank: float
    mean_rank: float
    mean_average_precision: float
    n_queries: int
    n_gallery: int

    def to_dict(self) -> dict:
        out = {f"R@{k}": float(v) for k, v in self.recall.items()}
        out.update(
            median_rank=float(self.median_rank),
            mean_rank=float(self.mean_rank),
            mAP=float(self.mean_average_precision),
            n_queries=int(self.n_queries),
            n_gallery=int(self.n_gallery),
        )
        return out


@dataclasses.dataclass(frozen=True)
class RetrievalResult:
    """Retrieval metrics in both directions.

    Attributes
    ----------
    query_to_gallery : DirectionMetrics
        Each row of ``Q`` ranks the rows of ``G``.
    gallery_to_query : DirectionMetrics
        Each row of ``G`` ranks the rows of ``Q`` (the positives relation inverted).
    """

    query_to_gallery: DirectionMetrics
    gallery_to_query: DirectionMetrics

    def recall_at(self, k: int, direction: str = "mean") -> float:
        """R@k in one direction (``"q2g"``, ``"g2q"``) or their mean (``"mean"``)."""
        if direction == "q2g":
            return float(self.query_to_gallery.recall[k])
        if direction == "g2q":
            return float(self.gallery_to_query.recall[k])
        if direction == "mean":
            return 0.5 * (float(self.query_to_gallery.recall[k]) + float(self.gallery_to_query.recall[k]))
        raise ValueError(f"`direction` must be 'q2g', 'g2q' or 'mean', got {direction!r}")

    def to_dict(self) -> dict:
        return {"query_to_gallery": self.query_to_gallery.to_dict(),
                "gallery_to_query": self.gallery_to_query.to_dict()}


def _normalize_positives(positives: Any, n_q: int, n_g: int) -> list[np.ndarray]:
    """Turn ``positives`` into one sorted int array of gallery rows per query."""
    if positives is None:
        if n_q != n_g:
            raise ValueError(
                f"`Q` and `G` must have the same number of rows when `positives` is None (row i of Q pairs with "
                f"row i of G), got {n_q} and {n_g}; pass `positives` to say which gallery rows each query matches"
            )
        return [np.array([i], dtype=np.int64) for i in range(n_q)]
    if is_torch(positives):
        positives = positives.detach().cpu().numpy()
    if isinstance(positives, np.ndarray) and positives.dtype != object:
        if positives.ndim != 1:
            raise ValueError(
                f"`positives` as an array must be 1-D (the gallery row of each query), got shape {positives.shape}; "
                "for several positives per query pass a list of index arrays"
            )
        if positives.dtype.kind not in "iu":
            raise TypeError(f"`positives` must hold integer gallery indices, got dtype {positives.dtype}")
        positives = [np.array([p], dtype=np.int64) for p in positives]
    out: list[np.ndarray] = []
    if len(positives) != n_q:
        raise ValueError(f"`positives` must have one entry per query ({n_q}), got {len(positives)}")
    for i, p in enumerate(positives):
        p = np.unique(np.atleast_1d(np.asarray(p)))
        if p.size == 0:
            raise ValueError(f"`positives[{i}]` is empty; every query needs at least one positive gallery row")
        if p.dtype.kind not in "iu":
            raise TypeError(f"`positives[{i}]` must hold integer gallery indices, got dtype {p.dtype}")
        if p.min() < 0 or p.max() >= n_g:
            raise ValueError(f"`positives[{i}]` must index gallery rows 0..{n_g - 1}, got {p.tolist()}")
        out.append(p.astype(np.int64))
    return out


def _invert_positives(pos: list[np.ndarray], n_g: int) -> list[np.ndarray]:
    """The query rows that list each gallery row as a positive (for the reverse direction)."""
    inv: list[list[int]] = [[] for _ in range(n_g)]
    for i, p in enumerate(pos):
        for j in p:
            inv[int(j)].append(i)
    missing = [j for j, lst in enumerate(inv) if not lst]
    if missing:
        raise ValueError(
            f"gallery row {missing[0]} (and {len(missing) - 1} more) is no query's positive, so the gallery-to-query "
            "direction is undefined; drop those rows or give them a positive"
        )
    return [np.asarray(lst, dtype=np.int64) for lst in inv]


def _direction(Q, G, pos: list[np.ndarray], ks: Sequence[int], chunk_size: int) -> DirectionMetrics:
    """Ranks of the positives of each query, chunk by chunk (torch tensors ``Q``, ``G`` on one device)."""
    import torch

    n_q, n_g = Q.shape[0], G.shape[0]
    p_max = max(len(p) for p in pos)
    pos_pad = np.full((n_q, p_max), -1, dtype=np.int64)
    for i, p in enumerate(pos):
        pos_pad[i, : len(p)] = p
    pos_pad_t = torch.from_numpy(pos_pad).to(Q.device)
    # Keep the (chunk, p_max, n_g) comparison tensor near 2**25 elements.
    step = max(1, min(chunk_size, (1 << 25) // max(1, p_max * n_g)))
    first_rank = np.empty(n_q, dtype=np.float64)
    ap = np.empty(n_q, dtype=np.float64)
    for start in range(0, n_q, step):
        stop = min(start + step, n_q)
        S = Q[start:stop] @ G.T  # (c, n_g)
        idx = pos_pad_t[start:stop]
        valid = idx >= 0
        s_pos = torch.gather(S, 1, idx.clamp(min=0))  # (c, p_max)
        # Rank of a positive = number of gallery items scoring at least as high (ties count against it).
        ranks = (S[:, None, :] >= s_pos[:, :, None]).sum(-1).to(torch.float64)  # (c, p_max)
        ranks = torch.where(valid, ranks, torch.full_like(ranks, float("inf")))
        ranks, _ = torch.sort(ranks, dim=1)
        first_rank[start:stop] = ranks[:, 0].cpu().numpy()
        n_pos = valid.sum(1).to(torch.float64)
        order = torch.arange(1, p_max + 1, device=S.device, dtype=torch.float64)[None, :]
        prec = torch.where(torch.isfinite(ranks), order / ranks, torch.zeros_like(ranks))
        ap[start:stop] = (prec.sum(1) / n_pos).cpu().numpy()
    recall = {int(k): float(np.mean(first_rank <= k)) for k in ks}
    return DirectionMetrics(
        recall=recall,
        median_rank=float(np.median(first_rank)),
        mean_rank=float(np.mean(first_rank)),
        mean_average_precision=float(np.mean(ap)),
        n_queries=int(n_q),
        n_gallery=int(n_g),
    )


def retrieval_metrics(
    Q: Any,
    G: Any,
    positives: Any = None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    normalize: bool = True,
    chunk_size: int = 1024,
    device: Any = None,
) -> RetrievalResult:
    r"""Recall@k, median/mean rank and mAP for cross-set retrieval, in both directions.

    Every query ``Q[i]`` scores every gallery item by :math:`s_{ij} = \hat q_i^\top \hat g_j` (cosine similarity with
    ``normalize=True``, the dot product otherwise). The rank of a gallery item is the number of items scoring at least
    as high as it (so ties count against the positive: a constant embedding gets the worst rank, not the best).
    With :math:`r_i` the rank of the best-ranked positive of query :math:`i`,

    .. math::
        \mathrm{R@}k = \frac{1}{n_q} \sum_i [r_i \le k], \qquad
        \mathrm{AP}_i = \frac{1}{|P_i|} \sum_{m=1}^{|P_i|} \frac{m}{r_{i,(m)}},

    where :math:`r_{i,(m)}` is the rank of the m-th best-ranked positive. The reverse direction ranks rows of ``Q``
    for each gallery item, with the positives relation inverted.

    Parameters
    ----------
    Q : array of shape (n_q, d)
        Query embeddings (numpy or torch, any device).
    G : array of shape (n_g, d)
        Gallery embeddings in the same space as ``Q``.
    positives : None, int array of shape (n_q,), or sequence of n_q int arrays
        The gallery rows that are correct for each query. ``None``: row i of ``Q`` pairs with row i of ``G``
        (needs ``n_q == n_g``). A list gives several positives per query (e.g. 5 captions per image); every gallery
        row must then be some query's positive for the reverse direction to be defined.
    ks : sequence of int
        The cut-offs for Recall@k.
    normalize : bool
        L2-normalise rows first (cosine similarity).
    chunk_size : int
        Queries scored at once; memory is ``O(chunk_size * n_g)``.
    device : str or torch.device, optional
        Where to compute; default: the device of ``Q`` (CPU for numpy).

    Returns
    -------
    RetrievalResult
        ``query_to_gallery`` and ``gallery_to_query`` :class:`DirectionMetrics`.

    Notes
    -----
    Cost: :math:`O(n_q n_g d)` for the scores plus :math:`O(n_q n_g |P|_{max})` for the ranks.
    """
    import torch

    from ._backend import as_torch, resolve_device

    Q = check_array(Q, "Q")
    G = check_array(G, "G")
    if Q.shape[1] != G.shape[1]:
        raise ValueError(
            f"`Q` and `G` must have the same number of columns (one embedding space), got {Q.shape[1]} and "
            f"{G.shape[1]}; project one side first (e.g. projector.transform)"
        )
    ks = [check_int("ks", k, min_value=1) for k in ks]
    chunk_size = check_int("chunk_size", chunk_size, min_value=1)
    n_q, n_g = Q.shape[0], G.shape[0]
    pos = _normalize_positives(positives, n_q, n_g)
    inv = _invert_positives(pos, n_g)
    dev = resolve_device(device, Q, G)
    # read-only arrays (memory-maps) are copied: torch does not wrap non-writable buffers
    Qt = as_torch(Q if is_torch(Q) or Q.flags.writeable else np.array(Q), device=dev, dtype=torch.float32)
    Gt = as_torch(G if is_torch(G) or G.flags.writeable else np.array(G), device=dev, dtype=torch.float32)
    if normalize:
        Qt = torch.nn.functional.normalize(Qt, dim=1)
        Gt = torch.nn.functional.normalize(Gt, dim=1)
    with torch.no_grad():
        q2g = _direction(Qt, Gt, pos, ks, chunk_size)
        g2q = _direction(Gt, Qt, inv, ks, chunk_size)
    return RetrievalResult(query_to_gallery=q2g, gallery_to_query=g2q)


def matching_accuracy(col_ind: Any, true_col_ind: Any) -> float:
    """Fraction of rows whose predicted partner is the true one.

    Parameters
    ----------
    col_ind : int array of shape (n,)
        ``col_ind[i]`` = the row of Y matched to row i of X (``-1`` for unmatched), e.g. ``MatchResult.col_ind``.
    true_col_ind : int array of shape (n,)
        The true partner of each row; rows with a negative entry have no known partner and are left out.

    Returns
    -------
    float
        :math:`\\frac{1}{|T|}\\sum_{i \\in T} [\\text{col\\_ind}_i = \\text{true}_i]` over the rows ``T`` with a known
        partner.
    """
    pred = np.asarray(col_ind.detach().cpu() if is_torch(col_ind) else col_ind)
    true = np.asarray(true_col_ind.detach().cpu() if is_torch(true_col_ind) else true_col_ind)
    for name, a in (("col_ind", pred), ("true_col_ind", true)):
        if a.ndim != 1:
            raise ValueError(f"`{name}` must be 1-D (one partner per row), got shape {a.shape}")
        if a.dtype.kind not in "iu":
            raise TypeError(f"`{name}` must be an integer array, got dtype {a.dtype}")
    if pred.shape != true.shape:
        raise ValueError(f"`col_ind` and `true_col_ind` must have the same length, got {pred.size} and {true.size}")
    known = true >= 0
    if not known.any():
        raise ValueError("`true_col_ind` has no known partner (all entries negative); nothing to score")
    return float(np.mean(pred[known] == true[known]))
