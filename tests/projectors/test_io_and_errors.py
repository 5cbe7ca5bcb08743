"""Save/load round trips for every kind, provenance metadata, and clear errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

import projectors
from projectors import NotFittedError, list_projectors, load_projector, make_projector

KINDS = {
    "blind": {"n_candidates": 2, "rng": 0},
    "linear": {},
    "procrustes": {},
    "cca": {"n_components": 3},
    "mlp": {"hidden_dim": 8, "max_epochs": 2, "batch_size": 32, "device": "cpu", "project_y": True, "out_dim": 4},
    "glu": {"hidden_dim": 8, "max_epochs": 2, "batch_size": 32, "device": "cpu"},
    "subspace": {"method": "pca", "n_components": [2, 4]},
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 7)).astype(np.float32)
    Y = (X[:, :5] @ rng.standard_normal((5, 5)) + 0.1 * rng.standard_normal((120, 5))).astype(np.float32)
    return X, Y


def test_registry_lists_every_kind():
    kinds = [d["kind"] for d in list_projectors()]
    assert kinds == sorted(KINDS)
    assert all(d["description"] for d in list_projectors())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_save_load_round_trip(kind, data, tmp_path):
    X, Y = data
    p = make_projector(kind, **KINDS[kind]).fit(X, Y)
    path = p.save(tmp_path / f"{kind}.pt", x_encoder="minilm", y_encoder="e5-small", layer=-1, pooling="mean",
                  config={"note": "test"})
    q = load_projector(path)
    assert type(q) is type(p)
    assert q.get_params() == {k: v for k, v in p.get_params().items()}
    assert_allclose(q.transform(X), p.transform(X), rtol=1e-6, atol=1e-6)
    assert_allclose(q.transform_y(Y), p.transform_y(Y), rtol=1e-6, atol=1e-6)
    assert q.metadata_ == {"x_encoder": "minilm", "y_encoder": "e5-small", "layer": -1, "pooling": "mean",
                           "config": {"note": "test"}}
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file
    # dims that don't match the loaded projector
    with pytest.raises(ValueError, match="has 6 features, but .* this .* projector was fitted on 7"):
        q.transform(X[:, :6])


def test_estimator_contract(data):
    X, _ = data
    p = make_projector("mlp", hidden_dim=8, max_epochs=1)
    assert p.get_params()["hidden_dim"] == 8 and p.get_params()["max_epochs"] == 1
    assert not [a for a in vars(p) if a.endswith("_")]  # __init__ learns nothing
    with pytest.raises(NotFittedError, match="not fitted yet"):
        p.transform(X)
    with pytest.raises(TypeError, match="positional argument"):
        projectors.MLPProjector(8)  # keyword-only


def test_bad_input_messages(data, tmp_path):
    X, Y = data
    with pytest.raises(ValueError, match="same number of rows"):
        make_projector("linear").fit(X, Y[:-1])
    with pytest.raises(ValueError, match="same number of rows"):
        make_projector("mlp").fit(X, Y[:-1])
    Xn = X.copy()
    Xn[3, 2] = np.nan
    for kind in ("linear", "mlp", "procrustes"):
        with pytest.raises(ValueError, match="NaN"):
            make_projector(kind).fit(Xn, Y)
    with pytest.raises(ValueError, match="unknown projector kind 'mpl'.*did you mean 'mlp'"):
        make_projector("mpl")
    with pytest.raises(TypeError, match="unknown parameter.*'hidden'"):
        make_projector("mlp", hidden=3)
    with pytest.raises(ValueError, match="unknown loss 'nce'"):
        make_projector("mlp", loss="nce").fit(X, Y)
    with pytest.raises(ValueError, match="out_dim"):
        make_projector("mlp", out_dim=3).fit(X, Y)
    corrupt = tmp_path / "c.pt"
    make_projector("linear").fit(X, Y).save(corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_projector(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a unialign projector"):
        load_projector(other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_projector(tmp_path / "missing.pt")


def test_memmap_inputs_for_trained_kind(data, tmp_path):
    X, Y = data
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    Xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    Ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    a = make_projector("mlp", hidden_dim=8, max_epochs=2, batch_size=32, device="cpu").fit(Xm, Ym)
    b = make_projector("mlp", hidden_dim=8, max_epochs=2, batch_size=32, device="cpu").fit(X, Y)
    assert_allclose(a.transform(Xm), b.transform(X), rtol=1e-5, atol=1e-6)


def test_trained_kind_accepts_tensors(data):
    X, Y = data
    p = make_projector("glu", hidden_dim=8, max_epochs=1, batch_size=32, device="cpu")
    p.fit(torch.from_numpy(X), torch.from_numpy(Y))
    out = p.transform(torch.from_numpy(X))
    assert isinstance(out, torch.Tensor) and out.shape == (120, 5)
    assert_allclose(out.numpy(), p.transform(X), rtol=1e-6)


def test_fit_leaves_the_callers_global_torch_rng_alone():
    import torch

    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    Y = np.random.default_rng(1).normal(size=(40, 5)).astype(np.float32)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_projector("mlp", hidden_dim=8, max_epochs=1).fit(X, Y)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("kind", ["linear", "procrustes", "cca", "mlp"])
def test_constant_features_are_rejected_before_fitting(kind):
    rng = np.random.default_rng(0)
    X, Y = np.ones((30, 4)), rng.normal(size=(30, 3))
    with pytest.raises(ValueError, match="`X` is constant"):
        make_projector(kind).fit(X, Y)
    with pytest.raises(ValueError, match="`Y` is constant"):
        make_projector(kind).fit(rng.normal(size=(30, 4)), np.zeros((30, 3)))
