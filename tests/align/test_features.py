"""The feature cache: keyed, atomic, resumable, verified, memory-mapped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from align.features import embed

from ._toys import ToyEncoder, ToyText, reference_features

ROOT = Path(__file__).resolve().parents[2]


def test_embed_equals_direct_encoding_and_is_memory_mapped(tmp_path):
    enc, ds = ToyEncoder(), ToyText(23)
    feats = embed(enc, ds, cache_dir=tmp_path, batch_size=4, shard_size=8)
    ref = reference_features(ToyEncoder(), ds)
    assert list(feats.layers) == ["a", "b"]
    for layer in ("a", "b"):
        assert feats.layers[layer].dtype == np.float32
        assert isinstance(feats.layers[layer], np.memmap)
        assert_allclose(feats.layers[layer], ref[layer], rtol=0, atol=0)
    assert feats.X.shape == (23, 8)
    assert feats.ids == ds.ids
    assert not feats.from_cache
    assert not (feats.path / "shards").exists()


def test_dataloader_workers_give_the_same_bytes(tmp_path):
    ds = ToyText(21)
    inline = embed(ToyEncoder(), ds, cache_dir=tmp_path / "a", num_workers=0)
    workers = embed(ToyEncoder(), ds, cache_dir=tmp_path / "b", num_workers=2)
    assert _entry_file(inline).read_bytes() == _entry_file(workers).read_bytes()


def test_rerun_hits_cache_without_calling_the_model(tmp_path):
    ds = ToyText(10)
    first = embed(ToyEncoder(), ds, cache_dir=tmp_path)
    enc = ToyEncoder()
    second = embed(enc, ds, cache_dir=tmp_path)
    assert second.from_cache and enc.calls == 0
    assert second.key == first.key
    assert_array_equal(second.X, first.X)


@pytest.mark.parametrize(
    "change",
    [
        lambda: (ToyEncoder(seed=1), ToyText(10), None),  # other weights
        lambda: (ToyEncoder(layers=("b", "a")), ToyText(10), None),  # other layers
        lambda: (ToyEncoder(), ToyText(10, salt="x"), None),  # other data content
        lambda: (ToyEncoder(), ToyText(10), "upper"),  # other field
    ],
)
def test_changing_any_key_part_misses_the_cache(tmp_path, change):
    base = embed(ToyEncoder(), ToyText(10), cache_dir=tmp_path)
    enc, ds, field = change()
    other = embed(enc, ds, field=field, cache_dir=tmp_path)
    assert other.key != base.key and not other.from_cache


def _entry_file(feats, layer="a") -> Path:
    return feats.path / json.loads((feats.path / "meta.json").read_text())["files"][layer]["file"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, damage):
    ds = ToyText(17)
    good = embed(ToyEncoder(), ds, cache_dir=tmp_path)
    expected = np.array(good.X)
    path = _entry_file(good)
    del good
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 7])
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        (path.parent / "meta.json").write_text("{not json")
    enc = ToyEncoder()
    rebuilt = embed(enc, ds, cache_dir=tmp_path)
    assert not rebuilt.from_cache and enc.calls > 0
    assert_array_equal(rebuilt.X, expected)
    assert embed(ToyEncoder(), ds, cache_dir=tmp_path).from_cache


def test_resume_skips_finished_shards(tmp_path):
    ds = ToyText(40)
    full = embed(ToyEncoder(), ds, cache_dir=tmp_path / "full", batch_size=4, shard_size=8)

    class Crash(ToyEncoder):
        def forward(self, batch):
            if self.calls == 5:  # after two whole shards (2 batches each) and one batch of the third
                raise KeyboardInterrupt
            return super().forward(batch)

    with pytest.raises(KeyboardInterrupt):
        embed(Crash(), ds, cache_dir=tmp_path / "part", batch_size=4, shard_size=8)
    enc = ToyEncoder()
    resumed = embed(enc, ds, cache_dir=tmp_path / "part", batch_size=4, shard_size=8)
    assert enc.calls == 10 - 4  # two shards of two batches were kept
    assert _entry_file(resumed).read_bytes() == _entry_file(full).read_bytes()


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from tests.align._toys import ToyEncoder, ToyText
    from align.features import embed
    embed(ToyEncoder(), ToyText(60), cache_dir={cache!r}, batch_size=4, shard_size=8)
    """
)


def test_sigkill_midway_then_rerun_is_byte_identical(tmp_path):
    """A real SIGKILL during extraction: the rerun resumes and the merged file equals an uninterrupted run's."""
    cache = tmp_path / "killed"
    script = KILL_SCRIPT.format(root=str(ROOT), cache=str(cache))
    env = dict(os.environ, TOY_SLEEP="0.05")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache.glob("*/*/shards/a.*.npy"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards = list(cache.glob("*/*/shards/*.npy"))
    assert shards, "the extraction was killed before writing any shard"
    assert not list(cache.glob("*/*/meta.json")), "killed run must not look complete"

    enc = ToyEncoder()
    resumed = embed(enc, ToyText(60), cache_dir=cache, batch_size=4, shard_size=8)
    assert 0 < enc.calls < 15  # 60 rows / 4 per batch = 15 batches; finished shards were skipped
    full = embed(ToyEncoder(), ToyText(60), cache_dir=tmp_path / "full", batch_size=4, shard_size=8)
    assert _entry_file(resumed).read_bytes() == _entry_file(full).read_bytes()


def test_manual_sharding_across_ranks_merges_when_complete(tmp_path):
    ds = ToyText(30)
    with pytest.raises(RuntimeError, match="rerun once every rank has finished"):
        embed(ToyEncoder(), ds, cache_dir=tmp_path, batch_size=4, shard_size=8, rank=0, world_size=2)
    done = embed(ToyEncoder(), ds, cache_dir=tmp_path, batch_size=4, shard_size=8, rank=1, world_size=2)
    assert_array_equal(done.X, reference_features(ToyEncoder(), ds)["a"])


def test_modality_mismatch_and_bad_field_are_clear(tmp_path):
    enc = ToyEncoder()
    enc.modality = "image"
    with pytest.raises(ValueError, match="takes image inputs"):
        embed(enc, ToyText(5), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="has no field 'nope'; use --field"):
        embed(ToyEncoder(), ToyText(5), field="nope", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no rows"):
        embed(ToyEncoder(), ToyText(0), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="`rank` must be < `world_size`"):
        embed(ToyEncoder(), ToyText(5), cache_dir=tmp_path, rank=2, world_size=2)


DIST_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import numpy as np, torch, torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    from tests.align._toys import ToyEncoder, ToyText
    from align.features import embed
    enc = ToyEncoder()
    feats = embed(enc, ToyText(37), cache_dir={cache!r}, batch_size=4, shard_size=8)
    np.save({out!r} + f"/rank{{dist.get_rank()}}.npy", np.asarray(feats.X))
    np.save({out!r} + f"/calls{{dist.get_rank()}}.npy", np.array(enc.calls))
    dist.destroy_process_group()
    """
)


def test_torchrun_gloo_two_ranks_split_the_work_and_agree(tmp_path):
    script = tmp_path / "dist_embed.py"
    script.write_text(DIST_SCRIPT.format(root=str(ROOT), cache=str(tmp_path / "cache"), out=str(tmp_path)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    ref = reference_features(ToyEncoder(), ToyText(37))["a"]
    for r in (0, 1):
        assert_array_equal(np.load(tmp_path / f"rank{r}.npy"), ref)
    calls = [int(np.load(tmp_path / f"calls{r}.npy")) for r in (0, 1)]
    assert sum(calls) == 10 and min(calls) > 0  # 37 rows = 10 batches of 4, split between the ranks


def test_batch_size_is_part_of_the_key_and_zero_is_an_error(tmp_path):
    ds = ToyText(9)
    a = embed(ToyEncoder(), ds, cache_dir=tmp_path, batch_size=4)
    b = embed(ToyEncoder(), ds, cache_dir=tmp_path, batch_size=3)
    assert a.key != b.key and not b.from_cache
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        embed(ToyEncoder(), ds, cache_dir=tmp_path, batch_size=0)


def test_cache_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        feats = embed(ToyEncoder(), ToyText(5), cache_dir=tmp_path)
    finally:
        os.umask(old)
    for path in (_entry_file(feats), feats.path / "meta.json"):
        assert path.stat().st_mode & 0o777 == 0o644, oct(path.stat().st_mode)


def test_length_sorted_batches_give_rows_in_dataset_order(tmp_path):
    """An encoder that batches longest first (within each shard): the cached rows are in dataset order and equal
    the unsorted extraction (the toy's rows do not depend on their batch), and the key differs from unsorted."""
    from ._toys import SortingToyEncoder

    ds = ToyText(37)
    plain = embed(ToyEncoder(), ds, cache_dir=tmp_path, batch_size=4, shard_size=12)
    enc = SortingToyEncoder()
    sorted_ = embed(enc, ds, cache_dir=tmp_path, batch_size=4, shard_size=12)
    assert sorted_.key != plain.key and not sorted_.from_cache
    for layer in ("a", "b"):
        assert_allclose(sorted_.layers[layer], plain.layers[layer], rtol=0, atol=0)
    assert sum(enc.batch_sizes) == 37
    direct = SortingToyEncoder().encode_layers(ds.get_many(range(37)), batch_size=4)
    assert_allclose(direct["a"], plain.layers["a"], rtol=0, atol=0)


def test_length_sorted_resume_is_byte_identical(tmp_path):
    from ._toys import SortingToyEncoder

    ds = ToyText(40)
    full = embed(SortingToyEncoder(), ds, cache_dir=tmp_path / "full", batch_size=4, shard_size=8)

    class Crash(SortingToyEncoder):
        def forward(self, batch):
            if self.calls == 5:
                raise KeyboardInterrupt
            return super().forward(batch)

    with pytest.raises(KeyboardInterrupt):
        embed(Crash(), ds, cache_dir=tmp_path / "part", batch_size=4, shard_size=8)
    enc = SortingToyEncoder()
    resumed = embed(enc, ds, cache_dir=tmp_path / "part", batch_size=4, shard_size=8)
    assert enc.calls == 10 - 4
    assert _entry_file(resumed).read_bytes() == _entry_file(full).read_bytes()


def test_loader_pins_memory_only_for_cuda_encoders():
    from align.features import _pins_memory

    enc = ToyEncoder()
    assert not _pins_memory(enc)
    enc.device = "cpu"
    assert not _pins_memory(enc)
    enc.device = "cuda:0"
    assert _pins_memory(enc)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_encoder_with_decode_workers_and_pinned_batches_matches_cpu(tmp_path):
    import torch

    class CudaToy(ToyEncoder):
        device = torch.device("cuda")

        def forward(self, batch):
            assert batch.is_pinned()  # the loader pinned it
            out = super().forward(batch.to(self.device, non_blocking=True).cpu())
            return {k: v.to(self.device) for k, v in out.items()}

    ds = ToyText(30)
    gpu = embed(CudaToy(), ds, cache_dir=tmp_path / "gpu", batch_size=4, num_workers=2)
    cpu = embed(ToyEncoder(), ds, cache_dir=tmp_path / "cpu", batch_size=4, num_workers=2)
    assert_allclose(gpu.X, cpu.X, rtol=0, atol=0)
