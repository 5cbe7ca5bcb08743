"""The dataset contract every loader implements.

A dataset is a list of items with stable string ids. An item can carry several *fields* (a concept has ``lemma``,
``definition`` and ``prompt``; an image–caption pair has ``image`` and ``caption``). Embedding works on one field
at a time: :meth:`Dataset.rows` gives the ids of the rows that field produces (one per item, or several per item
for multi-caption data, with :meth:`Dataset.item_of_row` mapping rows back to items), :meth:`Dataset.get` decodes
one row (a ``str`` for text, an RGB ``PIL.Image`` for images), and :meth:`Dataset.fingerprint` hashes the content
those rows depend on, so the feature cache misses when the data changes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

__all__ = ["Dataset"]


class Dataset(ABC):
    """Items with stable ids, one or more fields, optional integer labels.

    Attributes
    ----------
    spec : str
        The spec it was loaded from (``"concepts:imagenet-1k"``, ``"imagefolder:DIR"``, …).
    fields : tuple of str
        The fields an item has; ``default_field`` is used when none is given.
    labels : ndarray of int or None
        Per-item class index into ``classes``.
    classes : list of str or None
        Class names (for zero-shot), in label order.
    """

    spec: str
    fields: tuple[str, ...]
    default_field: str
    labels: np.ndarray | None = None
    classes: list[str] | None = None

    @abstractmethod
    def __len__(self) -> int:
        """Number of items."""

    @property
    @abstractmethod
    def ids(self) -> list[str]:
        """Stable item ids, one per item, in dataset order."""

    @abstractmethod
    def modality(self, field: str | None = None) -> str:
        """``"text"``, ``"image"``, ``"pointcloud"`` or ``"graph"`` for ``field``."""

    def resolve_field(self, field: str | None) -> str:
        """``field`` or the default; an unknown field lists the valid ones."""
        if field is None:
            return self.default_field
        if field not in self.fields:
            raise ValueError(
                f"dataset {self.spec!r} has no field {field!r}; use --field with one of: {', '.join(self.fields)}"
            )
        return field

    def rows(self, field: str | None = None) -> list[str]:
        """Row ids for ``field`` (default: one row per item, the item ids)."""
        self.resolve_field(field)
        return self.ids

    def item_of_row(self, field: str | None = None) -> np.ndarray:
        """Item index of every row of ``field`` (identity unless an item has several rows)."""
        return np.arange(len(self.rows(field)))

    def item_means(self, X: np.ndarray, field: str | None = None) -> np.ndarray:
        """One row per item from the ``(rows, d)`` features of ``field``: the mean of an item's rows when it has
        several (e.g. 5 captions per image), ``X`` itself otherwise."""
        item_of_row = np.asarray(self.item_of_row(field))
        if len(item_of_row) == len(self) and np.array_equal(item_of_row, np.arange(len(self))):
            return np.asarray(X)
        sums = np.zeros((len(self), X.shape[1]), dtype=np.float64)
        np.add.at(sums, item_of_row, np.asarray(X, dtype=np.float64))
        counts = np.bincount(item_of_row, minlength=len(self))[:, None]
        return (sums / np.maximum(counts, 1)).astype(np.float32)

    @abstractmethod
    def get(self, row: int, field: str | None = None) -> Any:
        """Decode row ``row`` of ``field``: a ``str`` for text, an RGB ``PIL.Image.Image`` for images."""

    def get_many(self, rows: Sequence[int], field: str | None = None) -> list[Any]:
        return [self.get(int(r), field) for r in rows]

    @abstractmethod
    def fingerprint(self, field: str | None = None) -> str:
        """sha256 hex of the content the rows of ``field`` depend on (file bytes or text), and their order."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, n={len(self)}, fields={self.fields})"
