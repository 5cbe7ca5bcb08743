"""Matcher defaults on real features: accuracy and CPU time of each method's default against its alternatives.

The protocol of ``unialign match X Y --method M --n-seeds K --n-query Q --splits 5 --seed 0`` (``matching.evaluate``:
per split, ``K`` known pairs + ``Q`` hidden items drawn at random, accuracy = fraction of hidden items matched to their
partner), for several feature pairs and sizes. Every configuration of one (pair, size) runs on the same draws
(``rng=0``); configurations are interleaved round by round (``--rounds``), times are the median CPU seconds
(``time.process_time``, all splits together) of this process at ``--threads`` threads. One JSON line per measurement.

    python benchmarks/bench_matching_defaults.py faq --sizes 100,300,1000 --out benchmarks/results/matching-defaults-faq.json
    python benchmarks/bench_matching_defaults.py others --sizes 100,300
    python benchmarks/bench_matching_defaults.py gw --sizes 100,300 --splits 3   # gw vs entropic_gw, draw by draw
    python benchmarks/bench_matching_defaults.py asif --sizes 100,300           # asif's grid, old default, relative
    python benchmarks/bench_matching_defaults.py asif --pairs test_en_de --query-pair val_en_de --n-known 1000 \
        --sizes 500 --splits 3                                                   # 1,000 anchors, 500 queries

Feature pairs (``--pairs``, from ``--feats``, default ``/work/feats`` or ``$UNIALIGN_FEATS``): ``test_en_de`` (MiniLM
English vs multilingual-E5 German captions of Multi30k test_2016), ``val_en_de`` (the same on val), ``test_en_en``
(MiniLM English vs E5 English). Pairs whose files are missing are skipped with a note on stderr. With
``--query-pair`` the known pairs are drawn from ``--pairs`` and the ``--sizes`` queries from the query pair
(``evaluate(query=)``: more anchors than one file's items allow).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
import warnings
from pathlib import Path


def _pin_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


if __name__ == "__main__":
    _pin_threads(next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--threads=")), 1))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import matching  # noqa: E402

PAIRS = {
    "test_en_de": ("m30k_test_en_minilm.npy", "m30k_test_de_e5passage.npy"),
    "val_en_de": ("m30k_val_en_minilm.npy", "m30k_val_de_e5passage.npy"),
    "test_en_en": ("m30k_test_en_minilm.npy", "m30k_test_en_e5passage.npy"),
}

OLD_FAQ = {"n_init": 1, "two_opt": False, "init": "auto"}  # the defaults before issue 19


def old_asif(X, Y, partial_match, rng=None):
    """``asif`` as it was before issue 19, for the side-by-side table: centred features, the 10 largest anchor
    similarities kept, negatives set to 0, raised to the power 8, unit norm, inner product, linear assignment."""
    from scipy.optimize import linear_sum_assignment

    def unit(Z):
        return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-300)

    def sparse(Z, anchors):
        R = unit(Z) @ unit(Z[anchors]).T
        idx = np.argsort(-R, axis=1, kind="stable")[:, :min(10, R.shape[1])]
        out = np.zeros_like(R)
        np.put_along_axis(out, idx, np.clip(np.take_along_axis(R, idx, 1), 0.0, None) ** 8.0, 1)
        return unit(out)

    Xc = unit(X - X.mean(0)).astype(np.float64)
    Yc = unit(Y - Y.mean(0)).astype(np.float64)
    S = sparse(Xc, partial_match[:, 0]) @ sparse(Yc, partial_match[:, 1]).T
    col = np.full(len(X), -1, dtype=np.int64)
    col[partial_match[:, 0]] = partial_match[:, 1]
    rows = np.setdiff1d(np.arange(len(X)), partial_match[:, 0])
    cols = np.setdiff1d(np.arange(len(Y)), partial_match[:, 1])
    r, c = linear_sum_assignment(S[np.ix_(rows, cols)], maximize=True)
    col[rows[r]] = cols[c]
    return types.SimpleNamespace(col_ind=col, similarity=S)

CONFIGS = {
    "faq": {
        "default": ("faq", {}),
        "old default (1 start)": ("faq", OLD_FAQ),
        "n_init=1 barycenter two_opt": ("faq", {"n_init": 1, "init": "auto", "two_opt": True}),
        "n_init=4 barycenter two_opt": ("faq", {"n_init": 4, "init": "auto", "two_opt": True}),
        "n_init=30 barycenter two_opt": ("faq", {"n_init": 30, "init": "auto", "two_opt": True}),
        "n_init=4 barycenter": ("faq", {"n_init": 4, "init": "auto", "two_opt": False}),
        "n_init=30 barycenter": ("faq", {"n_init": 30, "init": "auto", "two_opt": False}),
        **{f"seeds t={t}": ("faq", {"init": "seeds", "seeds_temperature": t, "two_opt": False})
           for t in (0.02, 0.03, 0.05, 0.1)},
        **{f"seeds t={t} two_opt": ("faq", {"init": "seeds", "seeds_temperature": t, "two_opt": True})
           for t in (0.02, 0.03, 0.05, 0.1)},
        "seeds n_init=4": ("faq", {"init": "seeds", "n_init": 4, "two_opt": False}),
        "transport (GOAT) barycenter": ("faq", {"transport": True, "init": "auto", "two_opt": False}),
        "transport (GOAT) seeds": ("faq", {"transport": True, "init": "seeds", "two_opt": False}),
    },
    "asif": {
        "relative": ("relative", {}),
        "asif default": ("asif", {}),
        "old asif (centred topk=10 power=8)": (old_asif, {}),
        **{f"asif topk={k} power={p:g}": ("asif", {"topk": k, "power": p})
           for k in (10, 30, 100, None) for p in (1.0, 2.0, 4.0, 8.0) if (k, p) != (None, 1.0)},
    },
    "others": {
        "local_cka": ("local_cka", {}),
        "local_cka kernel=linear": ("local_cka", {"kernel": "linear"}),
        "relative": ("relative", {}),
        "asif": ("asif", {}),
        "procrustes": ("procrustes", {}),
        "lstsq": ("lstsq", {}),
        "entropic_gw": ("entropic_gw", {}),
        "gw": ("gw", {}),
        "gw init=product": ("gw", {"init": "product"}),
        "fused_gw": ("fused_gw", {}),
    },
}


def run(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    feats = Path(args.feats)
    configs = CONFIGS[args.section]
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only.split(",")}
    out = open(args.out, "a") if args.out else None
    for pair in args.pairs.split(","):
        fx, fy = (feats / f for f in PAIRS[pair])
        if not (fx.exists() and fy.exists()):
            print(f"skip {pair}: {fx} or {fy} missing", file=sys.stderr)
            continue
        X, Y = np.load(fx), np.load(fy)
        query, tag = None, pair
        if args.query_pair:
            query = tuple(np.load(feats / f) for f in PAIRS[args.query_pair])
            tag = f"{pair}->{args.query_pair}"
        for size in (int(s) for s in args.sizes.split(",")):
            rows = {name: {"acc": None, "accs": None, "cpu": []} for name in configs}
            for _ in range(args.rounds):
                for name, (method, params) in configs.items():
                    if size > args.max_size.get(method, 10**9):
                        continue
                    t = time.process_time()
                    n_query = size if query is not None else size - args.n_known
                    r = matching.evaluate(X, Y, method, n_known=args.n_known, n_query=n_query, query=query,
                                          n_splits=args.splits, rng=args.seed, **params)
                    rows[name]["cpu"].append(time.process_time() - t)
                    if rows[name]["acc"] is not None and rows[name]["acc"] != r.accuracy:
                        raise RuntimeError(f"{name}: accuracy differs between rounds")
                    rows[name]["acc"], rows[name]["accs"] = r.accuracy, r.accuracies
            for name, (method, params) in configs.items():
                if not rows[name]["cpu"]:
                    continue
                row = {"section": args.section, "pair": tag, "n_items": size + (args.n_known if query else 0),
                       "n_known": args.n_known, "splits": args.splits, "config": name,
                       "method": method if isinstance(method, str) else method.__name__, "params": params,
                       "accuracy": round(rows[name]["acc"], 4), "accuracies": [round(a, 4) for a in rows[name]["accs"]],
                       "accuracy_sd": round(statistics.stdev(rows[name]["accs"]), 4) if args.splits > 1 else 0.0,
                       "cpu_s": round(statistics.median(rows[name]["cpu"]), 3),
                       "cpu_rounds": [round(c, 3) for c in rows[name]["cpu"]], "threads": args.threads}
                line = json.dumps(row)
                print(line, flush=True)
                if out:
                    out.write(line + "\n")
                    out.flush()


def gw_identity(args) -> None:
    """Per draw: do ``gw`` and ``entropic_gw`` return the same assignment, and what is each one's QAP objective
    :math:`\\lVert K_x - P K_y P^\\top\\rVert_F^2` (centred cosine kernels scaled to max 1, as the solvers see them)?"""
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    X = np.load(Path(args.feats) / PAIRS["test_en_de"][0])
    Y = np.load(Path(args.feats) / PAIRS["test_en_de"][1])

    def kern(A):
        A = A - A.mean(0)
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        K = A @ A.T
        return K / np.abs(K).max()

    rng = np.random.default_rng(args.seed)
    for size in (int(s) for s in args.sizes.split(",")):
        for nk in (args.n_known, 0):
            for split in range(args.splits):
                idx = rng.choice(len(X), size, replace=False)
                hide = np.concatenate([np.arange(nk), nk + rng.permutation(size - nk)])
                Xs, Ys = X[idx].astype(np.float64), Y[idx][hide].astype(np.float64)
                truth = np.argsort(hide)
                pm = np.stack([np.arange(nk)] * 2, 1)
                Kx, Ky = kern(Xs), kern(Ys)
                row = {"section": "gw", "pair": "test_en_de", "n_items": size, "n_known": nk, "split": split,
                       "threads": args.threads}
                cols = {}
                for name, method, kw in (("entropic_gw", "entropic_gw", {}), ("gw", "gw", {}),
                                         ("gw init=product", "gw", {"init": "product"})):
                    t = time.process_time()
                    r = matching.match(Xs, Ys, method, partial_match=pm, **kw)
                    c = cols[name] = r.col_ind
                    row[name] = {"accuracy": round(float(np.mean(c[nk:] == truth[nk:])), 4),
                                 "qap_objective": round(float(((Kx - Ky[c][:, c]) ** 2).sum()), 3),
                                 "cpu_s": round(time.process_time() - t, 2), "n_iter": r.n_iter}
                row["gw_same_assignment_as_entropic_gw"] = bool((cols["gw"] == cols["entropic_gw"]).all())
                print(json.dumps(row), flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("section", choices=sorted(CONFIGS) + ["gw"])
    p.add_argument("--pairs", default="test_en_de,val_en_de,test_en_en")
    p.add_argument("--query-pair", default=None, choices=sorted(PAIRS),
                   help="draw the queries (--sizes of them) from this pair, the known pairs from --pairs")
    p.add_argument("--sizes", default="100,300")
    p.add_argument("--n-known", type=int, default=30)
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated configuration names")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--feats", default=os.environ.get("UNIALIGN_FEATS", "/work/feats"))
    p.add_argument("--out", default=None, help="append the JSON lines to this file")
    args = p.parse_args(argv)
    args.max_size = {"gw": 300, "entropic_gw": 300, "fused_gw": 300}
    if args.section == "gw":
        gw_identity(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
