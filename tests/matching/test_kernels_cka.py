"""Kernels and local CKA: invariances, the vectorised scores equal the loop over pairs."""
from __future__ import annotations

import numpy as np
import pytest

import matching

from ._helpers import hide


@pytest.mark.parametrize("kernel", matching.KERNELS)
def test_kernels_are_symmetric_square(kernel, rng):
    X = rng.normal(size=(13, 4))
    K = matching.kernel_matrix(X, kernel).numpy()
    assert K.shape == (13, 13)
    np.testing.assert_array_equal(K, K.T)


def test_kernel_known_values(rng):
    X = rng.normal(size=(11, 3))
    np.testing.assert_allclose(matching.kernel_matrix(X, "linear").numpy(), X @ X.T, rtol=1e-12)
    C = matching.kernel_matrix(X, "cosine").numpy()
    np.testing.assert_allclose(np.diag(C), 1.0, rtol=1e-12)
    R = matching.kernel_matrix(X, "rbf").numpy()
    np.testing.assert_allclose(np.diag(R), 1.0)
    D2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    sigma2 = np.median(D2[~np.eye(11, dtype=bool)])
    np.testing.assert_allclose(R, np.exp(-D2 / (2 * sigma2)), rtol=1e-10, atol=1e-12)
    Kc = matching.kernel_matrix(X, "centered_rbf").numpy()
    np.testing.assert_allclose(Kc.sum(axis=0), 0.0, atol=1e-12)
    assert np.linalg.norm(Kc) == pytest.approx(1.0)


@pytest.mark.parametrize("kernel", ["cosine", "rbf", "centered_rbf"])
def test_kernels_invariant_to_rotation_translation_and_scale(kernel, rng):
    X = rng.normal(size=(12, 5))
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    Z = 3.0 * X @ Q + 7.0
    np.testing.assert_allclose(matching.kernel_matrix(Z, kernel).numpy(), matching.kernel_matrix(X, kernel).numpy(),
                               atol=1e-10)


def test_unknown_kernel_lists_the_valid_ones(rng):
    with pytest.raises(ValueError, match="unknown kernel 'cosin'.*did you mean 'cosine'"):
        matching.kernel_matrix(rng.normal(size=(4, 2)), "cosin")


def _loop_reference(K, L, bx, by, qx, qy):
    """CKA(K[S_x + i], L[S_y + j]) for every pair by the textbook formula, one pair at a time."""
    S = np.empty((len(qx), len(qy)))
    for a, i in enumerate(qx):
        ix = np.append(bx, i)
        H = np.eye(len(ix)) - 1.0 / len(ix)
        Kc = H @ K[np.ix_(ix, ix)] @ H
        for b, j in enumerate(qy):
            iy = np.append(by, j)
            Lc = H @ L[np.ix_(iy, iy)] @ H
            S[a, b] = (Kc * Lc).sum() / np.sqrt((Kc * Kc).sum() * (Lc * Lc).sum())
    return S


@pytest.mark.parametrize("kernel", matching.KERNELS)
def test_vectorised_local_cka_equals_the_double_loop(kernel, rng):
    X = rng.normal(size=(37, 5))
    Y = X @ rng.normal(size=(5, 6)) + 0.5 * rng.normal(size=(37, 6))
    Y = Y[:33]
    K, L = matching.kernel_matrix(X, kernel).numpy(), matching.kernel_matrix(Y, kernel).numpy()
    bx, by = np.array([4, 0, 9, 2, 7, 11, 3]), np.array([5, 1, 9, 2, 8, 12, 3])
    qx = np.setdiff1d(np.arange(37), bx)  # 30 queries on one side, 26 on the other
    qy = rng.permutation(np.setdiff1d(np.arange(33), by))
    fast = matching.local_cka_scores(K, L, np.stack([bx, by], axis=1), qx, qy)
    assert isinstance(fast, np.ndarray) and fast.shape == (30, 26)
    np.testing.assert_allclose(fast, _loop_reference(K, L, bx, by, qx, qy), rtol=1e-10, atol=1e-12)
    assert np.all(np.abs(fast) <= 1 + 1e-12)


def test_local_cka_scores_default_queries_and_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    X = rng.normal(size=(20, 4))
    K = matching.kernel_matrix(X, "linear")  # a tensor
    pm = np.array([[0, 3], [5, 1], [7, 7]])
    S = matching.local_cka_scores(K, K, pm)
    assert isinstance(S, torch.Tensor) and S.shape == (17, 17)
    qx, qy = np.setdiff1d(np.arange(20), pm[:, 0]), np.setdiff1d(np.arange(20), pm[:, 1])
    Kn = K.numpy()
    np.testing.assert_allclose(S.numpy(), _loop_reference(Kn, Kn, pm[:, 0], pm[:, 1], qx, qy), rtol=1e-10,
                               atol=1e-12)


def test_local_cka_scores_rejects_bad_input(rng):
    K = matching.kernel_matrix(rng.normal(size=(10, 3)), "linear").numpy()
    pm = np.array([[0, 0], [1, 1]])
    with pytest.raises(ValueError, match="`K` must be a square kernel matrix.*kernel_matrix"):
        matching.local_cka_scores(K[:, :6], K, pm)
    with pytest.raises(ValueError, match="at least 2 known pairs"):
        matching.local_cka_scores(K, K, pm[:1])
    with pytest.raises(ValueError, match="`query_x` must index items 0..9"):
        matching.local_cka_scores(K, K, pm, query_x=[2, 10])
    with pytest.raises(ValueError, match="`query_y` must be a 1-D integer array"):
        matching.local_cka_scores(K, K, pm, query_y=[0.5, 2.0])


def test_local_cka_recovers_a_planted_linear_map(paired_features):
    X, Y = paired_features
    Ys, seeds, perm = hide(X, Y, 15, np.random.default_rng(2))
    res = matching.match(X, Ys, "local_cka", seeds)
    assert np.mean(res.col_ind == perm) >= 0.95
    np.testing.assert_array_equal(res.col_ind[seeds[:, 0]], seeds[:, 1])
    assert res.similarity.shape == (60, 60)


def test_local_cka_needs_seeds(paired_features):
    X, Y = paired_features
    with pytest.raises(ValueError, match="'local_cka' needs at least 2 known pairs"):
        matching.match(X, Y, "local_cka", [[0, 0]])
