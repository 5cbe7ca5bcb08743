"""`unialign fit` and `unialign retrieve`: JSON lines, summary, saved file, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from align.cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 10)).astype(np.float32)
    Y = (X @ rng.standard_normal((10, 8)) + 0.05 * rng.standard_normal((300, 8))).astype(np.float32)
    np.save(tmp_path / "x.npy", X[:250])
    np.save(tmp_path / "y.npy", Y[:250])
    np.save(tmp_path / "xq.npy", X[250:])
    np.save(tmp_path / "yg.npy", Y[250:])
    return tmp_path


def _lines(output):
    return [json.loads(line) for line in output.strip().splitlines()]


def test_fit_mlp_prints_curves_and_summary_then_retrieve(files):
    out = files / "proj.pt"
    r = CliRunner().invoke(main, ["fit", "--kind", "mlp", "--x", str(files / "x.npy"), "--y", str(files / "y.npy"),
                                  "--val-fraction", "0.2", "--epochs", "10", "--batch-size", "25", "--lr", "0.01",
                                  "--device", "cpu", "-p", "hidden_dim=32", "-p", "patience=100", "--out", str(out),
                                  "--x-encoder", "minilm", "--y-encoder", "e5-small"])
    assert r.exit_code == 0, r.output
    lines = _lines(r.stdout)
    curves, summary = lines[:-1], lines[-1]
    assert len(curves) == 10 and [c["epoch"] for c in curves] == list(range(10))
    assert all("val_R@1" in c and "loss" in c for c in curves)
    assert summary["summary"] and summary["n_val"] == 50 and summary["n_train"] == 200
    assert summary["val"]["query_to_gallery"]["R@1"] > 0.5
    assert out.exists()
    r = CliRunner().invoke(main, ["retrieve", "--projector", str(out), "--x", str(files / "xq.npy"),
                                  "--y", str(files / "yg.npy"), "--ks", "1,5"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["kind"] == "mlp" and res["metadata"]["x_encoder"] == "minilm"
    assert res["query_to_gallery"]["R@1"] > 0.5 and "R@5" in res["gallery_to_query"]


@pytest.mark.parametrize("kind,extra", [("linear", []), ("cca", ["-p", "n_components=6"]),
                                        ("subspace", ["-p", "n_components=[2,8]"])])
def test_fit_closed_form_kinds(files, kind, extra):
    out = files / f"{kind}.pt"
    r = CliRunner().invoke(main, ["fit", "--kind", kind, "--x", str(files / "x.npy"), "--y", str(files / "y.npy"),
                                  "--val-fraction", "0.2", "--out", str(out), *extra])
    assert r.exit_code == 0, r.output
    (summary,) = _lines(r.stdout)
    assert summary["kind"] == kind and summary["val"]["query_to_gallery"]["R@1"] > 0.3


def test_errors_are_one_line(files):
    runner = CliRunner()
    np.save(files / "short.npy", np.zeros((10, 8), np.float32))
    r = runner.invoke(main, ["fit", "--kind", "linear", "--x", str(files / "x.npy"), "--y", str(files / "short.npy"),
                             "--out", str(files / "p.pt")])
    assert r.exit_code == 1 and "same number of rows" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(main, ["fit", "--kind", "linear", "--epochs", "3", "--x", str(files / "x.npy"),
                             "--y", str(files / "y.npy"), "--out", str(files / "p.pt")])
    assert r.exit_code == 2 and "trained kinds only" in r.stderr
    r = runner.invoke(main, ["fit", "--kind", "lin", "--x", str(files / "x.npy"), "--y", str(files / "y.npy"),
                             "--out", str(files / "p.pt")])
    assert r.exit_code == 1 and "did you mean 'linear'" in r.stderr
    runner.invoke(main, ["fit", "--kind", "linear", "--x", str(files / "x.npy"), "--y", str(files / "y.npy"),
                         "--out", str(files / "p.pt")])
    r = runner.invoke(main, ["retrieve", "--projector", str(files / "p.pt"), "--x", str(files / "yg.npy"),
                             "--y", str(files / "yg.npy")])
    assert r.exit_code == 1 and "this 'linear' projector was fitted on 10" in r.stderr
    (files / "bad.pt").write_bytes(b"\x00" * 50)
    r = runner.invoke(main, ["retrieve", "--projector", str(files / "bad.pt"), "--x", str(files / "xq.npy"),
                             "--y", str(files / "yg.npy")])
    assert r.exit_code == 1 and "truncated or corrupt" in r.stderr


def test_fit_with_groups_keeps_groups_together(files):
    rng = np.random.default_rng(1)
    X = np.repeat(rng.standard_normal((60, 6)), 3, axis=0).astype(np.float32)
    Y = (X @ rng.standard_normal((6, 5)) + 0.05 * rng.standard_normal((180, 5))).astype(np.float32)
    np.save(files / "gx.npy", X)
    np.save(files / "gy.npy", Y)
    np.save(files / "g.npy", np.repeat(np.arange(60), 3))
    r = CliRunner().invoke(main, ["fit", "--kind", "procrustes", "--x", str(files / "gx.npy"), "--y",
                                  str(files / "gy.npy"), "--groups", str(files / "g.npy"), "--val-fraction", "0.2",
                                  "--out", str(files / "g.pt")])
    assert r.exit_code == 0, r.output
    (summary,) = _lines(r.stdout)
    assert summary["n_val"] == 36  # 12 whole groups of 3
    # several positives per query: mAP is defined and every query has its 3 captions as positives
    assert 0 < summary["val"]["query_to_gallery"]["mAP"] <= 1
    np.save(files / "bad_g.npy", np.zeros(5, dtype=np.int64))
    r = CliRunner().invoke(main, ["fit", "--kind", "linear", "--x", str(files / "gx.npy"), "--y",
                                  str(files / "gy.npy"), "--groups", str(files / "bad_g.npy"), "--out",
                                  str(files / "g.pt")])
    assert r.exit_code == 1 and "--groups must hold one int id per row" in r.stderr


def test_fit_defaults_to_the_closed_form_linear_map_on_every_pair(files):
    """`unialign fit` with no kind fits the closed-form linear map (no training) on every pair: no silent split."""
    out = files / "default.pt"
    r = CliRunner().invoke(main, ["fit", "--x", str(files / "x.npy"), "--y", str(files / "y.npy"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    (summary,) = _lines(r.stdout)
    n = np.load(files / "x.npy").shape[0]
    assert summary["kind"] == "linear" and summary["n_train"] == n and "val" not in summary
    assert summary["val_fraction"] == 0.0 and summary["fit_report"]["trains"] is False
    assert "fit: linear on" in r.stderr


def _rotated_copy(tmp_path, n_x=60, n_y=50, seed=0):
    """X and a noisy rotated copy Y of a subset of it, Y's rows shuffled: unpaired files with a planted map."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_x, 20)) * (1.0 / np.arange(1, 21) ** 0.7)
    Q = np.linalg.qr(rng.normal(size=(20, 20)))[0]
    keep = rng.permutation(n_x)[:n_y]
    Y = X[keep] @ Q + 0.02 * rng.normal(size=(n_y, 20))
    np.save(tmp_path / "ux.npy", X.astype(np.float32))
    np.save(tmp_path / "uy.npy", Y.astype(np.float32))
    return X, Y, keep


def test_fit_unpaired_recovers_a_planted_map_and_saves_a_usable_projector(tmp_path):
    X, Y, keep = _rotated_copy(tmp_path)  # 60 vs 50 rows: not pairs, not even the same count
    out = tmp_path / "blind.pt"
    r = CliRunner().invoke(main, ["fit", "--unpaired", "--x", str(tmp_path / "ux.npy"), "--y",
                                  str(tmp_path / "uy.npy"), "-p", "n_candidates=2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (summary,) = _lines(r.stdout)
    assert summary["kind"] == "blind" and summary["unpaired"] and (summary["n_x"], summary["n_y"]) == (60, 50)
    assert summary["confidence"]["confident"] is True and summary["provenance"]["unpaired"] is True
    from projectors import load_projector

    Z = np.asarray(load_projector(out).transform(X[keep]))
    Zc, Yc = Z - Y.mean(0), Y - Y.mean(0)
    sims = (Zc / np.linalg.norm(Zc, axis=1, keepdims=True)) @ (Yc / np.linalg.norm(Yc, axis=1, keepdims=True)).T
    assert np.mean(sims.argmax(1) == np.arange(len(keep))) >= 0.9


def test_fit_unpaired_reports_unrelated_spaces_as_not_confident(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "ux.npy", rng.normal(size=(60, 20)).astype(np.float32))
    np.save(tmp_path / "uy.npy", rng.normal(size=(60, 12)).astype(np.float32))
    r = CliRunner().invoke(main, ["fit", "--unpaired", "--x", str(tmp_path / "ux.npy"), "--y",
                                  str(tmp_path / "uy.npy"), "-p", "n_candidates=2", "--out", str(tmp_path / "b.pt")])
    assert r.exit_code == 0, r.output
    (summary,) = _lines(r.stdout)
    assert summary["confidence"]["confident"] is False
    assert "NOT confident" in r.stderr


@pytest.mark.parametrize("extra,needle", [(["--kind", "mlp"], "--unpaired fits --kind blind"),
                                          (["--val-fraction", "0.2"], "drop --val-fraction"),
                                          (["--epochs", "3"], "--epochs applies to trained kinds only")])
def test_fit_unpaired_refuses_what_needs_pairs_in_one_line(tmp_path, extra, needle):
    _rotated_copy(tmp_path)
    r = CliRunner().invoke(main, ["fit", "--unpaired", "--x", str(tmp_path / "ux.npy"), "--y",
                                  str(tmp_path / "uy.npy"), "--out", str(tmp_path / "b.pt"), *extra])
    assert r.exit_code != 0 and needle in r.output, r.output
    assert not (tmp_path / "b.pt").exists()
