"""Graph encoders: non-learned node embeddings and a loader for a user's GNN.

The inputs are :class:`~align.data._graph.GraphNode` handles (the ``node`` field of a graph dataset). A node's
embedding depends on the whole graph, so every encoder embeds the whole graph once (memoised by the graph's
fingerprint) and returns the requested rows; batching only slices. No pretrained GNN exists on any registry these
machines reach, so the built-ins are classical, non-learned embeddings, named as such:

* ``graph:spectral`` — Laplacian eigenmaps (Belkin & Niyogi 2003): the ``dim`` eigenvectors after the first of the
  normalised Laplacian, rescaled :math:`D^{-1/2} u_j` (the random-walk Laplacian's eigenvectors).
* ``graph:diffusion`` — heat-kernel features :math:`e^{-t\\lambda_j/2} u_j` over the ``dim`` smallest eigenpairs,
  so that :math:`F F^\\top` is the truncated heat kernel :math:`\\exp(-tL)` (Kondor & Lafferty 2002; see
  :func:`align.graph_kernels.diffusion_kernel`).
* ``graph:walk`` — DeepWalk-style co-occurrence of nodes within ``window`` steps on seeded random walks, turned
  into positive PMI and factorised by a seeded randomised SVD, :math:`U \\Sigma^{1/2}` (Levy & Goldberg 2014; Qiu
  et al. 2018 show DeepWalk factorises such a matrix).
* ``gnn:PATH`` — a user's graph network: a pickled ``torch.nn.Module`` (``torch.save(model, PATH)``) or a
  TorchScript file, called once per graph as ``model(x, edge_index)`` (PyTorch Geometric's convention, both edge
  directions) or ``model(x, adj)`` with the GCN-normalised dense adjacency :math:`\\hat D^{-1/2}(A+I)\\hat
  D^{-1/2}` (``graph_input="adjacency"``); it must return ``(n_nodes, d)`` node features. Node input features
  ``x``: ``"degree"`` (``log(1 + deg)``, one column; default), ``"ones"``, ``"spectral:K"`` (K eigenmap columns) or
  a ``.npy`` file of shape ``(n_nodes, f)`` in graph node order.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._validation import InputTypeError, check_float, check_int
from ._base import Encoder
from ._torch import FINAL, file_digest, parse_dtype, parse_layers, state_dict_digest

log = logging.getLogger(__name__)

__all__ = ["GraphEncoder", "SpectralEncoder", "DiffusionEncoder", "WalkEncoder", "GNNEncoder", "GraphBatch",
           "load_graph_encoder", "load_gnn"]

_VERSION = "1"


class GraphBatch:
    """A preprocessed batch: the graph and the node indices of the batch's rows."""

    __slots__ = ("graph", "index")

    def __init__(self, graph, index: np.ndarray):
        self.graph, self.index = graph, index


def _check_nodes(inputs: Sequence[Any]) -> GraphBatch:
    from ..data._graph import Graph, GraphNode

    inputs = list(inputs)
    if not inputs:
        raise ValueError("cannot preprocess an empty batch of graph nodes")
    if len(inputs) == 1 and isinstance(inputs[0], Graph):
        g = inputs[0]
        return GraphBatch(g, np.arange(g.n_nodes))
    for x in inputs:
        if not isinstance(x, GraphNode):
            raise InputTypeError("graph encoders take GraphNode inputs (the 'node' field of a graph dataset) or one "
                                 f"Graph, got {type(x).__name__}")
    graph = inputs[0].graph
    if any(x.graph is not graph for x in inputs):
        raise ValueError("a batch of graph nodes must come from one graph; embed each graph separately")
    return GraphBatch(graph, np.asarray([x.index for x in inputs], dtype=np.int64))


class GraphEncoder(Encoder):
    """Base of the graph encoders: embed the whole graph once per fingerprint, return the rows asked for.

    ``encode(nodes)`` takes :class:`GraphNode` s of one graph (or ``[graph]`` for every node);
    :meth:`embed_graph` returns all nodes' features at once.
    """

    modality = "graph"
    default_batch_size = 4096

    def _init_common(self, spec: str, dim: int, normalize: Any, batch_size: Any, layers: Any) -> None:
        if parse_layers(layers) != [FINAL]:
            raise ValueError(f"{spec!r} has one output: `layers` is not available for it")
        if normalize is not None and not isinstance(normalize, bool):
            raise InputTypeError(f"`normalize` must be True, False or None, got {normalize!r}")
        self.normalize = bool(normalize)
        if batch_size is not None:
            self.default_batch_size = check_int("batch_size", batch_size, min_value=1)
        self.spec = spec
        self.layers = (FINAL,)
        self.dims = {FINAL: int(dim)}
        self._memo: dict[str, np.ndarray] = {}

    def preprocess(self, inputs: Sequence[Any]) -> GraphBatch:
        return _check_nodes(inputs)

    def embed_graph(self, graph) -> np.ndarray:
        """``(n_nodes, dim)`` float32 features of every node of ``graph`` (computed once per graph content)."""
        key = graph.fingerprint()
        if key not in self._memo:
            emb = np.asarray(self._embed(graph), dtype=np.float64)
            if emb.shape != (graph.n_nodes, self.dim):
                raise RuntimeError(f"{self.spec!r} produced shape {emb.shape}, expected ({graph.n_nodes}, {self.dim})")
            if self.normalize:
                emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            self._memo.clear()  # keep one graph
            self._memo[key] = emb.astype(np.float32)
        return self._memo[key]

    def forward(self, batch: GraphBatch) -> dict[str, Any]:
        import torch

        return {FINAL: torch.from_numpy(np.ascontiguousarray(self.embed_graph(batch.graph)[batch.index]))}

    def _embed(self, graph) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_size(self, graph, needed: int) -> None:
        if graph.n_nodes < needed:
            raise ValueError(f"{self.spec!r} with dim={self.dim} needs a graph of at least {needed} nodes, "
                             f"got {graph.n_nodes}; lower `dim`")

    def _params(self) -> dict:
        return {}

    def config(self) -> dict:
        return {"spec": self.spec, "encoder": type(self).__name__, "dim": self.dim, "normalize": self.normalize,
                "version": _VERSION, **self._params()}

    def weights_digest(self) -> str:
        return "non-learned"


class SpectralEncoder(GraphEncoder):
    r"""Laplacian eigenmaps: :math:`D^{-1/2} u_j`, :math:`j = 2 … \mathrm{dim}+1`, of the normalised Laplacian.

    :math:`L = I - D^{-1/2} A D^{-1/2}` with eigenvectors :math:`u_j` in ascending eigenvalue order.

    Non-learned. On a disconnected graph the first vectors indicate components. Cost: dense ``eigh``
    :math:`O(n^3)` up to 5,000 nodes, ARPACK beyond.
    """

    def __init__(self, *, dim: int = 64, normalize: bool | None = None, batch_size: int | None = None,
                 layers: Any = None):
        self._init_common("graph:spectral", check_int("dim", dim, min_value=1), normalize, batch_size, layers)

    def _embed(self, graph) -> np.ndarray:
        from ..graph_kernels import laplacian_eigh

        self._check_size(graph, self.dim + 1)
        _, U = laplacian_eigh(graph, self.dim + 1)
        return U[:, 1:] / np.sqrt(graph.degrees())[:, None]


class DiffusionEncoder(GraphEncoder):
    r"""Heat-kernel features :math:`F_{:,j} = e^{-t\lambda_j/2} u_j` over the ``dim`` smallest Laplacian eigenpairs.

    :math:`F F^\top` is the heat kernel :math:`\exp(-tL)` truncated to ``dim`` eigenpairs (exact when ``dim`` is
    the number of nodes). Non-learned.
    """

    def __init__(self, *, dim: int = 64, t: float = 1.0, normalize: bool | None = None,
                 batch_size: int | None = None, layers: Any = None):
        self.t = check_float("t", t, min_value=0.0)
        self._init_common("graph:diffusion", check_int("dim", dim, min_value=1), normalize, batch_size, layers)

    def _params(self) -> dict:
        return {"t": self.t}

    def _embed(self, graph) -> np.ndarray:
        from ..graph_kernels import laplacian_eigh

        self._check_size(graph, self.dim)
        evals, U = laplacian_eigh(graph, self.dim)
        return U * np.exp(-0.5 * self.t * evals)


class WalkEncoder(GraphEncoder):
    r"""Random-walk co-occurrence + SVD (non-learned DeepWalk): :math:`U_{:d} \Sigma_{:d}^{1/2}` of the PPMI matrix.

    ``walks_per_node`` walks of ``walk_length`` steps start at every node (next node drawn proportionally to edge
    weight, from one seeded generator); two nodes co-occur when at most ``window`` steps apart on a walk.
    :math:`\mathrm{PPMI}_{ij} = \max(0, \log \frac{C_{ij} C}{C_i C_j} - \log \mathrm{negative})`, factorised by a
    randomised SVD seeded with ``seed``. Cost: :math:`O(n \cdot \mathrm{walks} \cdot \mathrm{length} \cdot
    \mathrm{window})` to count, sparse SVD after.
    """

    def __init__(self, *, dim: int = 64, walks_per_node: int = 10, walk_length: int = 20, window: int = 5,
                 negative: float = 1.0, seed: int = 0, normalize: bool | None = None, batch_size: int | None = None,
                 layers: Any = None):
        self.walks_per_node = check_int("walks_per_node", walks_per_node, min_value=1)
        self.walk_length = check_int("walk_length", walk_length, min_value=1)
        self.window = check_int("window", window, min_value=1)
        self.negative = check_float("negative", negative, min_value=0.0, inclusive=False)
        self.seed = check_int("seed", seed, min_value=0)
        self._init_common("graph:walk", check_int("dim", dim, min_value=1), normalize, batch_size, layers)

    def _params(self) -> dict:
        return {"walks_per_node": self.walks_per_node, "walk_length": self.walk_length, "window": self.window,
                "negative": self.negative, "seed": self.seed}

    def cooccurrence(self, graph):
        """Symmetric sparse co-occurrence counts ``C`` (n, n) from the seeded walks."""
        import scipy.sparse as sp

        from ..graph_kernels import _check_graph

        _check_graph(graph)
        A = graph.adjacency()
        n = graph.n_nodes
        indptr, indices = A.indptr, A.indices
        cum = np.cumsum(A.data)
        row_start = np.concatenate([[0.0], cum])[indptr[:-1]]
        deg = graph.degrees()
        rng = np.random.default_rng(self.seed)
        C = sp.csr_matrix((n, n))
        starts = np.repeat(np.arange(n), self.walks_per_node)
        chunk = max(1, 2_000_000 // (self.walk_length + 1))
        for s in range(0, len(starts), chunk):
            cur = starts[s:s + chunk]
            walk = np.empty((len(cur), self.walk_length + 1), dtype=np.int64)
            walk[:, 0] = cur
            for step in range(1, self.walk_length + 1):
                r = row_start[cur] + rng.random(len(cur)) * deg[cur]
                pos = np.minimum(np.searchsorted(cum, r, side="right"), indptr[cur + 1] - 1)
                cur = indices[pos]
                walk[:, step] = cur
            rows, cols = [], []
            for o in range(1, min(self.window, self.walk_length) + 1):
                rows.append(walk[:, :-o].ravel())
                cols.append(walk[:, o:].ravel())
            r_, c_ = np.concatenate(rows), np.concatenate(cols)
            part = sp.csr_matrix((np.ones(len(r_)), (r_, c_)), shape=(n, n))
            C = C + part + part.T
        return C.tocsr()

    def _embed(self, graph) -> np.ndarray:
        from sklearn.utils.extmath import randomized_svd, svd_flip

        self._check_size(graph, self.dim + 1)
        C = self.cooccurrence(graph).tocoo()
        total = C.sum()
        rs = np.asarray(C.sum(axis=1)).ravel()
        vals = np.log(C.data * total / (rs[C.row] * rs[C.col])) - np.log(self.negative)
        keep = vals > 0
        import scipy.sparse as sp

        M = sp.csr_matrix((vals[keep], (C.row[keep], C.col[keep])), shape=C.shape)
        U, S, Vt = randomized_svd(M, self.dim, n_iter=7, random_state=self.seed)
        U, _ = svd_flip(U, Vt)
        return U * np.sqrt(S)


# -- user GNNs ------------------------------------------------------------------------------------------------

_GRAPH_INPUTS = ("edge_index", "adjacency")


@functools.lru_cache(maxsize=None)
def _frozen_class():
    import torch

    class Frozen(torch.nn.Module):
        """A plain module around a TorchScript module, so ``requires_grad_`` / ``eval`` / ``to`` work on it."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args)

    return Frozen


def _Frozen(inner):
    return _frozen_class()(inner)


def load_torch_model(path: str | Path, what: str):
    """A TorchScript module or a pickled ``torch.nn.Module`` from ``path`` (TorchScript tried first).

    Pickled modules run arbitrary code when unpickled: load only files you trust. A ``state_dict`` (a dict of
    tensors) is refused with a hint, since the architecture is not in the file.
    """
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} checkpoint {str(p)!r} does not exist; check the path")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            return _Frozen(torch.jit.load(str(p), map_location="cpu")), "torchscript"
    except (RuntimeError, ValueError):
        pass
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{what} checkpoint {str(p)!r} is neither TorchScript nor a pickled torch module "
                         f"({type(exc).__name__}: {exc})") from None
    if isinstance(obj, torch.nn.Module):
        return obj, "module"
    if isinstance(obj, dict):
        raise ValueError(f"{what} checkpoint {str(p)!r} holds a state_dict, not a model; save the whole module "
                         "(torch.save(model, path)) or a TorchScript file (torch.jit.script(model).save(path))")
    raise ValueError(f"{what} checkpoint {str(p)!r} holds a {type(obj).__name__}, not a torch module")


class GNNEncoder(GraphEncoder):
    """A user's graph network run once per graph; see the module docstring for the calling convention.

    Parameters
    ----------
    model : torch.nn.Module or torch.jit.ScriptModule
        Owned by the encoder from now on (moved to ``device``, put in ``eval()``); pass a copy to keep yours.
    node_features : {"degree", "ones"} or "spectral:K" or path to .npy
    graph_input : {"edge_index", "adjacency"}
    device, dtype : where and in which precision it runs (``dtype`` casts the model and inputs).
    spec, digest : str
        Spec shown in results and the weights digest (default: sha256 over the model's ``state_dict``).
    """

    def __init__(self, model, *, node_features: str = "degree", graph_input: str = "edge_index",
                 device: Any = None, dtype: Any = None, normalize: bool | None = None, batch_size: int | None = None,
                 layers: Any = None, spec: str = "gnn:<module>", digest: str | None = None):
        import torch

        from .._backend import resolve_device

        if not isinstance(model, torch.nn.Module):
            raise InputTypeError(f"`model` must be a torch.nn.Module or TorchScript module, got {type(model).__name__}")
        if graph_input not in _GRAPH_INPUTS:
            raise ValueError(f"`graph_input` must be one of {', '.join(_GRAPH_INPUTS)}, got {graph_input!r}")
        self.graph_input = graph_input
        self.node_features = self._check_features(node_features)
        self.device = resolve_device(device if device is not None else "cpu")
        self.dtype = parse_dtype(dtype)
        if isinstance(model, torch.jit.ScriptModule):
            model = _Frozen(model)
        model.eval()
        model.requires_grad_(False)
        model.to(self.device)
        if self.dtype != "float32":
            model.to(getattr(torch, self.dtype))
        self.model = model
        self._digest = digest or state_dict_digest(model)
        self._init_common(spec, 1, normalize, batch_size, layers)
        self._memo = {}
        self.dims = {FINAL: self._probe_dim()}

    @staticmethod
    def _check_features(node_features: Any) -> str:
        if not isinstance(node_features, str):
            raise InputTypeError(f"`node_features` must be 'degree', 'ones', 'spectral:K' or a .npy path, got "
                                 f"{node_features!r}")
        if node_features in ("degree", "ones"):
            return node_features
        if node_features.startswith("spectral:"):
            k = node_features.split(":", 1)[1]
            if not k.isdigit() or int(k) < 1:
                raise ValueError(f"`node_features` 'spectral:K' needs a positive integer K, got {node_features!r}")
            return node_features
        if node_features.endswith(".npy"):
            if not Path(node_features).expanduser().is_file():
                raise FileNotFoundError(f"node feature file {node_features!r} does not exist; check the path")
            return node_features
        raise ValueError(f"`node_features` must be 'degree', 'ones', 'spectral:K' or a .npy path, got "
                         f"{node_features!r}")

    def _features(self, graph) -> np.ndarray:
        nf = self.node_features
        if nf == "degree":
            return np.log1p(graph.degrees())[:, None]
        if nf == "ones":
            return np.ones((graph.n_nodes, 1))
        if nf.startswith("spectral:"):
            return SpectralEncoder(dim=int(nf.split(":", 1)[1]))._embed(graph)
        x = np.load(Path(nf).expanduser(), allow_pickle=False)
        if x.ndim != 2 or x.shape[0] != graph.n_nodes:
            raise ValueError(f"node feature file {nf!r} has shape {x.shape}; expected ({graph.n_nodes}, f), one row "
                             "per graph node in graph order")
        return x

    def _input_width(self) -> int:
        nf = self.node_features
        if nf in ("degree", "ones"):
            return 1
        if nf.startswith("spectral:"):
            return int(nf.split(":", 1)[1])
        return int(np.load(Path(nf).expanduser(), mmap_mode="r").shape[1])

    def _run(self, graph, x: np.ndarray) -> np.ndarray:
        import torch

        x = torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device).to(getattr(torch, self.dtype))
        with torch.inference_mode():
            if self.graph_input == "edge_index":
                e = torch.as_tensor(graph.edges.T, device=self.device)
                out = self.model(x, torch.cat([e, e.flip(0)], dim=1))
            else:
                A = torch.as_tensor(graph.adjacency().toarray(), dtype=x.dtype, device=self.device)
                A = A + torch.eye(graph.n_nodes, dtype=x.dtype, device=self.device)
                s = A.sum(1).rsqrt()
                out = self.model(x, s[:, None] * A * s[None, :])
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != graph.n_nodes:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{self.spec!r} returned {shape} for a graph of {graph.n_nodes} nodes; the model must "
                             "return (n_nodes, d) node features")
        return out.float().cpu().numpy()

    def _probe_dim(self) -> int:
        """Output width, from one run on a 3-node path graph with inputs of the configured width."""
        from ..data._graph import Graph

        probe = Graph(["a", "b", "c"], [[0, 1], [1, 2]], name="probe")
        try:
            return int(self._run(probe, np.ones((3, self._input_width()))).shape[1])
        except Exception as exc:  # noqa: BLE001 - report what the user's model did
            raise ValueError(f"{self.spec!r} failed on a 3-node test graph ({type(exc).__name__}: {exc}); check "
                             "node_features (input width) and graph_input (edge_index or adjacency)") from None

    def _embed(self, graph) -> np.ndarray:
        from ..graph_kernels import _check_graph

        _check_graph(graph)
        return self._run(graph, self._features(graph))

    def _params(self) -> dict:
        return {"node_features": self.node_features if not self.node_features.endswith(".npy")
                else f"file:{file_digest(self.node_features)}", "graph_input": self.graph_input,
                "dtype": self.dtype}

    def weights_digest(self) -> str:
        return self._digest


def load_graph_encoder(name: str, **options) -> GraphEncoder:
    """``graph:spectral`` / ``graph:diffusion`` / ``graph:walk`` with their options."""
    kinds = {"spectral": SpectralEncoder, "diffusion": DiffusionEncoder, "walk": WalkEncoder}
    if name not in kinds:
        raise ValueError(f"unknown graph encoder 'graph:{name}'; use one of: "
                         f"{', '.join('graph:' + k for k in kinds)}, or gnn:PATH for your own model")
    import inspect

    valid = [p for p in inspect.signature(kinds[name]).parameters if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputTypeError(f"encoder 'graph:{name}' does not take option(s) {', '.join(unknown)}; its options are "
                             f"{', '.join(valid)}")
    return kinds[name](**options)


def load_gnn(path: str, **options) -> GNNEncoder:
    """``gnn:PATH``: a pickled torch module or TorchScript file; see :class:`GNNEncoder`."""
    model, kind = load_torch_model(path, "GNN")
    return GNNEncoder(model, spec=f"gnn:{path}", digest=f"{kind}:{file_digest(Path(path).expanduser())}", **options)
