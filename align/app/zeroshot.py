"""Stitched encoders: a frozen encoder followed by a fitted projector, landing in another encoder's space.

An image encoder stitched to a projector trained towards a text encoder's space embeds images where that text
encoder embeds class names, so images can be classified zero-shot by their nearest class prompt
(:func:`align.evaluation.build_zero_shot_classifier`, :func:`align.evaluation.zero_shot_accuracy`).

A projector saved with the specs of the encoders it connects (``projector.save(path, x_encoder="efficientnet-lite0",
y_encoder="minilm", layer=…, pooling=…)``, which ``unialign fit --x-encoder/--y-encoder`` writes) is enough to rebuild
the stitched encoder: :func:`load_stitched` reads the metadata and loads the source encoder with the same layer and
pooling (through :func:`projectors.load_projector`). Part of the app wing (:mod:`align.app`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

import projectors

from .._validation import InputTypeError
from .._provenance import check_trained_on

log = logging.getLogger(__name__)

__all__ = [
    "StitchedEncoder",
    "ZeroShotPredictions",
    "dataset_labels_for_classes",
    "load_stitched",
    "zeroshot_from_projector",
    "zero_shot_classify",
]


class StitchedEncoder:
    """``encoder`` then ``projector``: ``encode(inputs) = projector.transform(encoder.encode(inputs))``.

    Parameters
    ----------
    encoder : align.encoders.Encoder
        The frozen source encoder (image, text, 3D or graph), loaded with the layer and pooling the projector was
        trained on.
    projector : fitted projector
        Anything with ``transform(X)`` and ``n_features_in_`` (``projectors.make_projector(…).fit(…)`` or
        ``projectors.load_projector(path)``).
    target : str, optional
        The spec of the encoder whose space the projector maps into (e.g. ``"minilm"``); informational, and what
        :meth:`target_encoder` loads.

    Attributes
    ----------
    spec : str
        ``"stitched:<source spec>-><target spec>"``.
    modality : str
        The source encoder's modality.
    dim : int
        Output dimension (the target space).
    """

    def __init__(self, encoder: Any, projector: Any, *, target: str | None = None):
        if not hasattr(encoder, "encode") or not hasattr(encoder, "dim"):
            raise InputTypeError(f"`encoder` must be an align encoder (encode(), dim), got {type(encoder).__name__}")
        if not hasattr(projector, "transform"):
            raise InputTypeError(f"`projector` must have transform(X), got {type(projector).__name__}")
        n_in = getattr(projector, "n_features_in_", None)
        if n_in is None:
            raise ValueError("`projector` is not fitted; fit it or load a saved one with projectors.load_projector")
        if int(n_in) != int(encoder.dim):
            raise ValueError(
                f"the projector takes {n_in}-d inputs but encoder {encoder.spec!r} gives {encoder.dim}-d features; "
                "load the encoder with the layer and pooling the projector was trained on"
            )
        check_trained_on(getattr(projector, "metadata_", None) or {}, x_encoder=getattr(encoder, "spec", None),
                         y_encoder=target, where="the projector", action="stitched to")
        self.encoder = encoder
        self.projector = projector
        self.target = target
        self.modality = encoder.modality
        self.spec = f"stitched:{encoder.spec}->{target or '?'}"
        self._dim = None

    @property
    def dim(self) -> int:
        if self._dim is None:  # ask the projector (one-sided kinds give d_y, CCA its k components)
            self._dim = int(np.asarray(self.projector.transform(np.zeros((1, self.encoder.dim), np.float32))).shape[1])
        return self._dim

    def transform_features(self, X: Any) -> np.ndarray:
        """Project features already extracted by the source encoder, ``(n, encoder.dim) -> (n, dim)`` float32."""
        Z = self.projector.transform(np.asarray(X, dtype=np.float32))
        return np.asarray(Z, dtype=np.float32)

    def encode(self, inputs: Sequence[Any], *, batch_size: int | None = None, show_progress: bool = False) -> np.ndarray:
        """``(n, dim)`` float32: the source encoder's features of ``inputs``, projected into the target space."""
        return self.transform_features(self.encoder.encode(inputs, batch_size=batch_size, show_progress=show_progress))

    def target_encoder(self, **options):
        """Load the target encoder named in the projector's metadata (e.g. to build a zero-shot classifier)."""
        if not self.target:
            raise ValueError("this stitched encoder does not know its target encoder; pass target= or save the "
                             "projector with y_encoder=")
        from ..encoders import load_encoder

        return load_encoder(self.target, **options)

    def __repr__(self) -> str:
        return f"StitchedEncoder(spec={self.spec!r}, dim={self.dim})"


def load_stitched(
    path: str | os.PathLike,
    *,
    encoder: str | None = None,
    target: str | None = None,
    **encoder_options: Any,
) -> StitchedEncoder:
    """Rebuild a stitched encoder from a projector checkpoint alone.

    Parameters
    ----------
    path : path
        A file written by ``Projector.save`` (``unialign fit --out``).
    encoder, target : str, optional
        The source / target encoder specs, needed when the checkpoint records none (``x_encoder`` /
        ``y_encoder``); one that contradicts the recorded spec is refused (``ValueError``) before any model loads.
    **encoder_options
        Extra options for ``load_encoder`` (``device``, ``dtype``, ``batch_size``); ``layers`` and ``pooling`` come
        from the checkpoint unless given here.

    Returns
    -------
    StitchedEncoder
    """
    from ..encoders import load_encoder

    projector = projectors.load_projector(path)
    meta = dict(getattr(projector, "metadata_", {}) or {})
    source = encoder or meta.get("x_encoder")
    if not source:
        raise ValueError(
            f"projector {str(path)!r} records no source encoder; pass --encoder SPEC, or refit it with "
            "`unialign fit --x-encoder SPEC` so the checkpoint names it"
        )
    # before loading an encoder the projector would refuse
    check_trained_on(meta, x_encoder=source, y_encoder=target, where=f"projector {str(path)!r}", action="stitched to")
    options = dict(encoder_options)
    if meta.get("layer") is not None and "layers" not in options:
        layer = meta["layer"]
        options["layers"] = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if meta.get("pooling") is not None and "pooling" not in options:
        options["pooling"] = meta["pooling"]
    enc = load_encoder(source, **options)
    return StitchedEncoder(enc, projector, target=target or meta.get("y_encoder"))


# --------------------------------------------------------------------------------------------------------------
# Zero-shot classification with a stitched encoder
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ZeroShotPredictions:
    """The top classes of each input and, when the inputs are labelled with known classes, the accuracy.

    Attributes
    ----------
    ids : list of str
        Input ids (dataset rows), in order.
    class_names : list of str
    top : ndarray of shape (n, k)
        Class indices, best first.
    scores : ndarray of shape (n, k)
        Their cosine similarities.
    labels : ndarray of shape (n,) or None
        The true class index of each input (into ``class_names``), when known.
    accuracy : align.evaluation.ZeroShotResult or None
    note : str
        Why there is no accuracy, if there is none.
    """

    ids: list
    class_names: list
    top: np.ndarray
    scores: np.ndarray
    labels: np.ndarray | None = None
    accuracy: Any = None
    note: str = ""

    def to_dict(self) -> dict:
        preds = []
        for i, item in enumerate(self.ids):
            row = {"id": item, "top": [{"class": int(c), "name": self.class_names[c], "score": float(s)}
                                       for c, s in zip(self.top[i], self.scores[i])]}
            if self.labels is not None:
                row["label"] = int(self.labels[i])
                row["label_name"] = self.class_names[int(self.labels[i])]
            preds.append(row)
        out = {"n": len(self.ids), "n_classes": len(self.class_names), "predictions": preds}
        out["accuracy"] = None if self.accuracy is None else self.accuracy.to_dict()
        if self.note:
            out["note"] = self.note
        return out


def dataset_labels_for_classes(dataset: Any, class_ids: Sequence[str], class_names: Sequence[str]):
    """The label of every item of ``dataset`` as an index into the given classes, or ``(None, why)``.

    ImageNet-labelled image folders map by wnid (class ids of ``concepts:`` datasets are wnids); anything else maps
    by class name, case-insensitively.
    """
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return None, "the inputs are unlabelled"
    labels = np.asarray(labels)
    if getattr(dataset, "imagenet_labels", False):
        from ..data._concepts import imagenet_wnids

        wnids = imagenet_wnids()
        index = {w: i for i, w in enumerate(class_ids)}
        keys = [wnids[int(c)] for c in labels]
        if all(k in index for k in keys):
            return np.array([index[k] for k in keys], dtype=np.int64), ""
    names = [str(n).strip().lower() for n in getattr(dataset, "classes", None) or []]
    index = {}
    for i, name in enumerate(class_names):
        index.setdefault(str(name).strip().lower(), i)
    mapped = [index.get(names[int(c)]) if int(c) < len(names) else None for c in labels]
    missing = sorted({names[int(c)] for c, m in zip(labels, mapped) if m is None and int(c) < len(names)})
    if missing or any(m is None for m in mapped):
        return None, (f"{len(missing)} label class(es) of the inputs are not among the given classes "
                      f"(e.g. {missing[0]!r})" if missing else "the inputs' labels have no class names")
    return np.array(mapped, dtype=np.int64), ""


def zero_shot_classify(
    stitched: StitchedEncoder,
    dataset: Any,
    classifier: Any,
    class_names: Sequence[str],
    *,
    labels: Any = None,
    top_k: int = 5,
    field: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
) -> ZeroShotPredictions:
    """Classify every item of ``dataset`` by the class vector nearest to its stitched embedding (cosine).

    The source features are extracted through the feature cache (:func:`align.features.embed`), so classifying
    the same images against other classes or another projector does not run the encoder again.

    Parameters
    ----------
    stitched : StitchedEncoder
    dataset : align.data.Dataset
        E.g. ``load_dataset("imagefolder:photos/")``.
    classifier : array of shape (n_classes, stitched.dim)
        Class vectors in the target space, e.g. from :func:`align.evaluation.build_zero_shot_classifier`.
    class_names : sequence of str
        One per row of ``classifier``.
    labels : int array of shape (n,), optional
        True class indices (into ``class_names``); with them the result carries top-1/top-k accuracy.
    top_k : int
        Classes reported per item.

    Returns
    -------
    ZeroShotPredictions
    """
    from .._validation import check_array, check_int
    from ..evaluation import zero_shot_accuracy
    from ..features import embed

    C = np.asarray(check_array(classifier, "classifier"), dtype=np.float64)
    if len(class_names) != C.shape[0]:
        raise ValueError(f"`class_names` has {len(class_names)} entries but `classifier` has {C.shape[0]} rows")
    if C.shape[1] != stitched.dim:
        raise ValueError(f"`classifier` has {C.shape[1]} columns but the stitched encoder gives {stitched.dim}-d "
                         "vectors; build the class vectors with the projector's target encoder")
    top_k = min(check_int("top_k", top_k, min_value=1), C.shape[0])
    feats = embed(stitched.encoder, dataset, field=field, cache_dir=cache_dir, batch_size=batch_size,
                  show_progress=show_progress)
    Z = stitched.transform_features(feats.X).astype(np.float64)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    Cn = C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    S = Z @ Cn.T
    top = np.argsort(-S, axis=1, kind="stable")[:, :top_k]
    scores = np.take_along_axis(S, top, 1)
    acc = None
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        ks = sorted({1, top_k})
        acc = zero_shot_accuracy(Z, Cn, labels, ks=ks)
    return ZeroShotPredictions(ids=list(feats.ids), class_names=list(class_names), top=top, scores=scores,
                               labels=labels, accuracy=acc)


# --------------------------------------------------------------------------------------------------------------
# The whole `unialign zeroshot` workflow
# --------------------------------------------------------------------------------------------------------------


def _classes(spec: str) -> tuple[list, list, Any]:
    """(names, ids, dataset with a ``prompt`` field or None) of the candidate classes: a text file of names, one a
    line, or a dataset spec (``concepts:imagenet-1k``: lemmas, wnids and prompts)."""
    from pathlib import Path

    from ..data import load_dataset

    if Path(spec).is_file():
        names = [ln.strip() for ln in Path(spec).read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not names:
            raise ValueError(f"--classes file {spec!r} holds no class names; write one per line")
        return names, names, None
    classes_ds = load_dataset(spec)
    field = "lemma" if "lemma" in classes_ds.fields else classes_ds.default_field
    names = [classes_ds.get(i, field) for i in range(len(classes_ds))]
    return names, list(classes_ds.ids), classes_ds if "prompt" in classes_ds.fields else None


def zeroshot_from_projector(
    projector: str | os.PathLike,
    images: str,
    *,
    classes: str = "concepts:imagenet-1k",
    templates: Sequence[str] = (),
    class_features: str | None = None,
    encoder: str | None = None,
    text_encoder: str | None = None,
    top_k: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    show_progress: bool = False,
    command: str = "align.app.zeroshot.zeroshot_from_projector",
    options: dict | None = None,
) -> dict:
    """Classify ``images`` zero-shot: source encoder -> projector -> nearest class vector in the target space.

    Parameters
    ----------
    projector : path
        A projector file from ``unialign fit`` / :func:`align.app.fit.fit_from_files` (it names the encoders).
    images : str
        A folder of images (class sub-folders or ``<wnid>_<name>.JPEG`` files give labels) or a dataset spec.
    classes : str
        A dataset spec (``concepts:imagenet-1k``, ``text:FILE``) or a text file with one class name per line.
    templates : sequence of str
        Prompt templates with ``{}`` (averaged); default: the classes' own ``prompt`` field when they have one,
        else ``"{}"``.
    class_features : str, optional
        Precomputed class vectors (n_classes, d) in the target space instead of embedding the names.
    encoder, text_encoder : str, optional
        Override the source / target encoder the projector file names (a contradiction is refused).
    top_k : int, optional
        Classes reported per image; default up to 5 (an explicit value larger than the classes is an error).
    batch_size, device, cache_dir, show_progress
        For the encoders and the feature cache.
    command, options : optional
        What the provenance record names as the producer.

    Returns
    -------
    dict
        ``projector``, ``encoder``, ``target``, ``images``, ``classes``, ``class_vectors``, the predictions and
        accuracy of :class:`ZeroShotPredictions` (``note`` when there is none), and ``provenance``.
    """
    from pathlib import Path

    from .._io import load_features
    from .._provenance import provenance, recorded_encoder
    from ..data import load_dataset
    from ..evaluation import build_zero_shot_classifier

    options_ = {"device": device} if device else {}
    class_encoder = recorded_encoder(class_features) if class_features is not None else None
    if text_encoder is not None and class_encoder is not None and text_encoder != class_encoder:
        raise ValueError(f"--text-encoder is {text_encoder!r} but --class-features {class_features!r} records "
                         f"features of {class_encoder!r}; drop one of them or make them agree")
    # a projector that records its encoders refuses others (named in the error) before anything is embedded
    stitched = load_stitched(projector, encoder=encoder, target=text_encoder or class_encoder, **options_)
    dataset = load_dataset(images if ":" in images and not Path(images).exists() else f"imagefolder:{images}")
    names, class_ids, prompts_ds = _classes(classes)
    if class_features is not None:
        C = np.asarray(load_features(class_features))
        if C.ndim != 2 or C.shape[0] != len(names):
            raise ValueError(f"--class-features must have one row per class ({len(names)}), got shape {C.shape}")
        source = "class-features"
    else:
        target = stitched.target_encoder(**options_)
        if templates or prompts_ds is None:
            C = build_zero_shot_classifier(target, names, list(templates) or ["{}"], show_progress=show_progress)
            source = "templates"
        else:
            from ..features import embed

            C = np.asarray(embed(target, prompts_ds, field="prompt", cache_dir=cache_dir,
                                 show_progress=show_progress).X)
            source = "prompt field"
    if top_k is None:  # the default asks for "up to 5"
        top_k = min(5, len(names))
    elif top_k > len(names):
        raise ValueError(f"--top-k {top_k} is larger than the {len(names)} candidate classes; use --top-k "
                         f"{len(names)} or fewer, or give more --classes")
    labels, note = dataset_labels_for_classes(dataset, class_ids, names)
    result = zero_shot_classify(stitched, dataset, C, names, labels=labels, top_k=top_k, cache_dir=cache_dir,
                                batch_size=batch_size, show_progress=show_progress)
    out = {"projector": str(projector), "encoder": stitched.encoder.spec, "target": stitched.target,
           "images": dataset.spec, "classes": classes, "class_vectors": source, **result.to_dict()}
    if labels is None:
        out["note"] = f"no accuracy: {note}"
    out["provenance"] = provenance(
        command=command, options=dict(options or {}), projector=Path(projector), encoder=stitched.encoder.spec,
        target=stitched.target, images={"spec": dataset.spec, "fingerprint": dataset.fingerprint(dataset.default_field)},
        classes=Path(classes) if Path(classes).is_file() else classes,
        class_features=None if class_features is None else Path(class_features), templates=list(templates),
        class_vectors=source)
    return out
