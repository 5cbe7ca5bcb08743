"""``matching.quadratic_assignment`` against ``scipy.optimize.quadratic_assignment`` on QAPLIB, same starts.

For every instance in ``tests/matching/data/qaplib`` (QAPLIB, with its optimal objective), both solvers minimise
from the same starts: the barycenter, and ``--starts`` random doubly stochastic starts ``(J + K) / 2`` passed to both
as ``P0``. Reported: the objective from the barycenter, the best over the shared starts, and unialign's extras in
one call (``n_init`` = the same number of starts, drawn by itself; then with ``two_opt``). CPU time
(``time.process_time``) of the shared-start runs, interleaved per start, as a ratio scipy / unialign (> 1: unialign
faster), and of scipy's runs against unialign's single ``n_init`` call (restarts batched). The ``n_init`` starts are
drawn from ``rng=seed`` by the same recipe as the shared ones, so they nearly coincide with them.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_qap.py --starts 20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QAPLIB = ROOT / "tests" / "matching" / "data" / "qaplib"


def load(name):
    t = np.array((QAPLIB / f"{name}.dat").read_text().split(), dtype=np.int64)
    n = int(t[0])
    return t[1:1 + n * n].reshape(n, n), t[1 + n * n:].reshape(n, n)


def balance(P, tol=1e-12, max_iter=10000):
    for _ in range(max_iter):
        P = P / P.sum(axis=0, keepdims=True)
        P = P / P.sum(axis=1, keepdims=True)
        if np.abs(P.sum(axis=0) - 1).max() < tol:
            break
    return P


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=20, help="random starts shared by both solvers (plus barycenter)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch
    from scipy.optimize import quadratic_assignment as scipy_qap

    from matching import quadratic_assignment

    torch.set_num_threads(1)
    optima = {}
    for ln in (QAPLIB / "optima.txt").read_text().splitlines():
        if ln and not ln.startswith("#"):
            name, _, opt = ln.split()
            optima[name] = int(opt)
    print(f"QAPLIB, minimisation, {args.starts} random starts + barycenter shared by both; torch threads "
          f"{torch.get_num_threads()}, numpy {np.__version__}")
    print()
    print("| instance | n | optimum | scipy (barycenter) | unialign (barycenter) | scipy best of same starts "
          "| unialign best of same starts | unialign n_init | + two_opt | CPU scipy / unialign, one call per start "
          "| CPU scipy / unialign n_init (one call) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    tally = {"runs": 0, "same permutation": 0, "unialign lower": 0, "scipy lower": 0}
    for name in sorted(optima):
        A, B = load(name)
        n = len(A)
        rng = np.random.default_rng(args.seed)
        starts = ["barycenter"] + [(np.full((n, n), 1 / n) + balance(rng.uniform(size=(n, n)))) / 2
                                   for _ in range(args.starts)]
        s_fun, o_fun, s_cpu, o_cpu = [], [], 0.0, 0.0
        for P0 in starts:  # interleaved
            t0 = time.process_time()
            rs = scipy_qap(A, B, options={"P0": P0})
            t1 = time.process_time()
            ro = quadratic_assignment(A, B, options={"P0": P0})
            t2 = time.process_time()
            s_fun.append(rs.fun)
            o_fun.append(ro.fun)
            tally["runs"] += 1
            tally["same permutation"] += bool(np.array_equal(rs.col_ind, ro.col_ind))
            tally["unialign lower"] += bool(ro.fun < rs.fun)
            tally["scipy lower"] += bool(rs.fun < ro.fun)
            s_cpu += t1 - t0
            o_cpu += t2 - t1
        k = len(starts)
        t0 = time.process_time()
        multi = quadratic_assignment(A, B, options={"n_init": k, "rng": args.seed}).fun
        m_cpu = time.process_time() - t0
        refined = quadratic_assignment(A, B, options={"n_init": k, "rng": args.seed, "two_opt": True}).fun
        print(f"| {name} | {n} | {optima[name]} | {s_fun[0]} | {o_fun[0]} | {min(s_fun)} | {min(o_fun)} | {multi} "
              f"| {refined} | {s_cpu / max(o_cpu, 1e-9):.2f} | {s_cpu / max(m_cpu, 1e-9):.2f} |")

    print()
    print("(instance, start) runs: " + ", ".join(f"{k} {v}" for k, v in tally.items()))


if __name__ == "__main__":
    main()
