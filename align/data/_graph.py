"""Graphs whose nodes carry text: the :class:`Graph` structure, node datasets and ``graph:EDGES[,NODES]``.

A graph dataset pairs two views of the same nodes. The ``node`` field (modality ``"graph"``) yields one
:class:`GraphNode` per item, a handle ``(graph, index)``: graph encoders embed the *whole* graph once and return the
rows of the requested nodes, so row ``i`` of a graph embedding and row ``i`` of a text embedding of the ``lemma`` or
``definition`` field describe the same node. The items can be a subset of the graph's nodes (the 1,000 ImageNet
leaves of the WordNet subtree, whose ancestors are nodes but not items).

Edge lists are read as undirected, unweighted or weighted (a third column). Bad graphs fail at load time with a
one-line message: an edge naming a node missing from the node table (dangling edge), a node without edges (isolated:
spectral and diffusion encoders are undefined there; ``isolated="drop"`` removes them), an empty text cell, a node
table without an id column, no edges at all.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._base import Dataset
from ._common import check_options, existing_file, hash_texts, open_text

log = logging.getLogger(__name__)

__all__ = ["Graph", "GraphNode", "GraphDataset", "load_graph", "read_edge_list", "read_node_table"]

_ID_COLUMNS = ("id", "node", "node_id", "name", "wnid")
_LABEL_COLUMNS = ("label", "class")
_EDGE_HEADERS = {"source", "target", "src", "dst", "u", "v", "from", "to", "node1", "node2", "head", "tail",
                 "weight", "w", "id1", "id2"}


class Graph:
    """An undirected graph on ``n_nodes`` nodes with stable string ids.

    Parameters
    ----------
    node_ids : sequence of str
        Unique node ids; node ``k`` is ``node_ids[k]``.
    edges : int array of shape (m, 2)
        Node index pairs. Stored once per unordered pair (``i < j``, sorted); duplicates are merged (weights
        summed) and self-loops dropped.
    weights : float array of shape (m,), optional
        Positive edge weights (default 1).
    name : str
        Shown in messages.

    Notes
    -----
    :meth:`adjacency` is the symmetric ``(n, n)`` scipy CSR matrix ``A``; :meth:`degrees` its row sums.
    :meth:`fingerprint` hashes ids, edges and weights, so a feature cache keyed on it misses when the graph changes.
    """

    def __init__(self, node_ids: Sequence[str], edges: Any, weights: Any = None, *, name: str = "graph"):
        self.name = name
        self.node_ids = [str(x) for x in node_ids]
        self.index = {nid: k for k, nid in enumerate(self.node_ids)}
        if len(self.index) != len(self.node_ids):
            seen: set[str] = set()
            dup = next(x for x in self.node_ids if x in seen or seen.add(x))
            raise ValueError(f"graph {name!r} lists node {dup!r} twice; node ids must be unique")
        e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        w = np.ones(len(e)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(w) != len(e):
            raise ValueError(f"graph {name!r}: {len(w)} weights for {len(e)} edges; give one weight per edge")
        n = len(self.node_ids)
        if len(e) and (e.min() < 0 or e.max() >= n):
            raise ValueError(f"graph {name!r}: an edge names node index {int(e.max())}, but there are {n} nodes")
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"graph {name!r}: edge weights must be finite and > 0")
        keep = e[:, 0] != e[:, 1]
        if not keep.all():
            log.warning("graph %s: dropped %d self-loop(s)", name, int((~keep).sum()))
        e, w = np.sort(e[keep], axis=1), w[keep]
        key = e[:, 0] * n + e[:, 1]
        uniq, inv = np.unique(key, return_inverse=True)
        self.weights = np.bincount(inv, weights=w, minlength=len(uniq)).astype(np.float64)
        self.edges = np.stack([uniq // max(n, 1), uniq % max(n, 1)], axis=1).astype(np.int64)
        self._adj = None
        self._fp: str | None = None

    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def adjacency(self):
        """Symmetric ``(n, n)`` ``scipy.sparse.csr_matrix`` of edge weights (float64)."""
        if self._adj is None:
            import scipy.sparse as sp

            i, j = self.edges[:, 0], self.edges[:, 1]
            self._adj = sp.csr_matrix(
                (np.concatenate([self.weights, self.weights]), (np.concatenate([i, j]), np.concatenate([j, i]))),
                shape=(self.n_nodes, self.n_nodes),
            )
        return self._adj

    def degrees(self) -> np.ndarray:
        """Weighted degree of every node, ``(n,)`` float64."""
        return np.asarray(self.adjacency().sum(axis=1)).ravel()

    def isolated(self) -> np.ndarray:
        """Indices of nodes without edges."""
        return np.flatnonzero(self.degrees() == 0)

    def n_components(self) -> int:
        from scipy.sparse.csgraph import connected_components

        return int(connected_components(self.adjacency(), directed=False)[0])

    def fingerprint(self) -> str:
        """sha256 over node ids, edges and weights."""
        if self._fp is None:
            h = hashlib.sha256(hash_texts("graph-nodes", self.node_ids).encode())
            h.update(np.ascontiguousarray(self.edges, dtype="<i8").tobytes())
            h.update(np.ascontiguousarray(self.weights, dtype="<f8").tobytes())
            self._fp = h.hexdigest()
        return self._fp

    def __repr__(self) -> str:
        return f"Graph(name={self.name!r}, n_nodes={self.n_nodes}, n_edges={self.n_edges})"


class GraphNode:
    """One node of a graph, as a graph encoder's input: ``graph`` and the node's ``index`` in it."""

    __slots__ = ("graph", "index")

    def __init__(self, graph: Graph, index: int):
        self.graph = graph
        self.index = int(index)

    @property
    def id(self) -> str:
        return self.graph.node_ids[self.index]

    def __repr__(self) -> str:
        return f"GraphNode({self.id!r} of {self.graph.name!r})"


class GraphDataset(Dataset):
    """Nodes of a graph as items: a ``node`` field (modality ``"graph"``) plus text fields.

    Parameters
    ----------
    graph : Graph
    items : int array, optional
        Graph node indices that are items, in dataset order (default: every node, in graph order).
    texts : dict of str to list of str, optional
        Text fields, one string per item (e.g. ``lemma``, ``definition``).
    labels, classes : optional
        Per-item class index and class names.
    default_field : str
        ``"node"`` unless given.
    spec : str
    """

    def __init__(self, graph: Graph, *, items: Any = None, texts: dict[str, list[str]] | None = None,
                 labels: Any = None, classes: list[str] | None = None, default_field: str = "node",
                 spec: str = "graph"):
        self.spec = spec
        self.graph = graph
        self.items = np.arange(graph.n_nodes) if items is None else np.asarray(items, dtype=np.int64)
        texts = dict(texts or {})
        for name, values in texts.items():
            if len(values) != len(self.items):
                raise ValueError(f"text field {name!r} has {len(values)} entries for {len(self.items)} items")
        self._text = {k: list(v) for k, v in texts.items()}
        self.fields = ("node",) + tuple(self._text)
        if default_field not in self.fields:
            raise ValueError(f"`default_field` must be one of {', '.join(self.fields)}, got {default_field!r}")
        self.default_field = default_field
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.classes = classes
        self._ids = [graph.node_ids[k] for k in self.items]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def modality(self, field: str | None = None) -> str:
        return "graph" if self.resolve_field(field) == "node" else "text"

    def texts(self, field: str | None = None) -> list[str]:
        field = self.resolve_field(field)
        if field == "node":
            raise ValueError("field 'node' is the graph itself, not text; pick a text field: "
                             + ", ".join(self._text))
        return list(self._text[field])

    def get(self, row: int, field: str | None = None) -> Any:
        field = self.resolve_field(field)
        if field == "node":
            return GraphNode(self.graph, self.items[row])
        return self._text[field][row]

    def fingerprint(self, field: str | None = None) -> str:
        field = self.resolve_field(field)
        if field == "node":
            h = hashlib.sha256(self.graph.fingerprint().encode())
            h.update(np.ascontiguousarray(self.items, dtype="<i8").tobytes())
            return h.hexdigest()
        return hash_texts("text", self._text[field])


# -- reading edge lists and node tables ----------------------------------------------------------------------


def _rows(path: Path) -> list[list[str]]:
    """Non-empty, non-comment rows of a CSV / TSV / whitespace-separated file (``.gz`` allowed)."""
    text = open_text(path)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    first = lines[0]
    if "\t" in first:
        delim = "\t"
    elif "," in first:
        delim = ","
    else:
        return [ln.split() for ln in lines]
    return [[c.strip() for c in row] for row in csv.reader(io.StringIO("\n".join(lines)), delimiter=delim)]


def read_edge_list(path: Path, spec: str) -> tuple[list[tuple[str, str]], np.ndarray | None]:
    """``[(u, v), …]`` and weights (or None) from an edge list: two or three columns, optional header."""
    rows = _rows(path)
    if rows and {c.lower() for c in rows[0]} <= _EDGE_HEADERS:
        rows = rows[1:]
    if not rows:
        raise ValueError(f"edge list {str(path)!r} has no edges (dataset {spec!r}); one 'source,target' per line")
    pairs, weights = [], []
    for k, row in enumerate(rows, start=1):
        if len(row) not in (2, 3) or not row[0] or not row[1]:
            raise ValueError(f"edge list {str(path)!r} line {k}: expected 'source,target[,weight]', got {row!r}")
        pairs.append((row[0], row[1]))
        if len(row) == 3:
            try:
                weights.append(float(row[2]))
            except ValueError:
                raise ValueError(f"edge list {str(path)!r} line {k}: weight {row[2]!r} is not a number") from None
    if weights and len(weights) != len(pairs):
        raise ValueError(f"edge list {str(path)!r}: some lines have a weight and some do not; give all or none")
    return pairs, (np.asarray(weights) if weights else None)


def read_node_table(path: Path, spec: str) -> tuple[list[str], dict[str, list[str]], list[str] | None]:
    """Node ids, text columns and labels (or None) from a CSV / TSV node table with a header row."""
    rows = _rows(path)
    if len(rows) < 2:
        raise ValueError(f"node table {str(path)!r} needs a header row and at least one node (dataset {spec!r})")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    id_col = next((lower.index(c) for c in _ID_COLUMNS if c in lower), None)
    if id_col is None:
        raise ValueError(f"node table {str(path)!r} has no id column; name one of its columns "
                         f"{' or '.join(_ID_COLUMNS[:2])} (header: {', '.join(header)})")
    label_col = next((lower.index(c) for c in _LABEL_COLUMNS if c in lower), None)
    ids: list[str] = []
    cols = {h: [] for k, h in enumerate(header) if k not in (id_col, label_col)}
    labels: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"node table {str(path)!r} line {line}: {len(row)} columns, the header has {len(header)}")
        if not row[id_col]:
            raise ValueError(f"node table {str(path)!r} line {line}: empty node id")
        ids.append(row[id_col])
        for k, h in enumerate(header):
            if k in (id_col, label_col):
                continue
            if not row[k]:
                raise ValueError(f"node {row[id_col]!r} (line {line} of {str(path)!r}) has no text in column {h!r}; "
                                 "fill it in or drop the column")
            cols[h].append(row[k])
        if label_col is not None:
            labels.append(row[label_col])
    return ids, cols, (labels if label_col is not None else None)


def load_graph(spec: str, rest: str, options: dict) -> GraphDataset:
    """``graph:EDGES[,NODES]``: an edge list plus an optional node table with text columns."""
    check_options(spec, options, ["isolated", "default_field"])
    isolated = options.get("isolated", "error")
    if isolated not in ("error", "drop"):
        raise ValueError(f"`isolated` must be 'error' or 'drop', got {isolated!r}")
    edges_path, _, nodes_path = rest.partition(",")
    edges_file = existing_file(edges_path.strip(), "edge list", spec)
    pairs, weights = read_edge_list(edges_file, spec)
    texts: dict[str, list[str]] = {}
    labels = classes = None
    if nodes_path.strip():
        nodes_file = existing_file(nodes_path.strip(), "node table", spec)
        node_ids, texts, label_names = read_node_table(nodes_file, spec)
        index = {}
        for k, nid in enumerate(node_ids):
            if nid in index:
                raise ValueError(f"node table {str(nodes_file)!r} lists node {nid!r} twice; ids must be unique")
            index[nid] = k
        for line, (u, v) in enumerate(pairs, start=1):
            for x in (u, v):
                if x not in index:
                    raise ValueError(f"dangling edge: edge {line} ({u!r}, {v!r}) of {str(edges_file)!r} names node "
                                     f"{x!r}, which is not in the node table {str(nodes_file)!r}; add the node or "
                                     "drop the edge")
        if label_names is not None:
            classes = sorted(set(label_names))
            labels = [classes.index(x) for x in label_names]
    else:
        node_ids = sorted({x for pair in pairs for x in pair})
        index = {nid: k for k, nid in enumerate(node_ids)}
    edge_idx = np.asarray([(index[u], index[v]) for u, v in pairs], dtype=np.int64)
    graph = Graph(node_ids, edge_idx, weights, name=spec)
    if graph.n_edges == 0:
        raise ValueError(f"graph {spec!r} has no edges between distinct nodes; check the edge list")
    iso = graph.isolated()
    items = np.arange(graph.n_nodes)
    if len(iso):
        if isolated == "error":
            names = ", ".join(repr(node_ids[k]) for k in iso[:3])
            raise ValueError(f"graph {spec!r} has {len(iso)} isolated node(s) without edges ({names}"
                             f"{', …' if len(iso) > 3 else ''}); graph encoders cannot place them: add their edges "
                             "or pass --dataset-option isolated=drop")
        keep = np.setdiff1d(items, iso)
        remap = -np.ones(graph.n_nodes, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        graph = Graph([node_ids[k] for k in keep], remap[graph.edges], graph.weights, name=spec)
        texts = {f: [vals[k] for k in keep] for f, vals in texts.items()}
        if labels is not None:
            labels = [labels[k] for k in keep]
        items = np.arange(graph.n_nodes)
        log.warning("graph %s: dropped %d isolated node(s)", spec, len(iso))
    default_field = options.get("default_field", "node")
    return GraphDataset(graph, items=items, texts=texts, labels=labels, classes=classes,
                        default_field=default_field, spec=spec)
