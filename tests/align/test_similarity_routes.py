"""The fast routes of the kernel metrics give float64 answers: whole-matrix vs tiled RBF CKA, the exact median
bandwidth through every route (float32 pass with its proven bound, float64 pass, refinement), linear CKA's numpy
moments."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

from align import similarity as sim
from align._similarity import _kernel, _median
from align._similarity._common import ops_for

CPU = torch.device("cpu")


def _centred(X):
    Z = torch.from_numpy(np.asarray(X, dtype=np.float64).copy())
    Z -= Z.mean(0)
    return Z, (Z * Z).sum(1)


def _ref_rbf_cka(X, Y, unbiased=False):
    """Explicit float64 n × n Gram matrices, explicit centring, sigma = sqrt(np.median(D2)) (Kornblith et al.)."""
    def gram(A):
        D2 = squareform(pdist(A, "sqeuclidean"))
        return np.exp(-D2 / (2 * np.median(D2)))

    K, L = gram(np.asarray(X, np.float64)), gram(np.asarray(Y, np.float64))
    n = len(K)
    if unbiased:
        def h(A, B):
            At, Bt = A - np.diag(np.diag(A)), B - np.diag(np.diag(B))
            one = np.ones(n)
            return (np.trace(At @ Bt) + one @ At @ one * (one @ Bt @ one) / ((n - 1) * (n - 2))
                    - 2 / (n - 2) * one @ At @ Bt @ one) / (n * (n - 3))
    else:
        def h(A, B):
            Ac, Bc = A - A.mean(0), B - B.mean(0)
            return np.sum((Ac - Ac.mean(1, keepdims=True)) * (Bc - Bc.mean(1, keepdims=True)))
    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


def _encoder_like(n, dx, dy, seed=0):
    """float32, off-centre, L2-normalised rows sharing a latent (as in benchmarks/bench_similarity.py)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 8))
    X = z @ rng.normal(size=(8, dx)) + 0.5 * rng.normal(size=(n, dx)) + 1.0
    Y = np.tanh(z @ rng.normal(size=(8, dy))) + 0.5 * rng.normal(size=(n, dy))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    return X.astype(np.float32), Y.astype(np.float32)


@pytest.mark.parametrize("unbiased", [False, True])
def test_rbf_whole_and_tiled_routes_equal_a_float64_reference(unbiased):
    X, Y = _encoder_like(701, 40, 24)  # 701 rows: no tile size below divides it
    expected = _ref_rbf_cka(X, Y, unbiased)
    metric, params = ("unbiased_cka", {"kernel": "rbf"}) if unbiased else ("rbf_cka", {})
    whole = sim.compare(X, Y, metric, **params)
    assert whole.settings["route"] == "whole"
    assert whole.value == pytest.approx(expected, abs=1e-12)
    for batch_size in (64, 300, 701):
        tiled = sim.compare(X, Y, metric, batch_size=batch_size, **params)
        assert tiled.settings["route"] == "tiles"
        assert tiled.value == pytest.approx(expected, abs=1e-12), batch_size
        assert tiled.settings["sigma_x"] == pytest.approx(whole.settings["sigma_x"], rel=1e-13)


def test_float32_gram_route_drifts_where_ours_does_not():
    """The papers' float32 Gram route loses digits with n; ours stays at float64 level (a known answer)."""
    X, Y = _encoder_like(1500, 32, 16, seed=3)
    expected = _ref_rbf_cka(X, Y)
    assert sim.rbf_cka(X, Y) == pytest.approx(expected, abs=1e-11)
    assert sim.rbf_cka(X, Y, batch_size=512) == pytest.approx(expected, abs=1e-11)

    def f32_route(A, B):  # Kornblith et al.'s gram_rbf / center_gram / cka in float32
        def gram(a):
            g = a @ a.T
            d = np.diag(g)
            d2 = -2 * g + d[:, None] + d[None, :]
            return np.exp(-d2 / (2 * np.median(d2)))
        K, L = gram(A), gram(B)
        K = K - K.mean(0) - K.mean(1, keepdims=True) + K.mean()
        L = L - L.mean(0) - L.mean(1, keepdims=True) + L.mean()
        return float(K.ravel() @ L.ravel() / (np.linalg.norm(K) * np.linalg.norm(L)))

    assert abs(f32_route(X, Y) - expected) > 1e-8  # what the float64 route buys


@pytest.mark.parametrize("d", [1, 3, 50, 400])
@pytest.mark.parametrize("scale", [1e-30, 1.0, 3e25])
def test_float32_squared_distances_stay_within_the_proven_bound(d, scale):
    rng = np.random.default_rng(d)
    X = rng.standard_t(3, size=(300, d)) * scale  # heavy tails: very unequal row norms
    X[:5] *= 50
    X[5] = X[6]  # a duplicate pair: exact distance 0
    Z, sq = _centred(X)
    ops = ops_for(CPU)
    a, b, scale2, delta = _median.float32_rows(ops.wrap(Z), ops.wrap(sq), ops)
    f = (a @ b.T).astype(np.float64) / scale2
    exact = squareform(pdist(Z.numpy(), "sqeuclidean"))
    err = np.abs(f - exact)[np.triu_indices(300, 1)]
    bound = delta / scale2
    assert err.max() <= bound
    assert err.max() > 1e-4 * bound  # the bound is a worst case, but not a vacuous one


@pytest.mark.parametrize("n", [300, 301])
def test_sampled_order_statistics_are_exact_through_every_route(n, monkeypatch):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 6)) ** 3  # skewed distances
    X[10:20] = X[0]  # ties
    Z, sq = _centred(X)
    ops = ops_for(CPU)
    z, s = ops.wrap(Z), ops.wrap(sq)
    d2 = np.sort(pdist(Z.numpy(), "sqeuclidean"))
    ranks = [0, 17, len(d2) // 2, len(d2) // 2 + 1, len(d2) - 1]

    values, route = _median.offdiag_order_statistics_sampled(z, s, ranks, ops, 64)
    assert route == "float32"
    np.testing.assert_allclose(values, d2[ranks], rtol=1e-13, atol=1e-13)

    monkeypatch.setattr(_median, "RECOMPUTE_CAP", 0)  # the float32 pass cannot decide: the float64 pass does
    values, route = _median.offdiag_order_statistics_sampled(z, s, ranks[2:4], ops, 64)
    assert route == "float64"
    np.testing.assert_allclose(values, d2[ranks[2:4]], rtol=1e-13)

    monkeypatch.setattr(_median, "Z_BRACKET", -3.0)  # a bracket that cannot hold the median: refinement decides
    values, route = _median.offdiag_order_statistics_sampled(z, s, ranks[2:3], ops, 64, sample_size=50)
    assert values is None and route == "miss"
    median, route = _median.median_sq_distance_tiled(Z, sq, ops, 64)
    assert route == "refinement"
    assert median == pytest.approx(np.median(squareform(pdist(Z.numpy(), "sqeuclidean"))), rel=1e-13)


@pytest.mark.parametrize("n", [257, 258])
def test_median_bandwidth_is_np_median_of_the_full_matrix_on_both_routes(n):
    rng = np.random.default_rng(n)
    X = np.exp(rng.normal(size=(n, 5)))
    Z, sq = _centred(X)
    ops = ops_for(CPU)
    full = squareform(pdist(Z.numpy(), "sqeuclidean"))
    expected = np.median(full)
    D = _kernel.full_sq_dist(ops.wrap(Z), ops.wrap(sq), ops)
    assert _median.median_of_full(D, ops) == pytest.approx(expected, rel=1e-13)
    for size in (32, 100, n):
        value, route = _median.median_sq_distance_tiled(Z, sq, ops, size)
        assert value == pytest.approx(expected, rel=1e-13), size
        assert route == "float32"
    # one-hot rows: every distance is 0 or 2, the median an exact tie
    onehot = np.eye(6)[rng.integers(0, 6, size=n)]
    Zo, sqo = _centred(onehot)
    full = squareform(pdist(Zo.numpy(), "sqeuclidean"))
    assert _median.median_sq_distance_tiled(Zo, sqo, ops, 64)[0] == pytest.approx(np.median(full), rel=1e-13)
    assert _median.median_of_full(_kernel.full_sq_dist(ops.wrap(Zo), ops.wrap(sqo), ops), ops) == \
        pytest.approx(np.median(full), rel=1e-13)


def test_linear_cka_numpy_moments_match_torch_tensors_and_a_float64_reference():
    X, Y = _encoder_like(1203, 30, 20, seed=5)
    Xc = X.astype(np.float64) - X.astype(np.float64).mean(0)
    Yc = Y.astype(np.float64) - Y.astype(np.float64).mean(0)
    exact = np.linalg.norm(Xc.T @ Yc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    for batch_size in (None, 100):
        assert sim.linear_cka(X, Y, batch_size=batch_size) == pytest.approx(exact, abs=1e-14)
    assert sim.linear_cka(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(exact, abs=1e-14)
    assert sim.unbiased_cka(X, Y, batch_size=100) == pytest.approx(sim.unbiased_cka(X.astype(np.float64),
                                                                                    Y.astype(np.float64)), abs=1e-14)


def test_the_torch_code_path_used_off_cpu_gives_the_same_values(monkeypatch):
    """No GPU here: run the torch implementation of every route (what CUDA tensors use) on CPU tensors."""
    from align._similarity import _common, _moments

    X, Y = _encoder_like(333, 12, 7, seed=9)
    want = {(m, bs): sim.similarity(X, Y, m, batch_size=bs)
            for m in ("rbf_cka", "linear_cka", "procrustes", "rsa") for bs in (None, 50)}
    want_u = sim.unbiased_cka(X, Y, kernel="rbf", batch_size=50)
    torch_ops = _common._TorchOps(CPU)
    for module in (_kernel, _moments):
        monkeypatch.setattr(module, "ops_for", lambda device: torch_ops)
    for (metric, bs), value in want.items():
        assert sim.similarity(X, Y, metric, batch_size=bs) == pytest.approx(value, abs=1e-12), (metric, bs)
    assert sim.unbiased_cka(X, Y, kernel="rbf", batch_size=50) == pytest.approx(want_u, abs=1e-12)
    Z, sq = _centred(X)
    median, route = _median.median_sq_distance_tiled(Z, sq, torch_ops, 64)
    assert route == "float64"  # no float32 pass off CPU (TF32 would void its bound)
    assert median == pytest.approx(np.median(squareform(pdist(Z.numpy(), "sqeuclidean"))), rel=1e-13)
    assert _median.median_sq_distance_tiled(Z, sq, torch_ops, 64, low_precision=True)[0] == pytest.approx(median,
                                                                                                        rel=1e-13)


def _song_unbiased_gram(X, Y):
    """Song et al. (2012) unbiased HSIC on whole float64 Gram matrices with zero diagonals: the naive reference."""
    def hsic(K, L):
        n = K.shape[0]
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0.0)
        np.fill_diagonal(L, 0.0)
        one = np.ones(n)
        return (np.sum(K * L.T) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                - 2.0 * (one @ K @ L @ one) / (n - 2)) / (n * (n - 3))

    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


@pytest.mark.parametrize("batch_size", [None, 7, 64, 999])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_moments_equal_the_naive_formulas_at_sizes_that_do_not_divide_the_chunk(batch_size, dtype):
    # n = 331 rows: 7 and 64 leave a ragged last chunk, 999 is one chunk larger than n; d_x + d_y < n (features route)
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(331, 9)) + 5.0).astype(dtype)
    Y = (X[:, :6] @ rng.normal(size=(6, 5)) + rng.normal(size=(331, 5))).astype(dtype)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    Xc, Yc = X64 - X64.mean(0), Y64 - Y64.mean(0)
    linear = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    r = sim.compare(X, Y, "linear_cka", batch_size=batch_size)
    assert r.settings["route"] == "features"
    assert abs(r.value - linear) < 1e-12
    u = sim.compare(X, Y, "unbiased_cka", batch_size=batch_size)
    assert u.settings["route"] == "features"
    assert abs(u.value - _song_unbiased_gram(X, Y)) < 1e-12


def _neighbour_sets(idx):
    return np.sort(np.asarray(idx), axis=1)


@pytest.mark.parametrize("batch_size", [None, 650, 37])
@pytest.mark.parametrize("normalize", [True, False])
def test_float32_knn_with_planted_ties_has_the_float64_neighbours(batch_size, normalize):
    """Duplicated rows plant exact ties at the k-th neighbour (and float32-only near-ties by tiny offsets): the
    float32 blocks with float64 re-checks must give the float64 engine's neighbour sets; block sizes that do not
    divide n (n = 2,101; 650 and 37 rows), the group filter of ``_top`` with a ragged tail, and plain top-k."""
    from align._similarity import _neighbors

    rng = np.random.default_rng(5)
    base = rng.normal(size=(1200, 24))
    X = np.concatenate([base, base[:600], base[:301] + 1e-9 * rng.normal(size=(301, 24))])  # n = 2,101
    Z = torch.from_numpy(X)
    if normalize:
        Z = Z / Z.norm(dim=1, keepdim=True)
    for k in (1, 4, 10):
        idx, val = _neighbors.knn(Z, k, batch_size, values=True)
        ref_idx, ref_val = _neighbors.knn_float64(Z, k, batch_size)
        np.testing.assert_array_equal(_neighbour_sets(idx), _neighbour_sets(ref_idx))
        np.testing.assert_allclose(np.sort(val.numpy(), 1), np.sort(ref_val.numpy(), 1), rtol=0, atol=1e-12)
        S = (Z @ Z.T).numpy()
        np.fill_diagonal(S, -np.inf)
        kth = np.sort(S, 1)[:, -k]
        assert (np.take_along_axis(S, idx.numpy(), 1) >= kth[:, None] - 1e-12).all()  # truly the k largest


def test_knn_metrics_equal_their_float64_engine(monkeypatch):
    from align._similarity import _neighbors

    rng = np.random.default_rng(2)
    X = rng.normal(size=(700, 40)).astype(np.float32)
    Y = (X[:, :20] + 0.3 * rng.normal(size=(700, 20))).astype(np.float32)
    X[600:] = X[:100]  # duplicated items: exact ties
    fast = {m: sim.similarity(X, Y, m, k=7) for m in ("mutual_knn", "cknna", "cycle_knn")}
    monkeypatch.setattr(_neighbors, "knn", lambda Z, k, b, values=False: _neighbors.knn_float64(Z, k, b))
    for m, v in fast.items():
        assert abs(sim.similarity(X, Y, m, k=7) - v) < 1e-12, m


def test_linear_and_unbiased_cka_on_numpy_never_import_torch():
    """torch costs about a second to import; the numpy moments route of linear / unbiased CKA does not need it."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, numpy as np\n"
            "from align import similarity as sim\n"
            "X = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)\n"
            "Y = X[:, :4] + 0.1\n"
            "sim.linear_cka(X, Y); sim.unbiased_cka(X, Y)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root,
                   env={**__import__("os").environ, "PYTHONPATH": str(root)})
