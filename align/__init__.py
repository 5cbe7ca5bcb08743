"""unialign: measure, match and stitch frozen, independently trained encoders.

The heavy parts (torch, timm, sentence-transformers) are imported only by the functions that need them, so
``import align`` and ``unialign --help`` stay fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["similarity", "list_metrics", "__version__"]


def __getattr__(name):  # PEP 562: lazy public API
    if name in ("similarity", "list_metrics"):
        import importlib

        # import_module, not `from . import similarity`: the latter asks this __getattr__ again (endless recursion)
        _similarity_module = importlib.import_module(f"{__name__}.similarity")
        return getattr(_similarity_module, name)
    raise AttributeError(f"module 'align' has no attribute {name!r}")
