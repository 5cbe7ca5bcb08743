"""Encoder registry, the timm:/st:/hf:/file: loaders on tiny locally built random models (hub offline)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from align.encoders import encoder_options, list_encoders, load_encoder

# -- fixtures: tiny random models saved locally -----------------------------------------------------------------

WORDS = "a the dog cat runs on beach red car ein hund ##s sits over lazy fox quick brown jumps".split()
TEXTS = ["a dog runs on the beach", "red car", "ein hund sits", "the quick brown fox jumps over the lazy dog"]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer, 32-d BERT with a 24-token WordPiece vocabulary, saved with save_pretrained."""
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    # transformers 5 ignores ``vocab_file=`` here (every token became [UNK]); pass the vocabulary itself.
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(d / "bert")
    tokenizer.save_pretrained(d / "bert")
    whole_words = " ".join(w for w in WORDS if not w.startswith("##"))
    ids = AutoTokenizer.from_pretrained(d / "bert")(whole_words)["input_ids"]
    assert vocab.index("[UNK]") not in ids, "the tiny tokenizer must know its own words"
    return d / "bert"


@pytest.fixture(scope="module")
def tiny_st_dir(tiny_bert_dir, tmp_path_factory):
    """The tiny BERT wrapped as a sentence-transformers model (mean pooling + Normalize), saved to a folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    d = tmp_path_factory.mktemp("tiny-st") / "st"
    transformer = Transformer(str(tiny_bert_dir))
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(d))
    return d


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory):
    """A 2-layer, 32-d ViT on 32x32 images (8x8 patches) with its image processor, saved locally."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    d = tmp_path_factory.mktemp("tiny-vit") / "vit"
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)
    ViTModel(config, add_pooling_layer=False).save_pretrained(d)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def images():
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((40 + 3 * i, 50, 3)) * 255).astype(np.uint8)) for i in range(5)]


def _vit(**options):
    """timm's vit_tiny (12 blocks, 192-d) at 32x32 input, random weights fixed by seed 0."""
    torch.manual_seed(0)
    return load_encoder("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, **options)


def _resnet(**options):
    torch.manual_seed(0)
    return load_encoder("timm:test_resnet", pretrained=False, data_config={"input_size": (3, 64, 64)}, **options)


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# -- registry ---------------------------------------------------------------------------------------------------


def test_list_encoders_names_builtins_and_prefixes():
    infos = {info.spec: info for info in list_encoders()}
    assert {"minilm", "e5-small", "efficientnet-lite0"} <= set(infos)
    assert {s.split(":")[0] for s in infos if ":" in s} == {"timm", "st", "hf", "file", "graph", "gnn", "shape", "pointnet", "torchscript"}
    assert infos["minilm"].modality == "text"
    assert infos["efficientnet-lite0"].modality == "image"
    assert infos["file:<path>[:key]"].modality == "features"
    assert all(info.description for info in infos.values())
    assert set(infos["minilm"].to_dict()) == {"spec", "modality", "description"}


def test_unknown_spec_lists_valid_ones_on_one_line():
    with pytest.raises(ValueError, match=r"unknown encoder spec 'mini-lm'.*minilm, e5-small.*timm:<name>") as err:
        load_encoder("mini-lm")
    assert "\n" not in str(err.value)
    assert "did you mean 'minilm'" in str(err.value)
    with pytest.raises(ValueError, match="nothing after 'timm:'"):
        load_encoder("timm:")
    with pytest.raises(ValueError, match="unknown encoder spec 'clip:x'"):
        load_encoder("clip:x")
    with pytest.raises(TypeError, match="`spec` must be a non-empty string"):
        load_encoder(None)


def test_unknown_option_names_valid_options(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="does not take option.*pooling.*its options are key, normalize"):
        load_encoder(f"file:{tmp_path / 'f.npy'}", pooling="cls")
    assert encoder_options("timm:resnet50") is None
    assert "prompt" in encoder_options("e5-small")


def test_cli_encoders_lists_registry_as_json():
    from click.testing import CliRunner

    from align.cli import main

    result = CliRunner().invoke(main, ["encoders"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["spec"] for r in rows] == [info.spec for info in list_encoders()]


# -- file: ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".safetensors"])
def test_file_encoder_returns_requested_rows(tmp_path, rng, suffix):
    from align._io import save_features

    X = rng.standard_normal((37, 5)).astype(np.float32)
    path = save_features(tmp_path / f"feats{suffix}", X)
    enc = load_encoder(f"file:{path}")
    assert (enc.modality, enc.dim, enc.layers, len(enc)) == ("features", 5, ("final",), 37)
    assert_allclose(enc.encode(None), X)
    assert_allclose(enc.encode([3, 0, -1], batch_size=2), X[[3, 0, 36]])
    assert_allclose(enc.encode(range(37), batch_size=10), X)  # batches that do not divide n
    Xn = load_encoder(f"file:{path}", normalize=True).encode(None)
    assert_allclose(np.linalg.norm(Xn, axis=1), 1.0, rtol=1e-6)
    assert_allclose(Xn, X / np.linalg.norm(X, axis=1, keepdims=True), rtol=1e-5)


def test_file_encoder_errors_and_fingerprint(tmp_path, rng):
    path = tmp_path / "f.npy"
    np.save(path, rng.standard_normal((4, 3)).astype(np.float32))
    enc = load_encoder(f"file:{path}")
    with pytest.raises(ValueError, match="row index out of range.*4 rows"):
        enc.encode([4])
    with pytest.raises(TypeError, match="integer row indices"):
        enc.encode([0.5])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(f"file:{tmp_path / 'missing.npy'}")
    with pytest.raises(ValueError, match="`layers` is not available"):
        load_encoder(f"file:{path}", layers=[1])
    before = enc.fingerprint()
    assert load_encoder(f"file:{path}").fingerprint() == before
    assert load_encoder(f"file:{path}", normalize=True).fingerprint() != before
    import os
    import time

    np.save(path, rng.standard_normal((4, 3)).astype(np.float32))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert load_encoder(f"file:{path}").fingerprint() != before


def test_file_encoder_npz_key(tmp_path, rng):
    A, B = rng.standard_normal((3, 2)), rng.standard_normal((3, 4))
    np.savez(tmp_path / "two.npz", a=A, b=B)
    assert_allclose(load_encoder(f"file:{tmp_path / 'two.npz'}:b").encode(None), B.astype(np.float32))
    assert_allclose(load_encoder(f"file:{tmp_path / 'two.npz'}", key="a").encode(None), A.astype(np.float32))
    with pytest.raises(ValueError, match="holds 2 arrays"):
        load_encoder(f"file:{tmp_path / 'two.npz'}")


# -- timm: ------------------------------------------------------------------------------------------------------


def test_timm_vit_final_matches_model_head_and_token_pooling(images):
    enc = _vit(layers="final")
    assert enc.data_config["input_size"] == (3, 32, 32)
    assert not enc.model.training and not any(p.requires_grad for p in enc.model.parameters())
    x = enc.preprocess(images)
    assert x.shape == (5, 3, 32, 32)
    with torch.inference_mode():
        tokens = enc.model.forward_features(x)
        head = enc.model.forward_head(tokens, pre_logits=True)
    # float32 forward passes at another batch size take other BLAS blockings (and thread splits): agreement to
    # float32 rounding of a 12-block model (~1e-5 absolute here), not bit equality
    assert_allclose(enc.encode(images, batch_size=2), head.numpy(), rtol=1e-4, atol=1e-5)
    by_pool = {p: _vit(pooling=p).encode(images) for p in ("cls", "mean", "cls+mean")}
    assert_allclose(by_pool["cls"], tokens[:, 0].numpy(), rtol=1e-4, atol=1e-5)
    assert_allclose(by_pool["mean"], tokens[:, 1:].mean(1).numpy(), rtol=1e-4, atol=1e-5)
    assert_allclose(by_pool["cls+mean"], np.concatenate([by_pool["cls"], by_pool["mean"]], 1), rtol=1e-6)
    assert _vit(pooling="cls+mean").dim == 2 * 192


def test_timm_layer_sweep_is_one_pass_and_matches_manual_blocks(images):
    enc = _vit(layers=["final", 2, -1, "blocks.5"], pooling=None)
    assert enc.layers == ("final", "blocks.2", "blocks.11", "blocks.5")
    assert enc.dims == {"final": 192, "blocks.2": 192, "blocks.11": 192, "blocks.5": 192}
    calls = []
    enc.model.forward_intermediates = _counting(enc.model.forward_intermediates, calls)
    out = enc.encode_layers(images, batch_size=5)
    assert len(calls) == 1  # every layer from one forward pass
    m, x = enc.model, enc.preprocess(images)
    with torch.inference_mode():
        h = m.norm_pre(m._pos_embed(m.patch_embed(x)))
        manual = {}
        for i, block in enumerate(m.blocks):
            h = block(h)
            manual[i] = h
    assert_allclose(out["blocks.2"], manual[2][:, 0].numpy(), rtol=1e-4, atol=1e-5)  # default: class token
    assert_allclose(out["blocks.11"], manual[11][:, 0].numpy(), rtol=1e-4, atol=1e-5)
    mean5 = _vit(layers=[5], pooling="mean").encode(images)
    assert_allclose(mean5, manual[5][:, 1:].mean(1).numpy(), rtol=1e-4, atol=1e-5)
    # the sweep equals single-layer encoders with the same weights
    assert_allclose(_vit(layers="blocks.5").encode(images), out["blocks.5"], rtol=1e-5, atol=1e-6)
    assert_allclose(_vit().encode(images), out["final"], rtol=1e-5, atol=1e-6)


def _counting(fn, calls):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapped


def test_timm_cnn_stages_average_pooled(images):
    enc = _resnet(layers=["final", "layer2", -1])
    assert enc.layers == ("final", "layer2", "layer4")
    out = enc.encode_layers(images)
    x = enc.preprocess(images)
    assert x.shape == (5, 3, 64, 64)
    with torch.inference_mode():
        final, maps = enc.model.forward_intermediates(x, indices=[2, 4])
    assert_allclose(out["layer2"], maps[0].mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    assert_allclose(out["layer4"], maps[1].mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    assert_allclose(out["final"], final.mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)  # resnet's own pool is avg
    assert enc.dims["layer2"] == maps[0].shape[1]
    with pytest.raises(ValueError, match="needs a class token.*pooling='mean'"):
        _resnet(pooling="cls")


def test_timm_bad_layers_and_names():
    with pytest.raises(ValueError, match="out of range.*12 intermediate layers"):
        _vit(layers=[12])
    with pytest.raises(ValueError, match="unknown layer 'block3'.*blocks.3"):
        _vit(layers=["block3"])
    with pytest.raises(ValueError, match="names layer 'blocks.1' twice"):
        _vit(layers=[1, "blocks.1"])
    with pytest.raises(ValueError, match="unknown timm model 'vit_tiny_patch16_2240'.*did you mean"):
        load_encoder("timm:vit_tiny_patch16_2240", pretrained=False)
    with pytest.raises(ValueError, match="`pooling` must be one of"):
        _vit(pooling="max")
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        _vit(dtype="int8")


def test_timm_pretrained_offline_says_how_to_fix():
    import huggingface_hub.constants

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("hub not offline: this test must never download")
    with pytest.raises(OSError, match="pretrained=False"):
        load_encoder("timm:test_vit3")


def test_timm_bfloat16_autocast_close_to_float32(images):
    ref = _vit().encode(images)
    for autocast in (True, False):
        enc = _vit(dtype="bfloat16", autocast=autocast)
        out = enc.encode(images)
        assert out.dtype == np.float32
        assert (_cos(out, ref) > 0.98).all()
    assert next(_vit(dtype="bfloat16", autocast=False).model.parameters()).dtype == torch.bfloat16
    assert next(_vit(dtype="bfloat16").model.parameters()).dtype == torch.float32


def test_timm_normalize_is_l2_of_raw(images):
    raw = _vit().encode(images)
    unit = _vit(normalize=True).encode(images)
    assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_fingerprint_tracks_everything_that_changes_numbers():
    base = _vit()
    same = _vit()
    assert base.weights_digest() == same.weights_digest()
    assert base.fingerprint() == same.fingerprint()
    torch.manual_seed(1)
    other_weights = load_encoder("timm:vit_tiny_patch16_224", pretrained=False, img_size=32)
    variants = {
        "weights": other_weights,
        "layers": _vit(layers=[3]),
        "pooling": _vit(pooling="mean"),
        "normalize": _vit(normalize=True),
        "dtype": _vit(dtype="bfloat16"),
        "autocast": _vit(dtype="bfloat16", autocast=False),
        "preprocessing": _vit(data_config={"crop_pct": 1.0}),
    }
    prints = {name: enc.fingerprint() for name, enc in variants.items()}
    assert other_weights.weights_digest() != base.weights_digest()
    for name, fp in prints.items():
        assert fp != base.fingerprint(), name
    assert len(set(prints.values())) == len(prints)
    assert _vit(device="cpu").fingerprint() == base.fingerprint()  # the device does not key the cache


def test_image_inputs_paths_arrays_and_bad_files(tmp_path, images):
    enc = _vit()
    images[0].save(tmp_path / "a.png")
    arr = np.asarray(images[1])
    out = enc.encode([str(tmp_path / "a.png"), arr, images[2]])
    assert_allclose(out, enc.encode(images[:3]), rtol=1e-5, atol=1e-6)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="could not be decoded"):
        enc.encode([str(tmp_path / "bad.jpg")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        enc.encode([str(tmp_path / "nope.jpg")])
    assert enc.encode([]).shape == (0, 192)


# -- st: --------------------------------------------------------------------------------------------------------


def test_st_equals_sentence_transformers_directly(tiny_st_dir):
    from sentence_transformers import SentenceTransformer

    enc = load_encoder(f"st:{tiny_st_dir}")
    assert (enc.modality, enc.dim) == ("text", 32)
    ref = SentenceTransformer(str(tiny_st_dir), device="cpu").encode(TEXTS)
    out = enc.encode(TEXTS, batch_size=3)
    assert (_cos(out, ref) > 0.9999).all()
    assert_allclose(out, ref, atol=1e-5)


def test_st_hidden_layers_and_normalisation(tiny_st_dir, tiny_bert_dir):
    enc = load_encoder(f"st:{tiny_st_dir}", layers=["final", 0, -1])
    assert enc.layers == ("final", "hidden_states.0", "hidden_states.2")
    out = enc.encode_layers(TEXTS)
    assert_allclose(np.linalg.norm(out["final"], axis=1), 1.0, rtol=1e-5)  # the pipeline's Normalize
    raw = load_encoder(f"st:{tiny_st_dir}", normalize=False).encode(TEXTS)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), out["final"], rtol=1e-5, atol=1e-6)
    # mean pooling of the last hidden state (not normalised) is the pipeline's pre-Normalize output
    assert_allclose(out["hidden_states.2"], raw, rtol=1e-5, atol=1e-6)
    # and equals hf: on the same weights with mean pooling
    hf = load_encoder(f"hf:{tiny_bert_dir}", layers=[0, -1])
    hf_out = hf.encode_layers(TEXTS)
    assert_allclose(hf_out["hidden_states.2"], out["hidden_states.2"], rtol=1e-5, atol=1e-6)
    assert_allclose(hf_out["hidden_states.0"], out["hidden_states.0"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="own pooling"):
        load_encoder(f"st:{tiny_st_dir}", pooling="cls")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(f"st:{tiny_st_dir}-missing")


def test_st_preprocessor_pickles_without_model(tiny_st_dir):
    enc = load_encoder(f"st:{tiny_st_dir}")
    clone = pickle.loads(pickle.dumps(enc.preprocessor))
    assert clone.model is None
    a, b = enc.preprocess(TEXTS), clone(TEXTS)
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key])
    # the fast path equals sentence-transformers' own preprocess
    own = enc.model.preprocess(TEXTS)
    assert torch.equal(own["input_ids"], a["input_ids"])
    assert torch.equal(own["attention_mask"], a["attention_mask"])


def test_st_prompt_goes_through_the_models_own_preprocess(tiny_st_dir):
    from sentence_transformers import SentenceTransformer

    enc = load_encoder(f"st:{tiny_st_dir}", prompt="the ")
    assert enc.preprocessor.model is not None  # not the plain fast path
    ref = SentenceTransformer(str(tiny_st_dir), device="cpu").encode(TEXTS, prompt="the ")
    assert_allclose(enc.encode(TEXTS), ref, atol=1e-5)
    assert enc.fingerprint() != load_encoder(f"st:{tiny_st_dir}").fingerprint()
    assert not np.allclose(enc.encode(TEXTS), load_encoder(f"st:{tiny_st_dir}").encode(TEXTS), atol=1e-3)


@pytest.mark.parametrize("prefix", ["st", "hf"])
def test_hub_names_offline_give_one_line_fix(prefix):
    import huggingface_hub.constants

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("hub not offline: this test must never download")
    with pytest.raises(OSError, match="could not load.*give a local folder") as err:
        load_encoder(f"{prefix}:unialign-tests/no-such-model")
    assert "\n" not in str(err.value)


# -- hf: --------------------------------------------------------------------------------------------------------


def test_hf_text_pooling_known_answers(tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer

    enc = load_encoder(f"hf:{tiny_bert_dir}", pooling="cls+mean")
    assert (enc.modality, enc.dim) == ("text", 64)
    tok = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    model = AutoModel.from_pretrained(str(tiny_bert_dir)).eval()
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    mean = (h * m).sum(1) / m.sum(1)
    out = enc.encode(TEXTS, batch_size=4)
    assert_allclose(out[:, :32], h[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert_allclose(out[:, 32:], mean.numpy(), rtol=1e-5, atol=1e-6)


def test_hf_text_mean_ignores_padding(tiny_bert_dir):
    enc = load_encoder(f"hf:{tiny_bert_dir}", pooling="mean")
    alone = enc.encode(TEXTS[1:2])
    padded = enc.encode(TEXTS, batch_size=4)[1:2]  # padded to the longest sentence in its batch
    assert_allclose(alone, padded, rtol=1e-5, atol=1e-5)


def test_hf_image_cls_mean_and_layers(tiny_vit_dir, images):
    from transformers import ViTModel

    enc = load_encoder(f"hf:{tiny_vit_dir}", layers=["final", 1])
    assert enc.modality == "image"
    assert enc.layers == ("final", "hidden_states.1")
    assert enc.available_layers == ["final", "hidden_states.0", "hidden_states.1", "hidden_states.2"]
    x = enc.preprocess(images)["pixel_values"]
    assert x.shape == (5, 3, 32, 32)
    model = ViTModel.from_pretrained(str(tiny_vit_dir), add_pooling_layer=False).eval()
    with torch.inference_mode():
        res = model(pixel_values=x, output_hidden_states=True)
    out = enc.encode_layers(images, batch_size=2)
    assert_allclose(out["final"], res.last_hidden_state[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert_allclose(out["hidden_states.1"], res.hidden_states[1][:, 0].numpy(), rtol=1e-5, atol=1e-6)
    mean = load_encoder(f"hf:{tiny_vit_dir}", pooling="mean").encode(images)
    assert_allclose(mean, res.last_hidden_state[:, 1:].mean(1).numpy(), rtol=1e-5, atol=1e-6)  # patches only
    with pytest.raises(ValueError, match="out of range.*0..2"):
        load_encoder(f"hf:{tiny_vit_dir}", layers=[3])


def test_hf_preprocessors_pickle(tiny_bert_dir, tiny_vit_dir, images):
    text = load_encoder(f"hf:{tiny_bert_dir}")
    image = load_encoder(f"hf:{tiny_vit_dir}")
    clone_t = pickle.loads(pickle.dumps(text.preprocessor))
    clone_i = pickle.loads(pickle.dumps(image.preprocessor))
    assert torch.equal(clone_t(TEXTS)["input_ids"], text.preprocess(TEXTS)["input_ids"])
    assert torch.equal(clone_i(images)["pixel_values"], image.preprocess(images)["pixel_values"])
    vit = _vit()
    assert torch.equal(pickle.loads(pickle.dumps(vit.preprocessor))(images), vit.preprocess(images))


def test_hf_fingerprint_changes_with_max_length_and_pooling(tiny_bert_dir):
    base = load_encoder(f"hf:{tiny_bert_dir}")
    assert load_encoder(f"hf:{tiny_bert_dir}").fingerprint() == base.fingerprint()
    assert load_encoder(f"hf:{tiny_bert_dir}", max_length=8).fingerprint() != base.fingerprint()
    assert load_encoder(f"hf:{tiny_bert_dir}", pooling="cls").fingerprint() != base.fingerprint()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder("hf:./no/such/folder")


@pytest.mark.gpu
def test_cuda_matches_cpu(images, tiny_bert_dir):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ref = _vit().encode(images)
    assert_allclose(_vit(device="cuda").encode(images), ref, rtol=1e-3, atol=1e-4)
    half = _vit(device="cuda", dtype="bfloat16").encode(images)
    assert (_cos(half, ref) > 0.98).all()
    text_ref = load_encoder(f"hf:{tiny_bert_dir}").encode(TEXTS)
    assert_allclose(load_encoder(f"hf:{tiny_bert_dir}", device="cuda").encode(TEXTS), text_ref, rtol=1e-3, atol=1e-4)
