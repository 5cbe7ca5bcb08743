"""Cells (one task x pair x method x parameters x known pairs x layers x seed), the feature store, and the code
that computes one cell of each task."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import projectors

from ..._io import load_features, sha256_file
from .._features import embed_feature_set
from .._solvers import evaluate
from ._config import ExperimentConfig

__all__ = ["CELL_FORMAT", "Cell", "FeatureStore", "cell_features", "cell_id", "list_cells", "run_cell",
           "task_settings"]

#: Bumped when a cell's meaning changes, so stale cells are recomputed.
CELL_FORMAT = 1

class FeatureStore:
    """Loads each feature set once, on first use: ``{layer: (n, d)}`` arrays and a fingerprint."""

    def __init__(self, cfg: ExperimentConfig, show_progress: bool):
        self.cfg = cfg
        self.show_progress = show_progress
        self._layers: dict[str, dict[str, np.ndarray]] = {}
        self._fingerprints: dict[str, str] = {}

    def fingerprint(self, name: str) -> str:
        """What the features are: the file's sha256, or their feature-cache key (this embeds them, or reads the cache,
        once; the arrays are kept for :meth:`layers`)."""
        if name not in self._fingerprints:
            spec = self.cfg.features[name]
            if spec.file is not None:
                self._fingerprints[name] = f"file:{sha256_file(spec.file)}:{spec.key or ''}"
            else:
                self._fingerprints[name] = "cache:" + self._embed(name)[1]
        return self._fingerprints[name]

    def layers(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._layers:
            spec = self.cfg.features[name]
            if spec.file is not None:
                source = spec.file if spec.key is None else f"{spec.file}:{spec.key}"
                X = np.asarray(load_features(spec.file, key=spec.key), dtype=np.float32)
                if X.ndim != 2:
                    raise ValueError(f"features.{name}: {source!r} holds an array of shape {X.shape}; expected (n, d)")
                self._layers[name] = {"features": X}
            else:
                self._embed(name)
        return self._layers[name]

    def X(self, name: str, layer: Any = None) -> np.ndarray:
        """The features of one layer, named as in the config (``None``: the first)."""
        arrays = list(self.layers(name).values())
        if layer is None:
            return arrays[0]
        return arrays[list(self.cfg.features[name].layers).index(layer)]

    def _embed(self, name: str):
        from ...data import load_dataset
        from ...encoders import load_encoder

        spec = self.cfg.features[name]
        options = dict(spec.encoder_options)
        if spec.layers:
            options["layers"] = list(spec.layers)
        fs = embed_feature_set(load_encoder(spec.encoder, **options), load_dataset(spec.dataset, **spec.dataset_options),
                               spec.field, cache_dir=self.cfg.cache_dir, show_progress=self.show_progress)
        self._layers[name] = fs.layers
        self._fingerprints[name] = "cache:" + fs.key
        return self._layers[name], fs.key


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work; its id hashes :meth:`describe`, the task's settings and the two feature fingerprints."""

    task: str
    x: str
    y: str
    method: str
    params: dict
    seed: int
    n_known: int | None = None
    layer_x: Any = None
    layer_y: Any = None

    def describe(self) -> dict:
        d = {"task": self.task, "x": self.x, "y": self.y, "method": self.method, "params": self.params,
             "seed": self.seed, "n_known": self.n_known}
        if self.layer_x is not None or self.layer_y is not None:
            d.update(layer_x=self.layer_x, layer_y=self.layer_y)
        return d


def _layer_pairs(cfg: ExperimentConfig, x: str, y: str, mode: str) -> list[tuple]:
    """``[(None, None)]`` (first layers) or every (layer of X, layer of Y) as written in the config."""
    lx, ly = cfg.features[x].layers, cfg.features[y].layers
    if mode == "first" or (len(lx) <= 1 and len(ly) <= 1):
        return [(None, None)]
    return [(a, b) for a in (lx or (None,)) for b in (ly or (None,))]


def list_cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell of the experiment, in the order they run."""
    cells = []
    for x, y in cfg.pairs:
        if cfg.similarity:
            # the metric is deterministic: the seed only draws the null's permutations
            seeds = cfg.seeds if cfg.similarity.null else cfg.seeds[:1]
            for spec in cfg.similarity.metrics:
                for params in spec.combos():
                    for seed in seeds:
                        cells.append(Cell("similarity", x, y, spec.name, params, seed))
        if cfg.matching:
            for spec in cfg.matching.methods:
                for params in spec.combos():
                    for k in cfg.matching.n_known:
                        for lx, ly in _layer_pairs(cfg, x, y, cfg.matching.layers):
                            for seed in cfg.seeds:
                                cells.append(Cell("matching", x, y, spec.name, params, seed, n_known=k,
                                                  layer_x=lx, layer_y=ly))
        if cfg.projectors:
            for spec in cfg.projectors.kinds:
                for params in spec.combos():
                    for lx, ly in _layer_pairs(cfg, x, y, cfg.projectors.layers):
                        for seed in cfg.seeds:
                            cells.append(Cell("projectors", x, y, spec.name, params, seed, layer_x=lx, layer_y=ly))
    return cells


def task_settings(cfg: ExperimentConfig, task: str) -> dict:
    """The task's settings that every one of its cells depends on (part of the cell id)."""
    if task == "similarity":
        return {"null": cfg.similarity.null}
    if task == "matching":
        m = cfg.matching
        out = {"n_query": m.n_query, "n_splits": m.n_splits, "known_selection": m.known_selection}
        if m.query:
            out["query"] = dict(m.query)
        return out
    p = cfg.projectors
    if p.test:
        return {"test": dict(p.test), "ks": list(p.ks)}
    return {"test_fraction": p.test_fraction, "ks": list(p.ks)}


def cell_features(cell: Cell, cfg: ExperimentConfig) -> list[str]:
    """The feature sets a cell reads: its pair, plus the pair's held-out (query / test) feature sets."""
    names = [cell.x, cell.y]
    held = cfg.matching.query if cell.task == "matching" else cfg.projectors.test if cell.task == "projectors" \
        else None
    if held:
        names += [held[cell.x], held[cell.y]]
    return names


def cell_id(cell: Cell, settings: dict, fingerprints: Sequence[str]) -> str:
    """sha256 (20 hex digits) of everything that determines the cell's result."""
    desc = {"format": CELL_FORMAT, **cell.describe(), "settings": settings, "features": list(fingerprints)}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _run_similarity(cell: Cell, store: FeatureStore, cfg: ExperimentConfig) -> dict:
    from ...similarity import compare, layer_sweep, permutation_null

    lx, ly = store.layers(cell.x), store.layers(cell.y)
    params = dict(cell.params)
    if "chunk_size" in params:  # the memory knob's name in the config; compare() still calls it batch_size
        params["batch_size"] = params.pop("chunk_size")
    out: dict[str, Any] = {}
    if len(lx) > 1 or len(ly) > 1:
        from ...similarity import list_metrics

        sweep = layer_sweep(lx, ly, cell.method, **params)
        out["sweep"] = sweep.to_dict()
        # the best layer pair (largest similarity, smallest distance), as the Platonic protocol reports
        M = np.asarray(sweep.to_dict()["matrix"], dtype=np.float64)
        pick = np.nanargmax if list_metrics()[cell.method].kind == "similarity" else np.nanargmin
        i, j = np.unravel_index(pick(M), M.shape)
        out.update(sweep_best=float(M[i, j]), sweep_best_layers=[out["sweep"]["layers_x"][i],
                                                                 out["sweep"]["layers_y"][j]])
    X, Y = next(iter(lx.values())), next(iter(ly.values()))
    if cfg.similarity.null:
        r = permutation_null(X, Y, cell.method, cfg.similarity.null, cell.seed, **params)
        out.update(value=r.observed, null_mean=r.null_mean, null_std=r.null_std, p_value=r.p_value,
                   n_permutations=r.n_permutations, n=r.n)
    else:
        r = compare(X, Y, cell.method, **params)
        out.update(value=r.value, n=r.n)
    return out


def _run_matching(cell: Cell, store: FeatureStore, cfg: ExperimentConfig) -> dict:
    m = cfg.matching
    X, Y = store.X(cell.x, cell.layer_x), store.X(cell.y, cell.layer_y)
    query = None
    if m.query:
        query = (store.X(m.query[cell.x], cell.layer_x), store.X(m.query[cell.y], cell.layer_y))
    res = evaluate(X, Y, cell.method, n_known=cell.n_known, n_query=m.n_query, n_splits=m.n_splits,
                   known_selection=m.known_selection, rng=cell.seed, query=query, **cell.params)
    d = res.to_dict()
    out = {"accuracy": float(d["accuracy"]), "accuracies": [float(a) for a in d["accuracies"]],
           "recall": d.get("recall"), "seconds": d.get("seconds")}
    if query is not None:
        out["recall_splits"] = d.get("recall_splits")
    if d.get("confidence_splits"):  # blind matching: the report that tells a success from a failure
        out["confidence_splits"] = d["confidence_splits"]
    return out


def _run_projector(cell: Cell, store: FeatureStore, cfg: ExperimentConfig) -> dict:
    from ...evaluation import retrieval_metrics

    X, Y = np.asarray(store.X(cell.x, cell.layer_x)), np.asarray(store.X(cell.y, cell.layer_y))
    held = cfg.projectors.test
    if held:  # train on every pair, test on the test feature sets
        X_test = np.asarray(store.X(held[cell.x], cell.layer_x))
        Y_test = np.asarray(store.X(held[cell.y], cell.layer_y))
        train = np.arange(X.shape[0])
    else:
        n = X.shape[0]
        n_test = max(1, round(cfg.projectors.test_fraction * n))
        perm = np.random.default_rng(cell.seed).permutation(n)
        test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        X_test, Y_test = X[test], Y[test]
    params = dict(cell.params)
    proj = projectors.make_projector(cell.method, **params)
    if "rng" in proj.get_params() and "rng" not in params:
        proj.set_params(rng=cell.seed)
    t0 = time.perf_counter()
    proj.fit(X[train], Y[train])
    fit_s = time.perf_counter() - t0
    res = retrieval_metrics(proj.transform(X_test), proj.transform_y(Y_test), ks=cfg.projectors.ks)
    out = {"retrieval": res.to_dict(), "n_train": len(train), "n_test": len(X_test), "fit_seconds": fit_s}
    if proj.trains:
        tr = proj.train_result_
        out["history"] = [{k: v for k, v in rec.items() if isinstance(v, (int, float))} for rec in tr.history]
        out["best_epoch"] = int(tr.best_epoch)
    return out


def run_cell(cell: Cell, store: FeatureStore, cfg: ExperimentConfig) -> dict:
    """Compute one cell; the result is plain JSON values."""
    if cell.task == "similarity":
        return _run_similarity(cell, store, cfg)
    if cell.task == "matching":
        return _run_matching(cell, store, cfg)
    return _run_projector(cell, store, cfg)
