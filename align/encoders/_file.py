"""``file:<path>``: precomputed features as an encoder (modality ``"features"``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._validation import InputTypeError, check_int
from ._base import Encoder
from ._torch import FINAL, file_digest, parse_layers

__all__ = ["FileEncoder", "load_file"]


class FileEncoder(Encoder):
    """Rows of a precomputed feature file (``.npy``, ``.npz``, ``.safetensors``; ``path:key`` picks an array).

    The "inputs" of :meth:`encode` are **row indices** into the file: ``encode([3, 0, 7])`` returns rows 3, 0 and 7
    (negative indices count from the end); ``encode(None)`` (or ``encode_all()``) returns every row. ``.npy`` files
    are memory-mapped, so only the requested rows are read. With ``normalize=True`` rows are L2-normalised.
    The weights digest is the sha256 of the file's bytes (once per process per path, size and mtime).
    """

    modality = "features"
    default_batch_size = 4096

    def __init__(
        self, path: str, *, key: str | None = None, normalize: bool | None = None, batch_size: int | None = None
    ):
        from .._io import load_features, split_feature_path

        self.spec = f"file:{path}"
        self._array = load_features(path, key=key)
        if self._array.ndim != 2:
            raise ValueError(
                f"feature file {path!r} must hold a 2-D (n, d) array, got shape {tuple(self._array.shape)}"
            )
        if self._array.dtype.kind not in "iuf":
            raise InputTypeError(f"feature file {path!r} must hold numbers, got dtype {self._array.dtype}")
        self._path, self._key = (Path(path), key) if key is not None else split_feature_path(path)
        if normalize is not None and not isinstance(normalize, bool):
            raise InputTypeError(f"`normalize` must be True, False or None, got {normalize!r}")
        self.normalize = bool(normalize)
        if batch_size is not None:
            self.default_batch_size = check_int("batch_size", batch_size, min_value=1)
        self.layers = (FINAL,)
        self.dims = {FINAL: int(self._array.shape[1])}
        self._digest: str | None = None

    def __len__(self) -> int:
        return int(self._array.shape[0])

    def preprocess(self, inputs: Sequence[Any]) -> np.ndarray:
        """Row indices -> an int64 array, checked against the number of rows."""
        idx = np.asarray(list(inputs) if not isinstance(inputs, np.ndarray) else inputs)
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if idx.dtype.kind not in "iu":
            raise InputTypeError(f"file: encoders take integer row indices as inputs, got dtype {idx.dtype}")
        n = len(self)
        if idx.min() < -n or idx.max() >= n:
            raise ValueError(f"row index out of range for {self.spec!r}: it has {n} rows (0..{n - 1})")
        return idx.astype(np.int64) % n

    def forward(self, batch: np.ndarray) -> dict:
        import torch

        rows = torch.from_numpy(np.asarray(self._array[batch], dtype=np.float32))
        if self.normalize:
            rows = torch.nn.functional.normalize(rows, dim=1)
        return {FINAL: rows}

    def encode_layers(self, inputs: Sequence[Any] | None = None, **kwargs) -> dict[str, np.ndarray]:
        """``{"final": (n, d) float32}`` for row indices ``inputs`` (``None``: every row)."""
        if inputs is None:
            inputs = np.arange(len(self))
        return super().encode_layers(inputs, **kwargs)

    def encode(self, inputs: Sequence[Any] | None = None, **kwargs) -> np.ndarray:
        """``(n, d)`` float32 rows for indices ``inputs`` (``None``: every row)."""
        return self.encode_layers(inputs, **kwargs)[FINAL]

    def encode_all(self, **kwargs) -> np.ndarray:
        return self.encode(None, **kwargs)

    def config(self) -> dict:
        return {"spec": self.spec, "encoder": type(self).__name__, "key": self._key, "normalize": self.normalize}

    def weights_digest(self) -> str:
        """sha256 of the feature file's bytes (cached per process, path, size and mtime)."""
        if self._digest is None:
            self._digest = file_digest(self._path)
        return self._digest


def load_file(path: str, *, key: str | None = None, normalize: bool | None = None, batch_size: int | None = None,
              layers: Any = None) -> FileEncoder:
    """``file:<path>`` (or ``file:<path>:<key>``): see :class:`FileEncoder`."""
    if parse_layers(layers) != [FINAL]:
        raise ValueError("file: encoders hold one precomputed layer: `layers` is not available for them")
    return FileEncoder(path, key=key, normalize=normalize, batch_size=batch_size)
