"""The matching memory guard's estimates: a million items is refused in TiB, the paper protocols are not."""
from __future__ import annotations

import pytest

import align._validation as validation
from matching._api import check_match_memory


def test_a_million_items_names_the_memory(monkeypatch):
    monkeypatch.setattr(validation, "available_memory", lambda device=None: 2**30)
    with pytest.raises(MemoryError, match=r"1,000,000 x 1,000,000 items.* TiB"):
        check_match_memory("faq", 1_000_000, 1_000_000, {}, dims=(384, 384))


def test_realistic_work_is_not_refused_on_a_laptop(monkeypatch):
    """The guards are upper bounds, not wild ones: the paper protocols fit in 8 GiB."""
    monkeypatch.setattr(validation, "available_memory", lambda device=None: 8 * 2**30)
    check_match_memory("faq", 820, 820, {"n_init": 500, "kernel": "centered_rbf"}, dims=(1024, 1024))  # Maniparambil
    check_match_memory("faq", 2000, 2000, {"n_init": 500}, dims=(384, 384))
    check_match_memory("gw", 2000, 2000, {}, dims=(384, 384))
