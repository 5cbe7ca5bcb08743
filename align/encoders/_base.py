"""The encoder contract every loader implements.

An encoder turns raw inputs (strings, PIL images, point clouds, graphs) into fixed-size feature vectors. The work
is split in two so that the feature extractor can overlap decoding with compute:

* :meth:`Encoder.preprocess` runs on CPU, possibly in DataLoader worker processes: it turns a list of raw inputs
  into one batch (a tensor, or a dict of tensors for tokenised text). It must be picklable-friendly (no CUDA).
* :meth:`Encoder.forward` runs the frozen model on a batch in ``eval()`` mode under ``torch.inference_mode()`` and
  returns ``{layer_name: (b, d) float tensor}`` for every requested layer, pooled and (optionally) normalised.

:meth:`Encoder.encode` chains the two for in-memory use. :meth:`Encoder.fingerprint` names everything that changes
the numbers (weights, layers, pooling, preprocessing, normalisation, dtype) and keys the feature cache.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from .._backend import to_numpy_f32

__all__ = ["Encoder", "fingerprint_config"]


def fingerprint_config(config: dict, *extra: bytes | str) -> str:
    """A stable sha256 of a JSON-able config dict and extra byte strings (e.g. a weights digest)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for e in extra:
        h.update(e if isinstance(e, bytes) else e.encode())
    return h.hexdigest()


class Encoder(ABC):
    """A frozen encoder: ``encode(inputs) -> (n, dim) float32``.

    Attributes
    ----------
    spec : str
        The spec it was loaded from (``"minilm"``, ``"timm:vit_small_patch14_dinov2.lvd142m"``, …).
    modality : str
        ``"text"``, ``"image"``, ``"pointcloud"``, ``"graph"`` or ``"features"`` (precomputed).
    layers : tuple of str
        The layers it returns, in request order; the first is the one :meth:`encode` returns.
    dims : dict
        Feature dimension per layer.
    """

    spec: str
    modality: str
    layers: tuple[str, ...]
    dims: dict[str, int]
    default_batch_size: int = 32

    @property
    def dim(self) -> int:
        """Feature dimension of the first requested layer."""
        return self.dims[self.layers[0]]

    @abstractmethod
    def preprocess(self, inputs: Sequence[Any]) -> Any:
        """Turn a list of raw inputs into one batch (CPU only)."""

    @abstractmethod
    def forward(self, batch: Any) -> dict[str, Any]:
        """Run the frozen model on a batch: ``{layer: (b, d) tensor}`` on the encoder's device."""

    @abstractmethod
    def config(self) -> dict:
        """Everything that changes the numbers, JSON-able (spec, layers, pooling, preprocessing, dtype, …)."""

    @abstractmethod
    def weights_digest(self) -> str:
        """A digest of the weights (or of the file they came from)."""

    def batch_order(self, inputs: Sequence[Any]) -> np.ndarray | None:
        """The order in which to batch ``inputs`` (a permutation of ``range(len(inputs))``), or None: as given.

        Text encoders that pad each batch to its longest input return longest first (by character count, as
        sentence-transformers' ``encode`` sorts), so a batch holds inputs of similar length and little padding is
        computed; :func:`align.features.embed` and :meth:`encode_layers` restore the input order of the outputs.
        The values can differ from unsorted batching only by padding's rounding, in the last float32 bits.
        """
        return None

    def fingerprint(self) -> str:
        """sha256 over :meth:`config` and :meth:`weights_digest`; keys the feature cache."""
        return fingerprint_config(self.config(), self.weights_digest())

    def encode_layers(
        self, inputs: Sequence[Any], *, batch_size: int | None = None, show_progress: bool = False
    ) -> dict[str, np.ndarray]:
        """``{layer: (n, d) float32}`` for every requested layer, in one forward pass per batch."""
        inputs = list(inputs)
        batch_size = batch_size or self.default_batch_size
        order = self.batch_order(inputs) if inputs else None
        if order is not None:  # batch in the encoder's order, then put the rows back in input order
            order = np.asarray(order)
            sorted_out = self._encode_in_order([inputs[i] for i in order], batch_size, show_progress)
            res = {}
            for layer, arr in sorted_out.items():
                res[layer] = np.empty_like(arr)
                res[layer][order] = arr
            return res
        return self._encode_in_order(inputs, batch_size, show_progress)

    def _encode_in_order(self, inputs: list, batch_size: int, show_progress: bool) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {layer: [] for layer in self.layers}
        starts = range(0, len(inputs), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encode {self.spec}", unit="batch")
        for start in starts:
            feats = self.forward(self.preprocess(inputs[start:start + batch_size]))
            for layer in self.layers:
                out[layer].append(to_numpy_f32(feats[layer]))
        return {
            layer: np.concatenate(parts, axis=0) if parts else np.zeros((0, self.dims[layer]), np.float32)
            for layer, parts in out.items()
        }

    def encode(
        self, inputs: Sequence[Any], *, batch_size: int | None = None, show_progress: bool = False
    ) -> np.ndarray:
        """``(n, dim)`` float32 features of the first requested layer."""
        return self.encode_layers(inputs, batch_size=batch_size, show_progress=show_progress)[self.layers[0]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, modality={self.modality!r}, layers={self.layers}, dims={self.dims})"
