"""The ``unialign`` command line: JSON on stdout, logs and progress on stderr.

Every command prints one JSON document (or JSON lines for streams such as training curves) to stdout. Expected
errors (bad input, missing files, unknown names) end with exit status 1 and a one-line ``error: …`` message on
stderr; click's usage errors end with status 2. ``--debug`` shows the traceback instead. Any other exception is a
bug, not bad input: it keeps its traceback (and a non-zero status). Every result records its provenance (versions,
input files by sha256 or encoder specs, seeds) under ``"provenance"``.

This is the only module of ``align`` that imports ``matching`` or ``projectors``.
"""
from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click
import numpy as np

from . import __version__

log = logging.getLogger("align")

# Errors a user can fix from the message alone: the library's validation errors (ValueError and its subclasses:
# InputTypeError for wrong types, MissingPackageError for an optional package, ConfigError, MemoryBudgetError, …)
# and the operating system's (a missing or unreadable file, a full disk). Any other exception is a bug and keeps its
# traceback, except a third-party package that is not installed (see _missing_package).
EXPECTED_ERRORS = (ValueError, OSError)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def emit(obj: Any, *, indent: int | None = 2) -> None:
    """Print one JSON document to stdout."""
    click.echo(json.dumps(_jsonable(obj), indent=indent))


def emit_line(obj: Any) -> None:
    """Print one JSON line to stdout (for streams such as training curves) and flush it."""
    click.echo(json.dumps(_jsonable(obj)))
    sys.stdout.flush()


def _missing_package(exc: BaseException) -> str | None:
    """The top-level name of a third-party package that is not installed (``import ot`` without POT), else None;
    a failed import of unialign's own modules is a bug, not a missing package."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    return None if top in ("align", "matching", "projectors") else top


def handle_errors(func: Callable) -> Callable:
    """Turn expected errors into ``error: <one line>`` and exit status 1 (unless ``--debug``); let bugs through.

    Expected: ``ValueError`` (every validation error of the library, including its :class:`InputTypeError` for
    wrong types and :class:`MissingPackageError` for an optional package), ``OSError`` (missing / unreadable files, a
    full disk), and a third-party package that is not installed. Anything else propagates with its traceback and a
    non-zero exit status, so a programming error is never disguised as a user error.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = (ctx.find_root().obj or {}).get("debug", False)
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except (*EXPECTED_ERRORS, ModuleNotFoundError) as exc:
            missing = _missing_package(exc)
            if debug or not (isinstance(exc, EXPECTED_ERRORS) or missing):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if missing:
                message = f"{message}: this needs an optional package; install the one that provides {missing!r}"
            click.echo(f"error: {message}", err=True)
            ctx.exit(1)

    return wrapper


def parse_key_values(items: tuple[str, ...], option: str = "--param", *, python_names: bool = True,
                     reserved: dict[str, str] | None = None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs from a repeated option; values read as YAML (``10``, ``0.5``, ``true``, ``[8, 16]``).

    A value YAML cannot read stays a string. With ``python_names`` a key's dashes become underscores
    (``--param n-init=5`` -> ``n_init``); keys that are names chosen by the user (``--features NAME=FILE``) keep theirs.
    ``reserved`` maps keys the command sets itself to the option that sets them; such a key is a usage error.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        key = key.strip()
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        key = key.replace("-", "_") if python_names else key
        if reserved and key in reserved:
            hint = f"use {reserved[key]}" if reserved[key] else "it is not a parameter"
            raise click.BadParameter(f"{key!r} is set by the command itself; {hint}", param_hint=option)
        out[key] = parsed
    return out


def load_feature_option(path: str) -> np.ndarray:
    """Load a feature file given on the command line (``FILE`` or ``FILE:KEY``) as a float array."""
    from ._io import load_features

    return np.asarray(load_features(path))


def result_provenance(**inputs: Any) -> dict:
    """``align._provenance.provenance`` for the running command: its name and parsed options, the unialign / numpy /
    torch versions, and ``inputs`` (``Path`` values are input files, recorded with their sha256)."""
    from ._provenance import provenance

    ctx = click.get_current_context()
    return provenance(command=f"unialign {ctx.info_name}", options=dict(ctx.params), **inputs)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="unialign")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line error messages.")
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-v info, -vv debug).")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: int) -> None:
    """Measure, match and stitch frozen, independently trained encoders.

    Commands print JSON on stdout; logs and progress go to stderr.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# --------------------------------------------------------------------------------------------------------------
# Commands. Each command is one function below, registered on `main`; add new commands in their own section and
# keep the imports of heavy modules (torch, matching, projectors) inside the command body so `--help` stays fast.
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# unialign similarity  (issue 3: similarity measures)
# --------------------------------------------------------------------------------------------------------------


@main.command("similarity")
@click.argument("x_path", metavar="X", required=False)
@click.argument("y_path", metavar="Y", required=False)
@click.option("--metric", "-m", default="linear_cka", show_default=True,
              help="Metric name; `unialign similarity --list` shows them with their invariances.")
@click.option("--null", "n_permutations", type=click.IntRange(min=0), default=0, show_default=True,
              help="Permutations for a null distribution and p-value (0: none).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the permutations.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A metric parameter, e.g. -p sigma=0.5, -p k=20, -p variance=0.95 (repeatable).")
@click.option("--sigma", default=None, help="RBF bandwidth: 'median', 'platonic' or a number (rbf_cka, unbiased_cka).")
@click.option("--k", "k", type=int, default=None, help="Neighbours for mutual_knn, cknna, cycle_knn.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Rows per chunk / Gram block.")
@click.option("--device", default=None, help="Compute device, e.g. cuda:0 (default: cpu).")
@click.option("--list", "list_only", is_flag=True, help="List the metrics and exit (X and Y are then ignored).")
@handle_errors
def similarity_command(x_path, y_path, metric, n_permutations, seed, params, sigma, k, batch_size, device,
                       list_only):
    """Measure how similarly two encoders represent the same items: X and Y are feature files (.npy, .npz,
    .safetensors; FILE:KEY picks an array) whose row i describes the same item.

    Prints {"metric", "value", "n", "kind", "settings", "null": {"mean", "std", "p_value", "n_permutations"}};
    "null" only with --null. A .npy file is memory-mapped and streamed in chunks.
    """
    from pathlib import Path

    from . import similarity as sim

    if list_only:
        emit({name: info.to_dict() for name, info in sim.list_metrics().items()})
        return
    if x_path is None or y_path is None:
        raise click.UsageError("give two feature files X and Y (or --list to see the metrics)")
    kwargs = parse_key_values(params, reserved={
        "X": "", "Y": "", "metric": "--metric", "batch_size": "--batch-size", "device": "--device",
        "n_permutations": "--null", "rng": "--seed"})
    if sigma is not None:
        try:
            kwargs["sigma"] = float(sigma)
        except ValueError:
            kwargs["sigma"] = sigma
    if k is not None:
        kwargs["k"] = k
    X = load_feature_option(x_path)
    Y = load_feature_option(y_path)
    result = sim.compare(X, Y, metric, batch_size=batch_size, device=device, **kwargs)
    out = result.to_dict()
    if n_permutations:
        null = sim.permutation_null(X, Y, metric, n_permutations, seed, batch_size=batch_size, device=device,
                                    **kwargs)
        out["null"] = {"mean": null.null_mean, "std": null.null_std, "p_value": null.p_value,
                       "n_permutations": null.n_permutations, "seed": seed}
    out["provenance"] = result_provenance(x=Path(x_path), y=Path(y_path), metric=metric, params=kwargs,
                                          seed=seed if n_permutations else None)
    emit(out)


# ---------------------------------------------------------------------------------------------------- embed --
def _init_distributed_from_env() -> None:
    """Under ``torchrun`` (WORLD_SIZE > 1), join the process group: NCCL with CUDA, gloo otherwise."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


@main.command()
@click.option("--encoder", "encoder_spec", required=True, metavar="SPEC",
              help="Encoder spec: minilm, e5-small, efficientnet-lite0, timm:NAME, st:NAME, hf:NAME (see `unialign encoders`).")
@click.option("--dataset", "dataset_spec", required=True, metavar="SPEC",
              help="Dataset spec: concepts:imagenet-1k, imagefolder:DIR, captions:FILE, text:FILE, idx:IMGS,LABELS, …")
@click.option("--field", default=None, help="Which field of each item to embed (e.g. lemma, definition, prompt, image, caption).")
@click.option("--layer", "layers", multiple=True, help="Layer(s) to extract in one pass; repeat for several.")
@click.option("--pooling", default=None, help="cls, mean or cls+mean (torch encoders).")
@click.option("--normalize/--no-normalize", default=None, help="L2-normalise the features (default: the encoder's own).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1, … (default cpu).")
@click.option("--dtype", default=None, help="float32, bfloat16 or float16.")
@click.option("--encoder-option", "encoder_options", multiple=True, metavar="KEY=VALUE",
              help="Other encoder options, e.g. prompt=query for e5-small.")
@click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset options, e.g. template='a photo of a {}.' or split=test.")
@click.option("--batch-size", type=int, default=None, help="Items per forward pass (default: the encoder's).")
@click.option("--num-workers", type=int, default=None, help="Decoding workers (default 1 for images, 0 for text).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Feature cache folder (default $UNIALIGN_CACHE or ~/.cache/unialign).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Also write the features here: .npy (one layer), .npz or .safetensors (every layer, keyed by name).")
@click.option("--ids-out", type=click.Path(dir_okay=False), default=None, help="Write the row ids, one per line.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@handle_errors
def embed(encoder_spec, dataset_spec, field, layers, pooling, normalize, device, dtype, encoder_options,
          dataset_options, batch_size, num_workers, cache_dir, out, ids_out, progress):
    """Extract features of one field of a dataset, once: cached on disk and reused when nothing changed.

    The cache key covers the encoder (spec, weights, layers, pooling, preprocessing, normalisation, dtype) and the
    dataset's content. Under torchrun the shards are split across ranks and rank 0 merges them.
    """
    from ._io import atomic_write, save_features
    from .data import load_dataset
    from .encoders import load_encoder
    from .features import embed as embed_features

    if out is not None and not out.lower().endswith((".npy", ".npz", ".safetensors")):
        raise ValueError(f"`--out` must end in .npy, .npz or .safetensors, got {out!r}")
    options = parse_key_values(encoder_options, "--encoder-option")
    given = {"layers": list(layers) or None, "pooling": pooling, "normalize": normalize, "device": device,
             "dtype": dtype}
    options.update({k: v for k, v in given.items() if v is not None})
    encoder = load_encoder(encoder_spec, **options)
    dataset = load_dataset(dataset_spec, **parse_key_values(dataset_options, "--dataset-option"))
    _init_distributed_from_env()
    feats = embed_features(encoder, dataset, field=field, cache_dir=cache_dir, batch_size=batch_size,
                           num_workers=num_workers, show_progress=progress)
    result = feats.to_dict()
    result["field"] = dataset.resolve_field(field)
    record = result_provenance(encoder=feats.meta.get("encoder", {}).get("spec", encoder.spec),
                               encoder_fingerprint=feats.meta.get("encoder", {}).get("fingerprint"),
                               dataset=dataset.spec, field=result["field"], layers=list(feats.layers),
                               dataset_fingerprint=feats.meta.get("dataset", {}).get("fingerprint"),
                               cache_key=feats.key)
    if out is not None:
        from ._provenance import write_feature_sidecar

        suffix = out.rsplit(".", 1)[-1].lower()
        if suffix == "npy":
            if len(feats.layers) > 1:
                raise ValueError(f"{len(feats.layers)} layers were extracted; write them to a .npz or .safetensors --out")
            save_features(out, np.asarray(feats.X))
        elif suffix in ("npz", "safetensors"):
            arrays = {name: np.asarray(arr) for name, arr in feats.layers.items()}
            if suffix == "npz":
                with atomic_write(out) as f:
                    np.savez(f, **arrays)
            else:
                from safetensors.numpy import save

                header = {"unialign.encoder": str(record["encoder"]),
                          "unialign.provenance": json.dumps(_jsonable(record), sort_keys=True)}
                with atomic_write(out) as f:
                    f.write(save(arrays, metadata=header))
        else:
            raise ValueError(f"`--out` must end in .npy, .npz or .safetensors, got {out!r}")
        result["out"] = out
        result["dtype"] = "float32"
        # beside the file: which encoder made it, so a projector can refuse another encoder's features
        result["provenance_file"] = str(write_feature_sidecar(out, record))
    if ids_out is not None:
        with atomic_write(ids_out, "w") as f:
            f.write("\n".join(feats.ids) + "\n")
        result["ids_out"] = ids_out
    result["provenance"] = record
    emit(result)


# --------------------------------------------------------------------------------------------------------------
# unialign encoders
# --------------------------------------------------------------------------------------------------------------


@main.command("encoders")
@handle_errors
def encoders_command() -> None:
    """List the encoder specs load_encoder understands: built-ins and prefixes, with modality and description."""
    from .encoders import list_encoders

    emit([info.to_dict() for info in list_encoders()])


# --------------------------------------------------------------------------------------------------------------
# unialign fit / unialign retrieve  (issue 5: trained projectors and subspace selection)
# --------------------------------------------------------------------------------------------------------------


def _encoder_of(path: str, given: str | None, option: str) -> str | None:
    """The encoder spec behind a feature file: the one given on the command line, else the one the file records
    (``unialign embed --out`` sidecar, safetensors header, cache entry); both given and different is an error."""
    from ._provenance import recorded_encoder

    recorded = recorded_encoder(path)
    if given is not None and recorded is not None and given != recorded:
        raise ValueError(f"{option}-encoder is {given!r} but {option} {path!r} records features of {recorded!r}; "
                         f"drop {option}-encoder or give the features of {given!r}")
    return given if given is not None else recorded


@main.command("fit")
@click.option("--kind", "-k", default="mlp", show_default=True,
              help="Projector kind: linear, procrustes, mlp, glu, cca, subspace.")
@click.option("--x", "x_path", required=True, help="Source features (n, d_x): .npy/.npz/.safetensors (FILE[:KEY]).")
@click.option("--y", "y_path", required=True, help="Target features (n, d_y); row i pairs with row i of --x.")
@click.option("--out", "out_path", required=True, help="Where to save the fitted projector (.pt).")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of pairs (of groups, with --groups) held out for early stopping and the final report.")
@click.option("--groups", "groups_path", default=None,
              help="Optional .npy of int group ids (n,): rows with one id are all positives (e.g. 5 captions/image).")
@click.option("--loss", default=None, type=click.Choice(["infonce", "siglip"]), help="Loss of the trained kinds.")
@click.option("--epochs", "max_epochs", default=None, type=int, help="Maximum epochs (trained kinds).")
@click.option("--batch-size", default=None, type=int, help="Global batch size (trained kinds).")
@click.option("--lr", default=None, type=float, help="Peak learning rate (trained kinds).")
@click.option("--checkpoint", default=None,
              help="Resumable checkpoint path; rerun the same command to resume (a checkpoint of other settings, "
                   "features or encoders is refused).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: a GPU when available).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split, init and data order.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Any other projector parameter, e.g. -p hidden_dim=2048 -p alpha=0.1 -p n_components=[8,16,32].")
@click.option("--x-encoder", default=None, help="Encoder spec that made --x (stored in the file).")
@click.option("--y-encoder", default=None, help="Encoder spec that made --y (stored in the file).")
@click.option("--layer", default=None, help="Layer the features came from (stored in the file).")
@click.option("--pooling", default=None, help="Pooling used for the features (stored in the file).")
@handle_errors
def fit_command(kind, x_path, y_path, out_path, val_fraction, groups_path, loss, max_epochs, batch_size, lr,
                checkpoint, device, seed, params, x_encoder, y_encoder, layer, pooling) -> None:
    """Fit a projector from --x to --y; print training curves as JSON lines, then a summary line.

    With --val-fraction > 0 the held-out pairs drive early stopping (trained kinds) and the summary reports their
    retrieval metrics (X projected vs Y, both directions). Runs under `torchrun` for several GPUs/nodes: every
    rank reads the same files, rank 0 prints and saves.

    \b
    Example:
      unialign fit --kind mlp --x en_minilm.npy --y en_e5.npy --val-fraction 0.1 --out proj.pt
    """
    import os
    import time
    from pathlib import Path

    from align.evaluation import retrieval_metrics
    from projectors import TrainedProjector, make_projector
    from projectors._neural import split_by_group

    from ._io import load_features

    if os.path.isdir(out_path):  # before training, not after
        raise ValueError(f"--out {out_path!r} is a directory; give a file name such as {os.path.join(out_path, 'proj.pt')}")
    X = np.asarray(load_features(x_path))
    Y = np.asarray(load_features(y_path))
    x_encoder = _encoder_of(x_path, x_encoder, "--x")
    y_encoder = _encoder_of(y_path, y_encoder, "--y")
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"--x and --y must be 2-D with the same number of rows (row i of each is one pair), got shapes "
            f"{X.shape} and {Y.shape}"
        )
    groups = None
    if groups_path is not None:
        groups = np.asarray(load_features(groups_path, mmap=False))
        if groups.shape != (X.shape[0],) or groups.dtype.kind not in "iu":
            raise ValueError(f"--groups must hold one int id per row ({X.shape[0]},), got {groups.dtype} {groups.shape}")
    kw = parse_key_values(params, reserved={"kind": "--kind", "rng": "--seed"})
    projector = make_projector(kind, **kw)
    trained = isinstance(projector, TrainedProjector) and not (
        kind == "linear" and projector.get_params().get("solver", "closed_form") == "closed_form")
    if not trained:  # closed forms hold float64 moments (d_x + d_y)^2 and decompose them: refuse what cannot fit
        from ._validation import check_memory

        dx, dy = int(X.shape[1]), int(Y.shape[1])
        check_memory(8.0 * 3 * (dx + dy) ** 2, f"--kind {kind} on {dx:,}-d and {dy:,}-d features (float64 "
                     f"{dx + dy:,} x {dx + dy:,} moments)", "reduce the dimensions first (e.g. PCA), or train a "
                     "projector instead (--kind mlp or -p solver=trained), which never forms them")
    for name, option, value in (("loss", "--loss", loss), ("max_epochs", "--epochs", max_epochs),
                                ("batch_size", "--batch-size", batch_size), ("lr", "--lr", lr),
                                ("checkpoint", "--checkpoint", checkpoint), ("device", "--device", device)):
        if value is None:
            continue
        if not trained:
            raise click.UsageError(f"{option} applies to trained kinds only (mlp, glu, "
                                   f"linear with -p solver=trained), not {kind!r}")
        projector.set_params(**{name: value})
    if "rng" in projector.get_params():
        projector.set_params(rng=seed)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if val_fraction > 0:
        train_rows, val_rows = split_by_group(X.shape[0], groups, val_fraction, seed)
    else:
        train_rows, val_rows = np.arange(X.shape[0]), None
    Xtr, Ytr = X[train_rows], Y[train_rows]
    gtr = None if groups is None else groups[train_rows]
    t0 = time.perf_counter()
    if trained:
        fit_kw = {"groups": gtr, "callback": emit_line if rank0 else None,
                  "metadata": {"x_encoder": x_encoder, "y_encoder": y_encoder, "layer": layer, "pooling": pooling}}
        if val_rows is not None:
            fit_kw.update(X_val=X[val_rows], Y_val=Y[val_rows],
                          groups_val=None if groups is None else groups[val_rows])
        else:
            projector.set_params(val_fraction=0.0)
        projector.fit(Xtr, Ytr, **fit_kw)
    else:
        projector.fit(Xtr, Ytr)
    fit_time = time.perf_counter() - t0
    if not rank0:
        return
    summary: dict[str, Any] = {"summary": True, "kind": kind, "params": projector.get_params(),
                               "n_train": len(train_rows), "fit_time_s": fit_time}
    if val_rows is not None:
        positives = None
        if groups is not None:
            gv = groups[val_rows]
            positives = [np.flatnonzero(gv == g) for g in gv]
        res = retrieval_metrics(projector.transform(X[val_rows]), projector.transform_y(Y[val_rows]), positives)
        summary["n_val"] = len(val_rows)
        summary["val"] = res.to_dict()
    if hasattr(projector, "train_result_"):
        tr = projector.train_result_
        summary.update(best_epoch=tr.best_epoch, n_steps=tr.n_steps, stopped_early=tr.stopped_early,
                       data_time_fraction=tr.data_time_fraction)
    if hasattr(projector, "n_components_"):
        summary.update(n_components=projector.n_components_, subspace_scores=projector.scores_)
    record = result_provenance(x=Path(x_path), y=Path(y_path), groups=None if groups_path is None else Path(groups_path),
                               x_encoder=x_encoder, y_encoder=y_encoder, layer=layer, pooling=pooling, kind=kind,
                               params=projector.get_params(), seed=seed, val_fraction=val_fraction)
    projector.save(out_path, x_encoder=x_encoder, y_encoder=y_encoder, layer=layer, pooling=pooling,
                   config={"x": x_path, "y": y_path, "val_fraction": val_fraction, "seed": seed}, provenance=record)
    summary["out"] = out_path
    summary["provenance"] = record
    emit_line(summary)


@main.command("retrieve")
@click.option("--projector", "projector_path", required=True, help="A projector saved by `unialign fit`.")
@click.option("--x", "x_path", required=True, help="Query features in the projector's source space (n_q, d_x).")
@click.option("--y", "y_path", required=True, help="Gallery features in its target space (n_g, d_y).")
@click.option("--positives", "positives_path", default=None,
              help="Optional .npy (n_q,) with the gallery row of each query; default: row i pairs with row i.")
@click.option("--ks", default="1,5,10", show_default=True, help="Comma-separated cut-offs for Recall@k.")
@click.option("--device", default=None, help="Where to score (default CPU).")
@handle_errors
def retrieve_command(projector_path, x_path, y_path, positives_path, ks, device) -> None:
    """Evaluate a projector on held-out pairs: project --x, rank --y, report R@k, median rank and mAP both ways.

    \b
    Example:
      unialign retrieve --projector proj.pt --x test_en_minilm.npy --y test_de_e5.npy
    """
    from pathlib import Path

    from align.evaluation import retrieval_metrics
    from projectors import load_projector

    from ._io import load_features
    from ._provenance import recorded_encoder

    try:
        k_list = tuple(int(k) for k in ks.split(",") if k.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {ks!r}", param_hint="--ks") from None
    if not k_list or min(k_list) < 1:
        raise click.BadParameter(f"cut-offs must be positive integers, got {ks!r}", param_hint="--ks")
    proj = load_projector(projector_path, x_encoder=recorded_encoder(x_path), y_encoder=recorded_encoder(y_path))
    X = np.asarray(load_features(x_path))
    Y = np.asarray(load_features(y_path))
    Q, G = proj.transform(X), proj.transform_y(Y)  # validates both
    n_small = min(X.shape[0], Y.shape[0])
    if max(k_list) > n_small:
        side = "gallery --y" if Y.shape[0] <= X.shape[0] else "query set --x (ranked in the reverse direction)"
        raise ValueError(f"--ks {max(k_list)} is larger than the {side} of {n_small} items, where Recall@k is 1 by "
                         f"construction; use cut-offs up to {n_small}")
    positives = None if positives_path is None else np.asarray(load_features(positives_path, mmap=False))
    res = retrieval_metrics(Q, G, positives, ks=k_list, device=device)
    out = {"projector": projector_path, "kind": proj.kind, "metadata": proj.metadata_, "n_queries": int(X.shape[0]),
           "n_gallery": int(Y.shape[0]), **res.to_dict(),
           "provenance": result_provenance(projector=Path(projector_path), x=Path(x_path), y=Path(y_path),
                                           positives=None if positives_path is None else Path(positives_path),
                                           x_encoder=proj.metadata_.get("x_encoder"),
                                           y_encoder=proj.metadata_.get("y_encoder"), ks=list(k_list))}
    emit(out)


# --------------------------------------------------------------------------------------------------------------
# unialign match  (issue 4: training-free matching)
# --------------------------------------------------------------------------------------------------------------


def _read_pairs(path: str) -> np.ndarray:
    """Known pairs from a CSV / whitespace file of two integer columns ``i,j`` (an optional header line)."""
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(f"--seeds file {path!r} does not exist; give a CSV of known pairs i,j (one per line)")
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
            raise ValueError(f"`--seeds` line {lineno} of {path} must be two integers 'i,j', got {line!r}") from None
        if len(rows[-1]) != 2:
            raise ValueError(f"`--seeds` line {lineno} of {path} must have two columns 'i,j', got {line!r}")
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


@main.command("match")
@click.argument("x_path", metavar="X")
@click.argument("y_path", metavar="Y")
@click.option("--method", default="faq", show_default=True,
              help="faq, local_cka, gw, entropic_gw, fused_gw, procrustes, lstsq, relative or asif.")
@click.option("--seeds", "seeds_path", default=None,
              help="CSV of known pairs 'i,j' (row i of X is row j of Y). With it, X and Y may be unpaired and the "
                   "matching itself is printed; without it, X and Y must be paired and the evaluation protocol runs.")
@click.option("--n-seeds", default=30, show_default=True, help="Evaluation: known pairs per split.")
@click.option("--n-query", default=100, show_default=True, help="Evaluation: hidden query items per split.")
@click.option("--splits", default=5, show_default=True, help="Evaluation: number of base/query splits.")
@click.option("--seed-selection", type=click.Choice(["random", "kmeans"]), default="random", show_default=True,
              help="Evaluation: random seeds or k-means medoids of X.")
@click.option("--kernel", default=None, help="linear, cosine (centred cosine), rbf or centered_rbf.")
@click.option("--n-init", default=None, type=int, help="faq: restarts, batched (default 1).")
@click.option("--seed", default=0, show_default=True, help="Random seed (splits and restarts).")
@click.option("--device", default=None, help="faq / local_cka device, e.g. cuda (default CPU).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Any other setting of the method, e.g. -p transport=true -p two_opt=true.")
@handle_errors
def match_command(x_path, y_path, method, seeds_path, n_seeds, n_query, splits, seed_selection, kernel, n_init, seed,
                  device, params) -> None:
    """Match the rows of X to the rows of Y without training (seeded graph matching, local CKA, OT, Procrustes).

    \b
    Evaluate on paired features (row i of X and of Y are the same item):
      unialign match en_minilm.npy de_e5.npy --method faq --n-seeds 30 --n-query 100 --splits 5 --n-init 30
    Match unpaired features given a few known pairs:
      unialign match images.npy captions.npy --method faq --seeds pairs.csv
    """
    from pathlib import Path

    import matching

    options = parse_key_values(params, reserved={
        "X": "", "Y": "", "method": "--method", "partial_match": "--seeds", "rng": "--seed", "n_seeds": "--n-seeds",
        "n_query": "--n-query", "n_splits": "--splits", "seed_selection": "--seed-selection"})
    if kernel is not None:
        options["kernel"] = kernel
    if n_init is not None:
        options["n_init"] = n_init
    if device is not None:
        options["device"] = device
    X = load_feature_option(x_path)
    Y = load_feature_option(y_path)
    if seeds_path is None:
        res = matching.evaluate(X, Y, method, n_seeds=n_seeds, n_query=n_query, n_splits=splits,
                                seed_selection=seed_selection, rng=seed, **options)
        emit({"x": x_path, "y": y_path, **res.to_dict(),
              "provenance": result_provenance(x=Path(x_path), y=Path(y_path), method=method, params=options,
                                              seed=seed)})
        return
    pairs = _read_pairs(seeds_path)
    res = matching.match(X, Y, method=method, partial_match=pairs, rng=seed, **options)
    out = {"x": x_path, "y": y_path, "n_x": int(X.shape[0]), "n_y": int(Y.shape[0]), "n_seeds": len(pairs),
           **res.to_dict(),
           "provenance": result_provenance(x=Path(x_path), y=Path(y_path), seeds=Path(seeds_path), method=method,
                                           params=options, seed=seed)}
    emit(out)


# --------------------------------------------------------------------------------------------------- select --
def _field_for(dataset, modality: str, field: str | None) -> str:
    """The field an encoder of ``modality`` reads: the one given, else the default field if it has that modality,
    else the first field that does."""
    if field is not None:
        return dataset.resolve_field(field)
    fields = [dataset.default_field] + [f for f in dataset.fields if f != dataset.default_field]
    for candidate in fields:
        if dataset.modality(candidate) == modality:
            return candidate
    raise ValueError(
        f"dataset {dataset.spec!r} has no {modality} field for this encoder (fields: {', '.join(dataset.fields)}); "
        "pick another encoder or dataset"
    )


@main.command("select")
@click.option("--dataset", "dataset_spec", required=True, metavar="SPEC", help="The items every encoder sees.")
@click.option("--encoder", "encoder_specs", multiple=True, metavar="SPEC[@FIELD]",
              help="A candidate encoder; @FIELD picks the field it reads (default: the dataset's field of its "
                   "modality). Repeat for each candidate.")
@click.option("--features", "feature_files", multiple=True, metavar="NAME=FILE",
              help="A candidate given as precomputed features on the same items (row i = item i).")
@click.option("--metric", default="linear_cka", show_default=True, help="Any metric of `unialign similarity --list`.")
@click.option("--null", "n_permutations", type=int, default=0, help="Permutations for each pair's null (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the permutation null.")
@click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE", help="Dataset options.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Feature cache folder.")
@click.option("--progress/--no-progress", default=True, help="Progress bars on stderr.")
@handle_errors
def select_command(dataset_spec, encoder_specs, feature_files, metric, n_permutations, seed, dataset_options,
                   cache_dir, progress):
    """Rank candidate encoder pairs by how similarly they represent the items of a dataset.

    The step before training projectors (Maniparambil et al., CVPR 2024): embed the dataset with every candidate
    (through the feature cache) and rank all pairs by METRIC, most similar first, with a permutation null on request.
    Fields with several rows per item (captions) are averaged per item.
    """
    from . import similarity as sim
    from .data import load_dataset
    from .encoders import load_encoder
    from .features import embed as embed_features

    if len(encoder_specs) + len(feature_files) < 2:
        raise click.UsageError("give at least two candidates (--encoder SPEC and/or --features NAME=FILE)")
    dataset = load_dataset(dataset_spec, **parse_key_values(dataset_options, "--dataset-option"))
    from pathlib import Path

    features: dict[str, np.ndarray] = {}
    sources: dict[str, Any] = {}
    for item in encoder_specs:
        spec, _, field = item.partition("@")
        encoder = load_encoder(spec)
        field = _field_for(dataset, encoder.modality, field or None)
        feats = embed_features(encoder, dataset, field=field, cache_dir=cache_dir, show_progress=progress)
        features[item] = dataset.item_means(feats.X, field)
        sources[item] = {"encoder": encoder.spec, "field": field, "cache_key": feats.key,
                         "encoder_fingerprint": feats.meta.get("encoder", {}).get("fingerprint"),
                         "dataset_fingerprint": feats.meta.get("dataset", {}).get("fingerprint")}
    for name, path in parse_key_values(feature_files, "--features", python_names=False).items():
        X = load_feature_option(str(path))
        if X.ndim != 2 or X.shape[0] != len(dataset):
            raise ValueError(f"--features {name}: expected ({len(dataset)}, d) rows for the dataset's items, "
                             f"got shape {X.shape}")
        features[name] = X
        sources[name] = Path(str(path))
    ranking = sim.rank_pairs(features, metric, n_permutations=n_permutations, rng=seed)
    out = ranking.to_dict()
    out["dataset"] = dataset_spec
    out["seed"] = seed if n_permutations else None
    out["provenance"] = result_provenance(dataset=dataset_spec, candidates=sources, metric=metric,
                                          seed=seed if n_permutations else None)
    emit(out)


# --------------------------------------------------------------------------------------------------------------
# unialign demo  (issue 6: the embedded demo)
# --------------------------------------------------------------------------------------------------------------


@main.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="unialign-demo", show_default=True,
              help="Folder for report.md, report.json and the PNG plots.")
@click.option("--quick", is_flag=True, help="200 concepts, fewer permutations, seeds and epochs (about a minute).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of every random choice.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Feature cache folder (default $UNIALIGN_CACHE or ~/.cache/unialign).")
@click.option("--progress/--no-progress", default=True, help="Step timings and progress bars on stderr.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="Threads for torch, BLAS and e5 during the run (0: leave the defaults). One thread keeps the "
                   "demo fast on a busy machine, where two-thread BLAS can spin-wait for a core.")
@handle_errors
def demo_command(out_dir, quick, seed, cache_dir, progress, threads):
    """The main job on what pip brings: EfficientNet-Lite0, all-MiniLM-L6-v2 and multilingual-e5-small on the
    1,000 ImageNet concepts that ship with timm.

    Measures how similar the three encoders are (CKA, mutual kNN, permutation nulls), matches the concepts across
    encoders without training as the number of known pairs grows, trains projectors from image to text space on half
    of the classes and classifies the other half, and real photos from scikit-learn and matplotlib, zero-shot.
    Writes OUT/report.md, OUT/report.json and PNG plots; prints a short summary on stderr and the headline numbers
    as JSON on stdout.
    """
    import matching
    import projectors

    from .demo import run_demo, summary_lines

    say = (lambda line: click.echo(line, err=True)) if progress else None
    result = run_demo(out_dir, match_evaluate=matching.evaluate, make_projector=projectors.make_projector,
                      quick=quick, cache_dir=cache_dir, rng=seed, show_progress=progress, say=say,
                      threads=threads or None)
    for line in summary_lines(result):
        click.echo(line, err=True)
    emit(result.to_dict())


# --------------------------------------------------------------------------------------------------------------
# unialign zeroshot  (issue 6: stitched zero-shot classification)
# --------------------------------------------------------------------------------------------------------------


@main.command("zeroshot")
@click.option("--projector", "projector_path", required=True,
              help="A projector file from `unialign fit` (it names the source and target encoders).")
@click.option("--images", "images", required=True,
              help="A folder of images (class sub-folders or <wnid>_<name>.JPEG files give labels) or a dataset spec.")
@click.option("--classes", "classes_spec", default="concepts:imagenet-1k", show_default=True,
              help="The candidate classes: a dataset spec (concepts:imagenet-1k, text:FILE) or a text file, one "
                   "class name per line.")
@click.option("--template", "templates", multiple=True,
              help="Prompt template with {} for the class name, repeatable (averaged). Default: the dataset's own "
                   "prompt field when it has one (concepts: 'a photo of a {lemma}.'), else '{}'.")
@click.option("--class-features", default=None,
              help="Precomputed class vectors (n_classes, d) in the target space instead of embedding the names.")
@click.option("--encoder", "encoder_spec", default=None, help="Override the source encoder named in the projector file.")
@click.option("--text-encoder", "text_spec", default=None, help="Override the target encoder named in the projector file.")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Classes printed per image.")
@click.option("--batch-size", type=int, default=None, help="Images per forward pass.")
@click.option("--device", default=None, help="cpu, cuda, … for the encoders.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Feature cache folder.")
@click.option("--progress/--no-progress", default=True, help="Progress bars on stderr.")
@handle_errors
def zeroshot_command(projector_path, images, classes_spec, templates, class_features, encoder_spec, text_spec,
                     top_k, batch_size, device, cache_dir, progress):
    """Classify images zero-shot: source encoder -> projector -> nearest class prompt in the target space.

    \b
      unialign zeroshot --projector proj.pt --images photos/ --classes concepts:imagenet-1k
    Prints {"n", "n_classes", "predictions": [{"id", "top": [{"class", "name", "score"}], "label"?}],
    "accuracy": {"accuracy": {"top1", "top5"}, "chance", …} or null}; accuracy needs labelled images whose
    classes are among --classes (ImageNet wnids map to concepts:* classes).
    """
    import functools
    from pathlib import Path

    import projectors

    from ._provenance import recorded_encoder
    from .data import load_dataset
    from .evaluation import build_zero_shot_classifier
    from .stitch import dataset_labels_for_classes, load_stitched, zero_shot_classify

    options = {"device": device} if device else {}
    class_encoder = recorded_encoder(class_features) if class_features is not None else None
    if text_spec is not None and class_encoder is not None and text_spec != class_encoder:
        raise ValueError(f"--text-encoder is {text_spec!r} but --class-features {class_features!r} records features "
                         f"of {class_encoder!r}; drop one of them or make them agree")
    # a projector that records its encoders refuses others (named in the error) before anything is embedded
    load = functools.partial(projectors.load_projector, x_encoder=encoder_spec, y_encoder=text_spec or class_encoder)
    stitched = load_stitched(projector_path, load_projector=load, encoder=encoder_spec, target=text_spec, **options)
    dataset = load_dataset(images if ":" in images and not Path(images).exists() else f"imagefolder:{images}")
    # the classes: names (and ids, to map ImageNet labels) from a dataset or a plain list
    if Path(classes_spec).is_file():
        names = [ln.strip() for ln in Path(classes_spec).read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not names:
            raise ValueError(f"--classes file {classes_spec!r} holds no class names; write one per line")
        class_ids, prompts_ds = names, None
    else:
        classes_ds = load_dataset(classes_spec)
        field = "lemma" if "lemma" in classes_ds.fields else classes_ds.default_field
        names = [classes_ds.get(i, field) for i in range(len(classes_ds))]
        class_ids = list(classes_ds.ids)
        prompts_ds = classes_ds if "prompt" in classes_ds.fields else None
    if class_features is not None:
        C = load_feature_option(class_features)
        if C.ndim != 2 or C.shape[0] != len(names):
            raise ValueError(f"--class-features must have one row per class ({len(names)}), got shape {C.shape}")
        source = "class-features"
    else:
        text_encoder = stitched.target_encoder(**options)
        if templates or prompts_ds is None:
            C = build_zero_shot_classifier(text_encoder, names, list(templates) or ["{}"],
                                           show_progress=progress)
            source = "templates"
        else:
            from .features import embed as embed_features

            C = np.asarray(embed_features(text_encoder, prompts_ds, field="prompt", cache_dir=cache_dir,
                                          show_progress=progress).X)
            source = "prompt field"
    explicit = click.get_current_context().get_parameter_source("top_k") != click.core.ParameterSource.DEFAULT
    if top_k > len(names) and not explicit:  # the default 5 asks for "up to 5"
        top_k = len(names)
    elif top_k > len(names):
        raise ValueError(f"--top-k {top_k} is larger than the {len(names)} candidate classes; use --top-k {len(names)} "
                         "or fewer, or give more --classes")
    labels, note = dataset_labels_for_classes(dataset, class_ids, names)
    result = zero_shot_classify(stitched, dataset, C, names, labels=labels, top_k=top_k, cache_dir=cache_dir,
                                batch_size=batch_size, show_progress=progress)
    out = {"projector": projector_path, "encoder": stitched.encoder.spec, "target": stitched.target,
           "images": dataset.spec, "classes": classes_spec, "class_vectors": source, **result.to_dict()}
    if labels is None:
        out["note"] = f"no accuracy: {note}"
    out["provenance"] = result_provenance(
        projector=Path(projector_path), encoder=stitched.encoder.spec, target=stitched.target,
        images={"spec": dataset.spec, "fingerprint": dataset.fingerprint(dataset.default_field)},
        classes=Path(classes_spec) if Path(classes_spec).is_file() else classes_spec,
        class_features=None if class_features is None else Path(class_features), templates=list(templates),
        class_vectors=source)
    emit(out)


# --------------------------------------------------------------------------------------------------------------
# unialign run  (issue 6: YAML experiments and ablation grids)
# --------------------------------------------------------------------------------------------------------------


def experiment_runners():
    """The matching and projector functions an experiment calls (align.experiment never imports them)."""
    import matching
    import projectors
    from matching._api import check_method_params

    from .experiment import Runners

    return Runners(match_evaluate=matching.evaluate, match=matching.match, make_projector=projectors.make_projector,
                   matching_methods=tuple(m.name for m in matching.list_methods()),
                   projector_kinds=tuple(p["kind"] for p in projectors.list_projectors()),
                   check_match_params=check_method_params)


@main.command("run")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder (default: the config's `out`, else CONFIG's folder / CONFIG's name).")
@click.option("--check", is_flag=True, help="Only validate the config and list the cells; compute nothing.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@handle_errors
def run_command(config_path, out_dir, check, progress):
    """Run an experiment or ablation grid from a YAML file; rerunning skips the finished cells.

    Writes OUT/cells/*/<id>.json (one per finished cell), results.json, results.csv (mean ± std over seeds),
    report.md and PNG plots; prints a JSON summary. The file is validated before any work starts. See
    `align.experiment` for the format.
    """
    import dataclasses
    from pathlib import Path

    from .experiment import _cells, load_config, run_experiment

    runners = experiment_runners()
    cfg = load_config(config_path, runners)
    if out_dir is not None:
        cfg = dataclasses.replace(cfg, out=Path(out_dir))
    if check:
        cells = _cells(cfg)
        counts: dict[str, int] = {}
        for c in cells:
            counts[c.task] = counts.get(c.task, 0) + 1
        emit({"valid": True, "name": cfg.name, "out": str(cfg.out), "n_cells": len(cells), "cells": counts})
        return
    say = (lambda line: click.echo(line, err=True)) if progress else None
    result = run_experiment(cfg, runners, show_progress=progress, say=say)
    emit(result.to_dict())
