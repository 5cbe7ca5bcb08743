"""Learned maps between frozen embedding spaces: ``make_projector(kind, **params).fit(X, Y).transform(X)``.

Kinds (``list_projectors()``): ``linear`` (closed-form ridge or trained), ``procrustes`` (orthogonal, zero-pads
unequal dimensions), ``mlp`` (residual head), ``glu`` (SAIL-style gated MLP), ``cca`` (both sides into a shared
k-dim space), ``blind`` (fitted from unpaired samples, no known pairs) and ``subspace`` (chooses k by held-out
retrieval/matching, in front of any kind). Trained kinds use
the contrastive losses of :mod:`projectors.losses` and the loop of :mod:`projectors.trainer` (memory-mapped
features, AdamW, warmup + cosine, early stopping on validation R@1, atomic resumable checkpoints, DDP under
``torchrun``). ``save(path)`` / :func:`load_projector` round-trip a fitted projector with its provenance.
:func:`split_pairs` makes the training/validation split the trained kinds make (groups kept together).
Every projector says whether it trains (``trains``) and, once fitted, what it chose (``fit_report_``).
"""
from __future__ import annotations

from ._base import (
    NotFittedError,
    Projector,
    list_projectors,
    load_projector,
    make_projector,
)
from ._blind import BlindProjector
from ._linear import CCAProjector, ProcrustesProjector
from ._neural import (
    GLUProjector,
    LinearProjector,
    MLPProjector,
    TrainedProjector,
)
from ._pairs import split_pairs
from ._subspace import SubspaceProjector

__all__ = [
    "BlindProjector",
    "CCAProjector",
    "GLUProjector",
    "LinearProjector",
    "MLPProjector",
    "NotFittedError",
    "ProcrustesProjector",
    "Projector",
    "SubspaceProjector",
    "TrainedProjector",
    "list_projectors",
    "load_projector",
    "make_projector",
    "split_pairs",
]
