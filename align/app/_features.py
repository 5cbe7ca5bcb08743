"""The step every workflow shares: embed one field of a dataset with an encoder, through the feature cache, one row
per item (fields with several rows per item, such as 5 captions per image, are averaged per item)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

__all__ = ["FeatureSet", "embed_feature_set", "field_for"]


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """One row per item of ``dataset``, per layer, and where they came from.

    Attributes
    ----------
    layers : dict of str to ndarray
        ``(n_items, d)`` arrays in the order the encoder was asked for (``X`` is the first).
    field : str
        The dataset field that was embedded.
    key : str
        The feature-cache key (what the features are: encoder, settings and the dataset's content).
    source : dict
        A provenance record: encoder spec, field, cache key, encoder and dataset fingerprints.
    """

    layers: dict
    field: str
    key: str
    source: dict

    @property
    def X(self) -> np.ndarray:
        return next(iter(self.layers.values()))


def field_for(dataset: Any, modality: str, field: str | None = None) -> str:
    """The field an encoder of ``modality`` reads: the one given, else the default field if it has that modality,
    else the first field that does."""
    if field is not None:
        return dataset.resolve_field(field)
    fields = [dataset.default_field] + [f for f in dataset.fields if f != dataset.default_field]
    for candidate in fields:
        if dataset.modality(candidate) == modality:
            return candidate
    raise ValueError(
        f"dataset {dataset.spec!r} has no {modality} field for this encoder (fields: {', '.join(dataset.fields)}); "
        "pick another encoder or dataset"
    )


def embed_feature_set(encoder: Any, dataset: Any, field: str | None = None, *,
                      cache_dir: str | os.PathLike | None = None, show_progress: bool = False) -> FeatureSet:
    """Embed ``field`` of ``dataset`` with ``encoder`` through the feature cache (:func:`align.features.embed`),
    then average the rows of each item (:meth:`Dataset.item_means`); ``field=None`` is the dataset's default field
    (see :func:`field_for` to pick the field of an encoder's modality)."""
    from ..features import embed

    field = dataset.resolve_field(field)
    feats = embed(encoder, dataset, field=field, cache_dir=cache_dir, show_progress=show_progress)
    layers = {layer: dataset.item_means(np.asarray(arr), field) for layer, arr in feats.layers.items()}
    source = {"encoder": encoder.spec, "field": field, "cache_key": feats.key,
              "encoder_fingerprint": feats.meta.get("encoder", {}).get("fingerprint"),
              "dataset_fingerprint": feats.meta.get("dataset", {}).get("fingerprint")}
    return FeatureSet(layers=layers, field=field, key=feats.key, source=source)
