"""Extract features once, cache them on disk, read them memory-mapped.

:func:`embed` runs an encoder over one field of a dataset and returns :class:`Features`. The result is cached under
a key made of everything that changes the numbers: the encoder's fingerprint (spec, weights digest, layers, pooling,
preprocessing, normalisation, dtype), the dataset's content fingerprint for that field, and the field itself.

Layout of one cache entry (``<cache_dir>/<key[:2]>/<key>/``)::

    shards/<layer>.<start>-<stop>.npy   rows [start, stop) of one layer, written atomically as they are computed
    <layer>.npy                         the merged array, (n, d) float32, written atomically after the last shard
    meta.json                           written last: ids digest, shapes and a sha256 per merged file

A kill at any point leaves only whole shard files (each is written to a temporary name and renamed), so a rerun
skips the finished shards and computes the rest; the merged arrays are byte-identical to an uninterrupted run because
batch boundaries depend only on ``shard_size`` and ``batch_size`` (and, for a text encoder that batches longest
first, on the texts of the shard itself: see :meth:`~align.encoders.Encoder.batch_order`). An entry whose ``meta.json`` is missing, unreadable
or whose files fail their size or sha256 check is treated as absent and rebuilt, never read.

Decoding and preprocessing run in DataLoader workers (``num_workers``) so they overlap with the forward pass.
Extraction can be split across ``torchrun`` ranks: rank ``r`` of ``w`` computes shards ``r, r + w, …``; after a
barrier rank 0 merges and every rank reads the merged cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Sequence

import numpy as np

from ._io import atomic_write, sha256_file
from ._validation import check_int

log = logging.getLogger(__name__)

__all__ = ["Features", "embed", "default_cache_dir", "cache_key", "CACHE_FORMAT"]

#: Bump when the on-disk layout or anything that changes cached numbers changes.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$UNIALIGN_CACHE``, else ``$XDG_CACHE_HOME/unialign``, else ``~/.cache/unialign``."""
    if os.environ.get("UNIALIGN_CACHE"):
        return Path(os.environ["UNIALIGN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "unialign"


@dataclass(frozen=True)
class Features:
    """Cached features of one field of a dataset under one encoder.

    Attributes
    ----------
    layers : dict of str to ndarray
        ``(n, d)`` float32 arrays, memory-mapped read-only from the cache, one per requested layer, in request order.
    ids : list of str
        Row ids (``dataset.rows(field)``), row i of every array describes ``ids[i]``.
    key : str
        The cache key (sha256 hex).
    path : Path
        The cache entry folder.
    from_cache : bool
        True when nothing had to be computed.
    meta : dict
        What produced the features: encoder spec and config, dataset spec, field, fingerprints, library version.
    """

    layers: dict[str, np.ndarray]
    ids: list[str]
    key: str
    path: Path
    from_cache: bool
    meta: dict = dc_field(repr=False)

    @property
    def X(self) -> np.ndarray:
        """The first requested layer, ``(n, d)``."""
        return next(iter(self.layers.values()))

    def __len__(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "path": str(self.path),
            "from_cache": self.from_cache,
            "n": len(self.ids),
            "shapes": {k: list(v.shape) for k, v in self.layers.items()},
            "encoder": self.meta.get("encoder", {}).get("spec"),
            "dataset": self.meta.get("dataset", {}).get("spec"),
            "field": self.meta.get("field"),
        }


def cache_key(encoder, dataset, field: str, batch_size: int) -> tuple[str, dict]:
    """The cache key for (encoder, dataset, field, batch size) and the description it hashes.

    The batch size is part of the key because padding changes a text encoder's floats in the last bits (~1e-7 for
    minilm between batch sizes 1 and 40): a cached result is always bit-for-bit what a fresh run would give.
    """
    from . import __version__

    desc = {
        "format": CACHE_FORMAT,
        "encoder": {"spec": encoder.spec, "fingerprint": encoder.fingerprint(), "config": encoder.config()},
        "dataset": {"spec": dataset.spec, "fingerprint": dataset.fingerprint(field)},
        "field": field,
        "batch_size": batch_size,
    }
    if _sorts_batches(encoder):  # batches of length-sorted rows change the padding
        desc["batching"] = "encoder order within each shard"
    key = hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()
    desc["unialign_version"] = __version__
    return key, desc


def _sorts_batches(encoder) -> bool:
    """Whether ``encoder`` batches in its own order (overrides :meth:`~align.encoders.Encoder.batch_order`)."""
    from .encoders import Encoder

    own = getattr(type(encoder), "batch_order", None)
    return own is not None and own is not Encoder.batch_order


def _shard_order(encoder, dataset, field: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` in the order the encoder batches them (:meth:`Encoder.batch_order`, e.g. longest text
    first), as absolute row indices; the order depends only on the shard's own rows, so a resumed run batches every
    shard exactly as an uninterrupted one."""
    rows = np.arange(start, stop)
    if not _sorts_batches(encoder):
        return rows
    order = encoder.batch_order(dataset.get_many(rows, field))
    return rows if order is None else rows[np.asarray(order)]


def _safe_layer(layer: str) -> str:
    """A file-name-safe form of a layer name (``blocks.11`` stays, ``a/b`` becomes ``a_b``)."""
    return "".join(c if c.isalnum() or c in "._-+" else "_" for c in layer)


def _load_entry(entry: Path, layers: Sequence[str], n: int, *, verify: bool) -> dict[str, np.ndarray] | None:
    """The merged arrays of a complete, intact cache entry, or None (and why, in the log)."""
    meta_path = entry / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
        out = {}
        for layer in layers:
            info = files[layer]
            path = entry / info["file"]
            if path.stat().st_size != info["bytes"]:
                raise ValueError(f"{path.name} has {path.stat().st_size} bytes, expected {info['bytes']}")
            if verify and sha256_file(path) != info["sha256"]:
                raise ValueError(f"{path.name} fails its sha256 check")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.shape != (n, info["dim"]) or arr.dtype != np.float32:
                raise ValueError(f"{path.name} has shape {arr.shape} {arr.dtype}, expected ({n}, {info['dim']}) float32")
            out[layer] = arr
        return out
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        log.warning("feature cache entry %s is corrupt (%s); rebuilding it", entry, exc)
        meta_path.unlink(missing_ok=True)  # no longer a complete entry, whatever happens next
        return None


def _shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def _shard_path(entry: Path, layer: str, start: int, stop: int) -> Path:
    return entry / "shards" / f"{_safe_layer(layer)}.{start:010d}-{stop:010d}.npy"


def _shard_done(entry: Path, layers: Sequence[str], start: int, stop: int, dims: dict[str, int]) -> bool:
    for layer in layers:
        path = _shard_path(entry, layer, start, stop)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return False
        if arr.shape != (stop - start, dims[layer]) or arr.dtype != np.float32:
            return False
    return True


class _BatchSource:
    """Map-style source of preprocessed batches: item ``b`` decodes and preprocesses batch ``b`` (runs in workers)."""

    def __init__(self, dataset, field: str, encoder, batches: list[np.ndarray]):
        self.dataset, self.field, self.encoder, self.batches = dataset, field, encoder, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int):
        try:
            return self.encoder.preprocess(self.dataset.get_many(self.batches[b], self.field))
        except (ValueError, TypeError, OSError) as exc:  # torch would wrap a worker's exception: keep the message
            return _Failed(exc)


class _Failed:
    """An expected error raised while decoding a batch, carried back from a worker and re-raised as one line."""

    _KINDS = (FileNotFoundError, PermissionError, ValueError, TypeError, OSError)

    def __init__(self, exc: Exception):
        self.kind = next(k for k in self._KINDS if isinstance(exc, k))  # a class that takes one message argument
        self.message = str(exc)

    def reraise(self):
        raise self.kind(self.message)


def _pins_memory(encoder) -> bool:
    """Batches go to a CUDA device: decoded batches are put in pinned (page-locked) memory by the loader, so the
    encoder's ``.to(device, non_blocking=True)`` copies them asynchronously."""
    return str(getattr(encoder, "device", "cpu")).startswith("cuda")


def _iter_batches(source: _BatchSource, num_workers: int):
    if num_workers <= 0:
        for b in range(len(source)):
            yield source[b]
        return
    import torch.utils.data

    loader = torch.utils.data.DataLoader(
        source, batch_size=None, shuffle=False, num_workers=num_workers, prefetch_factor=4,
        persistent_workers=False, worker_init_fn=_worker_init, pin_memory=_pins_memory(source.encoder),
    )
    yield from loader


def _worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


def _distributed_context(rank: int | None, world_size: int | None) -> tuple[int, int, bool]:
    """(rank, world_size, use_barrier): explicit values, else torch.distributed if initialised, else (0, 1)."""
    try:
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
    except ImportError:  # pragma: no cover
        initialised = False
    if initialised:
        r, w = dist.get_rank(), dist.get_world_size()
        if (rank is not None and rank != r) or (world_size is not None and world_size != w):
            raise ValueError(f"`rank`/`world_size` ({rank}/{world_size}) disagree with torch.distributed ({r}/{w})")
        return r, w, True
    rank = 0 if rank is None else check_int("rank", rank, min_value=0)
    world_size = 1 if world_size is None else check_int("world_size", world_size, min_value=1)
    if rank >= world_size:
        raise ValueError(f"`rank` must be < `world_size`, got rank {rank} and world_size {world_size}")
    return rank, world_size, False


def _barrier(use_barrier: bool) -> None:
    if use_barrier:
        import torch.distributed as dist

        dist.barrier()


def embed(
    encoder,
    dataset,
    *,
    field: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    shard_size: int | None = None,
    num_workers: int | None = None,
    show_progress: bool = False,
    verify: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
) -> Features:
    """Features of ``field`` of ``dataset`` under ``encoder``, computed once and cached.

    Parameters
    ----------
    encoder : align.encoders.Encoder
        From :func:`align.encoders.load_encoder`; every layer it was loaded with is extracted in one pass.
    dataset : align.data.Dataset
        From :func:`align.data.load_dataset`.
    field : str, optional
        Which field to embed (``"definition"``, ``"image"``, …); default: the dataset's default field.
    cache_dir : path, optional
        Default :func:`default_cache_dir` (``$UNIALIGN_CACHE`` or ``~/.cache/unialign``).
    batch_size : int, optional
        Default: the encoder's ``default_batch_size``.
    shard_size : int, optional
        Rows per resumable shard, rounded up to a multiple of ``batch_size``; default 64 batches.
    num_workers : int, optional
        DataLoader workers that decode and preprocess while the model runs; default 1 for images, 0 otherwise.
    show_progress : bool
        A tqdm bar on stderr.
    verify : bool
        Check the sha256 of cached files before reading them (default True; cost: one read of the files).
    rank, world_size : int, optional
        Split the shards across processes; default from ``torch.distributed`` when it is initialised.

    Returns
    -------
    Features
        Memory-mapped float32 arrays, one per layer, with row ids and the cache key.

    Notes
    -----
    The cache never holds a partial file under a final name: shards and merged arrays are written to temporary files
    and renamed, and ``meta.json``, written last, is the entry's completion mark. With ``world_size > 1`` outside
    ``torch.distributed``, each call computes only its shards; the call that finds every shard present merges them,
    and the others raise ``RuntimeError`` telling to rerun once all ranks are done.
    """
    field = dataset.resolve_field(field)
    modality = dataset.modality(field)
    if encoder.modality not in (modality, "any"):
        raise ValueError(
            f"encoder {encoder.spec!r} takes {encoder.modality} inputs but field {field!r} of {dataset.spec!r} is "
            f"{modality}; pick a {modality} encoder or another --field"
        )
    ids = list(dataset.rows(field))
    n = len(ids)
    if n == 0:
        raise ValueError(f"dataset {dataset.spec!r} has no rows for field {field!r}; check the path or filter")
    batch_size = check_int("batch_size", encoder.default_batch_size if batch_size is None else batch_size, min_value=1)
    shard_size = check_int("shard_size", shard_size or 64 * batch_size, min_value=1)
    shard_size = -(-shard_size // batch_size) * batch_size  # batch boundaries never depend on where a run stopped
    if num_workers is None:
        num_workers = 1 if modality == "image" else 0
    num_workers = check_int("num_workers", num_workers, min_value=0)
    rank, world_size, use_barrier = _distributed_context(rank, world_size)

    key, desc = cache_key(encoder, dataset, field, batch_size)
    entry = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / key[:2] / key
    layers = list(encoder.layers)
    desc.update(ids_sha256=hashlib.sha256("\n".join(ids).encode()).hexdigest(), n=n)

    cached = _load_entry(entry, layers, n, verify=verify)
    if cached is not None:
        log.info("feature cache hit %s", entry)
        return Features(cached, ids, key, entry, True, desc)

    dims = dict(encoder.dims)
    bounds = _shard_bounds(n, shard_size)
    mine = [b for i, b in enumerate(bounds) if i % world_size == rank]
    todo = [b for b in mine if not _shard_done(entry, layers, *b, dims)]
    if len(todo) < len(mine):
        log.info("resuming %s: %d of %d shards already done", entry, len(mine) - len(todo), len(mine))
    (entry / "shards").mkdir(parents=True, exist_ok=True)
    _compute_shards(encoder, dataset, field, entry, layers, dims, todo, batch_size, num_workers, show_progress)
    _barrier(use_barrier)

    if rank == 0 or not use_barrier:
        missing = [b for b in bounds if not _shard_done(entry, layers, *b, dims)]
        if missing:
            raise RuntimeError(
                f"rank {rank}/{world_size} finished its shards but {len(missing)} others are missing; "
                "rerun once every rank has finished (finished shards are kept)"
            )
        _merge(entry, layers, dims, bounds, n, desc)
    _barrier(use_barrier)
    merged = _load_entry(entry, layers, n, verify=False)
    if merged is None:  # pragma: no cover - only if the files vanish between merge and read
        raise RuntimeError(f"feature cache entry {entry} could not be read back after writing it")
    return Features(merged, ids, key, entry, False, desc)


def _compute_shards(encoder, dataset, field, entry, layers, dims, todo, batch_size, num_workers, show_progress):
    """Compute the shards in ``todo``, each written atomically as soon as its rows are done."""
    if not todo:
        return
    from ._backend import to_numpy_f32

    orders = [_shard_order(encoder, dataset, field, start, stop) for start, stop in todo]
    batches = [order[s:s + batch_size] for order in orders for s in range(0, len(order), batch_size)]
    shard_of_batch = [i for i, (start, stop) in enumerate(todo) for _ in range(start, stop, batch_size)]
    source = _BatchSource(dataset, field, encoder, batches)
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(stop - start for start, stop in todo), desc=f"embed {encoder.spec}", unit="item")
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    t0 = time.perf_counter()
    for b, batch in enumerate(_iter_batches(source, num_workers)):
        if isinstance(batch, _Failed):
            batch.reraise()
        out = encoder.forward(batch)
        for layer in layers:
            arr = to_numpy_f32(out[layer])
            if arr.shape != (len(batches[b]), dims[layer]):
                raise RuntimeError(
                    f"encoder {encoder.spec!r} returned {arr.shape} for layer {layer!r}, "
                    f"expected ({len(batches[b])}, {dims[layer]})"
                )
            parts[layer].append(arr)
        if bar is not None:
            bar.update(len(batches[b]))
        last_of_shard = b + 1 == len(batches) or shard_of_batch[b + 1] != shard_of_batch[b]
        if last_of_shard:
            i = shard_of_batch[b]
            start, stop = todo[i]
            for layer in layers:
                rows = np.concatenate(parts[layer], axis=0)
                shard = np.empty_like(rows)
                shard[orders[i] - start] = rows  # back to row order
                with atomic_write(_shard_path(entry, layer, start, stop)) as f:
                    np.save(f, shard, allow_pickle=False)
                parts[layer] = []
    if bar is not None:
        bar.close()
    log.info("computed %d shards in %.1fs", len(todo), time.perf_counter() - t0)


def _merge(entry: Path, layers, dims, bounds, n: int, desc: dict) -> None:
    """Concatenate the shards into one ``<layer>.npy`` per layer, then write ``meta.json`` (the completion mark)."""
    files = {}
    for layer in layers:
        name = f"{_safe_layer(layer)}.npy"
        target = entry / name
        with atomic_write(target) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                    "shape": (n, dims[layer])}
            )
            for start, stop in bounds:
                shard = np.load(_shard_path(entry, layer, start, stop), allow_pickle=False)
                f.write(np.ascontiguousarray(shard, dtype=np.float32).tobytes())
        files[layer] = {"file": name, "dim": dims[layer], "bytes": target.stat().st_size, "sha256": sha256_file(target)}
    meta = dict(desc, files=files, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with atomic_write(entry / "meta.json", "w") as f:
        json.dump(meta, f, indent=2, default=str)
    shutil.rmtree(entry / "shards", ignore_errors=True)

