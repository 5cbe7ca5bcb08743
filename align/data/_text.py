"""Line-aligned text: ``text:FILE`` (one item per line, ``.gz`` allowed) and ``multi30k:SPLIT.LANG``.

Item ``i`` is line ``i + 1`` of the file; its id is that 1-based line number as a string (``"1"``, ``"2"``, …), so
two line-aligned files (a parallel corpus such as Multi30k's ``X.en.gz`` / ``X.de.gz``) have identical id lists and
row ``i`` of one pairs with row ``i`` of the other. :func:`load_paired_text` loads two such files and checks that
they line up. Lines keep their text as written except for the line ending (``\\n`` or ``\\r\\n``); empty lines are
items too (dropping them would break the pairing). A final newline does not start an extra item.
"""
from __future__ import annotations

import os
from pathlib import Path

from ._base import Dataset
from ._common import check_options, existing_file, hash_texts, open_text

__all__ = ["TextDataset", "load_paired_text", "MULTI30K_SPLITS", "multi30k_path"]

#: Multi30k task-1 splits in ``$UNIALIGN_DATA/multi30k`` (``test`` is short for ``test_2016_flickr``).
MULTI30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr", "test_2016_flickr": "test_2016_flickr"}
MULTI30K_LANGS = ("en", "de")


class TextDataset(Dataset):
    """One text item per line of a UTF-8 file (gzip allowed); ids are 1-based line numbers.

    Parameters
    ----------
    path : path
        The file; ``.gz`` files are decompressed.
    """

    fields = ("text",)
    default_field = "text"

    def __init__(self, path, *, spec: str | None = None):
        self.spec = spec or f"text:{path}"
        self.path = existing_file(path, "text file", self.spec)
        text = open_text(self.path)
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        self._lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        if not self._lines or not any(line.strip() for line in self._lines):
            raise ValueError(f"text file {str(self.path)!r} is empty; give a file with one item per line")
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def ids(self) -> list[str]:
        return [str(i + 1) for i in range(len(self._lines))]

    def modality(self, field: str | None = None) -> str:
        self.resolve_field(field)
        return "text"

    def texts(self, field: str | None = None) -> list[str]:
        """All lines at once."""
        self.resolve_field(field)
        return list(self._lines)

    def get(self, row: int, field: str | None = None) -> str:
        self.resolve_field(field)
        return self._lines[row]

    def fingerprint(self, field: str | None = None) -> str:
        self.resolve_field(field)
        if self._fingerprint is None:
            self._fingerprint = hash_texts("text", self._lines)
        return self._fingerprint


def load_paired_text(spec_a: str, spec_b: str, **options) -> tuple[Dataset, Dataset]:
    """Load two line-aligned text datasets (e.g. a caption file and its translation) and check they pair up.

    Row ``i`` of the first describes the same thing as row ``i`` of the second; both have ids ``"1"…"n"``.

    Raises
    ------
    ValueError
        When the two have different numbers of lines, or either is not a text dataset.
    """
    from . import load_dataset

    a, b = load_dataset(spec_a, **options), load_dataset(spec_b, **options)
    for ds in (a, b):
        if ds.modality() != "text":
            raise ValueError(f"load_paired_text needs text datasets, {ds.spec!r} is {ds.modality()}; use text:FILE")
    if len(a) != len(b):
        raise ValueError(
            f"{spec_a!r} has {len(a)} lines but {spec_b!r} has {len(b)}; parallel files must pair line by line"
        )
    return a, b


def multi30k_path(split_lang: str, root=None, spec: str | None = None) -> Path:
    """``<root>/multi30k/<split>.<lang>.gz`` for ``split_lang`` like ``"test.en"``; root defaults to $UNIALIGN_DATA."""
    spec = spec or f"multi30k:{split_lang}"
    split, _, lang = split_lang.strip().rpartition(".")
    if split not in MULTI30K_SPLITS or lang not in MULTI30K_LANGS:
        valid = ", ".join(f"multi30k:{s}.{x}" for s in ("train", "val", "test") for x in MULTI30K_LANGS)
        raise ValueError(f"unknown Multi30k split {split_lang!r} in {spec!r}; use one of: {valid}")
    if root is None:
        root = os.environ.get("UNIALIGN_DATA")
        if not root:
            raise ValueError(
                f"{spec!r} reads $UNIALIGN_DATA/multi30k; set UNIALIGN_DATA to the shared data folder or pass root="
            )
    path = Path(root).expanduser() / "multi30k" / f"{MULTI30K_SPLITS[split]}.{lang}.gz"
    if not path.is_file():
        raise FileNotFoundError(f"Multi30k file {str(path)!r} does not exist; check UNIALIGN_DATA (or root=)")
    return path


def load_text(spec: str, rest: str, options: dict) -> TextDataset:
    check_options(spec, options, [])
    return TextDataset(rest, spec=spec)


def load_multi30k(spec: str, rest: str, options: dict) -> TextDataset:
    check_options(spec, options, ["root"])
    return TextDataset(multi30k_path(rest, options.get("root"), spec), spec=spec)
