"""Run ``graspologic.match.graph_match`` on saved inputs; meant for the peer interpreter (its own venv).

Called by ``benchmarks/bench_matching.py`` as ``PEER_PYTHON graspologic_peer.py INPUT.npz``. The .npz holds ``A``,
``B`` (n×n), ``seeds`` (k, 2), ``truth`` (n,) with ``truth[i]`` = B's index of A's item ``i``, ``free`` (the
query items of A), ``rng`` and ``runs``: a JSON list of ``{"name": ..., "params": {...}}`` with keyword arguments
of ``graph_match``. Every run is warmed up once on a tiny problem with the same params (first-call costs), then
timed around the ``graph_match`` call only: ``cpu_s`` = process CPU time (``time.process_time``), ``wall_s`` =
``time.perf_counter``, neither counting interpreter start, imports nor I/O. One JSON object on the last line of
stdout: ``{"versions": {...}, "runs": [{"name", "params", "cpu_s", "wall_s", "acc", "score", "n_iter"}]}``.
"""
import json
import sys
import time

import numpy as np


def main(path: str) -> None:
    import graspologic
    import scipy
    from graspologic.match import graph_match

    data = np.load(path)
    A, B, seeds, truth, free = data["A"], data["B"], data["seeds"], data["truth"], data["free"]
    rng = int(data["rng"])
    runs = json.loads(str(data["runs"]))
    # warm-up on a tiny problem of the same kind
    w = np.random.default_rng(0).normal(size=(20, 20))
    w = w + w.T
    out = []
    for run in runs:
        params = run["params"]
        graph_match(w, w, partial_match=np.array([[0, 0], [1, 1]]), rng=0, **{**params, "n_init": 1})
        c0, w0 = time.process_time(), time.perf_counter()
        res = graph_match(A, B, partial_match=seeds, rng=rng, **params)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        col = np.full(len(A), -1)
        col[res.indices_A] = res.indices_B
        out.append(dict(name=run["name"], params=params, cpu_s=cpu, wall_s=wall,
                        acc=float(np.mean(col[free] == truth[free])), score=float(res.score),
                        n_iter=[int(m["n_iter"]) for m in res.misc]))
    versions = dict(graspologic=graspologic.__version__, numpy=np.__version__, scipy=scipy.__version__)
    print(json.dumps(dict(versions=versions, runs=out)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
