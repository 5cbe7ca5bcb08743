"""Training run used by the resume and multi-process tests (run as a script, alone or under torchrun).

    python _train_worker.py OUT [--checkpoint CKPT] [--sleep S] [--epochs E]

Trains a small ``mlp`` projector on seeded synthetic pairs and writes its weights (rank 0) to OUT.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np


def data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((96, 8)).astype(np.float32)
    Y = (X @ rng.standard_normal((8, 6)) + 0.1 * rng.standard_normal((96, 6))).astype(np.float32)
    return X, Y


def params(epochs: int = 4, **extra):
    return dict(hidden_dim=16, n_blocks=1, dropout=0.0, batch_size=16, max_epochs=epochs, lr=1e-2, patience=1000,
                val_fraction=0.0, amp=False, device="cpu", rng=5, **extra)


def fit(epochs=4, checkpoint=None, callback=None):
    from projectors import make_projector

    X, Y = data()
    extra = {"checkpoint": checkpoint, "checkpoint_every": 1} if checkpoint else {}
    return make_projector("mlp", **params(epochs, **extra)).fit(X, Y, callback=callback)


def main():
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--checkpoint")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()
    proj = fit(a.epochs, a.checkpoint, callback=(lambda r: time.sleep(a.sleep)) if a.sleep else None)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(proj.x_head_.state_dict(), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
