"""benchmarks/recipes/*.yaml: every paper recipe validates with `unialign run --check` on a data tree of the layout it
documents, and runs end to end with its hub models replaced by tiny local random models of the same kind (timm
ViT, sentence-transformers, a decoder-only Hugging Face language model). The hubs are offline here, so the real
models never run in these tests."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from align.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "benchmarks" / "recipes"
WORDS = ["a", "the", "dog", "cat", "runs", "on", "beach", "red", "car", "sits", "over", "lazy", "fox", "quick", "brown",
         "jumps", "man", "woman", "street", "city"]


def _caption(rng, n_words=6):
    return " ".join(rng.choice(WORDS, n_words))


def _images(folder: Path, names: list[str], rng) -> None:
    from PIL import Image

    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8)).save(path)


def make_data(root: Path, n: dict, images: bool) -> Path:
    """The documented layout under UNIALIGN_DATA with ``n[dataset]`` items each: COCO 2017 captions (COCO JSON),
    the COCO Karpathy split, NoCaps validation (COCO JSON with Open Images fields, 10 captions per image),
    CC3M and WIT as JSON lines. With ``images`` the image files exist (else only the caption files, which is all
    --check reads)."""
    rng = np.random.default_rng(0)
    coco = root / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "val2017").mkdir()
    names = [f"{i:012d}.jpg" for i in range(n["coco"])]
    anns = [{"image_id": i, "id": 10 * i + k, "caption": _caption(rng)} for i in range(n["coco"]) for k in range(5)]
    (coco / "annotations" / "captions_val2017.json").write_text(json.dumps({
        "info": {"year": 2017}, "licenses": [],
        "images": [{"id": i, "file_name": f, "height": 12, "width": 16, "license": 1,
                    "coco_url": f"http://images.cocodataset.org/val2017/{f}"} for i, f in enumerate(names)],
        "annotations": anns}))
    karpathy = [{"filepath": "val2014", "filename": f"COCO_val2014_{i:012d}.jpg", "split": split, "cocoid": i,
                 "sentences": [{"raw": _caption(rng), "tokens": []} for _ in range(5)]}
                for i, split in enumerate(["test"] * n["karpathy"] + ["train"] * 3)]
    (coco / "dataset_coco.json").write_text(json.dumps({"images": karpathy, "dataset": "coco"}))
    nocaps = root / "nocaps"
    (nocaps / "images").mkdir(parents=True)
    nc_names = [f"{i:016x}.jpg" for i in range(n["nocaps"])]
    (nocaps / "nocaps_val_4500_captions.json").write_text(json.dumps({
        "licenses": [], "info": {"version": "0.1"},
        "images": [{"id": i, "open_images_id": f[:-4], "file_name": f, "height": 12, "width": 16,
                    "domain": "in-domain", "coco_url": f"https://s3.amazonaws.com/nocaps/val/{f}"}
                   for i, f in enumerate(nc_names)],
        "annotations": [{"image_id": i, "id": 10 * i + k, "caption": _caption(rng)}
                        for i in range(n["nocaps"]) for k in range(10)]}))
    for name, count in (("cc3m", n["cc3m"]), ("wit", n["wit"])):
        (root / name / "images").mkdir(parents=True)
        lines = [json.dumps({"image": f"{i // 100:05d}/{i:09d}.jpg", "caption": _caption(rng)}) for i in range(count)]
        (root / name / ("train.jsonl" if name == "cc3m" else "wit_1024.jsonl")).write_text("\n".join(lines) + "\n")
    if images:
        _images(coco / "val2017", names, rng)
        _images(coco, [f"val2014/{k['filename']}" for k in karpathy], rng)
        _images(nocaps / "images", nc_names, rng)
        for name, count in (("cc3m", n["cc3m"]), ("wit", n["wit"])):
            _images(root / name / "images", [f"{i // 100:05d}/{i:09d}.jpg" for i in range(count)], rng)
    return root


def _recipes() -> list[Path]:
    return sorted(RECIPES.glob("*.yaml"))


def test_there_are_recipes_for_every_paper():
    names = {p.stem for p in _recipes()}
    assert {"maniparambil2024-cvpr-matching", "maniparambil2024-projectors-select",
            "maniparambil2024-projectors-train", "sail2025-glu-siglip", "platonic2024-mutual-knn"} <= names
    for path in _recipes():
        head = path.read_text().splitlines()[:3]
        assert head[0].startswith("# Recipe: "), path.name  # each starts with its comment block
        assert "unialign run benchmarks/recipes/" + path.name in path.read_text(), path.name


def _papers_numbers(text: str) -> str:
    """The "The paper's numbers" paragraph of a recipe's comment block (up to the next blank comment line)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# The paper's numbers"))
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "#")
    return " ".join(line[2:] for line in lines[start:end])


@pytest.mark.parametrize("recipe", _recipes(), ids=lambda p: p.stem)
def test_each_recipe_states_the_papers_numbers_and_where_they_were_read(recipe):
    """Issue 8: each recipe says which numbers the paper reports, naming the source it read them in, or says plainly
    that it could not verify them; the README's Recipes table has a row for it that does the same."""
    para = _papers_numbers(recipe.read_text())
    assert "see the paper." not in para and "quotes none" not in para, recipe.name
    assert re.search(r"arXiv \d{4}\.\d{5}|github\.com/\w", para), recipe.name  # a source is named
    quoted = re.findall(r"\b\d+(?:\.\d+)?%|\b\d{2}\.\d\b", para)  # percentages and table values such as 62.4
    assert quoted or "could not verify" in para or "none to quote" in para, recipe.name
    readme = (RECIPES.parent / "README.md").read_text()
    section = readme[readme.index("## Recipes"):]
    section = section[:section.index("\n## ", 1)]
    row = next(line for line in section.splitlines() if line.startswith(f"| `{recipe.name}` |"))
    numbers = row.split(" | ")[3]
    assert not numbers.startswith("none quoted"), row
    assert "could not verify" in numbers or "none to quote" in numbers or re.search(r"\d+(?:\.\d+)?%", numbers), row


@pytest.fixture(scope="module")
def full_size_data(tmp_path_factory):
    """Caption files as large as the recipes need (COCO 2017 val >= 320 items, NoCaps >= 500); no images."""
    return make_data(tmp_path_factory.mktemp("data"), {"coco": 330, "karpathy": 40, "nocaps": 510, "cc3m": 300,
                                                       "wit": 64}, images=False)


@pytest.mark.parametrize("recipe", _recipes(), ids=lambda p: p.stem)
def test_recipe_passes_the_check(recipe, full_size_data, monkeypatch, tmp_path):
    monkeypatch.setenv("UNIALIGN_DATA", str(full_size_data))
    res = CliRunner().invoke(main, ["run", str(recipe), "--check", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["valid"] is True and out["n_cells"] > 0
    assert not (tmp_path / "out").exists()  # nothing computed


def test_recipe_check_fails_cleanly_without_the_data(monkeypatch, tmp_path):
    recipe = RECIPES / "maniparambil2024-cvpr-matching.yaml"
    monkeypatch.delenv("UNIALIGN_DATA", raising=False)
    res = CliRunner().invoke(main, ["run", str(recipe), "--check"])
    assert res.exit_code == 1
    assert res.output.strip() == ("error: features.coco_text.dataset: uses $UNIALIGN_DATA, which is not set; export "
                                  "UNIALIGN_DATA=… (the folder it names) or write the path out")
    small = make_data(tmp_path / "small", {"coco": 100, "karpathy": 4, "nocaps": 510, "cc3m": 4, "wit": 4},
                      images=False)
    monkeypatch.setenv("UNIALIGN_DATA", str(small))
    res = CliRunner().invoke(main, ["run", str(recipe), "--check"])
    assert res.exit_code == 1
    assert res.output.strip() == ("error: matching.n_known[0]: 320 known pairs need 320 base items; coco_text has "
                                  "100")


# ---- end to end on tiny local models -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny sentence-transformers model (2-layer BERT + mean pooling + Normalize) and a tiny decoder-only language
    model (2-layer BLOOM with a word-level tokenizer that has a pad token), saved locally with random weights."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import (
        Normalize,
        Pooling,
        Transformer,
    )
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizer,
        BloomConfig,
        BloomModel,
        PreTrainedTokenizerFast,
    )

    d = tmp_path_factory.mktemp("tiny-models")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)}
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(d / "bert")
    tokenizer = BertTokenizer(vocab=vocab)
    assert "[UNK]" not in tokenizer.tokenize(" ".join(WORDS))  # every caption word is in the vocabulary
    tokenizer.save_pretrained(d / "bert")
    st = SentenceTransformer(modules=[Transformer(str(d / "bert")), Pooling(32, "mean"), Normalize()], device="cpu")
    st.save(str(d / "st"))
    words = {w: i for i, w in enumerate(["<pad>", "<unk>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(d / "lm")
    BloomModel(BloomConfig(vocab_size=len(words), hidden_size=32, n_layer=2, n_head=2)).save_pretrained(d / "lm")
    return {"st": d / "st", "lm": d / "lm"}


def tiny_recipe(recipe: Path, models: dict, folder: Path) -> Path:
    """The recipe with tiny local models of the same kind and small sizes: timm:* -> a random vit_tiny at 32 px
    (same pooling, first two blocks for layer sweeps), st:* -> the tiny sentence-transformers model, hf:* -> the tiny
    BLOOM (hidden states 0..2); devices -> CPU; at most two pairs; fewer known pairs, queries, restarts and epochs."""
    cfg = yaml.safe_load(recipe.read_text())
    cfg["pairs"] = cfg["pairs"][:2]
    used = {f for pair in cfg["pairs"] for f in pair}
    for section, key in (("matching", "query"), ("projectors", "test")):
        used |= set((cfg.get(section) or {}).get(key, {}).values())
    cfg["features"] = {k: v for k, v in cfg["features"].items() if k in used}
    for spec in cfg["features"].values():
        opts = {k: v for k, v in (spec.get("encoder_options") or {}).items() if k in ("pooling", "data_config")}
        if spec["encoder"].startswith("timm:"):
            spec["encoder"] = "timm:vit_tiny_patch16_224"
            opts.update(pretrained=False, img_size=32)
            if "layers" in spec:
                spec["layers"] = [0, 1]
        elif spec["encoder"].startswith("st:"):
            spec["encoder"] = f"st:{models['st']}"
        elif spec["encoder"].startswith("hf:"):
            spec["encoder"] = f"hf:{models['lm']}"
            if "layers" in spec:
                spec["layers"] = [0, 1, 2]
        else:
            raise AssertionError(f"{recipe.name}: no tiny stand-in for {spec['encoder']}")
        spec["encoder_options"] = opts
    cfg["seeds"] = cfg.get("seeds", [0])[:2]
    cfg["cache_dir"] = str(folder / "cache")
    if cfg.get("similarity"):
        cfg["similarity"]["permutations"] = min(cfg["similarity"].get("permutations", 0), 3)
    if cfg.get("matching"):
        m = cfg["matching"]
        m.update(n_known=[4], n_query=6, n_splits=1)
        for method in m["methods"]:
            if isinstance(method, dict) and "n_init" in method.get("params", {}):
                method["params"]["n_init"] = 3
    if cfg.get("projectors"):
        for kind in cfg["projectors"]["kinds"]:
            if isinstance(kind, dict):
                kind.setdefault("params", {}).update(max_epochs=2, batch_size=8)
                if "val_fraction" in kind["params"]:
                    kind["params"]["val_fraction"] = 0.25  # 1% of 16 pairs is no validation split
                if "hidden_dim" in kind["params"]:
                    kind["params"]["hidden_dim"] = 16
    path = folder / recipe.name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("small"), {"coco": 12, "karpathy": 10, "nocaps": 10, "cc3m": 16,
                                                        "wit": 14}, images=True)


@pytest.mark.parametrize("recipe", _recipes(), ids=lambda p: p.stem)
def test_recipe_runs_end_to_end_on_tiny_local_models(recipe, tiny_models, small_data, monkeypatch, tmp_path):
    monkeypatch.setenv("UNIALIGN_DATA", str(small_data))
    path = tiny_recipe(recipe, tiny_models, tmp_path)
    check = CliRunner().invoke(main, ["run", str(path), "--check"])
    assert check.exit_code == 0, check.output
    res = CliRunner().invoke(main, ["run", str(path), "--no-progress", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_cells"] == json.loads(check.stdout)["n_cells"] == summary["n_computed"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    cfg = yaml.safe_load(path.read_text())
    # provenance names the models that really ran, and every feature set the cells read
    assert {f: p["encoder"] for f, p in results["provenance"]["features"].items()} == \
           {f: s["encoder"] for f, s in cfg["features"].items()}
    for cell in results["cells"]:
        r = cell["result"]
        if cell["task"] == "matching":
            assert len(r["accuracies"]) == 1 and all(a * 6 == round(a * 6) for a in r["accuracies"])  # k/6 queries
        elif cell["task"] == "similarity" and "sweep" in r:
            M = np.asarray(r["sweep"]["matrix"])
            assert r["sweep_best"] == pytest.approx(M.max()) and M.shape == (2, 3)  # 2 ViT blocks x 3 LM states
        elif cell["task"] == "projectors":
            assert r["n_test"] == 10 and 0 <= r["retrieval"]["query_to_gallery"]["R@1"] <= 1
    assert (tmp_path / "out" / "report.md").is_file()


def test_caption_files_of_the_recipes_resolve_their_images(small_data):
    """captions: reads COCO 2017 and NoCaps validation JSON (COCO format) and the Karpathy split with image paths."""
    from align.data import load_dataset

    coco = load_dataset(f"captions:{small_data}/coco/annotations/captions_val2017.json",
                        image_root=str(small_data / "coco" / "val2017"))
    nocaps = load_dataset(f"captions:{small_data}/nocaps/nocaps_val_4500_captions.json",
                          image_root=str(small_data / "nocaps" / "images"))
    karpathy = load_dataset(f"captions:{small_data}/coco/dataset_coco.json", split="test",
                            image_root=str(small_data / "coco"))
    assert (len(coco), coco.n_captions, coco.format) == (12, 60, "coco")
    assert (len(nocaps), nocaps.n_captions, nocaps.format) == (10, 100, "coco")
    assert (len(karpathy), karpathy.n_captions, karpathy.format) == (10, 50, "karpathy")  # the 3 train images dropped
    assert karpathy.ids[0] == "val2014/COCO_val2014_000000000000.jpg"
    for ds in (coco, nocaps, karpathy):
        assert all(ds.image_path(i).is_file() for i in range(len(ds)))
        assert ds.get(0, "image").size == (16, 12)
