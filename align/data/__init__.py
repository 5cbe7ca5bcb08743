"""Datasets: ``load_dataset(spec, **options) -> Dataset`` over a registry of spec prefixes.

=============================  ==============================================================================
spec                           what
=============================  ==============================================================================
``concepts:imagenet-1k``       1,000 ImageNet classes (timm's text), class-index order; lemma/definition/prompt
``concepts:wordnet``           21,843 ImageNet-21k WordNet synsets, ascending wnid order (timm's in21k head)
``imagefolder:DIR``            images, sorted relative paths; label from class sub-folder or ``<wnid>_`` prefix
``captions:FILE``              image–caption pairs from COCO / Karpathy JSON, JSONL, CSV or TSV
``text:FILE``                  one text item per line (``.gz`` allowed); ids are 1-based line numbers
``multi30k:SPLIT.LANG``        ``$UNIALIGN_DATA/multi30k/SPLIT.LANG.gz``; SPLIT train/val/test, LANG en/de
``idx:IMAGES[,LABELS]``        IDX images (+ labels), e.g. MNIST / Fashion-MNIST
``fashion-mnist:SPLIT``        Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``)
``graph:EDGES[,NODES]``        graph nodes with text: edge list + node table; field ``node`` (graph) + text fields
``wordnet:imagenet-1k``        ImageNet-1k synsets in WordNet's hypernym graph (Debian ``wordnet-base``)
``wordnet:nouns``              all WordNet 3.0 noun synsets and hypernym links
``pointcloud:DIR``             3D meshes / point clouds (ModelNet-style folders); fields points, caption
``shapes:N``                   N procedural 3D shapes with captions (no download)
=============================  ==============================================================================

Every dataset follows :class:`~align.data._base.Dataset`: stable string ids, one or more fields (``--field`` on the
command line picks one), ``get(row, field)`` returning a ``str`` or an RGB ``PIL.Image``, optional ``labels`` /
``classes``, and a content ``fingerprint(field)`` that keys the feature cache. Two text datasets pair row by row
(:func:`load_paired_text`). Bad input raises ``ValueError`` / ``FileNotFoundError`` with a one-line message that
names the fix.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .._validation import InputTypeError
from ._base import Dataset

__all__ = ["Dataset", "load_dataset", "list_datasets", "load_paired_text", "imagenet_wnids"]


def _loader(module: str, name: str) -> Callable:
    def load(spec: str, rest: str, options: dict) -> Dataset:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{module}"), name)(spec, rest, options)

    return load


# prefix -> (loader, [(spec pattern, description), …])
_REGISTRY: dict[str, tuple[Callable, list[tuple[str, str]]]] = {
    "concepts": (_loader("_concepts", "load_concepts"), [
        ("concepts:imagenet-1k", "1,000 ImageNet-1k classes in class-index order (text from timm): fields lemma, "
                                 "lemmas, definition, prompt; ids are wnids"),
        ("concepts:wordnet", "21,843 ImageNet-21k WordNet synsets in ascending wnid order (text from timm): fields "
                             "lemma, lemmas, definition, prompt; ids are wnids"),
    ]),
    "imagefolder": (_loader("_images", "load_imagefolder"), [
        ("imagefolder:DIR", "image files under DIR in sorted relative-path order; label from the class sub-folder "
                            "or an ImageNet <wnid>_<name> file name (option label_from)"),
    ]),
    "captions": (_loader("_captions", "load_captions"), [
        ("captions:FILE", "image-caption pairs from COCO or Karpathy-split JSON, JSONL, CSV or TSV: fields image, "
                          "caption (options split, image_root)"),
    ]),
    "text": (_loader("_text", "load_text"), [
        ("text:FILE", "one text item per line (.gz allowed); ids are 1-based line numbers, so two line-aligned "
                      "files pair row by row"),
    ]),
    "multi30k": (_loader("_text", "load_multi30k"), [
        ("multi30k:SPLIT.LANG", "Multi30k captions under $UNIALIGN_DATA/multi30k; SPLIT train, val or test, LANG en "
                                "or de (option root)"),
    ]),
    "idx": (_loader("_idx", "load_idx"), [
        ("idx:IMAGES_FILE,LABELS_FILE", "labelled images in IDX format (.gz allowed), e.g. MNIST / Fashion-MNIST "
                                        "(option classes)"),
    ]),
    "fashion-mnist": (_loader("_idx", "load_fashion_mnist"), [
        ("fashion-mnist:SPLIT", "Fashion-MNIST train (60,000) or test (10,000) from Debian's dataset-fashion-mnist "
                                "(option root)"),
    ]),
    "graph": (_loader("_graph", "load_graph"), [
        ("graph:EDGES[,NODES]", "nodes of a graph: edge list (CSV/TSV, optional weight column) and a node table "
                                "whose id column names nodes and whose other columns are text fields; field node "
                                "(graph) plus the text fields (options isolated=error|drop, default_field)"),
    ]),
    "wordnet": (_loader("_wordnet", "load_wordnet"), [
        ("wordnet:imagenet-1k", "the 1,000 ImageNet-1k synsets as nodes of WordNet's hypernym graph (their "
                                "ancestors included) from Debian's wordnet-base: fields node, lemma, lemmas, "
                                "definition, gloss (options root, nodes=leaves|all)"),
        ("wordnet:nouns", "all 82,115 WordNet 3.0 noun synsets and their hypernym links (option root)"),
    ]),
    "pointcloud": (_loader("_pointcloud", "load_pointcloud"), [
        ("pointcloud:DIR", "3D shapes under DIR (.off/.ply meshes sampled to points, .txt/.npy/.ply point clouds), "
                           "label from the class sub-folder (ModelNet layout), optional captions file: fields "
                           "points, caption (options split, captions, n_points, seed)"),
    ]),
    "shapes": (_loader("_shapes", "load_shapes"), [
        ("shapes:N", "N procedural 3D shapes (primitives with sizes, proportions, counts, arrangements) with "
                     "captions, no download: fields points, caption; labels = primitive (options seed, n_points)"),
    ]),
}


def list_datasets() -> list[tuple[str, str]]:
    """Every dataset spec pattern with a one-line description, as ``(spec, description)`` pairs."""
    return [entry for _, entries in _REGISTRY.values() for entry in entries]


def load_dataset(spec: str, **options) -> Dataset:
    """Load the dataset a spec names, e.g. ``"concepts:imagenet-1k"`` or ``"imagefolder:/data/photos"``.

    Parameters
    ----------
    spec : str
        ``PREFIX:REST``; :func:`list_datasets` lists the prefixes and what ``REST`` means for each.
    **options
        Loader options (``template=`` for concepts, ``label_from=`` for image folders, ``split=`` /
        ``image_root=`` for captions, ``classes=`` for IDX, ``root=`` for multi30k / fashion-mnist). An option the
        loader does not take is an error that lists the ones it does.

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        Unknown prefix (the message lists the valid specs), bad option, empty or malformed data.
    FileNotFoundError
        A file or folder the spec names does not exist.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise InputTypeError(
            f"`spec` must be a dataset spec string such as 'concepts:imagenet-1k', got {type(spec).__name__}"
        )
    prefix, sep, rest = spec.partition(":")
    if not sep or prefix not in _REGISTRY:
        valid = ", ".join(pattern for pattern, _ in list_datasets())
        hint = ""
        if Path(spec).expanduser().is_dir():
            hint = f"; for a folder of images write imagefolder:{spec}"
        elif Path(spec).expanduser().is_file():
            hint = f"; for a file of lines write text:{spec}, for captions captions:{spec}"
        raise ValueError(f"unknown dataset spec {spec!r}: valid specs are {valid}{hint}")
    loader, _ = _REGISTRY[prefix]
    return loader(spec, rest, dict(options))


def load_paired_text(spec_a: str, spec_b: str, **options) -> tuple[Dataset, Dataset]:
    """Two line-aligned text datasets whose row ``i`` pair up (e.g. ``multi30k:test.en`` and ``multi30k:test.de``).

    Both have ids ``"1" … "n"``; a different number of lines is a ``ValueError``.
    """
    from ._text import load_paired_text as _load

    return _load(spec_a, spec_b, **options)


def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k WordNet ids (``"n01440764"`` …) in class-index order.

    Entry ``c`` names class ``c`` of every ImageNet-1k classifier head, so it maps an ImageNet file name's
    ``<wnid>_`` prefix to a class index; the same order as the ids of ``load_dataset("concepts:imagenet-1k")``.
    Read from the installed timm's ``data/_info/imagenet_synsets.txt`` without importing timm (cached).

    Raises
    ------
    MissingPackageError
        timm is not installed.
    FileNotFoundError
        The installed timm lacks the file (upgrade timm).
    """
    from ._concepts import imagenet_wnids as _wnids

    return _wnids()
