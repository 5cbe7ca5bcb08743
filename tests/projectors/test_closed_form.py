"""Closed-form kinds: planted linear map, exact Procrustes, CCA against scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from projectors import make_projector


@pytest.fixture
def planted(rng):
    n, dx, dy = 500, 12, 9
    X = rng.standard_normal((n, dx))
    W = rng.standard_normal((dx, dy))
    b = rng.standard_normal(dy)
    Y = X @ W + b + 0.01 * rng.standard_normal((n, dy))
    return X, Y, W, b


def test_ridge_recovers_planted_affine_map(planted):
    X, Y, W, b = planted
    p = make_projector("linear", alpha=1e-8).fit(X, Y)
    assert_allclose(p.coef_, W, atol=5e-3)
    assert_allclose(p.intercept_, b, atol=5e-3)
    assert_allclose(p.transform(X), X @ W + b, atol=0.03)
    assert p.transform(X).dtype == np.float64


def test_ridge_matches_sklearn(planted):
    from sklearn.linear_model import Ridge

    X, Y, _, _ = planted
    ours = make_projector("linear", alpha=30.0).fit(X, Y)
    ref = Ridge(alpha=30.0).fit(X, Y)
    assert_allclose(ours.coef_, ref.coef_.T, rtol=1e-8, atol=1e-10)
    assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-8, atol=1e-10)


def test_ridge_on_memmap_in_chunks(planted, tmp_path, monkeypatch):
    import projectors._linear as lin

    X, Y, _, _ = planted
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", Y.astype(np.float32))
    Xm, Ym = np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")
    full = make_projector("linear", alpha=1.0).fit(np.asarray(Xm), np.asarray(Ym))
    monkeypatch.setattr(lin, "CHUNK", 37)  # does not divide 500
    chunked = make_projector("linear", alpha=1.0).fit(Xm, Ym)
    assert_allclose(chunked.coef_, full.coef_, rtol=1e-9, atol=1e-12)


def test_torch_in_torch_out(planted):
    X, Y, _, _ = planted
    Xt = torch.from_numpy(X).float()
    p = make_projector("linear").fit(Xt, torch.from_numpy(Y).float())
    out = p.transform(Xt)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert_allclose(out.numpy(), p.transform(X), rtol=1e-4, atol=1e-4)


def test_procrustes_exact_on_rotated_data(rng):
    X = rng.standard_normal((200, 10))
    R, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    shift = rng.standard_normal(10)
    p = make_projector("procrustes").fit(X, X @ R + shift)
    assert_allclose(p.rotation_, R, atol=1e-10)
    assert_allclose(p.transform(X), X @ R + shift, atol=1e-10)
    # with a scale factor
    q = make_projector("procrustes", scale=True).fit(X, 2.5 * X @ R)
    assert q.scale_ == pytest.approx(2.5, rel=1e-10)
    assert_allclose(q.transform(X), 2.5 * X @ R, atol=1e-9)


def test_procrustes_pads_unequal_dimensions(rng):
    X = rng.standard_normal((150, 6))
    R, _ = np.linalg.qr(rng.standard_normal((9, 9)))
    Y = np.hstack([X, np.zeros((150, 3))]) @ R  # X embedded isometrically in 9 dims
    p = make_projector("procrustes", center=False).fit(X, Y)
    assert p.transform(X).shape == (150, 9)
    assert_allclose(p.transform(X), Y, atol=1e-10)
    # and back down: Y -> X is the transposed isometry
    back = make_projector("procrustes", center=False).fit(Y, X)
    assert_allclose(back.transform(Y), X, atol=1e-10)


def test_procrustes_is_orthogonal_on_noise(rng):
    p = make_projector("procrustes").fit(rng.standard_normal((50, 5)), rng.standard_normal((50, 5)))
    assert_allclose(p.rotation_ @ p.rotation_.T, np.eye(5), atol=1e-12)


def test_cca_correlations_equal_sklearn(rng):
    from sklearn.cross_decomposition import CCA

    n = 400
    Z = rng.standard_normal((n, 3))
    X = Z @ rng.standard_normal((3, 6)) + 0.7 * rng.standard_normal((n, 6))
    Y = Z @ rng.standard_normal((3, 5)) + 0.7 * rng.standard_normal((n, 5))
    ours = make_projector("cca", n_components=3).fit(X, Y)
    ref = CCA(n_components=3, max_iter=5000, tol=1e-12, scale=False).fit(X, Y)
    xs, ys = ref.transform(X, Y)
    ref_corr = [np.corrcoef(xs[:, j], ys[:, j])[0, 1] for j in range(3)]
    assert_allclose(ours.correlations_.numpy(), ref_corr, rtol=1e-6)
    # our variates realise those correlations, are uncorrelated across components and have unit variance
    U, V = ours.transform(X), ours.transform_y(Y)
    C = np.corrcoef(U.T, V.T)
    assert_allclose(np.diag(C[:3, 3:]), ref_corr, rtol=1e-6)
    assert_allclose(np.cov(U.T), np.eye(3), atol=1e-8)
    # the same directions as scikit-learn's, up to sign
    for j in range(3):
        assert abs(np.corrcoef(U[:, j], xs[:, j])[0, 1]) == pytest.approx(1.0, abs=1e-6)


def test_cca_needs_reg_when_singular(rng):
    X = rng.standard_normal((5, 8))
    Y = rng.standard_normal((5, 4))
    with pytest.raises(ValueError, match="set `reg` > 0"):
        make_projector("cca", n_components=2).fit(X, Y)
    p = make_projector("cca", n_components=2, reg=0.1).fit(X, Y)
    assert p.transform(X).shape == (5, 2)
    with pytest.raises(ValueError, match=r"`n_components` must be <= min\(d_x, d_y\) = 4 .*pass n_components=4 or fewer"):
        make_projector("cca", n_components=5).fit(X, Y)
