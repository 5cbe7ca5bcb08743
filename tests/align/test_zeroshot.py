"""Zero-shot classifier builder and zero-shot accuracy (align.evaluation)."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from align.evaluation import (
    ZeroShotResult,
    build_zero_shot_classifier,
    zero_shot_accuracy,
)


class _CountingEncoder:
    """A deterministic text 'encoder': a fixed random vector per distinct text; records every call."""

    def __init__(self, dim: int = 8, seed: int = 0):
        self.dim = dim
        self.seed = seed
        self.calls: list[list[str]] = []
        self.table: dict[str, np.ndarray] = {}

    def vector(self, text: str) -> np.ndarray:
        if text not in self.table:
            gen = np.random.default_rng([self.seed, len(self.table)])
            self.table[text] = gen.normal(size=self.dim) * gen.uniform(0.5, 3.0)  # various norms
        return self.table[text]

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.stack([self.vector(t) for t in texts]).astype(np.float32)


def test_classifier_is_the_renormalised_mean_of_normalised_template_embeddings():
    enc = _CountingEncoder()
    names = ["cat", "dog", "tiny red car"]
    templates = ["a photo of a {}.", "a drawing of a {}.", lambda c: f"{c}!"]
    W = build_zero_shot_classifier(enc, names, templates, batch_size=2)
    assert W.shape == (3, 8) and W.dtype == np.float32
    for c, name in enumerate(names):
        texts = [f"a photo of a {name}.", f"a drawing of a {name}.", f"{name}!"]
        E = np.stack([enc.vector(t) for t in texts]).astype(np.float32).astype(np.float64)
        E /= np.linalg.norm(E, axis=1, keepdims=True)
        expected = E.mean(0) / np.linalg.norm(E.mean(0))
        assert_allclose(W[c], expected, rtol=1e-5, atol=1e-6)
    assert_allclose(np.linalg.norm(W, axis=1), 1.0, rtol=1e-5)
    # class batches: 2 classes x 3 templates, then 1 class x 3 templates
    assert [len(c) for c in enc.calls] == [6, 3]


def test_classifier_without_normalisation_is_the_plain_mean():
    enc = _CountingEncoder()
    W = build_zero_shot_classifier(enc, ["a", "b"], ["x {}", "y {}"], normalize=False)
    expected = (enc.vector("x a").astype(np.float32).astype(np.float64)
                + enc.vector("y a").astype(np.float32).astype(np.float64)) / 2
    assert_allclose(W[0], expected, rtol=1e-5)


def test_classifier_accepts_a_plain_callable_and_rejects_bad_templates():
    enc = _CountingEncoder()
    W = build_zero_shot_classifier(enc.encode, ["a"], ["{}"])
    assert W.shape == (1, 8)
    with pytest.raises(ValueError, match="template"):
        build_zero_shot_classifier(enc, ["a"], ["no placeholder"])
    with pytest.raises(TypeError, match="templates"):
        build_zero_shot_classifier(enc, ["a"], "a {}")
    with pytest.raises(ValueError, match="empty"):
        build_zero_shot_classifier(enc, [], ["{}"])
    with pytest.raises(TypeError, match="class name"):
        build_zero_shot_classifier(enc, ["a", ""], ["{}"])


def test_zero_shot_accuracy_known_answer_and_ties_count_against_the_true_class():
    C = np.eye(4)  # four classes along the axes
    feats = np.array([
        [1.0, 0.1, 0.0, 0.0],   # class 0 -> rank 1
        [0.9, 0.5, 0.0, 0.0],   # true class 1 -> rank 2
        [1.0, 1.0, 1.0, 0.0],   # true 2, tied with 0 and 1 -> rank 3 (ties count against it)
        [0.0, 0.0, 0.0, -1.0],  # true 3, scored lowest -> rank 4
    ])
    res = zero_shot_accuracy(feats, C, np.array([0, 1, 2, 3]), ks=(1, 2, 3))
    assert isinstance(res, ZeroShotResult)
    assert res.true_rank.tolist() == [1, 2, 3, 4]
    assert res.accuracy == {1: 0.25, 2: 0.5, 3: 0.75}
    assert res.chance == {1: 0.25, 2: 0.5, 3: 0.75}
    assert res.predictions[0].tolist()[0] == 0 and res.predictions[1].tolist()[:2] == [0, 1]
    d = res.to_dict()
    assert d["accuracy"]["top1"] == 0.25 and d["n_classes"] == 4 and d["mean_rank"] == pytest.approx(2.5)


def test_zero_shot_accuracy_monotone_in_k_and_chunking_invariant(rng):
    C = rng.normal(size=(37, 16))
    labels = rng.integers(0, 37, size=101)
    feats = C[labels] + rng.normal(scale=2.0, size=(101, 16))
    a = zero_shot_accuracy(feats, C, labels, ks=(1, 5, 10, 37))
    b = zero_shot_accuracy(feats, C, labels, ks=(1, 5, 10, 37), chunk_size=7)
    assert a.accuracy == b.accuracy
    np.testing.assert_array_equal(a.predictions, b.predictions)
    accs = [a.accuracy[k] for k in (1, 5, 10, 37)]
    assert accs == sorted(accs) and accs[-1] == 1.0
    assert 0.0 < accs[0] < 1.0
    # cosine: scaling a class vector changes nothing; the dot product does
    C2 = C.copy()
    C2[labels[0]] *= 100
    assert zero_shot_accuracy(feats, C2, labels, ks=(1, 5)).accuracy[1] == a.accuracy[1]
    assert zero_shot_accuracy(feats, C2, labels, ks=(1, 5), normalize=False).accuracy[1] != a.accuracy[1]


def test_zero_shot_accuracy_validation():
    C = np.eye(3)
    with pytest.raises(ValueError, match="same number of columns"):
        zero_shot_accuracy(np.ones((2, 4)), C, np.array([0, 1]))
    with pytest.raises(ValueError, match="one entry per row"):
        zero_shot_accuracy(np.ones((2, 3)), C, np.array([0]))
    with pytest.raises(ValueError, match="index the 3 classifier rows"):
        zero_shot_accuracy(np.ones((2, 3)), C, np.array([0, 3]))
    with pytest.raises(TypeError, match="integer"):
        zero_shot_accuracy(np.ones((2, 3)), C, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="at most the number of classes"):
        zero_shot_accuracy(np.ones((2, 3)), C, np.array([0, 1]), ks=(5,))
