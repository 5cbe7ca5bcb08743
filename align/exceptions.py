"""The errors unialign raises on purpose: one hierarchy under :class:`UnialignError`.

Every error the library raises for input a user can fix is a :class:`UnialignError`, itself a ``ValueError`` (the
Python convention for bad values), and a few also derive from the built-in error their case names (a wrong type is
also a ``TypeError``, a missing optional package also an ``ImportError``, …). The command line catches
``UnialignError`` (and ``OSError`` for files and disks) and prints it in one line; anything else keeps its
traceback, because it is a bug rather than bad input.

The classes stay importable from their old homes (``align._validation``, ``projectors``, ``align.app.experiment``).
"""
from __future__ import annotations

__all__ = [
    "ConfigError",
    "InputTypeError",
    "MemoryBudgetError",
    "MissingPackageError",
    "NotFittedError",
    "UnialignError",
]


class UnialignError(ValueError):
    """Base of every error unialign raises for input the caller can fix; the message names the fix."""


class InputTypeError(UnialignError, TypeError):
    """A wrong type or dtype given by the caller.

    Also a ``TypeError`` (the convention for wrong types), so ``except TypeError`` keeps working, while a
    ``TypeError`` raised by a bug deeper down (calling ``None``, a wrong argument count) is not mistaken for bad input.
    """


class MissingPackageError(UnialignError, ImportError):
    """An optional package a feature needs is not installed; the message names the ``pip install`` that fixes it.

    Also an ``ImportError``, while a broken import inside unialign itself (a bug) keeps its traceback.
    """


class MemoryBudgetError(UnialignError, MemoryError):
    """A request that would need more memory than is available, refused before anything is allocated."""


class ConfigError(UnialignError):
    """A problem with an experiment file (``unialign run``); the message starts with the key."""


class NotFittedError(UnialignError, AttributeError):
    """A fitted attribute or ``transform`` was asked of an estimator before ``fit``."""
