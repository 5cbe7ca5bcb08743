"""Projector benchmarks: training throughput on cached features, and every kind/loss on real Multi30k features.

Two tasks, each printing JSON lines to stdout (one per configuration) and an optional JSON file:

``throughput``
    Synthetic float32 features written to a memory-mapped ``.npy`` (n rows, d dims), then a fixed number of epochs of
    each trained kind. Reports rows/s, step time, and the share of the step spent waiting for data
    (``data_time_fraction``; goal < 10%), with the trainer's background reader: medians over ``--repeats`` fits
    (a fresh projector each), with the fit's wall and CPU time and the peak resident memory (and CUDA allocation)
    one fit adds, measured by ``benchmarks._harness.measure``. The temporary files are removed at the end.

``multi30k``
    Projectors from ``minilm`` to ``e5-small`` trained only on English captions of Multi30k ``train``
    (minilm(en) -> e5(en)), then evaluated cross-lingually: English test captions (minilm, projected) retrieve their
    German translations (e5-small passage embeddings of the German test captions) among 1,000 candidates. Prints R@1 /
    R@5 per kind and loss, plus the e5-alone (EN e5 vs DE e5) and minilm-alone (EN minilm vs DE minilm) baselines,
    and time-to-accuracy (wall time until validation R@1 first reaches 95% of its best) for the trained kinds.
    Features are ``.npy`` files in ``--features`` named ``m30k_{split}_{lang}_{encoder}.npy`` (row i = caption i),
    e.g. made with ``unialign embed``.

``imagenet``
    Zero-shot transfer to unseen classes: image features of one photo per ImageNet class (``efficientnet-lite0`` on
    ``imagenet-sample``) mapped into a text encoder's class-prompt space (``minilm`` on ``concepts:imagenet-1k``,
    field ``prompt``); fitted on a random half of the classes, then each photo of the other half is classified among
    those unseen classes' prompts (chance 1/500). Row c of both files must be class c.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_projectors.py throughput --n 200000 --dim 384 --epochs 1 --repeats 3
    python benchmarks/bench_projectors.py multi30k --features /path/to/feats --out results.json
    python benchmarks/bench_projectors.py imagenet --images img.npy --prompts prompts.npy
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import emit, measure  # noqa: E402

SUITE = "projectors"

def _line(obj):
    """One measured row: a JSON line on stdout, kept by ``python -m benchmarks run`` (``benchmarks._harness``)."""
    emit(SUITE, **obj)


TRAINED = [
    ("linear", "infonce", {"solver": "trained"}),
    ("linear", "siglip", {"solver": "trained"}),
    ("mlp", "infonce", {"hidden_dim": 1024}),
    ("mlp", "siglip", {"hidden_dim": 1024}),
    ("glu", "infonce", {"hidden_dim": 1024}),
    ("glu", "siglip", {"hidden_dim": 1024}),
]


def throughput(args) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="unialign-bench-"))
    try:
        return _throughput(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _throughput(args, tmp: Path) -> list[dict]:
    import torch

    from projectors import make_projector

    rng = np.random.default_rng(0)
    paths = {}
    for side, d in (("x", args.dim), ("y", args.dim)):
        arr = np.lib.format.open_memmap(tmp / f"{side}.npy", mode="w+", dtype=np.float32, shape=(args.n, d))
        for s in range(0, args.n, 65536):
            block = rng.standard_normal((min(65536, args.n - s), d)).astype(np.float32)
            arr[s:s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        arr.flush()
        del arr
        paths[side] = tmp / f"{side}.npy"
    X = np.load(paths["x"], mmap_mode="r")
    Y = np.load(paths["y"], mmap_mode="r")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for kind, loss, extra in TRAINED:
        if args.kinds and kind not in args.kinds:
            continue
        runs = []

        def fit(kind=kind, loss=loss, extra=extra, runs=runs):  # a fresh projector per repeat; trainer's clock
            p = make_projector(kind, loss=loss, batch_size=args.batch_size, max_epochs=args.epochs,
                               val_fraction=0.0, device=device, rng=0, **extra)
            p.fit(X, Y)
            res = p.train_result_
            runs.append((sum(h["epoch_time_s"] for h in res.history), res.n_steps, res.data_time_fraction))
            return res

        m = measure(fit, repeats=args.repeats, warmup=args.warmup, device=device)
        runs = runs[args.warmup:]
        epoch_time = float(np.median([r[0] for r in runs]))
        steps = runs[-1][1]
        row = {"task": "throughput", "kind": kind, "loss": loss, "n": args.n, "dim": args.dim,
               "batch_size": args.batch_size, "device": str(device), "steps": steps, "repeats": args.repeats,
               "rows_per_s": round(steps * args.batch_size / epoch_time, 1),
               "step_ms": round(1e3 * epoch_time / steps, 2),
               "data_time_fraction": round(float(np.median([r[2] for r in runs])), 4),
               "fit_wall_s": round(m.wall_s, 3), "fit_cpu_s": round(m.cpu_s, 3),
               "fit_wall_times": [round(t, 3) for t in m.wall_times],
               "peak_mb": None if m.peak_mb is None else round(m.peak_mb, 1),
               "cuda_peak_mb": None if m.cuda_peak_mb is None else round(m.cuda_peak_mb, 1),
               "torch_threads": torch.get_num_threads()}
        _line(row)
        rows.append(row)
    return rows


def _load(feats: Path, name: str) -> np.ndarray:
    path = feats / f"m30k_{name}.npy"
    if not path.exists():
        sys.exit(f"error: {path} is missing; embed Multi30k with minilm and e5-small first")
    return np.load(path, mmap_mode="r")


def _time_to_accuracy(history, frac=0.95):
    best = max(h["val_R@1"] for h in history)
    t = 0.0
    for h in history:
        t += h["epoch_time_s"]
        if h["val_R@1"] >= frac * best:
            return t
    return t


def multi30k(args) -> list[dict]:
    import torch

    from align.evaluation import retrieval_metrics
    from projectors import make_projector

    feats = Path(args.features)
    Xtr, Ytr = _load(feats, "train_en_minilm"), _load(feats, "train_en_e5passage")
    Xq, Yg = _load(feats, "test_en_minilm"), _load(feats, "test_de_e5passage")
    rows = []

    def report(name, Q, G, **extra):
        res = retrieval_metrics(np.asarray(Q), np.asarray(G), ks=(1, 5, 10))
        row = {"task": "multi30k", "config": name, "EN->DE R@1": res.query_to_gallery.recall[1],
               "EN->DE R@5": res.query_to_gallery.recall[5], "DE->EN R@1": res.gallery_to_query.recall[1],
               "n_candidates": len(G), **extra}
        _line(row)
        rows.append(row)

    if not args.kinds or "baselines" in args.kinds:
        report("e5 alone (EN e5 vs DE e5)", _load(feats, "test_en_e5passage"), Yg)
        report("minilm alone (EN minilm vs DE minilm)", Xq, _load(feats, "test_de_minilm"))

    def run(name, proj, **fit_kw):
        t0 = time.perf_counter()
        proj.fit(Xtr, Ytr, **fit_kw)
        fit_s = time.perf_counter() - t0
        extra = {"fit_s": round(fit_s, 2), "params": {k: v for k, v in proj.get_params().items()
                                                     if k in ("alpha", "n_components", "hidden_dim", "lr",
                                                              "batch_size", "solver", "method", "init")}}
        if hasattr(proj, "train_result_"):
            tr = proj.train_result_
            extra.update(initial_val_R1=round(tr.initial_score, 4), best_epoch=tr.best_epoch, epochs=len(tr.history), val_R1=round(tr.best_score, 4),
                         time_to_95pct_s=round(_time_to_accuracy(tr.history), 2),
                         data_time_fraction=round(tr.data_time_fraction, 4))
        if hasattr(proj, "n_components_"):
            extra.update(chosen_k=proj.n_components_, subspace_scores=proj.scores_)
        report(name, proj.transform(np.asarray(Xq)), proj.transform_y(np.asarray(Yg)), **extra)

    want = lambda k: not args.kinds or k in args.kinds
    if want("linear"):
        for alpha in (0.1, 1.0, 10.0):
            run(f"linear closed-form ridge alpha={alpha}", make_projector("linear", alpha=alpha))
    if want("procrustes"):
        run("procrustes", make_projector("procrustes"))
    if want("cca"):
        run("cca k=384", make_projector("cca", n_components=384, reg=1e-4))
    if want("subspace"):
        run("subspace (cca, k by held-out R@1)", make_projector("subspace", method="cca", rng=0))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for kind, loss, extra in TRAINED:
        if not want(kind):
            continue
        for init in args.inits:
            if init == "ridge" and kind == "linear" and loss == "siglip":
                continue
            params = {"loss": loss, "batch_size": args.batch_size, "max_epochs": args.epochs,
                      "patience": args.patience, "lr": args.lr if init == "random" else args.ridge_lr,
                      "val_fraction": 0.1, "device": device, "rng": 0, "init": init, **extra}
            run(f"{kind} trained, {loss}, init={init}", make_projector(kind, **params))
    return rows


def imagenet(args) -> list[dict]:
    """Zero-shot transfer to unseen classes: image features -> class-prompt space, 500 seen / 500 unseen classes."""
    from align.evaluation import retrieval_metrics
    from projectors import make_projector

    images = np.load(args.images)
    prompts = np.load(args.prompts)
    if images.shape[0] != prompts.shape[0]:
        sys.exit(f"error: --images has {images.shape[0]} rows but --prompts {prompts.shape[0]}; row c must be class c")
    n = images.shape[0]
    perm = np.random.default_rng(args.seed).permutation(n)
    seen, unseen = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    rows = []
    configs = [
        ("linear closed-form ridge alpha=1", "linear", {"alpha": 1.0}),
        ("linear closed-form ridge alpha=10", "linear", {"alpha": 10.0}),
        ("linear closed-form ridge alpha=100", "linear", {"alpha": 100.0}),
        ("procrustes (prompt side zero-padded 384 -> 1280)", "procrustes", {}),
        ("subspace (CCA, k by held-out R@1)", "subspace", {"method": "cca", "reg": 1e-2, "rng": 0}),
        ("mlp, InfoNCE", "mlp", {"loss": "infonce", "batch_size": 128, "max_epochs": 200, "patience": 20,
                                 "val_fraction": 0.1, "device": "cpu", "lr": 1e-3}),
        ("glu, InfoNCE", "glu", {"loss": "infonce", "batch_size": 128, "max_epochs": 200, "patience": 20,
                                 "val_fraction": 0.1, "device": "cpu", "lr": 1e-3}),
        ("mlp, InfoNCE, ridge start (alpha=10)", "mlp", {"loss": "infonce", "batch_size": 128, "max_epochs": 200,
                                                          "patience": 20, "val_fraction": 0.1, "device": "cpu",
                                                          "lr": 1e-4, "init": "ridge", "init_alpha": 10.0}),
    ]
    for name, kind, params in configs:
        t0 = time.perf_counter()
        proj = make_projector(kind, **params).fit(images[seen], prompts[seen])
        fit_s = time.perf_counter() - t0
        res = retrieval_metrics(proj.transform(images[unseen]), proj.transform_y(prompts[unseen]), ks=(1, 5))
        row = {"task": "imagenet", "config": name, "unseen classes": len(unseen),
               "zero-shot top-1": res.query_to_gallery.recall[1], "zero-shot top-5": res.query_to_gallery.recall[5],
               "chance top-1": 1.0 / len(unseen), "fit_s": round(fit_s, 2)}
        if hasattr(proj, "n_components_"):
            row["chosen_k"] = proj.n_components_
        if hasattr(proj, "train_result_"):
            row.update(best_epoch=proj.train_result_.best_epoch, epochs=len(proj.train_result_.history))
        _line(row)
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="task", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--n", type=int, default=200_000)
    t.add_argument("--dim", type=int, default=384)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=4096)
    t.add_argument("--repeats", type=int, default=1, help="timed fits per kind (median reported)")
    t.add_argument("--warmup", type=int, default=0, help="untimed fits per kind first")
    m = sub.add_parser("multi30k")
    m.add_argument("--features", default=os.environ.get("UNIALIGN_FEATURES", "."))
    m.add_argument("--epochs", type=int, default=40)
    m.add_argument("--patience", type=int, default=5)
    m.add_argument("--batch-size", type=int, default=1024)
    m.add_argument("--lr", type=float, default=1e-3, help="Peak learning rate from a random start.")
    m.add_argument("--ridge-lr", type=float, default=1e-4, help="Peak learning rate from the ridge start.")
    m.add_argument("--inits", nargs="+", default=["random", "ridge"], choices=["random", "ridge"],
                   help="Initialisations of the trained kinds (ridge: start from the closed-form map).")
    z = sub.add_parser("imagenet")
    z.add_argument("--images", required=True, help=".npy image features, row c = the photo of ImageNet class c")
    z.add_argument("--prompts", required=True, help=".npy class-prompt features, row c = class c")
    z.add_argument("--seed", type=int, default=0, help="Seed of the seen/unseen class split")
    for p in (t, m, z):
        p.add_argument("--device", default=None)
        p.add_argument("--kinds", nargs="*", default=None,
                       help="Subset of kinds (linear procrustes cca subspace mlp glu baselines).")
        p.add_argument("--out", default=None, help="Also write all rows to this JSON file.")
    args = ap.parse_args(argv)
    rows = {"throughput": throughput, "multi30k": multi30k, "imagenet": imagenet}[args.task](args)
    if args.out:
        from align._io import atomic_write

        with atomic_write(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
