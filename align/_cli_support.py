"""What every ``unialign`` command shares: one-line errors, ``KEY=VALUE`` options, renamed options, JSON output and
the provenance of the running command. :mod:`align.cli` re-exports these names."""
from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from .exceptions import UnialignError

__all__ = ["EXPECTED_ERRORS", "emit", "emit_line", "given", "handle_errors", "parse_key_values", "producer",
           "renamed", "result_provenance", "say"]

EXPECTED_ERRORS = (UnialignError, OSError)
_OWN_PACKAGES = ("align", "matching", "projectors")


def _raised_by_unialign(exc: BaseException) -> bool:
    """True for a ``ValueError`` whose ``raise`` statement is in unialign's own code (bad input told on purpose);
    False for one that comes out of numpy, torch or another third party (a bug in how we called it)."""
    tb = exc.__traceback__
    module = None
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        tb = tb.tb_next
    return bool(module) and module.split(".")[0] in _OWN_PACKAGES


def _expected(exc: BaseException) -> bool:
    return isinstance(exc, EXPECTED_ERRORS) or (isinstance(exc, ValueError) and _raised_by_unialign(exc))


def emit(obj: Any, *, indent: int | None = 2) -> None:
    """Print one JSON document to stdout."""
    from ._io import to_jsonable

    click.echo(json.dumps(to_jsonable(obj), indent=indent))


def emit_line(obj: Any) -> None:
    """Print one JSON line to stdout (for streams such as training curves) and flush it."""
    from ._io import to_jsonable

    click.echo(json.dumps(to_jsonable(obj)))
    sys.stdout.flush()


def say(line: str) -> None:
    """One line of progress on stderr."""
    click.echo(line, err=True)


def _missing_package(exc: BaseException) -> str | None:
    """The top-level name of a third-party package that is not installed (``import ot`` without POT), else None;
    a failed import of unialign's own modules is a bug, not a missing package."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    return None if top in _OWN_PACKAGES else top


def handle_errors(func: Callable) -> Callable:
    """Turn expected errors into ``error: <one line>`` and exit status 1 (unless ``--debug``); let bugs through."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = (ctx.find_root().obj or {}).get("debug", False)
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, OSError, ModuleNotFoundError) as exc:
            missing = _missing_package(exc)
            if debug or not (_expected(exc) or missing):
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


def renamed(old_value: Any, old: str, new_value: Any, new: str, new_param: str) -> Any:
    """The value of a renamed option: the new one, or the old hidden spelling with a one-line warning on stderr."""
    if old_value is None:
        return new_value
    ctx = click.get_current_context()
    if ctx.get_parameter_source(new_param) not in (None, click.core.ParameterSource.DEFAULT):
        raise click.UsageError(f"{old} is the old name of {new}; give only {new}")
    click.echo(f"warning: {old} is deprecated and will be removed; use {new}", err=True)
    return old_value


def result_provenance(**inputs: Any) -> dict:
    """``align._provenance.provenance`` for the running command: its name and parsed options, the unialign / numpy /
    torch versions, and ``inputs`` (``Path`` values are input files, recorded with their sha256)."""
    from ._provenance import provenance

    return provenance(**producer(), **inputs)


def producer() -> dict:
    """``command`` and ``options`` of the running command, as every provenance record names them."""
    ctx = click.get_current_context()
    return {"command": f"unialign {ctx.info_name}", "options": dict(ctx.params)}


def given(name: str) -> bool:
    return click.get_current_context().get_parameter_source(name) != click.core.ParameterSource.DEFAULT
