"""A real SIGKILL halfway through `unialign run` and `unialign fit --checkpoint`: the rerun resumes, nothing half-written
is read as good, and the result equals an uninterrupted run's.

The killed command runs in its own process (the real command line; only its pace is slowed so the kill lands
halfway: each matching cell, or each training epoch, sleeps a little longer). Extraction (tests/align/test_features.py)
and the projector training loop itself (tests/projectors/test_trainer.py) have their own kill tests.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from align.cli import main

# The real command line in a child process; UNIALIGN_SLOW slows every matching evaluation or training epoch.
CHILD = """
import os, sys, time
import matching
import align.cli as cli
delay = float(os.environ["UNIALIGN_SLOW"])
evaluate = matching.evaluate
def slow_evaluate(*args, **kwargs):
    time.sleep(delay)
    return evaluate(*args, **kwargs)
matching.evaluate = slow_evaluate
emit_line = cli.emit_line
def slow_emit(obj):
    emit_line(obj)
    if "epoch" in obj:
        time.sleep(delay)
cli.emit_line = slow_emit
cli.main(sys.argv[1:], prog_name="unialign")
"""


def _env(delay: float) -> dict:
    env = dict(os.environ, UNIALIGN_SLOW=str(delay), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fail if it exits first or never gets there."""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if ready():
                return
            if proc.poll() is not None:
                pytest.fail(f"the child exited ({proc.returncode}) before the kill: {proc.stderr.read()[-2000:]}")
            time.sleep(0.02)
        pytest.fail("the child never reached the point of the kill")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture
def toy(tmp_path):
    gen = np.random.default_rng(0)
    X = gen.normal(size=(120, 10))
    R = np.linalg.qr(gen.normal(size=(10, 10)))[0]
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", (X @ R + 0.3 * gen.normal(size=X.shape)).astype(np.float32))
    return tmp_path


def _run_config(folder: Path) -> Path:
    cfg = {"name": "kill", "out": "out", "seeds": [0, 1, 2], "features": {"x": "x.npy", "y": "y.npy"},
           "pairs": [["x", "y"]],
           "matching": {"methods": ["procrustes", "lstsq"], "n_seeds": [5, 15], "n_query": 30,
                        "n_splits": 2}}
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _aggregates(out: Path) -> list:
    rows = json.loads((out / "results.json").read_text())["aggregates"]
    return sorted(json.dumps({k: v for k, v in r.items() if "second" not in k}, sort_keys=True) for r in rows)


def test_sigkill_during_run_resumes_to_the_uninterrupted_result(toy):
    config = _run_config(toy)
    cells = toy / "out" / "cells"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "run", str(config), "--no-progress"], env=_env(0.4),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: len(list(cells.rglob("*.json"))) >= 2)
    done = sorted(cells.rglob("*.json"))
    assert 2 <= len(done) < 12 and not (toy / "out" / "results.json").exists(), "the kill did not land halfway"
    for path in done:  # what the killed run left under a final name is whole
        assert "result" in json.loads(path.read_text())
    # a half-written cell (as a writer without atomic renames would leave) must be recomputed, not read
    done[0].write_text(done[0].read_text()[: len(done[0].read_text()) // 2])
    result = CliRunner().invoke(main, ["run", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_cells"] == 12 and summary["n_cached"] == len(done) - 1
    assert summary["n_computed"] == 12 - len(done) + 1
    reference = CliRunner().invoke(main, ["run", str(config), "--out", str(toy / "ref"), "--no-progress"])
    assert reference.exit_code == 0, reference.output
    assert _aggregates(toy / "out") == _aggregates(toy / "ref")


def _fit_args(folder: Path, out: str, checkpoint: str | None) -> list[str]:
    args = ["fit", "--kind", "mlp", "--x", str(folder / "x.npy"), "--y", str(folder / "y.npy"), "--epochs", "6",
            "--batch-size", "16", "--lr", "0.01", "--val-fraction", "0.2", "--device", "cpu", "--seed", "3",
            "-p", "hidden_dim=16", "-p", "init=random",  # from scratch: the closed-form start would stop it early
            "-p", "amp=false", "-p", "checkpoint_every=2", "--out", str(folder / out)]
    return args + (["--checkpoint", str(folder / checkpoint)] if checkpoint else [])


def test_sigkill_during_fit_resumes_to_the_uninterrupted_projector(toy):
    import torch

    from projectors import load_projector

    ckpt = toy / "ck.pt"

    def halfway():
        if not ckpt.exists():
            return False
        try:
            return torch.load(ckpt, weights_only=True)["state"]["epoch"] >= 2
        except Exception:  # noqa: BLE001 - being replaced at this instant; look again
            return False

    proc = subprocess.Popen([sys.executable, "-c", CHILD, *_fit_args(toy, "killed.pt", "ck.pt")], env=_env(0.3),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, halfway)
    assert not (toy / "killed.pt").exists(), "the run finished before it was killed"
    assert torch.load(ckpt, weights_only=True)["state"]["epoch"] < 6
    resumed = CliRunner().invoke(main, _fit_args(toy, "killed.pt", "ck.pt"))
    assert resumed.exit_code == 0, resumed.output
    epochs = [json.loads(ln)["epoch"] for ln in resumed.stdout.splitlines() if ln.startswith('{"epoch"')]
    assert epochs and epochs[0] >= 2 and epochs[-1] == 5  # continued, not restarted
    reference = CliRunner().invoke(main, _fit_args(toy, "ref.pt", None))
    assert reference.exit_code == 0, reference.output
    a, b = load_projector(toy / "killed.pt"), load_projector(toy / "ref.pt")
    for key, value in b.x_head_.state_dict().items():
        np.testing.assert_allclose(a.x_head_.state_dict()[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-6)
    val = [json.loads(res.stdout.strip().splitlines()[-1])["val"] for res in (resumed, reference)]
    for direction in ("query_to_gallery", "gallery_to_query"):
        assert val[0][direction] == pytest.approx(val[1][direction])
