"""Labelled images in IDX format: ``idx:IMAGES_FILE[,LABELS_FILE]`` and ``fashion-mnist:train|test``.

IDX (the MNIST / Fashion-MNIST container, ``.gz`` allowed) is a 4-byte magic number ``0x00 0x00 <type> <ndim>``,
``ndim`` big-endian uint32 sizes, then the values in C order, big-endian. Images are ``(n, h, w)`` (grey) or
``(n, h, w, c)`` with ``c`` in {1, 3}, of type uint8; labels are ``(n,)`` integers. Item ``i`` has id ``"i"``
(0-based record index); :meth:`IdxDataset.get` returns an RGB ``PIL.Image`` (grey replicated to three channels).

Class names: ``classes=`` (a list, ``"fashion-mnist"`` or ``"mnist"``); by default the ten Fashion-MNIST names when
a file name contains "fashion", else the label values as strings ("0", "1", …). ``fashion-mnist:train`` and
``fashion-mnist:test`` read Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``,
``apt-get install dataset-fashion-mnist``) or ``root=``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ._base import Dataset
from ._common import check_options, existing_file, read_bytes

__all__ = ["IdxDataset", "read_idx", "FASHION_MNIST_CLASSES", "FASHION_MNIST_ROOT"]

#: The ten Fashion-MNIST classes in label order (Xiao, Rasul & Vollgraf, 2017).
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))
#: Where Debian's ``dataset-fashion-mnist`` package puts the files.
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (``.gz`` allowed) into a native-endian numpy array."""
    data = read_bytes(path)
    fix = "re-download it (or check you gave the images file and the labels file the right way round)"
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number {data[:4].hex() or 'empty'}); {fix}")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"IDX file {str(path)!r} is truncated inside its header; re-download it")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"IDX file {str(path)!r} holds {len(data) - header} data bytes but its header {shape} says {expected}; "
            "it is truncated or corrupt, re-download it"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


class IdxDataset(Dataset):
    """Images (and optional integer labels) from IDX files such as MNIST and Fashion-MNIST.

    Parameters
    ----------
    images : path
        IDX file of ``(n, h, w)`` or ``(n, h, w, c)`` uint8 images.
    labels : path, optional
        IDX file of ``(n,)`` integer labels.
    classes : list of str, "fashion-mnist", "mnist" or None
        Names for labels ``0 … k-1``; see the module docstring for the default.
    """

    fields = ("image",)
    default_field = "image"

    def __init__(self, images, labels=None, *, classes=None, spec: str | None = None):
        self.spec = spec or f"idx:{images}" + (f",{labels}" if labels else "")
        self.images_path = existing_file(images, "IDX images file", self.spec)
        self.labels_path = existing_file(labels, "IDX labels file", self.spec) if labels is not None else None
        pixels = read_idx(self.images_path)
        if pixels.ndim == 4 and pixels.shape[-1] in (1, 3):
            pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
        elif pixels.ndim != 3:
            raise ValueError(
                f"IDX images file {str(self.images_path)!r} has shape {pixels.shape}; expected (n, h, w) or "
                "(n, h, w, 3) images (is it the labels file?)"
            )
        if pixels.dtype != np.uint8:
            raise ValueError(
                f"IDX images file {str(self.images_path)!r} holds {pixels.dtype} values; only uint8 images are "
                "supported, convert them to 0-255 bytes"
            )
        if len(pixels) == 0:
            raise ValueError(f"IDX images file {str(self.images_path)!r} holds no images; check the file")
        self._pixels = pixels
        self.labels, self.classes = None, None
        if self.labels_path is not None:
            lab = read_idx(self.labels_path)
            if lab.ndim != 1 or lab.dtype.kind not in "iu":
                raise ValueError(
                    f"IDX labels file {str(self.labels_path)!r} has shape {lab.shape} and dtype {lab.dtype}; "
                    "expected (n,) integers (are the two files swapped?)"
                )
            if len(lab) != len(pixels):
                raise ValueError(
                    f"{len(pixels)} images but {len(lab)} labels in {self.spec!r}; give the matching labels file"
                )
            if lab.min() < 0:
                raise ValueError(f"IDX labels file {str(self.labels_path)!r} has negative labels; labels must be >= 0")
            self.labels = lab.astype(np.int64)
            self.classes = self._class_names(classes, int(self.labels.max()) + 1)
        elif classes is not None:
            raise ValueError("`classes` needs a labels file; write the spec as idx:IMAGES,LABELS")
        self._fingerprint: str | None = None

    def _class_names(self, classes, k: int) -> list[str]:
        if classes is None:
            names = " ".join(p.name.lower() for p in (self.images_path, self.labels_path))
            classes = "fashion-mnist" if "fashion" in names or "fashion" in str(self.images_path.parent).lower() \
                else [str(i) for i in range(k)]
        if isinstance(classes, str):
            table = {"fashion-mnist": FASHION_MNIST_CLASSES, "mnist": MNIST_CLASSES}
            if classes not in table:
                raise ValueError(f"unknown class set {classes!r}; use 'fashion-mnist', 'mnist' or a list of names")
            classes = table[classes]
        classes = [str(c) for c in classes]
        if len(classes) < k:
            raise ValueError(f"{len(classes)} class names given but labels go up to {k - 1}; give {k} names")
        return classes

    def __len__(self) -> int:
        return len(self._pixels)

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in range(len(self._pixels))]

    @property
    def pixels(self) -> np.ndarray:
        """All images as one uint8 array, ``(n, h, w)`` or ``(n, h, w, 3)`` (read-only view)."""
        view = self._pixels.view()
        view.flags.writeable = False
        return view

    def modality(self, field: str | None = None) -> str:
        self.resolve_field(field)
        return "image"

    def get(self, row: int, field: str | None = None):
        from PIL import Image

        self.resolve_field(field)
        arr = self._pixels[row]
        return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")

    def fingerprint(self, field: str | None = None) -> str:
        """sha256 over the image array's shape and pixel bytes (the same for a file and its gzip)."""
        self.resolve_field(field)
        if self._fingerprint is None:
            h = hashlib.sha256(f"idx-image {self._pixels.shape} {self._pixels.dtype.str}".encode())
            h.update(np.ascontiguousarray(self._pixels).data)
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def load_idx(spec: str, rest: str, options: dict) -> IdxDataset:
    check_options(spec, options, ["classes"])
    parts = [p.strip() for p in rest.split(",")]
    if not rest.strip() or len(parts) > 2 or not parts[0]:
        raise ValueError(f"dataset spec {spec!r} must be idx:IMAGES_FILE or idx:IMAGES_FILE,LABELS_FILE")
    return IdxDataset(parts[0], parts[1] if len(parts) == 2 and parts[1] else None, spec=spec, **options)


def load_fashion_mnist(spec: str, rest: str, options: dict) -> IdxDataset:
    check_options(spec, options, ["root"])
    split = rest.strip()
    if split not in _FASHION_FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; use fashion-mnist:train or fashion-mnist:test")
    root = Path(options.get("root") or FASHION_MNIST_ROOT).expanduser()
    images, labels = (root / name for name in _FASHION_FILES[split])
    if not images.is_file():
        raise FileNotFoundError(
            f"Fashion-MNIST file {str(images)!r} does not exist; `apt-get install dataset-fashion-mnist` or pass root="
        )
    return IdxDataset(images, labels, classes="fashion-mnist", spec=spec)
