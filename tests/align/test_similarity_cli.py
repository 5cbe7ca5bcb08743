"""`unialign similarity`: JSON on stdout, the null on request, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from align import similarity as sim
from align.cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    Y = (X @ rng.normal(size=(5, 4)) + 0.5 * rng.normal(size=(60, 4))).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    np.savez(tmp_path / "y.npz", feats=Y)
    return tmp_path, X, Y


def _run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_prints_value_settings_and_null(files):
    d, X, Y = files
    r = _run("similarity", str(d / "x.npy"), str(d / "y.npy"), "--metric", "rbf_cka", "--null", "9", "--seed", "3")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["metric"] == "rbf_cka" and out["n"] == 60
    assert out["value"] == pytest.approx(sim.rbf_cka(X, Y), abs=1e-12)
    assert out["settings"]["bandwidth"] == "median" and out["settings"]["sigma_x"] > 0
    assert set(out["null"]) >= {"mean", "std", "p_value"}
    assert out["null"]["p_value"] == pytest.approx(0.1)
    no_null = json.loads(_run("similarity", str(d / "x.npy"), f"{d / 'y.npz'}:feats").stdout)
    assert "null" not in no_null and no_null["value"] == pytest.approx(sim.linear_cka(X, Y), abs=1e-12)


def test_metric_parameters(files):
    d, X, Y = files
    out = json.loads(_run("similarity", str(d / "x.npy"), str(d / "y.npy"), "-m", "mutual_knn", "--k", "4").stdout)
    assert out["settings"]["k"] == 4 and out["value"] == pytest.approx(sim.mutual_knn(X, Y, k=4))
    out = json.loads(_run("similarity", str(d / "x.npy"), str(d / "y.npy"), "-m", "rbf_cka", "--sigma", "2",
                          "-p", "median_scale=0.5").stdout)
    assert out["settings"]["sigma_x"] == 2.0
    out = json.loads(_run("similarity", str(d / "x.npy"), str(d / "y.npy"), "-m", "svcca", "-p", "variance=0.9")
                     .stdout)
    assert out["settings"]["variance"] == 0.9
    table = json.loads(_run("similarity", "--list").stdout)
    assert table["linear_cka"]["invariances"] == ["rotation", "isotropic_scale", "translation"]


@pytest.mark.parametrize("args, message", [
    (["-m", "linear_ckaa"], "unknown metric 'linear_ckaa'"),
    (["-p", "sigmaa=1"], "unknown parameter"),
    (["-m", "mutual_knn", "--k", "500"], "`k` must be < n_samples = "),
])
def test_errors_are_one_line(files, args, message):
    d, _, _ = files
    r = CliRunner().invoke(main, ["similarity", str(d / "x.npy"), str(d / "y.npy"), *args])
    assert r.exit_code == 1
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_mismatched_rows_and_missing_file(files):
    d, X, _ = files
    np.save(d / "short.npy", X[:10])
    r = CliRunner().invoke(main, ["similarity", str(d / "x.npy"), str(d / "short.npy")])
    assert r.exit_code == 1 and "same number of rows" in r.stderr
    r = CliRunner().invoke(main, ["similarity", str(d / "x.npy"), str(d / "nope.npy")])
    assert r.exit_code == 1 and "does not exist" in r.stderr
