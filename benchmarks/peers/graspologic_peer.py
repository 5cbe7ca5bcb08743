"""Run ``graspologic.match.graph_match`` on saved inputs; meant for the peer interpreter (its own venv).

Called by ``benchmarks/bench_matching.py`` as ``PEER_PYTHON graspologic_peer.py INPUT.npz``. The .npz holds ``A``,
``B`` (n×n), ``seeds`` (k, 2), ``truth`` (n,) with ``truth[i]`` = B's index of A's item ``i``, ``free`` (the
query items of A), ``rng``, ``runs``: a JSON list of ``{"name": ..., "params": {...}}`` with keyword arguments
of ``graph_match``, and optionally ``repeats`` (default 1). Every run is warmed up once on a tiny problem with the
same params (first-call costs), then timed ``repeats`` times in interleaved rounds (one call of each run per round,
so a load that drifts hits all runs alike), around the ``graph_match`` call only: ``cpu_s`` = median process CPU
time (``time.process_time``), ``wall_s`` = median ``time.perf_counter``, neither counting interpreter start,
imports nor I/O; ``cpu_times`` / ``wall_times`` every round. ``peak_mb``: the largest, over the rounds, peak
resident memory the call added (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, minus the RSS just
before the call, after glibc ``malloc_trim``), as ``benchmarks/_harness.PeakMemory`` reads it without its polling
thread; None where the kernel refuses the reset. Every round uses the same inputs and ``rng``, so the accuracy must
be the same in every round: a difference exits with an error. One JSON object on the last line of stdout:
``{"versions": {...}, "repeats": R, "runs": [{"name", "params", "cpu_s", "wall_s", "cpu_times", "wall_times",
"peak_mb", "acc", "score", "n_iter"}]}``.
"""
import json
import statistics
import sys
import time

import numpy as np


def _malloc_trim():
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss():
    try:
        import os

        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def _hwm():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main(path: str) -> None:
    import graspologic
    import scipy
    from graspologic.match import graph_match

    data = np.load(path)
    A, B, seeds, truth, free = data["A"], data["B"], data["seeds"], data["truth"], data["free"]
    rng = int(data["rng"])
    runs = json.loads(str(data["runs"]))
    repeats = int(data["repeats"]) if "repeats" in data.files else 1
    # warm-up on a tiny problem of the same kind
    w = np.random.default_rng(0).normal(size=(20, 20))
    w = w + w.T
    for run in runs:
        graph_match(w, w, partial_match=np.array([[0, 0], [1, 1]]), rng=0, **{**run["params"], "n_init": 1})
    seen = {run["name"]: dict(cpu=[], wall=[], peak=[], acc=[], res=None) for run in runs}
    for _ in range(repeats):
        for run in runs:
            s = seen[run["name"]]
            s["res"] = None
            _malloc_trim()
            hwm_ok = _reset_hwm()
            before = _rss()
            c0, w0 = time.process_time(), time.perf_counter()
            res = graph_match(A, B, partial_match=seeds, rng=rng, **run["params"])
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            hwm = _hwm() if hwm_ok else None
            if hwm is not None and before is not None:
                s["peak"].append(max(0, hwm - before) / 2**20)
            col = np.full(len(A), -1)
            col[res.indices_A] = res.indices_B
            s["cpu"].append(cpu)
            s["wall"].append(wall)
            s["acc"].append(float(np.mean(col[free] == truth[free])))
            s["res"] = res
    out = []
    for run in runs:
        s = seen[run["name"]]
        if len(set(s["acc"])) != 1:
            sys.exit(f"graspologic peer: {run['name']} accuracy differs across repeats ({s['acc']}) on the same "
                     f"inputs and rng; its result is not reproducible, so a median time would mix different runs")
        res = s["res"]
        out.append(dict(name=run["name"], params=run["params"], cpu_s=statistics.median(s["cpu"]),
                        wall_s=statistics.median(s["wall"]), cpu_times=s["cpu"], wall_times=s["wall"],
                        peak_mb=max(s["peak"]) if s["peak"] else None, acc=s["acc"][0], score=float(res.score),
                        n_iter=[int(m["n_iter"]) for m in res.misc]))
    versions = dict(graspologic=graspologic.__version__, numpy=np.__version__, scipy=scipy.__version__)
    print(json.dumps(dict(versions=versions, repeats=repeats, runs=out)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
