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
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._validation import InputTypeError, check_array, check_int, is_torch

log = logging.getLogger(__name__)

__all__ = [
    "DirectionMetrics",
    "RetrievalResult",
    "ZeroShotResult",
    "build_zero_shot_classifier",
    "matching_accuracy",
    "retrieval_metrics",
    "zero_shot_accuracy",
]


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
            raise InputTypeError(f"`positives` must hold integer gallery indices, got dtype {positives.dtype}")
        positives = [np.array([p], dtype=np.int64) for p in positives]
    out: list[np.ndarray] = []
    if len(positives) != n_q:
        raise ValueError(f"`positives` must have one entry per query ({n_q}), got {len(positives)}")
    for i, p in enumerate(positives):
        p = np.unique(np.atleast_1d(np.asarray(p)))
        if p.size == 0:
            raise ValueError(f"`positives[{i}]` is empty; every query needs at least one positive gallery row")
        if p.dtype.kind not in "iu":
            raise InputTypeError(f"`positives[{i}]` must hold integer gallery indices, got dtype {p.dtype}")
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
    ks: Sequence[int] | None = None,
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
    ks : sequence of int, optional
        The cut-offs for Recall@k, each at most ``min(n_q, n_g)`` (both directions are ranked; beyond that Recall@k
        is 1 by construction). Default: those of 1, 5, 10 that are at most ``min(n_q, n_g)``.
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
    chunk_size = check_int("chunk_size", chunk_size, min_value=1)
    n_q, n_g = Q.shape[0], G.shape[0]
    if ks is None:
        ks = [k for k in (1, 5, 10) if k <= min(n_q, n_g)]
    ks = [check_int("ks", k, min_value=1) for k in ks]
    for k in ks:
        if k > min(n_q, n_g):
            side = f"gallery `G` has {n_g}" if k > n_g else f"query set `Q` (ranked in the reverse direction) has {n_q}"
            raise ValueError(f"Recall@{k} asks for more items than the {side}, where it is 1 by construction; use "
                             f"cut-offs up to {min(n_q, n_g)}")
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
            raise InputTypeError(f"`{name}` must be an integer array, got dtype {a.dtype}")
    if pred.shape != true.shape:
        raise ValueError(f"`col_ind` and `true_col_ind` must have the same length, got {pred.size} and {true.size}")
    known = true >= 0
    if not known.any():
        raise ValueError("`true_col_ind` has no known partner (all entries negative); nothing to score")
    return float(np.mean(pred[known] == true[known]))


# --------------------------------------------------------------------------------------------------------------
# Zero-shot classification: a classifier made of class-name embeddings, and its top-k accuracy
# --------------------------------------------------------------------------------------------------------------


def _fill_template(template: Any, classname: str) -> str:
    if callable(template):
        return str(template(classname))
    return template.format(classname)


def build_zero_shot_classifier(
    encoder: Any,
    classnames: Sequence[str],
    templates: Sequence[Any] = ("{}",),
    *,
    batch_size: int = 64,
    normalize: bool = True,
    show_progress: bool = False,
) -> np.ndarray:
    r"""Class weights for zero-shot classification: every template filled with every class name, embedded, averaged.

    As in CLIP (Radford et al., 2021) and open_clip's ``build_zero_shot_classifier``: for class :math:`c` with
    prompts :math:`p_{c,1} \dots p_{c,T}` (one per template),

    .. math::
        w_c = \frac{\bar e_c}{\lVert \bar e_c \rVert}, \qquad
        \bar e_c = \frac{1}{T} \sum_{t=1}^{T} \frac{f(p_{c,t})}{\lVert f(p_{c,t}) \rVert},

    so each template counts equally whatever its embedding norm, and the rows are unit vectors (with
    ``normalize=False`` the plain mean of the raw embeddings is returned).

    Parameters
    ----------
    encoder : encoder or callable
        A text encoder with ``encode(texts) -> (m, d)`` (e.g. ``load_encoder("minilm")``), or a callable
        ``texts -> (m, d)``.
    classnames : sequence of str
        One name per class, in class-index order.
    templates : sequence of str or callable
        Format strings with one ``{}`` for the class name (``"a photo of a {}."``), or callables ``name -> text``.
    batch_size : int
        Classes embedded per call (``batch_size * len(templates)`` texts at once).
    normalize : bool
        Normalise each prompt embedding and the averaged row.
    show_progress : bool
        A tqdm bar over class batches on stderr.

    Returns
    -------
    ndarray of shape (n_classes, d), float32
        Row ``c`` is the classifier vector of ``classnames[c]``.

    Notes
    -----
    Cost: ``n_classes * len(templates)`` encoder calls' worth of text, in batches; the average is accumulated in
    float64. Runs under ``torch.no_grad`` when the encoder is a torch model.
    """
    if isinstance(classnames, str) or not isinstance(classnames, Sequence):
        raise InputTypeError(f"`classnames` must be a sequence of strings, got {type(classnames).__name__}")
    if len(classnames) == 0:
        raise ValueError("`classnames` is empty; give at least one class name")
    if isinstance(templates, str) or not isinstance(templates, Sequence) or len(templates) == 0:
        raise InputTypeError(f"`templates` must be a non-empty sequence of format strings or callables, "
                             f"got {templates!r}")
    for t in templates:
        if callable(t):
            continue
        if not isinstance(t, str) or "{}" not in t:
            raise ValueError(f"every template must be a string with one '{{}}' for the class name, got {t!r}")
    bad = [c for c in classnames if not isinstance(c, str) or not c.strip()]
    if bad:
        raise InputTypeError(f"every class name must be a non-empty string, got {bad[0]!r}")
    batch_size = check_int("batch_size", batch_size, min_value=1)
    encode = encoder.encode if hasattr(encoder, "encode") else encoder
    if not callable(encode):
        raise InputTypeError(f"`encoder` must have an encode(texts) method or be callable, "
                             f"got {type(encoder).__name__}")

    import contextlib
    import sys

    torch = sys.modules.get("torch")
    no_grad = torch.no_grad() if torch is not None else contextlib.nullcontext()
    n_t = len(templates)
    starts = range(0, len(classnames), batch_size)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="zero-shot classifier", unit="batch")
    rows = []
    with no_grad:
        for start in starts:
            names = classnames[start:start + batch_size]
            texts = [_fill_template(t, c) for c in names for t in templates]
            E = np.asarray(encode(texts), dtype=np.float64)
            if E.ndim != 2 or E.shape[0] != len(texts):
                raise ValueError(f"the encoder returned shape {E.shape} for {len(texts)} texts; expected (m, d)")
            E = E.reshape(len(names), n_t, -1)
            if normalize:
                E = E / np.maximum(np.linalg.norm(E, axis=2, keepdims=True), 1e-12)
            M = E.mean(axis=1)
            if normalize:
                M = M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)
            rows.append(M)
    return np.concatenate(rows, axis=0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ZeroShotResult:
    """Zero-shot classification scores.

    Attributes
    ----------
    accuracy : dict
        ``{k: top-k accuracy}``: the fraction of items whose true class ranks within the top ``k``.
    chance : dict
        ``{k: k / n_classes}``, the expected top-k accuracy of a random ranking.
    predictions : ndarray of shape (n, max(ks))
        The top classes of each item, best first.
    true_rank : ndarray of shape (n,)
        1-based rank of the true class (classes scoring at least as high count, so ties count against it).
    n, n_classes : int
    """

    accuracy: dict
    chance: dict
    predictions: np.ndarray
    true_rank: np.ndarray
    n: int
    n_classes: int

    def to_dict(self) -> dict:
        return {"accuracy": {f"top{k}": float(v) for k, v in self.accuracy.items()},
                "chance": {f"top{k}": float(v) for k, v in self.chance.items()},
                "mean_rank": float(np.mean(self.true_rank)), "n": int(self.n), "n_classes": int(self.n_classes)}


def zero_shot_accuracy(
    features: Any,
    classifier: Any,
    labels: Any,
    ks: Sequence[int] = (1, 5),
    *,
    normalize: bool = True,
    chunk_size: int = 1024,
) -> ZeroShotResult:
    r"""Top-k accuracy of classifying ``features`` by their most similar class vector.

    Item :math:`i` scores class :math:`c` by :math:`s_{ic} = \hat x_i^\top \hat w_c` (cosine with
    ``normalize=True``); the rank of its true class :math:`y_i` is :math:`r_i = |\{c : s_{ic} \ge s_{iy_i}\}|`
    and top-k accuracy is :math:`\frac{1}{n}\sum_i [r_i \le k]`.

    Parameters
    ----------
    features : array of shape (n, d)
        Items embedded in the classifier's space (e.g. image features through a projector).
    classifier : array of shape (n_classes, d)
        One vector per class, e.g. from :func:`build_zero_shot_classifier`.
    labels : int array of shape (n,)
        The true class of each item (row of ``classifier``).
    ks : sequence of int
        Cut-offs; each must be at most ``n_classes``.
    normalize : bool
        Cosine similarity (True) or the dot product.
    chunk_size : int
        Items scored at once; memory is ``O(chunk_size * n_classes)``.

    Returns
    -------
    ZeroShotResult
    """
    X = check_array(features, "features")
    C = check_array(classifier, "classifier")
    X = X.detach().cpu().numpy() if is_torch(X) else np.asarray(X)
    C = C.detach().cpu().numpy() if is_torch(C) else np.asarray(C)
    if X.shape[1] != C.shape[1]:
        raise ValueError(f"`features` and `classifier` must have the same number of columns, got {X.shape[1]} and "
                         f"{C.shape[1]}; project the features into the classifier's space first")
    y = np.asarray(labels.detach().cpu() if is_torch(labels) else labels)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"`labels` must be 1-D with one entry per row of `features` ({X.shape[0]}), got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise InputTypeError(f"`labels` must be integer class indices, got dtype {y.dtype}")
    n_classes = C.shape[0]
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"`labels` must index the {n_classes} classifier rows (0..{n_classes - 1}), "
                         f"got values in [{y.min()}, {y.max()}]")
    ks = sorted({check_int("ks", k, min_value=1) for k in ks})
    if ks[-1] > n_classes:
        raise ValueError(f"`ks` must be at most the number of classes ({n_classes}), got {ks[-1]}")
    chunk_size = check_int("chunk_size", chunk_size, min_value=1)
    C64 = C.astype(np.float64)
    if normalize:
        C64 = C64 / np.maximum(np.linalg.norm(C64, axis=1, keepdims=True), 1e-12)
    kmax = ks[-1]
    preds = np.empty((X.shape[0], kmax), dtype=np.int64)
    rank = np.empty(X.shape[0], dtype=np.int64)
    for start in range(0, X.shape[0], chunk_size):
        stop = min(start + chunk_size, X.shape[0])
        Xc = np.asarray(X[start:stop], dtype=np.float64)
        if normalize:
            Xc = Xc / np.maximum(np.linalg.norm(Xc, axis=1, keepdims=True), 1e-12)
        S = Xc @ C64.T
        true = S[np.arange(stop - start), y[start:stop]]
        rank[start:stop] = (S >= true[:, None]).sum(1)
        top = np.argpartition(-S, kmax - 1, axis=1)[:, :kmax]
        order = np.argsort(-np.take_along_axis(S, top, 1), axis=1, kind="stable")
        preds[start:stop] = np.take_along_axis(top, order, 1)
    return ZeroShotResult(
        accuracy={k: float(np.mean(rank <= k)) for k in ks},
        chance={k: k / n_classes for k in ks},
        predictions=preds, true_rank=rank, n=int(X.shape[0]), n_classes=int(n_classes),
    )
