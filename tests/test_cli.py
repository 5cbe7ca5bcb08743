"""The command line: JSON on stdout, one-line errors with exit status 1, the cache through `unialign embed`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from align.cli import main


def run(args, expect=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def payload(result) -> dict:
    """The JSON document on stdout (CliRunner mixes stderr in: take from the first '{' line to the last '}')."""
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("{"))
    end = max(i for i, line in enumerate(lines) if line.startswith("}"))
    return json.loads("\n".join(lines[start:end + 1]))


@pytest.fixture
def lines_file(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("a dog on a beach\na red car\ntwo people on a bench\n")
    return path


def test_embed_text_file_with_minilm_writes_npy_and_hits_cache(tmp_path, lines_file):
    out = tmp_path / "x.npy"
    args = ["embed", "--encoder", "minilm", "--dataset", f"text:{lines_file}", "--out", out,
            "--cache-dir", tmp_path / "cache", "--ids-out", tmp_path / "ids.txt", "--no-progress"]
    first = payload(run(args))
    X = np.load(out)
    assert X.shape == (3, 384) and X.dtype == np.float32
    assert first["from_cache"] is False and first["shapes"] == {"final": [3, 384]}
    assert (tmp_path / "ids.txt").read_text().split() == ["1", "2", "3"]
    second = payload(run(args))
    assert second["from_cache"] is True and second["key"] == first["key"]
    lines_file.write_text("a dog on a beach\na red car\ntwo people on a bench!\n")
    third = payload(run(args))
    assert third["from_cache"] is False and third["key"] != first["key"]


@pytest.mark.slow
def test_embed_imagenet_definitions_done_when(tmp_path):
    """The issue's acceptance line: (1000, 384) float32, a rerun hits the cache, another field misses it."""
    out = tmp_path / "defs.npy"
    base = ["embed", "--encoder", "minilm", "--dataset", "concepts:imagenet-1k", "--cache-dir", tmp_path / "c",
            "--no-progress", "--out", out]
    first = payload(run(base + ["--field", "definition"]))
    X = np.load(out)
    assert X.shape == (1000, 384) and X.dtype == np.float32
    assert payload(run(base + ["--field", "definition"]))["from_cache"] is True
    assert payload(run(base + ["--field", "lemma"]))["key"] != first["key"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["embed", "--encoder", "nope", "--dataset", "concepts:imagenet-1k"], "unknown encoder"),
        (["embed", "--encoder", "minilm", "--dataset", "text:/does/not/exist.txt"], "does not exist"),
        (["embed", "--encoder", "minilm", "--dataset", "concepts:imagenet-1k", "--field", "colour"],
         "has no field 'colour'"),
        (["embed", "--encoder", "minilm", "--dataset", "bogus:thing"], "unknown dataset"),
    ],
)
def test_bad_input_is_one_line_exit_1(tmp_path, args, message):
    result = run(args + ["--cache-dir", tmp_path, "--no-progress"], expect=1)
    err = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0].lower(), result.stderr
    assert "Traceback" not in result.output


def test_empty_dataset_and_unreadable_image_are_clear(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run(["embed", "--encoder", "minilm", "--dataset", f"text:{empty}", "--cache-dir", tmp_path], expect=1)
    assert "error:" in result.stderr and "empty" in result.stderr.lower()

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "good.png")
    (folder / "bad.png").write_bytes(b"not an image at all")
    for workers in (["--num-workers", "0"], []):  # in-process, and the default decoding worker process
        result = run(["embed", "--encoder", "efficientnet-lite0", "--dataset", f"imagefolder:{folder}",
                      "--cache-dir", tmp_path / "c", "--no-progress", *workers], expect=1)
        err = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and "bad.png" in err[0] and "replace or delete" in err[0], result.stderr
        assert not list((tmp_path / "c").glob("*/*/meta.json")), "a failed extraction must not leave a complete entry"


def test_debug_shows_traceback(tmp_path):
    result = CliRunner().invoke(main, ["--debug", "embed", "--encoder", "nope", "--dataset", "concepts:imagenet-1k"])
    assert result.exit_code != 0 and isinstance(result.exception, ValueError)


def test_select_ranks_pairs_with_null(tmp_path, lines_file):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "r.npy", rng.normal(size=(3, 5)).astype(np.float32))
    out = payload(run(["select", "--dataset", f"text:{lines_file}", "--encoder", "minilm",
                       "--features", f"rand={tmp_path / 'r.npy'}", "--metric", "linear_cka", "--null", "5",
                       "--cache-dir", tmp_path / "c", "--no-progress"]))
    assert out["n"] == 3 and len(out["pairs"]) == 1
    assert {out["pairs"][0]["a"], out["pairs"][0]["b"]} == {"minilm", "rand"}
    assert 0 <= out["pairs"][0]["p_value"] <= 1


def test_key_value_options_read_numbers_lists_and_strings():
    from align.cli import parse_key_values

    got = parse_key_values(("alpha=1e-3", "k=10", "grid=[8, 16]", "sigma=median", "flag=true", "n-init=5"))
    assert got == {"alpha": 0.001, "k": 10, "grid": [8, 16], "sigma": "median", "flag": True, "n_init": 5}
    assert parse_key_values(("efficientnet-lite0=x.npy",), python_names=False) == {"efficientnet-lite0": "x.npy"}
