r"""3D point-cloud encoders: non-learned shape descriptors and a loader for a user's point-cloud network.

Inputs are point clouds, ``(n_i, 3)`` arrays (any ``n_i``; extra columns such as normals are ignored), e.g. the
``points`` field of ``shapes:N`` or ``pointcloud:DIR``. No pretrained point-cloud encoder ships on any registry these
machines reach, so the built-ins are classical descriptors, named as such:

* ``shape:d2`` — the D2 shape distribution (Osada et al., "Shape distributions", ACM TOG 2002): a histogram of
  distances between random point pairs, after centring and scaling the cloud to unit radius.
* ``shape:a3`` — the A3 distribution: histogram of the angle at the middle of random point triples.
* ``shape:d1`` — histogram of distances from the centroid (unit radius).
* ``shape:cov`` — the covariance spectrum: square roots of the three covariance eigenvalues (absolute units),
  their two ratios to the largest, and the log radius (6 numbers; carries size, which the histograms drop).
* ``shape:d2+a3+cov`` — any ``+``-joined list, concatenated in order.

Every cloud is first resampled to ``n_points`` points (a random subset, or sampling with replacement when smaller)
with a generator seeded by ``seed`` alone, so a cloud's features never depend on its batch. The pairs / triples are
one fixed random index set drawn from ``seed``, shared by all clouds, so the histograms of a whole batch are computed
at once on ``device``.

``pointnet:PATH`` / ``torchscript:PATH`` load a user's network: a pickled ``torch.nn.Module`` or TorchScript file
taking ``(b, n_points, 3)`` (``channels_first=True``: ``(b, 3, n_points)``) and returning ``(b, d)`` (or a tuple whose
first item is that). Clouds are padded into one batch on CPU, then on the device centred and scaled to the unit
sphere (``center=True``) and reduced to ``n_points`` by batched farthest-point sampling
(:func:`farthest_point_sample`), the input convention of PointNet / PointNet++ / PointBERT.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from .._validation import InputTypeError, check_int
from ._base import Encoder
from ._torch import FINAL, TorchEncoder, file_digest, parse_layers, state_dict_digest

log = logging.getLogger(__name__)

__all__ = ["DESCRIPTORS", "ShapeDescriptorEncoder", "PointCloudModelEncoder", "farthest_point_sample",
           "check_cloud", "load_shape_encoder", "load_pointnet"]

DESCRIPTORS = ("d2", "a3", "d1", "cov")
_VERSION = "1"


def check_cloud(x: Any, k: int) -> np.ndarray:
    """Input ``k`` as an ``(n, 3)`` float32 array, or a ``TypeError`` / ``ValueError`` that names it."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise InputTypeError(f"point-cloud inputs must be (n, 3) arrays, got {type(x).__name__} for input {k}")
    if x.ndim != 2 or x.shape[1] < 3 or x.shape[0] == 0:
        raise ValueError(f"point cloud {k} has shape {x.shape}; expected (n, 3) with n >= 1 "
                         "(extra columns are ignored)")
    x = np.asarray(x[:, :3], dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"point cloud {k} has NaN or infinite coordinates")
    return x


def farthest_point_sample(points, k: int):
    """Indices ``(b, k)`` of ``k`` farthest-point samples of each cloud in ``points`` ``(b, n, 3)``, all at once.

    Starts at point 0 and repeatedly adds the point farthest from those chosen (Eldar et al. 1997), so the result
    is deterministic. Padding rows that copy point 0 are never chosen while real points remain. Cost:
    :math:`O(k\\, b\\, n)` in ``k`` vectorised steps on ``points``' device.
    """
    import torch

    b, n, _ = points.shape
    idx = torch.zeros(b, k, dtype=torch.long, device=points.device)
    dist = torch.full((b, n), float("inf"), dtype=points.dtype, device=points.device)
    far = torch.zeros(b, dtype=torch.long, device=points.device)
    rows = torch.arange(b, device=points.device)
    for i in range(k):
        idx[:, i] = far
        centre = points[rows, far]
        dist = torch.minimum(dist, ((points - centre[:, None, :]) ** 2).sum(-1))
        far = dist.argmax(1)
    return idx


class _ResamplePreprocessor:
    """Clouds -> ``(b, n_points, 3)`` float32, each resampled with a fresh generator seeded by ``seed`` (picklable)."""

    def __init__(self, n_points: int, seed: int):
        self.n_points, self.seed = n_points, seed

    def __call__(self, inputs: Sequence[Any]):
        import torch

        inputs = list(inputs)
        if not inputs:
            raise ValueError("cannot preprocess an empty batch of point clouds")
        out = np.empty((len(inputs), self.n_points, 3), dtype=np.float32)
        for k, x in enumerate(inputs):
            x = check_cloud(x, k)
            rng = np.random.default_rng(self.seed)
            idx = rng.choice(len(x), self.n_points, replace=len(x) < self.n_points)
            out[k] = x[idx]
        return torch.from_numpy(out)


class ShapeDescriptorEncoder(Encoder):
    """Non-learned shape descriptors (``shape:d2``, ``shape:a3``, ``shape:d1``, ``shape:cov``, ``+``-joined).

    Parameters
    ----------
    kinds : sequence of {"d2", "a3", "d1", "cov"}
    bins : int
        Histogram bins of d2 / a3 / d1 (default 32). Histograms sum to 1.
    n_points : int
        Points per cloud after resampling (default 1024).
    n_samples : int
        Random pairs (d2) / triples (a3) per cloud (default 8192).
    seed : int
    device : where the histograms are computed (default CPU).
    normalize : bool
        L2-normalise the concatenated features.
    """

    modality = "pointcloud"
    default_batch_size = 256

    def __init__(self, kinds: Sequence[str], *, bins: int = 32, n_points: int = 1024, n_samples: int = 8192,
                 seed: int = 0, device: Any = None, normalize: bool | None = None, batch_size: int | None = None,
                 layers: Any = None):
        from .._backend import resolve_device

        kinds = list(kinds)
        bad = [k for k in kinds if k not in DESCRIPTORS]
        if not kinds or bad:
            raise ValueError(f"unknown shape descriptor(s) {', '.join(map(repr, bad)) or '(none)'}; use "
                             f"{', '.join('shape:' + d for d in DESCRIPTORS)} or '+'-joined, e.g. shape:d2+a3+cov")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"shape descriptors listed twice: {'+'.join(kinds)}")
        if parse_layers(layers) != [FINAL]:
            raise ValueError("shape descriptors have one output: `layers` is not available for them")
        if normalize is not None and not isinstance(normalize, bool):
            raise InputTypeError(f"`normalize` must be True, False or None, got {normalize!r}")
        self.kinds = kinds
        self.bins = check_int("bins", bins, min_value=2)
        self.n_points = check_int("n_points", n_points, min_value=3)
        self.n_samples = check_int("n_samples", n_samples, min_value=1)
        self.seed = check_int("seed", seed, min_value=0)
        self.normalize = bool(normalize)
        if batch_size is not None:
            self.default_batch_size = check_int("batch_size", batch_size, min_value=1)
        self.device = resolve_device(device if device is not None else "cpu")
        self.spec = "shape:" + "+".join(kinds)
        self.layers = (FINAL,)
        self.dims = {FINAL: sum(6 if k == "cov" else self.bins for k in kinds)}
        self.preprocessor = _ResamplePreprocessor(self.n_points, self.seed)
        rng = np.random.default_rng([self.seed, 1])
        self._pairs = rng.integers(0, self.n_points, size=(self.n_samples, 2))
        self._triples = rng.integers(0, self.n_points, size=(self.n_samples, 3))

    def preprocess(self, inputs: Sequence[Any]):
        return self.preprocessor(inputs)

    def _hist(self, v, lo: float, hi: float):
        import torch

        b = v.shape[0]
        idx = ((v - lo) / (hi - lo) * self.bins).floor().long().clamp(0, self.bins - 1)
        h = torch.zeros(b, self.bins, dtype=torch.float64, device=v.device)
        h.scatter_add_(1, idx, torch.ones_like(v, dtype=torch.float64))
        return h / v.shape[1]

    def forward(self, batch) -> dict[str, Any]:
        import torch

        with torch.inference_mode():
            x = batch.to(self.device, torch.float64)
            x = x - x.mean(1, keepdim=True)
            radius = x.norm(dim=2).amax(1)
            if bool((radius <= 0).any()):
                k = int(torch.nonzero(radius <= 0)[0, 0])
                raise ValueError(f"point cloud {k} of the batch is degenerate (all points identical); remove it")
            u = x / radius[:, None, None]
            parts = []
            for kind in self.kinds:
                if kind == "d2":
                    p = torch.as_tensor(self._pairs, device=x.device)
                    parts.append(self._hist((u[:, p[:, 0]] - u[:, p[:, 1]]).norm(dim=2), 0.0, 2.0))
                elif kind == "d1":
                    parts.append(self._hist(u.norm(dim=2), 0.0, 1.0))
                elif kind == "a3":
                    t = torch.as_tensor(self._triples, device=x.device)
                    a, m, c = u[:, t[:, 0]], u[:, t[:, 1]], u[:, t[:, 2]]
                    e1, e2 = a - m, c - m
                    cos = (e1 * e2).sum(2) / (e1.norm(dim=2) * e2.norm(dim=2)).clamp(min=1e-12)
                    parts.append(self._hist(torch.arccos(cos.clamp(-1.0, 1.0)), 0.0, float(np.pi)))
                else:  # cov
                    cov = x.transpose(1, 2) @ x / x.shape[1]
                    ev = torch.linalg.eigvalsh(cov).flip(1).clamp(min=0).sqrt()
                    ratios = ev[:, 1:] / ev[:, :1].clamp(min=1e-12)
                    parts.append(torch.cat([ev, ratios, radius.log()[:, None]], dim=1))
            out = torch.cat(parts, dim=1).float()
            if self.normalize:
                out = torch.nn.functional.normalize(out, dim=1)
        return {FINAL: out}

    def config(self) -> dict:
        return {"spec": self.spec, "encoder": type(self).__name__, "kinds": self.kinds, "bins": self.bins,
                "n_points": self.n_points, "n_samples": self.n_samples, "seed": self.seed,
                "normalize": self.normalize, "version": _VERSION}

    def weights_digest(self) -> str:
        return "non-learned"


class _PadPreprocessor:
    """Clouds -> ``{"points": (b, n_max, 3), "lengths": (b,)}``; padding rows copy point 0 (picklable)."""

    def __call__(self, inputs: Sequence[Any]):
        import torch

        clouds = [check_cloud(x, k) for k, x in enumerate(list(inputs))]
        if not clouds:
            raise ValueError("cannot preprocess an empty batch of point clouds")
        n_max = max(len(c) for c in clouds)
        out = np.empty((len(clouds), n_max, 3), dtype=np.float32)
        for k, c in enumerate(clouds):
            out[k, :len(c)] = c
            out[k, len(c):] = c[0]
        return {"points": torch.from_numpy(out), "lengths": torch.as_tensor([len(c) for c in clouds])}


class PointCloudModelEncoder(TorchEncoder):
    """A user's point-cloud network (PointNet-style module or TorchScript) as a frozen encoder.

    Parameters
    ----------
    model : torch.nn.Module or torch.jit.ScriptModule
        Owned by the encoder from now on (moved to ``device``, ``eval()``); pass a copy to keep yours.
    n_points : int
        Points per cloud fed to the model (farthest-point sampled on the device; default 1024).
    channels_first : bool
        Feed ``(b, 3, n)`` instead of ``(b, n, 3)`` (the original PointNet layout).
    center : bool
        Centre each cloud and scale it to the unit sphere before sampling (default True).
    device, dtype, autocast, normalize, batch_size
        As for every torch encoder.
    spec, digest : str
        Shown in results / the weights digest (default: sha256 over the model's ``state_dict``).
    """

    modality = "pointcloud"

    def __init__(self, model, *, n_points: int = 1024, channels_first: bool = False, center: bool = True,
                 device: Any = None, dtype: Any = None, autocast: bool = True, normalize: bool | None = None,
                 batch_size: int | None = None, layers: Any = None, spec: str = "pointnet:<module>",
                 digest: str | None = None):
        import torch

        if not isinstance(model, torch.nn.Module):
            raise InputTypeError(f"`model` must be a torch.nn.Module or TorchScript module, got {type(model).__name__}")
        if parse_layers(layers) != [FINAL]:
            raise ValueError(f"{spec!r} returns one output: `layers` is not available for it")
        for name, v in (("channels_first", channels_first), ("center", center)):
            if not isinstance(v, bool):
                raise InputTypeError(f"`{name}` must be True or False, got {v!r}")
        if isinstance(model, torch.jit.ScriptModule):
            from ._graph import _Frozen

            model = _Frozen(model)
        self.spec = spec
        self.n_points = check_int("n_points", n_points, min_value=1)
        self.channels_first, self.center = channels_first, center
        self.preprocessor = _PadPreprocessor()
        self.layers = (FINAL,)
        self._setup(model, device=device, dtype=dtype, autocast=autocast, normalize=normalize,
                    batch_size=batch_size)
        self._digest = digest or state_dict_digest(model)
        probe = np.random.default_rng(0).normal(size=(max(self.n_points, 8), 3)).astype(np.float32)
        self.dims = {FINAL: 1}
        try:
            self.dims = self._infer_dims(probe)
        except Exception as exc:  # noqa: BLE001 - report what the user's model did
            raise ValueError(f"{spec!r} failed on a test batch of shape (1, {self.n_points}, 3) "
                             f"({type(exc).__name__}: {exc}); check channels_first and n_points") from None

    def _features(self, batch) -> dict[str, Any]:
        import torch

        pts, lengths = batch["points"].float(), batch["lengths"]
        if self.center:
            mask = (torch.arange(pts.shape[1], device=pts.device)[None, :] < lengths[:, None]).to(pts.dtype)
            mean = (pts * mask[..., None]).sum(1) / lengths[:, None].to(pts.dtype)
            pts = pts - mean[:, None, :]
            radius = (pts.norm(dim=2) * mask).amax(1).clamp(min=1e-12)
            pts = pts / radius[:, None, None]
        idx = farthest_point_sample(pts, self.n_points)
        x = torch.gather(pts, 1, idx[..., None].expand(-1, -1, 3))
        if self.channels_first:
            x = x.transpose(1, 2).contiguous()
        if not self.autocast and self.dtype != "float32":
            x = x.to(self.torch_dtype)
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{self.spec!r} returned {shape} for a batch of {x.shape[0]} clouds; the model must "
                             "return (b, d) features (pool over points inside the model)")
        return {FINAL: out}

    def _config(self) -> dict:
        return {"n_points": self.n_points, "channels_first": self.channels_first, "center": self.center,
                "sampling": "fps", "version": _VERSION}

    def weights_digest(self) -> str:
        return self._digest


def load_shape_encoder(name: str, **options) -> ShapeDescriptorEncoder:
    """``shape:d2`` (``a3``, ``d1``, ``cov``, ``+``-joined) with options ``bins``, ``n_points``, ``n_samples``,
    ``seed``, ``device``, ``normalize``, ``batch_size``."""
    return ShapeDescriptorEncoder(name.split("+"), **options)


def load_pointnet(path: str, *, spec: str, require_torchscript: bool = False, **options) -> PointCloudModelEncoder:
    """``pointnet:PATH`` / ``torchscript:PATH``: see :class:`PointCloudModelEncoder`."""
    from pathlib import Path

    from ._graph import load_torch_model

    model, kind = load_torch_model(path, "point-cloud")
    if require_torchscript and kind != "torchscript":
        raise ValueError(f"{str(path)!r} is a pickled torch module, not TorchScript; load it with pointnet:{path}")
    return PointCloudModelEncoder(model, spec=spec, digest=f"{kind}:{file_digest(Path(path).expanduser())}",
                                  **options)
