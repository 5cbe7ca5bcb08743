"""`unialign match`: evaluation JSON on paired files, the matching itself with --seeds, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from align.cli import main

from ._helpers import hide


@pytest.fixture
def files(tmp_path, paired_features):
    X, Y = paired_features
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", Y.astype(np.float32))
    Ys, seeds, perm = hide(X, Y, 10, np.random.default_rng(0))
    np.save(tmp_path / "ys.npy", Ys.astype(np.float32))
    (tmp_path / "pairs.csv").write_text("i,j\n" + "\n".join(f"{i},{j}" for i, j in seeds) + "\n")
    return tmp_path, perm


def test_match_evaluates_paired_files(files):
    d, _ = files
    r = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "y.npy"), "--method", "faq", "--n-seeds", "10",
                                  "--n-query", "30", "--splits", "2", "--n-init", "3", "--seed", "1"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["method"] == "faq" and out["n_splits"] == 2 and len(out["accuracies"]) == 2
    assert out["accuracy"] >= 0.9


def test_match_with_seeds_prints_the_matching(files):
    d, perm = files
    r = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "ys.npy"), "--method", "local_cka",
                                  "--known-pairs", str(d / "pairs.csv")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_known"] == 10 and len(out["col_ind"]) == 60
    assert np.mean(np.asarray(out["col_ind"]) == perm) >= 0.95


def test_match_passes_method_params(files):
    d, _ = files
    r = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "ys.npy"), "--known-pairs", str(d / "pairs.csv"),
                                  "-p", "transport=true", "-p", "n_init=2"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n_restarts"] == 2


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--method", "faqq"], "unknown method 'faqq'"),
        (["-p", "bogus=1"], "unknown parameter(s) 'bogus'"),
        (["--n-known", "50", "--n-query", "50"], "`n_known` + `n_query` must be <="),
    ],
)
def test_match_errors_are_one_line(files, extra, msg):
    d, _ = files
    r = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "y.npy"), *extra])
    assert r.exit_code == 1
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_match_rejects_bad_seed_files(files):
    d, _ = files
    (d / "bad.csv").write_text("0,1\n2,x\n")
    r = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "ys.npy"), "--seeds", str(d / "bad.csv")])
    assert r.exit_code == 1 and "line 2" in r.stderr
    (d / "dup.csv").write_text("0,1\n0,2\n")
    r = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "ys.npy"), "--seeds", str(d / "dup.csv")])
    assert r.exit_code == 1 and "duplicates" in r.stderr


def test_old_option_spellings_still_work_with_a_warning(files):
    d, perm = files
    old = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "ys.npy"), "--method", "local_cka",
                                    "--seeds", str(d / "pairs.csv")])
    new = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "ys.npy"), "--method", "local_cka",
                                    "--known-pairs", str(d / "pairs.csv")])
    assert old.exit_code == 0 and "warning: --seeds is deprecated" in old.stderr and "use --known-pairs" in old.stderr
    assert json.loads(old.stdout)["col_ind"] == json.loads(new.stdout)["col_ind"]
    r = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "x.npy"), "--method", "procrustes",
                                  "--n-seeds", "5", "--n-query", "20", "--splits", "1"])
    assert r.exit_code == 0 and "--n-seeds is deprecated" in r.stderr
    r = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "x.npy"), "--n-seeds", "5", "--n-known", "6"])
    assert r.exit_code == 2 and "give only --n-known" in r.stderr


def test_n_items_counts_known_pairs_and_hidden_items(files):
    d, _ = files
    a = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "x.npy"), "--method", "procrustes",
                                  "--n-known", "10", "--n-items", "40", "--splits", "1"])
    b = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "x.npy"), "--method", "procrustes",
                                  "--n-known", "10", "--n-query", "30", "--splits", "1"])
    assert a.exit_code == 0 and json.loads(a.stdout)["accuracies"] == json.loads(b.stdout)["accuracies"]
    r = CliRunner().invoke(main, ["match", str(d / "x.npy"), str(d / "x.npy"), "--n-items", "40", "--n-query", "3"])
    assert r.exit_code == 2


def test_match_list_says_what_each_method_needs():
    r = CliRunner().invoke(main, ["match", "--list"])
    assert r.exit_code == 0, r.output
    table = {m["name"]: m for m in json.loads(r.stdout)}
    assert table["procrustes"]["min_known_pairs"] == 2 and "faq" in table
