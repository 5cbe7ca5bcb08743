"""``unialign fit``: fit a projector on two feature files, report held-out retrieval, save it with its provenance.

:func:`fit_from_files` is the whole command for Python callers: read the paired features (``FILE`` or ``FILE:KEY``),
check that they came from the encoders named (or recorded beside the files), split off validation pairs when asked
(:func:`projectors.split_pairs`, groups kept together), fit, score the validation pairs in both directions
(:func:`align.evaluation.retrieval_metrics`) and save the projector with the encoders, layer, pooling and a
provenance record, so ``unialign zeroshot`` / :func:`align.app.zeroshot.load_stitched` can rebuild the stitch.

Closed-form kinds (``linear`` with its default ``solver="closed_form"``, ``procrustes``, ``cca``, ``subspace``) use
every pair unless ``val_fraction`` asks for a validation split; trained kinds (``mlp``, ``glu``, ``linear`` with
``solver="trained"``) hold out 10% by default, for early stopping and the report.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import projectors

from .._io import load_features
from .._provenance import provenance, recorded_encoder
from .._validation import check_memory
from ..evaluation import retrieval_metrics
from ..exceptions import UnialignError

__all__ = ["DEFAULT_KIND", "UNPAIRED_KIND", "FitResult", "TrainedOnlyOption", "encoder_of", "fit_from_files"]

#: The kind ``unialign fit`` fits when none is named: closed-form ridge with the penalty chosen by validation.
DEFAULT_KIND = "linear"

#: The kind fitted from unpaired features (``unialign fit --unpaired``): blind matching, then Procrustes.
UNPAIRED_KIND = "blind"

#: Validation share of a trained kind when none is given (early stopping needs held-out pairs).
TRAINED_VAL_FRACTION = 0.1

#: Training settings that only a trained kind takes, by parameter name -> command-line option.
TRAINING_OPTIONS = {"loss": "--loss", "max_epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
                    "checkpoint": "--checkpoint", "device": "--device"}


class TrainedOnlyOption(UnialignError):
    """A training setting (``max_epochs``, ``lr``, …) given for a kind that does not train."""


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit_from_files` made.

    Attributes
    ----------
    projector : projectors.Projector
        The fitted projector (also saved at ``summary["out"]``).
    summary : dict
        ``kind``, ``params``, ``n_train``, ``fit_time_s``, ``val_fraction``; with a validation split ``n_val`` and
        ``val`` (retrieval metrics both ways); for trained kinds ``best_epoch``, ``n_steps``, ``stopped_early``;
        ``fit_report`` (what the projector chose, e.g. the ridge penalty); ``out`` and ``provenance``.
    """

    projector: Any
    summary: dict

    def to_dict(self) -> dict:
        return dict(self.summary)


def encoder_of(path: str, given: str | None, option: str = "--x") -> str | None:
    """The encoder spec behind a feature file: the one given, else the one the file records (``unialign embed
    --out`` sidecar, safetensors header, cache entry); both given and different is an error naming ``option``."""
    recorded = recorded_encoder(path)
    if given is not None and recorded is not None and given != recorded:
        raise ValueError(f"{option}-encoder is {given!r} but {option} {path!r} records features of {recorded!r}; "
                         f"drop {option}-encoder or give the features of {given!r}")
    return given if given is not None else recorded


def _read_unpaired(x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(load_features(x))
    Y = np.asarray(load_features(y))
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(f"--x and --y must be 2-D feature matrices (rows = items), got shapes {X.shape} and "
                         f"{Y.shape}")
    if min(X.shape[0], Y.shape[0]) < 3:
        raise ValueError(f"--unpaired needs at least 3 rows in each of --x and --y, got {X.shape[0]} and "
                         f"{Y.shape[0]}")
    return X, Y


def _read_pairs(x: str, y: str, groups: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    X = np.asarray(load_features(x))
    Y = np.asarray(load_features(y))
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"--x and --y must be 2-D with the same number of rows (row i of each is one pair), got "
                         f"shapes {X.shape} and {Y.shape}; if the rows are not pairs, add --unpaired")
    if X.shape[0] < 1:
        raise ValueError(f"--x {x!r} and --y {y!r} hold no rows; give at least one pair per row")
    g = None
    if groups is not None:
        g = np.asarray(load_features(groups, mmap=False))
        if g.shape != (X.shape[0],) or g.dtype.kind not in "iu":
            raise ValueError(f"--groups must hold one int id per row ({X.shape[0]},), got {g.dtype} {g.shape}")
    return X, Y, g


def _check_closed_form_memory(kind: str, dx: int, dy: int) -> None:
    """Closed forms hold float64 moments (d_x + d_y)^2 and decompose them: refuse what cannot fit."""
    check_memory(8.0 * 3 * (dx + dy) ** 2, f"--kind {kind} on {dx:,}-d and {dy:,}-d features (float64 "
                 f"{dx + dy:,} x {dx + dy:,} moments)", "reduce the dimensions first (e.g. PCA), or train a "
                 "projector instead (--kind mlp or -p solver=trained), which never forms them")


def fit_from_files(
    x: str,
    y: str,
    out: str | os.PathLike,
    *,
    kind: str = DEFAULT_KIND,
    params: dict | None = None,
    val_fraction: float | None = None,
    groups: str | None = None,
    training: dict | None = None,
    rng: int = 0,
    x_encoder: str | None = None,
    y_encoder: str | None = None,
    layer: Any = None,
    pooling: str | None = None,
    callback: Callable[[dict], None] | None = None,
    say: Callable[[str], None] | None = None,
    command: str = "align.app.fit.fit_from_files",
    options: dict | None = None,
    unpaired: bool = False,
) -> FitResult:
    """Fit a ``kind`` projector from the features in ``x`` to those in ``y`` and save it to ``out``.

    Parameters
    ----------
    x, y : str
        Feature files (``.npy`` / ``.npz`` / ``.safetensors``, ``FILE:KEY`` picks an array), shapes (n, d_x) and
        (n, d_y); row i of each is one pair.
    out : path
        Where the fitted projector is saved (``.pt``); not a directory.
    kind : str
        Any kind of :func:`projectors.list_projectors`; default :data:`DEFAULT_KIND`.
    params : dict, optional
        Other parameters of the kind (checked by :func:`projectors.make_projector`).
    val_fraction : float, optional
        Share of the pairs (of the groups, with ``groups``) held out for early stopping and the report. Default:
        :data:`TRAINED_VAL_FRACTION` for trained kinds, 0 (every pair fits) for closed forms.
    groups : str, optional
        A file of int group ids (n,): rows with one id are all positives (e.g. 5 captions per image) and stay on
        one side of the split.
    training : dict, optional
        Training settings (keys of :data:`TRAINING_OPTIONS`); a kind that does not train refuses them
        (:class:`TrainedOnlyOption`).
    rng : int
        Seed of the split, the initialisation and the data order.
    x_encoder, y_encoder, layer, pooling : optional
        How the features were made, stored in the file; the encoders default to the ones the files record.
    callback : callable, optional
        Receives each epoch's record (trained kinds).
    say : callable, optional
        Receives a line when the fit starts and ends (the command line prints them on stderr).
    command, options : optional
        What the provenance record names as the producer (``"unialign fit"`` and its parsed options).
    unpaired : bool
        The rows of ``x`` and ``y`` are *not* pairs (their counts may differ): fit :data:`UNPAIRED_KIND` (blind
        matching from structure alone, then a map on the pseudo-pairs) and report its confidence. Implied by
        ``kind="blind"``; refuses ``groups`` and a validation split, which need pairs.

    Returns
    -------
    FitResult
        On every rank; under ``torchrun`` only rank 0 saves and its summary has ``out`` and ``provenance``.
    """
    if os.path.isdir(out):  # before training, not after
        raise ValueError(f"--out {str(out)!r} is a directory; give a file name such as {os.path.join(out, 'proj.pt')}")
    if unpaired or kind == UNPAIRED_KIND:
        if kind != UNPAIRED_KIND:
            raise ValueError(f"--unpaired fits --kind {UNPAIRED_KIND} (no known pairs), not {kind!r}; drop --kind, "
                             f"or drop --unpaired if row i of --x and --y are one pair")
        return _fit_unpaired(x, y, out, params=params, val_fraction=val_fraction, groups=groups,
                             training=training, rng=rng, x_encoder=x_encoder, y_encoder=y_encoder, layer=layer,
                             pooling=pooling, say=say, command=command, options=options)
    X, Y, g = _read_pairs(x, y, groups)
    x_encoder = encoder_of(x, x_encoder, "--x")
    y_encoder = encoder_of(y, y_encoder, "--y")
    projector = projectors.make_projector(kind, **dict(params or {}))
    given = {k: v for k, v in (training or {}).items() if v is not None}
    unknown = sorted(set(given) - set(TRAINING_OPTIONS))
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(unknown)}; valid: {', '.join(TRAINING_OPTIONS)}")
    if not projector.trains:
        _check_closed_form_memory(kind, int(X.shape[1]), int(Y.shape[1]))
        if given:
            name = next(iter(given))
            raise TrainedOnlyOption(f"{TRAINING_OPTIONS[name]} applies to trained kinds only (mlp, glu, linear with "
                                    f"-p solver=trained), not {kind!r}")
    if given:
        projector.set_params(**given)
    if "rng" in projector.get_params():
        projector.set_params(rng=rng)
    if val_fraction is None:
        val_fraction = TRAINED_VAL_FRACTION if projector.trains else 0.0
    rank0 = int(os.environ.get("RANK", "0")) == 0
    train_rows, val_rows = projectors.split_pairs(X.shape[0], g, fraction=val_fraction, rng=rng)
    say = say or (lambda line: None)
    say(f"fit: {kind} on {len(train_rows):,} pairs ({X.shape[1]}-d -> {Y.shape[1]}-d)"
        + (f", {len(val_rows):,} held out" if val_rows is not None else ", every pair (no validation split)"))
    metadata = {"x_encoder": x_encoder, "y_encoder": y_encoder, "layer": layer, "pooling": pooling}
    t0 = time.perf_counter()
    if projector.trains:
        fit_kw: dict[str, Any] = {"groups": None if g is None else g[train_rows],
                                  "callback": callback if rank0 else None, "metadata": metadata}
        if val_rows is not None:
            fit_kw.update(X_val=X[val_rows], Y_val=Y[val_rows], groups_val=None if g is None else g[val_rows])
        else:
            projector.set_params(val_fraction=0.0)
        projector.fit(X[train_rows], Y[train_rows], **fit_kw)
    else:
        projector.fit(X[train_rows], Y[train_rows])
    fit_time = time.perf_counter() - t0
    summary: dict[str, Any] = {"summary": True, "kind": kind, "params": projector.get_params(),
                               "n_train": len(train_rows), "val_fraction": val_fraction, "fit_time_s": fit_time}
    if not rank0:
        return FitResult(projector, summary)
    if val_rows is not None:
        positives = None
        if g is not None:
            gv = g[val_rows]
            positives = [np.flatnonzero(gv == v) for v in gv]
        res = retrieval_metrics(projector.transform(X[val_rows]), projector.transform_y(Y[val_rows]), positives)
        summary["n_val"] = len(val_rows)
        summary["val"] = res.to_dict()
    if projector.trains:
        tr = projector.train_result_
        summary.update(best_epoch=tr.best_epoch, n_steps=tr.n_steps, stopped_early=tr.stopped_early,
                       data_time_fraction=tr.data_time_fraction)
    if hasattr(projector, "n_components_"):
        summary.update(n_components=projector.n_components_, subspace_scores=projector.scores_)
    report = getattr(projector, "fit_report_", None)
    if report:
        summary["fit_report"] = report
    record = provenance(command=command, options=dict(options or {}), x=Path(x), y=Path(y),
                        groups=None if groups is None else Path(groups), x_encoder=x_encoder, y_encoder=y_encoder,
                        layer=layer, pooling=pooling, kind=kind, params=projector.get_params(), seed=rng,
                        val_fraction=val_fraction)
    projector.save(out, x_encoder=x_encoder, y_encoder=y_encoder, layer=layer, pooling=pooling,
                   config={"x": x, "y": y, "val_fraction": val_fraction, "seed": rng}, provenance=record)
    summary["out"] = str(out)
    summary["provenance"] = record
    say(f"fit: done in {fit_time:.1f} s; saved {out}")
    return FitResult(projector, summary)


def _fit_unpaired(x, y, out, *, params, val_fraction, groups, training, rng, x_encoder, y_encoder, layer, pooling,
                  say, command, options) -> FitResult:
    """``fit_from_files(..., unpaired=True)``: the blind projector on two unpaired feature files."""
    if groups is not None:
        raise ValueError("--groups names positives among pairs; --unpaired features have none: drop --groups")
    if val_fraction:
        raise ValueError("--val-fraction holds out known pairs; --unpaired features have none: drop --val-fraction "
                         "(the summary's confidence report takes its place)")
    given = {k: v for k, v in (training or {}).items() if v is not None}
    if given:
        name = next(iter(given))
        raise TrainedOnlyOption(f"{TRAINING_OPTIONS.get(name, name)} applies to trained kinds only (mlp, glu, linear "
                                f"with -p solver=trained), not --unpaired ({UNPAIRED_KIND!r})")
    X, Y = _read_unpaired(x, y)
    x_encoder = encoder_of(x, x_encoder, "--x")
    y_encoder = encoder_of(y, y_encoder, "--y")
    projector = projectors.make_projector(UNPAIRED_KIND, **dict(params or {}))
    projector.set_params(rng=rng)
    say = say or (lambda line: None)
    say(f"fit: {UNPAIRED_KIND} on {X.shape[0]:,} x {Y.shape[0]:,} unpaired rows ({X.shape[1]}-d -> {Y.shape[1]}-d), "
        f"no known pairs")
    t0 = time.perf_counter()
    projector.fit(X, Y)
    fit_time = time.perf_counter() - t0
    confidence = {k: (v if isinstance(v, (str, bool)) else float(v)) for k, v in projector.confidence_.items()}
    summary: dict[str, Any] = {"summary": True, "kind": UNPAIRED_KIND, "unpaired": True,
                               "params": projector.get_params(), "n_x": int(X.shape[0]), "n_y": int(Y.shape[0]),
                               "n_pseudo_pairs": len(projector.pairs_), "fit_time_s": fit_time,
                               "confidence": confidence}
    if int(os.environ.get("RANK", "0")) != 0:
        return FitResult(projector, summary)
    record = provenance(command=command, options=dict(options or {}), x=Path(x), y=Path(y), x_encoder=x_encoder,
                        y_encoder=y_encoder, layer=layer, pooling=pooling, kind=UNPAIRED_KIND,
                        params=projector.get_params(), seed=rng, unpaired=True)
    projector.save(out, x_encoder=x_encoder, y_encoder=y_encoder, layer=layer, pooling=pooling,
                   config={"x": x, "y": y, "unpaired": True, "seed": rng}, provenance=record)
    summary["out"] = str(out)
    summary["provenance"] = record
    verdict = "confident" if confidence.get("confident") else "NOT confident: the map is likely meaningless"
    say(f"fit: done in {fit_time:.1f} s; blind matching {verdict}; saved {out}")
    return FitResult(projector, summary)
