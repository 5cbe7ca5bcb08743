"""align's blind-matching core: the incrementally kept 2-opt gains are the exact objective changes."""
from __future__ import annotations

import numpy as np
import pytest

from align._blind import _gains, qap_objective, two_opt


def test_two_opt_gains_equal_brute_force():
    rng = np.random.default_rng(3)
    n = 9
    A = rng.normal(size=(n, n))
    A = A + A.T
    B = rng.normal(size=(n, n))
    B = B + B.T
    c = rng.permutation(n)
    Bp = B[np.ix_(c, c)]
    D = _gains(A, Bp, A @ Bp)
    f0 = qap_objective(A, B, c)
    for i in range(n):
        for j in range(n):
            if i != j:
                c2 = c.copy()
                c2[i], c2[j] = c2[j], c2[i]
                assert D[i, j] == pytest.approx(qap_objective(A, B, c2) - f0, abs=1e-9)
    col, swaps = two_opt(A, B, c)
    assert swaps > 0 and qap_objective(A, B, col) > f0
    Bp = B[np.ix_(col, col)]
    assert _gains(A, Bp, A @ Bp).max() <= 1e-9  # a 2-opt local optimum, with the incrementally kept gains exact
