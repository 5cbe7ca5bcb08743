"""``unialign run exp.yaml``: experiments and ablation grids from a YAML file, resumable, with a report.

A config names feature sets (an encoder on a dataset, through the feature cache, or a precomputed file), the pairs
to study, and up to three tasks: ``similarity`` (metrics, optional permutation null, layer × layer sweeps),
``matching`` (training-free methods vs number of known pairs, the base/query protocol) and ``projectors``
(projector kinds fitted on a train split, retrieval on the held-out split, training curves). Each method entry may
carry a ``grid`` of parameter values; the top-level ``seeds`` repeat every cell.

The experiment is cut into **cells** (one task × pair × method × parameter combination × number of known pairs ×
seed). Each finished cell is written atomically to ``OUT/cells/<task>/<id>.json``, where ``id`` hashes everything
that determines the result (the cell's settings and the fingerprints of its features), so a killed run, rerun,
recomputes only the missing cells, and a changed setting never reuses a stale one. After the last cell the run
writes ``results.json`` (every cell and the aggregates), ``results.csv`` (one row per aggregate: mean ± std over
seeds and splits), ``report.md`` and its PNG plots.

Example::

    name: multi30k-en-de
    seeds: [0]
    features:
      en_minilm: {encoder: minilm, dataset: "multi30k:test.en"}
      de_e5: {encoder: e5-small, dataset: "multi30k:test.de"}
    pairs: [[en_minilm, de_e5]]
    similarity: {metrics: [linear_cka, {name: mutual_knn, params: {k: 10}}], permutations: 20}
    matching:
      methods: [faq, local_cka, {name: procrustes}]
      n_known: [10, 30, 100, 300]
      n_query: 100
      n_splits: 5
    projectors:
      kinds: [procrustes, {kind: mlp, params: {max_epochs: 20}}]
      test_fraction: 0.2

Keys (everything else is an error):

``name`` (str), ``out`` (folder, relative to the YAML file; default: the YAML file's name without suffix),
``seeds`` (list of int, default ``[0]``), ``cache_dir`` (feature cache folder);
``features``: ``NAME: FILE[:KEY]`` or ``NAME: {file: FILE[:KEY]}`` (precomputed, one row per item) or
``NAME: {encoder: SPEC, dataset: SPEC, field:, encoder_options: {…}, dataset_options: {…}, layers: […]}`` (fields
with several rows per item, such as captions, are averaged per item; with ``layers`` the similarity task also
sweeps layer × layer);
``pairs``: list of ``[X, Y]`` feature names;
``similarity``: ``metrics`` (names or ``{name:, params:, grid:}``; ``params`` may also set ``device`` and
``chunk_size``, the memory knob), ``permutations`` (null draws, default 0);
``matching``: ``methods`` (names or ``{name:, params:, grid:}``), ``n_known`` (list of known-pair counts),
``n_query`` (hidden items per split besides the known pairs, default 100), ``n_splits`` (default 5),
``known_selection`` (``random`` or ``kmeans``), ``layers``
(``first``, the default: each feature set's first layer; ``all``: every layer of X × every layer of Y, shown as
``name[layer]``), ``query`` (optional ``{X: XQ, Y: YQ}``: the known pairs come from the pair's own feature sets and
the queries from XQ / YQ, the same encoders on another dataset, e.g. COCO base pairs and NoCaps queries);
``projectors``: ``kinds`` (kinds or ``{kind:, params:, grid:}``), ``test_fraction`` (default 0.2), ``ks``
(Recall@k cut-offs, default ``[1, 5, 10]``), ``layers`` (as for matching), ``test`` (optional ``{X: XT, Y: YT}``:
fit on every pair of X / Y, test retrieval on XT / YT instead of a held-out fraction).

Paths and specs may use environment variables (``captions:$UNIALIGN_DATA/coco/captions_val2017.json``); an unset
one is an error naming the key. With layer sweeps the similarity task also reports ``sweep_best``, the value of the
best layer pair (the protocol of Huh et al. 2024). ``results.json`` records its provenance: the library versions,
every feature set (file and sha256, or encoder, dataset and feature-cache key) and the seeds.

The whole file is validated before any work starts: unknown keys, wrong types, unknown names, missing or unreadable
feature files (their headers are read, not their arrays), pairs whose feature sets differ in rows, known pairs plus
queries that do not fit in the items, and parameter values a metric, matching method or projector kind rejects
(each solver package checks its own) are errors that name the key (``matching.methods[1].name: unknown method
'fqa'; valid: …``, ``matching.n_known[3]: 300 known pairs + 100 queries need 400 items; en_minilm has 130``). The
run repeats the size checks on the real features before its first cell. The old keys ``matching.n_seeds`` and
``matching.seed_selection`` still work for a release, with a warning.

The stages live in one module each: :mod:`._config` (schema and typed sections), :mod:`._preflight` (sizes and
parameter values), :mod:`._cells` (cells, the feature store, one cell of each task) and :mod:`._report`
(aggregates, results files, plots and report.md).

This module is part of the app wing (:mod:`align.app`), which calls :mod:`matching` and :mod:`projectors` directly.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..._io import atomic_write, json_default
from ...exceptions import ConfigError
from ._cells import CELL_FORMAT, Cell, FeatureStore, cell_features, cell_id, list_cells, run_cell, task_settings
from ._config import (ExperimentConfig, FeatureSpec, MatchingTask, MethodSpec, ProjectorTask, SimilarityTask,
                      validate_config)
from ._preflight import preflight
from ._report import aggregate, experiment_provenance, write_outputs

log = logging.getLogger(__name__)

__all__ = [
    "CELL_FORMAT",
    "Cell",
    "ConfigError",
    "ExperimentConfig",
    "ExperimentResult",
    "FeatureSpec",
    "MatchingTask",
    "MethodSpec",
    "ProjectorTask",
    "SimilarityTask",
    "check_summary",
    "list_cells",
    "load_config",
    "preflight",
    "run_experiment",
    "validate_config",
]


def load_config(path: str | os.PathLike, *, warn: Callable[[str], None] | None = None) -> ExperimentConfig:
    """Read an experiment file, validate it and check its sizes and parameter values; nothing is computed.

    Parse (YAML) -> :func:`validate_config` (schema) -> :func:`preflight` (the sizes known from the files' headers
    and the datasets' lengths). ``warn`` receives one line per deprecated key (default: the log).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{path}: not valid YAML ({' '.join(first[:3])})") from None
    cfg = validate_config(raw, base_dir=path.parent, default_out=path.parent / path.stem, warn=warn or log.warning)
    preflight(cfg, {f: (spec.n_items, spec.dim) for f, spec in cfg.features.items()})
    return cfg


def check_summary(cfg: ExperimentConfig) -> dict:
    """What ``unialign run --check`` prints: the experiment's name, output folder and number of cells per task."""
    cells = list_cells(cfg)
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.task] = counts.get(c.task, 0) + 1
    return {"valid": True, "name": cfg.name, "out": str(cfg.out), "n_cells": len(cells), "cells": counts}


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """What a run produced.

    Attributes
    ----------
    out : Path
    n_cells, n_computed, n_cached : int
        Cells in the experiment, computed by this call, and found finished on disk.
    files : dict
        ``{"results.json": …, "results.csv": …, "report.md": …, <plot>: …}``.
    aggregates : list of dict
        The rows of ``results.csv``.
    seconds : float
    """

    out: Path
    n_cells: int
    n_computed: int
    n_cached: int
    files: dict
    aggregates: list
    seconds: float

    def to_dict(self) -> dict:
        return {"out": str(self.out), "n_cells": self.n_cells, "n_computed": self.n_computed,
                "n_cached": self.n_cached, "files": {k: str(v) for k, v in self.files.items()},
                "seconds": self.seconds}


def run_experiment(cfg: ExperimentConfig, *, show_progress: bool = False,
                   say: Callable[[str], None] | None = None) -> ExperimentResult:
    """Run every unfinished cell of ``cfg``, then write results.json, results.csv, report.md and the plots.

    Cells already on disk (same settings, same feature fingerprints) are read, not recomputed. A failing cell
    stops the run with its error; the cells finished before it stay on disk for the rerun.
    """
    say = say or log.info
    t0 = time.perf_counter()
    out = cfg.out
    (out / "cells").mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "config.json", "w") as f:
        json.dump(cfg.source, f, indent=2, default=str)
    store = FeatureStore(cfg, show_progress)
    cells = list_cells(cfg)
    # every feature set a cell reads, loaded (embedded) before the first cell, then the size checks on real shapes
    used = list(dict.fromkeys(f for c in cells for f in cell_features(c, cfg)))
    shapes = {}
    for name in used:
        arrays = list(store.layers(name).values())
        shapes[name] = (arrays[0].shape[0], arrays[0].shape[1])
        for layer, arr in zip(cfg.features[name].layers or ("features",), arrays):
            if arr.ndim != 2 or arr.shape[0] != shapes[name][0]:
                raise ConfigError(f"features.{name}: layer {layer!r} has shape {arr.shape}; every layer needs "
                                  f"{shapes[name][0]} rows")
    preflight(cfg, shapes)
    records, n_cached, n_computed = [], 0, 0
    it = cells
    if show_progress:
        from tqdm.auto import tqdm

        it = tqdm(cells, desc=f"{cfg.name}", unit="cell")
    for cell in it:
        settings = task_settings(cfg, cell.task)
        cid = cell_id(cell, settings, [store.fingerprint(f) for f in cell_features(cell, cfg)])
        path = out / "cells" / cell.task / f"{cid}.json"
        record = _read_cell(path)
        if record is not None:
            n_cached += 1
        else:
            t = time.perf_counter()
            result = run_cell(cell, store, cfg)
            record = {"id": cid, **cell.describe(), "settings": settings, "result": result,
                      "seconds": time.perf_counter() - t}
            with atomic_write(path, "w") as f:
                json.dump(record, f, default=json_default)
            n_computed += 1
        records.append(record)
    say(f"{len(cells)} cells: {n_computed} computed, {n_cached} already done")
    aggregates = aggregate(records, cfg)
    files = write_outputs(cfg, records, aggregates, out, experiment_provenance(cfg, store, used))
    seconds = time.perf_counter() - t0
    return ExperimentResult(out=out, n_cells=len(cells), n_computed=n_computed, n_cached=n_cached, files=files,
                            aggregates=aggregates, seconds=round(seconds, 2))


def _read_cell(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) and "result" in record else None
    except (OSError, json.JSONDecodeError):
        log.warning("unreadable cell %s: recomputing it", path)
        return None
