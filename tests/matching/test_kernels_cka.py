"""Kernels and local CKA: invariances, the vectorised scores equal the loop over pairs."""
from __future__ import annotations

import numpy as np
import pytest

import matching
from matching._cka import local_cka_scores, local_cka_scores_naive

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


@pytest.mark.parametrize("kernel", matching.KERNELS)
def test_vectorised_local_cka_equals_the_double_loop(kernel, rng):
    torch = pytest.importorskip("torch")
    X = rng.normal(size=(37, 5))
    Y = X @ rng.normal(size=(5, 6)) + 0.5 * rng.normal(size=(37, 6))
    Y = Y[:33]
    K, L = matching.kernel_matrix(X, kernel), matching.kernel_matrix(Y, kernel)
    bx, by = np.array([4, 0, 9, 2, 7, 11, 3]), np.array([4, 0, 9, 2, 7, 11, 3])
    qx = np.setdiff1d(np.arange(37), bx)  # 30 queries on one side, 26 on the other
    qy = rng.permutation(np.setdiff1d(np.arange(33), by))
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    fast = local_cka_scores(K, L, t(bx), t(by), t(qx), t(qy)).numpy()
    slow = local_cka_scores_naive(K.numpy(), L.numpy(), bx, by, qx, qy)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)
    assert np.all(np.abs(fast) <= 1 + 1e-12)


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
