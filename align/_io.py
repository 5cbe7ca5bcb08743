"""Files: atomic writes and feature arrays on disk (``.npy``, ``.npz``, ``.safetensors``).

Every file unialign writes (features, caches, checkpoints, results) goes through :func:`atomic_write`: the bytes
land in a temporary file in the same folder, are flushed and fsynced, and only then renamed over the target, so a
kill or a full disk never leaves a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write", "feature_shape", "json_default", "load_features", "save_features", "sha256_file",
           "split_feature_path", "to_jsonable", "FEATURE_SUFFIXES"]

FEATURE_SUFFIXES = (".npy", ".npz", ".safetensors")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; on success fsync and rename it to ``path``, on error remove it.

    >>> with atomic_write("out.npy") as f:          # doctest: +SKIP
    ...     np.save(f, X)
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {str(path)!r}: it is a directory; give a file name inside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the final file the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """sha256 hex digest of a file's bytes, read in chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def to_jsonable(obj: Any, *, path: Callable[[Any], Any] = os.fspath, finite: bool = True) -> Any:
    """Plain JSON values of ``obj``: the one converter of the library and the command line.

    Mappings become dicts with ``str`` keys, tuples and lists become lists, objects with ``to_dict()`` their dict,
    numpy scalars and arrays Python numbers and lists, a ``numpy.random.Generator`` its bit generator's state,
    ``os.PathLike`` values ``path(value)`` (default: the path string; provenance records files by sha256), and
    anything else its ``repr``. With ``finite`` a NaN becomes ``None`` and an infinity ``"inf"`` / ``"-inf"``, so
    the output is strict JSON.
    """
    def conv(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            if finite and not math.isfinite(value):
                return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
            return value
        if isinstance(value, Mapping):
            return {str(k): conv(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [conv(v) for v in value]
        if isinstance(value, np.generic):
            return conv(value.item())
        if isinstance(value, np.ndarray):
            return conv(value.tolist())
        if isinstance(value, os.PathLike):
            return path(value)
        if isinstance(value, np.random.Generator):
            return {"bit_generator": type(value.bit_generator).__name__, "state": value.bit_generator.state["state"]}
        if hasattr(value, "to_dict") and not isinstance(value, type):
            return conv(value.to_dict())
        return repr(value)

    return conv(obj)


def json_default(obj):
    """``json.dump(..., default=json_default)``: :func:`to_jsonable` for what ``json`` cannot write itself (numpy
    scalars and arrays, paths, …), keeping non-finite floats as ``json`` writes them."""
    return to_jsonable(obj, finite=False)


def save_features(path: str | os.PathLike, X: np.ndarray, *, key: str = "features") -> Path:
    """Write a 2-D feature array atomically as ``.npy``, ``.npz`` (under ``key``) or ``.safetensors`` (``key``)."""
    path = Path(path)
    X = np.ascontiguousarray(X)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_write(path) as f:
            np.save(f, X, allow_pickle=False)
    elif suffix == ".npz":
        with atomic_write(path) as f:
            np.savez(f, **{key: X})
    elif suffix == ".safetensors":
        from safetensors.numpy import save

        with atomic_write(path) as f:
            f.write(save({key: X}))
    else:
        raise ValueError(f"`out` must end in one of {', '.join(FEATURE_SUFFIXES)}, got {str(path)!r}")
    return path


def split_feature_path(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``FILE:KEY`` (how the command line picks one array of a multi-array file) -> ``(FILE, KEY)``; a path that
    exists as written, or has no ``:`` in its name, is returned whole with ``KEY`` None."""
    path = Path(path)
    if not path.exists() and ":" in path.name:
        name, key = path.name.rsplit(":", 1)
        return path.with_name(name), key
    return path, None


def load_features(path: str | os.PathLike, *, key: str | None = None, mmap: bool = True) -> np.ndarray:
    """Read a feature array from ``.npy`` (memory-mapped by default), ``.npz`` or ``.safetensors``.

    ``key`` picks the array in a multi-array ``.npz`` / ``.safetensors`` file; with one array it may be omitted.
    Write ``path:key`` on the command line. A missing, truncated or corrupt file raises ``ValueError`` /
    ``FileNotFoundError`` with a one-line message, never a half-read array.
    """
    path = Path(path)
    if key is None:
        path, key = split_feature_path(path)
    if not path.exists():
        raise FileNotFoundError(f"feature file {str(path)!r} does not exist; check the path or run `unialign embed`")
    if path.is_dir():
        raise ValueError(f"feature file {str(path)!r} is a directory; give a .npy, .npz or .safetensors file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            _check_npy_size(path)
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arr = z[pick_array(z.files, key, path)]
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                arr = f.get_tensor(pick_array(list(f.keys()), key, path))
        else:
            raise ValueError(
                f"feature file {str(path)!r} has an unknown suffix; use one of {', '.join(FEATURE_SUFFIXES)}"
            )
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        if isinstance(exc, FileNotFoundError) or str(exc).startswith("feature file"):
            raise
        raise ValueError(
            f"feature file {str(path)!r} is truncated or corrupt ({type(exc).__name__}: {exc}); recreate it"
        ) from None
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"feature file {str(path)!r} could not be read ({type(exc).__name__}: {exc}); recreate it") from None
    return arr


def _read_npy_header(f) -> tuple[tuple, np.dtype]:
    """(shape, dtype) from an open ``.npy`` stream positioned at its start; the stream is left after the header."""
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    return tuple(shape), dtype


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "float32", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def feature_shape(path: str | os.PathLike, key: str | None = None) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of a feature array without reading its data: the ``.npy`` header (with the size check of
    :func:`load_features`), the header of the ``.npz`` member, or the ``.safetensors`` header.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        An unknown suffix, a missing or ambiguous ``key``, or a truncated / corrupt file; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = load_features(path, key=key, mmap=True)
        return tuple(arr.shape), arr.dtype
    if suffix == ".npz":
        try:
            with zipfile.ZipFile(path) as z:
                names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
                name = pick_array(names, key, path)
                with z.open(name + ".npy") as f:
                    return _read_npy_header(f)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            if str(exc).startswith("feature file"):
                raise
            raise ValueError(f"feature file {str(path)!r} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                             "recreate it") from None
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                name = pick_array(list(f.keys()), key, path)
                sl = f.get_slice(name)
                shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"feature file {str(path)!r} could not be read ({type(exc).__name__}: {exc}); "
                             "recreate it") from None
        return shape, np.dtype(_SAFETENSORS_DTYPES.get(str(dtype).upper(), "object"))
    raise ValueError(f"feature file {str(path)!r} has an unknown suffix; use {', '.join(FEATURE_SUFFIXES)}")


def _check_npy_size(path: Path) -> None:
    """A ``.npy`` file must hold exactly the bytes its header promises: numpy reads a file with extra bytes, so a
    damaged shape in the header (``(7, 3)`` -> ``(7, 2)``) would otherwise load as a smaller, wrong array."""
    with open(path, "rb") as f:
        shape, dtype = _read_npy_header(f)
        expected = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if not dtype.hasobject and size != expected:
        raise ValueError(
            f"feature file {str(path)!r} is truncated or corrupt: {size} bytes on disk, its header promises {expected} "
            f"for shape {shape} {dtype}; recreate it"
        )


def pick_array(names: list[str], key: str | None, path: Path) -> str:
    """The name of the array to read from a multi-array feature file (``.npz``, ``.safetensors``): ``key`` if given,
    else the only one; a ``ValueError`` naming the arrays otherwise."""
    if key is not None:
        if key not in names:
            raise ValueError(f"feature file {str(path)!r} has no array {key!r}; it has {sorted(names) or 'none'}")
        return key
    if len(names) != 1:
        raise ValueError(f"feature file {str(path)!r} holds {len(names)} arrays {sorted(names)}; pick one as {path}:KEY")
    return names[0]
