"""The similarity memory guard's estimates: enormous widths are refused by name, paper-sized work is not."""
from __future__ import annotations

import pytest

import align._validation as validation
from align._similarity._memory import check_similarity_memory


def test_enormous_width_names_the_memory_and_the_fix(monkeypatch):
    """(n, d) = (10, 10,000,000) float32 is a 400 MB file; the float64 copies of the Gram route need 1.5 GiB."""
    monkeypatch.setattr(validation, "available_memory", lambda device=None: 2**30)
    with pytest.raises(ValueError, match=r"\(10, 10,000,000\).* needs about 1\.\d GiB but only 1\.0 GiB .*"
                                         r"reduce the dimensions"):
        check_similarity_memory("linear_cka", 10, 10_000_000, 10_000_000, {}, None, None)


def test_realistic_work_is_not_refused_on_a_laptop(monkeypatch):
    """The guards are upper bounds, not wild ones: these fit in 8 GiB."""
    monkeypatch.setattr(validation, "available_memory", lambda device=None: 8 * 2**30)
    check_similarity_memory("rbf_cka", 50_000, 1024, 768, {}, None, None)  # tiled route: blocks, not n x n
    check_similarity_memory("linear_cka", 1_000_000, 1280, 384, {}, None, None)
    check_similarity_memory("mutual_knn", 100_000, 1024, 768, {"k": 10}, None, None)
