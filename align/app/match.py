"""``unialign match``: training-free matching of two feature files, evaluated on paired features or run on
unpaired ones from a file of known pairs, and the table of methods with what each needs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import matching

from .._io import load_features
from .._provenance import provenance
from ._solvers import evaluate, method_infos

__all__ = ["match_files", "method_table", "read_known_pairs"]


def read_known_pairs(path: str) -> np.ndarray:
    """Known pairs from a CSV / whitespace file of two integer columns ``i,j`` (an optional header line, ``#``
    comments); shape (k, 2) int64."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--known-pairs file {path!r} does not exist; give a CSV of known pairs i,j "
                                "(one per line)")
    text = Path(path).read_text().strip().splitlines()
    rows = []
    for lineno, line in enumerate(text, 1):
        fields = [f for f in line.replace(",", " ").replace("\t", " ").split() if f]
        if not fields or line.lstrip().startswith("#"):
            continue
        try:
            rows.append([int(f) for f in fields])
        except ValueError:
            if lineno == 1:  # a header
                continue
            raise ValueError(f"`--known-pairs` line {lineno} of {path} must be two integers 'i,j', got {line!r}") from None
        if len(rows[-1]) != 2:
            raise ValueError(f"`--known-pairs` line {lineno} of {path} must have two columns 'i,j', got {line!r}")
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def method_table() -> list[dict]:
    """Every matching method with what it needs (known pairs, kernels, cost class): ``matching.list_methods()``."""
    return method_infos()


def match_files(x: str, y: str, method: str = "faq", *, known_pairs: str | None = None, n_known: int = 30,
                n_query: int = 100, n_splits: int = 5, known_selection: str = "random", rng: int = 0,
                params: dict | None = None, command: str = "align.app.match.match_files",
                options: dict | None = None) -> dict:
    """Evaluate ``method`` on paired feature files (without ``known_pairs``: each of ``n_splits`` splits draws
    ``n_known`` known pairs and ``n_query`` hidden items, :func:`matching.evaluate`), or match unpaired files given
    the known pairs in ``known_pairs`` (:func:`matching.match`). Returns the result's dict with the inputs and
    ``provenance``."""
    params = dict(params or {})
    X = np.asarray(load_features(x))
    Y = np.asarray(load_features(y))
    record = {"command": command, "options": dict(options or {}), "x": Path(x), "y": Path(y), "method": method,
              "params": params, "seed": rng}
    if known_pairs is None:
        res = evaluate(X, Y, method, n_known=n_known, n_query=n_query, n_splits=n_splits,
                       known_selection=known_selection, rng=rng, **params)
        return {"x": x, "y": y, **res.to_dict(), "provenance": provenance(**record)}
    pairs = read_known_pairs(known_pairs)
    res = matching.match(X, Y, method=method, partial_match=pairs, rng=rng, **params)
    record["known_pairs"] = Path(known_pairs)
    return {"x": x, "y": y, "n_x": int(X.shape[0]), "n_y": int(Y.shape[0]), "n_known": len(pairs), **res.to_dict(),
            "provenance": provenance(**record)}
