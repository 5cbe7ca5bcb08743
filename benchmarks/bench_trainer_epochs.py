"""Benchmark: the projector trainer's first epoch against its second, each fit in a fresh interpreter.

Issue 16 reported the first epoch of ``projectors`` training 1.5-2x slower than the steady state. A first epoch pays
whatever is done once per process or per fit (lazy imports, the allocator's first pages, the first autograd and
optimizer calls, a cold page cache of memory-mapped features); so each repeat here is a fresh ``python`` process that
fits one projector and reports, per epoch, the wall time the trainer records (``epoch_time_s``) and the CPU time of
the process over the epoch (``time.process_time`` read in the epoch callback, so validation is not in it: there is
none here). Epoch 1's CPU is counted from the start of ``fit`` (its setup included: what a user waits for), the
wall time by the trainer's own epoch clock. Each repeat runs two processes, interleaved: one as a user's, one that
builds a throwaway ``torch.optim.AdamW`` first (torch.optim's constructor imports ``torch._dynamo`` once per
process, ~1 s of CPU here), so the import's share of the first epoch is seen apart. Rows: medians over
``--repeats`` processes of epoch 1 / epoch 2.

    python benchmarks/bench_trainer_epochs.py                      # linear and mlp, n = 20,000 x 384, 3 processes each
    python benchmarks/bench_trainer_epochs.py --n 50000 --repeats 5

Run with one thread (``--threads 1``, the default) on a shared machine: the CPU ratio is the one to read there.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import emit  # noqa: E402

SUITE = "projectors"
ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, sys, time
    t_start = time.process_time()
    import numpy as np, torch
    torch.set_num_threads({threads})
    sys.path.insert(0, {root!r})
    from projectors import make_projector
    X = np.load({x!r}, mmap_mode="r"); Y = np.load({y!r}, mmap_mode="r")
    marks = []
    c = time.process_time()
    if {preimport}:  # torch.optim's constructor imports torch._dynamo once per process: pay it here, timed apart
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    optimizer_import_cpu = time.process_time() - c
    extra = {extra}
    p = make_projector({kind!r}, loss="infonce", batch_size={batch}, max_epochs={epochs}, val_fraction=0.0,
                       device="cpu", rng=0, **extra)
    def callback(record):
        marks.append(time.process_time())
    t0 = time.process_time()
    p.fit(X, Y, callback=callback)
    hist = p.train_result_.history
    cpu_epochs = [b - a for a, b in zip([t0] + marks[:-1], marks)]
    print(json.dumps({{"wall": [h["epoch_time_s"] for h in hist], "cpu": cpu_epochs,
                      "optimizer_import_cpu": optimizer_import_cpu}}))
    """
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kinds", nargs="+", default=["linear", "mlp"])
    args = ap.parse_args(argv)
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = {}
        for side in ("x", "y"):
            a = rng.standard_normal((args.n, args.dim)).astype(np.float32)
            a /= np.linalg.norm(a, axis=1, keepdims=True)
            paths[side] = os.path.join(tmp, f"{side}.npy")
            np.save(paths[side], a)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                   OPENBLAS_NUM_THREADS=str(args.threads))
        for kind in args.kinds:
            extra = {"solver": "trained"} if kind == "linear" else {"hidden_dim": 1024}
            runs = {False: [], True: []}
            for _ in range(args.repeats):  # interleaved: a cold process, then one that imported torch._dynamo first
                for preimport in (False, True):
                    code = CHILD.format(threads=args.threads, root=str(ROOT), x=paths["x"], y=paths["y"],
                                        kind=kind, batch=args.batch_size, epochs=args.epochs, extra=repr(extra),
                                        preimport=preimport)
                    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                         check=True).stdout
                    runs[preimport].append(json.loads(out.strip().splitlines()[-1]))
            for preimport, rs in runs.items():
                wall = [r["wall"][0] / r["wall"][1] for r in rs]
                cpu = [r["cpu"][0] / r["cpu"][1] for r in rs]
                emit(SUITE, task="first_epoch", kind=kind, loss="infonce", n=args.n, dim=args.dim,
                     batch_size=args.batch_size, threads=args.threads, repeats=args.repeats,
                     optimizer_imported_before_fit=preimport,
                     epoch1_over_epoch2_wall=round(statistics.median(wall), 3),
                     epoch1_from_fit_start_over_epoch2_cpu=round(statistics.median(cpu), 3),
                     epoch1_cpu_s=round(statistics.median(r["cpu"][0] for r in rs), 3),
                     epoch2_cpu_s=round(statistics.median(r["cpu"][1] for r in rs), 3),
                     optimizer_import_cpu_s=round(statistics.median(r["optimizer_import_cpu"] for r in rs), 3),
                     epoch_wall_s=[[round(t, 3) for t in r["wall"]] for r in rs],
                     epoch_cpu_s=[[round(t, 3) for t in r["cpu"]] for r in rs])
    return 0


if __name__ == "__main__":
    sys.exit(main())
