"""Blind matching and the blind projector on real data, zero known pairs (benchmarks/README.md, "Blind matching").

Suites (``--suite``, several allowed):

* ``m30k-de``: Multi30k test_2016, all-MiniLM-L6-v2 (English captions) vs multilingual-e5-small (German captions,
  ``passage:``), random draws of ``n`` items, rows of Y shuffled; accuracy = fraction of rows of X matched to their
  own caption (chance 1/n).
* ``m30k-en``: the same with e5-small on the English captions.
* ``imagenet``: EfficientNet-Lite0 classifier rows (1000 x 1280) vs MiniLM embeddings of ``"a photo of a {lemma}."``
  for random draws of ``n`` classes.
* ``zeroshot``: ``make_projector("blind").fit(classifier rows, prompts with rows shuffled)``, then the
  ImageNet-sample photos (EfficientNet-Lite0 pooled features) classified by the nearest prompt (cosine) after the
  projector; next to the same Procrustes map fitted on the TRUE pairs (the ceiling of this map class) and the head.

Features are read from ``--feats`` (``m30k_test_{en,de}_{minilm,e5passage}.npy`` as written by ``unialign embed``,
``blind_imagenet_*.npy`` written by ``--make-imagenet``). Every draw prints one JSON line and is written to
``--out``. Threads: set ``OMP_NUM_THREADS`` etc.; the script calls ``torch.set_num_threads`` with the same number.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 python -m benchmarks.bench_blind \\
        --suite m30k-de m30k-en imagenet zeroshot --out benchmarks/results/blind.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {"m30k-de": ((100, 5), (300, 3), (1000, 1)), "m30k-en": ((100, 5), (300, 2)),
         "imagenet": ((100, 5), (300, 2), (1000, 1))}
LARGE = {"n_candidates": 2, "gw_max_iter": 30}  # settings at 1,000 items (cost: see the README)


def make_imagenet(feats: Path) -> None:
    """Classifier rows, MiniLM prompt embeddings, photo features and labels of the ImageNet sample."""
    from align.data import imagenet_wnids, load_dataset
    from align.encoders import load_encoder

    concepts = load_dataset("concepts:imagenet-1k")
    img = load_encoder("efficientnet-lite0")
    W, _ = img.classifier_weights()
    np.save(feats / "blind_imagenet_effnet_classifier.npy", W.astype(np.float32))
    mini = load_encoder("minilm")
    np.save(feats / "blind_imagenet_minilm_prompt.npy", mini.encode(list(concepts.texts("prompt"))).astype(np.float32))
    wn = list(imagenet_wnids())
    data = Path(os.environ.get("UNIALIGN_DATA", "../shared/data")) / "imagenet-sample"
    photos = sorted(data.glob("*.JPEG"))
    np.save(feats / "blind_imagenet_sample_labels.npy", np.array([wn.index(p.name.split("_")[0]) for p in photos]))
    np.save(feats / "blind_imagenet_sample_effnet.npy", np.asarray(img.encode([str(p) for p in photos]), np.float32))


def pair(suite: str, feats: Path) -> tuple[np.ndarray, np.ndarray]:
    if suite == "m30k-de":
        return np.load(feats / "m30k_test_en_minilm.npy"), np.load(feats / "m30k_test_de_e5passage.npy")
    if suite == "m30k-en":
        return np.load(feats / "m30k_test_en_minilm.npy"), np.load(feats / "m30k_test_en_e5passage.npy")
    return np.load(feats / "blind_imagenet_effnet_classifier.npy"), np.load(feats / "blind_imagenet_minilm_prompt.npy")


def run_matching(suite: str, feats: Path, emit, sizes=None) -> None:
    from matching import match

    X0, Y0 = pair(suite, feats)
    rng = np.random.default_rng(0)
    for n, draws in sizes or SIZES[suite]:
        for d in range(draws):
            idx = rng.choice(len(X0), n, replace=False) if n < len(X0) else np.arange(len(X0))
            perm = rng.permutation(n)  # Y's rows in a secret order: row t of Y is item perm[t]
            truth = np.argsort(perm)
            c0, w0 = time.process_time(), time.perf_counter()
            res = match(X0[idx], Y0[idx][perm], method="blind", rng=d, **(LARGE if n >= 1000 else {}))
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            emit({"suite": suite, "n": n, "draw": d, "accuracy": float(np.mean(res.col_ind == truth)),
                  "chance": 1.0 / n, "cpu_s": cpu, "wall_s": wall, **res.confidence})


def run_zeroshot(feats: Path, emit) -> None:
    from projectors import make_projector

    W, T = pair("imagenet", feats)
    F = np.load(feats / "blind_imagenet_sample_effnet.npy")
    labels = np.load(feats / "blind_imagenet_sample_labels.npy")
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(T))
    truth = np.argsort(perm)

    def top1(Z):
        Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        Tn = T / np.linalg.norm(T, axis=1, keepdims=True)
        return float(np.mean((Z @ Tn.T).argmax(axis=1) == labels))

    c0, w0 = time.process_time(), time.perf_counter()
    proj = make_projector("blind", rng=0, **LARGE).fit(W, T[perm])
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    pairs = proj.pairs_
    pair_acc = float(np.mean(truth[pairs[:, 0]] == pairs[:, 1]))
    oracle = make_projector("procrustes").fit(W, T)
    head = float(np.mean((F @ W.T).argmax(axis=1) == labels))
    emit({"suite": "zeroshot", "n_classes": len(T), "n_photos": len(F), "blind_top1": top1(np.asarray(proj.transform(F))),
          "true_pairs_procrustes_top1": top1(np.asarray(oracle.transform(F))), "head_top1": head,
          "chance": 1.0 / len(T), "pseudo_pair_accuracy": pair_acc, "cpu_s": cpu, "wall_s": wall,
          **proj.confidence_})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", nargs="+", default=["m30k-de", "m30k-en", "imagenet", "zeroshot"],
                    choices=["m30k-de", "m30k-en", "imagenet", "zeroshot"])
    ap.add_argument("--feats", default="/work/feats")
    ap.add_argument("--out", default=None)
    ap.add_argument("--make-imagenet", action="store_true")
    ap.add_argument("--sizes", default=None, help="override, e.g. '100x5,300x1'")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    feats = Path(args.feats)
    if args.make_imagenet:
        make_imagenet(feats)
    rows = []
    threads = os.environ.get("OMP_NUM_THREADS")

    def emit(row):
        row = {**row, "threads": threads}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            from align._io import atomic_write

            with atomic_write(Path(args.out)) as f:
                command = "python -m benchmarks.bench_blind " + " ".join(sys.argv[1:] if argv is None else argv)
                f.write(json.dumps({"command": command, "rows": rows}, indent=1).encode())

    sizes = None
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    for suite in args.suite:
        if suite == "zeroshot":
            run_zeroshot(feats, emit)
        else:
            run_matching(suite, feats, emit, sizes)


if __name__ == "__main__":
    main()
