"""Concepts: the WordNet synsets whose names and definitions ship inside timm.

timm bundles, under ``timm/data/_info/``:

* ``imagenet_synsets.txt``: the 1,000 ImageNet-1k wnids in class-index order (line ``c`` is class ``c`` of every
  ImageNet-1k classifier head);
* ``imagenet21k_goog_synsets.txt``: the 21,843 wnids of Google's ImageNet-21k ("fall11") release in its class-index
  order, which is ascending wnid order (the order of timm's ``*_in21k`` classifier heads);
* ``imagenet_synset_to_lemma.txt`` / ``imagenet_synset_to_definition.txt``: ``wnid<TAB>text`` for 21,844 synsets,
  the 21,843 above plus ``n04399382`` ("teddy, teddy bear"), an ImageNet-1k class missing from fall11.

``concepts:imagenet-1k`` is the first list, ``concepts:wordnet`` the second; both read their text from the last
two files. The files are located through the installed ``timm`` package without importing it (no torch import).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from .._validation import MissingPackageError
from ._base import Dataset
from ._common import check_options, hash_texts

__all__ = ["ConceptDataset", "timm_info_dir", "imagenet_wnids", "wordnet_wnids", "synset_lemmas",
           "synset_definitions", "first_lemma", "with_article", "DEFAULT_TEMPLATE"]

#: The default prompt template; ``{a}`` is "a" or "an", chosen for the lemma.
DEFAULT_TEMPLATE = "a photo of {a} {lemma}."

_SUBSETS = {
    "imagenet-1k": ("imagenet_synsets.txt", "the 1,000 ImageNet-1k classes in class-index order"),
    "wordnet": ("imagenet21k_goog_synsets.txt", "the 21,843 ImageNet-21k (fall11) WordNet synsets in wnid order"),
}


@functools.lru_cache(maxsize=1)
def timm_info_dir() -> Path:
    """``timm/data/_info`` of the installed timm, found without importing timm."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError("concept datasets read their text from the timm package; install it with "
                                  "`pip install timm`")
    for root in spec.submodule_search_locations:
        info = Path(root) / "data" / "_info"
        if (info / "imagenet_synset_to_lemma.txt").is_file():
            return info
    raise FileNotFoundError(
        "timm is installed but has no data/_info/imagenet_synset_to_lemma.txt; upgrade it with `pip install -U timm`"
    )


def _read_lines(name: str) -> list[str]:
    path = timm_info_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"timm has no data/_info/{name}; upgrade it with `pip install -U timm`")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_table(name: str) -> dict[str, str]:
    table = {}
    for line in _read_lines(name):
        wnid, _, text = line.partition("\t")
        table[wnid] = text.strip()
    return table


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k wnids in class-index order."""
    return tuple(_read_lines("imagenet_synsets.txt"))


@functools.lru_cache(maxsize=1)
def wordnet_wnids() -> tuple[str, ...]:
    """The 21,843 ImageNet-21k (fall11) wnids in class-index (ascending wnid) order."""
    return tuple(_read_lines("imagenet21k_goog_synsets.txt"))


@functools.lru_cache(maxsize=1)
def synset_lemmas() -> dict[str, str]:
    """``wnid -> "lemma, lemma, …"`` (WordNet's comma-separated synonyms) for 21,844 synsets."""
    return _read_table("imagenet_synset_to_lemma.txt")


@functools.lru_cache(maxsize=1)
def synset_definitions() -> dict[str, str]:
    """``wnid -> definition`` (the WordNet gloss) for 21,844 synsets."""
    return _read_table("imagenet_synset_to_definition.txt")


def first_lemma(lemmas: str) -> str:
    """The first synonym of a comma-separated WordNet lemma list: ``"tench, Tinca tinca" -> "tench"``."""
    return " ".join(lemmas.split(",")[0].replace("_", " ").split())


# Words that start with a vowel letter but a consonant sound, and vice versa (lower-case prefixes).
_CONSONANT_SOUND = ("eu", "uni", "unit", "use", "usu", "uter", "ure", "uro", "one", "once", "ewe", "ufo", "ukulele")
_VOWEL_SOUND = ("hour", "honest", "honor", "honour", "heir")


def with_article(word: str) -> str:
    """``"a"`` or ``"an"`` for ``word`` by its first sound (a spelling heuristic with the common exceptions)."""
    w = word.strip().lower()
    if not w:
        return "a"
    if w.startswith(_VOWEL_SOUND):
        return "an"
    if w.startswith(_CONSONANT_SOUND):
        return "a"
    return "an" if w[0] in "aeiou" else "a"


class ConceptDataset(Dataset):
    """WordNet concepts (ImageNet classes) as text items; ids are wnids, labels ``arange(n)``, classes the lemmas.

    Fields
    ------
    lemma
        The first synonym, e.g. ``"tench"`` (default field). Not unique: ImageNet-1k has two "crane"s
        (bird, machine) and two "maillot"s.
    lemmas
        All synonyms as WordNet lists them, e.g. ``"tench, Tinca tinca"``.
    definition
        The WordNet gloss, e.g. ``"freshwater dace-like game fish of Europe and western Asia …"``.
    prompt
        ``template`` filled with ``a`` (the article) and ``lemma``: ``"a photo of a tench."``.

    Parameters
    ----------
    subset : {"imagenet-1k", "wordnet"}
        ``imagenet-1k``: 1,000 classes in ImageNet class-index order (``labels[i] == i`` is the index of the
        1000-way head). ``wordnet``: 21,843 ImageNet-21k synsets in ascending wnid order (the fall11 head order).
    template : str
        Prompt template with ``{lemma}`` and optionally ``{a}``, ``{lemmas}``, ``{definition}`` placeholders.
    """

    fields = ("lemma", "lemmas", "definition", "prompt")
    default_field = "lemma"

    def __init__(self, subset: str, *, template: str = DEFAULT_TEMPLATE, spec: str | None = None):
        if subset not in _SUBSETS:
            raise ValueError(
                f"unknown concept set {subset!r}; use one of: {', '.join('concepts:' + s for s in _SUBSETS)}"
            )
        self.spec = spec or f"concepts:{subset}"
        self.subset = subset
        if not isinstance(template, str) or "{lemma}" not in template:
            raise ValueError(f"`template` must be a string containing {{lemma}}, got {template!r}")
        try:
            template.format(a="a", lemma="x", lemmas="x", definition="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"`template` {template!r} has an unknown placeholder ({exc}); use {{a}}, {{lemma}}, {{lemmas}}, "
                "{definition}"
            ) from None
        self.template = template
        wnids = imagenet_wnids() if subset == "imagenet-1k" else wordnet_wnids()
        lemmas, definitions = synset_lemmas(), synset_definitions()
        missing = [w for w in wnids if w not in lemmas or w not in definitions]
        if missing:
            raise ValueError(f"timm's synset tables lack {len(missing)} wnid(s) such as {missing[0]}; upgrade timm")
        self._ids = list(wnids)
        self._text = {
            "lemmas": [lemmas[w] for w in wnids],
            "definition": [definitions[w] for w in wnids],
        }
        self._text["lemma"] = [first_lemma(s) for s in self._text["lemmas"]]
        self._text["prompt"] = [
            template.format(a=with_article(lem), lemma=lem, lemmas=lems, definition=d)
            for lem, lems, d in zip(self._text["lemma"], self._text["lemmas"], self._text["definition"])
        ]
        self.labels = np.arange(len(wnids), dtype=np.int64)
        self.classes = list(self._text["lemma"])

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def modality(self, field: str | None = None) -> str:
        self.resolve_field(field)
        return "text"

    def texts(self, field: str | None = None) -> list[str]:
        """All rows of ``field`` at once."""
        return list(self._text[self.resolve_field(field)])

    def get(self, row: int, field: str | None = None) -> str:
        return self._text[self.resolve_field(field)][row]

    def fingerprint(self, field: str | None = None) -> str:
        return hash_texts("text", self._text[self.resolve_field(field)])


def load_concepts(spec: str, rest: str, options: dict) -> ConceptDataset:
    check_options(spec, options, ["template"])
    return ConceptDataset(rest.strip(), spec=spec, **options)


def subset_descriptions() -> dict[str, str]:
    return {name: desc for name, (_, desc) in _SUBSETS.items()}
