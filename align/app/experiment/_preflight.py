"""The checks that need sizes or parameter values, before any cell runs: each solver package checks its own values.

:func:`preflight` runs twice: from :func:`load_config` with the sizes known from the files' headers and the datasets'
lengths, and from :func:`run_experiment` with the features' real shapes. Nothing here runs a solver: metric values
are checked by the similarity registry, matching values by :func:`matching.check_params` (through
:mod:`align.app._solvers`), projector values by :func:`projectors.make_projector` at construction; the rest are plain
comparisons of sizes (pairs describe the same items, known pairs plus queries fit, Recall@k fits the test split,
``n_components`` fits the features).
"""
from __future__ import annotations

from collections.abc import Mapping

import projectors

from ._config import ExperimentConfig, _fail
from .._solvers import check_match_params

__all__ = ["preflight"]

#: What ``compare`` takes as named arguments rather than metric parameters (a YAML entry may set them).
COMPUTE_OPTIONS = ("device", "batch_size", "chunk_size")


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) and value else value


def preflight(cfg: ExperimentConfig, shapes: Mapping[str, tuple]) -> None:
    """Check what the sizes and parameter values decide; raise :class:`ConfigError` naming the key.

    ``shapes`` maps each feature set to ``(n_items, dim)`` (``None`` where not known yet: an encoder's width before
    it runs).
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
        held = getattr(section, key) if section is not None else None
        if not held:
            continue
        for name, other in held.items():
            if dim(name) is not None and dim(other) is not None and dim(name) != dim(other):
                raise _fail(f"{task}.{key}.{name}", f"{other!r} has {dim(other)}-d features but {name!r} has "
                                                    f"{dim(name)}-d; they must come from the same encoder")
        for x, y in cfg.pairs:
            same_items(held[x], held[y], f"{task}.{key}", f"the {what} of a pair")

    if cfg.similarity:
        _check_similarity(cfg, rows)
    if cfg.matching:
        _check_matching(cfg, rows, dim)
    if cfg.projectors:
        _check_projectors(cfg, rows, dim)


def _check_similarity(cfg: ExperimentConfig, rows) -> None:
    from ..._similarity._registry import bind_params, get_spec

    for i, spec in enumerate(cfg.similarity.metrics):
        metric = get_spec(spec.name)
        for params in spec.combos():
            try:  # device / batch_size go to compare() itself, not to the metric
                bind_params(metric, {k: v for k, v in params.items() if k not in COMPUTE_OPTIONS})
            except (TypeError, ValueError) as exc:
                raise _fail(f"similarity.metrics[{i}].params", str(exc).splitlines()[0]) from None
        for x, _ in cfg.pairs:
            if rows(x) is not None and rows(x) < metric.min_rows:
                raise _fail(f"similarity.metrics[{i}]", f"{spec.name} needs at least {metric.min_rows} items; "
                                                        f"{x!r} has {rows(x)}")


def _check_matching(cfg: ExperimentConfig, rows, dim) -> None:
    m = cfg.matching
    q = m.n_query
    for x, _ in cfg.pairs:
        for j, k in enumerate(m.n_known):
            if m.query and rows(x) is not None and k > rows(x):
                raise _fail(f"matching.n_known[{j}]", f"{k} known pairs need {k} base items; {x} has {rows(x)}")
            if not m.query and rows(x) is not None and k + q > rows(x):
                raise _fail(f"matching.n_known[{j}]", f"{k} known pairs + {q} queries need {k + q} items; "
                                                      f"{x} has {rows(x)}")
        if m.query and rows(m.query[x]) is not None and q > rows(m.query[x]):
            raise _fail("matching.n_query", f"{q} queries need {q} items; {m.query[x]} has {rows(m.query[x])}")
    for i, spec in enumerate(m.methods):
        for params in spec.combos():
            try:
                need = check_match_params(spec.name, params, dims=[(dim(x), dim(y)) for x, y in cfg.pairs])
            except (TypeError, ValueError) as exc:
                raise _fail(f"matching.methods[{i}].params", str(exc).splitlines()[0]) from None
            if min(m.n_known) < need:
                raise _fail("matching.n_known", f"method {spec.name!r} needs at least {need} known pairs, "
                                                f"got {min(m.n_known)}; raise it or drop the method")


def _check_projectors(cfg: ExperimentConfig, rows, dim) -> None:
    p = cfg.projectors
    for x, y in cfg.pairs:  # Recall@k on the test split refuses k > its size; say so now, not after the training
        if p.test:
            known = [rows(p.test[s]) for s in (x, y) if rows(p.test[s]) is not None]
            n_test, where = (min(known), f"the test feature set {p.test[x]!r} has") if known else (None, "")
        else:
            n = rows(x) if rows(x) is not None else rows(y)
            n_test = None if n is None else max(1, round(p.test_fraction * n))
            where = f"test_fraction {p.test_fraction:g} of the {n} items of {x!r} leaves"
        if n_test is not None and p.ks[-1] > n_test:
            fix = "" if p.test else " or raise projectors.test_fraction"
            raise _fail("projectors.ks", f"Recall@{p.ks[-1]} needs at least {p.ks[-1]} test items but "
                                         f"{where} {n_test}; use cut-offs up to {n_test}{fix}")
    widths = [min(d for d in (dim(x), dim(y)) if d is not None) for x, y in cfg.pairs
              if dim(x) is not None or dim(y) is not None]
    for i, spec in enumerate(p.kinds):
        key = f"projectors.kinds[{i}].params"
        for params in spec.combos():
            try:  # the kind checks its own values at construction
                projectors.make_projector(spec.name, **params)
            except (TypeError, ValueError) as exc:
                raise _fail(key, str(exc).splitlines()[0]) from None
            k = params.get("n_components")
            ks = k if isinstance(k, (list, tuple)) else [k]
            ks = [v for v in ks if isinstance(v, int) and not isinstance(v, bool)]
            if ks and widths and max(ks) > min(widths):
                raise _fail(key, f"n_components {max(ks)} is more than the {min(widths)} dimensions of the "
                                 "narrower feature set; use at most that many")
