"""Projector defaults vs the baselines a user would write: ``np.linalg.lstsq``, fixed ridge penalties, Procrustes.

Two tasks, JSON lines on stdout (``--out FILE`` also writes them as one JSON list); 1 thread (set here).

``multi30k``
    X = minilm features of the first n English Multi30k train captions, Y = e5-small (``passage:``) features of the
    same captions; evaluated cross-lingually: the 1,000 English test_2016 captions (minilm, mapped) retrieve their
    German translations (e5-small) among 1,000 candidates, EN->DE R@1 by cosine. Sizes ``--sizes`` (default
    1,000 / 3,000 / 29,000). Rows: every kind at its defaults (``make_projector(kind)``), ``np.linalg.lstsq`` with
    an intercept column, ridge alpha=0.1 and alpha=1 (the old default), and the automatic alpha under the three
    selection rules of :func:`align._ridge.ridge_cv` (same folds).

``imagenet``
    efficientnet-lite0 features of the 1,000 imagenet-sample photos (one per class, raw: norms 11-20) -> minilm
    embeddings of the class prompts ("a photo of a {lemma}."). Fitted on the photo/prompt pairs of a random half of
    the classes (``--seeds``), then each photo of the other half is classified among that half's prompts (top-1,
    chance 1/500). Rows: ``linear`` default, procrustes, ridge on L2-normalised features over a grid (best alpha in
    hindsight is the reference), ridge on raw features alpha=1 (old default), ``np.linalg.lstsq``.

Usage::

    python benchmarks/bench_projector_defaults.py multi30k --features /work/feats --out m30k_defaults.json
    python benchmarks/bench_projector_defaults.py imagenet --images img.npy --prompts prompts.npy --wnids photos/
"""
# ruff: noqa: B023 - every lambda below is called at once, inside its loop iteration
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _emit(rows, row):
    row = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
    print(json.dumps(row), flush=True)
    rows.append(row)


def _r1(Q, G) -> float:
    from align.evaluation import retrieval_metrics

    return float(retrieval_metrics(np.asarray(Q, np.float64), np.asarray(G, np.float64), ks=(1,)).query_to_gallery.recall[1])


def _lstsq_map(X, Y):
    A = np.c_[np.asarray(X, np.float64), np.ones(len(X))]
    Z = np.linalg.lstsq(A, np.asarray(Y, np.float64), rcond=None)[0]
    return lambda Q: np.c_[np.asarray(Q, np.float64), np.ones(len(Q))] @ Z


def _rule_map(X, Y, rule, seed=0):
    from align._ridge import ridge_cv, ridge_fit

    cv = ridge_cv(X, Y, rule=rule, rng=seed)
    W, b = ridge_fit(X, Y, alpha=cv.alpha, intercept_scale=cv.intercept_scale)
    W, b = W.numpy(), b.numpy()
    return (lambda Q: np.asarray(Q, np.float64) @ W + b), cv


def multi30k(args) -> list[dict]:
    import torch

    from projectors import make_projector

    torch.set_num_threads(1)
    feats = Path(args.features)
    load = lambda name: np.load(feats / f"m30k_{name}.npy", mmap_mode="r")
    Xall, Yall = load("train_en_minilm"), load("train_en_e5passage")
    Xq, Yg = np.asarray(load("test_en_minilm")), np.asarray(load("test_de_e5passage"))
    rows: list[dict] = []
    want = lambda k: not args.kinds or k in args.kinds
    for n in args.sizes:
        X, Y = np.asarray(Xall[:n]), np.asarray(Yall[:n])
        base = {"task": "multi30k", "n_train": n, "threads": torch.get_num_threads()}

        def timed(fn):
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            return out, time.perf_counter() - t0, time.process_time() - c0

        if want("lstsq"):
            f, wall, cpu = timed(lambda: _lstsq_map(X, Y))
            _emit(rows, {**base, "config": "np.linalg.lstsq + intercept", "EN->DE R@1": _r1(f(Xq), Yg),
                         "fit_cpu_s": cpu})
        if want("ridge"):
            for alpha in (0.1, 1.0):
                p, wall, cpu = timed(lambda a=alpha: make_projector("linear", alpha=a).fit(X, Y))
                _emit(rows, {**base, "config": f"linear alpha={alpha}", "EN->DE R@1": _r1(p.transform(Xq), Yg),
                             "fit_cpu_s": cpu})
        if want("linear"):
            p, wall, cpu = timed(lambda: make_projector("linear").fit(X, Y))
            c = p.alpha_curve_
            _emit(rows, {**base, "config": "linear default (alpha='auto')", "EN->DE R@1": _r1(p.transform(Xq), Yg),
                         "alpha": p.alpha_, "relative_alpha": c["relative_alpha"],
                         "intercept_scale": c["intercept_scale"], "fit_cpu_s": cpu,
                         "val_curve": dict(zip([f"{r:.3g}" for r in c["relative_alphas"]],
                                               [round(m, 4) for m in c["mean"]]))})
        if want("rules"):
            for rule in ("largest", "best"):
                (f, cv), wall, cpu = timed(lambda r=rule: _rule_map(X, Y, r))
                _emit(rows, {**base, "config": f"linear auto, rule={rule}", "EN->DE R@1": _r1(f(Xq), Yg),
                             "alpha": cv.alpha, "relative_alpha": cv.relative_alpha,
                             "intercept_scale": cv.intercept_scale, "fit_cpu_s": cpu})
        if want("procrustes"):
            p, wall, cpu = timed(lambda: make_projector("procrustes").fit(X, Y))
            _emit(rows, {**base, "config": "procrustes", "EN->DE R@1": _r1(p.transform(Xq), Yg), "fit_cpu_s": cpu})
        if want("cca"):
            p, wall, cpu = timed(lambda: make_projector("cca", reg=1e-4).fit(X, Y))
            _emit(rows, {**base, "config": "cca (k=64, reg=1e-4)", "EN->DE R@1": _r1(p.transform(Xq), p.transform_y(Yg)),
                         "fit_cpu_s": cpu})
        for kind in ("mlp", "glu"):
            if not want(kind):
                continue
            p, wall, cpu = timed(lambda k=kind: make_projector(k, device="cpu").fit(X, Y))
            rep = p.fit_report_
            _emit(rows, {**base, "config": f"{kind} default", "EN->DE R@1": _r1(p.transform(Xq), Yg),
                         "init_alpha": rep["init_alpha"], "val_R@1_start": rep["val_R@1_start"],
                         "val_R@1": rep["val_R@1"], "best_epoch": rep["best_epoch"], "epochs_run": rep["epochs_run"],
                         "start_kept": rep["start_kept"], "fit_wall_s": wall, "fit_cpu_s": cpu})
    return rows


def _ridge_np(X, Y, alpha):
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    if len(X) < X.shape[1]:
        W = Xc.T @ np.linalg.solve(Xc @ Xc.T + alpha * np.eye(len(X)), Yc)
    else:
        W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
    return lambda Q: (Q - mx) @ W + my


def _unit(A):
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)


def imagenet(args) -> list[dict]:
    import torch

    from projectors import make_projector

    torch.set_num_threads(1)
    images = np.load(args.images).astype(np.float64)
    prompts = np.load(args.prompts).astype(np.float64)
    if args.wnids:  # check the row order: photo c is class c (ImageNet class-index order = ascending wnid)
        from align.data import imagenet_wnids

        names = sorted(os.listdir(args.wnids))
        if [n.split("_")[0] for n in names] != list(imagenet_wnids()):
            sys.exit("error: the photos are not in ImageNet class-index order; rows would not pair")
    n = images.shape[0]
    rows: list[dict] = []
    grid = [10.0 ** e for e in np.arange(-4, 3.01, 0.5)]
    for seed in args.seeds:
        perm = np.random.default_rng(seed).permutation(n)
        seen, unseen = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        X, Y, Xq, G = images[seen], prompts[seen], images[unseen], prompts[unseen]
        base = {"task": "imagenet", "seed": seed, "n_train": len(seen), "n_classes_test": len(unseen),
                "threads": torch.get_num_threads()}
        p = make_projector("linear").fit(X, Y)
        _emit(rows, {**base, "config": "linear default (alpha='auto', raw features)", "top-1": _r1(p.transform(Xq), G),
                     "alpha": p.alpha_, "relative_alpha": p.alpha_curve_["relative_alpha"],
                     "intercept_scale": p.alpha_curve_["intercept_scale"]})
        for rule in ("largest", "best"):
            f, cv = _rule_map(X, Y, rule)
            _emit(rows, {**base, "config": f"linear auto, rule={rule}", "top-1": _r1(f(Xq), G), "alpha": cv.alpha,
                         "relative_alpha": cv.relative_alpha, "intercept_scale": cv.intercept_scale})
        p = make_projector("linear").fit(_unit(X), _unit(Y))
        _emit(rows, {**base, "config": "linear default on L2-normalised features",
                     "top-1": _r1(p.transform(_unit(Xq)), G), "relative_alpha": p.alpha_curve_["relative_alpha"]})
        p = make_projector("procrustes").fit(X, Y)
        _emit(rows, {**base, "config": "procrustes", "top-1": _r1(p.transform(Xq), G)})
        scores = {a: _r1(_ridge_np(_unit(X), _unit(Y), a)(_unit(Xq)), G) for a in grid}
        best = max(scores, key=scores.get)
        _emit(rows, {**base, "config": "ridge on L2-normalised features, best alpha in hindsight",
                     "top-1": scores[best], "alpha": best,
                     "curve": {f"{a:.3g}": round(v, 4) for a, v in scores.items()}})
        _emit(rows, {**base, "config": "ridge raw alpha=1 (old default)", "top-1": _r1(_ridge_np(X, Y, 1.0)(Xq), G)})
        _emit(rows, {**base, "config": "np.linalg.lstsq + intercept", "top-1": _r1(_lstsq_map(X, Y)(Xq), G)})
        _emit(rows, {**base, "config": "chance", "top-1": 1.0 / len(unseen)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="task", required=True)
    m = sub.add_parser("multi30k")
    m.add_argument("--features", default=os.environ.get("UNIALIGN_FEATURES", "."))
    m.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 29000])
    m.add_argument("--kinds", nargs="*", default=None,
                   help="subset of: lstsq ridge linear rules procrustes cca mlp glu")
    z = sub.add_parser("imagenet")
    z.add_argument("--images", required=True)
    z.add_argument("--prompts", required=True)
    z.add_argument("--wnids", default=None, help="the photo folder, to check that row c is class c")
    z.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    for p in (m, z):
        p.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = {"multi30k": multi30k, "imagenet": imagenet}[args.task](args)
    if args.out:
        from align._io import atomic_write

        with atomic_write(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
