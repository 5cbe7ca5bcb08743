"""Benchmark: unialign's similarity measures against the Gram-matrix route of the papers' code, in the same run.

Peers, each timed on the same data in the same process:

* ``gram_f32``: Kornblith et al.'s CKA code (``gram_linear`` / ``gram_rbf`` with the median heuristic,
  ``center_gram``, ``cka``), n × n float32 Gram matrices in numpy, as the papers' notebooks run it.
* ``platonic``: Huh et al.'s ``metrics.py`` formulas (torch, float32, n × n masks) for mutual k-NN, CKNNA, cycle
  k-NN.
* ``repsim``: ``repsim.cka`` (C++), where it is installed.

Each call is measured by ``benchmarks._harness.measure``. Below n = 10,000 ours and the fast peers run in 7
interleaved rounds after one warm-up call each (a load that drifts on a shared machine hits both alike), at and above
it and for repsim a single timed call: ``seconds`` is the median CPU time of this process
(``time.process_time``; with one thread it is the wall time of an idle machine, and other jobs on a shared machine
disturb it far less than wall time), ``wall_s`` the median wall time, ``peak_mb`` the peak resident memory the call
added (MiB). Reported per peer: the peer / unialign CPU-time ratio and the peer's absolute error against unialign's
float64 value. Sizes past what a peer can hold are skipped for that peer and reported as such.

    python benchmarks/bench_similarity.py --quick          # a few seconds (CI)
    python benchmarks/bench_similarity.py --full           # growth with n; minutes
    python benchmarks/bench_similarity.py --full --metrics linear_cka rbf_cka --max-kernel-n 20000
    python benchmarks/bench_similarity.py --streaming --n 1000000 --dx 1280 --dy 384 --dir /tmp/bench
    python benchmarks/bench_similarity.py --speedups        # vs the bare numpy formulas and the previous kNN engine
        # linear CKA streamed from memory-mapped .npy files vs the float64 products it needs

Run with one thread for comparable numbers (``OMP_NUM_THREADS=1``; the script sets torch's threads to match).
Results go to stdout as JSON lines.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import measure

# Calls at or above this n are timed once, without a warm-up (a float32 Gram peer takes minutes at n = 20,000).
BIG_N = 10_000
# Below BIG_N, interleaved rounds of one call of ours and one of each peer; medians over the rounds.
ROUNDS = 7


def _now():
    return time.perf_counter()


def timed(fn, *args, big=False, **kw):
    """``fn(*args, **kw)`` measured by the harness: (result, Measurement)."""
    m = measure(fn, *args, repeats=1 if big else 3, warmup=0 if big else 1, **kw)
    return m.result, m


@dataclasses.dataclass(frozen=True)
class _Rounds:
    """Medians over interleaved rounds (the shape of ``_harness.Measurement`` that ``_cols`` reads)."""

    cpu_s: float
    wall_s: float
    peak_mb: float | None
    repeats: int
    result: object


def interleaved(calls: dict, rounds: int) -> dict:
    """Each of ``calls`` (name -> zero-argument callable) once as a warm-up, then ``rounds`` rounds of one timed call
    each, in turn: a load that drifts on a shared machine then hits ours and the peers alike. Medians per name."""
    out = {name: [] for name in calls}
    slowest = 0.0
    for fn in calls.values():
        t = time.process_time()
        fn()
        slowest = max(slowest, time.process_time() - t)
    if slowest > 1.0:  # seconds per call: three rounds give the median
        rounds = min(rounds, 3)
    for _ in range(rounds):
        for name, fn in calls.items():
            out[name].append(measure(fn, repeats=1, warmup=0))
    res = {}
    for name, ms in out.items():
        peaks = [m.peak_mb for m in ms if m.peak_mb is not None]
        res[name] = _Rounds(cpu_s=statistics.median(m.cpu_s for m in ms),
                            wall_s=statistics.median(m.wall_s for m in ms), peak_mb=max(peaks) if peaks else None,
                            repeats=rounds, result=ms[-1].result)
    return res


def _cols(m) -> dict:
    return {"seconds": round(m.cpu_s, 4), "wall_s": round(m.wall_s, 4),
            "peak_mb": None if m.peak_mb is None else round(m.peak_mb, 1), "repeats": m.repeats}


# -- peers: the papers' code, transcribed ----------------------------------------------------------------------

def kornblith_gram_linear(x):
    return x.dot(x.T)


def kornblith_gram_rbf(x, threshold=1.0):
    dot_products = x.dot(x.T)
    sq_norms = np.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    sq_median_distance = np.median(sq_distances)
    return np.exp(-sq_distances / (2 * threshold ** 2 * sq_median_distance))


def kornblith_center_gram(gram):
    gram = gram.copy()
    means = np.mean(gram, 0, dtype=np.float64)
    means -= np.mean(means) / 2
    gram -= means[:, None].astype(gram.dtype)
    gram -= means[None, :].astype(gram.dtype)
    return gram


def kornblith_cka(gram_x, gram_y):
    gram_x = kornblith_center_gram(gram_x)
    gram_y = kornblith_center_gram(gram_y)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    return float(scaled_hsic / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y)))


def gram_linear_cka(X, Y):
    return kornblith_cka(kornblith_gram_linear(X), kornblith_gram_linear(Y))


def gram_rbf_cka(X, Y):
    return kornblith_cka(kornblith_gram_rbf(X), kornblith_gram_rbf(Y))


def platonic_knn(feats, topk):

    return (feats @ feats.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :topk]


def platonic_mutual_knn(A, B, topk=10):
    import torch
    import torch.nn.functional as F

    A, B = F.normalize(A, dim=-1), F.normalize(B, dim=-1)
    ka, kb = platonic_knn(A, topk), platonic_knn(B, topk)
    n = ka.shape[0]
    r = torch.arange(n).unsqueeze(1)
    ma, mb = torch.zeros(n, n), torch.zeros(n, n)
    ma[r, ka] = 1.0
    mb[r, kb] = 1.0
    return ((ma * mb).sum(dim=1) / topk).mean().item()


def platonic_cknna(A, B, topk=10):
    import torch
    import torch.nn.functional as F

    A, B = F.normalize(A, dim=-1), F.normalize(B, dim=-1)
    K, L = A @ A.T, B @ B.T
    n = K.shape[0]

    def hsic_unbiased(K, L):
        m = K.shape[0]
        Kt, Lt = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
        return ((Kt * Lt.T).sum() + Kt.sum() * Lt.sum() / ((m - 1) * (m - 2)) - 2 * (Kt @ Lt).sum() / (m - 2)) / (
            m * (m - 3))

    def sim(K, L):
        Kh, Lh = K.clone().fill_diagonal_(float("-inf")), L.clone().fill_diagonal_(float("-inf"))
        _, ki = torch.topk(Kh, topk, dim=1)
        _, li = torch.topk(Lh, topk, dim=1)
        mk = torch.zeros(n, n).scatter_(1, ki, 1)
        ml = torch.zeros(n, n).scatter_(1, li, 1)
        m = mk * ml
        return hsic_unbiased(m * K, m * L)

    return sim(K, L).item() / (torch.sqrt(sim(K, K) * sim(L, L)) + 1e-6).item()


def platonic_cycle_knn(A, B, topk=10):
    import torch
    import torch.nn.functional as F

    A, B = F.normalize(A, dim=-1), F.normalize(B, dim=-1)
    ka, kb = platonic_knn(A, topk), platonic_knn(B, topk)
    n = ka.shape[0]
    acc = ka[kb] == torch.arange(n).view(-1, 1, 1)
    return acc.float().view(n, -1).max(dim=1).values.mean().item()


def repsim_cka(X, Y, kernel):
    import repsim

    return float(repsim.cka([X.astype(np.float64), Y.astype(np.float64)], kernel, "gretton")[0, 1])


# -- bare numpy formulas and the previous kNN engine (issue 16: ours must be at least as fast) -------------------

def numpy_linear_cka_f64(X, Y):
    """The feature-space formula a user writes: ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) on float64 centred copies."""
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    X -= X.mean(0)
    Y -= Y.mean(0)
    return float(np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)))


def numpy_unbiased_cka_f64(X, Y):
    """Song et al. (2012, eq. 5) unbiased HSIC for linear kernels, written in feature space in bare numpy (float64,
    centred): tr(K~L~) = ||X'Y||^2 - sum a b, 1'K~1 = |sum x|^2 - sum a, 1'K~L~1 = (X sx - a)'(Y sy - b), with
    K~ = XX' with zero diagonal and a, b the squared row norms."""
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    X -= X.mean(0)
    Y -= Y.mean(0)
    n = X.shape[0]
    a, b = np.einsum("ij,ij->i", X, X), np.einsum("ij,ij->i", Y, Y)
    sx, sy = X.sum(0), Y.sum(0)
    kx, ky = X @ sx - a, Y @ sy - b

    def hsic(cross, a, b, one_k, one_l, kl):
        return (cross - a @ b + one_k * one_l / ((n - 1) * (n - 2)) - 2.0 * kl / (n - 2)) / (n * (n - 3))

    k1, l1 = sx @ sx - a.sum(), sy @ sy - b.sum()
    h_xy = hsic(np.linalg.norm(X.T @ Y) ** 2, a, b, k1, l1, kx @ ky)
    h_xx = hsic(np.linalg.norm(X.T @ X) ** 2, a, a, k1, k1, kx @ kx)
    h_yy = hsic(np.linalg.norm(Y.T @ Y) ** 2, b, b, l1, l1, ky @ ky)
    return float(h_xy / np.sqrt(h_xx * h_yy))


# -- the previous kNN engine (unialign before issue 16, up to commit 39121f0), rebuilt here in plain torch / scipy
# so the speed-up table times it without reaching into align's private modules (checked, when rebuilt, to give the
# same neighbours, values and metric results as the old code did through align._similarity and as the metrics now).

V0_BLOCK_BYTES = 128 * 2**20  # the row-block budget of that engine: b = BLOCK_BYTES / (32 n) rows of n similarities


def _features_v0(X, name):
    """The metrics' feature step: float64, finite values checked, rows L2-normalised (no all-zero row)."""
    import torch

    Z = torch.from_numpy(np.asarray(X, dtype=np.float64))
    if not bool(torch.isfinite(Z).all()):
        raise ValueError(f"`{name}` has NaN or inf")
    norms = Z.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError(f"`{name}` has an all-zero row")
    return Z / norms


def _knn_v0(Z, k):
    """The kNN engine before issue 16: float64 row blocks, ``torch.topk``; (indices, float64 values)."""
    import torch

    n = Z.shape[0]
    idx = torch.empty((n, k), dtype=torch.long)
    val = torch.empty((n, k), dtype=torch.float64)
    b = int(max(1, min(n, V0_BLOCK_BYTES // (8 * 4 * max(n, 1)))))
    for s in range(0, n, b):
        e = min(n, s + b)
        S = Z[s:e] @ Z.T
        r = torch.arange(e - s)
        S[r, r + s] = -torch.inf
        v, i = torch.topk(S, k, dim=1)
        idx[s:e], val[s:e] = i, v
    return idx, val


def mutual_knn_v0(X, Y, k=10):
    """unialign's mutual k-NN before issue 16 (the same normalisation, the float64 engine)."""
    ix, _ = _knn_v0(_features_v0(X, "X"), k)
    iy, _ = _knn_v0(_features_v0(Y, "Y"), k)
    return float((ix[:, :, None] == iy[:, None, :]).any(2).sum(1).double().mean() / k), (ix, iy)


def _masked_hsic_u_v0(rows, cols, a, b, n):
    """Song et al.'s unbiased HSIC of two sparse n x n matrices sharing the pattern (rows, cols), zero diagonal,
    as the Platonic code evaluates ``hsic_unbiased(mask * K, mask * L)`` (the same formula as the metric's)."""
    import scipy.sparse as sp

    A = sp.csr_matrix((a, (rows, cols)), shape=(n, n))
    B = sp.csr_matrix((b, (rows, cols)), shape=(n, n))
    t1 = float(A.multiply(B.T).sum())
    t2 = float(A.sum()) * float(B.sum()) / ((n - 1) * (n - 2))
    t3 = 2.0 * float(np.asarray(A.sum(0)).ravel() @ np.asarray(B.sum(1)).ravel()) / (n - 2)
    return (t1 + t2 - t3) / (n * (n - 3))


def cknna_v0(X, Y, k=10):
    """unialign's CKNNA before issue 16: the float64 engine, then the same sparse HSIC on the mutual pattern."""
    n = X.shape[0]
    ix, vx = _knn_v0(_features_v0(X, "X"), k)
    iy, vy = _knn_v0(_features_v0(Y, "Y"), k)
    ix, vx, iy, vy = (t.numpy() for t in (ix, vx, iy, vy))
    rows = np.repeat(np.arange(n), k)

    def pattern(ia, va, ib, vb):
        ka = rows * n + ia.ravel()
        kb = rows * n + ib.ravel()
        order = np.argsort(kb)
        pos = np.searchsorted(kb[order], ka).clip(max=kb.size - 1)
        hit = kb[order][pos] == ka
        return ka[hit] // n, ka[hit] % n, va.ravel()[hit], vb.ravel()[order][pos][hit]

    r, c, a, b = pattern(ix, vx, iy, vy)
    h_xy = _masked_hsic_u_v0(r, c, a, b, n)
    r, c, a, _ = pattern(ix, vx, ix, vx)
    h_xx = _masked_hsic_u_v0(r, c, a, a, n)
    r, c, b, _ = pattern(iy, vy, iy, vy)
    h_yy = _masked_hsic_u_v0(r, c, b, b, n)
    return h_xy / np.sqrt(h_xx * h_yy)


def speedups(sizes, rounds=3, knn_sizes=(10000,)):
    """linear / unbiased CKA against the bare numpy float64 formulas, and mutual k-NN / CKNNA against the previous
    engine, interleaved in one run (medians of ``rounds`` CPU times)."""
    import torch

    from align import similarity as sim

    threads = torch.get_num_threads()
    for n in sizes:
        X, Y = make_pair(n, 384, 256)
        for metric, peer_name, peer in (("linear_cka", "numpy_f64", numpy_linear_cka_f64),
                                        ("unbiased_cka", "numpy_song_f64", numpy_unbiased_cka_f64)):
            res = interleaved({"unialign": lambda: sim.similarity(X, Y, metric),
                               peer_name: lambda: peer(X, Y)}, max(rounds, 5))
            ours, ref = res["unialign"], res[peer_name]
            emit({"case": "speedup", "metric": metric, "n": n, "dx": 384, "dy": 256, "threads": threads,
                  "peer": peer_name, "unialign_s": round(ours.cpu_s, 4), "peer_s": round(ref.cpu_s, 4),
                  "peer_over_unialign": round(ref.cpu_s / ours.cpu_s, 3),
                  "abs_diff": abs(ours.result - ref.result), "rounds": ours.repeats})
    for n in knn_sizes:
        X, Y = make_pair(n, 384, 256)
        new_sets = []

        def new_mutual():
            new_sets[:] = [sim.nearest_neighbors(X, 10), sim.nearest_neighbors(Y, 10)]
            return sim.mutual_knn(X, Y, k=10)

        res = interleaved({"unialign": lambda: sim.mutual_knn(X, Y, k=10), "v0": lambda: mutual_knn_v0(X, Y)},
                          rounds)
        new_mutual()
        _, (ox, oy) = res["v0"].result
        same = all(bool((np.sort(a, 1) == np.sort(b.numpy(), 1)).all()) for a, b in zip(new_sets, (ox, oy)))
        emit({"case": "speedup", "metric": "mutual_knn", "n": n, "dx": 384, "dy": 256, "k": 10, "threads": threads,
              "peer": "unialign_v0", "unialign_s": round(res["unialign"].cpu_s, 4),
              "peer_s": round(res["v0"].cpu_s, 4),
              "peer_over_unialign": round(res["v0"].cpu_s / res["unialign"].cpu_s, 3),
              "abs_diff": abs(res["unialign"].result - res["v0"].result[0]), "identical_neighbours": same,
              "rounds": res["unialign"].repeats})
        res = interleaved({"unialign": lambda: sim.cknna(X, Y, k=10), "v0": lambda: cknna_v0(X, Y)}, rounds)
        emit({"case": "speedup", "metric": "cknna", "n": n, "dx": 384, "dy": 256, "k": 10, "threads": threads,
              "peer": "unialign_v0", "unialign_s": round(res["unialign"].cpu_s, 4),
              "peer_s": round(res["v0"].cpu_s, 4),
              "peer_over_unialign": round(res["v0"].cpu_s / res["unialign"].cpu_s, 3),
              "abs_diff": abs(res["unialign"].result - res["v0"].result), "identical_neighbours": same,
              "rounds": res["unialign"].repeats})


# -- data ------------------------------------------------------------------------------------------------------

def make_pair(n, dx, dy, seed=0):
    """Encoder-like float32 features: a shared 32-d latent plus noise, off-centre, L2-normalised rows."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 32)).astype(np.float32)
    X = z @ rng.normal(size=(32, dx)).astype(np.float32) + 0.5 * rng.normal(size=(n, dx)).astype(np.float32) + 1.0
    Y = np.tanh(z @ rng.normal(size=(32, dy)).astype(np.float32)) + 0.5 * rng.normal(size=(n, dy)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    return X, Y


def gram_fits(n, copies=4, budget=None):
    budget = budget or float(os.environ.get("BENCH_GRAM_BYTES", "8e9"))
    return copies * 4 * n * n <= budget


def emit(rec):
    """Print ``rec`` as a JSON line (+ ``interval_peak_mb``); `python -m benchmarks run` keeps it (benchmarks/_harness)."""
    try:
        from benchmarks._harness import emit_interval
    except ImportError:  # run as a script: benchmarks/ itself is on sys.path
        from _harness import emit_interval
    emit_interval("similarity", **rec)


def bench_metric(metric, sizes, dx, dy, peers, ours_kw=None, big_n=BIG_N, rounds=ROUNDS):
    """Below ``big_n``: ours and every fast peer in ``rounds`` interleaved rounds (medians); at and above it, and
    for repsim (seconds per call), one timed call each."""
    import torch

    from align import similarity as sim

    for n in sizes:
        X, Y = make_pair(n, dx, dy)
        big = n >= big_n
        runnable, skipped = {}, {}
        for name, fn, max_n in peers:
            if n > max_n:
                skipped[name] = (f"n > {max_n}: its linear CKA already takes ~40 s at n = 2000 here" if name == "repsim"
                                 else f"n > {max_n}: n x n float32 matrices ({4 * n * n / 1e9:.1f} GB each, several "
                                 "held at once)")
            else:
                args = (torch.from_numpy(X), torch.from_numpy(Y)) if name == "platonic" else (X, Y)
                runnable[name] = (lambda fn=fn, args=args: fn(*args))
        def ours_call(X=X, Y=Y):
            return sim.similarity(X, Y, metric, **(ours_kw or {}))

        together = {"unialign": ours_call, **{k: v for k, v in runnable.items() if k != "repsim"}}
        try:
            if big:
                results = {name: timed(fn, big=True)[1] for name, fn in together.items()}
            else:
                results = interleaved(together, rounds)
        except MemoryError as exc:
            emit({"metric": metric, "n": n, "impl": "all", "skipped": f"MemoryError: {exc}"})
            continue
        if "repsim" in runnable:
            results["repsim"] = timed(runnable["repsim"], big=True)[1]
        m_ours = results.pop("unialign")
        ours = m_ours.result
        emit({"metric": metric, "n": n, "dx": dx, "dy": dy, "impl": "unialign", **_cols(m_ours), "value": ours})
        for name, _, _ in peers:
            if name in skipped:
                emit({"metric": metric, "n": n, "impl": name, "skipped": skipped[name]})
                continue
            m = results[name]
            emit({"metric": metric, "n": n, "impl": name, **_cols(m), "value": m.result,
                  "abs_error_vs_unialign": abs(m.result - ours),
                  "time_ratio_peer_over_unialign": round(m.cpu_s / m_ours.cpu_s, 2)})


METRICS = ("linear_cka", "rbf_cka", "mutual_knn", "cknna", "cycle_knn")


def run_suite(quick: bool, max_kernel_n: int | None = None, kernel_n: int | None = None, metrics=METRICS,
              sizes=None):
    try:
        import repsim  # noqa: F401

        have_repsim = True
    except ImportError:
        have_repsim = False
        emit({"note": "repsim not installed; its rows are skipped"})
    dx, dy = 384, 256
    if quick:
        lin_sizes, rbf_sizes, knn_sizes = [2000], [1000], [1000]
        peer_max = 2000
    else:
        lin_sizes = [1000, 2000, 5000, 10000, 20000, 100000, 1000000]
        rbf_sizes = [1000, 2000, 5000, 10000, 20000, 50000]
        knn_sizes = [1000, 5000, 10000, 20000, 50000]
        peer_max = 20000
    if sizes:
        lin_sizes = rbf_sizes = knn_sizes = list(sizes)
    if kernel_n:  # only the O(n^2) metrics, at this one size
        lin_sizes, rbf_sizes, knn_sizes = [], [kernel_n], [kernel_n]
    if max_kernel_n:
        rbf_sizes = [n for n in rbf_sizes if n <= max_kernel_n]
        knn_sizes = [n for n in knn_sizes if n <= max_kernel_n]
    lin_peers = [("gram_f32", gram_linear_cka, peer_max)]
    rbf_peers = [("gram_f32", gram_rbf_cka, peer_max)]
    if have_repsim and quick:
        emit({"note": "repsim rows only in --full (its linear CKA at n = 2000 takes about 24 s here)"})
    elif have_repsim:
        lin_peers.append(("repsim", lambda X, Y: repsim_cka(X, Y, "linear"), 2000))
        rbf_peers.append(("repsim", lambda X, Y: repsim_cka(X, Y, "rbf"), 2000))
    knn_max = 2000 if quick else 20000
    cases = {
        "linear_cka": (lin_sizes, lin_peers),
        "rbf_cka": (rbf_sizes, rbf_peers),
        "mutual_knn": (knn_sizes, [("platonic", platonic_mutual_knn, knn_max)]),
        "cknna": (knn_sizes, [("platonic", platonic_cknna, min(knn_max, 10000))]),
        "cycle_knn": (knn_sizes, [("platonic", platonic_cycle_knn, knn_max)]),
    }
    for metric in metrics:
        sizes, peers = cases[metric]
        bench_metric(metric, sizes, dx, dy, peers)


def precision(n=20000, d=384):
    """float32 Gram route vs float64 accumulation on the same float32 data, against an exact float64 reference."""
    from align import similarity as sim

    X, Y = make_pair(n, d, d)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    Xc, Yc = X64 - X64.mean(0), Y64 - Y64.mean(0)
    exact = np.linalg.norm(Xc.T @ Yc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    rec = {"precision_n": n, "exact": exact, "unialign_abs_error": abs(sim.linear_cka(X, Y) - exact)}
    if gram_fits(n):
        rec["gram_f32_abs_error"] = abs(gram_linear_cka(X, Y) - exact)
    emit(rec)


class _AnonSampler:
    """Peak anonymous resident memory (``RssAnon`` of /proc/self/status) of this process, sampled every 0.2 s."""

    def __init__(self):
        self.start_mb = self.peak_mb = None

    @staticmethod
    def _anon_mb():
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def _loop(self):
        while not self._stop.wait(0.2):
            v = self._anon_mb()
            if v is not None:
                self.peak_mb = max(self.peak_mb or 0, v)

    def __enter__(self):
        import threading

        self.start_mb = self.peak_mb = self._anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def streaming(n, dx, dy, folder, chunk_rows=100_000):
    """linear_cka on memory-mapped files of n rows vs the float64 products X'X, Y'Y, X'Y it needs."""
    import torch

    from align import similarity as sim

    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name, d in (("x", dx), ("y", dy)):
        path = os.path.join(folder, f"stream_{name}_{n}x{d}.npy")
        if not os.path.exists(path):
            out = np.lib.format.open_memmap(path + ".tmp.npy", mode="w+", dtype=np.float32, shape=(n, d))
            rng = np.random.default_rng(d)
            for s in range(0, n, chunk_rows):
                e = min(n, s + chunk_rows)
                out[s:e] = rng.standard_normal((e - s, d), dtype=np.float32)
            out.flush()
            del out
            os.replace(path + ".tmp.npy", path)
        paths[name] = path
    X = np.load(paths["x"], mmap_mode="r")
    Y = np.load(paths["y"], mmap_mode="r")
    # Pages of a memory-mapped file count in RSS (file-backed, reclaimable); what must stay bounded is the
    # anonymous memory (RssAnon), sampled here while linear_cka runs.
    anon = _AnonSampler()
    with anon:
        value, m_ours = timed(sim.linear_cka, X, Y, big=True)
    t_ours = m_ours.wall_s  # reading the file is part of the job: wall time
    # Baseline: the same three float64 products on an in-memory float64 block, scaled to n rows.
    m = min(n, 100_000)
    xb = torch.from_numpy(np.asarray(X[:m], dtype=np.float64))
    yb = torch.from_numpy(np.asarray(Y[:m], dtype=np.float64))
    t = _now()
    _ = xb.T @ xb, yb.T @ yb, xb.T @ yb
    t_block = _now() - t
    t_products = t_block * n / m
    emit({"streaming_n": n, "dx": dx, "dy": dy, "value": value, "unialign_seconds": round(t_ours, 2),
          "float64_products_seconds": round(t_products, 2), "ratio": round(t_ours / t_products, 3),
          "file_bytes": int(os.path.getsize(paths["x"]) + os.path.getsize(paths["y"])),
          "anon_mb_before": anon.start_mb, "anon_mb_peak_during": anon.peak_mb,
          "unialign_cpu_seconds": round(m_ours.cpu_s, 2), "unialign_peak_mb": m_ours.peak_mb,
          "products_baseline_rows": m, "threads": torch.get_num_threads()})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few seconds (default)")
    mode.add_argument("--full", action="store_true", help="growth with n (minutes)")
    mode.add_argument("--streaming", action="store_true", help="memory-mapped linear CKA at large n")
    mode.add_argument("--speedups", action="store_true",
                      help="linear / unbiased CKA vs the bare numpy formulas at n = 2k, 10k, 20k and mutual k-NN / "
                      "CKNNA vs the previous engine at n = 10k (issue 16)")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dx", type=int, default=1280)
    ap.add_argument("--dy", type=int, default=384)
    ap.add_argument("--dir", default="/tmp/unialign-bench")
    ap.add_argument("--precision-n", type=int, default=None, help="n for the float32-vs-float64 check")
    ap.add_argument("--max-kernel-n", type=int, default=None,
                    help="largest n for the O(n^2) metrics (RBF CKA, kNN) in --full, to bound the run time")
    ap.add_argument("--kernel-n", type=int, default=None,
                    help="run only the O(n^2) metrics (RBF CKA, kNN), at this n (e.g. 50000 with --full)")
    ap.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS),
                    help="which metrics to run (default: all)")
    ap.add_argument("--sizes", nargs="+", type=int, default=None,
                    help="these n for every selected metric instead of the mode's sizes")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    emit({"python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
          "mode": "streaming" if args.streaming else "speedups" if args.speedups else "full" if args.full
          else "quick"})
    if args.streaming:
        streaming(args.n, args.dx, args.dy, args.dir)
        return
    if args.speedups:
        speedups(args.sizes or [2000, 10000, 20000])
        return
    run_suite(quick=not args.full, max_kernel_n=args.max_kernel_n, kernel_n=args.kernel_n, metrics=args.metrics,
              sizes=args.sizes)
    if not args.kernel_n:
        precision(args.precision_n or (2000 if not args.full else 20000))


if __name__ == "__main__":
    main()
