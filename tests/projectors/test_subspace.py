"""Subspace selection: the held-out choice of k finds a planted shared subspace."""
from __future__ import annotations

import numpy as np
import pytest

from projectors import make_projector


@pytest.fixture(scope="module")
def shared_subspace():
    """4 shared latent factors, hidden among 28 noisy private dimensions on each side."""
    rng = np.random.default_rng(2)
    n, k, d = 600, 4, 32
    Z = rng.standard_normal((n, k))
    X = np.hstack([Z, 1.5 * rng.standard_normal((n, d - k))]) @ np.linalg.qr(rng.standard_normal((d, d)))[0]
    Y = np.hstack([Z @ rng.standard_normal((k, k)), 1.5 * rng.standard_normal((n, d - k))])
    return X + 0.2 * rng.standard_normal(X.shape), Y + 0.2 * rng.standard_normal(Y.shape)


@pytest.mark.parametrize("criterion", ["retrieval", "matching"])
def test_cca_subspace_picks_the_planted_dimension(shared_subspace, criterion):
    X, Y = shared_subspace
    p = make_projector("subspace", method="cca", criterion=criterion, rng=0).fit(X, Y)
    assert sorted(p.scores_) == [2, 4, 8, 16, 32]
    assert p.n_components_ == 4
    assert p.scores_[4] > p.scores_[32] + 0.1
    assert p.transform(X).shape == (600, 4) and p.transform_y(Y).shape == (600, 4)


def test_subspace_in_front_of_another_kind(shared_subspace):
    X, Y = shared_subspace
    p = make_projector("subspace", method="pca", n_components=[4, 32], projector="linear",
                       projector_params={"alpha": 1e-3}).fit(X, Y)
    assert set(p.scores_) == {4, 32}
    assert p.inner_.kind == "linear" and p.inner_.n_features_in_ == p.n_components_
    assert p.transform(X).shape[1] == p.n_components_


def test_single_k_skips_search(shared_subspace):
    X, Y = shared_subspace
    p = make_projector("subspace", n_components=3).fit(X, Y)
    assert p.n_components_ == 3 and p.scores_ == {}


def test_subspace_errors(shared_subspace):
    X, Y = shared_subspace
    with pytest.raises(ValueError, match="unknown method 'ica'"):
        make_projector("subspace", method="ica").fit(X, Y)
    with pytest.raises(ValueError, match="`n_components` must be <= 32"):
        make_projector("subspace", n_components=[4, 64]).fit(X, Y)
    with pytest.raises(ValueError, match="cannot be 'subspace'"):
        make_projector("subspace", projector="subspace").fit(X, Y)
