"""Reliability of the similarity metrics: reproducible RSA ranks, k-NN with k >= n, and one-line errors for every
metric on NaN / inf, constant input, too few rows and unworkable magnitudes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from align import similarity as sim

METRICS = sorted(sim.list_metrics())
PARAMS = {"minibatch_cka": {"minibatch_size": 4}, "mutual_knn": {"k": 2}, "cknna": {"k": 2}, "cycle_knn": {"k": 2}}
KNN = ("mutual_knn", "cknna", "cycle_knn")


def _pair(n, dx=5, dy=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) + 1.0
    return X, np.tanh(X @ rng.normal(size=(dx, dy))) + 0.5 * rng.normal(size=(n, dy))


def _tied_pair():
    """Small-integer features: many dissimilarities are equal in exact arithmetic but not in floating point."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=(120, 6)).astype(float)
    X[:, 0] = np.arange(120) % 2
    X[:, 1] = 1 - X[:, 0]  # no constant rows (the correlation dissimilarity needs that)
    Y = np.c_[X[:, :4] + rng.integers(0, 2, size=(120, 4)), X[:, :2]]
    X[7] = X[3]  # a duplicate item: Euclidean distance exactly 0
    return X, Y


def _one_line_error(fn, match, exc=ValueError):
    with pytest.raises(exc, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------------------
# RSA: ties rank the same whatever the chunking
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dissimilarity", ["correlation", "euclidean", "cosine"])
def test_rsa_is_identical_across_batch_sizes_and_ties_exact_ties(dissimilarity):
    X, Y = _tied_pair()
    values = {bs: sim.rsa(X, Y, dissimilarity=dissimilarity, batch_size=bs) for bs in (None, 1, 7, 13, 64, 119)}
    assert len(set(values.values())) == 1, values  # bitwise equal
    # Known answer: Spearman of the RDMs with mathematically equal entries tied (rounded to 9 decimals first).
    expected = spearmanr(np.round(pdist(X, dissimilarity), 9), np.round(pdist(Y, dissimilarity), 9)).statistic
    assert values[None] == pytest.approx(expected, abs=1e-12)
    # Pearson of the RDMs is unaffected by the rounding that ties them (to 1e-10)
    pearson = np.corrcoef(pdist(X, dissimilarity), pdist(Y, dissimilarity))[0, 1]
    assert sim.rsa(X, Y, dissimilarity=dissimilarity, correlation="pearson") == pytest.approx(pearson, abs=1e-10)


# --------------------------------------------------------------------------------------------------------------
# k-NN metrics with k >= n
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", KNN)
@pytest.mark.parametrize("k", [6, 9])
def test_knn_metrics_reject_k_not_below_n_with_the_fix(metric, k):
    X, Y = _pair(6)
    _one_line_error(lambda: sim.similarity(X, Y, metric, k=k),
                    rf"`k` must be < n_samples = 6 .*got k = {k}; pass k <= 5")
    _one_line_error(lambda: sim.permutation_null(X, Y, metric, 3, rng=0, k=k), "`k` must be < n_samples = 6")
    low = 2 if metric == "cknna" else 1
    assert np.isfinite(sim.similarity(X, Y, metric, k=5 if metric != "cknna" else 3))
    _one_line_error(lambda: sim.similarity(X, Y, metric, k=low - 1), f"`k` must be >= {low}")


# --------------------------------------------------------------------------------------------------------------
# Bad input, every metric
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_too_few_rows_is_a_one_line_error_naming_the_minimum(metric):
    need = {"unbiased_cka": 4, "minibatch_cka": 4, "cknna": 4, "rsa": 3}.get(metric, 2)
    X, Y = _pair(need - 1)
    _one_line_error(lambda: sim.similarity(X, Y, metric, **PARAMS.get(metric, {})),
                    f"{metric} needs at least {need} rows")
    _one_line_error(lambda: sim.similarity(X[:0], Y[:0], metric), "at least 1 row")


@pytest.mark.parametrize("metric", METRICS)
def test_nonfinite_values_name_the_first_bad_row_in_any_chunk(metric):
    X, Y = _pair(40)
    Yb = Y.copy()
    Yb[29, 1] = -np.inf
    Yb[33, 0] = np.nan
    params = PARAMS.get(metric, {})
    batch = {} if metric == "minibatch_cka" else {"batch_size": 8}
    _one_line_error(lambda: sim.similarity(X, Yb, metric, **batch, **params),
                    r"`Y` contains NaN or infinite values \(first in row 29\)")
    _one_line_error(lambda: sim.similarity(torch.from_numpy(X), torch.from_numpy(Yb), metric, **params),
                    "`Y` contains NaN or infinite")


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_magnitudes_that_overflow_or_underflow_are_errors_not_nan(metric, scale):
    X, Y = _pair(30)
    _one_line_error(lambda: sim.similarity(X * scale, Y, metric, **PARAMS.get(metric, {})),
                    r"`X` .*(outside \[1e-60, 1e\+60\]|too large to sum).*rescale")
    # inside the range every scale-invariant metric gives the same value as for unit-scale data
    if "isotropic_scale" in sim.list_metrics()[metric].invariances:
        moderate = 1e40 if scale > 1 else 1e-40
        assert sim.similarity(X * moderate, Y, metric, **PARAMS.get(metric, {})) == pytest.approx(
            sim.similarity(X, Y, metric, **PARAMS.get(metric, {})), abs=1e-9)


@pytest.mark.parametrize("metric", METRICS)
def test_constant_input_is_an_error_but_a_constant_column_is_not(metric):
    X, Y = _pair(40)
    params = PARAMS.get(metric, {})
    _one_line_error(lambda: sim.similarity(np.full_like(X, 0.3), Y, metric, **params), "`X` is constant")
    _one_line_error(lambda: sim.similarity(X, torch.full(Y.shape, 2.0, dtype=torch.float64).numpy(), metric,
                                           **params), "`Y` is constant")
    with_col = np.c_[X, np.full(len(X), 7.0)]
    value = sim.similarity(with_col, Y, metric, **params)
    assert np.isfinite(value)
    if metric in ("linear_cka", "unbiased_cka", "rbf_cka", "minibatch_cka", "svcca", "pwcca", "procrustes"):
        # a constant column adds nothing once the features are centred
        assert value == pytest.approx(sim.similarity(X, Y, metric, **params), abs=1e-10)


def test_biased_cka_with_fewer_items_than_features_warns():
    """n < d: unrelated random features score near 1 under biased CKA; the caller is told, not left to trust it."""
    from align import similarity as sim

    gen = np.random.default_rng(0)
    X, Y = gen.standard_normal((20, 500)), gen.standard_normal((20, 500))
    for metric in ("linear_cka", "rbf_cka"):
        with pytest.warns(UserWarning, match=r"biased upward .*\(n = 20, d = 500\)"):
            assert sim.similarity(X, Y, metric) > 0.9  # the artefact the warning is about
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert abs(sim.similarity(X, Y, "unbiased_cka")) < 0.2
        sim.similarity(X.T[:, :20], Y.T[:, :20], "linear_cka")  # n = 500 > d = 20: no warning
