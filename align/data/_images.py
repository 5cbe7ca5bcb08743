"""Image folders: ``imagefolder:DIR``.

Items are the image files under ``DIR`` (searched recursively, hidden files and folders skipped, suffixes in
:data:`IMAGE_SUFFIXES`, case-insensitive) in sorted relative-path order; the id of an item is its relative path
with ``/`` separators. Labels come from, in this order:

1. the first-level sub-folder (``DIR/<class>/…/x.png``), as torchvision's ``ImageFolder`` does, when every image
   sits in a sub-folder;
2. an ImageNet-style ``<wnid>_<name>.<ext>`` file name (``n01440764_tench.JPEG``), when every image sits directly in
   ``DIR`` and every name has that prefix;
3. none (``labels is None``) for a flat folder of arbitrary names.

When every class key is an ImageNet-1k wnid (sub-folders named ``n01440764`` … as in the ImageNet train/val
layout, or ``n01440764_tench.JPEG`` files as in ``imagenet-sample``), labels are **ImageNet-1k class indices**
(0–999, timm's ``imagenet_synsets.txt`` order) and ``classes`` is the full list of 1,000 ImageNet lemmas, so the
labels can be compared with the argmax of any 1000-way ImageNet classifier head even when the folder holds only
some of the classes. Otherwise labels index the sorted distinct class keys, and ``classes`` holds their names
(the WordNet lemma for a wnid timm knows, the folder name or the ``<name>`` part of the file name otherwise).
Mixing images at the top level with images in sub-folders is an error.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ._base import Dataset
from ._common import IMAGE_SUFFIXES, check_options, existing_dir, hash_files, open_rgb

__all__ = ["ImageFolderDataset"]

_WNID_FILE = re.compile(r"^(n\d{8})_(.+)\.[^.]+$")
_WNID = re.compile(r"^n\d{8}$")


def _scan(root: Path) -> list[str]:
    """Relative posix paths of the image files under ``root``, sorted; hidden entries skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            found.append((rel_dir / name).as_posix())
    return sorted(found)


def _class_names(keys: list[str], fallback: dict[str, str]) -> list[str]:
    """A readable name per class key: the WordNet lemma for a known wnid, else ``fallback`` or the key."""
    from ._concepts import first_lemma, synset_lemmas

    lemmas = synset_lemmas() if any(_WNID.match(k) for k in keys) else {}
    names = []
    for k in keys:
        if k in lemmas:
            names.append(first_lemma(lemmas[k]))
        else:
            names.append(fallback.get(k, k).replace("_", " "))
    return names


class ImageFolderDataset(Dataset):
    """Images in a folder, labelled by class sub-folder or by an ImageNet ``<wnid>_`` file-name prefix.

    Parameters
    ----------
    root : path
        The folder.
    label_from : {"auto", "folder", "wnid", "none"}
        ``auto`` picks as described in the module docstring; ``folder`` / ``wnid`` insist on that scheme (an error
        if it does not apply); ``none`` leaves the images unlabelled.

    Attributes
    ----------
    label_source : str
        ``"folder"``, ``"wnid"`` or ``"none"``.
    imagenet_labels : bool
        True when labels are ImageNet-1k class indices.
    """

    fields = ("image",)
    default_field = "image"

    def __init__(self, root, *, label_from: str = "auto", spec: str | None = None):
        self.spec = spec or f"imagefolder:{root}"
        self.root = existing_dir(root, "image folder", self.spec)
        if label_from not in ("auto", "folder", "wnid", "none"):
            raise ValueError(f"`label_from` must be one of 'auto', 'folder', 'wnid', 'none', got {label_from!r}")
        self._ids = _scan(self.root)
        if not self._ids:
            raise ValueError(
                f"image folder {str(self.root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}); check the path"
            )
        self._fingerprint: str | None = None
        self.label_source, self.imagenet_labels = "none", False
        self.labels, self.classes = None, None
        if label_from != "none":
            self._assign_labels(label_from)

    def _assign_labels(self, mode: str) -> None:
        in_sub = ["/" in rel for rel in self._ids]
        fallback: dict[str, str] = {}
        source, keys = None, []
        if all(in_sub):
            source, keys = "folder", [rel.split("/", 1)[0] for rel in self._ids]
        elif any(in_sub):
            top, sub = self._ids[in_sub.index(False)], self._ids[in_sub.index(True)]
            raise ValueError(
                f"image folder {str(self.root)!r} mixes top-level images ({top!r}) with images in class sub-folders "
                f"({sub!r}); move them into class folders, or pass label_from='none'"
            )
        else:
            matches = [_WNID_FILE.match(rel) for rel in self._ids]
            if all(matches):
                source, keys = "wnid", [m.group(1) for m in matches]
                fallback = {m.group(1): m.group(2) for m in matches}
        if mode == "folder" and source != "folder":
            raise ValueError(
                f"label_from='folder' needs images in class sub-folders, but {str(self.root)!r} has its images at the "
                "top level; pass label_from='auto'"
            )
        if mode == "wnid" and source != "wnid":
            bad = next((r for r in self._ids if "/" in r or not _WNID_FILE.match(r)), self._ids[0])
            raise ValueError(
                f"label_from='wnid' needs every image directly in the folder and named <wnid>_<name>.<ext> "
                f"(like n01440764_tench.JPEG), got {bad!r}; rename the files or pass label_from='auto'"
            )
        if source is None:  # a flat folder of arbitrary names: unlabelled
            return
        from ._concepts import imagenet_wnids

        distinct = sorted(set(keys))
        imagenet = imagenet_wnids() if all(_WNID.match(k) for k in distinct) else ()
        if imagenet and set(distinct) <= set(imagenet):
            index = {w: i for i, w in enumerate(imagenet)}
            self.classes = _class_names(list(imagenet), fallback)
            self.imagenet_labels = True
        else:
            index = {k: i for i, k in enumerate(distinct)}
            self.classes = _class_names(distinct, fallback)
        self.labels = np.array([index[k] for k in keys], dtype=np.int64)
        self.label_source = source

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def path(self, row: int) -> Path:
        """The file of item ``row``."""
        return self.root / self._ids[row]

    def modality(self, field: str | None = None) -> str:
        self.resolve_field(field)
        return "image"

    def get(self, row: int, field: str | None = None):
        self.resolve_field(field)
        return open_rgb(self.path(row))

    def fingerprint(self, field: str | None = None) -> str:
        """sha256 over every (relative path, file bytes) in item order; computed once per instance."""
        self.resolve_field(field)
        if self._fingerprint is None:
            self._fingerprint = hash_files("image", self._ids, (self.root / rel for rel in self._ids))
        return self._fingerprint


def load_imagefolder(spec: str, rest: str, options: dict) -> ImageFolderDataset:
    check_options(spec, options, ["label_from"])
    return ImageFolderDataset(rest, spec=spec, **options)
