"""Hugging Face transformers encoders: ``hf:<name or path>`` (AutoModel + tokenizer or image processor)."""
from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Sequence

from .._validation import check_choice, check_int
from ._torch import (
    FINAL,
    TextPreprocessor,
    TorchEncoder,
    check_unique_layers,
    parse_layers,
    parse_pooling,
    pool_map,
    pool_tokens,
    state_dict_digest,
    to_pil,
)

log = logging.getLogger(__name__)

__all__ = ["HFEncoder", "load_hf"]


class HFImagePreprocessor:
    """Images -> ``{"pixel_values": (b, 3, H, W)}`` through a transformers image processor (picklable)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, inputs: Sequence[Any]) -> dict:
        images = [to_pil(x) for x in inputs]
        if not images:
            raise ValueError("cannot preprocess an empty batch of images")
        return {"pixel_values": self.processor(images=images, return_tensors="pt")["pixel_values"]}


class HFEncoder(TorchEncoder):
    """A frozen ``transformers.AutoModel`` with pooling, for text or images.

    Layers
        ``"final"`` (default) is ``last_hidden_state`` (after the model's final norm where it has one); an integer
        ``i`` (or ``"hidden_states.i"``) is entry ``i`` of ``hidden_states`` (0 = embeddings, ``n_layers`` = last
        block, negative counts from the end). All requested layers come from one forward pass.
    Pooling
        ``"mean"``: for text the attention-masked mean over tokens (special tokens included, as
        sentence-transformers does); for images the mean over patch tokens, i.e. the tokens after the class token
        and any register tokens (``config.num_register_tokens``), or over space for convolutional maps.
        ``"cls"``: the first token. ``"cls+mean"``: both, concatenated (``2 d``). Default: ``"mean"`` for text,
        ``"cls"`` for images (``"mean"`` for convolutional maps).
    Preprocessing
        The model's own tokenizer (padding to the longest in the batch, truncation at ``max_length``, default the
        tokenizer's / model's limit) or image processor (its resize, crop and normalisation).
    """

    def __init__(
        self,
        spec: str,
        model,
        processor,
        modality: str,
        *,
        layers: Any = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int | None = None,
        device: Any = None,
        dtype: Any = None,
        autocast: bool = True,
        max_length: int | None = None,
        digest: str | None = None,
    ):
        self.spec = spec
        self.modality = modality
        self._digest = digest
        self.pooling = parse_pooling(pooling)
        self._setup(model, device=device, dtype=dtype, autocast=autocast, normalize=normalize, batch_size=batch_size)
        config = model.config
        if modality == "text":
            if max_length is None:
                limits = [getattr(processor, "model_max_length", None),
                          getattr(config, "max_position_embeddings", None)]
                limits = [x for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
                max_length = min(limits) if limits else None
            else:
                max_length = check_int("max_length", max_length, min_value=1)
            self.max_length = max_length
            self.preprocessor = TextPreprocessor(processor, max_length=max_length)
            self._preprocessing = {
                "tokenizer": type(processor).__name__,
                "vocab_size": len(processor),
                "max_length": max_length,
                "padding_side": getattr(processor, "padding_side", None),
            }
        else:
            if max_length is not None:
                raise ValueError("`max_length` is a text option; this hf: encoder reads images")
            self.max_length = None
            self.preprocessor = HFImagePreprocessor(processor)
            self._preprocessing = {"image_processor": processor.to_dict()}
        self._n_prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self._accepts = set(inspect.signature(model.forward).parameters)
        n_hidden = getattr(config, "num_hidden_layers", None)
        names, self._hidden = [], {}
        for layer in parse_layers(layers):
            if layer == FINAL:
                names.append(FINAL)
                continue
            if isinstance(layer, str) and layer.startswith("hidden_states.") and layer[14:].lstrip("-").isdigit():
                layer = int(layer[14:])
            if not isinstance(layer, int):
                raise ValueError(
                    f"unknown layer {layer!r} for {spec!r}: valid layers are 'final' and integer hidden-state indices"
                    + (f" 0..{n_hidden}" if n_hidden else "")
                )
            names.append(layer)
        self._requested = names
        # One forward pass with hidden states tells how many there are (works for any architecture).
        self._want_hidden = any(isinstance(x, int) for x in names)
        n_states = None
        if self._want_hidden:
            example = self._example()
            with_hidden = self._run(self._to_device(self.preprocess([example])), hidden=True)
            n_states = len(with_hidden.hidden_states)
        final_names = []
        for layer in names:
            if layer == FINAL:
                final_names.append(FINAL)
                continue
            if not -n_states <= layer < n_states:
                raise ValueError(
                    f"`layers` index {layer} is out of range: {spec!r} has hidden states 0..{n_states - 1}"
                )
            final_names.append(f"hidden_states.{layer % n_states}")
            self._hidden[f"hidden_states.{layer % n_states}"] = layer % n_states
        self.layers = check_unique_layers(final_names)
        self.available_layers = [FINAL] + ([f"hidden_states.{i}" for i in range(n_states)] if n_states else [])
        self.dims = self._infer_dims(self._example())

    def _example(self):
        if self.modality == "text":
            return "unialign"
        from PIL import Image

        return Image.new("RGB", (64, 64), (128, 128, 128))

    def _run(self, batch: dict, *, hidden: bool):
        import torch

        kwargs = {k: v for k, v in batch.items() if k in self._accepts}
        with torch.inference_mode(), self._autocast():
            return self.model(**kwargs, output_hidden_states=hidden, return_dict=True)

    def _pool(self, h, mask):
        if h.ndim == 4:
            return pool_map(h, self.pooling or "mean")
        if self.modality == "text":
            return pool_tokens(h, self.pooling or "mean", mask=mask)
        return pool_tokens(h, self.pooling or "cls", n_prefix=self._n_prefix)

    def _features(self, batch: dict) -> dict:
        out = self._run(batch, hidden=bool(self._hidden))
        mask = batch.get("attention_mask") if self.modality == "text" else None
        feats = {}
        if FINAL in self.layers:
            feats[FINAL] = self._pool(out.last_hidden_state, mask)
        for name, idx in self._hidden.items():
            feats[name] = self._pool(out.hidden_states[idx], mask)
        return feats

    def _config(self) -> dict:
        return {
            "pooling": self.pooling,
            "modality": self.modality,
            "architecture": type(self.model).__name__,
            "model_config": self.model.config.to_json_string(use_diff=False),
            "preprocessing": self._preprocessing,
        }

    def weights_digest(self) -> str:
        """sha256 of the model's ``state_dict`` tensors (names, dtypes, shapes, bytes); computed once, then cached."""
        if self._digest is None:
            self._digest = state_dict_digest(self.model)
        return self._digest


def _guess_modality(config) -> str | None:
    if hasattr(config, "vocab_size") and not hasattr(config, "image_size"):
        return "text"
    if hasattr(config, "image_size") and not hasattr(config, "vocab_size"):
        return "image"
    if hasattr(config, "num_channels") and not hasattr(config, "vocab_size"):
        return "image"
    return None


def load_hf(name_or_path: str, *, modality: str | None = None, spec: str | None = None, **options) -> HFEncoder:
    """``hf:<name or path>``: ``AutoModel`` plus ``AutoTokenizer`` (text) or ``AutoImageProcessor`` (images).

    ``modality`` (``"text"`` or ``"image"``) is guessed from the model config (a vocabulary means text, an image
    size or channel count means images); give it for models with both, such as CLIP (whose ``AutoModel`` needs
    both inputs and is not supported here). ``trust_remote_code`` is never enabled.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

    local = Path(name_or_path).expanduser()
    if (name_or_path.startswith((".", "/", "~")) or local.exists()) and not local.is_dir():
        raise FileNotFoundError(
            f"transformers model folder {name_or_path!r} does not exist; give a folder saved with "
            "save_pretrained(...) or a hub name"
        )
    source = str(local) if local.is_dir() else name_or_path
    try:
        config = AutoConfig.from_pretrained(source)
        if modality is None:
            modality = _guess_modality(config)
            if modality is None:
                raise ValueError(
                    f"cannot tell whether hf:{name_or_path} reads text or images; pass modality='text' or 'image'"
                )
        modality = check_choice("modality", modality, ("text", "image"))
        processor = (AutoTokenizer if modality == "text" else AutoImageProcessor).from_pretrained(source)
        model = AutoModel.from_pretrained(source)
    except OSError as exc:
        raise OSError(
            f"could not load hf:{name_or_path} ({str(exc).splitlines()[0]}); give a local folder saved with "
            "save_pretrained, or download the model once with hub access"
        ) from None
    return HFEncoder(spec or f"hf:{name_or_path}", model, processor, modality, **options)
