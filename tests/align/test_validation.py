"""The shared boundary checks in align._validation."""
from __future__ import annotations

import numpy as np
import pytest

from align._validation import check_not_constant


def test_check_not_constant_reads_in_chunks_and_finds_a_late_difference():
    X = np.ones((10, 3))
    with pytest.raises(ValueError, match="`feats` is constant"):
        check_not_constant(X, "feats", chunk_rows=3)
    X[9, 2] = 2.0  # the only different row sits in the last chunk
    check_not_constant(X, "feats", chunk_rows=3)
    check_not_constant(np.ones((1, 3)), "single row")  # one row: nothing to compare, never an error
