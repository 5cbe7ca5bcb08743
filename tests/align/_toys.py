"""Small deterministic encoders and datasets that follow the contracts, for testing the machinery around them."""
from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import torch

from align.data._base import Dataset
from align.encoders._base import Encoder


class ToyText(Dataset):
    """``n`` short strings; ids ``t0 … t{n-1}``; content fingerprint from the strings."""

    fields = ("text", "upper")
    default_field = "text"

    def __init__(self, n: int = 50, salt: str = ""):
        self.spec = f"toy:{n}{salt}"
        self._texts = [f"item {i} {salt}" for i in range(n)]

    def __len__(self):
        return len(self._texts)

    @property
    def ids(self):
        return [f"t{i}" for i in range(len(self))]

    def modality(self, field=None):
        return "text"

    def get(self, row, field=None):
        text = self._texts[row]
        return text.upper() if self.resolve_field(field) == "upper" else text

    def fingerprint(self, field=None):
        field = self.resolve_field(field)
        return hashlib.sha256(("\n".join(self.get(i, field) for i in range(len(self)))).encode()).hexdigest()


class ToyEncoder(Encoder):
    """Bag of character codes through a fixed random projection; two 'layers'. ``$TOY_SLEEP`` slows each batch."""

    modality = "text"
    default_batch_size = 4

    def __init__(self, dim: int = 8, seed: int = 0, layers=("a", "b")):
        self.spec = f"toy-encoder:{dim}:{seed}"
        self.layers = tuple(layers)
        self.dims = {layer: dim * (k + 1) for k, layer in enumerate(self.layers)}
        g = torch.Generator().manual_seed(seed)
        self._proj = {layer: torch.randn(128, d, generator=g, dtype=torch.float64) for layer, d in self.dims.items()}
        self.calls = 0

    def preprocess(self, inputs):
        counts = torch.zeros(len(inputs), 128, dtype=torch.float64)
        for i, text in enumerate(inputs):
            for ch in text:
                counts[i, ord(ch) % 128] += 1
        return counts

    def forward(self, batch):
        self.calls += 1
        delay = float(os.environ.get("TOY_SLEEP", "0"))
        if delay:
            time.sleep(delay)
        return {layer: (batch @ p).float() for layer, p in self._proj.items()}

    def config(self):
        return {"spec": self.spec, "layers": list(self.layers)}

    def weights_digest(self):
        return hashlib.sha256(b"".join(p.numpy().tobytes() for p in self._proj.values())).hexdigest()


def reference_features(encoder: ToyEncoder, dataset: ToyText, field=None) -> dict[str, np.ndarray]:
    return encoder.encode_layers([dataset.get(i, field) for i in range(len(dataset))])


class SortingToyEncoder(ToyEncoder):
    """:class:`ToyEncoder` that batches longest text first (as the sentence-transformers encoders do) and records
    the batches it was given."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.batch_sizes = []

    def batch_order(self, inputs):
        return np.argsort([-len(t) for t in inputs], kind="stable")

    def forward(self, batch):
        self.batch_sizes.append(int(batch.shape[0]))
        return super().forward(batch)
