"""Retrieval metrics and matching accuracy: known answers, a naive reference, invariances, errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from align.evaluation import matching_accuracy, retrieval_metrics


def _naive(Q, G, positives):
    """Reference: full argsort per query, pessimistic ties by construction on distinct scores."""
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
    S = Qn @ Gn.T
    first, aps = [], []
    for i, pos in enumerate(positives):
        order = np.argsort(-S[i], kind="stable")
        rank_of = np.empty(len(order), dtype=int)
        rank_of[order] = np.arange(1, len(order) + 1)
        r = np.sort(rank_of[pos])
        first.append(r[0])
        aps.append(np.mean(np.arange(1, len(r) + 1) / r))
    return np.array(first), np.array(aps)


def test_identity_is_perfect(rng):
    X = rng.standard_normal((40, 8))
    res = retrieval_metrics(X, X, ks=(1, 5))
    for d in (res.query_to_gallery, res.gallery_to_query):
        assert d.recall == {1: 1.0, 5: 1.0}
        assert d.median_rank == 1.0
        assert d.mean_average_precision == pytest.approx(1.0)


def test_known_answer_small():
    Q = np.eye(3)
    G = np.array([[0.5, 0.9, 0.0], [0.0, 0.3, 1.0], [0.0, 0.0, 1.0]])
    # q0 ranks its partner G0 first; q1 ranks G1 second (behind G0); q2 ranks G2 first (1.0 > 0.958).
    res = retrieval_metrics(Q, G, ks=(1, 2))
    assert res.query_to_gallery.recall == {1: pytest.approx(2 / 3), 2: 1.0}
    assert res.query_to_gallery.mean_rank == pytest.approx(4 / 3)
    assert res.query_to_gallery.mean_average_precision == pytest.approx((1 + 0.5 + 1) / 3)
    # reverse: G0 prefers q1 (0.87 > 0.49), G1 prefers q2, G2 finds q2.
    assert res.gallery_to_query.recall == {1: pytest.approx(1 / 3), 2: 1.0}


def test_gallery_row_without_positive_is_an_error():
    Q = np.eye(2)
    G = np.eye(2)
    with pytest.raises(ValueError, match="no query's positive"):
        retrieval_metrics(Q, G, positives=np.array([0, 0]))


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_matches_naive_reference_with_several_positives(rng, chunk_size):
    n_g, n_q, d = 53, 31, 6
    G = rng.standard_normal((n_g, d))
    positives = [rng.choice(n_g, size=rng.integers(1, 4), replace=False) for _ in range(n_q)]
    # make sure every gallery row is someone's positive (for the reverse direction)
    covered = set(np.concatenate(positives).tolist())
    for j in range(n_g):
        if j not in covered:
            positives[j % n_q] = np.append(positives[j % n_q], j)
    Q = np.stack([G[p].mean(0) for p in positives]) + 0.8 * rng.standard_normal((n_q, d))
    res = retrieval_metrics(Q, G, positives=positives, ks=(1, 3, 10), chunk_size=chunk_size)
    first, aps = _naive(Q, G, positives)
    q2g = res.query_to_gallery
    assert q2g.recall == {k: pytest.approx(np.mean(first <= k)) for k in (1, 3, 10)}
    assert q2g.median_rank == pytest.approx(np.median(first))
    assert q2g.mean_average_precision == pytest.approx(aps.mean())
    # reverse direction: the inverted relation
    inv = [np.array([i for i, p in enumerate(positives) if j in p]) for j in range(n_g)]
    first_r, aps_r = _naive(G, Q, inv)
    assert res.gallery_to_query.mean_rank == pytest.approx(first_r.mean())
    assert res.gallery_to_query.mean_average_precision == pytest.approx(aps_r.mean())


def test_recall_never_decreases_in_k(rng):
    Q = rng.standard_normal((60, 5))
    G = Q + 1.5 * rng.standard_normal((60, 5))
    rec = retrieval_metrics(Q, G, ks=range(1, 61)).query_to_gallery.recall
    values = [rec[k] for k in range(1, 61)]
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert values[-1] == 1.0


def test_rotation_and_scale_invariance(rng):
    Q = rng.standard_normal((50, 7))
    G = Q + rng.standard_normal((50, 7))
    R, _ = np.linalg.qr(rng.standard_normal((7, 7)))
    a = retrieval_metrics(Q, G).to_dict()
    b = retrieval_metrics(3.0 * Q @ R, 0.5 * G @ R).to_dict()
    for direction in a:
        assert a[direction] == pytest.approx(b[direction])


def test_ties_count_against_the_positive():
    Q = np.ones((5, 3))
    res = retrieval_metrics(Q, Q, ks=(1, 5))
    assert res.query_to_gallery.recall == {1: 0.0, 5: 1.0}
    assert res.query_to_gallery.median_rank == 5.0


def test_torch_input_and_dict(rng):
    X = rng.standard_normal((20, 4))
    a = retrieval_metrics(X, X + 0.1 * rng.standard_normal(X.shape))
    b = retrieval_metrics(torch.from_numpy(X), torch.from_numpy(X + 0.0))
    assert b.query_to_gallery.recall[1] == 1.0
    d = a.to_dict()
    assert set(d) == {"query_to_gallery", "gallery_to_query"}
    assert {"R@1", "R@5", "R@10", "median_rank", "mAP"} <= set(d["query_to_gallery"])
    assert a.recall_at(1) == pytest.approx(0.5 * (d["query_to_gallery"]["R@1"] + d["gallery_to_query"]["R@1"]))


def test_errors(rng):
    X = rng.standard_normal((10, 4))
    with pytest.raises(ValueError, match="same number of columns"):
        retrieval_metrics(X, rng.standard_normal((10, 5)))
    with pytest.raises(ValueError, match="same number of rows when `positives` is None"):
        retrieval_metrics(X, X[:8])
    with pytest.raises(ValueError, match="must index gallery rows"):
        retrieval_metrics(X, X, positives=[[i] for i in range(9)] + [[10]])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((3, 2), np.nan), np.ones((3, 2)))
    with pytest.raises(ValueError, match="`ks` must be >= 1"):
        retrieval_metrics(X, X, ks=(0,))


def test_matching_accuracy():
    assert matching_accuracy(np.array([0, 2, 1, 3]), np.array([0, 1, 2, 3])) == 0.5
    # unknown true partners (-1) are left out
    assert matching_accuracy(np.array([0, 5, 1]), np.array([0, -1, 2])) == 0.5
    assert matching_accuracy(torch.tensor([1, 0]), torch.tensor([1, 0])) == 1.0
    with pytest.raises(ValueError, match="same length"):
        matching_accuracy(np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="integer"):
        matching_accuracy(np.array([0.0, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="no known partner"):
        matching_accuracy(np.array([0, 1]), np.array([-1, -1]))


def test_cutoffs_beyond_the_items_are_refused_and_the_default_adapts(rng):
    Q, G = rng.standard_normal((8, 4)), rng.standard_normal((6, 4))
    positives = np.arange(8) % 6
    with pytest.raises(ValueError, match=r"Recall@7 .* gallery `G` has 6.*cut-offs up to 6"):
        retrieval_metrics(Q, G, positives, ks=(1, 7))
    with pytest.raises(ValueError, match=r"Recall@7 .*query set `Q` .* has 6"):
        retrieval_metrics(G, Q, [np.array([i, i + 6]) if i < 2 else np.array([i]) for i in range(6)], ks=(7,))
    res = retrieval_metrics(Q, G, positives)  # default (1, 5, 10) keeps the cut-offs that fit: 1 and 5
    assert sorted(res.query_to_gallery.recall) == [1, 5]
