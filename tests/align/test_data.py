"""Tests for align.data: the dataset specs, their fields, labels, ids, fingerprints and error messages."""
from __future__ import annotations

import csv
import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from PIL import Image

from align.data import Dataset, imagenet_wnids, list_datasets, load_dataset, load_paired_text
from align.data._concepts import first_lemma, timm_info_dir, with_article

# ----------------------------------------------------------------------------------------------------------------
# helpers


def _png(path: Path, colour=(255, 0, 0), size=(4, 3), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        Image.new("RGB", size, colour).save(path)
    else:
        Image.new(mode, size, colour).save(path)
    return path


def _idx_bytes(arr: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write_idx(path: Path, arr: np.ndarray) -> Path:
    data = _idx_bytes(arr)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------------------------------------------
# registry


def test_list_datasets_names_every_prefix_and_each_loads_or_fails_cleanly():
    specs = [spec for spec, _ in list_datasets()]
    prefixes = {s.split(":", 1)[0] for s in specs}
    assert {"concepts", "imagefolder", "captions", "text", "idx", "multi30k"} <= prefixes
    assert all(desc and isinstance(desc, str) for _, desc in list_datasets())
    for prefix in prefixes - {"concepts"}:  # a bogus target gives a clean, one-line error, never a traceback type
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            load_dataset(f"{prefix}:/nonexistent/xyz")
        assert "\n" not in str(info.value)


def test_unknown_prefix_lists_the_valid_specs(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset spec 'cifar:x'.*concepts:imagenet-1k.*imagefolder:DIR"):
        load_dataset("cifar:x")
    with pytest.raises(ValueError, match=r"write imagefolder:"):
        load_dataset(str(tmp_path))
    with pytest.raises(TypeError, match="`spec` must be"):
        load_dataset(3)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"does not take option\(s\) colour; valid options: template"):
        load_dataset("concepts:imagenet-1k", colour="red")


# ----------------------------------------------------------------------------------------------------------------
# concepts (real text shipped inside timm)


@pytest.fixture(scope="module")
def imagenet_concepts():
    return load_dataset("concepts:imagenet-1k")


def test_imagenet_concepts_follow_timm_class_order(imagenet_concepts):
    ds = imagenet_concepts
    order = (timm_info_dir() / "imagenet_synsets.txt").read_text().split()
    assert isinstance(ds, Dataset)
    assert len(ds) == 1000 and ds.ids == order
    assert_array_equal(ds.labels, np.arange(1000))
    assert ds.classes == [ds.get(i, "lemma") for i in range(1000)]
    assert ds.rows("definition") == ds.ids
    assert_array_equal(ds.item_of_row("prompt"), np.arange(1000))
    assert {ds.modality(f) for f in ds.fields} == {"text"}


def test_public_imagenet_wnids_are_the_class_order(imagenet_concepts):
    wnids = imagenet_wnids()
    assert isinstance(wnids, tuple) and len(wnids) == 1000 and len(set(wnids)) == 1000
    assert list(wnids) == imagenet_concepts.ids
    assert wnids[0] == "n01440764"  # class 0 of every ImageNet-1k head: tench


def test_importing_align_data_reads_no_concept_module():
    code = "import sys, align.data; print('align.data._concepts' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]


def test_known_concept_text(imagenet_concepts):
    ds = imagenet_concepts
    i = ds.ids.index("n01440764")
    assert i == 0
    assert ds.get(i) == "tench"  # default field: lemma
    assert ds.get(i, "lemmas") == "tench, Tinca tinca"
    assert ds.get(i, "definition").startswith("freshwater dace-like game fish of Europe")
    assert ds.get(i, "prompt") == "a photo of a tench."
    alp = ds.ids.index("n09193705")
    assert ds.get(alp, "prompt") == "a photo of an alp."
    assert ds.get(ds.ids.index("n04399382")) == "teddy"


def test_wordnet_concepts_are_the_in21k_synsets():
    ds = load_dataset("concepts:wordnet")
    assert len(ds) == 21843
    assert ds.ids == sorted(ds.ids) and len(set(ds.ids)) == 21843
    assert ds.get(ds.ids.index("n01440764")) == "tench"
    assert ds.get(0, "lemmas") == "organism, being" and ds.ids[0] == "n00004475"
    # documented: teddy bear is an ImageNet-1k class that the fall11 21k release lacks
    assert "n04399382" not in ds.ids
    assert all(ds.get(i, "definition") for i in range(0, 21843, 997))


@pytest.mark.parametrize(
    "word, article",
    [("tench", "a"), ("alp", "an"), ("European fire salamander", "a"), ("hourglass", "an"), ("umbrella", "an"),
     ("unicycle", "a"), ("Indian cobra", "an"), ("one-armed bandit", "a"), ("honeycomb", "a")],
)
def test_article_choice(word, article):
    assert with_article(word) == article


def test_first_lemma_cleans():
    assert first_lemma("tabby, tabby cat") == "tabby"
    assert first_lemma("  great_white  shark , white shark") == "great white shark"


def test_prompt_template_option_and_bad_template():
    ds = load_dataset("concepts:imagenet-1k", template="{lemma}: {definition}")
    assert ds.get(0, "prompt").startswith("tench: freshwater")
    with pytest.raises(ValueError, match=r"containing \{lemma\}"):
        load_dataset("concepts:imagenet-1k", template="a photo")
    with pytest.raises(ValueError, match="unknown placeholder"):
        load_dataset("concepts:imagenet-1k", template="{lemma} {colour}")
    with pytest.raises(ValueError, match=r"concepts:imagenet-1k, concepts:wordnet"):
        load_dataset("concepts:imagenet-21k")


def test_concept_fields_and_fingerprints(imagenet_concepts):
    ds = imagenet_concepts
    with pytest.raises(ValueError, match=r"has no field 'image'; use --field with one of: lemma, lemmas"):
        ds.get(0, "image")
    prints = {f: ds.fingerprint(f) for f in ds.fields}
    assert len(set(prints.values())) == len(ds.fields)
    assert load_dataset("concepts:imagenet-1k").fingerprint("definition") == prints["definition"]
    other = load_dataset("concepts:imagenet-1k", template="a picture of {a} {lemma}.")
    assert other.fingerprint("prompt") != prints["prompt"]
    assert other.fingerprint("lemma") == prints["lemma"]


def test_loading_concepts_does_not_import_torch():
    code = ("import sys; from align.data import load_dataset; load_dataset('concepts:wordnet'); "
            "print('torch' in sys.modules, 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ----------------------------------------------------------------------------------------------------------------
# image folders


def test_class_subfolders(tmp_path):
    _png(tmp_path / "dog" / "b.png", (0, 0, 255))
    _png(tmp_path / "cat" / "z.png", (255, 0, 0))
    _png(tmp_path / "cat" / "deep" / "a.png", (0, 255, 0))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    _png(tmp_path / ".hidden" / "x.png")
    _png(tmp_path / "dog" / ".x.png")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.ids == ["cat/deep/a.png", "cat/z.png", "dog/b.png"]
    assert_array_equal(ds.labels, [0, 0, 1])
    assert ds.classes == ["cat", "dog"] and ds.label_source == "folder" and not ds.imagenet_labels
    img = ds.get(2)
    assert img.mode == "RGB" and img.size == (4, 3) and img.getpixel((0, 0)) == (0, 0, 255)
    assert ds.modality() == "image" and ds.rows("image") == ds.ids


@pytest.mark.parametrize("mode, colour, expected", [("L", 77, (77, 77, 77)), ("RGBA", (10, 20, 30, 128), (10, 20, 30)),
                                                    ("P", 5, None)])
def test_images_come_back_rgb(tmp_path, mode, colour, expected):
    _png(tmp_path / "x.png", colour, mode=mode)
    img = load_dataset(f"imagefolder:{tmp_path}").get(0)
    assert img.mode == "RGB"
    if expected is not None:
        assert img.getpixel((1, 1)) == expected


def test_imagenet_style_names_map_to_imagenet_class_index(tmp_path):
    for name in ("n01443537_goldfish.JPEG", "n01440764_tench.JPEG", "n15075141_toilet_tissue.JPEG"):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / name, format="JPEG")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.ids[0] == "n01440764_tench.JPEG"
    assert_array_equal(ds.labels, [0, 1, 999])
    assert ds.imagenet_labels and ds.label_source == "wnid"
    assert len(ds.classes) == 1000 and ds.classes[1] == "goldfish"


def test_wnid_subfolders_map_to_imagenet_class_index(tmp_path):
    _png(tmp_path / "n01443537" / "1.png")
    _png(tmp_path / "n01440764" / "2.png")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert_array_equal(ds.labels, [0, 1]) and ds.imagenet_labels
    assert ds.classes[:2] == ["tench", "goldfish"]


def test_wnids_outside_imagenet_1k_index_their_own_classes(tmp_path):
    _png(tmp_path / "n00004475_organism.png")
    _png(tmp_path / "n01440764_tench.png")
    _png(tmp_path / "n99999999_mystery_thing.png")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert not ds.imagenet_labels
    assert_array_equal(ds.labels, [0, 1, 2])
    assert ds.classes == ["organism", "tench", "mystery thing"]


def test_flat_and_mixed_folders(tmp_path):
    _png(tmp_path / "flat" / "b.png")
    _png(tmp_path / "flat" / "a.png")
    flat = load_dataset(f"imagefolder:{tmp_path / 'flat'}")
    assert flat.ids == ["a.png", "b.png"] and flat.labels is None and flat.classes is None
    with pytest.raises(ValueError, match="label_from='folder' needs images in class sub-folders"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}", label_from="folder")
    with pytest.raises(ValueError, match=r"label_from='wnid' needs .*got 'a.png'"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}", label_from="wnid")
    _png(tmp_path / "flat" / "cls" / "c.png")
    with pytest.raises(ValueError, match="mixes top-level images"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}")
    assert load_dataset(f"imagefolder:{tmp_path / 'flat'}", label_from="none").labels is None


def test_imagefolder_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="is not a directory"):
        load_dataset(f"imagefolder:{tmp_path / 'empty' / 'readme.txt'}")
    with pytest.raises(ValueError, match="names no image folder"):
        load_dataset("imagefolder:")
    with pytest.raises(ValueError, match="label_from"):
        load_dataset(f"imagefolder:{tmp_path}", label_from="sometimes")


def test_unreadable_image_names_the_file_and_the_fix(tmp_path):
    _png(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    _png(tmp_path / "trunc.png", size=(64, 64))
    data = (tmp_path / "trunc.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.get(ds.ids.index("good.png")).mode == "RGB"
    for name in ("broken.jpg", "trunc.png"):
        with pytest.raises(ValueError, match=rf"cannot read image '.*{name}'.*replace or delete the file"):
            ds.get(ds.ids.index(name))


def test_imagefolder_fingerprint_tracks_paths_and_bytes(tmp_path):
    a = _png(tmp_path / "c" / "a.png", (9, 9, 9), size=(16, 16))
    _png(tmp_path / "c" / "b.png", (8, 8, 8))
    fp = load_dataset(f"imagefolder:{tmp_path}").fingerprint()
    assert len(fp) == 64 and load_dataset(f"imagefolder:{tmp_path}").fingerprint("image") == fp
    _flip_byte(a, offset=len(a.read_bytes()) // 2)  # same size, one bit different
    fp2 = load_dataset(f"imagefolder:{tmp_path}").fingerprint()
    assert fp2 != fp
    a.rename(tmp_path / "c" / "a2.png")  # same bytes, another name (and order)
    assert load_dataset(f"imagefolder:{tmp_path}").fingerprint() not in (fp, fp2)


# ----------------------------------------------------------------------------------------------------------------
# captions


@pytest.fixture
def caption_images(tmp_path):
    _png(tmp_path / "imgs" / "a.png", (255, 0, 0))
    _png(tmp_path / "imgs" / "b.png", (0, 255, 0))
    _png(tmp_path / "imgs" / "c.png", (0, 0, 255))
    return tmp_path


def test_coco_captions(caption_images):
    coco = {
        "images": [{"id": 7, "file_name": "imgs/b.png"}, {"id": 3, "file_name": "imgs/a.png"},
                   {"id": 9, "file_name": "imgs/c.png"}],
        "annotations": [{"id": 1, "image_id": 3, "caption": "A red square."},
                        {"id": 2, "image_id": 7, "caption": " A green square. "},
                        {"id": 3, "image_id": 3, "caption": "Red."}],
    }
    path = caption_images / "captions_val.json"
    path.write_text(json.dumps(coco))
    ds = load_dataset(f"captions:{path}")
    assert ds.format == "coco" and len(ds) == 2  # image 9 has no caption: dropped
    assert ds.ids == ["imgs/b.png", "imgs/a.png"]
    assert ds.rows("caption") == ["imgs/b.png#0", "imgs/a.png#0", "imgs/a.png#1"]
    assert_array_equal(ds.item_of_row("caption"), [0, 1, 1])
    assert_array_equal(ds.item_of_row("image"), [0, 1])
    assert ds.get(0, "caption") == "A green square." and ds.get(2, "caption") == "Red."
    assert ds.get(1).getpixel((0, 0)) == (255, 0, 0)
    assert ds.modality("caption") == "text" and ds.modality("image") == "image" and ds.default_field == "image"
    with pytest.raises(ValueError, match="has no splits"):
        load_dataset(f"captions:{path}", split="test")


def test_karpathy_split_json(caption_images):
    data = {"dataset": "toy", "images": [
        {"filepath": "imgs", "filename": "a.png", "split": "train", "sentences": [{"raw": "red one"}, {"raw": "red"}]},
        {"filepath": "imgs", "filename": "b.png", "split": "test", "sentences": [{"raw": "green one"}]},
        {"filepath": "imgs", "filename": "c.png", "split": "restval", "sentences": [{"tokens": ["blue", "one"]}]},
    ]}
    path = caption_images / "dataset_toy.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(data, f)
    full = load_dataset(f"captions:{path}")
    assert full.format == "karpathy" and full.ids == ["imgs/a.png", "imgs/b.png", "imgs/c.png"]
    assert full.n_captions == 4 and full.get(3, "caption") == "blue one"
    test = load_dataset(f"captions:{path}", split="test")
    assert test.ids == ["imgs/b.png"] and test.texts("caption") == ["green one"]
    assert test.get(0).getpixel((0, 0)) == (0, 255, 0)
    assert load_dataset(f"captions:{path}", split="train,restval").ids == ["imgs/a.png", "imgs/c.png"]
    with pytest.raises(ValueError, match=r"no image is in split \['val'\]; the file has splits \['restval', 'test'"):
        load_dataset(f"captions:{path}", split="val")


def test_jsonl_and_csv_group_captions_by_image(caption_images):
    root = caption_images
    (root / "caps.jsonl").write_text(
        json.dumps({"image": "imgs/a.png", "captions": ["one", "two"]}) + "\n\n"
        + json.dumps({"image": "imgs/b.png", "caption": "three"}) + "\n"
        + json.dumps({"image": "imgs/a.png", "caption": "four"}) + "\n"
    )
    ds = load_dataset(f"captions:{root / 'caps.jsonl'}")
    assert ds.ids == ["imgs/a.png", "imgs/b.png"]
    assert ds.texts("caption") == ["one", "two", "four", "three"]
    assert_array_equal(ds.item_of_row("caption"), [0, 0, 0, 1])

    with open(root / "caps.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows([["imgs/c.png", "blue, very blue"], ["imgs/a.png", "red"], ["imgs/c.png", "blue again"]])
    ds = load_dataset(f"captions:{root / 'caps.csv'}")
    assert ds.ids == ["imgs/c.png", "imgs/a.png"] and ds.texts("caption") == ["blue, very blue", "blue again", "red"]

    (root / "caps.tsv").write_text(
        "file_name\tcaption_1\tcaption_2\tsplit\nimgs/a.png\tx\ty\ttest\nimgs/b.png\tz\t\ttrain\n"
    )
    ds = load_dataset(f"captions:{root / 'caps.tsv'}", split="test")
    assert ds.ids == ["imgs/a.png"] and ds.texts("caption") == ["x", "y"]
    assert load_dataset(f"captions:{root / 'caps.tsv'}").n_captions == 3


def test_image_root_option_and_missing_images(caption_images, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    path = other / "caps.jsonl"
    path.write_text(json.dumps({"image": "a.png", "caption": "red"}) + "\n")
    ds = load_dataset(f"captions:{path}")
    assert ds.get(0, "caption") == "red"  # text needs no image
    with pytest.raises(FileNotFoundError, match="pass image_root="):
        ds.get(0, "image")
    with pytest.raises(FileNotFoundError, match="pass image_root="):
        ds.fingerprint("image")
    ds = load_dataset(f"captions:{path}", image_root=caption_images / "imgs")
    assert ds.get(0).getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(FileNotFoundError, match="image_root"):
        load_dataset(f"captions:{path}", image_root=caption_images / "nope")


def test_caption_fingerprints(caption_images):
    path = caption_images / "caps.jsonl"
    path.write_text(json.dumps({"image": "imgs/a.png", "captions": ["one", "two"]}) + "\n")
    ds = load_dataset(f"captions:{path}")
    fp_img, fp_cap = ds.fingerprint("image"), ds.fingerprint("caption")
    assert fp_img != fp_cap and load_dataset(f"captions:{path}").fingerprint("caption") == fp_cap
    path.write_text(json.dumps({"image": "imgs/a.png", "captions": ["one", "tw0"]}) + "\n")
    assert load_dataset(f"captions:{path}").fingerprint("caption") != fp_cap
    assert load_dataset(f"captions:{path}").fingerprint("image") == fp_img
    _flip_byte(caption_images / "imgs" / "a.png", offset=40)
    assert load_dataset(f"captions:{path}").fingerprint("image") != fp_img


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("bad.json", '{"images": [', r"not valid JSON \(.* at line 1 column"),
        ("bad.jsonl", '{"image": "a.png", "caption": "x"}\n{"image": ', "line 2 is not valid JSON"),
        ("nocap.jsonl", '{"image": "a.png", "label": 3}\n', "no caption column"),
        ("noimg.csv", "caption,foo\nx,y\n", "no image column"),
        ("extra.csv", "image,caption\na.png,x,y\n", "more cells than the header"),
        ("empty.csv", "", "is empty"),
        ("odd.json", '{"foo": 1}', "neither COCO"),
        ("coco.json", '{"images": [{"id": 1, "file_name": "a"}], "annotations": [{"image_id": 2, "caption": "x"}]}',
         "not in 'images'"),
        ("caps.xml", "<x/>", "unknown format"),
        ("blank.jsonl", '{"image": "a.png", "caption": "  "}\n', "holds no captioned images"),
    ],
)
def test_malformed_caption_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match):
        load_dataset(f"captions:{tmp_path / name}")


def test_missing_captions_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="captions file .* does not exist"):
        load_dataset(f"captions:{tmp_path / 'nope.json'}")


# ----------------------------------------------------------------------------------------------------------------
# line-aligned text


def test_text_lines_ids_and_gzip(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_bytes("first line\r\n\nthird, ünïcode\n".encode())
    ds = load_dataset(f"text:{plain}")
    assert len(ds) == 3 and ds.ids == ["1", "2", "3"]
    assert [ds.get(i) for i in range(3)] == ["first line", "", "third, ünïcode"]
    assert ds.modality() == "text" and ds.fields == ("text",)
    gz = tmp_path / "a.txt.gz"
    with gzip.open(gz, "wb") as f:
        f.write(plain.read_bytes())
    dz = load_dataset(f"text:{gz}")
    assert dz.texts() == ds.texts() and dz.fingerprint() == ds.fingerprint()
    (tmp_path / "b.txt").write_text("first line\n\nthird, unicode\n")
    assert load_dataset(f"text:{tmp_path / 'b.txt'}").fingerprint() != ds.fingerprint()


def test_paired_text(tmp_path):
    (tmp_path / "x.en").write_text("a dog\na cat\n")
    (tmp_path / "x.de").write_text("ein Hund\neine Katze")
    en, de = load_paired_text(f"text:{tmp_path / 'x.en'}", f"text:{tmp_path / 'x.de'}")
    assert en.ids == de.ids == ["1", "2"] and de.get(1) == "eine Katze"
    (tmp_path / "y.de").write_text("ein Hund\n")
    with pytest.raises(ValueError, match="has 2 lines but .* has 1"):
        load_paired_text(f"text:{tmp_path / 'x.en'}", f"text:{tmp_path / 'y.de'}")
    _png(tmp_path / "img" / "a.png")
    with pytest.raises(ValueError, match="needs text datasets"):
        load_paired_text(f"text:{tmp_path / 'x.en'}", f"imagefolder:{tmp_path / 'img'}")


def test_text_bad_inputs(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="is empty"):
        load_dataset(f"text:{tmp_path / 'empty.txt'}")
    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8 text \(bad byte at line 2\); convert it"):
        load_dataset(f"text:{tmp_path / 'latin1.txt'}")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a valid gzip file"):
        load_dataset(f"text:{tmp_path / 'bad.gz'}")
    with pytest.raises(FileNotFoundError, match="text file .* does not exist"):
        load_dataset(f"text:{tmp_path / 'missing.txt'}")
    with pytest.raises(ValueError, match="is a directory"):
        load_dataset(f"text:{tmp_path}")
    with pytest.raises(ValueError, match="does not take option"):
        load_dataset(f"text:{tmp_path / 'empty.txt'}", split="x")


def test_multi30k_spec_errors(monkeypatch, tmp_path):
    monkeypatch.delenv("UNIALIGN_DATA", raising=False)
    with pytest.raises(ValueError, match="set UNIALIGN_DATA"):
        load_dataset("multi30k:test.en")
    with pytest.raises(ValueError, match=r"unknown Multi30k split 'test\.fr'.*multi30k:val\.de"):
        load_dataset("multi30k:test.fr", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="check UNIALIGN_DATA"):
        load_dataset("multi30k:val.en", root=tmp_path)


def test_multi30k_real(shared_data, monkeypatch):
    monkeypatch.setenv("UNIALIGN_DATA", str(shared_data))
    en, de = load_paired_text("multi30k:test.en", "multi30k:test.de")
    assert len(en) == len(de) == 1000
    assert en.get(0) == "A man in an orange hat starring at something."
    assert de.get(0) == "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
    assert en.fingerprint() != de.fingerprint()
    assert load_dataset(f"text:{shared_data / 'multi30k' / 'test_2016_flickr.en.gz'}").fingerprint() == en.fingerprint()
    assert len(load_dataset("multi30k:val.de")) == 1014


# ----------------------------------------------------------------------------------------------------------------
# IDX


@pytest.fixture
def idx_files(tmp_path, rng):
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 0, 1, 3, 2], dtype=np.uint8)
    return (_write_idx(tmp_path / "img-idx3-ubyte.gz", images), _write_idx(tmp_path / "lab-idx1-ubyte", labels),
            images, labels)


def test_idx_images_and_labels(idx_files, tmp_path):
    img_path, lab_path, images, labels = idx_files
    ds = load_dataset(f"idx:{img_path},{lab_path}")
    assert len(ds) == 5 and ds.ids == ["0", "1", "2", "3", "4"]
    assert_array_equal(ds.labels, labels) and ds.classes == ["0", "1", "2", "3"]
    img = ds.get(2)
    assert img.mode == "RGB" and img.size == (3, 4)
    assert_array_equal(np.asarray(img), np.repeat(images[2][:, :, None], 3, axis=2))
    assert_array_equal(ds.pixels, images)
    named = load_dataset(f"idx:{img_path},{lab_path}", classes=["a", "b", "c", "d"])
    assert named.classes == ["a", "b", "c", "d"]
    unlabelled = load_dataset(f"idx:{img_path}")
    assert unlabelled.labels is None and unlabelled.classes is None and len(unlabelled) == 5


def test_idx_colour_images(tmp_path, rng):
    images = rng.integers(0, 256, size=(2, 5, 6, 3), dtype=np.uint8)
    ds = load_dataset(f"idx:{_write_idx(tmp_path / 'rgb.idx', images)}")
    assert_array_equal(np.asarray(ds.get(1)), images[1])


def test_idx_fingerprint_is_content_based(idx_files, tmp_path):
    img_path, lab_path, images, _ = idx_files
    fp = load_dataset(f"idx:{img_path},{lab_path}").fingerprint()
    plain = _write_idx(tmp_path / "plain.idx", images)
    assert load_dataset(f"idx:{plain}").fingerprint() == fp  # gzip or not, same pixels
    _flip_byte(plain)
    assert load_dataset(f"idx:{plain}").fingerprint() != fp


def test_idx_bad_inputs(idx_files, tmp_path):
    img_path, lab_path, images, labels = idx_files
    with pytest.raises(ValueError, match="expected \\(n, h, w\\)"):
        load_dataset(f"idx:{lab_path},{img_path}")
    with pytest.raises(ValueError, match=r"5 images but 4 labels"):
        load_dataset(f"idx:{img_path},{_write_idx(tmp_path / 'l4', labels[:4])}")
    trunc = tmp_path / "trunc.idx"
    trunc.write_bytes(_idx_bytes(images)[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_dataset(f"idx:{trunc}")
    (tmp_path / "junk").write_bytes(b"\x89PNG....")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_dataset(f"idx:{tmp_path / 'junk'}")
    floats = _write_idx(tmp_path / "f.idx", images.astype(np.float32))
    with pytest.raises(ValueError, match="only uint8 images"):
        load_dataset(f"idx:{floats}")
    with pytest.raises(ValueError, match="2 class names given but labels go up to 3"):
        load_dataset(f"idx:{img_path},{lab_path}", classes=["a", "b"])
    with pytest.raises(ValueError, match="must be idx:IMAGES_FILE"):
        load_dataset(f"idx:{img_path},{lab_path},x")
    with pytest.raises(FileNotFoundError, match="IDX labels file"):
        load_dataset(f"idx:{img_path},{tmp_path / 'missing'}")


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    ds = load_dataset("fashion-mnist:test")
    assert len(ds) == 10000 and ds.pixels.shape == (10000, 28, 28)
    assert_array_equal(np.bincount(ds.labels), np.full(10, 1000))
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    same = load_dataset(f"idx:{FASHION / 't10k-images-idx3-ubyte.gz'},{FASHION / 't10k-labels-idx1-ubyte.gz'}")
    assert same.classes == ds.classes and same.fingerprint() == ds.fingerprint()
    assert ds.get(0).mode == "RGB" and ds.get(0).size == (28, 28)


# ----------------------------------------------------------------------------------------------------------------
# the real ImageNet sample


def test_imagenet_sample(shared_data):
    root = shared_data / "imagenet-sample"
    ds = load_dataset(f"imagefolder:{root}")
    assert len(ds) == 1000 and ds.imagenet_labels
    wnids = (timm_info_dir() / "imagenet_synsets.txt").read_text().split()
    assert [wnids[c] for c in ds.labels] == [i.split("_", 1)[0] for i in ds.ids]
    assert_array_equal(np.sort(ds.labels), np.arange(1000))
    assert ds.classes[ds.labels[ds.ids.index("n01440764_tench.JPEG")]] == "tench"
    img = ds.get(0)
    assert img.mode == "RGB" and min(img.size) > 32
    fp = ds.fingerprint()
    assert load_dataset(f"imagefolder:{os.fspath(root)}").fingerprint() == fp


def test_datasets_pickle_for_loader_workers(tmp_path, idx_files):
    """DataLoader workers receive the dataset by pickling: every kind must survive it and decode the same rows."""
    import pickle

    _png(tmp_path / "imgs" / "cls" / "a.png", (1, 2, 3))
    (tmp_path / "caps.jsonl").write_text(json.dumps({"image": "imgs/cls/a.png", "captions": ["x", "y"]}) + "\n")
    (tmp_path / "lines.txt").write_text("p\nq\n")
    img_path, lab_path, _, _ = idx_files
    caps = f"captions:{tmp_path / 'caps.jsonl'}"
    for spec, field in [("concepts:imagenet-1k", "prompt"), (f"imagefolder:{tmp_path / 'imgs'}", None),
                        (caps, "caption"), (caps, None),
                        (f"text:{tmp_path / 'lines.txt'}", None), (f"idx:{img_path},{lab_path}", None)]:
        ds = load_dataset(spec)
        clone = pickle.loads(pickle.dumps(ds))
        rows = [0, len(ds.rows(field)) - 1]
        a, b = ds.get_many(rows, field), clone.get_many(rows, field)
        if ds.modality(field) == "image":
            a, b = [np.asarray(x) for x in a], [np.asarray(x) for x in b]
            assert all(np.array_equal(x, y) for x, y in zip(a, b))
        else:
            assert a == b
        assert clone.fingerprint(field) == ds.fingerprint(field) and clone.rows(field) == ds.rows(field)
