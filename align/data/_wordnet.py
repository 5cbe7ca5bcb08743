"""WordNet's noun hierarchy as a graph whose nodes carry text (Debian ``wordnet-base``).

``/usr/share/wordnet/data.noun`` (WordNet 3.0, Princeton) holds 82,115 noun synsets, one per line::

    02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 023 @ 02083346 n 0000 … | a member of the genus …

(offset, lexicographer file, ``n``, hexadecimal word count, ``word lex_id`` pairs, pointer count, ``symbol offset
pos source/target`` pointers, ``|`` gloss). ImageNet wnids are ``"n"`` + the 8-digit offset, so the synsets link to
the ImageNet classes and photos. The graph joins every synset to its hypernyms (``@``) and instance hypernyms
(``@i``), undirected.

Specs
-----
``wordnet:imagenet-1k``
    The ImageNet subtree: the 1,000 ImageNet-1k synsets (items, in class-index order, so ``labels[i] == i``) and
    every ancestor up to ``entity`` (nodes of the graph, not items unless ``nodes="all"``).
``wordnet:nouns``
    All noun synsets, in offset order.

Fields: ``node`` (the graph), ``lemma`` (first synonym, underscores as spaces), ``lemmas`` (all synonyms,
comma-separated), ``definition`` (the gloss up to its first quoted example; equals timm's ImageNet definitions) and
``gloss`` (the full gloss with examples).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ._common import check_options
from ._graph import Graph, GraphDataset

__all__ = ["DEFAULT_ROOT", "read_noun_synsets", "load_wordnet", "WordNetSynsets"]

#: Where Debian's ``wordnet-base`` package puts the database.
DEFAULT_ROOT = "/usr/share/wordnet"
_HYPERNYM_SYMBOLS = ("@", "@i")


class WordNetSynsets:
    """Parsed ``data.noun``: wnids in offset order, synonyms, glosses and hypernym pointers."""

    def __init__(self, wnids, words, glosses, hypernyms):
        self.wnids: list[str] = wnids
        self.words: list[list[str]] = words
        self.glosses: list[str] = glosses
        self.hypernyms: list[list[int]] = hypernyms
        self.index = {w: k for k, w in enumerate(wnids)}


def _data_file(root: str | Path) -> Path:
    path = Path(root).expanduser() / "data.noun"
    if not path.is_file():
        raise FileNotFoundError(
            f"WordNet noun data not found at {str(path)!r}; install Debian's wordnet-base "
            "(apt-get install wordnet-base) or pass --dataset-option root=DIR (a folder holding data.noun)"
        )
    return path


@functools.lru_cache(maxsize=2)
def read_noun_synsets(root: str = DEFAULT_ROOT) -> WordNetSynsets:
    """Parse ``ROOT/data.noun`` (about 1 s for 82k synsets); cached per root."""
    path = _data_file(root)
    wnids, words, glosses, hyper_offsets = [], [], [], []
    with open(path, encoding="utf-8", errors="strict") as f:
        for lineno, line in enumerate(f, start=1):
            if line.startswith("  "):  # license header
                continue
            head, bar, gloss = line.partition(" | ")
            parts = head.split()
            try:
                if not bar or parts[2] != "n":
                    raise ValueError("not a noun synset line")
                w_cnt = int(parts[3], 16)
                ws = [parts[4 + 2 * k].replace("_", " ") for k in range(w_cnt)]
                p = 4 + 2 * w_cnt
                p_cnt = int(parts[p])
                ptrs = parts[p + 1:p + 1 + 4 * p_cnt]
                hyp = [ptrs[4 * k + 1] for k in range(p_cnt) if ptrs[4 * k] in _HYPERNYM_SYMBOLS]
            except (IndexError, ValueError) as exc:
                raise ValueError(f"{str(path)!r} line {lineno} is not a WordNet noun synset ({exc}); reinstall "
                                 "wordnet-base") from None
            wnids.append("n" + parts[0])
            words.append(ws)
            glosses.append(gloss.strip())
            hyper_offsets.append(hyp)
    index = {w: k for k, w in enumerate(wnids)}
    hypernyms = [[index["n" + o] for o in hyp if "n" + o in index] for hyp in hyper_offsets]
    return WordNetSynsets(wnids, words, glosses, hypernyms)


def _definition(gloss: str) -> str:
    """The gloss up to its first quoted example: ``'a dog; "the dog barked"' -> 'a dog'``."""
    cut = gloss.find('; "')
    text = gloss[:cut] if cut >= 0 else gloss
    return text.strip().rstrip(";").strip()


def load_wordnet(spec: str, rest: str, options: dict) -> GraphDataset:
    """``wordnet:imagenet-1k`` / ``wordnet:nouns``; options ``root`` (default ``/usr/share/wordnet``) and
    ``nodes`` (``"leaves"``: only the 1,000 ImageNet synsets are items, the default; ``"all"``: ancestors too)."""
    check_options(spec, options, ["root", "nodes"])
    root = str(options.get("root", DEFAULT_ROOT))
    nodes = options.get("nodes", "leaves")
    if nodes not in ("leaves", "all"):
        raise ValueError(f"`nodes` must be 'leaves' or 'all', got {nodes!r}")
    subset = rest.strip()
    if subset not in ("imagenet-1k", "nouns"):
        raise ValueError(f"unknown WordNet subset {subset!r}; use wordnet:imagenet-1k or wordnet:nouns")
    wn = read_noun_synsets(root)
    labels = classes = None
    if subset == "nouns":
        keep = np.arange(len(wn.wnids))
        items_global = keep
    else:
        from ._concepts import imagenet_wnids

        leaves = list(imagenet_wnids())
        missing = [w for w in leaves if w not in wn.index]
        if missing:
            raise ValueError(f"{len(missing)} ImageNet wnid(s) such as {missing[0]} are not in {root}/data.noun; "
                             "the database must be WordNet 3.0 (Debian wordnet-base)")
        seen: set[int] = set()
        stack = [wn.index[w] for w in leaves]
        while stack:
            k = stack.pop()
            if k in seen:
                continue
            seen.add(k)
            stack.extend(wn.hypernyms[k])
        keep = np.asarray(sorted(seen), dtype=np.int64)
        leaf_idx = np.asarray([wn.index[w] for w in leaves], dtype=np.int64)
        if nodes == "leaves":
            items_global = leaf_idx
            labels = np.arange(len(leaves))
        else:
            rest_idx = np.setdiff1d(keep, leaf_idx)
            items_global = np.concatenate([leaf_idx, rest_idx])
    local = -np.ones(len(wn.wnids), dtype=np.int64)
    local[keep] = np.arange(len(keep))
    edges = [(local[k], local[h]) for k in keep for h in wn.hypernyms[k] if local[h] >= 0]
    graph = Graph([wn.wnids[k] for k in keep], np.asarray(edges, dtype=np.int64), name=f"wordnet:{subset}")
    items = local[items_global]
    texts = {
        "lemma": [wn.words[k][0] for k in items_global],
        "lemmas": [", ".join(wn.words[k]) for k in items_global],
        "definition": [_definition(wn.glosses[k]) for k in items_global],
        "gloss": [wn.glosses[k] for k in items_global],
    }
    if labels is not None:
        classes = list(texts["lemma"])
    return GraphDataset(graph, items=items, texts=texts, labels=labels, classes=classes, spec=spec)
