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
      n_seeds: [10, 30, 100, 300]
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
``similarity``: ``metrics`` (names or ``{name:, params:, grid:}``), ``permutations`` (null draws, default 0);
``matching``: ``methods`` (names or ``{name:, params:, grid:}``), ``n_seeds`` (list of known-pair counts),
``n_query`` (default 100), ``n_splits`` (default 5), ``seed_selection`` (``random`` or ``kmeans``), ``layers``
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
queries that do not fit in the items, and parameter values a metric, matching method or projector kind rejects (it
is run on a small random stand-in) are errors that name the key (``matching.methods[1].name: unknown method 'fqa';
valid: …``, ``matching.n_seeds[3]: 300 known pairs + 100 queries need 400 items; en_minilm has 130``). The run
repeats the size checks on the real features before its first cell.

This module is part of the app wing (:mod:`align.app`), which calls :mod:`matching` and :mod:`projectors` directly.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import matching
import projectors

from ..._io import atomic_write, json_default, load_features, pick_array, sha256_file, split_feature_path
from .._solvers import min_known_pairs

log = logging.getLogger(__name__)

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ExperimentResult",
    "load_config",
    "run_experiment",
    "validate_config",
]

CELL_FORMAT = 1


from ...exceptions import ConfigError  # noqa: E402  (re-exported: the experiment's errors)


# --------------------------------------------------------------------------------------------------------------
# The config: parsing and strict validation
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One named feature set: a precomputed ``file`` (and array ``key``), or an ``encoder`` run on a ``dataset``."""

    name: str
    file: str | None = None
    key: str | None = None
    encoder: str | None = None
    dataset: str | None = None
    field: str | None = None
    encoder_options: dict = dataclasses.field(default_factory=dict)
    dataset_options: dict = dataclasses.field(default_factory=dict)
    layers: tuple = ()
    n_items: int | None = None  # rows (items), known before any work: the file's header, or the dataset's length
    dim: int | None = None  # columns, known before any work only for files


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method / metric / projector kind with fixed params and a grid of varied ones."""

    name: str
    params: dict
    grid: dict

    def combos(self) -> list[dict]:
        """Every parameter setting: ``params`` updated with one point of the grid (sorted keys)."""
        if not self.grid:
            return [dict(self.params)]
        keys = sorted(self.grid)
        return [{**self.params, **dict(zip(keys, values))} for values in itertools.product(*(self.grid[k] for k in keys))]


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment file (:func:`load_config`); ``source`` is the file as parsed, kept for the results."""

    name: str
    out: Path
    seeds: tuple
    cache_dir: str | None
    features: dict
    pairs: tuple
    similarity: dict | None
    matching: dict | None
    projectors: dict | None
    source: dict = dataclasses.field(repr=False, default_factory=dict)


_TOP_KEYS = {"name", "out", "seeds", "cache_dir", "features", "pairs", "similarity", "matching", "projectors"}
_FEATURE_KEYS = {"file", "encoder", "dataset", "field", "encoder_options", "dataset_options", "layers"}
_SIM_KEYS = {"metrics", "permutations"}
_MATCH_KEYS = {"methods", "n_seeds", "n_query", "n_splits", "seed_selection", "layers", "query"}
_PROJ_KEYS = {"kinds", "test_fraction", "ks", "layers", "test"}
_ENV_VAR = re.compile(r"\$(\{)?([A-Za-z_][A-Za-z0-9_]*)(?(1)\})")


def _expand(value: str, key: str) -> str:
    """``$VAR`` / ``${VAR}`` and ``~`` in a path or spec; an unset variable is an error naming the key."""
    for match in _ENV_VAR.finditer(value):
        if match.group(2) not in os.environ:
            raise _fail(key, f"uses ${match.group(2)}, which is not set; export {match.group(2)}=… (the folder it "
                             "names) or write the path out")
    value = _ENV_VAR.sub(lambda m: os.environ[m.group(2)], value)
    return os.path.expanduser(value) if value.startswith("~") else value


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"{key}: {message}")


def _check_keys(obj: Any, allowed: set, key: str, required: Sequence[str] = ()) -> dict:
    if not isinstance(obj, Mapping):
        raise _fail(key or "the experiment file", f"must be a mapping, got {type(obj).__name__}")
    unknown = sorted({"null" if k is None else str(k) for k in obj} - allowed)  # YAML reads `null:` as None
    if unknown:
        raise _fail(f"{key}.{unknown[0]}" if key else unknown[0],
                    f"unknown key; valid keys here: {', '.join(sorted(allowed))}")
    for r in required:
        if r not in obj:
            raise _fail(f"{key}.{r}" if key else r, "is required")
    return dict(obj)


def _want(value: Any, types, key: str, what: str):
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _fail(key, f"must be {what}, got {value!r}")
    if not isinstance(value, types):
        raise _fail(key, f"must be {what}, got {type(value).__name__} {value!r}")
    return value


def _int_list(value: Any, key: str, *, min_value: int = 0) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    _want(value, list, key, "an integer or a list of integers")
    if not value:
        raise _fail(key, "must not be empty")
    for i, v in enumerate(value):
        _want(v, int, f"{key}[{i}]", "an integer")
        if v < min_value:
            raise _fail(f"{key}[{i}]", f"must be >= {min_value}, got {v}")
    return tuple(value)


def _method_list(value: Any, key: str, name_key: str, valid: Sequence[str]) -> list[MethodSpec]:
    _want(value, list, key, f"a list of names or {{{name_key}: …, params: …, grid: …}} mappings")
    if not value:
        raise _fail(key, "must not be empty")
    out = []
    for i, entry in enumerate(value):
        k = f"{key}[{i}]"
        if isinstance(entry, str):
            entry = {name_key: entry}
        entry = _check_keys(entry, {name_key, "params", "grid"}, k, required=(name_key,))
        name = _want(entry[name_key], str, f"{k}.{name_key}", "a string")
        if valid and name not in valid:
            raise _fail(f"{k}.{name_key}", f"unknown {name_key} {name!r}; valid: {', '.join(valid)}")
        params = entry.get("params") or {}
        _want(params, dict, f"{k}.params", "a mapping of parameter names to values")
        grid = entry.get("grid") or {}
        _want(grid, dict, f"{k}.grid", "a mapping of parameter names to lists of values")
        for g, vals in grid.items():
            _want(vals, list, f"{k}.grid.{g}", "a list of values")
            if not vals:
                raise _fail(f"{k}.grid.{g}", "must not be empty")
            if g in params:
                raise _fail(f"{k}.grid.{g}", "is also fixed in params; keep it in one place")
        out.append(MethodSpec(name=name, params=dict(params), grid={str(g): list(v) for g, v in grid.items()}))
    return out


def _check_encoder_spec(spec: str, key: str) -> None:
    from ...encoders import list_encoders

    names, prefixes = set(), set()
    for info in list_encoders():
        s = info.spec
        if "<" in s:
            prefixes.add(s.split(":", 1)[0] + ":")
        else:
            names.add(s)
    if spec in names:
        return
    prefix = spec.split(":", 1)[0] + ":" if ":" in spec else None
    if prefix not in prefixes:
        raise _fail(key, f"unknown encoder {spec!r}; use one of {', '.join(sorted(names))} or a prefix "
                         f"{', '.join(sorted(prefixes))}")
    if prefix == "file:":
        path = spec[len("file:"):].rsplit(":", 1)[0] if spec.count(":") > 1 else spec[len("file:"):]
        if not Path(path).expanduser().exists():
            raise _fail(key, f"feature file {path!r} does not exist")


def _array_header(path: Path, key: str | None) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of a feature array without reading its data: the ``.npy`` header (memory-mapped, with the size
    check of :func:`align._io.load_features`), the header of the ``.npz`` member, or the ``.safetensors`` header."""
    import zipfile

    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = load_features(path, key=key, mmap=True)
        return tuple(arr.shape), arr.dtype
    if suffix == ".npz":
        try:
            with zipfile.ZipFile(path) as z:
                names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
                name = pick_array(names, key, path)
                with z.open(name + ".npy") as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            if str(exc).startswith("feature file"):
                raise
            raise ValueError(f"feature file {str(path)!r} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                             "recreate it") from None
        return tuple(shape), dtype
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                name = pick_array(list(f.keys()), key, path)
                sl = f.get_slice(name)
                shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"feature file {str(path)!r} could not be read ({type(exc).__name__}: {exc}); "
                             "recreate it") from None
        names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "float32", "I64": "int64",
                 "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
        return shape, np.dtype(names.get(str(dtype).upper(), "object"))
    raise ValueError(f"feature file {str(path)!r} has an unknown suffix; use .npy, .npz or .safetensors")


def _file_shape(path: Path, key: str | None, k: str) -> tuple[int, int]:
    """(rows, columns) of a feature file, or a :class:`ConfigError` naming ``k`` when it is not a 2-D numeric array."""
    try:
        shape, dtype = _array_header(path, key)
    except (ValueError, OSError) as exc:
        raise _fail(k, str(exc).splitlines()[0]) from None
    source = str(path) + (f":{key}" if key else "")
    if len(shape) != 2:
        raise _fail(k, f"{source!r} holds an array of shape {shape}; features must be 2-D (n items, d)")
    if dtype.kind not in "fiu":
        raise _fail(k, f"{source!r} holds {dtype} values; features must be numbers (float)")
    if shape[0] < 1 or shape[1] < 1:
        raise _fail(k, f"{source!r} holds an empty array of shape {shape}")
    return int(shape[0]), int(shape[1])


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and validate an experiment file (see the module docstring); nothing is computed."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{path}: not valid YAML ({' '.join(first[:3])})") from None
    return validate_config(raw, base_dir=path.parent, default_out=path.parent / path.stem)


def validate_config(raw: Any, *, base_dir: str | os.PathLike = ".",
                    default_out: str | os.PathLike | None = None) -> ExperimentConfig:
    """Check every key, type, name and file of a parsed config; raise :class:`ConfigError` naming the key.

    Relative paths (``out``, feature ``file``) are relative to ``base_dir`` (the YAML file's folder). Datasets are
    opened (cheap: no encoder runs) so that a missing file is found now rather than halfway through the run.
    """
    from ...data import load_dataset
    from ...similarity import list_metrics

    base = Path(base_dir)
    cfg = _check_keys(raw if raw is not None else {}, _TOP_KEYS, "", required=("features", "pairs"))
    name = _want(cfg.get("name", "experiment"), str, "name", "a string")
    out = Path(_expand(_want(cfg.get("out", str(default_out or base / name)), str, "out", "a path string"), "out"))
    out = out if out.is_absolute() else base / out
    seeds = _int_list(cfg.get("seeds", [0]), "seeds")
    if len(set(seeds)) != len(seeds):
        raise _fail("seeds", f"has repeated values {list(seeds)}")
    cache_dir = cfg.get("cache_dir")
    if cache_dir is not None:
        cache_dir = _expand(_want(cache_dir, str, "cache_dir", "a path string"), "cache_dir")

    feats_raw = cfg["features"]
    if not isinstance(feats_raw, Mapping):
        raise _fail("features", f"must be a mapping of name -> feature set, got {type(feats_raw).__name__}")
    if not feats_raw:
        raise _fail("features", "must name at least one feature set")
    features: dict[str, FeatureSpec] = {}
    for fname, spec in feats_raw.items():
        k = f"features.{fname}"
        if isinstance(spec, str):
            spec = {"file": spec}
        spec = _check_keys(spec, _FEATURE_KEYS, k)
        if ("file" in spec) == ("encoder" in spec):
            raise _fail(k, "give either `file` (precomputed features) or `encoder` and `dataset`")
        if "file" in spec:
            extra = sorted(set(spec) - {"file"})
            if extra:
                raise _fail(f"{k}.{extra[0]}", "only applies to features made by an encoder")
            file = _expand(_want(spec["file"], str, f"{k}.file", "a path string (FILE or FILE:KEY)"), f"{k}.file")
            p = Path(file).expanduser()
            p, fkey = split_feature_path(p if p.is_absolute() else base / p)
            if not p.is_file():
                raise _fail(f"{k}.file", f"feature file {str(p)!r} does not exist")
            n, d = _file_shape(p, fkey, f"{k}.file")
            features[fname] = FeatureSpec(fname, file=str(p), key=fkey, n_items=n, dim=d)
            continue
        if "dataset" not in spec:
            raise _fail(f"{k}.dataset", "is required with `encoder`")
        enc = _expand(_want(spec["encoder"], str, f"{k}.encoder", "an encoder spec string"), f"{k}.encoder")
        _check_encoder_spec(enc, f"{k}.encoder")
        ds = _expand(_want(spec["dataset"], str, f"{k}.dataset", "a dataset spec string"), f"{k}.dataset")
        eopts = _want(spec.get("encoder_options", {}) or {}, dict, f"{k}.encoder_options", "a mapping")
        dopts = dict(_want(spec.get("dataset_options", {}) or {}, dict, f"{k}.dataset_options", "a mapping"))
        for o, v in dopts.items():
            if isinstance(v, str):
                dopts[o] = _expand(v, f"{k}.dataset_options.{o}")
        try:
            dataset = load_dataset(ds, **dopts)
        except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
            raise _fail(f"{k}.dataset", str(exc).splitlines()[0]) from None
        field = spec.get("field")
        if field is not None:
            _want(field, str, f"{k}.field", "a field name")
            if field not in dataset.fields:
                raise _fail(f"{k}.field", f"dataset {ds!r} has no field {field!r}; fields: {', '.join(dataset.fields)}")
        layers = spec.get("layers") or []
        if isinstance(layers, (str, int)) and not isinstance(layers, bool):
            layers = [layers]
        _want(layers, list, f"{k}.layers", "a list of layer names or indices")
        features[fname] = FeatureSpec(fname, encoder=enc, dataset=ds, field=field, encoder_options=dict(eopts),
                                      dataset_options=dict(dopts), layers=tuple(layers), n_items=len(dataset))

    pairs_raw = _want(cfg["pairs"], list, "pairs", "a list of [X, Y] feature-name pairs")
    if not pairs_raw:
        raise _fail("pairs", "must hold at least one [X, Y] pair")
    pairs = []
    for i, pair in enumerate(pairs_raw):
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise _fail(f"pairs[{i}]", f"must be [X, Y] with two feature names, got {pair!r}")
        for p in pair:
            if p not in features:
                raise _fail(f"pairs[{i}]", f"unknown feature set {p!r}; defined: {', '.join(features)}")
        pairs.append(tuple(pair))

    tasks = [t for t in ("similarity", "matching", "projectors") if cfg.get(t) is not None]
    if not tasks:
        raise _fail("similarity", "no task given: add at least one of similarity, matching, projectors")

    similarity = None
    if cfg.get("similarity") is not None:
        s = _check_keys(cfg["similarity"], _SIM_KEYS, "similarity", required=("metrics",))
        metrics = _method_list(s["metrics"], "similarity.metrics", "name", sorted(list_metrics()))
        null = _want(s.get("permutations", 0), int, "similarity.permutations",
                     "an integer (permutations of the null, 0 for none)")
        if null < 0:
            raise _fail("similarity.permutations", f"must be >= 0, got {null}")
        similarity = {"metrics": metrics, "null": null}

    match_task = None
    if cfg.get("matching") is not None:
        m = _check_keys(cfg["matching"], _MATCH_KEYS, "matching", required=("methods", "n_seeds"))
        methods = _method_list(m["methods"], "matching.methods", "name", [m.name for m in matching.list_methods()])
        n_seeds = _int_list(m["n_seeds"], "matching.n_seeds")
        for i, spec in enumerate(methods):
            try:
                min_seeds = min_known_pairs(spec.name, {**spec.params, **{g: v[0] for g, v in spec.grid.items()}})
            except (TypeError, ValueError) as exc:
                raise _fail(f"matching.methods[{i}].params", str(exc).splitlines()[0]) from None
            if min(n_seeds) < min_seeds:
                raise _fail("matching.n_seeds", f"method {spec.name!r} needs at least {min_seeds} known pairs, "
                                                f"got {min(n_seeds)}; raise it or drop the method")
        n_query = _want(m.get("n_query", 100), int, "matching.n_query", "an integer")
        n_splits = _want(m.get("n_splits", 5), int, "matching.n_splits", "an integer")
        if n_query < 1 or n_splits < 1:
            raise _fail("matching.n_query" if n_query < 1 else "matching.n_splits", "must be >= 1")
        selection = _want(m.get("seed_selection", "random"), str, "matching.seed_selection", "'random' or 'kmeans'")
        if selection not in ("random", "kmeans"):
            raise _fail("matching.seed_selection", f"must be 'random' or 'kmeans', got {selection!r}")
        query = None
        if m.get("query") is not None:
            query = _held_out_map(m["query"], "matching.query", features, pairs, "query items")
            if selection != "random":
                raise _fail("matching.seed_selection", "only 'random' works with matching.query (the known pairs are "
                                                       "drawn from the base feature sets); drop it")
        match_task = {"methods": methods, "n_seeds": n_seeds, "n_query": n_query, "n_splits": n_splits,
                    "seed_selection": selection, "layers": _layers_mode(m, "matching"), "query": query}

    proj_task = None
    if cfg.get("projectors") is not None:
        p = _check_keys(cfg["projectors"], _PROJ_KEYS, "projectors", required=("kinds",))
        kinds = _method_list(p["kinds"], "projectors.kinds", "kind", [p["kind"] for p in projectors.list_projectors()])
        for i, spec in enumerate(kinds):
            try:
                projectors.make_projector(spec.name, **{**spec.params, **{g: v[0] for g, v in spec.grid.items()}})
            except (TypeError, ValueError) as exc:
                raise _fail(f"projectors.kinds[{i}].params", str(exc).splitlines()[0]) from None
        test = None
        if p.get("test") is not None:
            test = _held_out_map(p["test"], "projectors.test", features, pairs, "test pairs")
            if "test_fraction" in p:
                raise _fail("projectors.test_fraction", "does not apply with projectors.test (the projector trains on "
                                                        "every pair and is tested on the test feature sets); drop one")
        test_fraction = _want(p.get("test_fraction", 0.2), (float, int), "projectors.test_fraction", "a number")
        if not 0 < float(test_fraction) < 1:
            raise _fail("projectors.test_fraction", f"must be between 0 and 1, got {test_fraction}")
        ks = _int_list(p.get("ks", [1, 5, 10]), "projectors.ks", min_value=1)
        proj_task = {"kinds": kinds, "test_fraction": float(test_fraction), "ks": tuple(sorted(set(ks))),
                      "layers": _layers_mode(p, "projectors"), "test": test}

    config = ExperimentConfig(name=name, out=out, seeds=seeds, cache_dir=cache_dir, features=features,
                              pairs=tuple(pairs), similarity=similarity, matching=match_task, projectors=proj_task,
                              source=_plain(raw))
    preflight(config, {f: (spec.n_items, spec.dim) for f, spec in features.items()})
    return config


def _held_out_map(raw: Any, key: str, features: dict, pairs: list, what: str) -> dict:
    """``{feature: feature}``: for each feature set of the pairs, the one (same encoder) holding its ``what``."""
    if not isinstance(raw, Mapping):
        raise _fail(key, f"must map each feature set of the pairs to the feature set holding its {what}, "
                         f"e.g. {{x: x_other, y: y_other}}; got {type(raw).__name__}")
    used = list(dict.fromkeys(f for pair in pairs for f in pair))
    out = {}
    for name, other in raw.items():
        k = f"{key}.{name}"
        if name not in used:
            raise _fail(k, f"is not a feature set of the pairs; those are {', '.join(used)}")
        if not isinstance(other, str) or other not in features:
            raise _fail(k, f"must name a defined feature set, got {other!r}; defined: {', '.join(features)}")
        if other == name:
            raise _fail(k, f"names {name!r} itself; give the feature set that holds the {what}")
        a, b = features[name], features[other]
        if a.encoder is not None and b.encoder is not None:
            if (a.encoder, a.encoder_options, a.layers) != (b.encoder, b.encoder_options, b.layers):
                raise _fail(k, f"{other!r} is made by {b.encoder} {b.encoder_options or ''} layers {list(b.layers)} "
                               f"but {name!r} by {a.encoder} {a.encoder_options or ''} layers {list(a.layers)}; "
                               f"the {what} must come from the same encoder")
        elif (a.encoder is None) != (b.encoder is None):
            raise _fail(k, f"{other!r} and {name!r} must both be files or both be made by the same encoder")
        out[str(name)] = other
    for i, pair in enumerate(pairs):
        for f in pair:
            if f not in out:
                raise _fail(key, f"pairs[{i}] {list(pair)}: no feature set for the {what} of {f!r}; add {f}: NAME")
    return out


# --------------------------------------------------------------------------------------------------------------
# Checks that need sizes: rows of paired feature sets, items per split, parameter values of every method
# --------------------------------------------------------------------------------------------------------------


_DIM_PARAMS = ("n_components", "out_dim")


def preflight(cfg: ExperimentConfig, shapes: Mapping[str, tuple]) -> None:
    """Check what the sizes decide, before any cell runs; raise :class:`ConfigError` naming the key.

    ``shapes`` maps each feature set to ``(n_items, dim)`` (``None`` where not known yet: an encoder's width before
    it runs). Checked: the two sides of every pair (and of every held-out pair) describe the same number of items;
    the matching task's known pairs plus queries fit in the items; each metric's parameters (its own check), each
    matching method's and each projector kind's parameters (the method run on a small random stand-in, so a value it
    rejects, such as ``sigma: -1``, fails here and not after hours of work). :func:`validate_config` calls it with the
    sizes known from the files and datasets; :func:`run_experiment` again with the features' real shapes.
    """
    def rows(name):
        return shapes.get(name, (None, None))[0]

    def dim(name):
        return shapes.get(name, (None, None))[1]

    def same_items(a, b, key, what):
        if rows(a) is not None and rows(b) is not None and rows(a) != rows(b):
            raise _fail(key, f"{a!r} has {rows(a)} items and {b!r} has {rows(b)}; {what} must describe the same "
                             "items in the same order")

    for i, (x, y) in enumerate(cfg.pairs):
        same_items(x, y, f"pairs[{i}]", "the two feature sets of a pair")
    for task, key, what in (("matching", "query", "query feature sets"), ("projectors", "test", "test feature sets")):
        section = getattr(cfg, task)
        held = (section or {}).get(key)
        if not held:
            continue
        for name, other in held.items():
            if dim(name) is not None and dim(other) is not None and dim(name) != dim(other):
                raise _fail(f"{task}.{key}.{name}", f"{other!r} has {dim(other)}-d features but {name!r} has "
                                                    f"{dim(name)}-d; they must come from the same encoder")
        for x, y in cfg.pairs:
            same_items(held[x], held[y], f"{task}.{key}", f"the {what} of a pair")

    if cfg.similarity:
        from ..._similarity._registry import bind_params, get_spec

        for i, spec in enumerate(cfg.similarity["metrics"]):
            metric = get_spec(spec.name)
            for params in spec.combos():
                try:
                    bind_params(metric, dict(params))
                except (TypeError, ValueError) as exc:
                    raise _fail(f"similarity.metrics[{i}].params", str(exc).splitlines()[0]) from None
            for x, y in cfg.pairs:
                if rows(x) is not None and rows(x) < metric.min_rows:
                    raise _fail(f"similarity.metrics[{i}]", f"{spec.name} needs at least {metric.min_rows} items; "
                                                            f"{x!r} has {rows(x)}")

    if cfg.matching:
        m = cfg.matching
        q = m["n_query"]
        for x, y in cfg.pairs:
            if m["query"]:
                for j, k in enumerate(m["n_seeds"]):
                    if rows(x) is not None and k > rows(x):
                        raise _fail(f"matching.n_seeds[{j}]", f"{k} known pairs need {k} base items; {x} has {rows(x)}")
                qx = m["query"][x]
                if rows(qx) is not None and q > rows(qx):
                    raise _fail("matching.n_query", f"{q} queries need {q} items; {qx} has {rows(qx)}")
            else:
                for j, k in enumerate(m["n_seeds"]):
                    if rows(x) is not None and k + q > rows(x):
                        raise _fail(f"matching.n_seeds[{j}]", f"{k} known pairs + {q} queries need {k + q} items; "
                                                              f"{x} has {rows(x)}")
        for i, spec in enumerate(m["methods"]):
            min_seeds = min_known_pairs(spec.name, spec.params)
            for x, y in cfg.pairs:
                for params in spec.combos():
                    _try_match(spec.name, params, max(2, min_seeds), dim(x) or 8, dim(y) or 8,
                               f"matching.methods[{i}].params")

    if cfg.projectors:  # Recall@k on the test split refuses k > its size; say so now, not after the training
        p = cfg.projectors
        for x, y in cfg.pairs:
            if p["test"]:
                known = [rows(p["test"][s]) for s in (x, y) if rows(p["test"][s]) is not None]
                n_test, where = (min(known), f"the test feature set {p['test'][x]!r} has") if known else (None, "")
            else:
                n = rows(x) if rows(x) is not None else rows(y)
                n_test = None if n is None else max(1, round(p["test_fraction"] * n))
                where = f"test_fraction {p['test_fraction']:g} of the {n} items of {x!r} leaves"
            if n_test is not None and p["ks"][-1] > n_test:
                fix = "" if p["test"] else " or raise projectors.test_fraction"
                raise _fail("projectors.ks", f"Recall@{p['ks'][-1]} needs at least {p['ks'][-1]} test items but "
                                             f"{where} {n_test}; use cut-offs up to {n_test}{fix}")

    if cfg.projectors:
        p = cfg.projectors
        n_train = [rows(x) if p["test"] else rows(x) - max(1, round(p["test_fraction"] * rows(x)))
                   for x, _ in cfg.pairs if rows(x) is not None]
        for i, spec in enumerate(p["kinds"]):
            for params in spec.combos():
                _try_fit(spec.name, params, f"projectors.kinds[{i}].params", min(n_train, default=None))


_TRIED: dict[tuple, str | None] = {}  # stand-in runs already done in this process: key -> error message or None


def _stand_in(n: int, d: int, seed: int, dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(dtype)


def _try_match(method: str, params: dict, n_seeds: int, dx: int, dy: int, key: str) -> None:
    """Run ``method`` with ``params`` on random stand-ins of ``n_seeds`` known pairs + 6 queries."""
    import warnings

    token = ("match", method, json.dumps(params, sort_keys=True, default=str), n_seeds, dx, dy)
    if token not in _TRIED:
        n = n_seeds + 6
        pm = np.stack([np.arange(n_seeds), np.arange(n_seeds)], axis=1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                matching.match(_stand_in(n, dx, 0), _stand_in(n, dy, 1), method, partial_match=pm, rng=0, **params)
            _TRIED[token] = None
        except (TypeError, ValueError) as exc:
            _TRIED[token] = str(exc).splitlines()[0]
    if _TRIED[token] is not None:
        raise _fail(key, _TRIED[token])


def _try_fit(kind: str, params: dict, key: str, n_train: int | None) -> None:
    """Fit ``kind`` with ``params`` on a random stand-in without a checkpoint file: wide enough for its dimension
    parameters (``n_components``, ``out_dim``), with more rows than columns and enough rows for the validation split
    it asks for (``val_fraction``), but never more rows than the real training set (``n_train``, when known), so a
    split that the real data cannot fill fails here too; one epoch when ``max_epochs`` is a valid count."""
    import warnings

    token = ("fit", kind, json.dumps(params, sort_keys=True, default=str), n_train)
    if token not in _TRIED:
        sizes = [v for k, v in params.items() if k in _DIM_PARAMS and isinstance(v, int) and not isinstance(v, bool)]
        d = max([8, *sizes])
        n = 2 * d + 8
        vf = params.get("val_fraction")
        if isinstance(vf, float) and 0 < vf < 1:
            n = max(n, int(np.ceil(4 / vf)))
        n = n if n_train is None else min(n, n_train)
        trial = {k: v for k, v in params.items() if k != "checkpoint"}
        epochs = trial.get("max_epochs")
        if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1:
            trial["max_epochs"] = 1  # any valid count checks the same; one epoch keeps the check quick
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proj = projectors.make_projector(kind, **trial)
                proj.fit(_stand_in(n, d, 0, np.float32), _stand_in(n, d, 1, np.float32))
            _TRIED[token] = None
        except (TypeError, ValueError) as exc:
            _TRIED[token] = str(exc).splitlines()[0]
    if _TRIED[token] is not None:
        raise _fail(key, _TRIED[token])


def _layers_mode(section: dict, key: str) -> str:
    mode = _want(section.get("layers", "first"), str, f"{key}.layers", "'first' or 'all'")
    if mode not in ("first", "all"):
        raise _fail(f"{key}.layers", f"must be 'first' (each feature set's first layer) or 'all' (every layer of X "
                                     f"× every layer of Y), got {mode!r}")
    return mode


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------------------


class _FeatureStore:
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
        from ...features import embed

        spec = self.cfg.features[name]
        options = dict(spec.encoder_options)
        if spec.layers:
            options["layers"] = list(spec.layers)
        encoder = load_encoder(spec.encoder, **options)
        dataset = load_dataset(spec.dataset, **spec.dataset_options)
        field = dataset.resolve_field(spec.field)
        feats = embed(encoder, dataset, field=field, cache_dir=self.cfg.cache_dir, show_progress=self.show_progress)
        self._layers[name] = {layer: dataset.item_means(np.asarray(arr), field) for layer, arr in feats.layers.items()}
        self._fingerprints[name] = "cache:" + feats.key
        return self._layers[name], feats.key


# --------------------------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work; its id hashes :meth:`describe`, the task's settings and the two feature fingerprints."""

    task: str
    x: str
    y: str
    method: str
    params: dict
    seed: int
    n_seeds: int | None = None
    layer_x: Any = None
    layer_y: Any = None

    def describe(self) -> dict:
        d = {"task": self.task, "x": self.x, "y": self.y, "method": self.method, "params": self.params,
             "seed": self.seed, "n_seeds": self.n_seeds}
        if self.layer_x is not None or self.layer_y is not None:
            d.update(layer_x=self.layer_x, layer_y=self.layer_y)
        return d


def _layer_pairs(cfg: ExperimentConfig, x: str, y: str, mode: str) -> list[tuple]:
    """``[(None, None)]`` (first layers) or every (layer of X, layer of Y) as written in the config."""
    lx, ly = cfg.features[x].layers, cfg.features[y].layers
    if mode == "first" or (len(lx) <= 1 and len(ly) <= 1):
        return [(None, None)]
    return [(a, b) for a in (lx or (None,)) for b in (ly or (None,))]


def _cells(cfg: ExperimentConfig) -> list[Cell]:
    cells = []
    for x, y in cfg.pairs:
        if cfg.similarity:
            # the metric is deterministic: the seed only draws the null's permutations
            seeds = cfg.seeds if cfg.similarity["null"] else cfg.seeds[:1]
            for spec in cfg.similarity["metrics"]:
                for params in spec.combos():
                    for seed in seeds:
                        cells.append(Cell("similarity", x, y, spec.name, params, seed))
        if cfg.matching:
            for spec in cfg.matching["methods"]:
                for params in spec.combos():
                    for k in cfg.matching["n_seeds"]:
                        for lx, ly in _layer_pairs(cfg, x, y, cfg.matching["layers"]):
                            for seed in cfg.seeds:
                                cells.append(Cell("matching", x, y, spec.name, params, seed, n_seeds=k,
                                                  layer_x=lx, layer_y=ly))
        if cfg.projectors:
            for spec in cfg.projectors["kinds"]:
                for params in spec.combos():
                    for lx, ly in _layer_pairs(cfg, x, y, cfg.projectors["layers"]):
                        for seed in cfg.seeds:
                            cells.append(Cell("projectors", x, y, spec.name, params, seed, layer_x=lx, layer_y=ly))
    return cells


def _task_settings(cfg: ExperimentConfig, task: str) -> dict:
    if task == "similarity":
        return {"null": cfg.similarity["null"]}
    if task == "matching":
        out = {k: cfg.matching[k] for k in ("n_query", "n_splits", "seed_selection")}
        if cfg.matching["query"]:
            out["query"] = dict(cfg.matching["query"])
        return out
    if cfg.projectors["test"]:
        return {"test": dict(cfg.projectors["test"]), "ks": list(cfg.projectors["ks"])}
    return {"test_fraction": cfg.projectors["test_fraction"], "ks": list(cfg.projectors["ks"])}


def _cell_features(cell: Cell, cfg: ExperimentConfig) -> list[str]:
    """The feature sets a cell reads: its pair, plus the pair's held-out (query / test) feature sets."""
    names = [cell.x, cell.y]
    held = (cfg.matching or {}).get("query") if cell.task == "matching" else \
        (cfg.projectors or {}).get("test") if cell.task == "projectors" else None
    if held:
        names += [held[cell.x], held[cell.y]]
    return names


def _cell_id(cell: Cell, settings: dict, fingerprints: Sequence[str]) -> str:
    desc = {"format": CELL_FORMAT, **cell.describe(), "settings": settings, "features": list(fingerprints)}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _run_similarity(cell: Cell, store: _FeatureStore, cfg: ExperimentConfig) -> dict:
    from ...similarity import compare, layer_sweep, permutation_null

    lx, ly = store.layers(cell.x), store.layers(cell.y)
    out: dict[str, Any] = {}
    if len(lx) > 1 or len(ly) > 1:
        from ...similarity import list_metrics

        sweep = layer_sweep(lx, ly, cell.method, **cell.params)
        out["sweep"] = sweep.to_dict()
        # the best layer pair (largest similarity, smallest distance), as the Platonic protocol reports
        M = np.asarray(sweep.to_dict()["matrix"], dtype=np.float64)
        pick = np.nanargmax if list_metrics()[cell.method].kind == "similarity" else np.nanargmin
        i, j = np.unravel_index(pick(M), M.shape)
        out.update(sweep_best=float(M[i, j]), sweep_best_layers=[out["sweep"]["layers_x"][i],
                                                                 out["sweep"]["layers_y"][j]])
    X, Y = next(iter(lx.values())), next(iter(ly.values()))
    if cfg.similarity["null"]:
        r = permutation_null(X, Y, cell.method, cfg.similarity["null"], cell.seed, **cell.params)
        out.update(value=r.observed, null_mean=r.null_mean, null_std=r.null_std, p_value=r.p_value,
                   n_permutations=r.n_permutations, n=r.n)
    else:
        r = compare(X, Y, cell.method, **cell.params)
        out.update(value=r.value, n=r.n)
    return out


def _run_matching(cell: Cell, store: _FeatureStore, cfg: ExperimentConfig) -> dict:
    m = cfg.matching
    if m["query"]:
        return _run_base_query(cell, store, cfg)
    res = matching.evaluate(store.X(cell.x, cell.layer_x), store.X(cell.y, cell.layer_y), cell.method,
                                 n_seeds=cell.n_seeds,
                                 n_query=m["n_query"], n_splits=m["n_splits"], seed_selection=m["seed_selection"],
                                 rng=cell.seed, **cell.params)
    d = res.to_dict()
    return {"accuracy": float(d["accuracy"]), "accuracies": [float(a) for a in d["accuracies"]],
            "recall": d.get("recall"), "seconds": d.get("seconds")}


def _run_base_query(cell: Cell, store: _FeatureStore, cfg: ExperimentConfig) -> dict:
    """Matching with known pairs from the pair's feature sets and queries from their ``matching.query`` sets.

    Each split draws ``n_seeds`` base items and ``n_query`` query items (without replacement, from the cell's seed),
    hides the order of the queries on the Y side, runs the method with the base pairs as ``partial_match`` and scores
    the fraction of queries matched to their partner (and Recall@1/5/10 of the true partner for methods that score
    pairs), as in Maniparambil et al. (CVPR 2024: COCO base, NoCaps queries).
    """
    m = cfg.matching
    k, q = cell.n_seeds, m["n_query"]
    XA, YA = np.asarray(store.X(cell.x, cell.layer_x)), np.asarray(store.X(cell.y, cell.layer_y))
    XB = np.asarray(store.X(m["query"][cell.x], cell.layer_x))
    YB = np.asarray(store.X(m["query"][cell.y], cell.layer_y))
    rng = np.random.default_rng(cell.seed)
    accs, recalls, t0 = [], [], time.perf_counter()
    for _ in range(m["n_splits"]):
        base = rng.choice(XA.shape[0], k, replace=False)
        queries = rng.choice(XB.shape[0], q, replace=False)
        hide = rng.permutation(q)  # Y's query rows in a hidden order
        X = np.concatenate([XA[base], XB[queries]])
        Y = np.concatenate([YA[base], YB[queries[hide]]])
        truth = np.argsort(hide)  # query a of X is query truth[a] of Y
        pm = np.stack([np.arange(k), np.arange(k)], axis=1)
        res = matching.match(X, Y, cell.method, partial_match=pm, rng=rng.spawn(1)[0], **cell.params)
        accs.append(float(np.mean(np.asarray(res.col_ind)[k:] == k + truth)))
        if res.similarity is not None:
            S = np.asarray(res.similarity, dtype=np.float64)[k:, k:]
            rank = (S > S[np.arange(q), truth][:, None]).sum(axis=1)  # 0 = the partner ranks first
            recalls.append({str(r): float(np.mean(rank < r)) for r in (1, 5, 10)})
    recall = {r: float(np.mean([x[r] for x in recalls])) for r in recalls[0]} if recalls else None
    return {"accuracy": float(np.mean(accs)), "accuracies": accs, "recall": recall, "recall_splits": recalls or None,
            "seconds": time.perf_counter() - t0}


def _run_projector(cell: Cell, store: _FeatureStore, cfg: ExperimentConfig) -> dict:
    from ...evaluation import retrieval_metrics

    X, Y = np.asarray(store.X(cell.x, cell.layer_x)), np.asarray(store.X(cell.y, cell.layer_y))
    held = cfg.projectors["test"]
    if held:  # train on every pair, test on the test feature sets
        X_test = np.asarray(store.X(held[cell.x], cell.layer_x))
        Y_test = np.asarray(store.X(held[cell.y], cell.layer_y))
        train = np.arange(X.shape[0])
    else:
        n = X.shape[0]
        n_test = max(1, round(cfg.projectors["test_fraction"] * n))
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
    res = retrieval_metrics(proj.transform(X_test), proj.transform_y(Y_test), ks=cfg.projectors["ks"])
    out = {"retrieval": res.to_dict(), "n_train": len(train), "n_test": len(X_test), "fit_seconds": fit_s}
    tr = getattr(proj, "train_result_", None)
    if tr is not None:
        out["history"] = [{k: v for k, v in rec.items() if isinstance(v, (int, float))} for rec in tr.history]
        out["best_epoch"] = int(tr.best_epoch)
    return out


# --------------------------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------------------------


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
    store = _FeatureStore(cfg, show_progress)
    cells = _cells(cfg)
    # every feature set a cell reads, loaded (embedded) before the first cell, then the size checks on real shapes
    used = list(dict.fromkeys(f for c in cells for f in _cell_features(c, cfg)))
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
        settings = _task_settings(cfg, cell.task)
        cid = _cell_id(cell, settings, [store.fingerprint(f) for f in _cell_features(cell, cfg)])
        path = out / "cells" / cell.task / f"{cid}.json"
        record = _read_cell(path)
        if record is not None:
            n_cached += 1
        else:
            t = time.perf_counter()
            if cell.task == "similarity":
                result = _run_similarity(cell, store, cfg)
            elif cell.task == "matching":
                result = _run_matching(cell, store, cfg)
            else:
                result = _run_projector(cell, store, cfg)
            record = {"id": cid, **cell.describe(), "settings": settings, "result": result,
                      "seconds": time.perf_counter() - t}
            with atomic_write(path, "w") as f:
                json.dump(record, f, default=json_default)
            n_computed += 1
        records.append(record)
    say(f"{len(cells)} cells: {n_computed} computed, {n_cached} already done")
    aggregates = _aggregate(records, cfg)
    files = _write_outputs(cfg, records, aggregates, out, _provenance(cfg, store, used))
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


def _params_label(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def _aggregate(records: list[dict], cfg: ExperimentConfig) -> list[dict]:
    """Mean ± std per (task, pair, method, params[, n_seeds]) and measure, over seeds (and splits for matching)."""
    from ..report import mean_std

    groups: dict[tuple, list[dict]] = {}
    for r in records:
        x = r["x"] + (f"[{r['layer_x']}]" if r.get("layer_x") is not None else "")
        y = r["y"] + (f"[{r['layer_y']}]" if r.get("layer_y") is not None else "")
        key = (r["task"], x, y, r["method"], json.dumps(r["params"], sort_keys=True, default=str), r.get("n_seeds"))
        groups.setdefault(key, []).append(r)
    rows = []
    for (task, x, y, method, params_json, n_seeds), rs in groups.items():
        base = {"task": task, "x": x, "y": y, "method": method, "params": params_json, "n_seeds": n_seeds}
        measures: dict[str, list[float]] = {}
        if task == "similarity":
            for r in rs:
                for k in ("value", "null_mean", "null_std", "p_value", "sweep_best"):
                    if r["result"].get(k) is not None:
                        measures.setdefault(k, []).append(float(r["result"][k]))
        elif task == "matching":
            for r in rs:
                measures.setdefault("accuracy", []).extend(r["result"]["accuracies"])
                # Recall@k per split where the cell kept them (base/query protocol), else the cell's mean
                for rec in r["result"].get("recall_splits") or [r["result"].get("recall") or {}]:
                    for k, v in rec.items():
                        measures.setdefault(f"R@{k}", []).append(float(v))
        else:
            for r in rs:
                for direction in ("query_to_gallery", "gallery_to_query"):
                    short = "x2y" if direction == "query_to_gallery" else "y2x"
                    for k, v in r["result"]["retrieval"][direction].items():
                        if k.startswith("R@") or k in ("mAP", "median_rank"):
                            measures.setdefault(f"{short} {k}", []).append(float(v))
        for measure, values in measures.items():
            m, s = mean_std(values)
            rows.append({**base, "measure": measure, "mean": m, "std": s, "n": len(values)})
    return rows


def _provenance(cfg: ExperimentConfig, store: _FeatureStore, used: Sequence[str]) -> dict:
    """What produced the results: versions (:func:`align._provenance.provenance`), every feature set (file + sha256,
    or encoder and dataset specs with the feature-cache key) and the seeds."""
    from ..._provenance import provenance

    features = {}
    for name in used:
        spec = cfg.features[name]
        if spec.file is not None:
            features[name] = {"file": spec.file, "key": spec.key, "sha256": store.fingerprint(name).split(":")[1],
                              "shape": list(store.X(name).shape)}
        else:
            features[name] = {"encoder": spec.encoder, "encoder_options": spec.encoder_options,
                              "dataset": spec.dataset, "dataset_options": spec.dataset_options, "field": spec.field,
                              "layers": list(spec.layers), "cache_key": store.fingerprint(name).split(":", 1)[1],
                              "shape": list(store.X(name).shape)}
    return provenance(command="unialign run", experiment=cfg.name, features=features, seeds=list(cfg.seeds))


def _write_outputs(cfg: ExperimentConfig, records: list[dict], aggregates: list[dict], out: Path,
                   provenance: dict | None = None) -> dict:
    files: dict[str, Path] = {}
    with atomic_write(out / "results.json", "w") as f:
        json.dump({"name": cfg.name, "provenance": provenance, "config": cfg.source, "aggregates": aggregates,
                   "cells": records}, f, indent=1, default=json_default)
    files["results.json"] = out / "results.json"
    buf = io.StringIO()
    fields = ["task", "x", "y", "method", "params", "n_seeds", "measure", "mean", "std", "n"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in aggregates:
        writer.writerow({k: row.get(k) for k in fields})
    with atomic_write(out / "results.csv", "w") as f:
        f.write(buf.getvalue())
    files["results.csv"] = out / "results.csv"
    files.update(_plots(cfg, records, aggregates, out))
    with atomic_write(out / "report.md", "w") as f:
        f.write(_report(cfg, records, aggregates, files))
    files["report.md"] = out / "report.md"
    return files


def _plots(cfg: ExperimentConfig, records: list[dict], aggregates: list[dict], out: Path) -> dict:
    from ..report import plot_curves, plot_heatmap

    files: dict[str, Path] = {}
    sims = [a for a in aggregates if a["task"] == "similarity" and a["measure"] == "value"]
    if sims:
        xs = list(dict.fromkeys(a["x"] for a in sims))
        ys = list(dict.fromkeys(a["y"] for a in sims))
        matrices = {}
        for a in sims:
            title = a["method"] + (f" ({_params_label(json.loads(a['params']))})" if a["params"] != "{}" else "")
            M = matrices.setdefault(title, np.full((len(xs), len(ys)), np.nan))
            M[xs.index(a["x"]), ys.index(a["y"])] = a["mean"]
        files["similarity.png"] = plot_heatmap(matrices, xs, ys, out / "similarity.png", vmin=None, vmax=None,
                                               xlabel="Y", ylabel="X")
        sweeps = {}
        for r in records:
            if r["task"] == "similarity" and "sweep" in r["result"] and (r["x"], r["y"], r["method"]) not in sweeps:
                sweeps[(r["x"], r["y"], r["method"])] = r["result"]["sweep"]
        for i, ((x, y, metric), sw) in enumerate(sweeps.items()):
            name = f"layers_{i}.png"
            files[name] = plot_heatmap({f"{metric}: {x} × {y}": np.asarray(sw["matrix"])}, sw["layers_x"],
                                       sw["layers_y"], out / name, vmin=None, vmax=None, xlabel=y, ylabel=x)
    match = [a for a in aggregates if a["task"] == "matching" and a["measure"] == "accuracy"]
    if match:
        panels: dict[str, dict] = {}
        for a in sorted(match, key=lambda a: a["n_seeds"]):
            label = a["method"] + (f" ({_params_label(json.loads(a['params']))})" if a["params"] != "{}" else "")
            series = panels.setdefault(f"{a['x']} -> {a['y']}", {}).setdefault(label, ([], [], []))
            series[0].append(a["n_seeds"])
            series[1].append(a["mean"])
            series[2].append(a["std"])
        logx = min(cfg.matching["n_seeds"]) > 0 and max(cfg.matching["n_seeds"]) / min(cfg.matching["n_seeds"]) >= 10
        files["matching.png"] = plot_curves(panels, out / "matching.png", xlabel="known pairs (seeds)",
                                            ylabel=f"accuracy on {cfg.matching['n_query']} hidden items",
                                            logx=logx, ylim=(0, 1), reference={"chance": 1 / cfg.matching["n_query"]})
    proj = [a for a in aggregates if a["task"] == "projectors" and " R@" in a["measure"]]
    if proj:
        panels = {}
        for a in proj:
            direction, k = a["measure"].split(" R@")
            label = a["method"] + (f" ({_params_label(json.loads(a['params']))})" if a["params"] != "{}" else "")
            series = panels.setdefault(f"{a['x']} -> {a['y']} ({direction})", {}).setdefault(label, ([], [], []))
            series[0].append(int(k))
            series[1].append(a["mean"])
            series[2].append(a["std"])
        for series in panels.values():
            for label, (ks, means, stds) in list(series.items()):
                order = np.argsort(ks)
                series[label] = ([ks[i] for i in order], [means[i] for i in order], [stds[i] for i in order])
        files["recall.png"] = plot_curves(panels, out / "recall.png", xlabel="k", ylabel="Recall@k (held-out)",
                                          ylim=(0, 1))
        curves: dict[str, dict] = {}
        for r in records:
            hist = r["result"].get("history") if r["task"] == "projectors" else None
            if hist:
                label = f"{r['method']} seed {r['seed']}" + (f" ({_params_label(r['params'])})" if r["params"] else "")
                epochs = [h["epoch"] for h in hist]
                curves.setdefault(f"{r['x']} -> {r['y']}: training loss", {})[label] = (
                    epochs, [h.get("loss", np.nan) for h in hist], None)
                if any("val_R@1" in h for h in hist):
                    curves.setdefault(f"{r['x']} -> {r['y']}: validation R@1", {})[label] = (
                        epochs, [h.get("val_R@1", np.nan) for h in hist], None)
        if curves:
            files["training.png"] = plot_curves(curves, out / "training.png", xlabel="epoch", ylabel="value")
    return files


def _report(cfg: ExperimentConfig, records: list[dict], aggregates: list[dict], files: dict) -> str:
    from ..report import fmt_mean_std, markdown_table

    L = [f"# {cfg.name}\n"]
    L.append(f"{len(records)} cells, seeds {list(cfg.seeds)}. Every number comes from the cells in `cells/`; "
             "`results.csv` has one row per aggregate (mean ± std over seeds, and over splits for matching).\n")
    L.append("## Features\n")
    rows = []
    for name, spec in cfg.features.items():
        what = (spec.file + (f":{spec.key}" if spec.key else "")) if spec.file else f"{spec.encoder} on {spec.dataset}" + (f" ({spec.field})" if spec.field else "")
        rows.append([name, what, ", ".join(map(str, spec.layers)) or "–"])
    L.append(markdown_table(["name", "source", "layers"], rows) + "\n")
    sims = [a for a in aggregates if a["task"] == "similarity"]
    if sims:
        L.append("## Similarity\n")
        if "similarity.png" in files:
            L.append(f"![similarity]({files['similarity.png'].name})\n")
        for name in sorted(k for k in files if k.startswith("layers_")):
            L.append(f"![layer sweep]({files[name].name})\n")
        by = {}
        for a in sims:
            by.setdefault((a["x"], a["y"], a["method"], a["params"]), {})[a["measure"]] = a
        rows = []
        swept = any("sweep_best" in ms for ms in by.values())
        for (x, y, method, params), ms in by.items():
            v = ms["value"]
            null = ms.get("null_mean")
            rows.append([x, y, method + (f" ({_params_label(json.loads(params))})" if params != "{}" else ""),
                         f"{v['mean']:.4f}", fmt_mean_std(null["mean"], ms["null_std"]["mean"], 4) if null else "–",
                         f"{ms['p_value']['mean']:.3f}" if "p_value" in ms else "–"]
                        + ([f"{ms['sweep_best']['mean']:.4f}" if "sweep_best" in ms else "–"] if swept else []))
        L.append(markdown_table(["X", "Y", "metric", "value", "null (mean ± std)", "p"]
                                + (["best layer pair"] if swept else []), rows) + "\n")
    match = [a for a in aggregates if a["task"] == "matching" and a["measure"] == "accuracy"]
    if match:
        m = cfg.matching
        L.append("## Matching vs number of known pairs\n")
        where = (" drawn from " + ", ".join(f"{b} (queries of {a})" for a, b in m["query"].items())
                 if m["query"] else "")
        L.append(f"{m['n_query']} hidden query items per split{where}, {m['n_splits']} splits per seed, seeds "
                 f"{list(cfg.seeds)}; mean ± std over all splits (chance {1 / m['n_query']:.3f}).\n")
        L.append(f"![matching]({files['matching.png'].name})\n")
        counts = list(m["n_seeds"])
        by = {}
        for a in match:
            by.setdefault((a["x"], a["y"], a["method"], a["params"]), {})[a["n_seeds"]] = a
        rows = []
        for (x, y, method, params), per in by.items():
            rows.append([f"{x} → {y}", method + (f" ({_params_label(json.loads(params))})" if params != "{}" else "")]
                        + [fmt_mean_std(per[k]["mean"], per[k]["std"]) if k in per else "–" for k in counts])
        recall = [a for a in aggregates if a["task"] == "matching" and a["measure"].startswith("R@")]
        if recall:
            L.append(markdown_table(["pair", "method"] + [f"{k} seeds" for k in counts], rows) + "\n")
            L.append("Recall@k of the true partner among the queries (methods that score pairs):\n")
            by_r: dict = {}
            for a in recall:
                by_r.setdefault((a["x"], a["y"], a["method"], a["params"], a["measure"]), {})[a["n_seeds"]] = a
            rows = [[f"{x} → {y}", method + (f" ({_params_label(json.loads(params))})" if params != "{}" else ""),
                     measure] + [fmt_mean_std(per[k]["mean"], per[k]["std"]) if k in per else "–" for k in counts]
                    for (x, y, method, params, measure), per in by_r.items()]
            L.append(markdown_table(["pair", "method", "measure"] + [f"{k} seeds" for k in counts], rows) + "\n")
            rows = None
        if rows is not None:
            L.append(markdown_table(["pair", "method"] + [f"{k} seeds" for k in counts], rows) + "\n")
    proj = [a for a in aggregates if a["task"] == "projectors"]
    if proj:
        p = cfg.projectors
        L.append("## Projectors: retrieval on held-out pairs\n")
        if p["test"]:
            L.append("Each projector is fitted on every pair and tested on the test feature sets "
                     + ", ".join(f"{b} (for {a})" for a, b in p["test"].items())
                     + ". x2y: projected X queries rank the Y test items; y2x the reverse.\n")
        else:
            L.append(f"Each seed draws a {p['test_fraction']:.0%} test split; the projector is fitted on the rest. "
                     "x2y: projected X queries rank the Y test items; y2x the reverse.\n")
        L.append(f"![recall]({files['recall.png'].name})\n")
        if "training.png" in files:
            L.append(f"![training]({files['training.png'].name})\n")
        by = {}
        for a in proj:
            by.setdefault((a["x"], a["y"], a["method"], a["params"]), {})[a["measure"]] = a
        measures = [f"{d} R@{k}" for d in ("x2y", "y2x") for k in p["ks"]] + ["x2y mAP"]
        rows = []
        for (x, y, method, params), per in by.items():
            rows.append([f"{x} → {y}", method + (f" ({_params_label(json.loads(params))})" if params != "{}" else "")]
                        + [fmt_mean_std(per[mm]["mean"], per[mm]["std"]) if mm in per else "–" for mm in measures])
        L.append(markdown_table(["pair", "kind"] + measures, rows) + "\n")
    return "\n".join(L)
