"""``shapes:N``: procedural 3D shapes with captions, so the 3D pipeline runs without downloads.

Each shape is ``count`` copies of one primitive (sphere, cube, cylinder, cone, torus, pyramid) with a ``size``
(small / medium / large: scale 0.5, 1, 2), a ``proportion`` (tall / flat / regular for the prisms, elongated /
squashed / round for spheres, thin / thick for tori), and, for several copies, an ``arrangement`` (in a row,
stacked, in a ring, in a grid). The caption states exactly these attributes, e.g. "three small tall cylinders
stacked on top of each other" or "a large flat cube". The primitives are triangle meshes and the points are drawn
uniformly on the union of their surfaces (:func:`~align.data._pointcloud.sample_surface`).

Shape ``i`` depends only on ``(seed, i)``: ``shapes:100`` is the first 100 shapes of ``shapes:1000``.
Labels are the primitive (``classes`` = the six names), for zero-shot classification.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._base import Dataset
from ._common import check_options, hash_texts
from ._pointcloud import sample_surface

__all__ = ["PRIMITIVES", "ShapeSpec", "shape_spec", "shape_mesh", "primitive_mesh", "ShapeDataset", "load_shapes"]

PRIMITIVES = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid")
_PLURAL = {"sphere": "spheres", "cube": "cubes", "cylinder": "cylinders", "cone": "cones", "torus": "tori",
           "pyramid": "pyramids"}
_SIZES = {"small": 0.5, "medium": 1.0, "large": 2.0}
_COUNT_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}
_PROPORTIONS = {
    "sphere": {"round": (1.0, 1.0, 1.0), "elongated": (2.5, 1.0, 1.0), "squashed": (1.0, 1.0, 0.35)},
    "torus": {"thin": (1.0, 1.0, 1.0), "thick": (1.0, 1.0, 1.0)},
}
_PRISM = {"regular": (1.0, 1.0, 1.0), "tall": (1.0, 1.0, 2.5), "flat": (1.0, 1.0, 0.3)}
_ARRANGEMENTS = {"row": "in a row", "stack": "stacked on top of each other", "ring": "in a ring",
                 "grid": "in a grid"}


@dataclass(frozen=True)
class ShapeSpec:
    """The attributes of one procedural shape (and so of its caption)."""

    primitive: str
    count: int
    size: str
    proportion: str
    arrangement: str | None

    def caption(self) -> str:
        noun = self.primitive if self.count == 1 else _PLURAL[self.primitive]
        words = [_COUNT_WORDS[self.count], self.size]
        if self.proportion not in ("regular", "round"):
            words.append(self.proportion)
        words.append(noun)
        if self.arrangement is not None:
            words.append(_ARRANGEMENTS[self.arrangement])
        return " ".join(words)

    def to_dict(self) -> dict:
        return asdict(self)


def shape_spec(seed: int, i: int) -> ShapeSpec:
    """The attributes of shape ``i`` under ``seed`` (independent of how many shapes are drawn)."""
    rng = np.random.default_rng([seed, i, 0])
    primitive = PRIMITIVES[rng.integers(len(PRIMITIVES))]
    count = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.2, 0.2, 0.2]))
    size = list(_SIZES)[rng.integers(len(_SIZES))]
    props = list(_PROPORTIONS.get(primitive, _PRISM))
    proportion = props[rng.integers(len(props))]
    arrangement = None
    if count > 1:
        options = ["row", "stack"] + (["ring"] if count >= 3 else []) + (["grid"] if count == 4 else [])
        arrangement = options[rng.integers(len(options))]
    return ShapeSpec(primitive, count, size, proportion, arrangement)


def _grid(nu: int, nv: int):
    u, v = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    a = u * nv + v
    b = ((u + 1) % nu) * nv + v
    c = ((u + 1) % nu) * nv + (v + 1) % nv
    d = u * nv + (v + 1) % nv
    return a, b, c, d


def primitive_mesh(primitive: str, thick: bool = False, resolution: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A unit-size triangle mesh ``(vertices, triangles)`` of a primitive, centred at the origin, base on z = -0.5."""
    r = resolution
    th = np.linspace(0, 2 * np.pi, r, endpoint=False)
    if primitive == "sphere":
        phi = np.linspace(0, np.pi, r // 2 + 1)[1:-1]
        ring = np.stack([np.outer(np.sin(phi), np.cos(th)), np.outer(np.sin(phi), np.sin(th)),
                         np.repeat(np.cos(phi)[:, None], r, 1)], -1).reshape(-1, 3) * 0.5
        verts = np.vstack([ring, [[0, 0, 0.5], [0, 0, -0.5]]])
        n_ring = len(phi)
        faces = []
        for a in range(n_ring - 1):
            for b in range(r):
                i, j = a * r + b, a * r + (b + 1) % r
                faces += [(i, j, j + r), (i, j + r, i + r)]
        top, bot = len(ring), len(ring) + 1
        faces += [(top, (b + 1) % r, b) for b in range(r)]
        faces += [(bot, (n_ring - 1) * r + b, (n_ring - 1) * r + (b + 1) % r) for b in range(r)]
        return verts, np.asarray(faces)
    if primitive == "cube":
        verts = np.array([[x, y, z] for x in (-.5, .5) for y in (-.5, .5) for z in (-.5, .5)])
        quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
        return verts, np.asarray([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    if primitive in ("cylinder", "cone"):
        top_r = 0.5 if primitive == "cylinder" else 0.0
        bottom = np.stack([0.5 * np.cos(th), 0.5 * np.sin(th), np.full(r, -0.5)], 1)
        top = np.stack([top_r * np.cos(th), top_r * np.sin(th), np.full(r, 0.5)], 1)
        verts = np.vstack([bottom, top, [[0, 0, -0.5], [0, 0, 0.5]]])
        cb, ct = 2 * r, 2 * r + 1
        faces = []
        for b in range(r):
            nb = (b + 1) % r
            faces += [(b, nb, r + nb), (b, r + nb, r + b), (cb, nb, b), (ct, r + b, r + nb)]
        return verts, np.asarray(faces)
    if primitive == "torus":
        tube = 0.2 if thick else 0.1
        R = 0.5 - tube
        u, v = np.meshgrid(th, th, indexing="ij")
        verts = np.stack([(R + tube * np.cos(v)) * np.cos(u), (R + tube * np.cos(v)) * np.sin(u),
                          tube * np.sin(v)], -1).reshape(-1, 3)
        a, b, c, d = _grid(r, r)
        faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
        return verts, faces
    if primitive == "pyramid":
        verts = np.array([[-.5, -.5, -.5], [.5, -.5, -.5], [.5, .5, -.5], [-.5, .5, -.5], [0, 0, .5]])
        return verts, np.array([(0, 2, 1), (0, 3, 2), (0, 1, 4), (1, 2, 4), (2, 3, 4), (3, 0, 4)])
    raise ValueError(f"unknown primitive {primitive!r}; use one of {', '.join(PRIMITIVES)}")


def shape_mesh(spec: ShapeSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The union mesh of a :class:`ShapeSpec`: scaled, stretched copies placed by its arrangement."""
    verts0, faces0 = primitive_mesh(spec.primitive, thick=spec.proportion == "thick")
    stretch = np.asarray(_PROPORTIONS.get(spec.primitive, _PRISM)[spec.proportion]) * _SIZES[spec.size]
    verts0 = verts0 * stretch
    w, h = float(np.ptp(verts0[:, :2], axis=0).max()), float(np.ptp(verts0[:, 2]))
    n = spec.count
    if spec.arrangement in (None, "row"):
        centres = [(1.3 * w * (k - (n - 1) / 2), 0.0, 0.0) for k in range(n)]
    elif spec.arrangement == "stack":
        centres = [(0.0, 0.0, 1.02 * h * (k - (n - 1) / 2)) for k in range(n)]
    elif spec.arrangement == "ring":
        radius = 0.75 * w / np.sin(np.pi / n)
        centres = [(radius * np.cos(2 * np.pi * k / n), radius * np.sin(2 * np.pi * k / n), 0.0) for k in range(n)]
    else:  # grid
        centres = [(1.3 * w * (k % 2 - 0.5), 1.3 * w * (k // 2 - 0.5), 0.0) for k in range(n)]
    angle = rng.uniform(0, 2 * np.pi)  # a random turn about the vertical axis: captions do not name orientation
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    verts = np.vstack([verts0 + np.asarray(c) for c in centres]) @ rot.T
    faces = np.vstack([faces0 + k * len(verts0) for k in range(n)])
    return verts, faces


class ShapeDataset(Dataset):
    """``N`` procedural shapes: fields ``points`` (``(n_points, 3)`` float32, pointcloud) and ``caption`` (text).

    Attributes ``specs`` (one :class:`ShapeSpec` per shape), ``labels`` (primitive index), ``classes``
    (:data:`PRIMITIVES`).
    """

    fields = ("points", "caption")
    default_field = "points"

    def __init__(self, n: int, *, seed: int = 0, n_points: int = 2048, spec: str | None = None):
        self.spec = spec or f"shapes:{n}"
        self.n, self.seed, self.n_points = n, seed, n_points
        self.specs = [shape_spec(seed, i) for i in range(n)]
        self._captions = [s.caption() for s in self.specs]
        self.classes = list(PRIMITIVES)
        self.labels = np.asarray([PRIMITIVES.index(s.primitive) for s in self.specs], dtype=np.int64)

    def __len__(self) -> int:
        return self.n

    @property
    def ids(self) -> list[str]:
        return [f"shape{i:06d}" for i in range(self.n)]

    def modality(self, field: str | None = None) -> str:
        return "pointcloud" if self.resolve_field(field) == "points" else "text"

    def texts(self, field: str = "caption") -> list[str]:
        self.resolve_field(field)
        return list(self._captions)

    def get(self, row: int, field: str | None = None) -> Any:
        field = self.resolve_field(field)
        if field == "caption":
            return self._captions[row]
        rng = np.random.default_rng([self.seed, row, 1])
        verts, faces = shape_mesh(self.specs[row], rng)
        return sample_surface(verts, faces, self.n_points, rng, name=self.ids[row]).astype(np.float32)

    def fingerprint(self, field: str | None = None) -> str:
        field = self.resolve_field(field)
        if field == "caption":
            return hash_texts("text", self._captions)
        h = hashlib.sha256(hash_texts("shapes", self._captions).encode())
        h.update(f"generator=1;seed={self.seed};n_points={self.n_points}".encode())
        return h.hexdigest()


def load_shapes(spec: str, rest: str, options: dict) -> ShapeDataset:
    """``shapes:N`` with options ``seed`` (0) and ``n_points`` (2048)."""
    from .._validation import check_int

    check_options(spec, options, ["seed", "n_points"])
    try:
        n = int(rest.strip())
    except ValueError:
        raise ValueError(f"dataset spec {spec!r} must give a number of shapes, e.g. shapes:1000") from None
    n = check_int("N", n, min_value=1)
    return ShapeDataset(n, seed=check_int("seed", options.get("seed", 0), min_value=0),
                        n_points=check_int("n_points", options.get("n_points", 2048), min_value=1), spec=spec)
