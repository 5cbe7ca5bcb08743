"""A full disk during a write (simulated): the error reaches the user as one line, nothing half-written is left
under a final name, no temporary file is left behind, and the next run succeeds.

The fault is injected below :func:`align._io.atomic_write`: every file it opens is wrapped so that a write past a
byte budget raises ``OSError(ENOSPC)``, like a real full disk part-way through a file. At the end: training
checkpoints that cannot be resumed (junk, truncated, another model shape) are named in one line.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import align._io as io_mod
from align._io import load_features, save_features
from align.cli import main
from align.features import embed

from .._cli_helpers import one_error_line
from ._toys import ToyEncoder, ToyText, reference_features


class _FullFile:
    """A file object whose writes fail with ENOSPC once ``budget`` bytes have been written."""

    def __init__(self, f, budget: int):
        self._f, self._left = f, budget

    def write(self, data):
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if size > self._left:
            if self._left:
                self._f.write(data[: self._left])  # a real full disk writes what fits, then fails
            self._left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= size
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


class DiskFull:
    """Patch ``align._io``'s ``os`` and ``tempfile`` so the ``nth`` temporary file whose name contains ``name``
    fills up after ``budget`` bytes (``nth=None``: every such file)."""

    def __init__(self, monkeypatch, name: str = "", nth: int | None = 0, budget: int = 100):
        self.name, self.nth, self.budget, self.seen, self.failed = name, nth, budget, 0, []
        self._paths: dict[int, str] = {}
        real_os, real_tempfile, outer = os, tempfile, self

        class _Tempfile:
            def __getattr__(self, attr):
                return getattr(real_tempfile, attr)

            @staticmethod
            def mkstemp(*args, **kwargs):
                fd, path = real_tempfile.mkstemp(*args, **kwargs)
                outer._paths[fd] = path
                return fd, path

        class _Os:
            def __getattr__(self, attr):
                return getattr(real_os, attr)

            @staticmethod
            def fdopen(fd, *args, **kwargs):
                f = real_os.fdopen(fd, *args, **kwargs)
                path = outer._paths.pop(fd, "")
                if outer.name in Path(path).name:
                    hit = outer.nth is None or outer.seen == outer.nth
                    outer.seen += 1
                    if hit:
                        outer.failed.append(path)
                        return _FullFile(f, outer.budget)
                return f

        self._monkeypatch = monkeypatch
        monkeypatch.setattr(io_mod, "os", _Os())
        monkeypatch.setattr(io_mod, "tempfile", _Tempfile())

    def clear(self) -> None:
        """Space is freed: ``align._io`` writes to the real disk again."""
        self._monkeypatch.setattr(io_mod, "os", os)
        self._monkeypatch.setattr(io_mod, "tempfile", tempfile)


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _one_error_line(result, fragment="no space left on device"):
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    assert fragment in one_error_line(result).lower(), result.stderr


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".safetensors"])
@pytest.mark.parametrize("budget", [0, 100])
def test_save_features_disk_full_leaves_nothing(tmp_path, monkeypatch, suffix, budget):
    X = np.random.default_rng(0).standard_normal((50, 8))
    path = tmp_path / f"x{suffix}"
    fault = DiskFull(monkeypatch, budget=budget)
    with pytest.raises(OSError) as info:
        save_features(path, X)
    assert info.value.errno == errno.ENOSPC and fault.failed
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a temporary file
    monkeypatch.undo()
    save_features(path, X)
    np.testing.assert_array_equal(load_features(path), X)


def test_save_features_disk_full_keeps_the_old_file(tmp_path, monkeypatch):
    """Overwriting a good file on a full disk keeps the good file, whole."""
    path = tmp_path / "x.npy"
    old = np.arange(12.0).reshape(3, 4)
    save_features(path, old)
    DiskFull(monkeypatch, budget=10)
    with pytest.raises(OSError):
        save_features(path, np.ones((50, 8)))
    np.testing.assert_array_equal(load_features(path), old)
    assert _temporaries(tmp_path) == []


# 10 items, batch 4, shard 4 rows: 3 shards x 2 layers, then 2 merged arrays, then meta.json
CACHE_WRITES = {"first shard": ("", 0), "last shard": ("", 5), "merged array": ("", 6),
                "second merged array": ("", 7), "meta.json": ("meta.json", 0)}


@pytest.mark.parametrize("where", list(CACHE_WRITES))
def test_feature_cache_disk_full_then_rerun(tmp_path, monkeypatch, where):
    enc, ds = ToyEncoder(), ToyText(10)
    name, nth = CACHE_WRITES[where]
    fault = DiskFull(monkeypatch, name=name, nth=nth, budget=64)
    with pytest.raises(OSError) as info:
        embed(enc, ds, cache_dir=tmp_path, batch_size=4, shard_size=4)
    assert info.value.errno == errno.ENOSPC and fault.failed
    assert _temporaries(tmp_path) == []
    assert not list(tmp_path.rglob("meta.json"))  # the entry is not marked complete
    for path in tmp_path.rglob("*.npy"):  # whatever is under a final name is whole
        assert np.load(path).shape[0] in (4, 2, 10)
    monkeypatch.undo()
    feats = embed(enc, ds, cache_dir=tmp_path, batch_size=4, shard_size=4)
    assert not feats.from_cache
    ref = reference_features(enc, ds)
    for layer in ref:
        np.testing.assert_allclose(np.asarray(feats.layers[layer]), ref[layer], rtol=1e-6)
    again = embed(enc, ds, cache_dir=tmp_path, batch_size=4, shard_size=4)
    assert again.from_cache
    assert _temporaries(tmp_path) == []


@pytest.fixture
def toy_cli(monkeypatch):
    """`unialign embed` on the toy encoder and dataset (no model weights)."""
    import align.data
    import align.encoders

    monkeypatch.setattr(align.encoders, "load_encoder",
                        lambda spec, **kw: ToyEncoder(layers=tuple(kw.get("layers") or ("a", "b"))))
    monkeypatch.setattr(align.data, "load_dataset", lambda spec, **kw: ToyText(10))


@pytest.mark.parametrize("target", ["out", "cache"])
def test_cli_embed_disk_full_one_line_then_rerun(tmp_path, monkeypatch, toy_cli, target):
    out = tmp_path / "o.npy"
    cache = tmp_path / "cache"
    args = ["embed", "--encoder", "toy", "--dataset", "toy", "--layer", "a", "--out", str(out),
            "--cache-dir", str(cache), "--no-progress", "--batch-size", "4"]
    fault = DiskFull(monkeypatch, name="o.npy" if target == "out" else "", nth=0, budget=50)
    _one_error_line(CliRunner().invoke(main, args))
    assert fault.failed and not out.exists() and _temporaries(tmp_path) == []
    fault.clear()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    ref = reference_features(ToyEncoder(layers=("a",)), ToyText(10))["a"]
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-6)
    assert json.loads(result.stdout)["from_cache"] is (target == "out")


def test_cli_fit_disk_full_one_line_then_rerun(tmp_path, monkeypatch):
    from projectors import load_projector

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 6))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", X @ rng.standard_normal((6, 4)))
    out = tmp_path / "p.pt"
    args = ["fit", "--kind", "mlp", "--epochs", "2", "--x", str(tmp_path / "X.npy"), "--y", str(tmp_path / "Y.npy"),
            "--out", str(out), "--device", "cpu"]
    fault = DiskFull(monkeypatch, name="p.pt", budget=200)
    _one_error_line(CliRunner().invoke(main, args))
    assert fault.failed and not out.exists() and _temporaries(tmp_path) == []
    fault.clear()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    assert load_projector(out).transform(X).shape == (60, 4)


def test_cli_fit_checkpoint_disk_full_one_line_then_rerun(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 6))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", X @ rng.standard_normal((6, 4)))
    out, ckpt = tmp_path / "p.pt", tmp_path / "ckpt.pt"
    args = ["fit", "--kind", "mlp", "--epochs", "2", "--x", str(tmp_path / "X.npy"), "--y", str(tmp_path / "Y.npy"),
            "--out", str(out), "--checkpoint", str(ckpt), "--device", "cpu"]
    fault = DiskFull(monkeypatch, name="ckpt.pt", budget=500)
    _one_error_line(CliRunner().invoke(main, args))
    assert fault.failed and not out.exists() and not ckpt.exists() and _temporaries(tmp_path) == []
    fault.clear()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    assert out.exists()


@pytest.mark.parametrize("change", ["junk", "truncated", "other width", "other hidden_dim"])
def test_cli_fit_bad_checkpoint_one_line(tmp_path, change):
    """A checkpoint that cannot be resumed is named in one line, never half-loaded."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 6))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "X7.npy", rng.standard_normal((60, 7)))
    np.save(tmp_path / "Y.npy", X @ rng.standard_normal((6, 4)))
    ckpt = tmp_path / "ckpt.pt"
    base = ["fit", "--kind", "mlp", "--epochs", "1", "--y", str(tmp_path / "Y.npy"), "--out", str(tmp_path / "p.pt"),
            "--checkpoint", str(ckpt), "--device", "cpu", "-p", "hidden_dim=8"]
    args = base + ["--x", str(tmp_path / "X.npy")]
    if change == "junk":
        ckpt.write_bytes(b"junk" * 20)
    else:
        assert CliRunner().invoke(main, args).exit_code == 0
        if change == "truncated":
            ckpt.write_bytes(ckpt.read_bytes()[:1000])
        elif change == "other width":
            args = base + ["--x", str(tmp_path / "X7.npy")]
        else:
            args = [a if a != "hidden_dim=8" else "hidden_dim=16" for a in args]
    (tmp_path / "p.pt").unlink(missing_ok=True)
    fragment = "another shape" if change.startswith("other") else "truncated or corrupt"
    _one_error_line(CliRunner().invoke(main, args), fragment)
    assert not (tmp_path / "p.pt").exists()


@pytest.mark.parametrize("damage", ["truncated", "junk", "other shape"])
def test_damaged_shard_is_recomputed_not_merged(tmp_path, monkeypatch, damage):
    """A run stopped before the merge leaves whole shards; one damaged afterwards is recomputed on the rerun."""
    enc, ds = ToyEncoder(), ToyText(10)
    DiskFull(monkeypatch, nth=6, budget=0)  # the first merged array: every shard is already on disk
    with pytest.raises(OSError):
        embed(enc, ds, cache_dir=tmp_path, batch_size=4, shard_size=4)
    monkeypatch.undo()
    shard = min(tmp_path.rglob("shards/*.npy"))
    raw = shard.read_bytes()
    if damage == "truncated":
        shard.write_bytes(raw[: len(raw) // 2])
    elif damage == "junk":
        shard.write_bytes(b"x" * len(raw))
    else:
        np.save(shard, np.zeros((4, 3), np.float32))
    enc.calls = 0
    feats = embed(enc, ds, cache_dir=tmp_path, batch_size=4, shard_size=4)
    assert enc.calls == 1  # only the damaged shard's batch ran again
    ref = reference_features(enc, ds)
    for layer in ref:
        np.testing.assert_allclose(np.asarray(feats.layers[layer]), ref[layer], rtol=1e-6)
