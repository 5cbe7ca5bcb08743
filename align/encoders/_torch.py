"""Shared machinery of the torch encoders: options, pooling, dtype / autocast, weight digests, preprocessors.

Every torch encoder (``minilm``, ``efficientnet-lite0``, ``timm:…``, ``st:…``, ``hf:…``) is a
:class:`TorchEncoder`: it owns its model (built by the loader, so moving it to ``device`` or casting it never
touches anything of the caller's), keeps it in ``eval()`` with gradients off, and runs it under
``torch.inference_mode()`` and, for ``dtype="bfloat16"`` / ``"float16"``, ``torch.autocast``. Pooling and L2
normalisation happen in float32 whatever the compute dtype, so every layer comes back as ``(b, d)`` float32.

Preprocessing is a separate, picklable object (:attr:`TorchEncoder.preprocessor`) holding no model and no CUDA
state, so a ``DataLoader`` can run it in worker processes: ``encoder.preprocessor(inputs)`` is
``encoder.preprocess(inputs)``.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from .._backend import resolve_device
from .._io import sha256_file
from .._validation import InputTypeError, check_int
from ._base import Encoder

log = logging.getLogger(__name__)

__all__ = [
    "TorchEncoder",
    "ImagePreprocessor",
    "TextPreprocessor",
    "POOLINGS",
    "FINAL",
    "parse_dtype",
    "parse_layers",
    "pool_tokens",
    "pool_map",
    "file_digest",
    "state_dict_digest",
    "to_pil",
]

#: Name of the last layer: the model's own output (pooled features for images, last hidden state for text).
FINAL = "final"
#: Pooling names: ``cls`` (first token), ``mean`` (attention-masked mean for text, mean over patch tokens or
#: spatial positions for images), ``cls+mean`` (their concatenation, ``2 d``).
POOLINGS = ("cls", "mean", "cls+mean")
_POOLING_ALIASES = {"avg": "mean", "token": "cls"}
_DTYPES = {
    None: "float32",
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def parse_dtype(dtype: Any) -> str:
    """Normalise ``dtype`` (None, a name or a ``torch.dtype``) to ``"float32"``, ``"bfloat16"`` or ``"float16"``."""
    if dtype is not None and not isinstance(dtype, str):
        dtype = str(dtype).replace("torch.", "")
    if dtype not in _DTYPES:
        raise ValueError(
            f"`dtype` must be one of 'float32', 'bfloat16', 'float16' (or a torch dtype), got {dtype!r}"
        )
    return _DTYPES[dtype]


def parse_pooling(pooling: Any, *, allow_none: bool = True) -> str | None:
    """Normalise a pooling name (``avg`` is ``mean``, ``token`` is ``cls``); ``None`` means the model's default."""
    if pooling is None and allow_none:
        return None
    if not isinstance(pooling, str):
        raise InputTypeError(f"`pooling` must be one of {', '.join(map(repr, POOLINGS))} or None, got {pooling!r}")
    pooling = _POOLING_ALIASES.get(pooling, pooling)
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {', '.join(map(repr, POOLINGS))} or None, got {pooling!r}")
    return pooling


def parse_layers(layers: Any) -> list[str | int]:
    """Normalise the ``layers`` option to a non-empty list of ``"final"``, layer names or integer indices.

    ``None`` means ``["final"]``; one int or str means a one-element list. Integers (negative allowed) and names
    are resolved by each encoder; duplicates are errors.
    """
    if layers is None:
        return [FINAL]
    if isinstance(layers, (str, int)) and not isinstance(layers, bool):
        layers = [layers]
    try:
        layers = list(layers)
    except TypeError:
        raise InputTypeError(f"`layers` must be a layer name, an index, or a list of them, got {layers!r}") from None
    if not layers:
        raise ValueError("`layers` must name at least one layer, got an empty list; omit it for the final layer")
    out: list[str | int] = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (str, int)):
            try:
                layer = check_int("layers", layer)
            except TypeError:
                raise InputTypeError(f"`layers` entries must be names or integer indices, got {layer!r}") from None
        if isinstance(layer, str) and layer.lstrip("-").isdigit():
            layer = int(layer)
        out.append(layer)
    return out


def check_unique_layers(names: Sequence[str]) -> tuple[str, ...]:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"`layers` names layer {name!r} twice; list each layer once")
        seen.add(name)
    return tuple(names)


def pool_tokens(h, pooling: str, *, mask=None, n_prefix: int = 1):
    """Pool a token sequence ``h`` (b, L, d) to (b, d) (or (b, 2d) for ``cls+mean``), in float32.

    .. math::

        \\mathrm{cls}(h) = h_{:,0}, \\qquad
        \\mathrm{mean}(h) = \\frac{\\sum_t m_t h_{:,t}}{\\max(\\sum_t m_t, 10^{-9})}

    With an attention ``mask`` (b, L) (text) the mean runs over the unmasked tokens, special tokens included (the
    sentence-transformers convention); without one (images) it runs over the tokens after the ``n_prefix`` prefix
    (class / register) tokens, i.e. over the patch tokens.
    """
    import torch

    h = h.float()
    if pooling in ("cls", "cls+mean") and mask is None and n_prefix == 0:
        raise ValueError("`pooling` 'cls' needs a class token, and this model has none; use pooling='mean'")
    cls = h[:, 0]
    if mask is not None:
        m = mask.to(h.dtype).unsqueeze(-1)
        mean = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    else:
        mean = h[:, n_prefix:].mean(1)
    if pooling == "cls":
        return cls
    if pooling == "mean":
        return mean
    return torch.cat([cls, mean], dim=1)


def pool_map(x, pooling: str, *, channels_last: bool = False):
    """Average a feature map (b, C, H, W) (or (b, H, W, C) with ``channels_last``) over space: (b, C) float32."""
    if pooling != "mean":
        raise ValueError(
            f"`pooling` {pooling!r} needs tokens, but this layer is a convolutional feature map; use pooling='mean'"
        )
    x = x.float()
    return x.mean((1, 2)) if channels_last else x.mean((2, 3))


# -- digests --------------------------------------------------------------------------------------------------

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's full bytes, computed once per process per (path, size, mtime).

    The whole file is read the first time (about 0.1-0.3 s per 100 MB); later calls with an unchanged size and
    modification time reuse the result. A file rewritten in place with the same size within the same mtime tick
    would not be noticed within one process.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(path)
    return _FILE_DIGESTS[key]


def state_dict_digest(module) -> str:
    """sha256 over a module's ``state_dict``: every tensor's name, dtype, shape and raw bytes, in key order."""
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.reshape(-1).contiguous().cpu()
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes() if flat.dtype != torch.uint8 else flat.numpy().tobytes())
    return h.hexdigest()


# -- preprocessors (picklable, CPU only) ----------------------------------------------------------------------


def to_pil(x: Any):
    """An RGB ``PIL.Image`` from a PIL image, a file path, or an (H, W, 3) / (H, W) uint8 array."""
    import numpy as np
    from PIL import Image

    if isinstance(x, Image.Image):
        return x if x.mode == "RGB" else x.convert("RGB")
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        if not path.is_file():
            raise FileNotFoundError(f"image {str(path)!r} does not exist; check the path")
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except OSError as exc:
            raise ValueError(f"image {str(path)!r} could not be decoded ({exc}); remove or replace the file") from None
    if isinstance(x, np.ndarray) and x.ndim in (2, 3):
        if x.dtype != np.uint8:
            raise InputTypeError(
                f"image arrays must be uint8 (H, W[, 3]), got dtype {x.dtype}; convert with .astype(np.uint8)"
            )
        return Image.fromarray(x).convert("RGB")
    raise InputTypeError(f"image inputs must be PIL images, file paths or uint8 (H, W, 3) arrays, "
                         f"got {type(x).__name__}")


class ImagePreprocessor:
    """Images -> a (b, 3, H, W) float tensor through a torchvision-style ``transform`` (picklable)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, inputs: Sequence[Any]):
        import torch

        inputs = list(inputs)
        if not inputs:
            raise ValueError("cannot preprocess an empty batch of images")
        return torch.stack([self.transform(to_pil(x)) for x in inputs])


class TextPreprocessor:
    """Strings -> a dict of padded token tensors through a Hugging Face tokenizer (picklable)."""

    def __init__(self, tokenizer, max_length: int | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, inputs: Sequence[str]):
        texts = check_texts(inputs)
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return dict(enc)


def longest_first(texts: Sequence[str]):
    """Indices of ``texts`` longest first by character count (ties in input order): sentence-transformers'
    ``encode`` order (it sorts by ``-len(text)``), so that each padded batch holds texts of similar length."""
    import numpy as np

    return np.argsort([-len(t) if isinstance(t, str) else 0 for t in texts], kind="stable")


def check_texts(inputs: Sequence[Any]) -> list[str]:
    texts = list(inputs) if not isinstance(inputs, str) else [inputs]
    if not texts:
        raise ValueError("cannot preprocess an empty batch of texts")
    for t in texts:
        if not isinstance(t, str):
            raise InputTypeError(f"text inputs must be strings, got {type(t).__name__}: {t!r:.60}")
    return texts


# -- the torch encoder ----------------------------------------------------------------------------------------


class TorchEncoder(Encoder):
    """An encoder wrapping a frozen ``torch.nn.Module`` it owns.

    Subclasses set ``spec``, ``modality``, ``layers``, ``dims``, :attr:`preprocessor`, and implement
    :meth:`_features` (the raw per-layer features of one batch already on ``self.device``),
    :meth:`_config` and :meth:`weights_digest`.

    Parameters (shared by every torch encoder)
    ------------------------------------------
    device : str or torch.device, default "cpu"
        Where the model runs. The model belongs to the encoder, so it is moved there; batches are copied there.
    dtype : {"float32", "bfloat16", "float16"}, default "float32"
        Compute dtype. With ``autocast=True`` (default) the weights stay float32 and matmuls / convolutions run in
        ``dtype`` under ``torch.autocast`` (numerically safer); with ``autocast=False`` the weights are cast.
    normalize : bool or None
        L2-normalise every returned layer; ``None`` is the model's own convention (see each loader).
    batch_size : int
        Default batch size of :meth:`encode`.
    """

    modality = "image"

    def _setup(self, model, *, device: Any, dtype: Any, autocast: bool, normalize: bool, batch_size: int | None):
        import torch

        self.device = resolve_device(device if device is not None else "cpu")
        self.dtype = parse_dtype(dtype)
        if not isinstance(autocast, bool):
            raise InputTypeError(f"`autocast` must be True or False, got {autocast!r}")
        self.autocast = autocast if self.dtype != "float32" else False
        if normalize is not None and not isinstance(normalize, bool):
            raise InputTypeError(f"`normalize` must be True, False or None, got {normalize!r}")
        self.normalize = normalize
        if batch_size is not None:
            self.default_batch_size = check_int("batch_size", batch_size, min_value=1)
        model.eval()
        model.requires_grad_(False)
        model.to(self.device)
        if self.dtype != "float32" and not self.autocast:
            model.to(getattr(torch, self.dtype))
        self.model = model

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def preprocess(self, inputs: Sequence[Any]) -> Any:
        """Turn raw inputs into one CPU batch (delegates to the picklable :attr:`preprocessor`)."""
        return self.preprocessor(inputs)

    def _to_device(self, batch: Any):
        import torch

        if isinstance(batch, torch.Tensor):
            batch = batch.to(self.device, non_blocking=True)
            if batch.is_floating_point() and not self.autocast and self.dtype != "float32":
                batch = batch.to(self.torch_dtype)
            return batch
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        return batch

    def _autocast(self):
        import torch

        if self.autocast:
            return torch.autocast(device_type=self.device.type, dtype=self.torch_dtype)
        return contextlib.nullcontext()

    def forward(self, batch: Any) -> dict[str, Any]:
        """``{layer: (b, d) float32 tensor}`` on ``self.device`` for one preprocessed batch."""
        import torch

        with torch.inference_mode(), self._autocast():
            feats = self._features(self._to_device(batch))
        out = {}
        for layer in self.layers:
            x = feats[layer].float()
            if self.normalize:
                x = torch.nn.functional.normalize(x, dim=1)
            out[layer] = x
        return out

    def _features(self, batch: Any) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict:
        """Everything that changes the numbers (the device is left out: it only moves the last float bits)."""
        return {
            "spec": self.spec,
            "encoder": type(self).__name__,
            "layers": list(self.layers),
            "dtype": self.dtype,
            "autocast": self.autocast,
            "normalize": self.normalize,
            **self._config(),
        }

    def _infer_dims(self, example: Any) -> dict[str, int]:
        """Feature dimension of every requested layer, from one forward pass on ``example``."""
        feats = self.forward(self.preprocess([example]))
        return {layer: int(feats[layer].shape[1]) for layer in self.layers}
