"""Projector defaults: automatic ridge penalty, trained kinds never below their start, parameter checks at
construction, ``trains``, ``split_pairs``, and what a saved projector remembers of its fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from align._ridge import ridge_cv, ridge_fit
from align._validation import InputTypeError
from align.evaluation import retrieval_metrics
from projectors import load_projector, make_projector, split_pairs
from projectors._pairs import split_by_group
from projectors.trainer import r1_tolerance


def _planted(seed, n=400, dx=30, dy=20, noise=0.05, offset=True):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx))
    W = rng.standard_normal((dx, dy)) / np.sqrt(dx)
    b = rng.standard_normal(dy) if offset else np.zeros(dy)
    return X, X @ W + b + noise * rng.standard_normal((n, dy)), W, b


def test_auto_alpha_recovers_a_planted_map():
    X, Y, W, _ = _planted(0)
    p = make_projector("linear").fit(X, Y)
    assert p.alpha == "auto" and p.alpha_ >= 0
    assert_allclose(p.coef_, W, atol=0.02)
    assert retrieval_metrics(p.transform(X[:200]), Y[:200], ks=(1,)).recall_at(1) == 1.0
    curve = p.alpha_curve_
    assert curve["relative_alphas"][0] == 0.0 and len(curve["mean"]) == len(curve["alphas"])
    assert curve["alpha"] == p.alpha_ and curve["n_folds"] == 5
    assert p.fit_report_["alpha"] == p.alpha_ and p.fit_report_["trains"] is False


def test_auto_alpha_is_larger_for_noisier_data():
    """Same planted maps, little vs much noise: the chosen penalty grows with the noise (R@1 and MSE scoring)."""
    clean, noisy, clean_mse, noisy_mse = [], [], [], []
    for seed in range(6):
        for noise, out, out_mse in ((0.02, clean, clean_mse), (2.0, noisy, noisy_mse)):
            X, Y, _, _ = _planted(seed, n=200, dx=60, dy=60, noise=noise, offset=False)
            out.append(ridge_cv(X, Y, rule="best").relative_alpha)
            out_mse.append(ridge_cv(X, Y, scoring="mse").relative_alpha)
    assert np.median(noisy) > np.median(clean)
    assert np.median(noisy_mse) > 10 * max(np.median(clean_mse), 1e-6)


def test_explicit_alpha_is_used_as_given():
    from sklearn.linear_model import Ridge

    X, Y, _, _ = _planted(1)
    p = make_projector("linear", alpha=30.0).fit(X, Y)
    ref = Ridge(alpha=30.0).fit(X, Y)
    assert p.alpha_ == 30.0 and p.alpha_curve_ is None
    assert_allclose(p.coef_, ref.coef_.T, rtol=1e-8, atol=1e-10)
    assert_allclose(p.intercept_, ref.intercept_, rtol=1e-8, atol=1e-10)


def test_zero_alpha_is_minimum_norm_least_squares():
    X, Y, _, _ = _planted(2, n=300)
    W, b = ridge_fit(X, Y, alpha=0.0)
    A = np.c_[X, np.ones(len(X))]
    Z = np.linalg.lstsq(A, Y, rcond=None)[0]
    assert_allclose(W.numpy(), Z[:-1], atol=1e-8)
    assert_allclose(b.numpy(), Z[-1], atol=1e-8)
    Xf, Yf = X[:20], Y[:20]  # fewer rows than features: the dual form, still interpolating the training rows
    Wd, bd = ridge_fit(Xf, Yf, alpha=0.0)
    assert_allclose(Xf @ Wd.numpy() + bd.numpy(), Yf, atol=1e-8)


def test_dual_and_primal_forms_agree():
    X, Y, _, _ = _planted(3, n=25, dx=30)
    Wd, _ = ridge_fit(X, Y, alpha=2.0)  # n < d: dual
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Wp = np.linalg.solve(Xc.T @ Xc + 2.0 * np.eye(X.shape[1]), Xc.T @ Yc)
    assert_allclose(Wd.numpy(), Wp, atol=1e-9)
    res = ridge_cv(X, Y)  # defined and cheap with fewer pairs than features
    assert res.n_folds == 5 and np.isfinite(res.mean).all()


def test_auto_alpha_is_scale_free():
    """Raw features (norms in the tens) and the same features scaled down: same relative choice, same map."""
    X, Y, _, _ = _planted(4, n=300)
    a = make_projector("linear").fit(15.0 * X, Y)
    b = make_projector("linear").fit(X, Y)
    assert a.alpha_curve_["relative_alpha"] == b.alpha_curve_["relative_alpha"]
    assert a.alpha_ == pytest.approx(225.0 * b.alpha_, rel=1e-9, abs=1e-12)
    assert_allclose(a.transform(15.0 * X), b.transform(X), atol=1e-8)


def test_auto_alpha_on_raw_and_normalised_features_both_retrieve():
    rng = np.random.default_rng(5)
    n, d = 400, 32
    Z = rng.standard_normal((n, d))
    X = 15.0 * Z + 3.0  # raw: large norms and an offset
    Y = Z @ rng.standard_normal((d, d)) + 0.3 * rng.standard_normal((n, d))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for feats in (X, Xn):
        p = make_projector("linear").fit(feats[:300], Y[:300])
        assert retrieval_metrics(p.transform(feats[300:]), Y[300:], ks=(1,)).recall_at(1) > 0.9


def test_ridge_cv_torch_matches_numpy():
    X, Y, _, _ = _planted(6, n=200)
    a = ridge_cv(X, Y)
    b = ridge_cv(torch.from_numpy(X), torch.from_numpy(Y))
    assert a.alpha == pytest.approx(b.alpha) and a.mean == pytest.approx(b.mean)


def test_ridge_cv_is_deterministic_and_checks_its_input():
    X, Y, _, _ = _planted(7, n=120)
    assert ridge_cv(X, Y, rng=3) == ridge_cv(X, Y, rng=3)
    with pytest.raises(ValueError, match="scoring"):
        ridge_cv(X, Y, scoring="r@5")
    with pytest.raises(ValueError, match="at least 4 pairs"):
        ridge_cv(X[:3], Y[:3])


def test_trained_kinds_are_never_below_their_start_on_validation():
    """A planted map the closed form already solves: training may not make validation worse than the start."""
    X, Y, _, _ = _planted(8, n=600, dx=16, dy=16, noise=0.5)
    Xv, Yv, _, _ = _planted(8, n=600, dx=16, dy=16, noise=0.5)
    Xv, Yv = Xv[:300] + 0.0, Yv[:300]
    start = make_projector("linear").fit(X, Y)
    start_r1 = retrieval_metrics(start.transform(Xv).astype(np.float32), Yv.astype(np.float32), ks=(1,))
    for kind, extra in (("mlp", {"hidden_dim": 32}), ("glu", {"hidden_dim": 32}), ("linear", {"solver": "trained"})):
        # a learning rate far too high: the trained epochs get worse, the start must win
        p = make_projector(kind, lr=0.5, max_epochs=3, batch_size=100, device="cpu", **extra)
        p.fit(X, Y, X_val=Xv, Y_val=Yv)
        rep = p.fit_report_
        assert rep["start"] == "ridge" and rep["init_alpha"] == pytest.approx(start.alpha_)
        tol = r1_tolerance(max(rep["val_R@1"], rep["val_R@1_start"]), len(Xv))  # the selection rule's noise band
        assert rep["val_R@1"] >= rep["val_R@1_start"] - tol
        got = retrieval_metrics(p.transform(Xv), p.transform_y(Yv))
        assert (got.query_to_gallery.recall[1] + got.gallery_to_query.recall[1]) / 2 >= rep["val_R@1_start"] - tol - 1e-9
        assert rep["val_R@1_start"] == pytest.approx((start_r1.query_to_gallery.recall[1]
                                                      + start_r1.gallery_to_query.recall[1]) / 2, abs=0.01)
        assert rep["start_kept"] == (rep["best_epoch"] == -1)


def test_parameter_values_are_checked_at_construction():
    bad = [
        ("mlp", {"lr": -1.0}, ValueError, "lr"),
        ("mlp", {"batch_size": 1}, ValueError, "batch_size"),
        ("glu", {"loss": "triplet"}, ValueError, "loss"),
        ("mlp", {"hidden_dim": 0}, ValueError, "hidden_dim"),
        ("linear", {"alpha": "best"}, ValueError, "alpha"),
        ("linear", {"alpha": -1.0}, ValueError, "alpha"),
        ("linear", {"solver": "sgd"}, ValueError, "solver"),
        ("mlp", {"init": "ridge", "project_y": True}, ValueError, "project_y"),
        ("mlp", {"init_alpha": "x"}, ValueError, "init_alpha"),
        ("mlp", {"rng": "seed"}, InputTypeError, "rng"),
        ("mlp", {"rng": -2}, ValueError, "rng"),
        ("cca", {"n_components": 0}, ValueError, "n_components"),
        ("subspace", {"method": "ica"}, ValueError, "method"),
    ]
    for kind, params, exc, word in bad:
        with pytest.raises(exc, match=word):
            make_projector(kind, **params)
    make_projector("mlp", rng=np.random.default_rng(0))  # a Generator and None are seeds too
    make_projector("mlp", rng=None)


def test_trains_says_whether_fit_trains():
    assert not make_projector("linear").trains
    assert make_projector("linear", solver="trained").trains
    assert make_projector("mlp").trains and make_projector("glu").trains
    assert not any(make_projector(k).trains for k in ("procrustes", "cca", "subspace"))


def test_generator_rng_gives_an_int_seed_at_fit():
    X, Y, _, _ = _planted(9, n=200, dx=8, dy=8)
    p = make_projector("mlp", hidden_dim=8, max_epochs=1, batch_size=50, device="cpu", rng=np.random.default_rng(1))
    p.fit(X, Y)
    assert isinstance(p.seed_, int) and 0 <= p.seed_ < 2 ** 63


def test_split_pairs_is_deterministic_and_keeps_groups_together():
    a = split_pairs(100, fraction=0.2, rng=3)
    b = split_pairs(100, fraction=0.2, rng=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len(a[1]) == 20 and np.union1d(*a).size == 100
    assert not np.array_equal(a[1], split_pairs(100, fraction=0.2, rng=4)[1])
    groups = np.repeat(np.arange(25), 4)
    tr, va = split_pairs(100, groups, 0.2, rng=0)
    assert not set(groups[tr]) & set(groups[va]) and len(set(groups[va])) == 5
    assert all(np.array_equal(x, y) for x, y in zip(split_by_group(100, groups, 0.2, 0), (tr, va)))
    _, va2 = split_pairs(100, fraction=0.2, rng=np.random.default_rng(0))
    assert len(va2) == 20
    assert split_pairs(10, fraction=0.0)[1] is None
    with pytest.raises(ValueError, match="too few"):
        split_pairs(5, fraction=0.2)


def test_save_load_keeps_the_chosen_alpha(tmp_path):
    X, Y, _, _ = _planted(10, n=200)
    p = make_projector("linear").fit(X, Y)
    q = load_projector(p.save(tmp_path / "p.pt"))
    assert q.alpha_ == p.alpha_ and q.alpha_curve_ == p.alpha_curve_ and q.fit_report_ == p.fit_report_
    assert_allclose(q.transform(X), p.transform(X))
    m = make_projector("mlp", hidden_dim=8, max_epochs=1, batch_size=50, device="cpu").fit(X, Y)
    r = load_projector(m.save(tmp_path / "m.pt"))
    assert r.init_alpha_ == m.init_alpha_ and r.fit_report_["start_kept"] == m.fit_report_["start_kept"]


def test_matching_lstsq_auto_alpha_recovers_a_planted_map():
    import matching

    rng = np.random.default_rng(11)
    X = rng.standard_normal((80, 16))
    Y = X @ rng.standard_normal((16, 16)) + 0.01 * rng.standard_normal((80, 16))
    perm = rng.permutation(80)
    Ys = Y[perm]
    inv = np.argsort(perm)
    seeds = np.stack([np.arange(40), inv[:40]], axis=1)
    res = matching.match(X, Ys, "lstsq", seeds)
    assert np.mean(res.col_ind == inv) >= 0.95
