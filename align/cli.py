"""The ``unialign`` command line: parse options, call one function, print JSON on stdout; logs and progress on stderr.

Every command prints one JSON document (or JSON lines for streams such as training curves) to stdout. Expected
errors end with exit status 1 and a one-line ``error: …`` message on stderr; click's usage errors end with status 2;
``--debug`` shows the traceback instead. Expected means: the library's errors (:class:`align.exceptions.UnialignError`,
a ``ValueError``; also a plain ``ValueError`` raised by unialign's own code), the operating system's (``OSError``:
a missing file, a full disk) and a third-party package that is not installed. Anything else, including a
``ValueError`` raised inside a third-party package, is a bug and keeps its traceback. Every result records its
provenance (versions, input files by sha256 or encoder specs, seeds) under ``"provenance"``.

The workflows live in :mod:`align.app`; with it, this is the only part of ``align`` that imports ``matching`` or
``projectors``. Renamed options keep their old spelling for a release, hidden, with a warning on stderr.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import numpy as np

from . import __version__
from ._cli_support import (EXPECTED_ERRORS, emit, emit_line, given, handle_errors, parse_key_values,  # noqa: F401
                           producer, renamed, result_provenance, say)

log = logging.getLogger("align")

def load_feature_option(path: str) -> np.ndarray:
    """Load a feature file given on the command line (``FILE`` or ``FILE:KEY``) as a float array."""
    from ._io import load_features

    return np.asarray(load_features(path))


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
    from ._console import install

    # one-line `warning: …` for Python warnings and WARNING logs; no third-party progress bars unless -v; the
    # progress of `fit` (one line per epoch) on stderr
    ctx.call_on_close(install(verbose, ctx.invoked_subcommand))


# --------------------------------------------------------------------------------------------------------------
# One section per command; each parses its options and calls one function of the library or of align.app.
# Heavy modules (torch, matching, projectors) are imported inside the command body, so `--help` stays fast.
# --------------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------- similarity --
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
@click.option("--chunk-size", type=click.IntRange(min=1), default=None,
              help="Rows per chunk / Gram block (a memory knob; giving it also picks the tiled route for RBF).")
@click.option("--batch-size", "old_batch_size", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--device", default=None, help="Compute device, e.g. cuda:0 (default: cpu).")
@click.option("--list", "list_only", is_flag=True, help="List the metrics and exit (X and Y are then ignored).")
@handle_errors
def similarity_command(x_path, y_path, metric, n_permutations, seed, params, sigma, k, chunk_size, old_batch_size,
                       device, list_only):
    """Measure how similarly two encoders represent the same items: X and Y are feature files (.npy, .npz,
    .safetensors; FILE:KEY picks an array) whose row i describes the same item.

    Prints {"metric", "value", "n", "kind", "settings", "null": {"mean", "std", "p_value", "n_permutations"}};
    "null" only with --null. A .npy file is memory-mapped and streamed in chunks.
    """
    from . import similarity as sim

    if list_only:
        emit({name: info.to_dict() for name, info in sim.list_metrics().items()})
        return
    if x_path is None or y_path is None:
        raise click.UsageError("give two feature files X and Y (or --list to see the metrics)")
    chunk_size = renamed(old_batch_size, "--batch-size", chunk_size, "--chunk-size", "chunk_size")
    kwargs = parse_key_values(params, reserved={
        "X": "", "Y": "", "metric": "--metric", "batch_size": "--chunk-size", "chunk_size": "--chunk-size",
        "device": "--device", "n_permutations": "--null", "rng": "--seed"})
    if sigma is not None:
        try:
            kwargs["sigma"] = float(sigma)
        except ValueError:
            kwargs["sigma"] = sigma
    if k is not None:
        kwargs["k"] = k
    X = load_feature_option(x_path)
    Y = load_feature_option(y_path)
    result = sim.compare(X, Y, metric, batch_size=chunk_size, device=device, **kwargs)
    out = result.to_dict()
    if n_permutations:
        null = sim.permutation_null(X, Y, metric, n_permutations, seed, batch_size=chunk_size, device=device,
                                    **kwargs)
        out["null"] = {"mean": null.null_mean, "std": null.null_std, "p_value": null.p_value,
                       "n_permutations": null.n_permutations, "seed": seed}
    out["provenance"] = result_provenance(x=Path(x_path), y=Path(y_path), metric=metric, params=kwargs,
                                          seed=seed if n_permutations else None)
    emit(out)


# ---------------------------------------------------------------------------------------------------- embed --
@main.command()
@click.option("--encoder", "encoder_spec", required=True, metavar="SPEC",
              help="Encoder spec: minilm, e5-small, efficientnet-lite0, timm:NAME, st:NAME, hf:NAME (see `unialign encoders`).")
@click.option("--dataset", "dataset_spec", required=True, metavar="SPEC",
              help="Dataset spec: concepts:imagenet-1k, imagefolder:DIR, captions:FILE, text:FILE, idx:IMGS,LABELS, …")
@click.option("--field", default=None, help="Which field of each item to embed (e.g. lemma, definition, prompt, image, caption).")
@click.option("--layer", "layers", multiple=True, help="Layer(s) to extract in one pass; repeat for several.")
@click.option("--pooling", default=None, help="cls, mean or cls+mean (torch encoders).")
@click.option("--normalize/--no-normalize", default=None, help="L2-normalise the features (default: the encoder's own).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1, … (default cpu; under torchrun 'cuda' is each rank's GPU).")
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
    from .app.embed import embed_to_files

    options = parse_key_values(encoder_options, "--encoder-option", reserved={"batch_size": "--batch-size"})
    given = {"layers": list(layers) or None, "pooling": pooling, "normalize": normalize, "device": device,
             "dtype": dtype}
    options.update({k: v for k, v in given.items() if v is not None})
    emit(embed_to_files(encoder_spec, dataset_spec, field=field, encoder_options=options,
                        dataset_options=parse_key_values(dataset_options, "--dataset-option"), batch_size=batch_size,
                        num_workers=num_workers, cache_dir=cache_dir, out=out, ids_out=ids_out,
                        show_progress=progress, **producer()))


@main.command("encoders")
@handle_errors
def encoders_command() -> None:
    """List the encoder specs load_encoder understands: built-ins and prefixes, with modality and description."""
    from .encoders import list_encoders

    emit([info.to_dict() for info in list_encoders()])


# ------------------------------------------------------------------------------------------ fit / retrieve --
@main.command("fit")
@click.option("--kind", "-k", default=None,
              help="Projector kind: linear (closed-form ridge, penalty chosen by validation; the default), "
                   "procrustes, mlp, glu, cca, subspace; blind with --unpaired.")
@click.option("--x", "x_path", required=True, help="Source features (n, d_x): .npy/.npz/.safetensors (FILE[:KEY]).")
@click.option("--y", "y_path", required=True, help="Target features (n, d_y); row i pairs with row i of --x.")
@click.option("--unpaired", is_flag=True,
              help="The rows of --x and --y are NOT pairs (counts may differ): fit the blind projector from structure "
                   "alone and report its confidence.")
@click.option("--out", "out_path", required=True, help="Where to save the fitted projector (.pt).")
@click.option("--val-fraction", default=None, type=click.FloatRange(0, 1, max_open=True),
              help="Share of pairs (of groups, with --groups) held out for early stopping and the report. Default: "
                   "0.1 for trained kinds; 0 for closed forms, which then fit every pair.")
@click.option("--groups", "groups_path", default=None,
              help="Optional .npy of int group ids (n,): rows with one id are all positives (e.g. 5 captions/image).")
@click.option("--loss", default=None, type=click.Choice(["infonce", "siglip"]), help="Loss of the trained kinds.")
@click.option("--epochs", "max_epochs", default=None, type=int, help="Maximum epochs (trained kinds).")
@click.option("--batch-size", default=None, type=int, help="Global batch size (trained kinds).")
@click.option("--lr", default=None, type=float, help="Peak learning rate (trained kinds).")
@click.option("--checkpoint", default=None,
              help="Resumable checkpoint path; rerun the same command to resume (a checkpoint of other settings, "
                   "features or encoders is refused).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 … for trained kinds (default: a GPU when available).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the split, init and data order.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Any other projector parameter, e.g. -p hidden_dim=2048 -p alpha=0.1 -p n_components=[8,16,32].")
@click.option("--x-encoder", default=None, help="Encoder spec that made --x (stored in the file).")
@click.option("--y-encoder", default=None, help="Encoder spec that made --y (stored in the file).")
@click.option("--layer", default=None, help="Layer the features came from (stored in the file).")
@click.option("--pooling", default=None, help="Pooling used for the features (stored in the file).")
@click.option("--progress/--no-progress", default=True, help="Start and end lines on stderr.")
@handle_errors
def fit_command(kind, x_path, y_path, unpaired, out_path, val_fraction, groups_path, loss, max_epochs, batch_size, lr,
                checkpoint, device, seed, params, x_encoder, y_encoder, layer, pooling, progress) -> None:
    """Fit a projector from --x to --y; print training curves as JSON lines, then a summary line.

    With a validation split the held-out pairs drive early stopping (trained kinds) and the summary reports their
    retrieval metrics (X projected vs Y, both directions). Runs under `torchrun` for several GPUs/nodes: every
    rank reads the same files, rank 0 prints and saves.

    \b
    Example:
      unialign fit --x en_minilm.npy --y en_e5.npy --out proj.pt
      unialign fit --kind mlp --x en_minilm.npy --y en_e5.npy --val-fraction 0.1 --out proj.pt
      unialign fit --unpaired --x images.npy --y prompts.npy --out blind.pt
    """
    import os

    from ._distributed import distributed_session, local_device
    from .app.fit import DEFAULT_KIND, UNPAIRED_KIND, TrainedOnlyOption, fit_from_files

    if unpaired and kind not in (None, UNPAIRED_KIND):
        raise click.UsageError(f"--unpaired fits --kind {UNPAIRED_KIND}, not {kind!r}; drop --kind, or drop "
                               f"--unpaired if row i of --x and --y are one pair")
    kind = kind or (UNPAIRED_KIND if unpaired else DEFAULT_KIND)

    training = {"loss": loss, "max_epochs": max_epochs, "batch_size": batch_size, "lr": lr, "checkpoint": checkpoint,
                "device": local_device(device)}
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with distributed_session():
        try:
            result = fit_from_files(
                x_path, y_path, out_path, kind=kind, params=parse_key_values(params, reserved={
                    "kind": "--kind", "rng": "--seed"}), val_fraction=val_fraction, groups=groups_path,
                training=training, rng=seed, x_encoder=x_encoder, y_encoder=y_encoder, layer=layer, pooling=pooling,
                callback=emit_line, say=say if progress and rank0 else None, unpaired=unpaired, **producer())
        except TrainedOnlyOption as exc:
            raise click.UsageError(str(exc)) from None
    if rank0:
        emit_line(result.summary)


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
    from projectors import load_projector

    from ._io import load_features
    from ._provenance import recorded_encoder
    from .evaluation import retrieval_metrics

    try:
        k_list = tuple(int(k) for k in ks.split(",") if k.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {ks!r}", param_hint="--ks") from None
    if not k_list or min(k_list) < 1:
        raise click.BadParameter(f"cut-offs must be positive integers, got {ks!r}", param_hint="--ks")
    proj = load_projector(projector_path, x_encoder=recorded_encoder(x_path), y_encoder=recorded_encoder(y_path))
    X = load_feature_option(x_path)
    Y = load_feature_option(y_path)
    Q, G = proj.transform(X), proj.transform_y(Y)  # validates both
    n_small = min(X.shape[0], Y.shape[0])
    if max(k_list) > n_small:
        side = "gallery --y" if Y.shape[0] <= X.shape[0] else "query set --x (ranked in the reverse direction)"
        raise ValueError(f"--ks {max(k_list)} is larger than the {side} of {n_small} items, where Recall@k is 1 by "
                         f"construction; use cut-offs up to {n_small}")
    positives = None if positives_path is None else np.asarray(load_features(positives_path, mmap=False))
    res = retrieval_metrics(Q, G, positives, ks=k_list, device=device)
    emit({"projector": projector_path, "kind": proj.kind, "metadata": proj.metadata_, "n_queries": int(X.shape[0]),
          "n_gallery": int(Y.shape[0]), **res.to_dict(),
          "provenance": result_provenance(projector=Path(projector_path), x=Path(x_path), y=Path(y_path),
                                          positives=None if positives_path is None else Path(positives_path),
                                          x_encoder=proj.metadata_.get("x_encoder"),
                                          y_encoder=proj.metadata_.get("y_encoder"), ks=list(k_list))})


# ---------------------------------------------------------------------------------------------------- match --
@main.command("match")
@click.argument("x_path", metavar="X", required=False)
@click.argument("y_path", metavar="Y", required=False)
@click.option("--method", default="faq", show_default=True,
              help="faq, local_cka, gw, entropic_gw, fused_gw, procrustes, lstsq, relative or asif "
                   "(`unialign match --list` says what each needs).")
@click.option("--known-pairs", "known_pairs_path", default=None,
              help="CSV of known pairs 'i,j' (row i of X is row j of Y). With it, X and Y may be unpaired and the "
                   "matching itself is printed; without it, X and Y must be paired and the evaluation protocol runs.")
@click.option("--n-known", default=30, show_default=True, type=click.IntRange(min=0),
              help="Evaluation: known pairs per split (given to the method).")
@click.option("--n-query", default=None, type=click.IntRange(min=1),
              help="Evaluation: hidden items to match per split, drawn besides the known pairs, so each split draws "
                   "n-known + n-query items [default: 100].")
@click.option("--n-items", default=None, type=click.IntRange(min=2),
              help="Evaluation: items per split in all (known pairs + hidden items), as papers count them; the "
                   "alternative to --n-query.")
@click.option("--splits", default=5, show_default=True, type=click.IntRange(min=1),
              help="Evaluation: number of splits.")
@click.option("--known-selection", type=click.Choice(["random", "kmeans"]), default="random", show_default=True,
              help="Evaluation: known pairs drawn at random or as k-means medoids of X.")
@click.option("--kernel", default=None, help="linear, cosine (centred cosine), rbf or centered_rbf.")
@click.option("--n-init", default=None, type=int, help="faq: restarts, batched.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the splits and of the restarts.")
@click.option("--device", default=None, help="Compute device of the method, e.g. cuda (default CPU).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Any other setting of the method, e.g. -p transport=true -p two_opt=true.")
@click.option("--list", "list_only", is_flag=True, help="List the methods with what each needs, and exit.")
@click.option("--seeds", "old_known_pairs", default=None, hidden=True)
@click.option("--n-seeds", "old_n_known", default=None, type=click.IntRange(min=0), hidden=True)
@click.option("--seed-selection", "old_selection", type=click.Choice(["random", "kmeans"]), default=None, hidden=True)
@handle_errors
def match_command(x_path, y_path, method, known_pairs_path, n_known, n_query, n_items, splits, known_selection,
                  kernel, n_init, seed, device, params, list_only, old_known_pairs, old_n_known,
                  old_selection) -> None:
    """Match the rows of X to the rows of Y without training (seeded graph matching, local CKA, OT, Procrustes).

    \b
    Evaluate on paired features (row i of X and of Y are the same item): each split draws --n-known known pairs
    and --n-query hidden items (130 items for 30 + 100), and scores the share of hidden items matched right:
      unialign match en_minilm.npy de_e5.npy --method faq --n-known 30 --n-items 100 --splits 5
    Match unpaired features given a few known pairs:
      unialign match images.npy captions.npy --method faq --known-pairs pairs.csv
    """
    from .app.match import match_files, method_table

    if list_only:
        emit(method_table())
        return
    if x_path is None or y_path is None:
        raise click.UsageError("give two feature files X and Y (or --list to see the methods)")
    known_pairs_path = renamed(old_known_pairs, "--seeds", known_pairs_path, "--known-pairs", "known_pairs_path")
    n_known = renamed(old_n_known, "--n-seeds", n_known, "--n-known", "n_known")
    known_selection = renamed(old_selection, "--seed-selection", known_selection, "--known-selection",
                              "known_selection")
    if n_items is not None and n_query is not None:
        raise click.UsageError("give --n-items (known pairs + hidden items) or --n-query (hidden items), not both")
    if n_items is not None:
        if n_items <= n_known:
            raise click.BadParameter(f"{n_items} items leave none to match besides the {n_known} known pairs; "
                                     "raise --n-items or lower --n-known", param_hint="--n-items")
        n_query = n_items - n_known
    options = parse_key_values(params, reserved={
        "X": "", "Y": "", "method": "--method", "partial_match": "--known-pairs", "rng": "--seed",
        "n_known": "--n-known", "n_seeds": "--n-known", "n_query": "--n-query", "n_splits": "--splits",
        "known_selection": "--known-selection", "seed_selection": "--known-selection"})
    for name, value in (("kernel", kernel), ("n_init", n_init), ("device", device)):
        if value is not None:
            options[name] = value
    emit(match_files(x_path, y_path, method, known_pairs=known_pairs_path, n_known=n_known,
                     n_query=100 if n_query is None else n_query, n_splits=splits, known_selection=known_selection,
                     rng=seed, params=options, **producer()))


# --------------------------------------------------------------------------------------------------- select --
@main.command("select")
@click.option("--dataset", "dataset_spec", required=True, metavar="SPEC", help="The items every encoder sees.")
@click.option("--encoder", "encoder_specs", multiple=True, metavar="SPEC[@FIELD]",
              help="A candidate encoder; @FIELD picks the field it reads (default: the dataset's field of its "
                   "modality). Repeat for each candidate.")
@click.option("--features", "feature_files", multiple=True, metavar="NAME=FILE",
              help="A candidate given as precomputed features on the same items (row i = item i).")
@click.option("--metric", default="linear_cka", show_default=True, help="Any metric of `unialign similarity --list`.")
@click.option("--null", "n_permutations", type=click.IntRange(min=0), default=0,
              help="Permutations for each pair's null (0: none).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the permutation null.")
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
    from .app.embed import select_encoders

    if len(encoder_specs) + len(feature_files) < 2:
        raise click.UsageError("give at least two candidates (--encoder SPEC and/or --features NAME=FILE)")
    emit(select_encoders(dataset_spec, encoder_specs, parse_key_values(feature_files, "--features", python_names=False),
                         metric=metric, n_permutations=n_permutations, rng=seed,
                         dataset_options=parse_key_values(dataset_options, "--dataset-option"), cache_dir=cache_dir,
                         show_progress=progress, **producer()))


# ----------------------------------------------------------------------------------------------------- demo --
@main.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="unialign-demo", show_default=True,
              help="Folder for report.md, report.json and the PNG plots.")
@click.option("--quick", is_flag=True, help="200 concepts, fewer permutations, known-pair counts and epochs (about a minute).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the class subset, the seen/unseen split, the permutations, the matching splits and the "
                   "MLP projector.")
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
    from .app.demo import run_demo, summary_lines

    result = run_demo(out_dir, quick=quick, cache_dir=cache_dir, rng=seed, show_progress=progress,
                      say=say if progress else None, threads=threads or None)
    for line in summary_lines(result):
        say(line)
    emit(result.to_dict())


# ------------------------------------------------------------------------------------------------- zeroshot --
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
    from .app.zeroshot import zeroshot_from_projector

    emit(zeroshot_from_projector(
        projector_path, images, classes=classes_spec, templates=templates, class_features=class_features,
        encoder=encoder_spec, text_encoder=text_spec, top_k=top_k if given("top_k") else None,
        batch_size=batch_size, device=device, cache_dir=cache_dir, show_progress=progress, **producer()))


# ------------------------------------------------------------------------------------------------------ run --
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
    `align.app.experiment` for the format.
    """
    import dataclasses

    from .app.experiment import check_summary, load_config, run_experiment

    cfg = load_config(config_path, warn=say)
    if out_dir is not None:
        cfg = dataclasses.replace(cfg, out=Path(out_dir))
    if check:
        emit(check_summary(cfg))
        return
    emit(run_experiment(cfg, show_progress=progress, say=say if progress else None).to_dict())


if __name__ == "__main__":  # python -m align.cli
    main()
