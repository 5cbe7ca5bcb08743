"""Helpers shared by the dataset loaders: paths, options, text files, images and content hashes."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
from pathlib import Path
from typing import Iterable

__all__ = [
    "IMAGE_SUFFIXES",
    "check_options",
    "existing_file",
    "existing_dir",
    "open_text",
    "read_bytes",
    "open_rgb",
    "hash_texts",
    "hash_files",
]

#: File suffixes treated as images (compared case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")

_CHUNK = 1 << 20


def check_options(spec: str, options: dict, valid: Iterable[str]) -> None:
    """Reject options a loader does not understand, listing the ones it does."""
    valid = sorted(valid)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        allowed = ", ".join(valid) if valid else "none"
        raise ValueError(f"dataset {spec!r} does not take option(s) {', '.join(unknown)}; valid options: {allowed}")


def existing_file(path: str | os.PathLike, what: str, spec: str) -> Path:
    """``path`` as a ``Path`` (``~`` expanded), or ``FileNotFoundError`` / ``ValueError`` naming the fix."""
    if not str(path).strip():
        raise ValueError(f"dataset spec {spec!r} names no {what}; write it after the colon")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist (dataset {spec!r}); check the path")
    if p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a directory, expected a file (dataset {spec!r})")
    return p


def existing_dir(path: str | os.PathLike, what: str, spec: str) -> Path:
    """``path`` as a ``Path`` that is a directory, or ``FileNotFoundError`` / ``ValueError`` naming the fix."""
    if not str(path).strip():
        raise ValueError(f"dataset spec {spec!r} names no {what}; write it after the colon")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist (dataset {spec!r}); check the path")
    if not p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is not a directory (dataset {spec!r})")
    return p


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when it ends in ``.gz``; a broken gzip raises ``ValueError``."""
    if path.suffix.lower() == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as exc:
            raise ValueError(f"{str(path)!r} is not a valid gzip file ({exc}); re-download or re-compress it") from None
    return path.read_bytes()


def open_text(path: Path) -> str:
    """The UTF-8 text of ``path`` (``.gz`` allowed); undecodable bytes raise ``ValueError`` naming the line."""
    data = read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{str(path)!r} is not UTF-8 text (bad byte at line {line}); convert it, e.g. with iconv -t utf-8"
        ) from None
    return text


def open_rgb(source: Path | bytes, name: str | None = None):
    """Decode an image file (a path, or its bytes) into an RGB ``PIL.Image``; failures raise ``ValueError``."""
    from PIL import Image, UnidentifiedImageError

    label = name if name is not None else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image {label!r} does not exist; check the dataset path (or its image_root)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(
            f"cannot read image {label!r} ({type(exc).__name__}: {exc}); replace or delete the file"
        ) from None


def _update_len(h, b: bytes) -> None:
    h.update(len(b).to_bytes(8, "little"))
    h.update(b)


def hash_texts(kind: str, texts: Iterable[str]) -> str:
    """sha256 over a tag and a sequence of strings (length-prefixed, so boundaries count)."""
    h = hashlib.sha256()
    _update_len(h, kind.encode())
    for t in texts:
        _update_len(h, t.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def hash_files(kind: str, names: Iterable[str], paths: Iterable[Path], *, missing_hint: str = "") -> str:
    """sha256 over ``(name, file bytes)`` pairs in order; file bytes are streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    _update_len(h, kind.encode())
    for name, path in zip(names, paths):
        _update_len(h, name.encode("utf-8", "surrogatepass"))
        try:
            size = path.stat().st_size
            h.update(size.to_bytes(8, "little"))
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            raise FileNotFoundError(f"image {str(path)!r} does not exist{missing_hint}") from None
        except IsADirectoryError:
            raise ValueError(f"image {str(path)!r} is a directory, expected an image file") from None
    return h.hexdigest()
