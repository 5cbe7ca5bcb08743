"""Blind matching (no known pairs): planted problems are recovered, unrelated spaces are flagged, runs repeat."""
from __future__ import annotations

import numpy as np
import pytest

from matching import BlindResult, MatchResult, blind, list_methods, match


def _planted(n=80, d=24, noise=0.05, seed=0):
    """X with a decaying spectrum; Y = rows of X rotated into 30 dims plus noise, in a secret order."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * (1.0 / np.arange(1, d + 1) ** 0.7)
    Q = np.linalg.qr(rng.normal(size=(30, d)))[0].T  # (d, 30), orthonormal rows
    perm = rng.permutation(n)
    Y = (X @ Q + noise * rng.normal(size=(n, 30)))[perm]
    truth = np.argsort(perm)  # row i of X is row truth[i] of Y
    return X, Y, truth


def _correlated_graphs(n=50, rho=0.9, seed=0):
    """Two edge-correlated graphs (correlation ``rho``) from one block model with heterogeneous degrees, the second
    one's nodes shuffled; features = adjacency rows. Returns A, B, truth (node i of A is node truth[i] of B)."""
    rng = np.random.default_rng(seed)
    w = rng.pareto(2.5, n) + 1
    w /= w.mean()
    z = rng.integers(0, 3, n)
    blocks = np.array([[0.5, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.45]])
    P = np.clip(np.outer(w, w) * blocks[z][:, z], 0, 1)
    upper = lambda M: np.triu(M, 1) | np.triu(M, 1).T  # noqa: E731
    A = upper(rng.random((n, n)) < P)
    keep = upper(rng.random((n, n)) < rho + (1 - rho) * P)  # an edge of A stays with this probability
    new = upper(rng.random((n, n)) < (1 - rho) * P)  # a non-edge of A becomes one with this probability
    B = np.where(A, keep, new).astype(float)
    perm = rng.permutation(n)
    return A.astype(float), B[np.ix_(perm, perm)], np.argsort(perm)


def test_rotated_copy_with_noise_is_recovered_blind():
    X, Y, truth = _planted()
    res = match(X, Y, method="blind", rng=0, n_candidates=2)
    assert isinstance(res, BlindResult) and isinstance(res, MatchResult)
    assert np.mean(res.col_ind == truth) >= 0.95
    assert res.confident and res.confidence["holdout_agreement"] > 0.8


def test_correlated_graphs_are_recovered_blind():
    A, B, truth = _correlated_graphs()
    res = blind(A, B, rng=0, n_candidates=2)
    assert np.mean(res.col_ind == truth) >= 0.9
    assert res.confident


def test_unrelated_spaces_are_not_confident():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(80, 24)) * (1.0 / np.arange(1, 25) ** 0.7)
    Y = rng.normal(size=(80, 30)) * (1.0 / np.arange(1, 31) ** 0.7)
    res = blind(X, Y, rng=0, n_candidates=4)
    assert not res.confident
    assert res.confidence["holdout_agreement"] < 0.5


def test_fixed_rng_is_deterministic():
    X, Y, _ = _planted(n=50, noise=0.3, seed=2)
    a, b = blind(X, Y, rng=7, n_candidates=2), blind(X, Y, rng=7, n_candidates=2)
    assert np.array_equal(a.col_ind, b.col_ind)
    assert a.confidence == b.confidence


def test_unequal_sizes_leave_extra_rows_unmatched():
    X, Y, truth = _planted(n=70, noise=0.02)
    keep = np.sort(np.random.default_rng(0).choice(70, 60, replace=False))  # Y keeps 60 of the 70 items
    res = blind(X, Y[keep], rng=0, n_candidates=2)
    assert res.col_ind.shape == (70,) and (res.col_ind == -1).sum() == 10
    inv = {int(j): t for t, j in enumerate(keep)}
    present = [i for i in range(70) if int(truth[i]) in inv]
    acc = np.mean([res.col_ind[i] == inv[int(truth[i])] for i in present])
    assert acc >= 0.8


def test_front_door_and_result():
    assert "blind" in [m.name for m in list_methods()]
    X, Y, _ = _planted(n=30)
    res = match(X, Y, method="blind", rng=0, n_candidates=2)
    d = res.to_dict()
    assert d["method"] == "blind" and set(d["confidence"]) >= {"confident", "stability", "holdout_agreement",
                                                                "alignment", "z", "mutual_nn", "rule"}
    assert res.match.to_dict() == {k: v for k, v in d.items() if k != "confidence"}
    with pytest.raises(ValueError, match="no known pairs"):
        match(X, Y, method="blind", partial_match=[[0, 0], [1, 1]])
    with pytest.raises(ValueError, match="unknown parameter"):
        match(X, Y, method="blind", n_init=3)


def test_evaluate_keeps_the_confidence_of_each_split_and_none_for_seeded_methods():
    from matching import evaluate

    gen = np.random.default_rng(3)
    X = gen.normal(size=(90, 10)) * (1.0 / np.arange(1, 11) ** 0.7)
    Y = X @ np.linalg.qr(gen.normal(size=(10, 10)))[0] + 0.02 * gen.normal(size=X.shape)
    res = evaluate(X, Y, "blind", n_known=0, n_query=40, n_splits=2, rng=0, n_candidates=2)
    assert len(res.confidence_splits) == 2 and all(c["confident"] for c in res.confidence_splits)
    assert res.to_dict()["confidence_splits"][0]["rule"] == res.confidence_splits[0]["rule"]
    assert evaluate(X, Y, "procrustes", n_known=10, n_query=40, n_splits=2, rng=0).confidence_splits is None
