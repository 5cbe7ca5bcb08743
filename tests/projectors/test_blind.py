"""The blind projector: fitted from unpaired samples, used and saved like any projector."""
from __future__ import annotations

import numpy as np

from projectors import load_projector, make_projector


def test_blind_projector_maps_a_shuffled_rotated_copy_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 20)) * (1.0 / np.arange(1, 21) ** 0.7)
    Q = np.linalg.qr(rng.normal(size=(20, 20)))[0]
    Y = X @ Q + 0.02 * rng.normal(size=(60, 20))
    perm = rng.permutation(60)
    proj = make_projector("blind", n_candidates=2, rng=0).fit(X, Y[perm])  # rows NOT paired
    Z = np.asarray(proj.transform(X))
    Yc = Y - Y.mean(0)
    Zc = Z - Y.mean(0)
    sims = (Zc / np.linalg.norm(Zc, axis=1, keepdims=True)) @ (Yc / np.linalg.norm(Yc, axis=1, keepdims=True)).T
    assert np.mean(sims.argmax(1) == np.arange(60)) >= 0.9
    path = tmp_path / "blind.pt"
    proj.save(path)
    again = load_projector(path)
    assert np.allclose(np.asarray(again.transform(X)), Z)
    assert again.confidence_["confident"] == proj.confidence_["confident"]
