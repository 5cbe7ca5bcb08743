"""numpy / torch interop: compute in torch on any device, hand back what the caller gave.

The measures, matchers and projectors accept numpy arrays or torch tensors. Internally they compute in torch
(CPU or GPU); results go back to the caller's kind: numpy in, numpy out; a tensor in, a tensor on the same device
out. Nothing here moves the caller's data as a side effect: conversions return new objects.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import is_torch

__all__ = ["as_torch", "like_input", "resolve_device", "to_numpy", "to_numpy_f32"]


def resolve_device(device: Any, *inputs: Any):
    """``device=None`` means the device of the first torch input, else CPU; a string that is no torch device, or
    CUDA on a machine without it, is a one-line ``ValueError`` naming the fix."""
    import torch

    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"`device` must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"`device` {str(device)!r} asks for CUDA but no CUDA device is available; use "
                             "device='cpu'")
        return dev
    for x in inputs:
        if is_torch(x):
            return x.device
    return torch.device("cpu")


def as_torch(x: Any, *, device: Any = None, dtype: Any = None):
    """A torch view/copy of ``x`` on ``device`` (default: where it already is, CPU for numpy)."""
    import torch

    if is_torch(x):
        t = x.detach()
    else:
        t = torch.from_numpy(np.ascontiguousarray(x))
    if device is not None or dtype is not None:
        t = t.to(device=device if device is not None else t.device, dtype=dtype if dtype is not None else t.dtype)
    return t


def to_numpy(x: Any) -> np.ndarray:
    """A numpy array from a tensor (any device) or anything array-like."""
    if is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def like_input(result: Any, reference: Any):
    """Return ``result`` (a tensor) as the same kind as ``reference``: numpy, or a tensor on its device."""
    if is_torch(reference):
        return result.to(reference.device) if is_torch(result) else as_torch(result, device=reference.device)
    return to_numpy(result)


def to_numpy_f32(x: Any) -> np.ndarray:
    """A float32 numpy array from a tensor of any float dtype (bfloat16 included) or an array."""
    if is_torch(x):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
