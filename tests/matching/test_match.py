"""The match() front door: every method on planted problems, validation, the result type, evaluate()."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import matching

from ._helpers import hide

SEEDED = {"faq": {"n_init": 4}, "local_cka": {}, "gw": {}, "entropic_gw": {}, "fused_gw": {}, "procrustes": {},
          "lstsq": {}, "relative": {}, "asif": {}}


def test_list_methods():
    infos = matching.list_methods()
    assert [m.name for m in infos] == [*SEEDED, "blind"] == list(matching.METHODS)  # blind takes no known pairs
    assert all(isinstance(m, matching.MethodInfo) for m in infos)
    d = {m.name: m.to_dict() for m in infos}
    assert d["faq"]["min_known_pairs"] == 0 and "kernels" in d["faq"]["needs"] and d["faq"]["stochastic"]
    assert d["procrustes"]["min_known_pairs"] == 2 and "known pairs" in d["procrustes"]["needs"]
    assert d["faq"]["params"]["n_init"] == 1 and "O(" in d["gw"]["cost"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        infos[0].name = "x"


@pytest.mark.parametrize("method", list(SEEDED))
def test_every_method_recovers_a_planted_isometry_with_seeds(method, paired_features):
    X, Y = paired_features
    Ys, seeds, perm = hide(X, Y, 15, np.random.default_rng(3))
    res = matching.match(X, Ys, method, seeds, rng=0, **SEEDED[method])
    assert res.method == method
    assert res.col_ind.dtype == np.int64 and res.col_ind.shape == (60,)
    np.testing.assert_array_equal(res.col_ind[seeds[:, 0]], seeds[:, 1])
    assert sorted(res.col_ind) == list(range(60))
    assert np.mean(res.col_ind == perm) >= 0.95, method


@pytest.mark.parametrize("method", ["faq", "entropic_gw", "gw"])
def test_structure_only_methods_recover_an_unseeded_isometry(method, rng):
    X = rng.normal(size=(40, 6))
    Q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    Ys, _, perm = hide(X, X @ Q, 0, rng)
    res = matching.match(X, Ys, method, rng=0, **({"n_init": 10} if method == "faq" else {}))
    assert np.mean(res.col_ind == perm) == 1.0


def test_lstsq_recovers_a_general_linear_map(rng):
    X = rng.normal(size=(50, 6))
    Y = X @ rng.normal(size=(6, 9))
    Ys, seeds, perm = hide(X, Y, 12, rng)
    res = matching.match(X, Ys, "lstsq", seeds, alpha=1e-6)
    np.testing.assert_array_equal(res.col_ind, perm)


def _asif_reference(X, Y, pm, topk, power):
    """ASIF's pair scores written out: unit rows (not centred), cosines to the anchors, the ``topk`` largest kept,
    signed power, unit rows, inner products."""
    def rep(Z, anchors):
        Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        R = Z @ Z[anchors].T
        keep = np.argsort(-R, axis=1)[:, :R.shape[1] if topk is None else min(topk, R.shape[1])]
        v = np.take_along_axis(R, keep, axis=1)
        out = np.zeros_like(R)
        np.put_along_axis(out, keep, np.sign(v) * np.abs(v) ** power, axis=1)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    return rep(X, pm[:, 0]) @ rep(Y, pm[:, 1]).T


@pytest.mark.parametrize("topk, power", [(None, 1.0), (4, 3.0), (7, 0.5), (100, 2.0)])
def test_asif_scores_equal_a_naive_reference(topk, power, rng):
    X = rng.normal(size=(30, 5)) + 0.7  # offsets: asif works on the uncentred features, as the paper does
    Y = rng.normal(size=(30, 7)) - 0.3
    pm = np.stack([rng.choice(30, 9, replace=False), rng.choice(30, 9, replace=False)], axis=1)
    res = matching.match(X, Y, "asif", pm, topk=topk, power=power)
    np.testing.assert_allclose(res.similarity, _asif_reference(X, Y, pm, topk, power), rtol=1e-10, atol=1e-12)


def test_asif_default_recovers_a_planted_isometry_with_an_offset(paired_features):
    X, Y = paired_features
    Ys, seeds, perm = hide(X, Y + 1.0, 15, np.random.default_rng(3))
    res = matching.match(X, Ys, "asif", seeds)
    np.testing.assert_array_equal(res.col_ind[seeds[:, 0]], seeds[:, 1])
    assert np.mean(res.col_ind == perm) >= 0.95
    sharp = matching.match(X, Ys, "asif", seeds, topk=3, power=8.0)  # the paper's sparse, sharp setting, few anchors
    assert np.mean(sharp.col_ind == perm) < np.mean(res.col_ind == perm)


def test_refinement_never_loses_seeds_and_reports_iterations(paired_features):
    X, Y = paired_features
    # 2 pairs for an 8-d map: under-determined; the canonical map (zero on the 6 free directions, align._procrustes)
    # scores pairs in the 2-d span of the known pairs only, which cannot tell 60 items apart, on any machine
    Ys, seeds, perm = hide(X, Y, 2, np.random.default_rng(4))
    with pytest.warns(UserWarning, match="not unique"):
        plain = matching.match(X, Ys, "procrustes", seeds)
    with pytest.warns(UserWarning, match="not unique"):
        res = matching.match(X, Ys, "procrustes", seeds, n_refine=5)
    np.testing.assert_array_equal(res.col_ind[seeds[:, 0]], seeds[:, 1])
    assert 1 <= res.n_iter <= 5 and res.converged
    assert np.mean(plain.col_ind == perm) < 0.9
    assert np.mean(res.col_ind == perm) == 1.0


def test_unequal_sizes_through_match(paired_features):
    X, Y = paired_features
    Ys, seeds, perm = hide(X, Y, 10, np.random.default_rng(5))
    keep = np.arange(45)  # X has only the first 45 items; all of them are among Y's 60 rows
    for method in ("faq", "local_cka", "fused_gw", "relative"):
        res = matching.match(X[keep], Ys, method, seeds, rng=0)
        assert res.col_ind.shape == (45,)
        assert np.mean(res.col_ind == perm[keep]) >= 0.9, method
        back = matching.match(Ys, X[keep], method, seeds[:, ::-1], rng=0)
        assert (back.col_ind == -1).sum() == 15, method


def test_torch_inputs(paired_features):
    torch = pytest.importorskip("torch")
    X, Y = paired_features
    Ys, seeds, perm = hide(X, Y, 10, np.random.default_rng(6))
    a = matching.match(torch.from_numpy(X), torch.from_numpy(Ys), "faq", torch.from_numpy(seeds), rng=0)
    b = matching.match(X, Ys, "faq", seeds, rng=0)
    np.testing.assert_array_equal(a.col_ind, b.col_ind)


def test_result_is_frozen_and_serialisable(paired_features):
    X, Y = paired_features
    res = matching.match(X, Y, "relative", [[0, 0], [1, 1], [2, 2]])
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.score = 0.0
    d = res.to_dict()
    assert d["method"] == "relative" and len(d["col_ind"]) == 60 and isinstance(d["score"], float)
    assert "similarity" not in d


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        ({"method": "faqq"}, ValueError, "unknown method 'faqq'.*did you mean 'faq'"),
        ({"partial_match": [[0, 0], [0, 1]]}, ValueError, "first column has duplicates"),
        ({"partial_match": [[0, 99]]}, ValueError, "second column must index rows 0..59"),
        ({"partial_match": np.stack([np.arange(61) % 60, np.arange(61) % 60], 1)}, ValueError,
         "cannot be more known pairs than items"),
        ({"partial_match": [0, 1]}, ValueError, r"shape \(k, 2\)"),
        ({"n_inits": 3}, TypeError, "unknown parameter.*'n_inits'.*n_init"),
        ({"method": "procrustes"}, ValueError, "'procrustes' needs at least 2 known pairs"),
        ({"kernel": "gauss"}, ValueError, "unknown kernel 'gauss'"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, exc, msg, paired_features):
    X, Y = paired_features
    with pytest.raises(exc, match=msg):
        matching.match(X, Y, **kwargs)


def test_nan_and_wrong_shapes_are_rejected(paired_features):
    X, Y = paired_features
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="`X` contains NaN"):
        matching.match(Xn, Y)
    with pytest.raises(ValueError, match="`Y` must be 2-D"):
        matching.match(X, Y[:, 0])
    with pytest.raises(TypeError, match="both be numpy arrays or both torch tensors"):
        torch = pytest.importorskip("torch")
        matching.match(X, torch.from_numpy(Y))


# --- evaluate -------------------------------------------------------------------------------------------------

def test_evaluate_protocol_on_a_planted_isometry(paired_features):
    X, Y = paired_features
    res = matching.evaluate(X, Y, "local_cka", n_known=10, n_query=30, n_splits=3, rng=0)
    assert res.accuracy >= 0.95 and len(res.accuracies) == 3
    assert res.accuracy == pytest.approx(np.mean(res.accuracies))
    r = res.recall
    assert 0 <= r[1] <= r[5] <= r[10] <= 1
    d = res.to_dict()
    assert d["recall"]["5"] == r[5] and d["n_query"] == 30


def test_evaluate_on_unrelated_features_is_near_chance(rng):
    X, Y = rng.normal(size=(80, 5)), rng.normal(size=(80, 5))
    res = matching.evaluate(X, Y, "relative", n_known=10, n_query=40, n_splits=3, rng=0)
    assert res.accuracy < 0.2


def test_evaluate_kmeans_seeds_and_scoreless_methods(paired_features):
    X, Y = paired_features
    res = matching.evaluate(X, Y, "faq", n_known=8, n_query=30, n_splits=2, known_selection="kmeans", rng=0,
                              n_init=3)
    assert res.recall is None and res.known_selection == "kmeans"
    assert res.accuracy >= 0.9


def test_evaluate_is_reproducible(paired_features):
    X, Y = paired_features
    a = matching.evaluate(X, Y + 0.5 * np.random.default_rng(0).normal(size=Y.shape), "faq", n_known=5,
                          n_query=30, n_splits=2, rng=3)
    b = matching.evaluate(X, Y + 0.5 * np.random.default_rng(0).normal(size=Y.shape), "faq", n_known=5,
                          n_query=30, n_splits=2, rng=3)
    assert a.accuracies == b.accuracies


def test_evaluate_rejects_too_many_items(paired_features):
    X, Y = paired_features
    with pytest.raises(ValueError, match=r"`n_known` \+ `n_query` must be <= the number of items \(60\)"):
        matching.evaluate(X, Y, n_known=30, n_query=31)
    with pytest.raises(ValueError, match="same number of rows"):
        matching.evaluate(X, Y[:50])


def test_evaluate_accepts_a_callable_matcher(paired_features):
    X, Y = paired_features

    def oracle(X, Y, partial_match, rng):  # a "peer" that knows X and Y are identical up to the hidden order
        return matching.match(X, Y, "lstsq", partial_match)

    def wrong(X, Y, partial_match, rng):
        return matching.MatchResult(col_ind=np.arange(len(X)), score=0.0, n_iter=0, converged=True, method="id")

    good = matching.evaluate(X, Y, oracle, n_known=10, n_query=30, n_splits=2, rng=0)
    bad = matching.evaluate(X, Y, wrong, n_known=10, n_query=30, n_splits=2, rng=0)
    assert good.method == "oracle" and good.accuracy >= 0.95
    assert bad.accuracy < 0.2


def test_check_params_checks_names_and_values_without_running():
    info = matching.check_params("faq", n_init=3, two_opt="auto", kernel="linear")
    assert info.name == "faq" and info.min_known_pairs == 0
    assert matching.check_params("procrustes").min_known_pairs == 2
    assert matching.check_params("gw", init="product", rng=0).name == "gw"
    assert matching.check_params("asif", topk=None, power=2.0).name == "asif"  # topk=None: all anchors
    for method, params, message in [
        ("faq", {"n_init": 0}, "n_init"),
        ("faq", {"two_opt": "sometimes"}, "two_opt"),
        ("faq", {"init": "nearest"}, "init"),
        ("faq", {"kernel": "cubic"}, "kernel"),
        ("gw", {"init": "seeds"}, "init"),
        ("fused_gw", {"alpha": 1.5}, "alpha"),
        ("asif", {"topk": 0}, "topk"),
        ("asif", {"power": 0.0}, "power"),
        ("entropic_gw", {"epsilon": -1.0}, "epsilon"),
        ("faq", {"bogus": 1}, "unknown parameter"),
        ("faqq", {}, "faqq"),
    ]:
        with pytest.raises(ValueError, match=message):
            matching.check_params(method, **params)


def test_check_method_params_keeps_its_old_tuple():
    from matching._api import check_method_params

    func, min_known = check_method_params("relative", {})
    assert callable(func) and min_known == 2


def test_evaluate_deprecated_names_still_work(paired_features):
    X, Y = paired_features
    new = matching.evaluate(X, Y, "relative", n_known=10, n_query=30, n_splits=2, known_selection="random", rng=0)
    with pytest.warns(DeprecationWarning, match="n_known"):
        old = matching.evaluate(X, Y, "relative", n_seeds=10, n_query=30, n_splits=2, rng=0)
    assert old.accuracies == new.accuracies and old.n_seeds == old.n_known == 10
    d = old.to_dict()
    assert d["n_known"] == d["n_seeds"] == 10 and d["known_selection"] == d["seed_selection"] == "random"
    with pytest.raises(ValueError, match="disagree"), pytest.warns(DeprecationWarning):
        matching.evaluate(X, Y, "relative", n_known=10, n_seeds=12, n_query=30)


def test_evaluate_with_a_separate_query_set(paired_features, rng):
    X, Y = paired_features
    res = matching.evaluate(X[:20], Y[:20], "relative", n_known=10, n_query=30, n_splits=2, rng=0,
                            query=(X[20:], Y[20:]))
    assert res.query and res.n_known == 10 and res.accuracy >= 0.9
    noise = rng.normal(size=(40, X.shape[1]))
    bad = matching.evaluate(X[:20], Y[:20], "relative", n_known=10, n_query=30, n_splits=2, rng=0,
                            query=(noise, Y[20:]))
    assert bad.accuracy < 0.3
    with pytest.raises(ValueError, match="number of query items"):
        matching.evaluate(X[:20], Y[:20], "relative", n_known=10, n_query=41, query=(X[20:], Y[20:]))
    with pytest.raises(ValueError, match="kmeans"):
        matching.evaluate(X[:20], Y[:20], "relative", n_known=10, n_query=30, known_selection="kmeans",
                          query=(X[20:], Y[20:]))


def test_seeds_start_is_doubly_stochastic_and_sharpens_with_temperature(rng):
    import torch

    from matching._api import seeds_start

    Rx = torch.from_numpy(rng.normal(size=(12, 6)))
    Ry = Rx[torch.from_numpy(rng.permutation(12))]
    for t in (1.0, 0.1, 1e-3):
        P = seeds_start(Rx, Ry, t).numpy()
        assert (P >= 0).all() and np.allclose(P.sum(0), 1, atol=1e-8) and np.allclose(P.sum(1), 1, atol=1e-8)
    hot, cold = seeds_start(Rx, Ry, 1.0).numpy(), seeds_start(Rx, Ry, 1e-3).numpy()
    assert cold.max(axis=1).min() > 0.99 > hot.max(axis=1).max()
