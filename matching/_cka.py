"""Local CKA: score every (query of X, query of Y) pair by the CKA of the seed set plus that pair."""
from __future__ import annotations

from typing import Any

import numpy as np

from align._validation import check_array, check_partial_match, is_torch

__all__ = ["local_cka_scores"]


def local_cka_scores(K: Any, L: Any, partial_match: Any, query_x: Any = None, query_y: Any = None):
    r"""Local CKA of every (query of ``X``, query of ``Y``) pair given known pairs; shape ``(q_x, q_y)``.

    ``K`` (``n_x`` x ``n_x``) and ``L`` (``n_y`` x ``n_y``) are kernel matrices over all items of each side (e.g.
    :func:`matching.kernel_matrix`); ``partial_match`` holds at least 2 known pairs ``(i, j)``. ``query_x`` /
    ``query_y`` are the items to score (default: every item not in a known pair, in index order). Entry ``(a, b)`` is
    :math:`\mathrm{CKA}(K[S_x \cup \{q_x[a]\}], L[S_y \cup \{q_y[b]\}])` (Maniparambil et al., CVPR 2024), computed
    for all pairs by one matrix product and equal to the loop over pairs; :func:`matching.local_cka` assigns these
    scores. numpy kernels give a numpy array, torch kernels a tensor on their device.
    """
    import torch

    was_numpy = not is_torch(K)
    K, L = check_array(K, "K"), check_array(L, "L")
    for name, M in (("K", K), ("L", L)):
        if M.shape[0] != M.shape[1]:
            raise ValueError(f"`{name}` must be a square kernel matrix, got shape {tuple(M.shape)}; "
                             "build one with matching.kernel_matrix(X)")
    K = torch.as_tensor(K)
    L = torch.as_tensor(L, device=K.device)
    dtype = torch.promote_types(K.dtype, L.dtype)
    K, L = K.to(dtype), L.to(dtype)
    pm = check_partial_match(partial_match, K.shape[0], L.shape[0])
    if len(pm) < 2:
        raise ValueError(f"local CKA needs at least 2 known pairs in `partial_match`, got {len(pm)}")
    qx = _indices("query_x", query_x, K.shape[0], pm[:, 0])
    qy = _indices("query_y", query_y, L.shape[0], pm[:, 1])
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(K.device)  # noqa: E731
    S = _scores(K, L, t(pm[:, 0]), t(pm[:, 1]), t(qx), t(qy))
    return S.cpu().numpy() if was_numpy else S


def _indices(name: str, q: Any, n: int, known: np.ndarray) -> np.ndarray:
    """Query indices as int64 (default: the items not in ``known``), checked against ``n`` items."""
    if q is None:
        return np.setdiff1d(np.arange(n), known)
    q = np.asarray(q.detach().cpu().numpy() if is_torch(q) else q)
    if q.ndim != 1 or (q.size and q.dtype.kind not in "iu"):
        raise ValueError(f"`{name}` must be a 1-D integer array of item indices, got shape {q.shape}, dtype {q.dtype}")
    if q.size and (q.min() < 0 or q.max() >= n):
        raise ValueError(f"`{name}` must index items 0..{n - 1}, got values in [{q.min()}, {q.max()}]")
    return q.astype(np.int64)


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


def _scores(K, L, base_x, base_y, query_x, query_y):
    r"""Local CKA of every pair (``query_x[i]``, ``query_y[j]``) for torch kernels and index tensors; ``(q_x, q_y)``.

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
