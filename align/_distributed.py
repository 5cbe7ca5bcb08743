"""Joining the ``torchrun`` process group, once, for every command that runs on several processes.

``torchrun`` starts one process per GPU and sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``. :func:`init_distributed`
joins the group (NCCL with CUDA, gloo otherwise; a group it creates is destroyed at interpreter exit) and, with CUDA,
makes ``cuda:LOCAL_RANK`` the current device, so a model loaded with ``device="cuda"`` lands on this process's GPU
rather than every rank on ``cuda:0``.
:func:`distributed_session` does the same for the length of a command and destroys the group it created at the end.
Used by ``unialign embed`` and ``unialign fit`` and by :mod:`projectors.trainer`.
"""
from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["distributed_session", "init_distributed", "local_device", "world_size_from_env"]


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed() -> bool:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); True when distributed.

    Idempotent: a group that is already initialised is kept. With CUDA the current device becomes
    ``cuda:LOCAL_RANK``.
    """
    if world_size_from_env() <= 1:
        import sys

        dist = sys.modules.get("torch.distributed")
        return bool(dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # a finished run must not abort at interpreter exit (see _leave_group); a no-op once the group is left
        atexit.register(_leave_group)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_world_size() > 1


def _leave_group() -> None:
    """Leave the group and let gloo's worker threads drop their finished work while the interpreter still runs.

    A gloo worker frees each finished collective on its own thread, and freeing one takes the GIL. When the main
    thread reaches interpreter finalisation first (a process that exits right after its last collective, on a
    loaded machine), that thread is killed inside C++ and the process aborts ("terminate called without an active
    exception", exit -6) although its work is done. Sleeping hands the GIL to those threads before finalisation.
    """
    import gc
    import time

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return  # already left (distributed_session, or the user): nothing to drain
    dist.destroy_process_group()
    gc.collect()
    time.sleep(0.05)


def local_device(device: Any) -> Any:
    """``device`` for this process: a bare ``"cuda"`` becomes ``"cuda:LOCAL_RANK"`` under ``torchrun``; anything
    else (``None``, ``"cpu"``, ``"cuda:1"``, a ``torch.device`` with an index) is returned as given."""
    if world_size_from_env() > 1 and isinstance(device, str) and device.strip().lower() == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


@contextlib.contextmanager
def distributed_session() -> Iterator[bool]:
    """Join the group for the length of a ``with`` block (see :func:`init_distributed`); yields True when
    distributed. A group this call created is destroyed at the end, also when the block raises."""
    created = False
    if world_size_from_env() > 1:
        import torch.distributed as dist

        created = not (dist.is_available() and dist.is_initialized())
    distributed = init_distributed()
    try:
        yield distributed
    finally:
        if created:
            _leave_group()
