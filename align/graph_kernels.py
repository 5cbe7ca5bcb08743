r"""Kernels built directly from graph structure, usable by every metric and matcher.

A graph gives a similarity between its nodes without any encoder: how few hops separate them (shortest-path
kernel), or how much heat flows between them in time ``t`` (diffusion kernel). These functions return the
``(k, k)`` kernel over ``k`` chosen nodes (e.g. the 1,000 ImageNet leaves of the WordNet subtree), and
:func:`kernel_features` turns any such kernel into features ``F`` with :math:`F F^\top = K` (the positive part of its
spectrum), so the kernel goes through the same code as encoder features:

>>> from align.data import load_dataset                                       # doctest: +SKIP
>>> ds = load_dataset("wordnet:imagenet-1k")                                  # doctest: +SKIP
>>> F = kernel_features(shortest_path_kernel(ds.graph, ds.items))             # doctest: +SKIP
>>> compare(F, text_features, "linear_cka")          # = centred kernel alignment of K and X X^T  # doctest: +SKIP
>>> matching.match(F, text_features, method="faq", kernel="linear", partial_match=seeds)          # doctest: +SKIP

Linear CKA of ``F`` is the CKA of the kernel itself (:math:`F F^\top = K` is centred inside CKA), and FAQ with
``kernel="linear"`` on ``F`` matches ``K`` itself; ``matching.faq(K, L, …)`` also takes the square kernels directly.
(The matchers' default ``kernel="cosine"`` would re-normalise the rows of ``F``; pass ``kernel="linear"``.)
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ._validation import InputTypeError, check_float, check_int

log = logging.getLogger(__name__)

__all__ = ["normalized_laplacian", "laplacian_eigh", "shortest_path_distances", "shortest_path_kernel",
           "diffusion_kernel", "kernel_features", "DENSE_MAX"]

#: Graphs up to this many nodes use dense eigendecompositions (exact, deterministic); larger ones use ARPACK.
DENSE_MAX = 5000


def _check_graph(graph) -> None:
    from .data._graph import Graph

    if not isinstance(graph, Graph):
        raise InputTypeError(f"`graph` must be an align.data Graph (e.g. load_dataset('wordnet:imagenet-1k').graph), "
                             f"got {type(graph).__name__}")
    iso = graph.isolated()
    if len(iso):
        raise ValueError(f"graph {graph.name!r} has {len(iso)} isolated node(s) (e.g. {graph.node_ids[iso[0]]!r}); "
                         "the Laplacian is undefined there: drop them (isolated='drop' when loading) or add edges")


def _nodes(graph, nodes: Any) -> np.ndarray:
    if nodes is None:
        return np.arange(graph.n_nodes)
    idx = np.asarray(nodes)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise InputTypeError(f"`nodes` must be a 1-D array of node indices, got {idx.dtype} array of shape {idx.shape}")
    if len(idx) and (idx.min() < 0 or idx.max() >= graph.n_nodes):
        raise ValueError(f"`nodes` must be indices in [0, {graph.n_nodes}), got range [{idx.min()}, {idx.max()}]")
    return idx.astype(np.int64)


def normalized_laplacian(graph):
    r"""The symmetric normalised Laplacian :math:`L = I - D^{-1/2} A D^{-1/2}` (scipy CSR, float64)."""
    import scipy.sparse as sp

    _check_graph(graph)
    d = graph.degrees()
    s = 1.0 / np.sqrt(d)
    S = sp.diags(s) @ graph.adjacency() @ sp.diags(s)
    return (sp.identity(graph.n_nodes, format="csr") - S).tocsr()


def _flip_signs(U: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude entry of every column positive (deterministic eigenvector signs)."""
    rows = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[rows, np.arange(U.shape[1])])
    signs[signs == 0] = 1
    return U * signs


def laplacian_eigh(graph, k: int) -> tuple[np.ndarray, np.ndarray]:
    r"""The ``k`` smallest eigenpairs of the normalised Laplacian: ``(evals (k,), evecs (n, k))``, ascending.

    Dense ``eigh`` up to :data:`DENSE_MAX` nodes (:math:`O(n^3)`), ARPACK (``eigsh`` on the normalised adjacency,
    largest algebraic) beyond. Signs are fixed so that each vector's largest entry is positive. Within a repeated
    eigenvalue the basis is arbitrary (a star's leaves, a tree's siblings); quantities built from whole eigenspaces,
    such as kernels, do not depend on it.
    """
    n = graph.n_nodes
    k = check_int("k", k, min_value=1, max_value=n)
    L = normalized_laplacian(graph)
    if n <= DENSE_MAX:
        evals, evecs = np.linalg.eigh(L.toarray())
        evals, evecs = evals[:k], evecs[:, :k]
    else:
        import scipy.sparse as sp
        from scipy.sparse.linalg import eigsh

        S = sp.identity(n, format="csr") - L
        v0 = np.ones(n) / np.sqrt(n)
        mu, evecs = eigsh(S, k=k, which="LA", v0=v0, tol=1e-8)
        order = np.argsort(-mu)
        evals, evecs = 1.0 - mu[order], evecs[:, order]
    return np.clip(evals, 0.0, 2.0), _flip_signs(evecs)


def shortest_path_distances(graph, nodes: Any = None, *, weighted: bool = False) -> np.ndarray:
    """Hop counts (or weighted path lengths) between ``nodes``: ``(k, k)`` float64, ``inf`` across components.

    Breadth-first (Dijkstra when ``weighted``) from each of the ``k`` nodes over the whole graph, so paths may run
    through nodes that are not in ``nodes``: :math:`O(k (n + m))` time, :math:`O(k n)` memory.
    """
    from scipy.sparse.csgraph import shortest_path

    from .data._graph import Graph

    if not isinstance(graph, Graph):
        raise InputTypeError(f"`graph` must be an align.data Graph, got {type(graph).__name__}")
    idx = _nodes(graph, nodes)
    D = shortest_path(graph.adjacency(), directed=False, unweighted=not weighted, indices=idx)
    return np.ascontiguousarray(D[:, idx])


def shortest_path_kernel(graph, nodes: Any = None, *, gamma: float | None = None, weighted: bool = False) -> np.ndarray:
    r"""Shortest-path kernel :math:`K_{ij} = \exp(-\gamma\, d_{ij})` over ``nodes`` (``(k, k)`` float64).

    :math:`d` is the hop count (path length when ``weighted``); nodes in different components get 0. ``gamma``
    defaults to :math:`1/\mathrm{median}(d_{ij})` over finite off-diagonal pairs. On trees the kernel is positive
    semi-definite for every :math:`\gamma > 0` (tree metrics are of negative type, so Schoenberg's theorem applies);
    on graphs with cycles it can have small negative eigenvalues, which :func:`kernel_features` drops.
    """
    D = shortest_path_distances(graph, nodes, weighted=weighted)
    if gamma is None:
        off = D[~np.eye(len(D), dtype=bool) & np.isfinite(D)]
        med = float(np.median(off)) if off.size else 1.0
        gamma = 1.0 / med if med > 0 else 1.0
    gamma = check_float("gamma", gamma, min_value=0.0, inclusive=False)
    with np.errstate(over="ignore"):
        K = np.exp(-gamma * D)
    return K


def diffusion_kernel(graph, nodes: Any = None, *, t: float = 1.0) -> np.ndarray:
    r"""Heat (diffusion) kernel :math:`K = \exp(-t L)` of the normalised Laplacian, restricted to ``nodes``.

    Kondor & Lafferty (2002): :math:`K = \sum_j e^{-t\lambda_j} u_j u_j^\top`, positive definite; larger ``t``
    spreads similarity further. Exact, through a dense eigendecomposition of the whole graph (up to
    :data:`DENSE_MAX` nodes); for bigger graphs use the truncated ``graph:diffusion`` encoder, whose features
    ``F`` satisfy :math:`F F^\top \approx K`.
    """
    t = check_float("t", t, min_value=0.0)
    _check_graph(graph)
    if graph.n_nodes > DENSE_MAX:
        raise ValueError(f"graph has {graph.n_nodes} nodes; the exact diffusion kernel is computed densely up to "
                         f"{DENSE_MAX}: use load_encoder('graph:diffusion', dim=…) for a truncated factor instead")
    idx = _nodes(graph, nodes)
    evals, U = np.linalg.eigh(normalized_laplacian(graph).toarray())
    Ui = U[idx] * np.exp(-0.5 * t * np.clip(evals, 0.0, None))
    return Ui @ Ui.T


def kernel_features(K: Any, *, rank: int | None = None, tol: float = 1e-10) -> np.ndarray:
    r"""Features ``F`` (n, r) with :math:`F F^\top = K_+`, the positive semi-definite part of a symmetric kernel.

    .. math:: K = V \Lambda V^\top, \qquad F = V_{:, \Lambda > \epsilon} \Lambda_{> \epsilon}^{1/2}

    with :math:`\epsilon = \mathrm{tol} \cdot \lambda_{\max}` and at most ``rank`` columns (the largest
    eigenvalues). Negative eigenvalues (indefinite kernels) are dropped and their share of the spectrum is logged.
    ``F`` then stands for ``K`` wherever features are taken: linear CKA, permutation nulls, FAQ with
    ``kernel="linear"``, Procrustes. Cost: one dense ``eigh``, :math:`O(n^3)`.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"`K` must be a square (n, n) kernel matrix, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("`K` has NaN or inf entries; build it from a graph without them")
    asym = float(np.abs(K - K.T).max()) if K.size else 0.0
    if asym > 1e-8 * max(float(np.abs(K).max()), 1.0):
        raise ValueError(f"`K` must be symmetric (max |K - K^T| = {asym:.3g}); symmetrise it with (K + K.T) / 2")
    evals, V = np.linalg.eigh((K + K.T) / 2)
    evals, V = evals[::-1], V[:, ::-1]
    top = max(float(evals[0]), 0.0) if len(evals) else 0.0
    if top <= 0:
        raise ValueError("`K` has no positive eigenvalue; it is not a similarity kernel")
    neg = -evals[evals < 0].sum()
    if neg > 1e-9 * np.abs(evals).sum():
        log.info("kernel_features: dropped negative eigenvalues holding %.2g of the spectrum's mass",
                 neg / np.abs(evals).sum())
    keep = evals > tol * top
    if rank is not None:
        rank = check_int("rank", rank, min_value=1)
        keep &= np.arange(len(evals)) < rank
    return _flip_signs(V[:, keep]) * np.sqrt(evals[keep])
