"""Benchmarks for ``matching``: accuracy and time against peer libraries in the same run, and on real features.

Sections (each prints JSON lines to stdout, one per measurement; ``--out FILE`` also writes them to a file):

``faq``        seeded FAQ (ours) vs scipy's ``quadratic_assignment`` and graspologic's ``graph_match`` with the
               same number of restarts, the transport (GOAT) relaxation (ours vs graspologic's), plus POT's
               Gromov–Wasserstein solvers, on synthetic problems with a planted correspondence: correlated features
               (centred cosine kernels) and correlated Erdős–Rényi graphs, n = 200 → 2,000, correlation 0.6 → 0.9.
               graspologic pins numpy < 2, so it runs as a subprocess peer from its own venv
               (``bash benchmarks/peers/setup_graspologic.sh``; ``--graspologic-python``) on the same inputs
               saved to a .npz, timed inside the subprocess around the solver call; without that venv it is skipped.
               ``--repeats R`` interleaved rounds per case (default 3 in ``--full`` up to n = 500, else 1; one
               call of every in-process implementation per round, each measured by ``_harness.measure``; the
               graspologic peer repeats inside its own process): medians of CPU time in ``*_s`` and the ratios,
               every round in ``*_times``, peak resident memory per implementation in ``*_peak_mb``. The inputs and
               rng are the same in every round, so an accuracy that differs between rounds raises.
``faq-speed``  issue 16's grid: ours vs scipy's FAQ at n = 100, 300, 500, 1,000, 20 restarts and one start, 10%
               known pairs, features and graphs, interleaved rounds (``--repeats``, default 3), CPU-time medians,
               accuracy, objective and peak memory of each call.
``lap``        the LAP step alone on FAQ's gradients: scipy's ``linear_sum_assignment`` vs LAPJV (lapx).
``vlrw``       the protocol of Maniparambil et al. (CVPR 2024) on real features (--x, --y): 820 items, 320 known
               pairs, FAQ with 500 restarts on centred RBF kernels then local CKA, ours end to end, and the papers'
               route (scipy's FAQ once per restart, the double loop for local CKA) side by side at reduced size.
``local-cka``  vectorised local CKA vs the loop over pairs (the paper's implementation), 320 base + 500 query.
``real``       every method on real paired features (row i of --x and --y is the same item), the protocol of
               Maniparambil et al.: n_seeds known pairs + n_query hidden items, mean ± std over splits.

``--quick`` runs in seconds (CI); ``--full`` is the grid reported in benchmarks/README.md. Threads are pinned to
``--threads`` (default 1) so ratios compare like with like, and times are CPU seconds of this process
(``time.process_time``), which other jobs on a shared machine disturb far less than wall-clock time. Run from
the repository root:

    python benchmarks/bench_matching.py faq --quick
    python benchmarks/bench_matching.py local-cka --full
    python benchmarks/bench_matching.py real --x en_minilm.npy --y de_e5.npy
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _pin_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)


if __name__ == "__main__":  # before numpy / torch start their pools
    _threads = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--threads=")), 1)
    _pin_threads(_threads)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment, quadratic_assignment  # noqa: E402

import matching  # noqa: E402

OUT = None


def record(interval: bool = True, **row) -> None:
    """Print the row as a JSON line (``python -m benchmarks run`` keeps it); ``interval``: add ``interval_peak_mb``.

    Rows whose calls ``_harness.measure`` measured (faq: ``*_peak_mb`` per implementation) pass ``interval=False``:
    measure resets the kernel's peak, so the growth since the last row would mean nothing there.
    """
    from benchmarks._harness import emit, emit_interval, mark_interval

    if interval:
        row = emit_interval("matching", **row)  # + interval_peak_mb: peak RSS growth since the last row
    else:
        row = emit("matching", **row)
        mark_interval()
    line = json.dumps(row)
    if OUT is not None:
        with open(OUT, "a") as fh:
            fh.write(line + "\n")


# ---------------------------------------------------------------- peers ------------------------------------------


def scipy_faq(A: np.ndarray, B: np.ndarray, seeds: np.ndarray, n_init: int, rng: np.random.Generator) -> np.ndarray:
    """scipy's FAQ, best of ``n_init`` restarts by objective (barycenter first, then P0="randomized")."""
    seeds = seeds[np.argsort(seeds[:, 0])]  # scipy requires seeds sorted by the first column
    best = None
    for r in range(n_init):
        opts = dict(maximize=True, partial_match=seeds, rng=rng)
        if r > 0:
            opts["P0"] = "randomized"
        res = quadratic_assignment(A, B, method="faq", options=opts)
        if best is None or res.fun > best.fun:
            best = res
    return np.asarray(best.col_ind)


def pot_gw(A, B, seeds, n_init, rng, entropic=False):
    """POT's Gromov–Wasserstein with its defaults (product start; entropic: epsilon=0.1), then an assignment."""
    import ot

    A = A / np.abs(A).max()
    B = B / np.abs(B).max()
    if entropic:
        T = ot.gromov.entropic_gromov_wasserstein(A, B, loss_fun="square_loss")
    else:
        T = ot.gromov.gromov_wasserstein(A, B, loss_fun="square_loss")
    col = np.full(len(A), -1)
    free_a = np.setdiff1d(np.arange(len(A)), seeds[:, 0])
    free_b = np.setdiff1d(np.arange(len(B)), seeds[:, 1])
    col[seeds[:, 0]] = seeds[:, 1]
    r, c = linear_sum_assignment(T[np.ix_(free_a, free_b)], maximize=True)
    col[free_a[r]] = free_b[c]
    return col


PEER_DIR = Path(__file__).resolve().parent / "peers"
DEFAULT_GRASPOLOGIC_PYTHON = Path(__file__).resolve().parent / ".peers" / "graspologic" / "bin" / "python"


def graspologic_python(path: str | None) -> str | None:
    """The peer interpreter with graspologic (``--graspologic-python``, else the default venv), or None."""
    cand = Path(path) if path else DEFAULT_GRASPOLOGIC_PYTHON
    if not cand.exists():
        return None
    probe = subprocess.run([str(cand), "-c", "import importlib.util as u; assert u.find_spec('graspologic')"],
                           capture_output=True, text=True)
    return str(cand) if probe.returncode == 0 else None


def graspologic_peer(python: str, A, B, seeds, truth, free, rng: int, runs: list[dict], threads: int,
                     repeats: int = 1) -> dict:
    """Run ``graspologic.match.graph_match`` in the peer interpreter on exactly these inputs (saved to a .npz).

    ``runs``: ``[{"name", "params"}]``, keyword arguments of ``graph_match``. Times are measured inside the
    subprocess around the solver call only, ``repeats`` interleaved rounds there, medians (see
    benchmarks/peers/graspologic_peer.py); threads pinned as here.
    """
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "problem.npz")
        np.savez(path, A=A, B=B, seeds=seeds, truth=truth, free=free, rng=rng, runs=json.dumps(runs),
                 repeats=repeats)
        proc = subprocess.run([python, str(PEER_DIR / "graspologic_peer.py"), path], capture_output=True,
                              text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"graspologic peer failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- problems ---------------------------------------


def feature_problem(n: int, rho: float, rng: np.random.Generator, d: int = 64):
    """X (n, d) and Y = rho X Q + sqrt(1 - rho^2) E, Y's rows shuffled: centred-cosine kernels, factors for ours."""
    X = rng.normal(size=(n, d))
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    Y = rho * X @ Q + np.sqrt(1 - rho**2) * rng.normal(size=(n, d))
    perm = rng.permutation(n)
    Ys = np.empty_like(Y)
    Ys[perm] = Y
    return X, Ys, perm


def graph_problem(n: int, rho: float, rng: np.random.Generator, p: float = 0.3):
    """Two rho-correlated Erdős–Rényi graphs; B's nodes shuffled (node i of A is node perm[i] of B)."""
    A = np.triu((rng.random((n, n)) < p).astype(float), 1)
    U = rng.random((n, n))
    B = np.triu(np.where(A == 1, U < p + rho * (1 - p), U < p * (1 - rho)).astype(float), 1)
    A, B = A + A.T, B + B.T
    perm = rng.permutation(n)
    Bs = np.empty_like(B)
    Bs[np.ix_(perm, perm)] = B
    return A, Bs, perm


# ---------------------------------------------------------------- sections ---------------------------------------


def bench_faq(quick: bool, restarts: int | None, sizes: list[int] | None, rhos: list[float] | None, seed: int,
              peers_max_n: int, pot_max_n: int, grasp_python: str | None = None, threads: int = 1,
              goat_restarts: int | None = None, grasp_default_max_n: int = 10**9, goat_max_n: int = 10**9,
              repeats: int | None = None) -> None:
    """FAQ / GOAT / GW against scipy, graspologic and POT; ``repeats`` interleaved rounds per case (default: 3 in
    --full up to n = 500, else 1), medians of CPU time, every round's time and each implementation's peak memory."""
    sizes = sizes or ([200] if quick else [200, 500, 1000, 2000])
    rhos = rhos or ([0.9] if quick else [0.6, 0.9])
    grasp = graspologic_python(grasp_python)
    Xw, Yw, pw = feature_problem(50, 0.9, np.random.default_rng(0))  # warm-up: first-call costs of torch / scipy
    sw = np.stack([np.arange(5), pw[:5]], 1)
    matching.match(Xw, Yw, "faq", sw, n_init=2)
    matching.match(Xw, Yw, "faq", sw, n_init=1, transport=True)
    matching.match(Xw, Yw, "gw", sw)
    Aw, Bw = matching.kernel_matrix(Xw, "cosine").numpy(), matching.kernel_matrix(Yw, "cosine").numpy()
    scipy_faq(Aw, Bw, sw, 2, np.random.default_rng(0))
    pot_gw(Aw, Bw, sw, 1, None)
    pot_gw(Aw, Bw, sw, 1, None, entropic=True)
    if not grasp:
        record(section="faq", note=f"graspologic skipped: no peer interpreter with graspologic at "
                                   f"{grasp_python or DEFAULT_GRASPOLOGIC_PYTHON} (create it with "
                                   f"benchmarks/peers/setup_graspologic.sh; it cannot share this venv's numpy)")
    for family in ("features", "graphs"):
        for n in sizes:
            # same number of restarts for every FAQ; fewer at large n to keep the run in minutes
            R = restarts or (5 if quick else {200: 100, 500: 20, 1000: 4}.get(n, 2))
            for rho in rhos:
                rng = np.random.default_rng([seed, n, int(rho * 100)])
                if family == "features":
                    X, Y, perm = feature_problem(n, rho, rng)
                    A = matching.kernel_matrix(X, "cosine").numpy()
                    B = matching.kernel_matrix(Y, "cosine").numpy()
                else:
                    A, B, perm = graph_problem(n, rho, rng)
                k = max(10, n // 20)
                seeds = np.stack([np.arange(k), perm[:k]], axis=1)
                free = np.arange(k, n)

                def acc(col):
                    return float(np.mean(col[free] == perm[free]))

                Rg = goat_restarts or R
                goat = n <= peers_max_n and n <= goat_max_n
                # every in-process implementation as a zero-argument call returning col_ind, in round order
                calls = {}
                if family == "features":
                    calls["ours"] = lambda: matching.match(X, Y, "faq", seeds, rng=seed, n_init=R).col_ind
                else:
                    calls["ours"] = lambda: matching.faq(A, B, seeds, n_init=R, rng=seed).col_ind
                if n <= peers_max_n:
                    calls["scipy"] = lambda: scipy_faq(A, B, seeds, R, np.random.default_rng(seed))
                    if goat:  # GOAT: the optimal-transport relaxation, ours vs graspologic's
                        if family == "features":
                            calls["ours_goat"] = lambda: matching.match(X, Y, "faq", seeds, rng=seed, n_init=Rg,
                                                                        transport=True).col_ind
                        else:
                            calls["ours_goat"] = lambda: matching.faq(A, B, seeds, n_init=Rg, rng=seed,
                                                                      transport=True).col_ind
                    if family == "features" and n <= pot_max_n:  # our seeded GW (entropic start), same features
                        calls["ours_gw"] = lambda: matching.match(X, Y, "gw", seeds).col_ind
                    if n <= pot_max_n:
                        calls["pot_gw"] = lambda: pot_gw(A, B, seeds, 1, None)
                        calls["pot_entropic_gw"] = lambda: pot_gw(A, B, seeds, 1, None, entropic=True)
                reps = repeats or (1 if quick or n > 500 else 3)
                rows, extra = _rounds(calls, reps, acc, f"{family} n={n} rho={rho}")
                if n <= peers_max_n and grasp:
                    # same restarts and starts as ours / scipy ((J + K) / 2), same max_iter / tol; no shuffling
                    same = dict(shuffle_input=False, init_perturbation=0.5, tol=0.03, max_iter=30)
                    runs = [dict(name="graspologic", params=dict(n_init=R, **same))]
                    if goat:
                        runs.append(dict(name="graspologic_goat", params=dict(n_init=Rg, transport=True, **same)))
                    if n <= grasp_default_max_n:  # graph_match's defaults, only n_init set
                        runs.append(dict(name="graspologic_default", params=dict(n_init=R)))
                    out = graspologic_peer(grasp, A, B, seeds, perm, free, seed, runs, threads, reps)
                    for r in out["runs"]:
                        rows[r["name"]] = (r["cpu_s"], r["acc"])
                        extra[f"{r['name']}_times"] = [round(t, 4) for t in r["cpu_times"]]
                        extra[f"{r['name']}_wall_s"] = round(r["wall_s"], 4)
                        extra[f"{r['name']}_peak_mb"] = None if r["peak_mb"] is None else round(r["peak_mb"], 1)
                    extra["graspologic_version"] = out["versions"]["graspologic"]
                t_ours = rows["ours"][0]
                faq_peers = [v[0] for kname, v in rows.items() if kname in ("scipy", "graspologic")]
                ratios = {f"{name}_over_ours": round(rows[name][0] / t_ours, 2)
                          for name in ("scipy", "graspologic", "graspologic_default") if name in rows}
                if "graspologic_goat" in rows:
                    ratios["graspologic_goat_over_ours_goat"] = round(rows["graspologic_goat"][0]
                                                                      / rows["ours_goat"][0], 2)
                record(section="faq", family=family, n=n, rho=rho, n_seeds=k, restarts=R,
                       **({"goat_restarts": Rg} if "ours_goat" in rows else {}), repeats=reps,
                       **{f"{name}_s": round(v[0], 4) for name, v in rows.items()},
                       **{f"{name}_acc": round(v[1], 4) for name, v in rows.items()},
                       speedup_vs_fastest_faq_peer=round(min(faq_peers) / t_ours, 2) if faq_peers else None,
                       **ratios, **extra, interval=False)


def _rounds(calls: dict, repeats: int, acc, case: str) -> tuple[dict, dict]:
    """``repeats`` interleaved rounds of one call of each of ``calls`` (name -> zero-argument call returning
    ``col_ind``), each measured by ``_harness.measure`` (CPU time of this process; peak resident memory the call
    added): a load that drifts on a shared machine hits every implementation alike. No per-case warm-up: the
    section warms every implementation up once on a small problem first.

    Returns ``({name: (median CPU s, accuracy)}, {name_times: [CPU s per round], name_wall_s, name_peak_mb})``.
    The inputs and ``rng`` are the same in every round, so an accuracy that differs between rounds raises.
    """
    from benchmarks._harness import measure

    seen = {name: dict(cpu=[], wall=[], peak=[], acc=[]) for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            m = measure(fn, repeats=1, warmup=0)
            s = seen[name]
            s["cpu"].append(m.cpu_s)
            s["wall"].append(m.wall_s)
            if m.peak_mb is not None:
                s["peak"].append(m.peak_mb)
            s["acc"].append(acc(np.asarray(m.result)))
    rows, extra = {}, {}
    for name, s in seen.items():
        if len(set(s["acc"])) != 1:
            raise RuntimeError(f"faq {case}: {name} accuracy differs across repeats ({s['acc']}) on the same "
                               f"inputs and rng; fix its seeding before taking a median time")
        rows[name] = (statistics.median(s["cpu"]), s["acc"][0])
        extra[f"{name}_times"] = [round(t, 4) for t in s["cpu"]]
        extra[f"{name}_wall_s"] = round(statistics.median(s["wall"]), 4)
        extra[f"{name}_peak_mb"] = round(max(s["peak"]), 1) if s["peak"] else None
    return rows, extra



def _speed_problem(family: str, n: int, rho: float, seed: int):
    rng = np.random.default_rng([seed, n, int(rho * 100), 16])
    if family == "features":
        X, Y, perm = feature_problem(n, rho, rng)
        A = matching.kernel_matrix(X, "cosine").numpy()
        B = matching.kernel_matrix(Y, "cosine").numpy()
        return X, Y, A, B, perm
    A, B, perm = graph_problem(n, rho, rng)
    return None, None, A, B, perm


def bench_faq_speed(sizes: list[int] | None, restarts: int | None, rhos: list[float] | None, seed: int,
                    repeats: int | None, quick: bool, threads: int) -> None:
    r"""Issue 16's grid: ours vs scipy's ``quadratic_assignment(method="faq")``, best of R restarts (barycenter
    first, then ``P0="randomized"``), 10% known pairs, features (centred cosine kernels; ours from the features, as
    ``match`` runs it, and on the same kernels as scipy) and correlated Erdős–Rényi graphs (p = 0.3), plus one
    start at every n. Interleaved rounds in this process, medians of CPU seconds, each call's peak resident memory
    (``_harness.measure``), accuracy over the hidden items and the objective :math:`\sum A_{ik} B_{p_i p_k}` of
    each answer (the same inputs and rng every round, so both are the same every round)."""
    from benchmarks._harness import measure

    sizes = sizes or ([100] if quick else [100, 300, 500, 1000])
    rhos = rhos or [0.8]
    reps = repeats or (1 if quick else 3)
    X, Y, A, B, perm = _speed_problem("features", 60, 0.9, seed)  # warm-up: first-call costs stay out
    s = np.stack([np.arange(6), perm[:6]], 1)
    matching.faq(A, B, s, n_init=2, rng=0)
    matching.match(X, Y, "faq", s, n_init=2, rng=0, kernel="cosine", low_rank="auto")
    scipy_faq(A, B, s, 2, np.random.default_rng(0))
    same = dict(max_iter=30, tol=0.03, init="auto", two_opt=False, transport=False)
    for family in ("features", "graphs"):
        for n in sizes:
            for R in sorted({1, restarts or (2 if quick else 20)}):
                for rho in rhos:
                    X, Y, A, B, perm = _speed_problem(family, n, rho, seed)
                    k = n // 10
                    seeds = np.stack([np.arange(k), perm[:k]], axis=1)
                    free = np.arange(k, n)
                    calls = {"scipy": lambda: scipy_faq(A, B, seeds, R, np.random.default_rng(seed))}
                    if family == "features":
                        calls["ours"] = lambda: matching.match(X, Y, "faq", seeds, rng=seed, n_init=R,
                                                               kernel="cosine", low_rank="auto", **same).col_ind
                        if X.shape[1] >= 0.6 * n:  # match's low_rank="auto" forms the kernels here; factors too
                            calls["ours_low_rank"] = lambda: matching.match(X, Y, "faq", seeds, rng=seed, n_init=R,
                                                                            kernel="cosine", low_rank=True,
                                                                            **same).col_ind
                    calls["ours_kernels" if family == "features" else "ours"] = lambda: matching.faq(
                        A, B, seeds, n_init=R, rng=seed, **same).col_ind
                    seen = {name: dict(cpu=[], peak=[], col=None) for name in calls}
                    for _ in range(reps):
                        for name, fn in calls.items():
                            m = measure(fn, repeats=1, warmup=0)
                            seen[name]["cpu"].append(m.cpu_s)
                            seen[name]["peak"].append(m.peak_mb)
                            col = np.asarray(m.result)
                            if seen[name]["col"] is not None and not np.array_equal(col, seen[name]["col"]):
                                raise RuntimeError(f"faq-speed {family} n={n}: {name} changed between rounds")
                            seen[name]["col"] = col
                    row = dict(section="faq_speed", family=family, n=n, rho=rho, n_seeds=k, restarts=R,
                               repeats=reps, threads=threads)
                    for name, v in seen.items():
                        col = v["col"]
                        row[f"{name}_s"] = round(statistics.median(v["cpu"]), 4)
                        row[f"{name}_acc"] = round(float(np.mean(col[free] == perm[free])), 4)
                        row[f"{name}_obj"] = float((A * B[col][:, col]).sum())
                        peaks = [p for p in v["peak"] if p is not None]
                        row[f"{name}_peak_mb"] = round(max(peaks), 1) if peaks else None
                    for name in calls:
                        if name != "scipy":
                            row[f"scipy_over_{name}"] = round(row["scipy_s"] / row[f"{name}_s"], 2)
                            row[f"{name}_obj_minus_scipy"] = row[f"{name}_obj"] - row["scipy_obj"]
                    if row["ours_peak_mb"] and row["scipy_peak_mb"]:
                        row["ours_peak_over_scipy"] = round(row["ours_peak_mb"] / row["scipy_peak_mb"], 2)
                    row["ours_times"] = [round(t, 4) for t in seen["ours"]["cpu"]]
                    row["scipy_times"] = [round(t, 4) for t in seen["scipy"]["cpu"]]
                    record(interval=False, **row)


def bench_lap(sizes: list[int] | None, seed: int, quick: bool) -> None:
    """The LAP step alone: scipy's ``linear_sum_assignment`` vs LAPJV (``lap.lapjvx`` / ``lap.lapjv`` of the lapx
    package) on the gradients FAQ produces (captured from ``matching.faq`` runs, 5 restarts, every gradient that
    needed a LAP), CPU seconds per call, and how often the two return different (equally optimal) assignments.

    The gradients come through ``lap_solver=`` as a callable that records each cost and solves it with scipy (the
    same path as ``lap_solver="scipy"``); the final projections it is also handed (costs ``-P``, ``P`` doubly
    stochastic: every row and column sums to -1 within the starts' balancing tolerance, 1e-3) are left out."""
    try:
        import lap
    except ImportError:
        record(section="lap", status="skipped", note="lapx is not installed (pip install lapx)")
        return
    sizes = sizes or ([100] if quick else [100, 300, 500, 1000])
    for family in ("features", "graphs"):
        for n in sizes:
            X, Y, A, B, perm = _speed_problem(family, n, 0.8, seed)
            k = n // 10
            seeds = np.stack([np.arange(k), perm[:k]], axis=1)
            grads = []

            def spy(cost):
                # a projection's -P sums to -1 within the random starts' balancing (1e-3) in every row and column
                if not (np.allclose(cost.sum(axis=0), -1.0, rtol=0, atol=1e-3)
                        and np.allclose(cost.sum(axis=1), -1.0, rtol=0, atol=1e-3)):
                    grads.append(np.array(cost))
                return linear_sum_assignment(cost)[1]

            matching.faq(A, B, seeds, n_init=5, rng=seed, lap_solver=spy)
            grads = grads[:20]
            if not grads:
                record(section="lap", family=family, n=n, calls=0)
                continue
            times = {"scipy": [], "lapjvx": [], "lapjv": []}
            differ = unequal_value = 0
            for G in grads:
                t = time.process_time()
                c0 = linear_sum_assignment(G)[1]
                times["scipy"].append(time.process_time() - t)
                t = time.process_time()
                c1 = lap.lapjvx(G, return_cost=False)[1]
                times["lapjvx"].append(time.process_time() - t)
                t = time.process_time()
                lap.lapjv(G, return_cost=False)
                times["lapjv"].append(time.process_time() - t)
                differ += not np.array_equal(c0, c1)
                v0, v1 = G[np.arange(len(G)), c0].sum(), G[np.arange(len(G)), c1].sum()
                unequal_value += not abs(v0 - v1) <= 1e-9 * max(abs(v0), 1.0)
            ms = {name: statistics.median(v) * 1e3 for name, v in times.items()}
            record(section="lap", family=family, n=n, m=n - k, calls=len(grads),
                   **{f"{name}_ms": round(v, 4) for name, v in ms.items()},
                   scipy_over_lapjvx=round(ms["scipy"] / ms["lapjvx"], 2),
                   differ=differ, unequal_value=unequal_value)



# ------------------------------------------------- the VLRW protocol (Maniparambil et al., CVPR 2024) ------------


def _paper_centered_rbf(X: np.ndarray) -> np.ndarray:
    """The authors' ``centered_scaled_corr_rbf`` (mayug/0-shot-llm-vision, src/utils.py), in numpy float64:
    RBF with sigma^2 = the median nonzero squared distance, H K H, divided by sqrt(HSIC(K, K)) = ||H K H||_F."""
    G = X @ X.T
    d = np.diag(G)
    D2 = d[:, None] - G + (d[:, None] - G).T
    K = np.exp(-0.5 * D2 / np.median(D2[D2 != 0]))
    n = len(X)
    H = np.eye(n) - 1.0 / n
    C = H @ K @ H
    return C / np.sqrt((C * C).sum())


def _paper_local_cka(Xb: np.ndarray, Yb: np.ndarray, Xq: np.ndarray, Yq: np.ndarray) -> np.ndarray:
    """The authors' ``kernel_local_CKA`` double loop: for every (query i, query j), kernel CKA of
    ``[x_i; X_base]`` vs ``[y_j; Y_base]`` with RBF kernels whose sigma is the median of that subset, centred with
    ``H``. Leaner than their loop (each kernel once per pair instead of six times), the same values."""
    import torch

    n = len(Xb) + 1
    H = torch.eye(n, dtype=torch.float64) - 1.0 / n

    def rbf(Z):
        Gz = Z @ Z.T
        dz = torch.diag(Gz)
        D2 = dz[:, None] - Gz + (dz[:, None] - Gz).T
        return torch.exp(-0.5 * D2 / torch.median(D2[D2 != 0]))

    tXb, tYb = torch.from_numpy(Xb).double(), torch.from_numpy(Yb).double()
    Ls = []
    for j in range(len(Yq)):
        L = H @ rbf(torch.cat([torch.from_numpy(Yq[j:j + 1]).double(), tYb])) @ H
        Ls.append((L, torch.sqrt((L * L).sum())))
    S = np.empty((len(Xq), len(Yq)))
    for i in range(len(Xq)):
        K = H @ rbf(torch.cat([torch.from_numpy(Xq[i:i + 1]).double(), tXb])) @ H
        nk = torch.sqrt((K * K).sum())
        for j, (L, nl) in enumerate(Ls):
            S[i, j] = float((K * L).sum() / (nk * nl))
    return S


def bench_vlrw(x: str, y: str, n_items: int, n_seeds: int, n_init: int, side_restarts: int, side_queries: int,
               seed: int, threads: int) -> None:
    """The VLRW protocol on real paired features, ours end to end and the papers' route side by side.

    Items: the first ``n_items`` rows of ``--x`` / ``--y``; the first ``n_seeds`` are the known pairs, the rest
    the queries, whose rows of Y are shuffled (``torch.manual_seed(0)``-like fixed permutation from ``seed``).
    Ours: ``matching.match(..., "faq", kernel="centered_rbf", n_init=n_init, init="randomized", tol=1e-5)``
    (the authors' FAQ settings), then ``matching.match(..., "local_cka", kernel="rbf")`` (their kernel local CKA);
    wall and CPU seconds of the whole, threads as ``--threads``. Papers' route (scipy ``quadratic_assignment``
    called once per restart, as their ``qap_matching``; their double loop for local CKA): FAQ at
    ``side_restarts`` restarts from the *same* explicit starts as a second run of ours (equal paths where every
    LAP has a unique optimum), its time extrapolated linearly to ``n_init``; local CKA on the known pairs and the
    first ``side_queries`` queries against ours on the same items, its time extrapolated to all pairs by the
    number of pairs (each pair costs the same)."""
    import torch

    X = np.load(x)[:n_items].astype(np.float64)
    Y = np.load(y)[:n_items].astype(np.float64)
    rng = np.random.default_rng(seed)
    q = n_items - n_seeds
    shuffle = rng.permutation(q)
    Ys = np.concatenate([Y[:n_seeds], Y[n_seeds:][shuffle]])  # query j of Y's side is query shuffle[j]
    seeds = np.stack([np.arange(n_seeds), np.arange(n_seeds)], axis=1)
    truth = np.argsort(shuffle)  # query i of X is query truth[i] of Ys's queries

    def acc(col):
        return float(np.mean(col[n_seeds:] - n_seeds == truth))

    faq_opts = dict(kernel="centered_rbf", init="randomized", tol=1e-5, two_opt=False, transport=False)
    # ours, end to end: FAQ with n_init restarts, then local CKA on the same split
    w0, c0 = time.perf_counter(), time.process_time()
    res = matching.match(X, Ys, "faq", seeds, rng=seed, n_init=n_init, **faq_opts)
    w1, c1 = time.perf_counter(), time.process_time()
    lres = matching.match(X, Ys, "local_cka", seeds, kernel="rbf")
    w2, c2 = time.perf_counter(), time.process_time()
    S = lres.similarity[n_seeds:, n_seeds:]
    ranks = (S > S[np.arange(q), truth][:, None]).sum(axis=1)
    record(section="vlrw", route="ours", x=Path(x).name, y=Path(y).name, n_items=n_items, n_seeds=n_seeds,
           n_query=q, restarts=n_init, threads=threads, faq_acc=round(acc(res.col_ind), 4), faq_obj=res.score,
           local_cka_acc=round(acc(lres.col_ind), 4),
           local_cka_recall={k: round(float(np.mean(ranks < k)), 4) for k in (1, 5, 10)},
           faq_wall_s=round(w1 - w0, 2), faq_cpu_s=round(c1 - c0, 2), local_cka_wall_s=round(w2 - w1, 3),
           local_cka_cpu_s=round(c2 - c1, 3), total_wall_s=round(w2 - w0, 2), total_cpu_s=round(c2 - c0, 2))

    # side by side, FAQ: the same explicit starts for both, side_restarts of them
    A, B = _paper_centered_rbf(X), _paper_centered_rbf(Ys)
    m = q
    children = [np.random.default_rng(c) for c in np.random.SeedSequence(seed).spawn(side_restarts)]
    # tol: scipy checks an explicit P0's sums to about 1e-6 (the default 1e-3 is refused at some sizes)
    starts = np.stack([matching.random_doubly_stochastic(m, rng=c, tol=1e-8) for c in children])
    starts = (starts + 1.0 / m) / 2
    c0 = time.process_time()
    best = None
    for k in range(side_restarts):
        r = quadratic_assignment(A, B, method="faq", options=dict(P0=starts[k], maximize=True, partial_match=seeds,
                                                                   tol=1e-5))
        if best is None or r.fun > best.fun:
            best = r
    t_scipy = time.process_time() - c0
    c0 = time.process_time()
    ours = matching.faq(A, B, seeds, n_init=side_restarts, init=starts, tol=1e-5)
    t_ours = time.process_time() - c0
    record(section="vlrw", route="side_by_side_faq", restarts=side_restarts, threads=threads,
           same_starts=True, kernels="the authors' centered_scaled_corr_rbf (float64)",
           papers_acc=round(acc(np.asarray(best.col_ind)), 4), ours_acc=round(acc(ours.col_ind), 4),
           papers_obj=float(best.fun), ours_obj=ours.score, same_matching=bool(np.array_equal(best.col_ind,
                                                                                            ours.col_ind)),
           papers_cpu_s=round(t_scipy, 2), ours_cpu_s=round(t_ours, 2), papers_over_ours=round(t_scipy / t_ours, 2),
           papers_cpu_s_at_n_init_extrapolated=round(t_scipy * n_init / side_restarts, 1), n_init=n_init)
    del starts

    # side by side, local CKA: the papers' double loop on the known pairs + side_queries queries
    Xq, Yq = X[n_seeds:n_seeds + side_queries], Y[n_seeds:n_seeds + side_queries]
    c0 = time.process_time()
    S_paper = _paper_local_cka(X[:n_seeds], Y[:n_seeds], Xq, Yq)
    t_paper = time.process_time() - c0
    sub_X = np.concatenate([X[:n_seeds], Xq])
    sub_Y = np.concatenate([Y[:n_seeds], Yq])
    c0 = time.process_time()
    sub = matching.match(sub_X, sub_Y, "local_cka", seeds, kernel="rbf")
    t_sub = time.process_time() - c0
    col_paper = linear_sum_assignment(S_paper, maximize=True)[1]
    record(section="vlrw", route="side_by_side_local_cka", n_seeds=n_seeds, n_query=side_queries, threads=threads,
           papers_acc=round(float(np.mean(col_paper == np.arange(side_queries))), 4),
           ours_acc=round(float(np.mean(sub.col_ind[n_seeds:] - n_seeds == np.arange(side_queries))), 4),
           papers_cpu_s=round(t_paper, 2), ours_cpu_s=round(t_sub, 4),
           papers_cpu_s_at_full_extrapolated=round(t_paper * q * q / side_queries ** 2, 1),
           note="ours: one RBF kernel (median sigma) over the known pairs + these queries; papers': sigma per pair "
                "subset, as their code")


def _cka_dense(K: np.ndarray, L: np.ndarray) -> float:
    """CKA of two kernel matrices, <HKH, HLH> / (||HKH|| ||HLH||), centring by row/column means (no n x n H)."""
    Kc = K - K.mean(axis=0, keepdims=True) - K.mean(axis=1, keepdims=True) + K.mean()
    Lc = L - L.mean(axis=0, keepdims=True) - L.mean(axis=1, keepdims=True) + L.mean()
    return float((Kc * Lc).sum() / np.sqrt((Kc * Kc).sum() * (Lc * Lc).sum()))


def local_cka_loop(K: np.ndarray, L: np.ndarray, base_x, base_y, query_x, query_y) -> np.ndarray:
    """The papers' route: one CKA of the seed block plus the pair, for every pair in a double loop (the peer)."""
    S = np.empty((len(query_x), len(query_y)))
    for a, i in enumerate(query_x):
        ix = np.append(base_x, i)
        Ki = K[np.ix_(ix, ix)]
        for b, j in enumerate(query_y):
            iy = np.append(base_y, j)
            S[a, b] = _cka_dense(Ki, L[np.ix_(iy, iy)])
    return S


def bench_local_cka(quick: bool, seed: int, naive_rows: int | None) -> None:
    k, q = (40, 60) if quick else (320, 500)
    naive_rows = naive_rows or (q if quick else 20)
    rng = np.random.default_rng(seed)
    n = k + q
    X = rng.normal(size=(n, 64))
    Y = X @ np.linalg.qr(rng.normal(size=(64, 64)))[0] + 0.5 * rng.normal(size=(n, 64))
    K, L = matching.kernel_matrix(X, "linear").numpy(), matching.kernel_matrix(Y, "linear").numpy()
    base, query = np.arange(k), np.arange(k, n)
    t = time.process_time()
    S = matching.local_cka_scores(K, L, np.stack([base, base], axis=1), query, query)
    t_fast = time.process_time() - t
    rows = query[:naive_rows]
    t = time.process_time()
    S_naive = local_cka_loop(K, L, base, base, rows, query)
    t_naive_part = time.process_time() - t
    t_naive = t_naive_part * q / naive_rows
    record(section="local_cka", n_base=k, n_query=q, vectorised_s=round(t_fast, 4),
           naive_s=round(t_naive, 2), naive_pairs_timed=int(naive_rows * q), naive_extrapolated=naive_rows < q,
           speedup=round(t_naive / t_fast, 1), max_abs_diff=float(np.abs(S[:naive_rows] - S_naive).max()))


REAL_METHODS = [
    ("faq", {"n_init": 1}),
    ("faq", {"n_init": 30}),
    ("faq", {"n_init": 30, "two_opt": True}),
    ("faq", {"n_init": 30, "kernel": "centered_rbf"}),
    ("faq", {"n_init": 30, "kernel": "centered_rbf", "transport": True}),
    ("local_cka", {}),
    ("gw", {}),
    ("entropic_gw", {}),
    ("fused_gw", {}),
    ("procrustes", {}),
    ("procrustes", {"n_refine": 5}),
    ("lstsq", {}),
    ("relative", {}),
    ("asif", {}),
]


def _scipy_eval_fn(X, Y, partial_match, rng):
    A = matching.kernel_matrix(X, "cosine").numpy()
    B = matching.kernel_matrix(Y, "cosine").numpy()
    col = scipy_faq(A, B, partial_match, 1, rng)
    return matching.MatchResult(col_ind=col, score=0.0, n_iter=0, converged=True, method="scipy_faq")


_scipy_eval_fn.__name__ = "scipy_faq_1start_cosine"


def bench_real(x: str, y: str, quick: bool, n_seeds: int, n_query: int, splits: int, seed: int) -> None:
    X, Y = np.load(x), np.load(y)
    methods = REAL_METHODS[:2] + [("local_cka", {})] if quick else REAL_METHODS
    for method, params in [(_scipy_eval_fn, {})] + methods:
        res = matching.evaluate(X, Y, method, n_seeds=n_seeds, n_query=n_query, n_splits=splits, rng=seed, **params)
        record(section="real", x=Path(x).name, y=Path(y).name, method=res.method, params=params,
               accuracy=round(res.accuracy, 4), accuracy_std=round(res.accuracy_std, 4),
               recall=None if res.recall is None else {k: round(v, 4) for k, v in res.recall.items()},
               n_seeds=n_seeds, n_query=n_query, splits=splits, seconds=round(res.seconds, 2))


def main(argv=None) -> None:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("section", choices=["faq", "faq-speed", "lap", "vlrw", "local-cka", "real", "all"])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="seconds; for CI")
    mode.add_argument("--full", action="store_true", help="the grid in benchmarks/README.md")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--restarts", type=int, default=None, help="faq: restarts for every FAQ (default by n)")
    ap.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=None)
    ap.add_argument("--rhos", type=lambda s: [float(v) for v in s.split(",")], default=None)
    ap.add_argument("--peers-max-n", type=int, default=10**9, help="faq: skip all peers above this n")
    ap.add_argument("--pot-max-n", type=int, default=1000, help="faq: skip the POT/GW peers above this n")
    ap.add_argument("--graspologic-python", default=None,
                    help="faq: python of a venv with graspologic, run as a subprocess peer (default: "
                         "benchmarks/.peers/graspologic/bin/python if it exists; see benchmarks/peers/)")
    ap.add_argument("--goat-restarts", type=int, default=None,
                    help="faq: restarts of the transport=True (GOAT) runs, ours and graspologic's (default: as FAQ)")
    ap.add_argument("--goat-max-n", type=int, default=10**9, help="faq: skip the GOAT runs above this n")
    ap.add_argument("--graspologic-default-max-n", type=int, default=10**9,
                    help="faq: also run graph_match with its default settings up to this n")
    ap.add_argument("--repeats", type=int, default=None,
                    help="faq: interleaved rounds per case, medians reported (default: 3 in --full up to n = 500, "
                         "else 1)")
    ap.add_argument("--naive-rows", type=int, default=None, help="local-cka: query rows timed in the loop")
    ap.add_argument("--x", help="real: features of side X (.npy)")
    ap.add_argument("--y", help="real: features of side Y (.npy), row i pairs with row i of --x")
    ap.add_argument("--n-seeds", type=int, default=30)
    ap.add_argument("--n-query", type=int, default=100)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--n-items", type=int, default=820, help="vlrw: items (first rows of --x / --y)")
    ap.add_argument("--n-init", type=int, default=500, help="vlrw: FAQ restarts of our end-to-end run")
    ap.add_argument("--side-restarts", type=int, default=10, help="vlrw: restarts of the side-by-side FAQ runs")
    ap.add_argument("--side-queries", type=int, default=40, help="vlrw: queries of the side-by-side local CKA")
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    OUT = args.out
    import torch

    torch.set_num_threads(args.threads)
    quick = not args.full
    if args.section in ("faq", "all"):
        bench_faq(quick, args.restarts, args.sizes, args.rhos, args.seed, args.peers_max_n, args.pot_max_n,
                  args.graspologic_python, args.threads, args.goat_restarts, args.graspologic_default_max_n,
                  args.goat_max_n, args.repeats)
    if args.section == "faq-speed":
        bench_faq_speed(args.sizes, args.restarts, args.rhos, args.seed, args.repeats, quick, args.threads)
    if args.section == "lap":
        bench_lap(args.sizes, args.seed, quick)
    if args.section == "vlrw":
        if not (args.x and args.y):
            ap.error("vlrw needs --x and --y")
        bench_vlrw(args.x, args.y, args.n_items, 320 if args.n_seeds == 30 else args.n_seeds,
                   10 if quick else args.n_init, 2 if quick else args.side_restarts,
                   5 if quick else args.side_queries, args.seed, args.threads)
    if args.section in ("local-cka", "all"):
        bench_local_cka(quick, args.seed, args.naive_rows)
    if args.section == "real" or (args.section == "all" and args.x):
        if not (args.x and args.y):
            ap.error("real needs --x and --y")
        bench_real(args.x, args.y, quick, args.n_seeds, args.n_query, args.splits, args.seed)


if __name__ == "__main__":
    main()
