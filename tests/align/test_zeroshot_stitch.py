"""Stitched encoders (align.app.zeroshot) and `unialign zeroshot`.

Known answer: a linear projector that reproduces EfficientNet-Lite0's own classifier head (fitted by least squares
on random features, so it maps features to logits), with one-hot class vectors, must classify real photos exactly
as the head does.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import projectors
from align.cli import main
from align.data import load_dataset
from align.data._concepts import imagenet_wnids
from align.app.demo import sample_photos
from align.app.zeroshot import StitchedEncoder, dataset_labels_for_classes, load_stitched


@pytest.fixture(scope="module")
def head_projector(tmp_path_factory):
    """(encoder, path of a projector file equal to the classifier head, W, b)."""
    from align.encoders import load_encoder

    enc = load_encoder("efficientnet-lite0")
    W, b = enc.classifier_weights()
    gen = np.random.default_rng(0)
    X = gen.normal(size=(2000, W.shape[1])).astype(np.float32)
    Y = (X.astype(np.float64) @ W.T.astype(np.float64) + b).astype(np.float32)
    proj = projectors.make_projector("linear", alpha=1e-6).fit(X, Y)
    path = tmp_path_factory.mktemp("stitch") / "head.pt"
    proj.save(path, x_encoder="efficientnet-lite0", y_encoder="minilm")
    return enc, path, W, b


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, head_projector):
    """The pip-shipped photos renamed <wnid>_<name>.jpg after the head's own top class (labels = head's answer)."""
    enc, _, _, _ = head_projector
    photos = [p for _, p in sample_photos()][:2]
    logits = enc.classify(enc.encode(photos))
    top = np.argmax(logits, axis=1)
    folder = tmp_path_factory.mktemp("photos")
    wnids = imagenet_wnids()
    for p, c in zip(photos, top):
        shutil.copy(p, folder / f"{wnids[c]}_{p.stem}.jpg")
    return folder, top, logits


def test_stitched_encoder_reproduces_the_head_logits(head_projector):
    enc, path, _, _ = head_projector
    stitched = load_stitched(path)
    assert isinstance(stitched, StitchedEncoder)
    assert stitched.encoder.spec == "efficientnet-lite0" and stitched.target == "minilm"
    assert stitched.dim == 1000 and stitched.modality == "image"
    photos = [p for _, p in sample_photos()][:2]
    Z = stitched.encode(photos)
    logits = enc.classify(enc.encode(photos))
    np.testing.assert_allclose(Z, logits, rtol=1e-3, atol=2e-2)


def test_stitched_encoder_checks_its_parts(head_projector, tmp_path, monkeypatch):
    enc, path, _, _ = head_projector
    proj = projectors.load_projector(path)
    with pytest.raises(ValueError, match="takes 1280-d inputs"):
        StitchedEncoder(_FakeEncoder(dim=7), proj)
    with pytest.raises(ValueError, match="not fitted"):
        StitchedEncoder(enc, projectors.make_projector("linear"))
    with pytest.raises(ValueError, match="source features of encoder 'efficientnet-lite0' but is stitched to 'fake'"):
        StitchedEncoder(_FakeEncoder(dim=1280), proj)
    with pytest.raises(ValueError, match="target features of encoder 'minilm' but is stitched to 'e5-small'"):
        StitchedEncoder(enc, proj, target="e5-small")
    with pytest.raises(ValueError, match="stitched to 'fake'"):
        load_stitched(path, encoder="fake")
    bare = tmp_path / "bare.pt"
    proj.save(bare)
    proj.metadata_ = {}
    with pytest.raises(ValueError, match="records no source encoder"):
        monkeypatch.setattr(projectors, "load_projector", lambda p, **kw: proj)
        load_stitched(bare)


class _FakeEncoder:
    spec, modality = "fake", "image"

    def __init__(self, dim):
        self.dim = dim

    def encode(self, inputs, **kw):  # pragma: no cover - never reached
        raise AssertionError


def test_zeroshot_cli_matches_the_classifier_head(head_projector, photo_folder, tmp_path):
    _, path, _, _ = head_projector
    folder, top, logits = photo_folder
    onehot = tmp_path / "classes.npy"
    np.save(onehot, np.eye(1000, dtype=np.float32))
    res = CliRunner().invoke(main, ["zeroshot", "--projector", str(path), "--images", str(folder),
                                    "--class-features", str(onehot), "--no-progress", "--top-k", "3"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n"] == 2 and out["n_classes"] == 1000 and out["class_vectors"] == "class-features"
    ids = sorted(p.name for p in folder.iterdir())
    for pred in out["predictions"]:
        i = ids.index(pred["id"])
        # labels came from the file names (wnid prefix), and the head's class is top-1
        expected = np.argsort(-logits[i])[:3]
        assert [t["class"] for t in pred["top"]] == expected.tolist()
        assert pred["label"] == int(top[i])
        scores = [t["score"] for t in pred["top"]]
        assert scores == sorted(scores, reverse=True)
    assert out["accuracy"]["accuracy"] == {"top1": 1.0, "top3": 1.0}
    assert out["accuracy"]["chance"]["top1"] == pytest.approx(1e-3)


def test_zeroshot_cli_with_text_classes_and_without_labels(tmp_path):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for _, p in sample_photos()[:1]:
        shutil.copy(p, folder / "picture.jpg")
    # a projector into minilm space (random, 1280 -> 384) and a class list file
    gen = np.random.default_rng(1)
    proj = projectors.make_projector("linear").fit(gen.normal(size=(50, 1280)), gen.normal(size=(50, 384)))
    ppath = tmp_path / "p.pt"
    proj.save(ppath, x_encoder="efficientnet-lite0", y_encoder="minilm")
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\ntemple\n\n")
    res = CliRunner().invoke(main, ["zeroshot", "--projector", str(ppath), "--images", str(folder),
                                    "--classes", str(classes), "--template", "a photo of a {}.", "--no-progress"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_classes"] == 3 and out["class_vectors"] == "templates" and out["accuracy"] is None
    assert "unlabelled" in out["note"]
    assert len(out["predictions"][0]["top"]) == 3
    assert {t["name"] for t in out["predictions"][0]["top"]} == {"cat", "dog", "temple"}


def test_zeroshot_cli_errors(head_projector, tmp_path):
    _, path, _, _ = head_projector
    res = CliRunner().invoke(main, ["zeroshot", "--projector", str(tmp_path / "missing.pt"), "--images", "x"])
    assert res.exit_code == 1 and "does not exist" in res.output
    bad = tmp_path / "c.npy"
    np.save(bad, np.eye(3, dtype=np.float32))
    (tmp_path / "img").mkdir()
    shutil.copy(sample_photos()[0][1], tmp_path / "img" / "a.jpg")
    res = CliRunner().invoke(main, ["zeroshot", "--projector", str(path), "--images", str(tmp_path / "img"),
                                    "--class-features", str(bad), "--no-progress"])
    assert res.exit_code == 1 and "one row per class (1000)" in res.output


def test_labels_map_by_wnid_or_by_name(tmp_path):
    wn = imagenet_wnids()
    for name in (f"{wn[5]}_a.jpg", f"{wn[7]}_b.jpg"):
        shutil.copy(sample_photos()[0][1], tmp_path / name)
    ds = load_dataset(f"imagefolder:{tmp_path}")
    labels, note = dataset_labels_for_classes(ds, [wn[7], "x", wn[5]], ["b", "x", "a"])
    assert labels.tolist() == [2, 0] and note == ""
    labels, note = dataset_labels_for_classes(ds, ["p", "q"], ["p", "q"])
    assert labels is None and "not among the given classes" in note
