"""Image–caption data: ``captions:FILE``.

Accepted files (``.gz`` allowed on each):

* **COCO captions JSON** (``captions_val2014.json``): ``{"images": [{"id", "file_name"}, …], "annotations":
  [{"image_id", "caption"}, …]}``. Items follow the ``images`` list; captions follow the ``annotations`` list.
* **Karpathy-split JSON** (``dataset_coco.json``, ``dataset_flickr30k.json``): ``{"images": [{"filename",
  "filepath"?, "split", "sentences": [{"raw"}, …]}, …]}``. ``split="test"`` (or ``"train,restval"``, or a list)
  keeps those splits.
* **JSON lines / a JSON list / CSV / TSV** of records with an image column (``image``, ``image_path``,
  ``file_name``, ``filename``, ``file``, ``path`` or ``img``) and one or more caption columns (``caption`` or
  ``captions`` holding a string or a list, ``sentences``, ``text``, or several ``caption_1``, ``caption_2``, …).
  Records naming the same image are merged, in order of first appearance (so a Flickr8k-style
  ``image,caption`` CSV with five rows per image gives one item with five captions). An optional ``split``
  column works with the ``split`` option.

Items are images; an item's id is its image path as the file writes it (``val2014/COCO_val2014_….jpg``). Fields:
``image`` (one row per item) and ``caption`` (one row per caption, ids ``"<image id>#k"`` with ``k`` counting from
0 within the image; :meth:`CaptionDataset.item_of_row` maps caption rows to items). Image paths resolve against
``image_root`` (default: the folder holding the captions file). Captions are stripped of surrounding whitespace and
empty ones skipped; images left without any caption are dropped (with a logged warning), so every image has a
correct caption in retrieval. Images are only opened by :meth:`CaptionDataset.get` and by ``fingerprint("image")``
(a missing one then raises ``FileNotFoundError`` naming ``image_root``), so the captions alone load without them.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import InputTypeError
from ._base import Dataset
from ._common import check_options, existing_file, hash_files, hash_texts, open_rgb, open_text

__all__ = ["CaptionDataset"]

log = logging.getLogger(__name__)

_IMAGE_KEYS = ("image", "image_path", "file_name", "filename", "file", "path", "img")
_CAPTION_KEYS = ("caption", "captions", "sentences", "text")


def _as_splits(split: Any) -> set[str] | None:
    if split is None:
        return None
    if isinstance(split, str):
        parts = [s.strip() for s in split.split(",") if s.strip()]
    elif isinstance(split, (list, tuple, set)) and all(isinstance(s, str) for s in split):
        parts = list(split)
    else:
        raise InputTypeError(f"`split` must be a string such as 'test' or 'train,restval', got {type(split).__name__}")
    if not parts:
        raise ValueError("`split` must name at least one split, such as 'test'")
    return set(parts)


def _caption_texts(value: Any) -> list[str]:
    """Captions from a field that holds a string, a list of strings, or Karpathy-style ``{"raw": …}`` dicts."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        if "raw" in value:
            return [str(value["raw"])]
        if "tokens" in value:
            return [" ".join(map(str, value["tokens"]))]
        return []
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            out.extend(_caption_texts(v))
        return out
    return [str(value)]


class CaptionDataset(Dataset):
    """Images with one or more captions each, from COCO, Karpathy, JSONL, JSON or CSV caption files.

    Parameters
    ----------
    path : path
        The captions file.
    split : str or list of str, optional
        Keep only these splits (Karpathy JSON, or records with a ``split`` column); ``"train,restval"`` keeps two.
    image_root : path, optional
        Folder the image paths are relative to; default the captions file's folder.
    """

    fields = ("image", "caption")
    default_field = "image"

    def __init__(self, path, *, split=None, image_root=None, spec: str | None = None):
        self.spec = spec or f"captions:{path}"
        self.path = existing_file(path, "captions file", self.spec)
        self.image_root = Path(image_root).expanduser() if image_root is not None else self.path.parent
        if image_root is not None and not self.image_root.is_dir():
            raise FileNotFoundError(f"image_root {str(self.image_root)!r} is not a directory; check the path")
        splits = _as_splits(split)
        self.format, pairs = self._parse(splits)
        images, captions = [], []
        dropped = 0
        for image, caps in pairs:
            caps = [c.strip() for c in caps if isinstance(c, str) and c.strip()]
            if caps:
                images.append(image)
                captions.append(caps)
            else:
                dropped += 1
        if dropped:
            log.warning("%s: dropped %d image(s) without captions", self.path, dropped)
        if not images:
            where = f" in split {split!r}" if splits else ""
            raise ValueError(f"captions file {str(self.path)!r} holds no captioned images{where}; check the file")
        self._ids = images
        self._captions = [c for caps in captions for c in caps]
        self._caption_item = np.repeat(np.arange(len(images)), [len(c) for c in captions]).astype(np.int64)
        self._caption_ids = [f"{img}#{k}" for img, caps in zip(images, captions) for k in range(len(caps))]
        self._fingerprint: str | None = None

    # -- parsing -------------------------------------------------------------------------------------------
    def _parse(self, splits: set[str] | None) -> tuple[str, list[tuple[str, list[str]]]]:
        name = self.path.name.lower()
        if name.endswith(".gz"):
            name = name[:-3]
        suffix = Path(name).suffix
        text = open_text(self.path)
        if suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"captions file {str(self.path)!r} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                    f"{exc.colno}); fix or re-export it"
                ) from None
            if isinstance(data, dict) and "annotations" in data and "images" in data:
                if splits is not None:
                    raise ValueError(
                        f"COCO captions file {str(self.path)!r} has no splits; drop the split option "
                        "(or use the Karpathy-split JSON)"
                    )
                return "coco", self._parse_coco(data)
            if isinstance(data, dict) and isinstance(data.get("images"), list):
                return "karpathy", self._parse_karpathy(data["images"], splits)
            if isinstance(data, list):
                return "records", self._parse_records(data, splits, "JSON list")
            raise ValueError(
                f"captions file {str(self.path)!r} is neither COCO (images + annotations), Karpathy (images with "
                "sentences) nor a list of records; convert it to JSONL with image and caption keys"
            )
        if suffix in (".jsonl", ".ndjson"):
            records = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(
                        f"captions file {str(self.path)!r} line {lineno} is not valid JSON ({exc.msg}); fix that line"
                    ) from None
            return "jsonl", self._parse_records(records, splits, "JSONL")
        if suffix in (".csv", ".tsv"):
            try:
                reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",", strict=True)
                records = list(reader)
            except csv.Error as exc:
                raise ValueError(
                    f"captions file {str(self.path)!r} is not valid CSV ({exc}); fix the quoting on that line"
                ) from None
            if reader.fieldnames is None:
                raise ValueError(f"captions file {str(self.path)!r} is empty; it needs a header row and records")
            for i, rec in enumerate(records):
                if None in rec:
                    raise ValueError(
                        f"captions file {str(self.path)!r} record {i + 1} has more cells than the header; quote "
                        "captions that contain the delimiter"
                    )
            return suffix[1:], self._parse_records(records, splits, suffix[1:].upper())
        raise ValueError(
            f"captions file {str(self.path)!r} has an unknown format; use .json (COCO or Karpathy), .jsonl, .csv or "
            ".tsv (optionally .gz)"
        )

    def _bad(self, what: str) -> ValueError:
        return ValueError(f"captions file {str(self.path)!r}: {what}")

    def _parse_coco(self, data: dict) -> list[tuple[str, list[str]]]:
        images, annotations = data["images"], data["annotations"]
        if not isinstance(images, list) or not isinstance(annotations, list):
            raise self._bad("COCO 'images' and 'annotations' must be lists; re-export the file")
        order, by_id = [], {}
        for i, img in enumerate(images):
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise self._bad(f"COCO image entry {i} lacks 'id' or 'file_name'; fix the file")
            if img["id"] in by_id:
                raise self._bad(f"COCO image id {img['id']!r} appears twice; fix the file")
            by_id[img["id"]] = (str(img["file_name"]), [])
            order.append(img["id"])
        for i, ann in enumerate(annotations):
            if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
                raise self._bad(f"COCO annotation {i} lacks 'image_id' or 'caption'; fix the file")
            if ann["image_id"] not in by_id:
                raise self._bad(f"COCO annotation {i} names image_id {ann['image_id']!r}, which is not in 'images'")
            by_id[ann["image_id"]][1].extend(_caption_texts(ann["caption"]))
        return self._unique([by_id[k] for k in order])

    def _parse_karpathy(self, images: list, splits: set[str] | None) -> list[tuple[str, list[str]]]:
        pairs, seen_splits = [], set()
        for i, img in enumerate(images):
            if not isinstance(img, dict) or "filename" not in img or "sentences" not in img:
                raise self._bad(f"Karpathy image entry {i} lacks 'filename' or 'sentences'; fix the file")
            seen_splits.add(str(img.get("split")))
            if splits is not None and img.get("split") not in splits:
                continue
            rel = str(img["filename"])
            if img.get("filepath"):
                rel = f"{str(img['filepath']).rstrip('/')}/{rel}"
            pairs.append((rel, _caption_texts(img["sentences"])))
        if splits is not None and not pairs:
            raise self._bad(f"no image is in split {sorted(splits)}; the file has splits {sorted(seen_splits)}")
        return self._unique(pairs)

    def _parse_records(self, records: list, splits: set[str] | None, kind: str) -> list[tuple[str, list[str]]]:
        if not records:
            raise self._bad(f"the {kind} file has no records; give one record per image or per caption")
        has_split = False
        grouped: dict[str, list[str]] = {}
        seen_splits = set()
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise self._bad(
                    f"{kind} record {i + 1} must be an object with image and caption keys, got {type(rec).__name__}"
                )
            keys = [k for k in rec if k is not None]
            image_key = next((k for k in _IMAGE_KEYS if k in rec), None)
            if image_key is None:
                raise self._bad(
                    f"{kind} record {i + 1} has no image column (keys: {keys}); name it one of {', '.join(_IMAGE_KEYS)}"
                )
            if not rec[image_key]:
                raise self._bad(f"{kind} record {i + 1} has an empty {image_key!r}; every record needs an image path")
            caption_keys = [
                k for k in keys if k != image_key and (k in _CAPTION_KEYS or k.lower().startswith("caption"))
            ]
            if not caption_keys:
                raise self._bad(
                    f"{kind} record {i + 1} has no caption column (keys: {keys}); name it caption, captions or "
                    "caption_1, …"
                )
            has_split = has_split or "split" in rec
            seen_splits.add(str(rec.get("split")))
            if splits is not None and rec.get("split") not in splits:
                continue
            caps = grouped.setdefault(str(rec[image_key]), [])
            for k in caption_keys:
                caps.extend(_caption_texts(rec.get(k)))
        if splits is not None and not has_split:
            raise self._bad(f"split={sorted(splits)} was given but the records have no 'split' column; drop split")
        if splits is not None and not grouped:
            raise self._bad(f"no record is in split {sorted(splits)}; the file has splits {sorted(seen_splits)}")
        return list(grouped.items())

    def _unique(self, pairs: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
        seen = set()
        for image, _ in pairs:
            if image in seen:
                raise self._bad(f"image {image!r} is listed twice; merge its captions into one entry")
            seen.add(image)
        return pairs

    # -- the Dataset contract ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def n_captions(self) -> int:
        return len(self._captions)

    def rows(self, field: str | None = None) -> list[str]:
        return list(self._ids) if self.resolve_field(field) == "image" else list(self._caption_ids)

    def item_of_row(self, field: str | None = None) -> np.ndarray:
        if self.resolve_field(field) == "image":
            return np.arange(len(self._ids), dtype=np.int64)
        return self._caption_item.copy()

    def modality(self, field: str | None = None) -> str:
        return "image" if self.resolve_field(field) == "image" else "text"

    def image_path(self, item: int) -> Path:
        """The file of item ``item``."""
        return self.image_root / self._ids[item]

    def texts(self, field: str | None = None) -> list[str]:
        """All caption rows at once (``field`` must be ``"caption"``)."""
        if self.resolve_field(field) != "caption":
            raise ValueError(f"texts() reads a text field; {self.spec!r} field 'image' holds images")
        return list(self._captions)

    def get(self, row: int, field: str | None = None):
        if self.resolve_field(field) == "caption":
            return self._captions[row]
        path = self.image_path(row)
        if not path.exists():
            raise FileNotFoundError(
                f"image {str(path)!r} of {self.spec!r} does not exist; pass image_root= the folder the paths are "
                "relative to"
            )
        return open_rgb(path)

    def fingerprint(self, field: str | None = None) -> str:
        if self.resolve_field(field) == "caption":
            return hash_texts("text", self._captions)
        if self._fingerprint is None:
            self._fingerprint = hash_files(
                "image", self._ids, (self.image_path(i) for i in range(len(self._ids))),
                missing_hint=f" (dataset {self.spec!r}); pass image_root= the folder the image paths are relative to",
            )
        return self._fingerprint


def load_captions(spec: str, rest: str, options: dict) -> CaptionDataset:
    check_options(spec, options, ["split", "image_root"])
    return CaptionDataset(rest, spec=spec, **options)
