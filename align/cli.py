"""The ``unialign`` command line: JSON on stdout, logs and progress on stderr.

Every command prints one JSON document (or JSON lines for streams such as training curves) to stdout. Expected
errors (bad input, missing files, unknown names) end with exit status 1 and a one-line ``error: …`` message on
stderr; click's usage errors end with status 2. ``--debug`` shows the traceback instead.

This is the only module of ``align`` that imports ``matching`` or ``projectors``.
"""
from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any, Callable

import click
import numpy as np

from . import __version__

log = logging.getLogger("align")

# Errors a user can fix from the message alone; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError, ImportError, KeyError,
                   OSError)


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


def handle_errors(func: Callable) -> Callable:
    """Turn expected errors into ``error: <one line>`` and exit status 1 (unless ``--debug``)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = (ctx.find_root().obj or {}).get("debug", False)
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except EXPECTED_ERRORS as exc:
            if debug:
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if isinstance(exc, KeyError):
                message = str(exc.args[0]) if exc.args else "KeyError"
            click.echo(f"error: {message}", err=True)
            ctx.exit(1)

    return wrapper


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
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# --------------------------------------------------------------------------------------------------------------
# Commands. Each command is one function below, registered on `main`; add new commands in their own section and
# keep the imports of heavy modules (torch, matching, projectors) inside the command body so `--help` stays fast.
# --------------------------------------------------------------------------------------------------------------
