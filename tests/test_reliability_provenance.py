"""Results record what produced them, and projectors refuse features of another encoder or other inputs.

Every JSON result of ``similarity``, ``match``, ``fit``, ``retrieve``, ``select``, ``zeroshot`` and ``embed`` carries a
``provenance`` object (library versions, command and options, input files by sha256 or encoder specs, seeds). A
projector that records its encoders refuses (in one line naming both) features that record another encoder, and a
training checkpoint refuses to resume with other encoders or other training rows.
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import align
from align._provenance import provenance, recorded_encoder, write_feature_sidecar
from align.cli import main

from ._cli_helpers import one_error_line as _error
from ._cli_helpers import zeroshot_inputs


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _invoke(args, expect=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
    return result


def _json(result) -> dict:
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prov")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6)).astype(np.float32)
    Y = (X @ rng.standard_normal((6, 5)) + 0.05 * rng.standard_normal((40, 5))).astype(np.float32)
    out = {"tmp": tmp}
    for name, arr in (("X", X), ("Y", Y), ("X2", rng.standard_normal((40, 6)).astype(np.float32))):
        np.save(tmp / f"{name}.npy", arr)
        out[name] = tmp / f"{name}.npy"
    (tmp / "seeds.csv").write_text("0,0\n1,1\n2,2\n3,3\n")
    out["seeds"] = tmp / "seeds.csv"
    return out


def _check_versions(p: dict) -> None:
    assert p["unialign"] in (align.__version__, metadata.version("unialign"))
    assert p["numpy"] == np.__version__
    assert p["torch"] == metadata.version("torch")


def test_provenance_helper_hashes_files_and_keeps_plain_values(files):
    p = provenance(command="unialign test", x=files["X"], encoder="minilm", seed=3, grid=[1, 2],
                   rng=np.random.default_rng(5), picked=Path(f"{files['X']}:key"))
    _check_versions(p)
    assert p["x"] == {"path": str(files["X"]), "sha256": _sha(files["X"]), "bytes": files["X"].stat().st_size}
    assert p["encoder"] == "minilm" and p["seed"] == 3 and p["grid"] == [1, 2]
    assert p["picked"]["key"] == "key" and p["picked"]["sha256"] == _sha(files["X"])
    assert p["rng"]["bit_generator"] == "PCG64"
    json.dumps(p)  # plain JSON
    with pytest.raises(ValueError, match="clashes"):
        provenance(numpy="1.0")


def test_similarity_records_files_and_seed(files):
    out = _json(_invoke(["similarity", files["X"], files["Y"], "--null", "3", "--seed", "7"]))
    p = out["provenance"]
    _check_versions(p)
    assert p["command"] == "unialign similarity"
    assert p["x"]["sha256"] == _sha(files["X"]) and p["y"]["sha256"] == _sha(files["Y"])
    assert p["seed"] == 7 and p["metric"] == "linear_cka" and p["options"]["n_permutations"] == 3


def test_match_records_seed_and_seed_pairs(files):
    out = _json(_invoke(["match", files["X"], files["Y"], "--n-known", "5", "--n-query", "10", "--splits", "1",
                         "--seed", "4"]))
    assert out["provenance"]["seed"] == 4 and out["provenance"]["method"] == "faq"
    out = _json(_invoke(["match", files["X"], files["Y"], "--method", "procrustes", "--known-pairs", files["seeds"]]))
    assert out["provenance"]["known_pairs"]["sha256"] == _sha(files["seeds"])
    assert out["provenance"]["x"]["sha256"] == _sha(files["X"])


def test_fit_stores_provenance_in_the_file_and_retrieve_reports_it(files):
    from projectors import load_projector

    proj = files["tmp"] / "p.pt"
    res = _invoke(["fit", "--kind", "linear", "--x", files["X"], "--y", files["Y"], "--val-fraction", "0",
                   "--seed", "3", "--x-encoder", "enc-a", "--y-encoder", "enc-b", "--out", proj])
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    saved = load_projector(proj).metadata_["provenance"]
    assert saved == summary["provenance"]
    _check_versions(saved)
    assert saved["x"]["sha256"] == _sha(files["X"]) and saved["y"]["sha256"] == _sha(files["Y"])
    assert saved["seed"] == 3 and saved["kind"] == "linear"
    assert saved["x_encoder"] == "enc-a" and saved["y_encoder"] == "enc-b"
    out = _json(_invoke(["retrieve", "--projector", proj, "--x", files["X"], "--y", files["Y"]]))
    assert out["provenance"]["projector"]["sha256"] == _sha(proj)
    assert out["provenance"]["x_encoder"] == "enc-a" and out["provenance"]["ks"] == [1, 5, 10]


def test_select_records_feature_files_and_encoders(files, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"caption number {i}\n" for i in range(40)))
    out = _json(_invoke(["select", "--dataset", f"text:{lines}", "--features", f"a={files['X']}",
                         "--features", f"b={files['Y']}", "--null", "2", "--seed", "5", "--no-progress"]))
    p = out["provenance"]
    assert p["candidates"]["a"]["sha256"] == _sha(files["X"]) and p["seed"] == 5
    assert p["dataset"] == f"text:{lines}"


def test_embed_records_the_encoder(tmp_path):
    """`embed --out` writes a sidecar (.npy) or a header entry (.safetensors) naming the encoder; the cache entry's
    own file records it too; a file overwritten since is no longer attributed. (shape:d2, a non-learned point-cloud
    encoder, keeps this fast.)"""
    folder = tmp_path / "meshes"
    folder.mkdir()
    for i in range(1, 4):
        (folder / f"m{i}.off").write_text(f"OFF\n4 1 0\n0 0 0\n1 0 0\n0 {i} 0\n0 0 1\n3 0 1 2\n")
    out_file = tmp_path / "feats.npy"
    base = ["embed", "--encoder", "shape:d2", "--dataset", f"pointcloud:{folder}", "--cache-dir", tmp_path / "cache",
            "--no-progress", "--out"]
    res = _json(_invoke([*base, out_file]))
    assert res["provenance"]["encoder"] == "shape:d2" and res["provenance"]["cache_key"] == res["key"]
    assert recorded_encoder(out_file) == "shape:d2"
    sidecar = json.loads(Path(res["provenance_file"]).read_text())
    assert sidecar["file"]["sha256"] == _sha(out_file)
    assert recorded_encoder(Path(res["path"]) / "final.npy") == "shape:d2"
    st = tmp_path / "feats.safetensors"
    _invoke([*base, st])
    (tmp_path / ("feats.safetensors" + ".provenance.json")).unlink()
    assert recorded_encoder(st) == "shape:d2"
    # overwritten by other numbers: the stale sidecar is no longer believed
    np.save(out_file, np.zeros((3, 32), np.float32))
    assert recorded_encoder(out_file) is None


@pytest.fixture
def recorded(files, tmp_path):
    """Feature files that record their encoders (as `unialign embed --out` writes them) and a projector fitted on
    them: X from 'enc-a' into the space of 'enc-b'."""
    paths = {}
    for name, source, enc in (("xa", "X", "enc-a"), ("yb", "Y", "enc-b"), ("xc", "X2", "enc-c")):
        path = tmp_path / f"{name}.npy"
        path.write_bytes(files[source].read_bytes())
        write_feature_sidecar(path, provenance(encoder=enc))
        paths[name] = path
    paths["proj"] = tmp_path / "p.pt"
    res = _invoke(["fit", "--kind", "linear", "--x", paths["xa"], "--y", paths["yb"], "--val-fraction", "0",
                   "--out", paths["proj"]])
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["provenance"]["x_encoder"] == "enc-a"  # taken from the file, no --x-encoder needed
    return paths


def test_retrieve_refuses_features_of_another_encoder(recorded):
    _invoke(["retrieve", "--projector", recorded["proj"], "--x", recorded["xa"], "--y", recorded["yb"]])
    line = _error(_invoke(["retrieve", "--projector", recorded["proj"], "--x", recorded["xc"], "--y",
                           recorded["yb"]], expect=1))
    assert "'enc-a'" in line and "'enc-c'" in line and "refit" in line
    line = _error(_invoke(["retrieve", "--projector", recorded["proj"], "--x", recorded["xa"], "--y",
                           recorded["xc"]], expect=1))
    assert "target features of encoder 'enc-b'" in line and "'enc-c'" in line


def test_fit_refuses_an_encoder_option_the_file_contradicts(recorded, tmp_path):
    line = _error(_invoke(["fit", "--kind", "linear", "--x", recorded["xa"], "--y", recorded["yb"], "--x-encoder",
                           "enc-z", "--out", tmp_path / "q.pt"], expect=1))
    assert "'enc-z'" in line and "'enc-a'" in line and not (tmp_path / "q.pt").exists()


def test_zeroshot_refuses_an_encoder_override_the_projector_contradicts(recorded, tmp_path):
    (tmp_path / "img").mkdir()
    line = _error(_invoke(["zeroshot", "--projector", recorded["proj"], "--images", tmp_path / "img",
                           "--encoder", "enc-z", "--no-progress"], expect=1))
    assert "'enc-a'" in line and "'enc-z'" in line
    line = _error(_invoke(["zeroshot", "--projector", recorded["proj"], "--images", tmp_path / "img",
                           "--class-features", recorded["xc"], "--no-progress"], expect=1))
    assert "'enc-b'" in line and "'enc-c'" in line


def test_load_projector_compares_encoders_and_names_them_on_a_width_mismatch(recorded):
    from projectors import load_projector

    assert load_projector(recorded["proj"], x_encoder="enc-a", y_encoder="enc-b").metadata_["x_encoder"] == "enc-a"
    with pytest.raises(ValueError, match=r"trained on source features of encoder 'enc-a' but is applied to .*'enc-c'"):
        load_projector(recorded["proj"], x_encoder="enc-c")
    proj = load_projector(recorded["proj"])
    with pytest.raises(ValueError, match=r"fitted on 6 \('enc-a' features\)"):
        proj.transform(np.zeros((3, 9)))


@pytest.fixture
def train_files(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 6)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", (X @ rng.standard_normal((6, 4))).astype(np.float32))
    np.save(tmp_path / "Xother.npy", rng.standard_normal((64, 6)).astype(np.float32))
    return tmp_path


def _fit_args(folder, x="X.npy", epochs="2", extra=()):
    return ["fit", "--kind", "mlp", "--epochs", epochs, "--batch-size", "16", "--val-fraction", "0", "--device",
            "cpu", "-p", "hidden_dim=8", "--x", folder / x, "--y", folder / "Y.npy", "--checkpoint",
            folder / "ck.pt", "--out", folder / "p.pt", *extra]


def test_resume_refuses_other_encoders_or_other_features(train_files):
    _invoke(_fit_args(train_files, extra=("--x-encoder", "enc-a")))
    line = _error(_invoke(_fit_args(train_files, extra=("--x-encoder", "enc-b")), expect=1))
    assert "x_encoder 'enc-a' in the checkpoint vs 'enc-b' now" in line
    line = _error(_invoke(_fit_args(train_files, x="Xother.npy", extra=("--x-encoder", "enc-a")), expect=1))
    assert "the X training features" in line and "another --checkpoint" in line
    # the same inputs resume (the finished run: nothing left to train)
    res = _invoke(_fit_args(train_files, extra=("--x-encoder", "enc-a")))
    assert not [ln for ln in res.stdout.splitlines() if '"epoch"' in ln]


def test_a_cache_file_is_identified_by_its_entry_digest(tmp_path):
    """Inside a feature-cache entry the sha256 recorded at completion is used (no re-hash of large caches); it is
    the file's real digest."""
    from align.features import embed

    from .align._toys import ToyEncoder, ToyText

    feats = embed(ToyEncoder(), ToyText(6), cache_dir=tmp_path)
    path = next(feats.path.glob("*.npy"))
    meta = json.loads((feats.path / "meta.json").read_text())
    assert path.name in {f["file"] for f in meta["files"].values()}
    record = provenance(x=path)["x"]
    assert record["sha256"] == _sha(path) and record["encoder"] == "toy-encoder:8:0"
    # the entry's digest is what is read (no re-hash) while the size matches and the file is not newer than
    # meta.json (written last); a file of another size, or rewritten afterwards, is hashed
    for folder, size, expected in (("same", path.stat().st_size, "f" * 64), ("other", 1, _sha(path))):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / path.name).write_bytes(path.read_bytes())
        entry = {"a": {"file": path.name, "bytes": size, "sha256": "f" * 64}}
        (tmp_path / folder / "meta.json").write_text(json.dumps({"files": entry}))
        os.utime(tmp_path / folder / path.name, ns=(0, 0))  # older than meta.json, whatever the clock's resolution
        assert provenance(x=tmp_path / folder / path.name)["x"]["sha256"] == expected
    rewritten = tmp_path / "same" / path.name
    rewritten.write_bytes(bytes(255 - b for b in path.read_bytes()))  # same size, new content, newer than the meta
    assert provenance(x=rewritten)["x"]["sha256"] == _sha(rewritten) != "f" * 64


def test_zeroshot_records_projector_encoders_images_and_class_vectors(tmp_path):
    out = _json(_invoke(zeroshot_inputs(tmp_path) + ["--cache-dir", tmp_path / "cache"]))
    p = out["provenance"]
    _check_versions(p)
    assert p["projector"]["sha256"] == _sha(tmp_path / "p.pt") and p["encoder"] == "efficientnet-lite0"
    assert p["target"] == "some-text-encoder" and p["class_features"]["sha256"] == _sha(tmp_path / "c.npy")
    assert p["classes"]["sha256"] == _sha(tmp_path / "classes.txt") and p["images"]["fingerprint"]
    assert len(out["predictions"][0]["top"]) == 3  # the default --top-k 5 asks for up to 5 of the 3 classes
