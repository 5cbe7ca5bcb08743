"""Fixtures for the matcher tests (helpers with known answers live in ``_helpers.py``)."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def paired_features():
    """X (n, 8) and Y = X Q + noise (n, 10), Q Q^T = I: the same items through an isometric embedding."""
    rng = np.random.default_rng(1)
    n = 60
    X = rng.normal(size=(n, 8))
    Q = np.linalg.qr(rng.normal(size=(10, 8)))[0].T  # (8, 10), orthonormal rows
    Y = X @ Q + 0.05 * rng.normal(size=(n, 10))
    return X, Y
