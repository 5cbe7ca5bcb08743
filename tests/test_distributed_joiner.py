"""align._distributed: under torchrun a bare "cuda" is this rank's GPU; outside it nothing changes and no group is
joined. (The multi-process path itself needs several processes and is exercised by the trainer's DDP test.)"""
from __future__ import annotations

from align._distributed import distributed_session, init_distributed, local_device


def test_bare_cuda_becomes_the_local_rank_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device("cuda") == "cuda:3"
    assert local_device("cuda:1") == "cuda:1" and local_device("cpu") == "cpu" and local_device(None) is None


def test_one_process_joins_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert local_device("cuda") == "cuda"
    assert init_distributed() is False
    with distributed_session() as distributed:
        assert distributed is False
