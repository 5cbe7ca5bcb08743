"""Graph and 3D modalities against text: WordNet's ImageNet subtree and procedural shapes vs ``minilm``.

Part 1 (graph). The 1,000 ImageNet-1k synsets as nodes of WordNet's hypernym graph (Debian ``wordnet-base``) vs
``minilm`` embeddings of their WordNet definitions (row i of both = synset i). Structural kernels (shortest-path,
diffusion) and the non-learned graph encoders are compared to the text features by linear CKA against a permutation
null, and seeded graph matching (FAQ) recovers hidden synsets from a number of known pairs (seeds).

Part 2 (3D). ``shapes:N`` procedural shapes with captions. A non-learned shape encoder (D2/A3/D1 shape distributions
and the covariance spectrum) vs ``minilm`` captions: CKA with null, seeded matching (one shape per distinct caption,
so the truth is unambiguous), and projectors fitted on the first shapes and scored on held-out shapes: a CCA
subspace whose dimension is chosen automatically (``make_projector("subspace")``) vs full-dimension CCA and a ridge
map without subspace selection. Held-out retrieval counts a caption identical to the true one as correct; zero-shot
classification of held-out shapes into the six primitives uses the prompts "a {primitive}" through the same map.

Run (about 5-10 minutes on 2 CPU cores)::

    OMP_NUM_THREADS=1 python benchmarks/real_graph_3d.py --out /tmp/real_graph_3d.json
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np

log = logging.getLogger("real_graph_3d")


def _null(X, Y, n_permutations, seed):
    from align.similarity import permutation_null

    r = permutation_null(X, Y, "linear_cka", n_permutations=n_permutations, rng=seed)
    return {"cka": round(r.observed, 4), "null_mean": round(r.null_mean, 4), "null_std": round(r.null_std, 4),
            "p_value": r.p_value, "n_permutations": r.n_permutations}


def _embed(encoder, dataset, field, cache_dir):
    from align.features import embed

    return np.asarray(embed(encoder, dataset, field=field, cache_dir=cache_dir).X, dtype=np.float64)


def wordnet_figures(args) -> dict:
    import matching
    from align.data import load_dataset
    from align.encoders import load_encoder
    from align.graph_kernels import diffusion_kernel, kernel_features, shortest_path_kernel

    ds = load_dataset("wordnet:imagenet-1k")
    T = _embed(load_encoder("minilm"), ds, "definition", args.cache_dir)
    out = {"n_items": len(ds), "graph_nodes": ds.graph.n_nodes, "graph_edges": ds.graph.n_edges, "cka": {}}
    feats = {
        "shortest_path_kernel": kernel_features(shortest_path_kernel(ds.graph, ds.items)),
        "diffusion_kernel_t1": kernel_features(diffusion_kernel(ds.graph, ds.items, t=1.0)),
        "diffusion_kernel_t10": kernel_features(diffusion_kernel(ds.graph, ds.items, t=10.0)),
    }
    for spec in ("graph:spectral", "graph:diffusion", "graph:walk"):
        feats[spec] = _embed(load_encoder(spec), ds, "node", args.cache_dir)
    for name, F in feats.items():
        t0 = time.perf_counter()
        out["cka"][name] = _null(F, T, args.n_permutations, 0)
        log.info("wordnet %s: %s (%.1fs)", name, out["cka"][name], time.perf_counter() - t0)
    # structural twins: leaves with exactly the same neighbours are automorphic, no structural matcher separates them
    A = ds.graph.adjacency()
    keys = [frozenset(A.indices[A.indptr[k]:A.indptr[k + 1]].tolist()) for k in ds.items]
    group = {k: keys.count(k) for k in set(keys)}
    ceiling = float(np.mean([1 / group[k] for k in keys]))
    out["structural_twins"] = {"items_with_a_twin": int(sum(group[k] > 1 for k in keys)),
                               "expected_accuracy_ceiling_all_items": round(ceiling, 4)}
    # seeded matching accuracy vs number of seeds, on the headline structural kernel
    F = feats["shortest_path_kernel"]
    methods = {"faq (centered_rbf kernels)": ("faq", {"kernel": "centered_rbf", "n_init": args.n_init}),
               "faq (cosine kernels)": ("faq", {"kernel": "cosine", "n_init": args.n_init}),
               "procrustes (anchors only)": ("procrustes", {})}
    out["matching"] = {"features": "shortest-path kernel factor vs minilm definitions", "n_query": args.n_query,
                       "n_splits": args.n_splits, "chance": round(1 / args.n_query, 4), "by_method": {}}
    for name, (method, params) in methods.items():
        rows = []
        for n_seeds in args.seeds:
            if method == "procrustes" and n_seeds < 2:
                continue
            t0 = time.perf_counter()
            res = matching.evaluate(F, T, method, n_seeds=n_seeds, n_query=args.n_query, n_splits=args.n_splits,
                                    rng=0, **params)
            rows.append({"n_seeds": n_seeds, "accuracy": round(res.accuracy, 4), "std": round(res.accuracy_std, 4),
                         "seconds": round(time.perf_counter() - t0, 1)})
            log.info("wordnet %s seeds=%d: %s", name, n_seeds, rows[-1])
        out["matching"]["by_method"][name] = rows
    out["stitched_zero_shot"] = _graph_zero_shot(ds, F, args)
    return out


def _graph_zero_shot(ds, F, args) -> dict:
    """Fit graph -> text maps on 800 synsets; classify the 200 held-out synsets among all 1,000 class prompts."""
    from align.encoders import load_encoder
    from align.evaluation import zero_shot_accuracy
    from projectors import make_projector

    prompts = load_encoder("minilm").encode(ds.texts("lemma")).astype(np.float64)  # the class names as text
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds))
    tr, te = order[:800], order[800:]
    from align.features import embed

    T = np.asarray(embed(load_encoder("minilm"), ds, field="definition", cache_dir=args.cache_dir).X,
                   dtype=np.float64)
    out = {"train_synsets": 800, "test_synsets": 200, "classes": len(ds), "class_text": "lemma",
           "fit_on": "definition embeddings", "chance_top1": round(1 / len(ds), 4), "results": {}}
    for name, proj in {"subspace (CCA, automatic k)": make_projector("subspace", method="cca"),
                       "linear ridge (no subspace)": make_projector("linear")}.items():
        proj.fit(F[tr], T[tr])
        Q = np.asarray(proj.transform(F[te]))
        C = np.asarray(proj.transform_y(prompts)) if name.startswith("subspace") else prompts
        z = zero_shot_accuracy(Q, C, te, ks=(1, 5))
        out["results"][name] = {"top1": round(float(z.accuracy[1]), 4), "top5": round(float(z.accuracy[5]), 4)}
        if hasattr(proj, "n_components_"):
            out["results"][name]["k_chosen"] = int(proj.n_components_)
        log.info("wordnet stitched zero-shot %s: %s", name, out["results"][name])
    return out


def shapes_figures(args) -> dict:
    import matching
    from align.data import load_dataset
    from align.encoders import load_encoder
    from align.evaluation import retrieval_metrics, zero_shot_accuracy
    from projectors import make_projector

    ds = load_dataset(f"shapes:{args.n_shapes}")
    T = _embed(load_encoder("minilm"), ds, "caption", args.cache_dir)
    captions = np.asarray(ds.texts())
    out = {"n_shapes": len(ds), "distinct_captions": int(len(set(captions))), "cka": {}}
    feats = {}
    for spec in ("shape:d2", "shape:a3", "shape:cov", "shape:d2+a3+d1+cov"):
        X = _embed(load_encoder(spec), ds, "points", args.cache_dir)
        feats[spec] = X
        out["cka"][spec] = _null(X, T, args.n_permutations, 0)
        log.info("shapes %s: %s", spec, out["cka"][spec])
    X = feats["shape:d2+a3+d1+cov"]
    Xs = (X - X.mean(0)) / X.std(0).clip(1e-12)  # descriptors mix histograms and lengths: standardise columns
    out["cka"]["shape:d2+a3+d1+cov standardised"] = _null(Xs, T, args.n_permutations, 0)

    # matching: one shape per distinct caption
    _, first = np.unique(captions, return_index=True)
    first = np.sort(first)
    n_query = min(args.n_query, len(first) - max(args.seeds))
    rows = []
    for n_seeds in args.seeds:
        res = matching.evaluate(Xs[first], T[first], "faq", n_seeds=n_seeds, n_query=n_query,
                                n_splits=args.n_splits, rng=0, kernel="cosine", n_init=args.n_init)
        rows.append({"n_seeds": n_seeds, "accuracy": round(res.accuracy, 4), "std": round(res.accuracy_std, 4)})
        log.info("shapes faq seeds=%d: %s", n_seeds, rows[-1])
    out["matching"] = {"method": "faq", "kernel": "cosine", "items": int(len(first)), "n_query": n_query,
                       "chance": round(1 / n_query, 4), "by_seeds": rows}

    # projectors on held-out shapes
    n_train = int(round(args.train_fraction * len(ds)))
    tr, te = np.arange(n_train), np.arange(n_train, len(ds))
    mu, sd = X[tr].mean(0), X[tr].std(0).clip(1e-12)
    Xtr, Xte = (X[tr] - mu) / sd, (X[te] - mu) / sd
    positives = [np.flatnonzero(captions[te] == c) for c in captions[te]]
    prompts = load_encoder("minilm").encode([f"a {c}" for c in ds.classes]).astype(np.float64)
    labels = ds.labels[te]
    d_min = min(X.shape[1], T.shape[1])
    candidates = {
        "subspace (CCA, k chosen on held-out 20% of train)": make_projector("subspace", method="cca"),
        f"cca full k={d_min} (no subspace selection)": make_projector("cca", n_components=d_min, reg=1e-4),
        "cca k=8 (fixed)": make_projector("cca", n_components=8, reg=1e-4),
        "linear ridge X->T (no subspace)": make_projector("linear"),
    }
    rows = {}
    for name, proj in candidates.items():
        t0 = time.perf_counter()
        proj.fit(Xtr, T[tr])
        Q = np.asarray(proj.transform(Xte))
        if hasattr(proj, "transform_y") and "linear" not in name:
            G, C = np.asarray(proj.transform_y(T[te])), np.asarray(proj.transform_y(prompts))
        else:
            G, C = T[te], prompts
        r = retrieval_metrics(Q, G, positives, ks=(1, 5))
        z = zero_shot_accuracy(Q, C, labels, ks=(1,))
        rows[name] = {"R@1 shape->caption": round(r.recall_at(1, "q2g"), 4),
                      "R@5 shape->caption": round(r.recall_at(5, "q2g"), 4),
                      "zero_shot_top1": round(float(z.accuracy[1]), 4), "seconds": round(time.perf_counter() - t0, 2)}
        if hasattr(proj, "n_components_"):
            rows[name]["k_chosen"] = int(proj.n_components_)
            rows[name]["k_scores"] = {str(k): round(v, 4) for k, v in proj.scores_.items()}
        log.info("shapes projector %s: %s", name, rows[name])
    out["projectors"] = {"n_train": int(n_train), "n_test": int(len(te)),
                         "zero_shot_chance": round(1 / len(ds.classes), 4),
                         "retrieval_chance_R@1": round(float(np.mean([len(p) for p in positives]) / len(te)), 4),
                         "results": rows}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["all", "graph", "3d"], default="all")
    p.add_argument("--n-permutations", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 10, 25, 50, 100, 200])
    p.add_argument("--n-query", type=int, default=300)
    p.add_argument("--n-splits", type=int, default=3)
    p.add_argument("--n-init", type=int, default=3)
    p.add_argument("--n-shapes", type=int, default=3000)
    p.add_argument("--train-fraction", type=float, default=0.8)
    p.add_argument("--cache-dir", default="/tmp/unialign-bench-cache")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = {"command": "python benchmarks/real_graph_3d.py", "args": vars(args)}
    t0 = time.perf_counter()
    if args.part in ("all", "graph"):
        result["wordnet_imagenet_1k_vs_minilm_definitions"] = wordnet_figures(args)
    if args.part in ("all", "3d"):
        result["shapes_vs_minilm_captions"] = shapes_figures(args)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from align._io import atomic_write

        with atomic_write(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
