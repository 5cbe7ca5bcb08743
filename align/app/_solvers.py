"""The few solver-side checks the workflows need, each through the solver package's public name when it has one.

Temporary bridge: ``matching.check_params`` and ``projectors.split_pairs`` are being added by their owners; until
they land, the private fallbacks below keep today's behaviour (listed as known exceptions in tests/test_imports.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

import matching
import projectors

__all__ = ["min_known_pairs", "split_pairs"]


def min_known_pairs(method: str, params: dict) -> int:
    """Check ``method`` and its parameters (names, and values where matching checks them); return the minimum number
    of known pairs it needs. Raises ``ValueError`` (or a subclass) naming the parameter."""
    return int(matching.check_params(method, **params).min_known_pairs)


def split_pairs(n: int, groups: Any = None, fraction: float = 0.1, rng: Any = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows for fitting and for validation (all rows of one group on one side); ``(all rows, None)`` for 0."""
    return projectors.split_pairs(n, groups, fraction=fraction, rng=rng)
