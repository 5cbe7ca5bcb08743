"""The experiment file: its schema, typed sections and strict validation (no solver runs here).

:func:`validate_config` checks every key, type, name and file of a parsed YAML file and returns an
:class:`ExperimentConfig` whose task sections are typed (:class:`SimilarityTask`, :class:`MatchingTask`,
:class:`ProjectorTask`); the checks that need sizes and parameter values live in :mod:`._preflight`.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import projectors

from ..._io import feature_shape, split_feature_path, to_jsonable
from ...exceptions import ConfigError
from .._solvers import method_infos

__all__ = ["ConfigError", "ExperimentConfig", "FeatureSpec", "MatchingTask", "MethodSpec", "ProjectorTask",
           "SimilarityTask", "validate_config"]

#: Old YAML keys that keep working for a release, with a warning: (section, old) -> new.
RENAMED_KEYS = {("matching", "n_seeds"): "n_known", ("matching", "seed_selection"): "known_selection"}

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
class SimilarityTask:
    """``similarity:``: the metrics, and the permutations of the null (0: none)."""

    metrics: list
    null: int = 0


@dataclasses.dataclass(frozen=True)
class MatchingTask:
    """``matching:``: methods vs number of known pairs (``n_known``), ``n_query`` hidden items per split,
    ``n_splits`` splits, how the known pairs are chosen, which layers, and optional query feature sets."""

    methods: list
    n_known: tuple
    n_query: int = 100
    n_splits: int = 5
    known_selection: str = "random"
    layers: str = "first"
    query: dict | None = None


@dataclasses.dataclass(frozen=True)
class ProjectorTask:
    """``projectors:``: kinds fitted on a train split (or every pair, with ``test``), retrieval cut-offs ``ks``."""

    kinds: list
    test_fraction: float = 0.2
    ks: tuple = (1, 5, 10)
    layers: str = "first"
    test: dict | None = None


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment file (:func:`load_config`); ``source`` is the file as parsed, kept for the results."""

    name: str
    out: Path
    seeds: tuple
    cache_dir: str | None
    features: dict
    pairs: tuple
    similarity: SimilarityTask | None
    matching: MatchingTask | None
    projectors: ProjectorTask | None
    source: dict = dataclasses.field(repr=False, default_factory=dict)


_TOP_KEYS = {"name", "out", "seeds", "cache_dir", "features", "pairs", "similarity", "matching", "projectors"}
_FEATURE_KEYS = {"file", "encoder", "dataset", "field", "encoder_options", "dataset_options", "layers"}
_SIM_KEYS = {"metrics", "permutations"}
_MATCH_KEYS = {"methods", "n_known", "n_query", "n_splits", "known_selection", "layers", "query"}
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
    """An encoder spec the registry knows (:func:`align.encoders.check_spec`), and an existing file for ``file:``."""
    from ... import encoders

    try:
        encoders.check_spec(spec)
    except ValueError as exc:
        raise _fail(key, str(exc).splitlines()[0]) from None
    if spec.startswith("file:"):
        path = spec[len("file:"):].rsplit(":", 1)[0] if spec.count(":") > 1 else spec[len("file:"):]
        if not Path(path).expanduser().exists():
            raise _fail(key, f"feature file {path!r} does not exist")


def _file_shape(path: Path, key: str | None, k: str) -> tuple[int, int]:
    """(rows, columns) of a feature file, or a :class:`ConfigError` naming ``k`` when it is not a 2-D numeric array."""
    try:
        shape, dtype = feature_shape(path, key)
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


def _renamed_keys(cfg: dict, warn: Callable[[str], None] | None) -> dict:
    """The old spellings of :data:`RENAMED_KEYS` under their new names, each with a one-line warning."""
    cfg = dict(cfg)
    for (section, old), new in RENAMED_KEYS.items():
        body = cfg.get(section)
        if not isinstance(body, Mapping) or old not in body:
            continue
        if new in body:
            raise _fail(f"{section}.{old}", f"is the old name of {section}.{new}; keep only {new}")
        body = dict(body)
        body[new] = body.pop(old)
        cfg[section] = body
        (warn or (lambda line: None))(f"warning: {section}.{old} is deprecated and will be removed; "
                                      f"write {section}.{new}")
    return cfg


def validate_config(raw: Any, *, base_dir: str | os.PathLike = ".", default_out: str | os.PathLike | None = None,
                    warn: Callable[[str], None] | None = None) -> ExperimentConfig:
    """Check every key, type, name and file of a parsed config; raise :class:`ConfigError` naming the key.

    Relative paths (``out``, feature ``file``) are relative to ``base_dir`` (the YAML file's folder). Datasets are
    opened (cheap: no encoder runs) so that a missing file is found now rather than halfway through the run.
    Old key names (:data:`RENAMED_KEYS`) are read under their new names and reported through ``warn``. Sizes and
    parameter values are checked by :func:`._preflight.preflight`, which :func:`load_config` calls next.
    """
    from ...data import load_dataset
    from ...similarity import list_metrics

    base = Path(base_dir)
    cfg = _check_keys(raw if raw is not None else {}, _TOP_KEYS, "", required=("features", "pairs"))
    cfg = _renamed_keys(cfg, warn)
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
        similarity = SimilarityTask(metrics=metrics, null=null)

    match_task = None
    if cfg.get("matching") is not None:
        m = _check_keys(cfg["matching"], _MATCH_KEYS, "matching", required=("methods", "n_known"))
        methods = _method_list(m["methods"], "matching.methods", "name", [m["name"] for m in method_infos()])
        n_known = _int_list(m["n_known"], "matching.n_known")
        n_query = _want(m.get("n_query", 100), int, "matching.n_query", "an integer")
        n_splits = _want(m.get("n_splits", 5), int, "matching.n_splits", "an integer")
        if n_query < 1 or n_splits < 1:
            raise _fail("matching.n_query" if n_query < 1 else "matching.n_splits", "must be >= 1")
        selection = _want(m.get("known_selection", "random"), str, "matching.known_selection",
                          "'random' or 'kmeans'")
        if selection not in ("random", "kmeans"):
            raise _fail("matching.known_selection", f"must be 'random' or 'kmeans', got {selection!r}")
        query = None
        if m.get("query") is not None:
            query = _held_out_map(m["query"], "matching.query", features, pairs, "query items")
            if selection != "random":
                raise _fail("matching.known_selection", "only 'random' works with matching.query (the known pairs are "
                                                       "drawn from the base feature sets); drop it")
        match_task = MatchingTask(methods=methods, n_known=n_known, n_query=n_query, n_splits=n_splits,
                                  known_selection=selection, layers=_layers_mode(m, "matching"), query=query)

    proj_task = None
    if cfg.get("projectors") is not None:
        p = _check_keys(cfg["projectors"], _PROJ_KEYS, "projectors", required=("kinds",))
        kinds = _method_list(p["kinds"], "projectors.kinds", "kind", [p["kind"] for p in projectors.list_projectors()])
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
        proj_task = ProjectorTask(kinds=kinds, test_fraction=float(test_fraction), ks=tuple(sorted(set(ks))),
                                  layers=_layers_mode(p, "projectors"), test=test)

    return ExperimentConfig(name=name, out=out, seeds=seeds, cache_dir=cache_dir, features=features,
                            pairs=tuple(pairs), similarity=similarity, matching=match_task, projectors=proj_task,
                            source=to_jsonable(raw, finite=False))


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


def _layers_mode(section: dict, key: str) -> str:
    mode = _want(section.get("layers", "first"), str, f"{key}.layers", "'first' or 'all'")
    if mode not in ("first", "all"):
        raise _fail(f"{key}.layers", f"must be 'first' (each feature set's first layer) or 'all' (every layer of X "
                                     f"× every layer of Y), got {mode!r}")
    return mode
