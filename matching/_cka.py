"""Local CKA: score every (query of X, query of Y) pair by the CKA of the seed set plus that pair."""
from __future__ import annotations

import numpy as np

__all__ = ["local_cka_scores", "local_cka_scores_naive"]


def _hsic_parts(K, base, query):
    """Per-query pieces of :math:`\\langle H K_i H, L_j\\rangle` for kernels over ``base + [i]``.

    With ``n = k + 1`` items (``k`` seeds, one query last), ``K_i = K_0 + u_i e^T + e u_i^T`` where ``K_0`` holds the
    seed block and zeros, ``e`` is the last unit vector and ``u_i = [K[base, i], K[i, i] / 2]``. Everything that
    depends on one query is returned here; the cross term is one matrix product.
    """
    import torch

    k = len(base)
    n = k + 1
    K0 = K.new_zeros((n, n))
    K0[:k, :k] = K[base][:, base]
    U = torch.cat([K[query][:, base], (torch.diagonal(K)[query] / 2)[:, None]], dim=1)  # (q, n)
    K0c = K0 - K0.mean(dim=0, keepdim=True) - K0.mean(dim=1, keepdim=True) + K0.mean()
    h = -torch.full((n,), 1.0 / n, dtype=K.dtype, device=K.device)
    h[-1] += 1.0  # H e
    return K0, K0c, U, h


def local_cka_scores(K, L, base_x, base_y, query_x, query_y):
    r"""Local CKA of every pair (``query_x[i]``, ``query_y[j]``), vectorised; shape ``(q_x, q_y)``.

    .. math::
        S_{ij} = \mathrm{CKA}\big(K[B_x \cup \{i\}],\; L[B_y \cup \{j\}]\big),\qquad
        \mathrm{CKA}(K, L) = \frac{\langle HKH, HLH\rangle}{\lVert HKH\rVert \,\lVert HLH\rVert}

    Only the query row and column change from pair to pair, so with :math:`K_i = K_0 + u_i e^\top + e u_i^\top`
    the numerator is

    .. math::
        \langle HK_0H, L_0\rangle + 2 v_j^\top HK_0H e + 2 u_i^\top HL_0H e
        + 2(1 - \tfrac1n)\, u_i^\top H v_j + 2 (h^\top u_i)(h^\top v_j),\qquad h = He,

    one ``(q_x, n) @ (n, q_y)`` product for all pairs: :math:`O(q^2 k)` instead of :math:`O(q^2 k^2)` for the
    loop over pairs. The denominators are the same formula with both sides equal.
    """
    import torch

    K0, K0c, U, h = _hsic_parts(K, base_x, query_x)
    L0, L0c, V, _ = _hsic_parts(L, base_y, query_y)
    n = U.shape[1]
    last = n - 1

    def cross(Ua, Vb, Ac, Bmat, Bc, same: bool):
        # <H(A0 + D_u)H, B0 + E_v> for all rows of Ua against all rows of Vb
        const = (Ac * Bmat).sum()
        t_v = 2.0 * (Vb @ Ac[:, last])  # <H A0 H, E_v> = 2 v^T (H A0 H) e
        t_u = 2.0 * (Ua @ Bc[:, last])  # <H D_u H, B0> = 2 u^T (H B0 H) e
        hu, hv = Ua @ h, Vb @ h
        if same:
            uHv = (Ua * Vb).sum(dim=1) - Ua.sum(dim=1) * Vb.sum(dim=1) / n
            return const + t_v + t_u + 2.0 * (1.0 - 1.0 / n) * uHv + 2.0 * hu * hv
        uHv = Ua @ Vb.T - Ua.sum(dim=1)[:, None] * Vb.sum(dim=1)[None, :] / n
        return const + t_v[None, :] + t_u[:, None] + 2.0 * (1.0 - 1.0 / n) * uHv + 2.0 * hu[:, None] * hv[None, :]

    hsic_xy = cross(U, V, K0c, L0, L0c, same=False)
    hsic_xx = cross(U, U, K0c, K0, K0c, same=True)
    hsic_yy = cross(V, V, L0c, L0, L0c, same=True)
    denom = torch.sqrt(torch.clamp(hsic_xx, min=0.0))[:, None] * torch.sqrt(torch.clamp(hsic_yy, min=0.0))[None, :]
    return hsic_xy / torch.clamp(denom, min=torch.finfo(denom.dtype).tiny)


def _cka_dense(K, L) -> float:
    Kc = K - K.mean(axis=0, keepdims=True) - K.mean(axis=1, keepdims=True) + K.mean()
    Lc = L - L.mean(axis=0, keepdims=True) - L.mean(axis=1, keepdims=True) + L.mean()
    return float((Kc * Lc).sum() / np.sqrt((Kc * Kc).sum() * (Lc * Lc).sum()))


def local_cka_scores_naive(K: np.ndarray, L: np.ndarray, base_x, base_y, query_x, query_y) -> np.ndarray:
    """The reference double loop over pairs (what the vectorised version must equal); numpy, for tests/benchmarks."""
    K, L = np.asarray(K, dtype=np.float64), np.asarray(L, dtype=np.float64)
    S = np.empty((len(query_x), len(query_y)))
    for a, i in enumerate(query_x):
        ix = np.append(base_x, i)
        Ki = K[np.ix_(ix, ix)]
        for b, j in enumerate(query_y):
            iy = np.append(base_y, j)
            S[a, b] = _cka_dense(Ki, L[np.ix_(iy, iy)])
    return S
