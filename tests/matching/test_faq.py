"""Seeded FAQ: known answers, agreement with scipy, restarts, padding, 2-opt, GOAT, errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment, quadratic_assignment

import matching
from matching._faq import _two_opt_delta

from ._helpers import correlated_graphs, planted


def _weighted(n, rng, symmetric=True):
    A = rng.random((n, n))
    return A + A.T if symmetric else A


@pytest.mark.parametrize("symmetric", [True, False])
def test_planted_permutation_of_isomorphic_weighted_graphs_is_recovered(symmetric):
    rng = np.random.default_rng(0)
    n = 50
    A = _weighted(n, rng, symmetric)
    perm = rng.permutation(n)
    B = planted(A, perm)
    seeds = np.stack([np.arange(5), perm[:5]], axis=1)
    res = matching.faq(A, B, seeds, n_init=3, rng=0)
    np.testing.assert_array_equal(res.col_ind, perm)
    assert res.score == pytest.approx((A * A).sum(), rel=1e-12)


def _scipy_max(A, B, seeds, **options):
    order = np.argsort(seeds[:, 0]) if len(seeds) else slice(None)
    return quadratic_assignment(A, B, options=dict(maximize=True, partial_match=seeds[order], **options))


@pytest.mark.parametrize("trial", range(6))
def test_objective_never_worse_than_scipy_from_the_same_start(trial):
    rng = np.random.default_rng(100 + trial)
    n = 40
    A, B = _weighted(n, rng, trial % 2 == 0), _weighted(n, rng, trial % 2 == 0)
    seeds = np.stack([rng.choice(n, 4, replace=False), rng.choice(n, 4, replace=False)], axis=1)
    # barycenter start
    ours = matching.faq(A, B, seeds)
    ref = _scipy_max(A, B, seeds)
    assert ours.score >= ref.fun - 1e-9 * abs(ref.fun)
    # an explicit random doubly stochastic start, given to both
    K = rng.random((n - 4, n - 4))
    for _ in range(500):
        K /= K.sum(0, keepdims=True)
        K /= K.sum(1, keepdims=True)
    P0 = (K + 1.0 / (n - 4)) / 2
    ours = matching.faq(A, B, seeds, init=P0)
    ref = _scipy_max(A, B, seeds, P0=P0)
    assert ours.score >= ref.fun - 1e-9 * abs(ref.fun)


def test_same_path_as_scipy_on_identical_inputs():
    rng = np.random.default_rng(7)
    A, B = _weighted(30, rng), _weighted(30, rng)
    seeds = np.array([[3, 5], [10, 2], [7, 7]])
    ours = matching.faq(A, B, seeds)
    ref = _scipy_max(A, B, seeds)
    np.testing.assert_array_equal(ours.col_ind, ref.col_ind)
    assert ours.n_iter == ref.nit
    assert ours.score == pytest.approx(ref.fun, rel=1e-12)


def test_seed_order_does_not_matter():
    rng = np.random.default_rng(3)
    A, B = _weighted(30, rng), _weighted(30, rng)
    seeds = np.array([[9, 1], [2, 8], [20, 4], [5, 5]])
    a = matching.faq(A, B, seeds, n_init=4, rng=1)
    b = matching.faq(A, B, seeds[::-1], n_init=4, rng=1)
    np.testing.assert_array_equal(a.col_ind, b.col_ind)
    np.testing.assert_array_equal(a.col_ind[seeds[:, 0]], seeds[:, 1])


def test_reproducible_from_rng_and_independent_of_batch_size():
    rng = np.random.default_rng(4)
    A, B = _weighted(25, rng), _weighted(25, rng)
    a = matching.faq(A, B, n_init=7, rng=11, batch_size=7)
    b = matching.faq(A, B, n_init=7, rng=11, batch_size=2)
    c = matching.faq(A, B, n_init=7, rng=np.random.default_rng(11), batch_size=1)
    assert a.score == b.score == c.score
    np.testing.assert_array_equal(a.col_ind, b.col_ind)
    np.testing.assert_array_equal(a.col_ind, c.col_ind)


def test_more_restarts_never_score_lower():
    rng = np.random.default_rng(5)
    for _ in range(3):
        A, B = _weighted(30, rng), _weighted(30, rng)
        one = matching.faq(A, B, n_init=1, rng=0)
        many = matching.faq(A, B, n_init=10, rng=0)
        assert many.score >= one.score
        assert many.n_restarts == 10


def test_unequal_sizes_are_padded_both_ways():
    rng = np.random.default_rng(6)
    n_big, n_small = 40, 30
    B = rng.normal(size=(n_big, n_big))  # zero-mean weights: padding with zeros (dummy nodes) is neutral
    B = B + B.T
    keep = rng.choice(n_big, n_small, replace=False)  # item i of the small graph is node keep[i] of the big one
    A = B[np.ix_(keep, keep)]
    seeds = np.stack([np.arange(8), keep[:8]], axis=1)
    res = matching.faq(A, B, seeds, n_init=5, rng=0)
    assert res.col_ind.shape == (n_small,)
    np.testing.assert_array_equal(res.col_ind, keep)
    # the other way round: rows of the big graph that are not in the small one get -1
    back = matching.faq(B, A, seeds[:, ::-1], n_init=5, rng=0)
    expected = np.full(n_big, -1)
    expected[keep] = np.arange(n_small)
    np.testing.assert_array_equal(back.col_ind, expected)


def test_low_rank_gradient_equals_dense(paired_features):
    X, Y = paired_features
    seeds = np.array([[0, 0], [1, 1], [2, 2], [3, 3]])
    a = matching.match(X, Y, "faq", seeds, rng=0, n_init=3, low_rank=True)
    b = matching.match(X, Y, "faq", seeds, rng=0, n_init=3, low_rank=False)
    np.testing.assert_array_equal(a.col_ind, b.col_ind)
    assert a.score == pytest.approx(b.score, rel=1e-10)
    assert a.n_iter == b.n_iter


def test_two_opt_delta_equals_brute_force():
    rng = np.random.default_rng(8)
    n = 9
    A, B = rng.normal(size=(n, n)), rng.normal(size=(n, n))  # not symmetric, non-zero diagonals
    p = rng.permutation(n)
    delta = _two_opt_delta(A, B[p][:, p])
    base = (A * B[p][:, p]).sum()
    for i, j in itertools.combinations(range(n), 2):
        q = p.copy()
        q[i], q[j] = q[j], q[i]
        assert delta[i, j] == pytest.approx((A * B[q][:, q]).sum() - base, abs=1e-10)


def test_two_opt_never_lowers_the_score_and_keeps_seeds():
    rng = np.random.default_rng(9)
    A, B = _weighted(30, rng), _weighted(30, rng)
    seeds = np.array([[0, 3], [1, 4]])
    plain = matching.faq(A, B, seeds, rng=0)
    refined = matching.faq(A, B, seeds, rng=0, two_opt=True)
    assert refined.score >= plain.score
    assert refined.score == pytest.approx((A * B[refined.col_ind][:, refined.col_ind]).sum(), rel=1e-12)
    np.testing.assert_array_equal(refined.col_ind[seeds[:, 0]], seeds[:, 1])


def test_transport_relaxation_recovers_unseeded_correlated_graphs_where_faq_does_not():
    rng = np.random.default_rng(0)
    n = 60
    A, B = correlated_graphs(n, 0.5, 0.9, rng)
    perm = rng.permutation(n)
    B = planted(B, perm)
    goat = matching.faq(A, B, transport=True, rng=0)
    plain = matching.faq(A, B, rng=0)
    assert np.mean(goat.col_ind == perm) == 1.0
    assert np.mean(plain.col_ind == perm) < 0.5


def test_all_seeded_returns_the_seeds():
    rng = np.random.default_rng(10)
    A = _weighted(5, rng)
    perm = rng.permutation(5)
    res = matching.faq(A, planted(A, perm), np.stack([np.arange(5), perm], axis=1))
    np.testing.assert_array_equal(res.col_ind, perm)
    assert res.n_iter == 0 and res.converged


def test_torch_input_and_float32():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    A = _weighted(30, rng)
    perm = rng.permutation(30)
    B = planted(A, perm)
    seeds = np.stack([np.arange(4), perm[:4]], axis=1)
    res = matching.faq(torch.from_numpy(A), torch.from_numpy(B), seeds, dtype=torch.float32, rng=0)
    np.testing.assert_array_equal(res.col_ind, perm)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("transport", [False, True])
def test_gpu_equals_cpu(paired_features, transport):
    X, Y = paired_features
    seeds = np.array([[0, 0], [1, 1], [2, 2]])
    cpu = matching.match(X, Y, "faq", seeds, rng=0, n_init=8, transport=transport)
    gpu = matching.match(X, Y, "faq", seeds, rng=0, n_init=8, device="cuda", transport=transport)
    np.testing.assert_array_equal(cpu.col_ind, gpu.col_ind)
    assert gpu.score == pytest.approx(cpu.score, rel=1e-9)


@pytest.mark.parametrize(
    "A, B, seeds, kwargs, exc, msg",
    [
        (np.ones((3, 4)), np.ones((3, 3)), None, {}, ValueError, "`A` must be a square"),
        (np.eye(3), np.full((3, 3), np.nan), None, {}, ValueError, "`B` contains NaN"),
        (np.eye(4), np.eye(4), [[0, 1], [0, 2]], {}, ValueError, "duplicates"),
        (np.eye(4), np.eye(4), [[0, 4]], {}, ValueError, "must index rows 0..3"),
        (np.eye(4), np.eye(4), None, {"n_init": 0}, ValueError, "`n_init` must be >= 1"),
        (np.eye(4), np.eye(4), None, {"init": "random"}, ValueError, "unknown init 'random'"),
        (np.eye(4), np.eye(4), None, {"init": np.eye(3)}, ValueError, r"`init` must have shape \(4, 4\)"),
        (np.eye(4), np.eye(4), None, {"init": 2 * np.eye(4)}, ValueError, "doubly stochastic"),
    ],
)
def test_bad_input_gets_a_clear_error(A, B, seeds, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        matching.faq(A, B, seeds, **kwargs)


@pytest.mark.parametrize("symmetric", [True, False])
def test_transport_keeps_seeds_and_recovers_planted_directed_graphs(symmetric):
    rng = np.random.default_rng(12)
    A = _weighted(40, rng, symmetric)
    perm = rng.permutation(40)
    seeds = np.stack([np.arange(4), perm[:4]], axis=1)
    res = matching.faq(A, planted(A, perm), seeds, transport=True, n_init=3, rng=0)
    np.testing.assert_array_equal(res.col_ind, perm)


def _pot_sinkhorn_max(G, reg, tol, max_iter):
    """graspologic's GOAT step: POT's ``sinkhorn`` with unit marginals and regulariser ``-max|G| / reg``."""
    ot = pytest.importorskip("ot")
    m = len(G)
    lam = reg / np.abs(G).max()
    return ot.sinkhorn(np.ones(m), np.ones(m), G, -1.0 / lam, stopThr=tol, numItermax=max_iter, warn=False)


@pytest.mark.parametrize("m, tol, max_iter", [(5, 0.05, 1000), (23, 0.05, 1000), (40, 1e-9, 1000), (40, 1e-9, 7),
                                              (31, 0.05, 3)])
def test_scale_domain_sinkhorn_equals_pots_plan(m, tol, max_iter):
    torch = pytest.importorskip("torch")
    from matching._faq_transport import _sinkhorn_max

    rng = np.random.default_rng(m)
    G = rng.normal(size=(4, m, m)) * np.array([1.0, 10.0, 0.01, 300.0])[:, None, None]  # the scale must not matter
    ours = _sinkhorn_max(torch.from_numpy(G), 100.0, max_iter, tol).numpy()
    for k in range(len(G)):
        np.testing.assert_allclose(ours[k], _pot_sinkhorn_max(G[k], 100.0, tol, max_iter), rtol=0, atol=1e-6)


def test_sinkhorn_chunks_and_log_domain_give_the_same_plan():
    torch = pytest.importorskip("torch")
    from matching._faq_transport import _sinkhorn_knopp, _sinkhorn_max, _sinkhorn_max_log

    G = torch.from_numpy(np.random.default_rng(0).normal(size=(5, 30, 30)))
    whole = _sinkhorn_max(G, 10.0, 1000, 1e-6)
    one_by_one = _sinkhorn_max(G, 10.0, 1000, 1e-6, cache_bytes=1)  # five chunks of one
    torch.testing.assert_close(one_by_one, whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(_sinkhorn_max_log(G, 10.0, 1000, 1e-6), whole, rtol=0, atol=1e-9)
    torch_path = _sinkhorn_knopp(G, 10.0, 1000, 1e-6, use_numpy=False)  # the GPU code path, run on CPU
    torch.testing.assert_close(torch_path, whole, rtol=0, atol=1e-12)


def test_sinkhorn_falls_back_to_the_log_domain_when_the_scalings_leave_floating_point_range(monkeypatch):
    torch = pytest.importorskip("torch")
    from matching import _faq_transport

    G = np.random.default_rng(1).random(size=(3, 20, 20))
    G[1, 0] = -1.0  # in float32, exp(100 (G - max G)) of this row is exp(-200) = 0: K v = 0 and u = inf
    calls = []
    log_domain = _faq_transport._sinkhorn_max_log
    monkeypatch.setattr(_faq_transport, "_sinkhorn_max_log", lambda g, *a: calls.append(len(g)) or log_domain(g, *a))
    Q = _faq_transport._sinkhorn_max(torch.from_numpy(G).float(), 100.0, 1000, 0.05).double().numpy()
    assert calls == [1]  # only problem 1 went to the log domain
    assert np.isfinite(Q).all()
    for k in range(3):
        np.testing.assert_allclose(Q[k], _pot_sinkhorn_max(G[k], 100.0, 0.05, 1000), rtol=0, atol=1e-4)


def test_goat_recovers_planted_features_and_graphs_with_few_seeds(paired_features):
    X, Y = paired_features
    perm = np.random.default_rng(2).permutation(len(X))
    Ys = np.empty_like(Y)
    Ys[perm] = Y
    seeds = np.stack([np.arange(3), perm[:3]], axis=1)
    res = matching.match(X, Ys, "faq", seeds, transport=True, n_init=4, rng=0)
    np.testing.assert_array_equal(res.col_ind, perm)
    rng = np.random.default_rng(3)
    A, B = correlated_graphs(80, 0.3, 0.95, rng)
    gperm = rng.permutation(80)
    res = matching.faq(A, planted(B, gperm), np.stack([np.arange(4), gperm[:4]], axis=1), transport=True,
                       n_init=4, rng=0)
    assert np.mean(res.col_ind == gperm) == 1.0


def test_assignment_shortcut_equals_scipy_and_skips_only_unique_optima():
    from scipy.optimize import linear_sum_assignment

    from matching._assign import assign_max_batch

    rng = np.random.default_rng(4)
    m = 12
    G = rng.normal(size=(4, m, m))
    p = rng.permutation(m)
    G[0, np.arange(m), p] += 10.0  # strict, distinct row maxima: the unique optimum, no LAP
    G[1] = G[0]
    G[1, 0, p[1]] = G[1, 0, p[0]]  # a tie in row 0: the row argmaxes stay distinct, but the optimum may not be unique
    G[2, :, 0] += 10.0  # every row's maximum in column 0: not an assignment
    cols, n_lap = assign_max_batch(G.copy())
    assert n_lap == 3
    np.testing.assert_array_equal(cols[0], p)
    for k in range(4):
        np.testing.assert_array_equal(cols[k], linear_sum_assignment(G[k], maximize=True)[1])


# ---------------------------------------------------------------- the batched engine (issue 16) ------------------


def test_batched_random_starts_equal_one_at_a_time_and_scipys_balancing():
    from scipy.optimize import _qap

    from matching._faq import _random_doubly_stochastic, _random_doubly_stochastic_batch

    m, seeds = 23, np.random.SeedSequence(5).spawn(6)
    batch = _random_doubly_stochastic_batch(np.empty((6, m, m)), [np.random.default_rng(s) for s in seeds])
    for k, s in enumerate(seeds):
        np.testing.assert_array_equal(batch[k], _random_doubly_stochastic(m, np.random.default_rng(s)))
        # the same draw and the same balancing as scipy's P0="randomized" (private helper; compared to 1e-12)
        ref = _qap._doubly_stochastic(np.random.default_rng(s).uniform(size=(m, m)))
        np.testing.assert_allclose(batch[k], ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batch.sum(axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(batch.sum(axis=2), 1, atol=1e-3)


@pytest.mark.parametrize("kernel", ["centered_rbf", "rbf", "cosine", "linear"])
def test_kernels_are_exactly_symmetric_at_the_size_that_broke_it(kernel):
    X = np.random.default_rng(0).normal(size=(820, 16))
    K = matching.kernel_matrix(X, kernel)
    import torch

    assert torch.equal(K, K.T)  # FAQ's symmetric (one product per iteration) path tests exactly this


def test_lap_backends_agree_where_the_optimum_is_unique():
    pytest.importorskip("lap")
    from matching._assign import _lap_solver, _solve_min

    rng = np.random.default_rng(1)
    for m in (2, 7, 40, 150):
        for _ in range(5):
            G = rng.normal(size=(m, m))  # continuous: the optimum is unique with probability one
            ref = linear_sum_assignment(G)[1]
            np.testing.assert_array_equal(_solve_min(G, _lap_solver("lapjv")), ref)
            np.testing.assert_array_equal(_solve_min(G, _lap_solver("lapjv"), projection=True), ref)
    # and whole FAQ runs give the same answer with either solver on weighted (tie-free) inputs
    A, B = _weighted(40, rng), _weighted(40, rng)
    seeds = np.array([[0, 2], [5, 9], [7, 1]])
    a = matching.faq(A, B, seeds, n_init=6, rng=3, lap_solver="lapjv")
    b = matching.faq(A, B, seeds, n_init=6, rng=3, lap_solver="scipy")
    np.testing.assert_array_equal(a.col_ind, b.col_ind)
    assert a.score == pytest.approx(b.score, rel=1e-12)


def test_scipy_solver_follows_scipys_path_on_tied_graphs():
    """lap_solver="scipy" keeps scipy's tie-breaking: the unique-argmin shortcut then needs strict row minima."""
    rng = np.random.default_rng(2)
    A, B = correlated_graphs(40, 0.4, 0.9, rng)  # 0/1 graphs: tied gradients
    seeds = np.stack([np.arange(4), np.arange(4)], axis=1)
    ours = matching.faq(A, B, seeds, lap_solver="scipy")
    ref = _scipy_max(A, B, seeds)
    np.testing.assert_array_equal(ours.col_ind, ref.col_ind)
    assert ours.n_iter == ref.nit


@pytest.mark.parametrize("symmetric", [True, False])
def test_memory_budget_and_batch_size_do_not_change_results(symmetric):
    from matching._faq import restart_batch

    rng = np.random.default_rng(6)
    A, B = _weighted(30, rng, symmetric), _weighted(30, rng, symmetric)
    seeds = np.array([[0, 1], [3, 3]])
    ref = matching.faq(A, B, seeds, n_init=9, rng=4)
    m = 28
    for budget in (1, 6 * m * m * 8 * 2, 6 * m * m * 8 * 4, 1 << 30):
        res = matching.faq(A, B, seeds, n_init=9, rng=4, memory_budget=budget)
        np.testing.assert_array_equal(res.col_ind, ref.col_ind)
        assert res.score == ref.score and res.n_iter == ref.n_iter
    assert restart_batch(9, m, 6, 8, 1) == 1 and restart_batch(9, m, 6, 8, 6 * m * m * 8 * 4) == 4
    assert restart_batch(9, m, 6, 8, 1 << 30) == 9


def test_low_rank_engine_independent_of_batch_size(paired_features):
    X, Y = paired_features
    seeds = np.array([[0, 0], [1, 1], [2, 2]])
    a = matching.match(X, Y, "faq", seeds, rng=0, n_init=7, low_rank=True, batch_size=7)
    b = matching.match(X, Y, "faq", seeds, rng=0, n_init=7, low_rank=True, batch_size=2)
    np.testing.assert_array_equal(a.col_ind, b.col_ind)
    assert a.score == b.score


def test_product_first_and_gather_paths_agree(monkeypatch):
    from matching import _faq_frank_wolfe

    rng = np.random.default_rng(8)
    A, B = _weighted(45, rng), _weighted(45, rng)
    seeds = np.array([[0, 4], [2, 2]])
    first = matching.faq(A, B, seeds, n_init=5, rng=1)
    monkeypatch.setattr(_faq_frank_wolfe, "PRODUCT_FIRST_MAX_M", 0)
    gather = matching.faq(A, B, seeds, n_init=5, rng=1)
    np.testing.assert_array_equal(first.col_ind, gather.col_ind)
    assert first.score == pytest.approx(gather.score, rel=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("product_first", [True, False])
def test_integer_graphs_take_exact_float32_products_with_identical_results(monkeypatch, symmetric, product_first):
    """0/1 and small-integer graphs: the per-iteration product A22 Q B22^T in float32 is exact, so the result is
    bit for bit the float64 engine's (forced by EXACT_F32_BOUND = 0), for both the product-first and gather paths."""
    from matching import _faq_frank_wolfe as fw

    rng = np.random.default_rng(11)
    if symmetric:
        A, B = correlated_graphs(70, 0.3, 0.8, rng)
        W = np.triu(rng.integers(1, 4, size=A.shape), 1)
        A = A * (W + W.T)  # integer weights 1..3 on one side
    else:
        A = (rng.random((70, 70)) < 0.3) * rng.integers(1, 4, size=(70, 70)).astype(float)
        B = (rng.random((70, 70)) < 0.3).astype(float)
    seeds = np.stack([np.arange(7), np.arange(7)], axis=1)
    if not product_first:
        monkeypatch.setattr(fw, "PRODUCT_FIRST_MAX_M", 0)
    used = []
    real = fw._FrankWolfe._aqb
    monkeypatch.setattr(fw._FrankWolfe, "_aqb", lambda self, *a: (used.append(self.exact32), real(self, *a))[1])
    fast = matching.faq(A, B, seeds, n_init=6, rng=3)
    assert used and all(used)
    monkeypatch.setattr(fw, "EXACT_F32_BOUND", 0.0)
    used.clear()
    slow = matching.faq(A, B, seeds, n_init=6, rng=3)
    assert used and not any(used)
    np.testing.assert_array_equal(fast.col_ind, slow.col_ind)
    assert fast.score == slow.score and fast.n_iter == slow.n_iter


def test_exact_float32_products_only_where_float32_holds_every_partial_sum():
    import torch

    from matching._faq_frank_wolfe import EXACT_F32_BOUND, _Operand, exact_in_float32

    def ok(A, B, s=0, dtype=torch.float64):
        return exact_in_float32(_Operand(dense=torch.as_tensor(A, dtype=torch.float64)),
                                _Operand(dense=torch.as_tensor(B, dtype=torch.float64)), s, dtype)

    G = (np.random.default_rng(0).random((50, 50)) < 0.5).astype(float)
    assert ok(G, G) and ok(3 * G, -2 * G)
    assert not ok(G + 0.5, G)  # not integer-valued
    assert not ok(G, G, dtype=torch.float32)  # the working dtype is float32 already
    big = np.sqrt(EXACT_F32_BOUND / 50)
    assert ok(np.floor(big) * G, G) and not ok(np.ceil(big) * G, np.ceil(big) * G)  # 50 * max|A| * max|B| vs 2^24
    assert not ok(np.where(G > 0, np.nan, 0.0), G)
    F = _Operand(factor=torch.ones(50, 3, dtype=torch.float64))
    assert not exact_in_float32(F, F, 0, torch.float64)


def test_bad_engine_options_get_a_clear_error():
    with pytest.raises(ValueError, match="unknown lap_solver 'fast'"):
        matching.faq(np.eye(4), np.eye(4), lap_solver="fast")
    with pytest.raises(ValueError, match="`memory_budget` must be >= 1"):
        matching.faq(np.eye(4), np.eye(4), memory_budget=0)


# ---------------------------------------------------------------- public hooks: starts and LAP callbacks ---------


def test_random_doubly_stochastic_is_scipys_randomized_draw_and_balancing():
    from scipy.optimize import _qap

    for m in (1, 7, 40):
        K = matching.random_doubly_stochastic(m, rng=3)
        assert K.shape == (m, m) and K.dtype == np.float64 and (K > 0).all()
        np.testing.assert_allclose(K.sum(axis=0), 1, atol=1e-3)
        np.testing.assert_allclose(K.sum(axis=1), 1, atol=1e-3)
        ref = _qap._doubly_stochastic(np.random.default_rng(3).uniform(size=(m, m)))  # scipy's P0="randomized"
        np.testing.assert_allclose(K, ref, rtol=0, atol=1e-12)
    tight = matching.random_doubly_stochastic(30, rng=np.random.default_rng(1), tol=1e-10)
    np.testing.assert_allclose(tight.sum(axis=0), 1, atol=1e-10)
    assert not np.array_equal(matching.random_doubly_stochastic(5, rng=1), matching.random_doubly_stochastic(5, rng=2))


def test_random_doubly_stochastic_starts_give_faq_and_scipy_the_same_path():
    rng = np.random.default_rng(12)
    A, B = _weighted(30, rng), _weighted(30, rng)
    seeds = np.array([[0, 3], [5, 5], [9, 1]])
    m = 27
    start = (matching.random_doubly_stochastic(m, rng=4, tol=1e-8) + 1.0 / m) / 2  # faq's init check: 1e-6
    ours = matching.faq(A, B, seeds, init=start)
    ref = _scipy_max(A, B, seeds, P0=start)
    np.testing.assert_array_equal(ours.col_ind, ref.col_ind)
    assert ours.n_iter == ref.nit


@pytest.mark.parametrize("m, kwargs, exc, msg", [
    (0, {}, ValueError, "`m` must be >= 1"),
    (3.5, {}, TypeError, "`m` must be an integer"),
    (3, {"tol": 0.0}, ValueError, "`tol` must be > 0"),
    (3, {"max_iter": 0}, ValueError, "`max_iter` must be >= 1"),
    (3, {"rng": "seed"}, TypeError, "`rng` must be None"),
])
def test_random_doubly_stochastic_rejects_bad_input(m, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        matching.random_doubly_stochastic(m, **kwargs)


def test_a_callable_lap_solver_follows_its_own_path_and_sees_every_lap():
    """A callable wrapping scipy's solver gives exactly lap_solver="scipy" (ties included: 0/1 graphs), and it is
    handed each cost FAQ cannot settle by the unique-argmin shortcut, as a read-only float64 (m, m) array."""
    rng = np.random.default_rng(2)
    A, B = correlated_graphs(40, 0.4, 0.9, rng)
    seeds = np.stack([np.arange(4), np.arange(4)], axis=1)
    seen = []

    def solver(cost):
        assert cost.shape == (36, 36) and cost.dtype == np.float64 and not cost.flags.writeable
        seen.append(cost.copy())
        return linear_sum_assignment(cost)[1]

    ours = matching.faq(A, B, seeds, n_init=3, rng=5, lap_solver=solver)
    ref = matching.faq(A, B, seeds, n_init=3, rng=5, lap_solver="scipy")
    np.testing.assert_array_equal(ours.col_ind, ref.col_ind)
    assert ours.score == ref.score and ours.n_iter == ref.n_iter
    assert seen  # tied 0/1 gradients always need some LAPs
    via_match = matching.match(A, B, "faq", seeds, kernel="linear", rng=5, lap_solver=solver, low_rank=False)
    assert via_match.col_ind.shape == (40,)
    assert matching.check_params("faq", lap_solver=solver).name == "faq"
    with pytest.raises(ValueError, match="unknown lap_solver"):
        matching.check_params("faq", lap_solver="fast")


@pytest.mark.parametrize("bad", [lambda cost: np.zeros(len(cost), dtype=np.int64),  # not a permutation
                                 lambda cost: np.arange(len(cost) - 1),  # wrong length
                                 lambda cost: np.arange(len(cost), dtype=np.float64)])  # not integers
def test_a_callable_lap_solver_that_returns_no_assignment_is_refused(bad):
    A, B = correlated_graphs(20, 0.4, 0.9, np.random.default_rng(0))
    with pytest.raises(ValueError, match="`lap_solver` must return the column of each row of an assignment"):
        matching.faq(A, B, lap_solver=bad)
