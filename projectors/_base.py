"""The projector contract, the registry of kinds, and the on-disk format.

A projector learns a map between two embedding spaces from paired rows: row i of ``X`` (n, d_x) and row i of ``Y``
(n, d_y) describe the same item. ``transform(X)`` carries X into the shared space and ``transform_y(Y)`` carries Y
there; for the one-sided kinds (``linear``, ``procrustes``, ``mlp``, ``glu``) the shared space is Y's own space and
``transform_y`` is the identity, for ``cca`` (and a two-sided ``mlp``/``glu``) both sides move.

The estimator contract follows scikit-learn: ``__init__`` only stores keyword-only parameters, ``fit`` returns
``self``, learned attributes end in ``_``, ``transform`` checks that the projector was fitted and that the feature
count matches. numpy in gives numpy out; a torch tensor in gives a tensor on the same device out.
"""
from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from align._validation import InputTypeError, check_array, check_choice, is_torch

from ._sklearn import SklearnConventions, sklearn_input

log = logging.getLogger(__name__)

FORMAT = "unialign.projector"
FORMAT_VERSION = 1

_REGISTRY: dict[str, type[Projector]] = {}


def register(kind: str, description: str):
    """Class decorator: make a projector class available to :func:`make_projector` under ``kind``."""

    def deco(cls):
        cls.kind = kind
        cls.description = description
        _REGISTRY[kind] = cls
        return cls

    return deco


from align.exceptions import NotFittedError  # noqa: E402  (one error hierarchy; re-exported by projectors)


def _primitive(value: Any) -> Any:
    """Parameters as plain Python values a checkpoint can hold (generators become None)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_primitive(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _primitive(v) for k, v in value.items()}
    return None


class Projector(SklearnConventions):
    """Base class: parameters, fitted checks, numpy/torch round trip, save/load; scikit-learn's conventions
    (tags, ``score``, pickling) come from :class:`projectors._sklearn.SklearnConventions`."""

    kind: ClassVar[str] = "base"
    description: ClassVar[str] = ""
    #: Whether ``fit`` runs a training loop (the training settings apply); closed forms: False.
    trains: ClassVar[bool] = False

    def _validate_params(self) -> None:
        """Check the parameter values (``make_projector`` calls it at construction); a one-line error per value."""

    # ---- parameters ------------------------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        names: list[str] = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            sig = inspect.signature(init)
            names += [p.name for p in sig.parameters.values()
                      if p.kind == p.KEYWORD_ONLY and p.name not in names]
            if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
                break
        return names

    def get_params(self, deep: bool = True) -> dict:
        """The constructor parameters (no parameter is itself an estimator, so ``deep`` changes nothing)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> Projector:
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"unknown parameter {name!r} for projector {self.kind!r}; valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # ---- fitting helpers -------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, Y) first or load a saved projector"
            )

    def _check_input(self, X: Any, side: str):
        self._check_fitted()
        name = "X" if side == "x" else "Y"
        X = check_array(sklearn_input(X, name, target=side == "y"), name)
        expected = self.n_features_in_ if side == "x" else self.n_features_y_
        if X.shape[1] != expected:
            spec = (getattr(self, "metadata_", None) or {}).get("x_encoder" if side == "x" else "y_encoder")
            made_by = f" ({spec!r} features)" if spec else ""
            raise ValueError(
                f"{name} has {X.shape[1]} features, but {type(self).__name__} is expecting {expected} features as "
                f"input: this {self.kind!r} projector was fitted on {expected}{made_by}; use features from the same "
                "encoder (and layer) it was trained on"
            )
        return X

    def _apply(self, X: Any, side: str):
        """Validate, run ``_transform_torch`` in torch, return the caller's kind and float dtype."""
        import torch

        from align._backend import as_torch, like_input

        X = self._check_input(X, side)
        dtype = X.dtype if is_torch(X) else torch.from_numpy(np.zeros(0, dtype=X.dtype)).dtype
        Xt = as_torch(X if is_torch(X) or X.flags.writeable else np.array(X))
        with torch.no_grad():
            out = self._transform_torch(Xt, side)
        return like_input(out.to(dtype), X)

    def transform(self, X: Any):
        """Map X (n, d_x) into the shared space (n, d_out)."""
        return self._apply(X, "x")

    def transform_y(self, Y: Any):
        """Map Y (n, d_y) into the shared space (n, d_out); the identity for one-sided kinds."""
        return self._apply(Y, "y")

    def fit_transform(self, X: Any, Y: Any = None, **fit_params):
        """``fit(X, Y).transform(X)`` (``y=`` is accepted as scikit-learn's name for ``Y``)."""
        if Y is None:
            Y = fit_params.pop("y", None)
        return self.fit(X, Y, **fit_params).transform(X)

    def _transform_torch(self, X, side: str):  # pragma: no cover - abstract
        raise NotImplementedError

    def _get_state(self) -> dict:  # tensors and plain values
        raise NotImplementedError

    def _set_state(self, state: dict) -> None:
        raise NotImplementedError

    # ---- persistence -----------------------------------------------------------------------------------------
    def save(
        self,
        path: str | os.PathLike,
        *,
        x_encoder: str | None = None,
        y_encoder: str | None = None,
        layer: Any = None,
        pooling: str | None = None,
        config: dict | None = None,
        provenance: dict | None = None,
    ) -> Path:
        """Write the fitted projector atomically (temporary file, fsync, rename).

        The file records the kind, its parameters, the learned state and, when given, how the features were made
        (encoder specs, layer, pooling, any extra config) and what produced it (``provenance``:
        ``align._provenance.provenance(...)``, with the library version, input files by sha256 and seeds), so a
        stitched encoder can be rebuilt from the file alone and the projector refuses features of another encoder
        (:func:`projectors.load_projector`'s ``x_encoder`` / ``y_encoder``).
        """
        import torch

        from align._io import atomic_write

        self._check_fitted()
        meta = dict(getattr(self, "metadata_", {}) or {})
        for key, value in (("x_encoder", x_encoder), ("y_encoder", y_encoder), ("layer", layer),
                           ("pooling", pooling), ("config", config), ("provenance", provenance)):
            if value is not None:
                meta[key] = _primitive(value)
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "params": _primitive(self.get_params()),
            "n_features_in": int(self.n_features_in_),
            "n_features_y": int(self.n_features_y_),
            "state": self._get_state(),
            "metadata": meta,
        }
        path = Path(path)
        import io

        buffer = io.BytesIO()  # serialise first: torch.save hides a failed write (a full disk) as RuntimeError
        torch.save(payload, buffer)
        with atomic_write(path) as f:
            f.write(buffer.getbuffer())
        return path


def make_projector(kind: str, **params) -> Projector:
    """Build an unfitted projector by kind; ``list_projectors()`` names the kinds and what each is for.

    Parameter names and values are checked here (an unknown name is an ``InputTypeError``, a bad value a
    ``ValueError`` / ``InputTypeError`` naming the parameter), not first at ``fit``."""
    check_choice("projector kind", kind, sorted(_REGISTRY))
    cls = _REGISTRY[kind]
    valid = cls._param_names()
    unknown = [p for p in params if p not in valid]
    if unknown:
        raise InputTypeError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for projector {kind!r}; valid: {', '.join(valid)}"
        )
    projector = cls(**params)
    projector._validate_params()
    return projector


def list_projectors() -> list[dict]:
    """The registered kinds: ``[{"kind": …, "description": …}, …]``."""
    return [{"kind": k, "description": c.description} for k, c in sorted(_REGISTRY.items())]


def load_projector(path: str | os.PathLike, *, x_encoder: str | None = None, y_encoder: str | None = None) -> Projector:
    """Read a projector written by ``Projector.save``; a missing, truncated or foreign file is a ``ValueError``.

    Parameters
    ----------
    path : path
    x_encoder, y_encoder : str, optional
        The specs of the encoders whose features it will be applied to (``transform`` / ``transform_y``). When the
        file records the encoders it was trained on and one differs, loading is refused with a ``ValueError`` that
        names both: a projector applied to another encoder's features gives numbers that look fine and mean nothing.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"projector file {str(path)!r} does not exist; train one with `unialign fit`")
    if _not_a_torch_file(path):
        raise ValueError(f"{str(path)!r} holds features or JSON, not a projector; pass the file written by "
                         "`unialign fit --out`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a bad file
        raise ValueError(
            f"projector file {str(path)!r} is truncated or corrupt ({type(exc).__name__}); retrain or re-save it"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a unialign projector file (no {FORMAT!r} header)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"projector file {str(path)!r} has format version {payload['format_version']}; this unialign reads up "
            f"to {FORMAT_VERSION}: upgrade unialign"
        )
    kind = payload["kind"]
    if kind not in _REGISTRY:
        raise ValueError(f"projector file {str(path)!r} has unknown kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[kind]
    params = {k: v for k, v in payload["params"].items() if k in cls._param_names()}
    proj = cls(**params)
    proj.n_features_in_ = payload["n_features_in"]
    proj.n_features_y_ = payload["n_features_y"]
    proj._set_state(payload["state"])
    proj.metadata_ = payload.get("metadata", {})
    check_encoders(proj, x_encoder=x_encoder, y_encoder=y_encoder, where=f"projector {str(path)!r}")
    return proj


def _not_a_torch_file(path: Path) -> bool:
    """True for files that are clearly something else: a .npy array, JSON, a .npz archive (a zip without torch's
    ``data.pkl``)."""
    import zipfile

    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY" or magic.lstrip().startswith(b"{"):
        return True
    if magic.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                return not any(name.endswith("data.pkl") for name in z.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def check_encoders(projector: Projector, *, x_encoder: str | None = None, y_encoder: str | None = None,
                   where: str = "this projector") -> None:
    """Refuse features of another encoder than the one the projector was trained on (when both are known); see
    :func:`align._provenance.check_trained_on`."""
    from align._provenance import check_trained_on

    check_trained_on(getattr(projector, "metadata_", None) or {}, x_encoder=x_encoder, y_encoder=y_encoder,
                     where=where)
