"""Similarity measures: every metric against a naive n × n reference, properties, estimator bias, errors, API."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

import align
from align import similarity as sim
from align._similarity._median import (
    median_sq_distance,
    offdiag_order_statistic,
    offdiag_order_statistics,
)

# --------------------------------------------------------------------------------------------------------------
# Naive references: explicit n × n Gram matrices, explicit centring, written from the papers' formulas.
# --------------------------------------------------------------------------------------------------------------


def _H(n):
    return np.eye(n) - np.ones((n, n)) / n


def ref_hsic(K, L):
    H = _H(len(K))
    return np.trace(K @ H @ L @ H)


def ref_hsic_u(K, L):  # Song et al. 2012, eq. 5
    n = len(K)
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ Kt @ Lt @ one) / (n * (n - 3))


def ref_cka(K, L, hsic=ref_hsic):
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def ref_rbf_gram(X, sigma):
    D2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.exp(-D2 / (2 * sigma**2))


def ref_median_sigma(X):  # Kornblith et al.'s code: sqrt(np.median(full squared-distance matrix))
    D2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.sqrt(np.median(D2))


def ref_knn(X, k, normalize=True):
    if normalize:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-S, axis=1)[:, :k]


def ref_mutual_knn(X, Y, k):  # Platonic code: masks, intersection, mean / k
    n = len(X)
    a, b = np.zeros((n, n)), np.zeros((n, n))
    np.put_along_axis(a, ref_knn(X, k), 1.0, 1)
    np.put_along_axis(b, ref_knn(Y, k), 1.0, 1)
    return ((a * b).sum(1) / k).mean()


def ref_cycle_knn(X, Y, k):
    kx, ky = ref_knn(X, k), ref_knn(Y, k)
    return (kx[ky] == np.arange(len(X))[:, None, None]).reshape(len(X), -1).any(1).mean()


def ref_cknna(X, Y, k):  # Platonic code, unbiased=True, without the + 1e-6
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    K, L = Xn @ Xn.T, Yn @ Yn.T
    n = len(X)

    def hsic_u_platonic(A, B):
        At, Bt = A.copy(), B.copy()
        np.fill_diagonal(At, 0)
        np.fill_diagonal(Bt, 0)
        return ((At * Bt.T).sum() + At.sum() * Bt.sum() / ((n - 1) * (n - 2)) - 2 * (At @ Bt).sum() / (n - 2)) / (
            n * (n - 3))

    def masked(Km, Lm):
        Kh, Lh = Km.copy(), Lm.copy()
        np.fill_diagonal(Kh, -np.inf)
        np.fill_diagonal(Lh, -np.inf)
        mk, ml = np.zeros((n, n)), np.zeros((n, n))
        np.put_along_axis(mk, np.argsort(-Kh, 1)[:, :k], 1.0, 1)
        np.put_along_axis(ml, np.argsort(-Lh, 1)[:, :k], 1.0, 1)
        m = mk * ml
        return hsic_u_platonic(m * Km, m * Lm)

    return masked(K, L) / np.sqrt(masked(K, K) * masked(L, L))


def _cca_qr(Xc, Yc):
    qx, _ = np.linalg.qr(Xc)
    qy, _ = np.linalg.qr(Yc)
    u, rho, vt = np.linalg.svd(qx.T @ qy)
    return qx, qy, u, rho, vt


def ref_svcca(X, Y, variance=0.99):
    def reduce(Z):
        Zc = Z - Z.mean(0)
        _, s, vt = np.linalg.svd(Zc, full_matrices=False)
        frac = np.cumsum(s**2) / np.sum(s**2)
        keep = int(np.searchsorted(frac, variance - 1e-12)) + 1
        return Zc @ vt[:keep].T

    *_, rho, _ = _cca_qr(reduce(X), reduce(Y))
    return rho.mean()


def ref_pwcca(X, Y):
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    qx, qy, u, rho, vt = _cca_qr(Xc, Yc)
    r = min(X.shape[1], Y.shape[1])
    if X.shape[1] <= Y.shape[1]:
        h, acts = qx @ u[:, :r], Xc
    else:
        h, acts = qy @ vt.T[:, :r], Yc
    alpha = np.abs(h.T @ acts).sum(1)
    return (alpha * rho[:r]).sum() / alpha.sum()


def ref_procrustes(X, Y):
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Xc, Yc = Xc / np.linalg.norm(Xc), Yc / np.linalg.norm(Yc)
    d = max(X.shape[1], Y.shape[1])  # zero-pad to the same width, then the best rotation
    Xp = np.pad(Xc, ((0, 0), (0, d - X.shape[1])))
    Yp = np.pad(Yc, ((0, 0), (0, d - Y.shape[1])))
    u, _, vt = np.linalg.svd(Xp.T @ Yp)
    R = u @ vt
    return np.arccos(np.clip(np.sum(Xp @ R * Yp), -1, 1))


def ref_rsa(X, Y):
    return spearmanr(pdist(X, "correlation"), pdist(Y, "correlation")).statistic


def ref_minibatch(X, Y, size):
    n = len(X)
    bounds = np.linspace(0, n, n // size + 1).round().astype(int)
    t = np.zeros(3)
    for s, e in itertools.pairwise(bounds):
        K, L = X[s:e] @ X[s:e].T, Y[s:e] @ Y[s:e].T
        t += ref_hsic_u(K, L), ref_hsic_u(K, K), ref_hsic_u(L, L)
    return t[0] / np.sqrt(t[1] * t[2])


REFERENCES = {
    "linear_cka": lambda X, Y: ref_cka(X @ X.T, Y @ Y.T),
    "unbiased_cka": lambda X, Y: ref_cka(X @ X.T, Y @ Y.T, ref_hsic_u),
    "rbf_cka": lambda X, Y: ref_cka(ref_rbf_gram(X, ref_median_sigma(X)), ref_rbf_gram(Y, ref_median_sigma(Y))),
    "minibatch_cka": lambda X, Y: ref_minibatch(X, Y, 10),
    "mutual_knn": lambda X, Y: ref_mutual_knn(X, Y, 5),
    "cknna": lambda X, Y: ref_cknna(X, Y, 5),
    "cycle_knn": lambda X, Y: ref_cycle_knn(X, Y, 5),
    "svcca": ref_svcca,
    "pwcca": ref_pwcca,
    "procrustes": ref_procrustes,
    "rsa": ref_rsa,
}
PARAMS = {"minibatch_cka": {"minibatch_size": 10}, "mutual_knn": {"k": 5}, "cknna": {"k": 5},
          "cycle_knn": {"k": 5}}
# (n, d_x, d_y): feature-space route, Gram route (n < d), and a size that no chunk of 8 divides.
SHAPES = [(61, 6, 9), (29, 40, 33), (101, 7, 3)]


def _pair(n, dx, dy, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) + rng.normal(size=dx)  # off-centre on purpose
    Y = np.tanh(X @ rng.normal(size=(dx, dy))) + noise * rng.normal(size=(n, dy)) + 3.0
    return X, Y


def test_every_metric_has_a_reference():
    assert set(REFERENCES) == set(sim.list_metrics())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("metric", sorted(REFERENCES))
def test_matches_naive_reference(metric, shape):
    n, dx, dy = shape
    if metric in ("svcca", "pwcca") and n <= max(dx, dy) + 1:
        pytest.skip("CCA needs n > d (tested as an error below)")
    X, Y = _pair(n, dx, dy)
    expected = REFERENCES[metric](X, Y)
    for batch_size in (None, 8):
        got = sim.similarity(X, Y, metric, batch_size=batch_size, **PARAMS.get(metric, {}))
        assert got == pytest.approx(expected, abs=1e-8), (metric, batch_size)


def test_rbf_explicit_and_platonic_bandwidths_are_used_and_reported():
    X, Y = _pair(40, 5, 4)
    r = sim.compare(X, Y, "rbf_cka", sigma=2.5)
    assert r.value == pytest.approx(ref_cka(ref_rbf_gram(X, 2.5), ref_rbf_gram(Y, 2.5)), abs=1e-10)
    assert (r.settings["sigma_x"], r.settings["sigma_y"], r.settings["bandwidth"]) == (2.5, 2.5, "fixed")
    p = sim.compare(X, Y, "rbf_cka", sigma="platonic")
    assert p.value == pytest.approx(ref_cka(ref_rbf_gram(X, 1.0), ref_rbf_gram(Y, 1.0)), abs=1e-10)
    m = sim.compare(X, Y, "rbf_cka", median_scale=0.5)
    assert m.settings["sigma_x"] == pytest.approx(0.5 * ref_median_sigma(X), rel=1e-12)
    assert m.settings["sigma_y"] == pytest.approx(0.5 * ref_median_sigma(Y), rel=1e-12)


def test_unbiased_rbf_matches_reference():
    X, Y = _pair(33, 4, 6)
    expected = ref_cka(ref_rbf_gram(X, ref_median_sigma(X)), ref_rbf_gram(Y, ref_median_sigma(Y)), ref_hsic_u)
    assert sim.unbiased_cka(X, Y, kernel="rbf", batch_size=7) == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize("n", [30, 31])
def test_median_selection_is_exact_through_several_refinements(n):
    rng = np.random.default_rng(n)
    Z = torch.from_numpy(rng.normal(size=(n, 3)) ** 3)  # skewed distances
    Z = Z - Z.mean(0)
    sq = (Z * Z).sum(1)
    d2 = pdist(Z.numpy(), "sqeuclidean")
    for rank in (0, 17, len(d2) // 2, len(d2) - 1):
        got = offdiag_order_statistic(Z, sq, rank, batch_size=7, cap=10, bins=4)
        assert got == pytest.approx(np.sort(d2)[rank], rel=1e-12, abs=1e-12)
    many = [3, 4, 200, len(d2) - 2]
    assert_allclose(offdiag_order_statistics(Z, sq, many, batch_size=6, cap=10, bins=4), np.sort(d2)[many],
                    rtol=1e-12, atol=1e-12)
    full = ((Z[:, None] - Z[None]) ** 2).sum(-1).numpy()
    assert median_sq_distance(Z, sq, batch_size=5, cap=10, bins=4) == pytest.approx(np.median(full), rel=1e-12)


# --------------------------------------------------------------------------------------------------------------
# Precision, inputs (float32, torch, memory-mapped files)
# --------------------------------------------------------------------------------------------------------------


def test_float32_input_gives_float64_accuracy():
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(4000, 16)) + 5.0).astype(np.float32)  # a large mean makes float32 sums lossy
    Y = (X[:, :8] @ rng.normal(size=(8, 12)).astype(np.float32) + rng.normal(size=(4000, 12))).astype(np.float32)
    Xc, Yc = X - X.astype(np.float64).mean(0), Y - Y.astype(np.float64).mean(0)  # float64, two-pass centring
    exact = np.linalg.norm(Xc.T @ Yc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert sim.linear_cka(X, Y) == pytest.approx(exact, abs=1e-10)
    assert sim.linear_cka(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(exact, abs=1e-10)


def test_torch_and_numpy_agree_for_every_metric():
    X, Y = _pair(40, 5, 6)
    for metric in sim.list_metrics():
        a = sim.similarity(X, Y, metric, **PARAMS.get(metric, {}))
        b = sim.similarity(torch.from_numpy(X).float(), torch.from_numpy(Y).float(), metric,
                           **PARAMS.get(metric, {}))
        assert b == pytest.approx(a, abs=1e-5), metric  # float32 rounding of the inputs only


def test_memory_mapped_input_streams_and_matches(tmp_path):
    X, Y = _pair(257, 6, 5)
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", Y.astype(np.float32))
    Xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    Ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    X32, Y32 = np.asarray(Xm, np.float64), np.asarray(Ym, np.float64)
    for metric in ("linear_cka", "unbiased_cka", "minibatch_cka", "svcca", "procrustes"):
        got = sim.similarity(Xm, Ym, metric, batch_size=50) if metric != "minibatch_cka" else \
            sim.similarity(Xm, Ym, metric, minibatch_size=50)
        want = sim.similarity(X32, Y32, metric, **({"minibatch_size": 50} if metric == "minibatch_cka" else {}))
        assert got == pytest.approx(want, abs=1e-12), metric


# --------------------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------------------


def _rotation(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


TRANSFORMS = {
    "rotation": lambda X, rng: X @ _rotation(X.shape[1], rng),
    "isotropic_scale": lambda X, rng: 3.7 * X,
    "translation": lambda X, rng: X + rng.normal(size=X.shape[1]) * 5,
    "invertible_linear": lambda X, rng: X @ (np.eye(X.shape[1]) + rng.normal(size=(X.shape[1],) * 2)),
}


@pytest.mark.parametrize("metric", sorted(REFERENCES))
def test_declared_invariances_hold(metric):
    info = sim.list_metrics()[metric]
    X, Y = _pair(60, 6, 5, seed=3)
    rng = np.random.default_rng(4)
    params = PARAMS.get(metric, {})
    base = sim.similarity(X, Y, metric, **params)
    for inv in info.invariances:
        Xt = TRANSFORMS[inv](X, rng)
        assert sim.similarity(Xt, Y, metric, **params) == pytest.approx(base, abs=1e-8), (metric, inv)
        assert sim.similarity(X, TRANSFORMS[inv](Y, rng), metric, **params) == pytest.approx(base, abs=1e-8)


def test_linear_cka_is_not_invariant_to_a_general_invertible_map():
    assert "invertible_linear" not in sim.list_metrics()["linear_cka"].invariances
    X, Y = _pair(200, 6, 5, seed=5)
    A = np.diag([10.0, 1, 1, 1, 1, 0.1]) @ _rotation(6, np.random.default_rng(6))
    assert abs(np.linalg.det(A)) > 1e-6
    before, after = sim.linear_cka(X, Y), sim.linear_cka(X @ A, Y)
    assert abs(after - before) > 0.05
    # whereas the CCA family is invariant to it (canonical correlations do not see invertible maps)
    assert sim.svcca(X @ A, Y, variance=1.0) == pytest.approx(sim.svcca(X, Y, variance=1.0), abs=1e-8)


@pytest.mark.parametrize("metric", ["linear_cka", "rbf_cka", "unbiased_cka", "cknna", "svcca"])
def test_cka_of_x_with_itself_is_one(metric):
    X, _ = _pair(50, 7, 3, seed=7)
    assert sim.similarity(X, X, metric) == pytest.approx(1.0, abs=1e-10)
    shift = 0.0 if metric == "cknna" else 1.0  # CKNNA's cosine neighbours are not translation invariant
    assert sim.similarity(X, 2 * X + shift, metric) == pytest.approx(1.0, abs=1e-10)


def test_procrustes_is_zero_for_a_rotated_copy_and_positive_otherwise():
    X, Y = _pair(50, 7, 7, seed=8)
    Q = _rotation(7, np.random.default_rng(9))
    assert sim.procrustes(X, 0.3 * X @ Q - 4) == pytest.approx(0.0, abs=1e-6)
    assert sim.procrustes(X, Y) > 0.1
    assert sim.compare(X, Y, "procrustes").kind == "distance"


@pytest.mark.parametrize("metric", [m for m, i in sim.list_metrics().items() if i.symmetric])
def test_symmetric_metrics_are_symmetric(metric):
    X, Y = _pair(45, 5, 8, seed=10)
    params = PARAMS.get(metric, {})
    assert sim.similarity(X, Y, metric, **params) == pytest.approx(sim.similarity(Y, X, metric, **params), abs=1e-10)


def test_asymmetric_metrics_are_declared_and_really_asymmetric():
    X, Y = _pair(60, 5, 8, seed=11, noise=2.0)
    assert sim.cycle_knn(X, Y, k=3) != sim.cycle_knn(Y, X, k=3)
    # CKNNA as the Platonic code defines it: the 1'AB1 term of the HSIC of the masked kernels is not symmetric
    assert sim.cknna(X, Y, k=5) != pytest.approx(sim.cknna(Y, X, k=5), abs=1e-6)
    assert sim.cknna(X, Y, k=5) == pytest.approx(ref_cknna(X, Y, 5), abs=1e-10)
    assert sim.cknna(Y, X, k=5) == pytest.approx(ref_cknna(Y, X, 5), abs=1e-10)
    for name in ("cycle_knn", "cknna", "pwcca"):
        assert not sim.list_metrics()[name].symmetric


def test_hypothesis_cka_properties():
    hyp = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hyp.settings(max_examples=25, deadline=None, derandomize=True)
    @hyp.given(n=st.integers(5, 40), dx=st.integers(1, 12), dy=st.integers(1, 12), seed=st.integers(0, 2**31),
               scale=st.floats(1e-3, 1e3), shift=st.floats(-1e3, 1e3))
    def check(n, dx, dy, seed, scale, shift):
        rng = np.random.default_rng(seed)
        X, Y = rng.normal(size=(n, dx)), rng.normal(size=(n, dy))
        v = sim.linear_cka(X, Y)
        assert -1e-12 <= v <= 1 + 1e-12
        assert sim.linear_cka(X, X) == pytest.approx(1.0, abs=1e-9)
        assert sim.linear_cka(Y, X) == pytest.approx(v, abs=1e-10)
        assert sim.linear_cka(scale * X @ _rotation(dx, rng) + shift, Y) == pytest.approx(v, abs=1e-8)

    check()


# --------------------------------------------------------------------------------------------------------------
# Estimator bias
# --------------------------------------------------------------------------------------------------------------


def test_unbiased_estimator_is_centred_on_zero_for_independent_data_where_biased_is_not():
    rng = np.random.default_rng(12)
    unbiased, biased = [], []
    for _ in range(300):
        X, Y = rng.normal(size=(32, 20)), rng.normal(size=(32, 20))
        unbiased.append(sim.unbiased_cka(X, Y))
        biased.append(sim.linear_cka(X, Y))
    assert abs(np.mean(unbiased)) < 0.02
    assert np.mean(biased) > 0.3  # the biased estimator reads independent data as quite similar at n = 32


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", sorted(REFERENCES))
def test_nan_inf_and_constant_inputs_are_clear_errors(metric):
    X, Y = _pair(40, 5, 4)
    params = PARAMS.get(metric, {})
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[17, 2] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            sim.similarity(Xb, Y, metric, **params)
    with pytest.raises(ValueError, match="`Y` is constant"):
        sim.similarity(X, np.ones_like(Y) * 0.1, metric, **params)


def test_shape_and_name_errors():
    X, Y = _pair(40, 5, 4)
    with pytest.raises(ValueError, match="same number of rows"):
        sim.similarity(X, Y[:-1])
    with pytest.raises(ValueError, match="must be 2-D.*reshape"):
        sim.similarity(X[:, 0], Y[:, 0])
    with pytest.raises(ValueError, match="unknown metric 'linear_ckaa'.*did you mean 'linear_cka'"):
        sim.similarity(X, Y, "linear_ckaa")
    with pytest.raises(TypeError, match="unknown parameter.*'sigmaa'.*'sigma'"):
        sim.similarity(X, Y, "rbf_cka", sigmaa=1.0)
    with pytest.raises(ValueError, match="`k` must be < n_samples = 40 .*got k = 40; pass k <= 39"):
        sim.mutual_knn(X, Y, k=40)
    with pytest.raises(ValueError, match="`sigma` must be > 0"):
        sim.rbf_cka(X, Y, sigma=0.0)
    with pytest.raises(ValueError, match="CCA needs more items"):
        sim.pwcca(*_pair(20, 30, 5))
    with pytest.raises(ValueError, match="max_pairs"):
        sim.rsa(X, Y, max_pairs=100)
    with pytest.raises(ValueError, match="`device` must be a torch device"):
        sim.linear_cka(X, Y, device="nonsense")


def test_unbiased_estimator_needs_four_rows_and_never_returns_nan():
    X, Y = _pair(3, 2, 2)
    with pytest.raises(ValueError, match="needs at least 4 rows"):
        sim.unbiased_cka(X, Y)
    with pytest.raises(ValueError, match="`minibatch_size` must be >= 4"):
        sim.minibatch_cka(*_pair(20, 2, 2), minibatch_size=3)
    # n = 4, d = 1: HSIC(X, X) can come out non-positive; that is an error, not a NaN
    X4 = np.array([[0.0], [1.0], [2.0], [3.0]])
    value = sim.unbiased_cka(X4, X4 ** 2)
    assert np.isfinite(value)


# --------------------------------------------------------------------------------------------------------------
# Null, sweeps, pair ranking, front door
# --------------------------------------------------------------------------------------------------------------


def test_permutation_null_detects_real_pairing_and_not_chance():
    X, Y = _pair(80, 6, 5, seed=13, noise=0.3)
    r = sim.permutation_null(X, Y, "linear_cka", 99, rng=0)
    assert r.observed == pytest.approx(sim.linear_cka(X, Y), abs=1e-12)
    assert r.p_value == pytest.approx(1 / 100)
    assert r.null_mean < r.observed - 5 * r.null_std
    rng = np.random.default_rng(14)
    ps = [sim.permutation_null(rng.normal(size=(30, 3)), rng.normal(size=(30, 3)), "linear_cka", 19, rng).p_value
          for _ in range(40)]
    assert 0.3 < np.mean(ps) < 0.7  # uniform p-values under independence
    again = sim.permutation_null(X, Y, "linear_cka", 99, rng=0)
    assert again.null_values == r.null_values


@pytest.mark.parametrize("metric", ["linear_cka", "unbiased_cka", "svcca", "pwcca", "procrustes"])
def test_moment_fast_path_of_the_null_equals_recomputing(metric):
    X, Y = _pair(50, 4, 3, seed=15)
    r = sim.permutation_null(X, Y, metric, 5, rng=1)
    gen = np.random.default_rng(1)
    direct = [sim.similarity(X, Y[gen.permutation(50)], metric) for _ in range(5)]
    assert_allclose(r.null_values, direct, atol=1e-10)
    if metric == "procrustes":
        assert r.p_value == pytest.approx(1 / 6)  # a distance: extreme means small


def test_layer_sweep_finds_the_planted_layer():
    rng = np.random.default_rng(16)
    base = rng.normal(size=(70, 6))
    fx = {"l0": rng.normal(size=(70, 5)), "l1": base, "l2": rng.normal(size=(70, 4))}
    fy = {"a": rng.normal(size=(70, 3)), "b": 2 * base @ _rotation(6, rng) + 1}
    r = sim.layer_sweep(fx, fy, "linear_cka")
    assert r.matrix.shape == (3, 2)
    assert r.argmax == ("l1", "b") and r.best == ("l1", "b")
    assert r.max == pytest.approx(1.0, abs=1e-10)
    assert r.matrix[0, 1] == pytest.approx(sim.linear_cka(fx["l0"], fy["b"]), abs=1e-12)
    d = sim.layer_sweep(fx, fy, "procrustes")
    assert d.best == ("l1", "b") and d.best_value == pytest.approx(0.0, abs=1e-6)


def test_rank_pairs_puts_the_related_pair_first_with_a_null():
    rng = np.random.default_rng(17)
    z = rng.normal(size=(60, 4))
    feats = {"img": z @ rng.normal(size=(4, 8)), "txt": z @ rng.normal(size=(4, 6)) + 0.1 * rng.normal(size=(60, 6)),
             "noise": rng.normal(size=(60, 5))}
    r = sim.rank_pairs(feats, "linear_cka", n_permutations=19, rng=0)
    assert len(r.pairs) == 3 and {r.best.a, r.best.b} == {"img", "txt"}
    assert r.best.p_value == pytest.approx(1 / 20)
    assert [p.value for p in r.pairs] == sorted((p.value for p in r.pairs), reverse=True)
    assert r.to_dict()["pairs"][0]["p_value"] == r.best.p_value
    ordered = sim.rank_pairs(feats, "cycle_knn", k=3)
    assert len(ordered.pairs) == 6  # both orders for an asymmetric metric
    with pytest.raises(ValueError, match="same items"):
        sim.rank_pairs({"a": z, "b": z[:-1]})


def test_front_door_and_metric_table():
    X, Y = _pair(30, 3, 4)
    assert align.similarity(X, Y) == pytest.approx(sim.linear_cka(X, Y))
    assert align.similarity(X, Y, metric="mutual_knn", k=3) == pytest.approx(sim.mutual_knn(X, Y, k=3))
    table = align.list_metrics()
    assert table["procrustes"].kind == "distance"
    assert "invertible_linear" not in table["linear_cka"].invariances
    assert table["rbf_cka"].defaults["sigma"] == "median"
    for info in table.values():
        assert set(info.invariances) <= set(sim.INVARIANCES)
        assert info.to_dict()["name"] == info.name
    r = sim.compare(X, Y, "rbf_cka")
    d = r.to_dict()
    assert d["n"] == 30 and d["metric"] == "rbf_cka" and d["settings"]["sigma_x"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_tensors_give_the_cpu_values():
    X, Y = _pair(90, 6, 5)
    Xg, Yg = torch.from_numpy(X).cuda(), torch.from_numpy(Y).cuda()
    for metric in sim.list_metrics():
        params = PARAMS.get(metric, {})
        assert sim.similarity(Xg, Yg, metric, **params) == pytest.approx(sim.similarity(X, Y, metric, **params),
                                                                         abs=1e-8), metric
    # numpy input computed on the GPU when asked
    assert sim.linear_cka(X, Y, device="cuda") == pytest.approx(sim.linear_cka(X, Y), abs=1e-10)


# --------------------------------------------------------------------------------------------------------------
# The neighbour lists behind the kNN metrics
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize, batch_size", [(True, None), (False, None), (True, 37)])
def test_nearest_neighbors_are_the_float64_neighbours_and_give_mutual_knn(normalize, batch_size):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(203, 12)) + 0.3  # 203 rows: blocks of 37 do not divide them
    Y = X @ rng.normal(size=(12, 9)) + 0.5 * rng.normal(size=(203, 9))
    ix = sim.nearest_neighbors(X, 6, normalize=normalize, batch_size=batch_size)
    assert ix.shape == (203, 6) and ix.dtype == np.int64
    np.testing.assert_array_equal(np.sort(ix, axis=1), np.sort(ref_knn(X, 6, normalize), axis=1))
    assert not (ix == np.arange(203)[:, None]).any()  # never itself
    iy = sim.nearest_neighbors(Y, 6, normalize=normalize, batch_size=batch_size)
    per_item = (ix[:, :, None] == iy[:, None, :]).any(2).sum(1) / 6
    assert per_item.mean() == pytest.approx(sim.mutual_knn(X, Y, k=6, normalize=normalize), abs=1e-15)


def test_nearest_neighbors_keep_torch_inputs_and_check_k():
    X = np.random.default_rng(0).normal(size=(40, 5))
    it = sim.nearest_neighbors(torch.from_numpy(X), 3)
    assert isinstance(it, torch.Tensor) and it.dtype == torch.long
    np.testing.assert_array_equal(it.numpy(), sim.nearest_neighbors(X, 3))
    with pytest.raises(ValueError, match="`k` must be < n_samples = 40"):
        sim.nearest_neighbors(X, 40)
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        sim.nearest_neighbors(X, 0)
    Z = X.copy()
    Z[4] = 0.0
    with pytest.raises(ValueError, match="all-zero row"):
        sim.nearest_neighbors(Z, 3)
