"""3D shapes as point clouds: mesh and point-file readers, surface sampling, and ``pointcloud:DIR``.

Readers
-------
``.off`` (ModelNet, including its ``OFF<nv> <nf> <ne>`` first-line quirk), ``.ply`` (ASCII and binary, vertices
``x y z`` and optional faces), ``.obj`` (``v`` / ``f`` lines), ``.txt`` (ModelNet40's resampled ``x,y,z[,nx,ny,nz]``
lines) and ``.npy`` (an ``(n, >=3)`` array). A file with faces is a mesh: :func:`sample_surface` draws points
uniformly on its surface (triangles chosen by area, uniform barycentric coordinates). A file without faces is a
point cloud and is returned as is. Bad files fail with a message naming the file and the fix: no vertices (empty),
faces of zero total area or indices out of range (degenerate), NaN / inf coordinates.

``pointcloud:DIR``
------------------
Every shape file under DIR in sorted relative-path order. Labels come from the first sub-folder (the ModelNet
layout ``DIR/<class>/<split>/<name>.off``); option ``split`` keeps files with that folder in their path. Captions
come from option ``captions`` (or ``DIR/captions.{csv,tsv,json}`` when present): CSV/TSV with columns ``file`` (the
relative path, or the file stem) and ``caption``, or a JSON object mapping the same keys to captions. Meshes are
sampled to ``n_points`` points with a generator seeded by ``seed`` and the file's relative path, so a shape's points
never depend on the order or number of files.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ._base import Dataset
from ._common import check_options, existing_dir, existing_file, hash_files, hash_texts, open_text

log = logging.getLogger(__name__)

__all__ = ["POINT_SUFFIXES", "read_shape", "sample_surface", "mesh_area", "PointCloudDataset", "load_pointcloud"]

#: File suffixes read as 3D shapes (compared case-insensitively).
POINT_SUFFIXES = (".off", ".ply", ".obj", ".txt", ".npy")


def _bad(path: Any, what: str) -> ValueError:
    return ValueError(f"3D file {str(path)!r} {what}; remove or replace the file")


def _read_off(path: Path) -> tuple[np.ndarray, np.ndarray]:
    tokens_lines = [ln.split("#", 1)[0].strip() for ln in open_text(path).splitlines()]
    lines = [ln for ln in tokens_lines if ln]
    if not lines or not lines[0].upper().startswith("OFF"):
        raise _bad(path, "is not an OFF file (first line must be OFF)")
    head = lines[0][3:].split()
    body = lines[1:]
    if not head:
        if not body:
            raise _bad(path, "has no vertex/face counts")
        head, body = body[0].split(), body[1:]
    try:
        nv, nf = int(head[0]), int(head[1])
        verts = np.asarray([body[k].split()[:3] for k in range(nv)], dtype=np.float64).reshape(nv, 3)
        faces = []
        for k in range(nv, nv + nf):
            parts = [int(x) for x in body[k].split()]
            m = parts[0]
            poly = parts[1:1 + m]
            if m < 3 or len(poly) != m:
                raise ValueError(f"face line {k - nv + 1} lists {len(poly)} of {m} indices")
            faces += [(poly[0], poly[j], poly[j + 1]) for j in range(1, m - 1)]
    except (IndexError, ValueError) as exc:
        raise _bad(path, f"is a malformed OFF file ({exc})") from None
    return verts, np.asarray(faces, dtype=np.int64).reshape(-1, 3)


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise _bad(path, "is not a PLY file (no 'ply' magic or end_header)")
    header = data[:end].decode("ascii", "replace").splitlines()
    body = data[data.index(b"\n", end) + 1:]
    fmt, elements = None, []
    for line in header:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            elements.append([parts[1], int(parts[2]), []])
        elif parts[0] == "property" and elements:
            elements[-1][2].append(parts[1:])
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise _bad(path, f"has an unknown PLY format {fmt!r}")
    verts = faces = None
    try:
        if fmt == "ascii":
            rows = body.decode("ascii", "replace").split("\n")
            pos = 0
            for name, count, props in elements:
                block = [r.split() for r in rows[pos:pos + count]]
                pos += count
                if name == "vertex":
                    names = [p[-1] for p in props]
                    cols = [names.index(c) for c in ("x", "y", "z")]
                    verts = np.asarray([[r[c] for c in cols] for r in block], dtype=np.float64).reshape(-1, 3)
                elif name == "face":
                    tris = []
                    for r in block:
                        m = int(r[0])
                        poly = [int(x) for x in r[1:1 + m]]
                        tris += [(poly[0], poly[j], poly[j + 1]) for j in range(1, m - 1)]
                    faces = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
        else:
            bo = "<" if fmt == "binary_little_endian" else ">"
            offset = 0
            for name, count, props in elements:
                if all(p[0] != "list" for p in props):
                    dt = np.dtype([(p[-1], bo + _PLY_TYPES[p[0]]) for p in props])
                    arr = np.frombuffer(body, dtype=dt, count=count, offset=offset)
                    offset += count * dt.itemsize
                    if name == "vertex":
                        verts = np.stack([arr[c].astype(np.float64) for c in ("x", "y", "z")], axis=1)
                    continue
                if name != "face" or len(props) != 1:
                    raise ValueError("list properties are read only for a face element with one property")
                _, ctype, itype, _ = props[0]
                cdt, idt = np.dtype(bo + _PLY_TYPES[ctype]), np.dtype(bo + _PLY_TYPES[itype])
                tris = []
                for _ in range(count):
                    m = int(np.frombuffer(body, cdt, 1, offset)[0])
                    offset += cdt.itemsize
                    poly = np.frombuffer(body, idt, m, offset).astype(np.int64)
                    offset += m * idt.itemsize
                    tris += [(poly[0], poly[j], poly[j + 1]) for j in range(1, m - 1)]
                faces = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    except (ValueError, IndexError, KeyError) as exc:
        raise _bad(path, f"is a malformed PLY file ({exc})") from None
    if verts is None:
        raise _bad(path, "has no vertex element")
    return verts, (faces if faces is not None else np.zeros((0, 3), dtype=np.int64))


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    verts, faces = [], []
    try:
        for line in open_text(path).splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                if len(parts) < 4:
                    raise ValueError(f"vertex line {line.strip()!r} needs x y z")
                verts.append([float(x) for x in parts[1:4]])
            elif parts[0] == "f":
                poly = [int(p.split("/")[0]) for p in parts[1:]]
                poly = [p - 1 if p > 0 else len(verts) + p for p in poly]
                faces += [(poly[0], poly[j], poly[j + 1]) for j in range(1, len(poly) - 1)]
    except ValueError as exc:
        raise _bad(path, f"is a malformed OBJ file ({exc})") from None
    return np.asarray(verts, dtype=np.float64).reshape(-1, 3), np.asarray(faces, dtype=np.int64).reshape(-1, 3)


def _read_points_txt(path: Path) -> np.ndarray:
    rows = [ln.replace(",", " ").split() for ln in open_text(path).splitlines() if ln.strip()]
    try:
        pts = np.asarray([r[:3] for r in rows], dtype=np.float64)
        if pts.size and (pts.ndim != 2 or pts.shape[1] != 3):  # "x y" lines would reshape into wrong points
            raise ValueError(f"a line has {pts.shape[-1]} values, not 3")
    except ValueError as exc:
        raise _bad(path, f"is not a text point cloud of 'x y z' or 'x,y,z,…' lines ({exc})") from None
    return pts.reshape(-1, 3)


def read_shape(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices (n, 3) float64, triangles (m, 3) int64)`` of a 3D file; ``m == 0`` for point clouds.

    Raises ``ValueError`` naming the file for an unknown suffix, a malformed file, no vertices, non-finite
    coordinates, or face indices out of range.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".off":
        verts, faces = _read_off(path)
    elif suffix == ".ply":
        verts, faces = _read_ply(path)
    elif suffix == ".obj":
        verts, faces = _read_obj(path)
    elif suffix == ".txt":
        verts, faces = _read_points_txt(path), np.zeros((0, 3), dtype=np.int64)
    elif suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _bad(path, f"is not a readable .npy file ({type(exc).__name__}: {exc})") from None
        if arr.ndim != 2 or arr.shape[1] < 3:
            raise _bad(path, f"holds shape {arr.shape}; expected an (n, 3) or (n, >=3) array of points")
        verts, faces = np.asarray(arr[:, :3], dtype=np.float64), np.zeros((0, 3), dtype=np.int64)
    else:
        raise _bad(path, f"has an unknown suffix; use one of {', '.join(POINT_SUFFIXES)}")
    if len(verts) == 0:
        raise _bad(path, "is empty (no vertices)")
    if not np.all(np.isfinite(verts)):
        raise _bad(path, "has NaN or infinite coordinates")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
        raise _bad(path, f"has a face index out of range (vertices 0..{len(verts) - 1})")
    return verts, faces


def mesh_area(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area of every triangle, ``(m,)``."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def sample_surface(verts: np.ndarray, faces: np.ndarray, n_points: int, rng: np.random.Generator,
                   *, name: str = "mesh") -> np.ndarray:
    r"""``n_points`` points uniform on a triangle mesh's surface, ``(n_points, 3)`` float64.

    Triangle :math:`t` is drawn with probability :math:`A_t / \sum A`, then a point
    :math:`(1 - \sqrt{r_1}) a + \sqrt{r_1}(1 - r_2) b + \sqrt{r_1} r_2 c` (Osada et al. 2002).
    """
    area = mesh_area(verts, faces)
    total = float(area.sum())
    if not total > 0 or not np.isfinite(total):
        raise _bad(name, "is a degenerate mesh (its faces have zero total area)")
    tri = rng.choice(len(faces), size=n_points, p=area / total)
    r1, r2 = np.sqrt(rng.random(n_points))[:, None], rng.random(n_points)[:, None]
    a, b, c = verts[faces[tri, 0]], verts[faces[tri, 1]], verts[faces[tri, 2]]
    return (1 - r1) * a + r1 * (1 - r2) * b + r1 * r2 * c


def _read_captions(path: Path, spec: str) -> dict[str, str]:
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(open_text(path))
        except json.JSONDecodeError as exc:
            raise ValueError(f"captions file {str(path)!r} is not valid JSON ({exc})") from None
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise ValueError(f"captions file {str(path)!r} must be a JSON object mapping file -> caption string")
        return {str(k): v for k, v in table.items()}
    text = open_text(path)
    delim = "\t" if "\t" in text.split("\n", 1)[0] else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delim)
    if not reader.fieldnames or "file" not in reader.fieldnames or "caption" not in reader.fieldnames:
        raise ValueError(f"captions file {str(path)!r} needs a header with columns 'file' and 'caption', got "
                         f"{reader.fieldnames}")
    return {row["file"].strip(): row["caption"].strip() for row in reader}


class PointCloudDataset(Dataset):
    """3D shape files as items: field ``points`` (modality ``"pointcloud"``, an ``(n, 3)`` float32 array) and,
    with captions, ``caption`` (text). See the module docstring for layout, labels and sampling."""

    def __init__(self, root: Path, files: list[Path], *, n_points: int, seed: int, captions: dict | None,
                 spec: str):
        self.spec, self.root, self.files = spec, root, files
        self.n_points, self.seed = n_points, seed
        self._rel = [f.relative_to(root).as_posix() for f in files]
        self._captions = None
        if captions is not None:
            caps = []
            for rel, f in zip(self._rel, files):
                cap = captions.get(rel, captions.get(f.stem))
                if cap is None or not cap.strip():
                    raise ValueError(f"no caption for {rel!r} in the captions file (dataset {spec!r}); add a row "
                                     "'file,caption' for it")
                caps.append(cap.strip())
            self._captions = caps
        self.fields = ("points", "caption") if captions is not None else ("points",)
        self.default_field = "points"
        tops = [r.split("/")[0] for r in self._rel]
        if all("/" in r for r in self._rel):
            self.classes = sorted(set(tops))
            self.labels = np.asarray([self.classes.index(t) for t in tops], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def ids(self) -> list[str]:
        return list(self._rel)

    def modality(self, field: str | None = None) -> str:
        return "pointcloud" if self.resolve_field(field) == "points" else "text"

    def get(self, row: int, field: str | None = None) -> Any:
        field = self.resolve_field(field)
        if field == "caption":
            return self._captions[row]
        verts, faces = read_shape(self.files[row])
        if len(faces) == 0:
            return verts.astype(np.float32)
        rng = np.random.default_rng([self.seed, zlib.crc32(self._rel[row].encode())])
        return sample_surface(verts, faces, self.n_points, rng, name=self.files[row]).astype(np.float32)

    def texts(self, field: str = "caption") -> list[str]:
        self.resolve_field(field)
        return list(self._captions)

    def fingerprint(self, field: str | None = None) -> str:
        field = self.resolve_field(field)
        if field == "caption":
            return hash_texts("text", self._captions)
        h = hashlib.sha256(hash_files("pointcloud", self._rel, self.files).encode())
        h.update(f"n_points={self.n_points};seed={self.seed}".encode())
        return h.hexdigest()


def load_pointcloud(spec: str, rest: str, options: dict) -> PointCloudDataset:
    """``pointcloud:DIR`` with options ``split``, ``captions``, ``n_points`` (default 2048) and ``seed`` (0)."""
    from .._validation import check_int

    check_options(spec, options, ["split", "captions", "n_points", "seed"])
    root = existing_dir(rest.strip(), "point-cloud folder", spec)
    n_points = check_int("n_points", options.get("n_points", 2048), min_value=1)
    seed = check_int("seed", options.get("seed", 0), min_value=0)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in POINT_SUFFIXES
                   and not p.name.startswith("captions."))
    if any(len(p.relative_to(root).parts) > 1 for p in files):  # ModelNet40's root-level name lists are not shapes
        files = [p for p in files if len(p.relative_to(root).parts) > 1 or p.suffix.lower() != ".txt"]
    split = options.get("split")
    if split is not None:
        files = [p for p in files if split in p.relative_to(root).parts[:-1]]
    if not files:
        where = f" in a '{split}' folder" if split else ""
        raise ValueError(f"no 3D files ({', '.join(POINT_SUFFIXES)}) under {str(root)!r}{where} (dataset {spec!r})")
    cap_path = options.get("captions")
    if cap_path is None:
        cap_path = next((root / f"captions{s}" for s in (".csv", ".tsv", ".json") if (root / f"captions{s}").is_file()),
                        None)
    captions = _read_captions(existing_file(cap_path, "captions file", spec), spec) if cap_path else None
    return PointCloudDataset(root, files, n_points=n_points, seed=seed, captions=captions, spec=spec)
