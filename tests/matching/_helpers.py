"""Synthetic problems with known answers for the matchers."""
from __future__ import annotations

import numpy as np


def planted(A: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """``B`` with ``B[perm[i], perm[k]] = A[i, k]``: node ``i`` of A is node ``perm[i]`` of B."""
    B = np.empty_like(A)
    B[np.ix_(perm, perm)] = A
    return B


def correlated_graphs(n: int, p: float, rho: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two rho-correlated Erdős–Rényi graphs on the same nodes (undirected, no self-loops)."""
    A = np.triu((rng.random((n, n)) < p).astype(float), 1)
    U = rng.random((n, n))
    B = np.triu(np.where(A == 1, U < p + rho * (1 - p), U < p * (1 - rho)).astype(float), 1)
    return A + A.T, B + B.T


def hide(X: np.ndarray, Y: np.ndarray, n_seeds: int, rng: np.random.Generator):
    """Shuffle Y's rows; return (Y_shuffled, partial_match of the first n_seeds items, truth col_ind)."""
    perm = rng.permutation(len(Y))  # item i of X is row perm[i] of the shuffled Y
    Ys = np.empty_like(Y)
    Ys[perm] = Y
    seeds = np.stack([np.arange(n_seeds), perm[:n_seeds]], axis=1)
    return Ys, seeds, perm
