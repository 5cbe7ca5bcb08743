"""``unialign embed`` and ``unialign select``: features of a dataset through the cache, written out or ranked.

:func:`embed_to_files` extracts one field of a dataset with an encoder (through the feature cache, split across
``torchrun`` ranks) and optionally writes the arrays and row ids with a provenance record beside them;
:func:`select_encoders` embeds a dataset with several candidate encoders and ranks every pair by a similarity
metric (Maniparambil et al., CVPR 2024: the step before training projectors).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._distributed import distributed_session, local_device
from .._io import FEATURE_SUFFIXES, atomic_write, load_features, save_features, to_jsonable
from .._provenance import provenance, write_feature_sidecar
from ._features import embed_feature_set, field_for

__all__ = ["embed_to_files", "select_encoders"]


def _write_arrays(out: str, layers: Mapping[str, Any], record: dict) -> None:
    suffix = out.rsplit(".", 1)[-1].lower()
    if suffix == "npy":
        if len(layers) > 1:
            raise ValueError(f"{len(layers)} layers were extracted; write them to a .npz or .safetensors --out")
        save_features(out, np.asarray(next(iter(layers.values()))))
        return
    arrays = {name: np.asarray(arr) for name, arr in layers.items()}
    if suffix == "npz":
        with atomic_write(out) as f:
            np.savez(f, **arrays)
        return
    from safetensors.numpy import save

    header = {"unialign.encoder": str(record["encoder"]),
              "unialign.provenance": json.dumps(to_jsonable(record), sort_keys=True)}
    with atomic_write(out) as f:
        f.write(save(arrays, metadata=header))


def embed_to_files(
    encoder: str,
    dataset: str,
    *,
    field: str | None = None,
    encoder_options: dict | None = None,
    dataset_options: dict | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    out: str | None = None,
    ids_out: str | None = None,
    show_progress: bool = False,
    command: str = "align.app.embed.embed_to_files",
    options: dict | None = None,
) -> dict:
    """Extract ``field`` of ``dataset`` with ``encoder`` once (cached), and write it to ``out`` / ``ids_out``.

    Parameters
    ----------
    encoder, dataset : str
        Specs for :func:`align.encoders.load_encoder` and :func:`align.data.load_dataset`.
    encoder_options, dataset_options : dict, optional
        Their options (``layers``, ``pooling``, ``device``, …; ``split``, ``template``, …). Under ``torchrun`` a
        ``device="cuda"`` becomes this rank's ``cuda:LOCAL_RANK``.
    out : str, optional
        ``.npy`` (one layer), ``.npz`` or ``.safetensors`` (every layer, keyed by name); a
        ``<out>.provenance.json`` sidecar records the encoder (a ``.safetensors`` header too).
    ids_out : str, optional
        The row ids, one per line.

    Returns
    -------
    dict
        :meth:`align.features.Features.to_dict` plus ``field``, ``out``, ``ids_out`` and ``provenance``.
    """
    from ..data import load_dataset
    from ..encoders import load_encoder
    from ..features import embed

    if out is not None and not out.lower().endswith(FEATURE_SUFFIXES):
        raise ValueError(f"`--out` must end in .npy, .npz or .safetensors, got {out!r}")
    opts = dict(encoder_options or {})
    with distributed_session():  # before the model loads, so each rank's "cuda" is its own GPU
        if "device" in opts:
            opts["device"] = local_device(opts["device"])
        enc = load_encoder(encoder, **opts)
        ds = load_dataset(dataset, **dict(dataset_options or {}))
        feats = embed(enc, ds, field=field, cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers,
                      show_progress=show_progress)
    result = feats.to_dict()
    result["field"] = ds.resolve_field(field)
    record = provenance(command=command, options=dict(options or {}),
                        encoder=feats.meta.get("encoder", {}).get("spec", enc.spec),
                        encoder_fingerprint=feats.meta.get("encoder", {}).get("fingerprint"),
                        dataset=ds.spec, field=result["field"], layers=list(feats.layers),
                        dataset_fingerprint=feats.meta.get("dataset", {}).get("fingerprint"), cache_key=feats.key)
    if out is not None:
        _write_arrays(out, feats.layers, record)
        result["out"] = out
        result["dtype"] = "float32"
        # beside the file: which encoder made it, so a projector can refuse another encoder's features
        result["provenance_file"] = str(write_feature_sidecar(out, record))
    if ids_out is not None:
        with atomic_write(ids_out, "w") as f:
            f.write("\n".join(feats.ids) + "\n")
        result["ids_out"] = ids_out
    result["provenance"] = record
    return result


def select_encoders(
    dataset: str,
    encoders: Sequence[str] = (),
    features: Mapping[str, str] | None = None,
    *,
    metric: str = "linear_cka",
    n_permutations: int = 0,
    rng: int = 0,
    dataset_options: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
    show_progress: bool = False,
    command: str = "align.app.embed.select_encoders",
    options: dict | None = None,
) -> dict:
    """Rank candidate encoder pairs by how similarly they represent the items of ``dataset``, most similar first.

    ``encoders`` are specs, each optionally ``SPEC@FIELD`` (default: the dataset's field of the encoder's
    modality); ``features`` maps names to precomputed feature files with one row per item. Fields with several
    rows per item (captions) are averaged per item. Returns :meth:`align.similarity.PairRanking.to_dict` plus
    ``dataset``, ``seed`` and ``provenance``.
    """
    from ..data import load_dataset
    from ..encoders import load_encoder
    from ..similarity import rank_pairs

    if len(encoders) + len(features or {}) < 2:
        raise ValueError("give at least two candidates (--encoder SPEC and/or --features NAME=FILE)")
    ds = load_dataset(dataset, **dict(dataset_options or {}))
    arrays: dict[str, np.ndarray] = {}
    sources: dict[str, Any] = {}
    for item in encoders:
        spec, _, field = item.partition("@")
        enc = load_encoder(spec)
        fs = embed_feature_set(enc, ds, field_for(ds, enc.modality, field or None), cache_dir=cache_dir,
                               show_progress=show_progress)
        arrays[item] = fs.X
        sources[item] = fs.source
    for name, path in (features or {}).items():
        X = np.asarray(load_features(str(path)))
        if X.ndim != 2 or X.shape[0] != len(ds):
            raise ValueError(f"--features {name}: expected ({len(ds)}, d) rows for the dataset's items, "
                             f"got shape {X.shape}")
        arrays[name] = X
        sources[name] = Path(str(path))
    ranking = rank_pairs(arrays, metric, n_permutations=n_permutations, rng=rng)
    out = ranking.to_dict()
    out["dataset"] = dataset
    out["seed"] = rng if n_permutations else None
    out["provenance"] = provenance(command=command, options=dict(options or {}), dataset=dataset,
                                   candidates=sources, metric=metric, seed=rng if n_permutations else None)
    return out
