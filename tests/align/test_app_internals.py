"""Helpers of the app wing: a dataset field chosen by modality, the demo's thread limit and its class split."""
from __future__ import annotations

import numpy as np
import pytest

from align.app._features import field_for
from align.app.demo import _limited_threads, _split_classes


def test_select_picks_each_encoders_field_by_modality():
    class Captions:  # the parts of the Dataset contract field_for reads
        spec, fields, default_field = "captions:x", ("image", "caption"), "image"

        def modality(self, field):
            return {"image": "image", "caption": "text"}[field]

        def resolve_field(self, field):
            return field

    ds = Captions()
    assert field_for(ds, "image", None) == "image"
    assert field_for(ds, "text", None) == "caption"
    assert field_for(ds, "text", "caption") == "caption"
    with pytest.raises(ValueError, match="has no graph field"):
        field_for(ds, "graph", None)


def test_thread_limit_is_applied_and_restored():
    torch = pytest.importorskip("torch")
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with _limited_threads(1):
            assert torch.get_num_threads() == 1
            assert all(pool["num_threads"] == 1 for pool in threadpool_info())
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_split_classes_keeps_halves_and_forces_the_given_classes_unseen():
    gen = np.random.default_rng(3)
    seen, unseen = _split_classes(11, [0, 1, 2, 3, 2], gen)
    assert len(seen) == 5 and len(unseen) == 6
    assert set(seen.tolist()).isdisjoint(unseen.tolist()) and set(seen) | set(unseen) == set(range(11))
    assert {0, 1, 2, 3} <= set(unseen.tolist())
    # without constraints it is a plain seeded random half
    a = _split_classes(10, [], np.random.default_rng(5))
    b = _split_classes(10, [], np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
