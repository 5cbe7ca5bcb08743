"""Under-determined Procrustes: one canonical map, whatever the thread count, backend or call (issue 14)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import matching
from align._procrustes import procrustes_map

from ._helpers import hide

torch = pytest.importorskip("torch")


def _problem(seed: int = 0, n: int = 80, d: int = 32, k: int = 10):
    """k known pairs of a d-dimensional rotation with noise: the cross-covariance has rank k < d."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    Y = X @ Q + 0.3 * rng.normal(size=(n, d))
    Ys, seeds, perm = hide(X, Y, k, rng)
    return X, Ys, seeds, perm


def _col_ind(X, Y, seeds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return matching.match(X, Y, "procrustes", seeds).col_ind


def test_same_col_ind_for_one_and_two_threads_in_20_repeats():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    X, Y, seeds, _ = _problem()
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with threadpoolctl.threadpool_limits(limits=threads):
                runs += [_col_ind(X, Y, seeds) for _ in range(20)]
    finally:
        torch.set_num_threads(before)
    for c in runs[1:]:
        np.testing.assert_array_equal(c, runs[0])


def test_numpy_and_torch_inputs_give_the_same_matching():
    X, Y, seeds, _ = _problem(1)
    a = _col_ind(X, Y, seeds)
    b = _col_ind(torch.from_numpy(X), torch.from_numpy(Y), seeds)
    c = _col_ind(torch.from_numpy(X).float(), torch.from_numpy(Y).float(), seeds)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_under_determined_warns_once_in_one_line():
    X, Y, seeds, _ = _problem(2)
    with pytest.warns(UserWarning, match=r"rank 10 < 32 .* not unique") as rec:
        matching.match(X, Y, "procrustes", seeds)
    msgs = [str(w.message) for w in rec if issubclass(w.category, UserWarning)]
    assert len(msgs) == 1 and "\n" not in msgs[0]


def test_determined_case_is_silent_and_is_the_svd_answer():
    rng = np.random.default_rng(3)
    M = torch.from_numpy(rng.normal(size=(6, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        W, r = procrustes_map(M)
    U, _, Vh = torch.linalg.svd(M, full_matrices=False)
    assert r == 4
    torch.testing.assert_close(W, U @ Vh)


@pytest.mark.parametrize("complete", ["zero", "identity"])
def test_canonical_map_does_not_depend_on_the_null_space_basis(complete):
    """Rotating the data inside the null space of M changes what a bare SVD returns, not the canonical map."""
    rng = np.random.default_rng(4)
    d, k = 7, 3
    Xs, Ys = rng.normal(size=(k, d)), rng.normal(size=(k, d))
    M = torch.from_numpy(Xs.T @ Ys)
    with pytest.warns(UserWarning, match="not unique"):
        W, r = procrustes_map(M, complete=complete)
    assert r == k
    # M is unchanged by any rotation of the complements; the canonical W must be a maximiser of tr(W^T M) ...
    U, S, Vh = torch.linalg.svd(M)
    torch.testing.assert_close(torch.trace(W.T @ M), S.sum())
    # ... and equal to the formula built from other complement bases
    Ur, Vr = U[:, :k], Vh[:k].T
    Q1 = torch.from_numpy(np.linalg.qr(rng.normal(size=(d - k, d - k)))[0])
    Q2 = torch.from_numpy(np.linalg.qr(rng.normal(size=(d - k, d - k)))[0])
    Up, Vp = U[:, k:] @ Q1, Vh[k:].T @ Q2
    ref = Ur @ Vr.T
    if complete == "identity":
        a, _, bt = torch.linalg.svd(Up.T @ Vp)
        ref = ref + Up @ (a @ bt) @ Vp.T
        torch.testing.assert_close(W.T @ W, torch.eye(d, dtype=W.dtype))  # orthogonal
    else:
        torch.testing.assert_close(torch.linalg.matrix_rank(W), torch.tensor(k))
    torch.testing.assert_close(W, ref)


def test_identity_completion_is_nearest_the_identity():
    """Among orthogonal maximisers (random completions R), the canonical one is the closest to I."""
    rng = np.random.default_rng(5)
    d, k = 6, 2
    M = torch.from_numpy(rng.normal(size=(d, k)) @ rng.normal(size=(k, d)))
    with pytest.warns(UserWarning):
        W, _ = procrustes_map(M, complete="identity")
    U, _, Vh = torch.linalg.svd(M)
    I = torch.eye(d, dtype=M.dtype)
    for _ in range(20):
        R = torch.from_numpy(np.linalg.qr(rng.normal(size=(d - k, d - k)))[0])
        other = U[:, :k] @ Vh[:k] + U[:, k:] @ R @ Vh[k:]
        assert torch.linalg.norm(W - I) <= torch.linalg.norm(other - I) + 1e-12


def test_procrustes_projector_uses_the_canonical_rotation():
    import projectors

    rng = np.random.default_rng(6)
    X = rng.normal(size=(5, 12))
    Y = X @ np.linalg.qr(rng.normal(size=(12, 12)))[0]
    outs = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with pytest.warns(UserWarning, match="not unique"):
                outs.append(projectors.make_projector("procrustes").fit(X, Y).transform(X))
        finally:
            torch.set_num_threads(before)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-10)
    np.testing.assert_allclose(outs[0], Y, atol=1e-8)  # the known pairs are still carried exactly


@pytest.mark.parametrize("complete", ["zero", "identity"])
def test_a_divide_and_conquer_failure_falls_back_to_gesvd(complete, monkeypatch):
    """torch's gesdd fails to converge on some matrices with many repeated singular values (seen at 1 thread on a
    898 x 898 complement in the full demo); the map is then computed by LAPACK's gesvd, with the same result."""
    rng = np.random.default_rng(1)
    M = torch.from_numpy(rng.normal(size=(12, 7)) @ rng.normal(size=(7, 9)))  # rank 7 < 9: the complement is used
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        W, r = procrustes_map(M, complete=complete)
        real = torch.linalg.svd

        def failing(A, *args, **kwargs):
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")

        monkeypatch.setattr(torch.linalg, "svd", failing)
        W2, r2 = procrustes_map(M, complete=complete)
    monkeypatch.setattr(torch.linalg, "svd", real)
    assert r2 == r == 7 and W2.dtype == M.dtype
    np.testing.assert_allclose(W2.numpy(), W.numpy(), atol=1e-10)
