"""Provenance: what produced a result (library versions, command, input files, encoder specs, seeds).

Every JSON result of the command line carries ``"provenance": provenance(**inputs)`` and every saved projector
stores one, so a number read months later says which unialign, which files (by sha256) or which encoders and
datasets, and which seeds made it. Feature files written by ``unialign embed --out`` get a sidecar
``<file>.provenance.json`` (and ``.safetensors`` files the same record in their header); :func:`recorded_encoder`
reads it back, so applying a projector to features of another encoder than it was trained on can be refused.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ._io import atomic_write, sha256_file, split_feature_path, to_jsonable

log = logging.getLogger(__name__)

__all__ = ["SIDECAR_SUFFIX", "check_trained_on", "file_record", "provenance", "recorded_encoder",
           "write_feature_sidecar"]

#: ``x.npy`` -> ``x.npy.provenance.json``
SIDECAR_SUFFIX = ".provenance.json"

_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, so one run hashes a file once


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _sha256(path: Path) -> str:
    """sha256 of a file, once per (path, size, mtime) in this process; a feature-cache file's digest is read from its
    entry's ``meta.json`` (written when the entry was completed) instead of hashing gigabytes again."""
    st = path.stat()
    token = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if token not in _HASHES:
        _HASHES[token] = _cache_digest(path) or sha256_file(path)
    return _HASHES[token]


def _cache_entry(path: Path) -> tuple[dict, dict] | None:
    """``(meta, file entry)`` of the feature-cache entry ``path`` belongs to, or None. The cache writes
    ``meta.json`` last, so a file modified after it (even to the same size) is not described by it."""
    meta_path = path.parent / "meta.json"
    try:
        if not meta_path.is_file() or path.stat().st_mtime_ns > meta_path.stat().st_mtime_ns:
            return None
        meta = json.loads(meta_path.read_text())
        for entry in (meta.get("files") or {}).values():
            if entry.get("file") == path.name and entry.get("bytes") == path.stat().st_size:
                return meta, entry
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _cache_digest(path: Path) -> str | None:
    found = _cache_entry(path)
    return str(found[1]["sha256"]) if found and found[1].get("sha256") else None


def file_record(path: str | os.PathLike) -> dict:
    """``{"path", "sha256", "bytes"}`` of an input file (``FILE:KEY`` adds ``"key"``), plus the encoder the file
    records, if any; a path that does not exist gives ``{"path", "missing": True}``."""
    path, key = split_feature_path(path)
    if not path.is_file():
        return {"path": str(path), "missing": True}
    out: dict[str, Any] = {"path": str(path), "sha256": _sha256(path), "bytes": path.stat().st_size}
    if key is not None:
        out["key"] = key
    encoder = recorded_encoder(path)
    if encoder is not None:
        out["encoder"] = encoder
    return out


def provenance(**inputs: Any) -> dict:
    """A plain-JSON record of what produced a result.

    Parameters
    ----------
    **inputs
        Whatever made the result, by name: ``os.PathLike`` values (``pathlib.Path``) are input files and are
        recorded with their sha256 and size (``Path("f.npz:key")`` picks an array, as on the command line);
        strings (encoder and dataset specs), numbers (seeds), and lists / dicts of them are kept as they are;
        a ``numpy.random.Generator`` is recorded by its state. ``command`` is the conventional key for the command
        line that ran.

    Returns
    -------
    dict
        ``{"unialign": version, "python", "numpy", "torch", "created": UTC time, **inputs}``; ``torch`` is the
        installed version (None when torch is absent).

    Examples
    --------
    >>> from pathlib import Path
    >>> p = provenance(command="unialign similarity", x=Path("x.npy"), metric="linear_cka", seed=0)  # doctest: +SKIP
    >>> p["x"]["sha256"]                                                                                 # doctest: +SKIP
    """
    import numpy as np

    from . import __version__

    record: dict[str, Any] = {
        "unialign": _version("unialign") or __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": _version("torch"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for name, value in inputs.items():
        if name in record:
            raise ValueError(f"provenance input {name!r} clashes with a field the record sets itself; rename it")
        record[name] = to_jsonable(value, path=file_record, finite=False)
    return record


def command_line(argv: list[str] | None = None) -> str:
    """The command that is running, shell-quoted: ``unialign demo --quick`` when the CLI runs (as the ``unialign``
    script or ``python -m align.cli``), else the Python command line (``python script.py ...``)."""
    import shlex

    argv = list(sys.argv if argv is None else argv)
    head = Path(argv[0]).name if argv else ""
    if head == "cli.py" or head.startswith("unialign"):
        return shlex.join(["unialign", *argv[1:]])
    return shlex.join(["python", *argv]) if argv else "python"


# ---- the encoder a feature file records ---------------------------------------------------------------------------
def write_feature_sidecar(path: str | os.PathLike, record: dict) -> Path:
    """Write ``record`` (``provenance(encoder=…, …)``) beside a feature file as ``<file>.provenance.json``, with the
    file's sha256, atomically. :func:`recorded_encoder` trusts it only while the file still has that sha256."""
    path = Path(path)
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    body = dict(record, file={"name": path.name, "sha256": _sha256(path), "bytes": path.stat().st_size})
    with atomic_write(sidecar, "w") as f:
        json.dump(body, f, indent=2, default=str)
    return sidecar


def recorded_encoder(path: str | os.PathLike) -> str | None:
    """The spec of the encoder that made the features in ``path``, when the file records it; else None.

    Looked up, in order: the sidecar ``<file>.provenance.json`` written by ``unialign embed --out`` (ignored when
    the file's sha256 no longer matches: the file was overwritten since); the ``unialign.encoder`` entry of a
    ``.safetensors`` header; the ``meta.json`` of the feature-cache entry the file sits in (unless the file was
    modified after it).
    """
    path, _ = split_feature_path(path)
    if not path.is_file():
        return None
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if sidecar.is_file():
        try:
            body = json.loads(sidecar.read_text())
            if body.get("file", {}).get("sha256") == _sha256(path) and body.get("encoder"):
                return str(body["encoder"])
            log.warning("ignoring %s: it describes another version of %s", sidecar, path.name)
        except (OSError, ValueError, AttributeError):
            log.warning("ignoring unreadable %s", sidecar)
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                spec = (f.metadata() or {}).get("unialign.encoder")
            if spec:
                return spec
        except Exception:  # noqa: BLE001 - a corrupt file is reported by load_features, not here
            return None
    found = _cache_entry(path)
    if found and isinstance(found[0].get("encoder"), dict) and found[0]["encoder"].get("spec"):
        return str(found[0]["encoder"]["spec"])
    return None


def check_trained_on(meta: dict, *, x_encoder: str | None = None, y_encoder: str | None = None,
                     where: str = "this projector", action: str = "applied to features of") -> None:
    """Refuse a source / target encoder other than the ones a projector's metadata says it was trained on.

    Parameters
    ----------
    meta : dict
        The projector's ``metadata_`` (``x_encoder`` / ``y_encoder`` entries, when recorded).
    x_encoder, y_encoder : str, optional
        The specs of the encoders whose features the projector is about to meet; None (or no recorded spec) skips
        that side.
    where : str
        What the message calls the projector (``"projector 'p.pt'"``).
    action : str
        What is being done with it (``"applied to features of"``, ``"stitched to"``).

    Raises
    ------
    ValueError
        When a given spec differs from the recorded one; the message names both and the fix.
    """
    for side, given, role in (("x", x_encoder, "source"), ("y", y_encoder, "target")):
        recorded = (meta or {}).get(f"{side}_encoder")
        if given is None or recorded is None or str(given) == str(recorded):
            continue
        raise ValueError(
            f"{where} was trained on {role} features of encoder {recorded!r} but is {action} {given!r}; "
            f"use {recorded!r} features, or refit the projector on {given!r} features"
        )
