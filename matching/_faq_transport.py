"""The transport (GOAT) iteration of :func:`matching.faq` (``transport=True``): the seed / non-seed blocks of both
sides, Sinkhorn directions for a batch of restarts (scale domain, log-domain fallback) and the restarts' loop.

The front door is :mod:`matching._faq`; the assignment-direction engine :mod:`matching._faq_frank_wolfe`.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._faq_frank_wolfe import _Operand, _score

log = logging.getLogger(__name__)


class _Blocks:
    """The seed / non-seed blocks of both sides after seeds are moved first (Fishkind et al. 2019 notation)."""

    def __init__(self, a: _Operand, b: _Operand, s: int):
        self.s = s
        self.sym = a.is_symmetric() and b.is_symmetric()
        self.low_rank = a.factor is not None
        if self.low_rank:
            Fs, Fn = a.factor[:s], a.factor[s:]
            Gs, Gn = b.factor[:s], b.factor[s:]
            self.Fn, self.Gn = Fn, Gn
            # A21 B21^T + A12^T B12 = 2 Fn (Fs^T Gs) Gn^T
            self.C = 2.0 * (Fn @ (Fs.T @ Gs)) @ Gn.T
        else:
            A, B = a.dense, b.dense
            self.A22, self.B22 = A[s:, s:].contiguous(), B[s:, s:].contiguous()
            self.A22T, self.B22T = self.A22.T.contiguous(), self.B22.T.contiguous()  # row gathers stay contiguous
            self.C = A[s:, :s] @ B[s:, :s].T + A[:s, s:].T @ B[:s, s:]

    def prod(self, P):
        """:math:`A_{22} P B_{22}^\\top` for a batch ``P`` of shape (r, m, m)."""
        if self.low_rank:
            return self.Fn @ ((self.Fn.T @ P) @ self.Gn) @ self.Gn.T
        return self.A22 @ P @ self.B22.T

    def prod_t(self, P):
        """:math:`A_{22}^\\top P B_{22}` (equal to :meth:`prod` for symmetric sides)."""
        return self.A22T @ P @ self.B22

    def prod_perm(self, cols):
        """:math:`A_{22} Q B_{22}^\top` for permutations ``Q[i, cols[i]] = 1``: ``Q B^T`` is a row gather of ``B^T``,
        so this is one product (``O(m^3)``, or ``O(m^2 d)`` for factors) instead of two."""
        if self.low_rank:
            return self.Fn @ (self.Fn.T @ self.Gn[cols]) @ self.Gn.T
        return self.A22 @ self.B22T[cols]

    def prod_t_perm(self, cols):
        """:math:`A_{22}^\top Q B_{22}` for permutations (one product)."""
        return self.A22T @ self.B22[cols]

    def quad_perm(self, cols):
        """:math:`\\langle A_{22} Q B_{22}^\\top, Q\\rangle` for permutations ``Q[i, cols[i]] = 1``, batch (r, m)."""
        if self.low_rank:
            return (self.Fn.T @ self.Gn[cols]).square().sum(dim=(1, 2))
        r, m = cols.shape
        Bq = self.B22[cols].gather(2, cols[:, None, :].expand(r, m, m))  # B22[c_i, c_k]: a row gather, then columns
        return (self.A22 * Bq).sum(dim=(1, 2))


def _sinkhorn_max(grad, reg: float, max_iter: int, tol: float, cache_bytes: int = 1 << 22):
    r"""Doubly stochastic ``Q`` maximising :math:`\langle G, Q\rangle + H(Q)/\lambda`, one per problem of a batch.

    ``lambda = reg / max|G|`` per problem, as in graspologic's ``transport=True`` (GOAT, Saad-Eldin et al. 2021),
    which calls POT's ``sinkhorn(1, 1, G, -1 / lambda, stopThr=tol, numItermax=max_iter)``. This is the same
    Sinkhorn–Knopp iteration (POT's ``sinkhorn_knopp``): ``K = exp(lambda G)``, ``u = v = 1/m``, then
    ``v = 1 / (K^T u)``, ``u = 1 / (K v)``; every tenth iteration (0, 10, ...) it stops when the column sums of
    ``diag(u) K diag(v)`` are within ``tol`` (Euclidean norm) of 1. Each problem stops on its own: converged ones
    leave the batch. ``K`` is built from ``G - max G`` (the same plan: ``v`` absorbs the constant), so its entries
    lie in :math:`[e^{-2\,\mathrm{reg}}, 1]` and never overflow; a problem whose scalings still leave the floating-
    point range (``reg`` of several hundred in float64, or float32) is solved again by the same iteration in the
    log domain (:func:`_sinkhorn_max_log`), where POT would stop at its last finite iterate.

    On CPU the batch is cut into chunks of about ``cache_bytes`` of ``K``: the iteration is two matrix–vector
    products per step, bound by memory traffic, and a chunk that stays in cache runs several times faster.
    """
    r, m, _ = grad.shape
    if grad.device.type != "cpu":
        return _sinkhorn_knopp(grad, reg, max_iter, tol)
    step = max(1, cache_bytes // (m * m * grad.element_size()))
    if step >= r:
        return _sinkhorn_knopp(grad, reg, max_iter, tol)
    out = grad.new_empty(grad.shape)
    for lo in range(0, r, step):
        out[lo:lo + step] = _sinkhorn_knopp(grad[lo:lo + step], reg, max_iter, tol)
    return out


@np.errstate(all="ignore")  # inf / nan scalings are caught in the loop and solved again in the log domain
def _sinkhorn_knopp(grad, reg: float, max_iter: int, tol: float, use_numpy: bool | None = None):
    """:func:`_sinkhorn_max` on one chunk (matrix–vector products by numpy on CPU unless ``use_numpy=False``)."""
    import torch

    r, m, _ = grad.shape
    lam = reg / grad.abs().amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
    K = torch.exp((grad - grad.amax(dim=(1, 2), keepdim=True)) * lam)
    out = torch.empty_like(grad)
    alive = torch.arange(r, device=grad.device)
    failed = []
    if use_numpy is None:
        use_numpy = grad.device.type == "cpu"
    if use_numpy:  # numpy's batched matrix-vector products are ~5x faster than torch.bmm's on CPU
        def uK(u, K):
            return torch.from_numpy(np.matmul(u.numpy()[:, None, :], K.numpy())[:, 0])

        def Kv(K, v):
            return torch.from_numpy(np.matmul(K.numpy(), v.numpy()[:, :, None])[:, :, 0])
    else:
        def uK(u, K):
            return torch.bmm(u[:, None, :], K)[:, 0]

        def Kv(K, v):
            return torch.bmm(K, v[:, :, None])[:, :, 0]
    u = grad.new_full((r, m), 1.0 / m)
    Ktu = uK(u, K)
    for it in range(max_iter):
        v = Ktu.reciprocal()  # 1 / (K^T u)
        u = Kv(K, v).reciprocal_()  # 1 / (K v)
        Ktu = uK(u, K)  # the next step's K^T u, and the column sums v * K^T u of this step's plan
        if it % 10 and it != max_iter - 1:
            continue
        ok = (torch.isfinite(u).all(1) & torch.isfinite(v).all(1) & (u > 0).all(1) & (v > 0).all(1))
        err = torch.linalg.vector_norm(v * Ktu - 1.0, dim=1)
        leave = ~ok | (err < tol) if it != max_iter - 1 else torch.ones_like(ok)
        if not bool(leave.any()):
            continue
        done = leave & ok
        if bool(done.any()):
            out[alive[done]] = u[done][:, :, None] * K[done] * v[done][:, None, :]
        if not bool(ok.all()):
            failed.append(alive[~ok])
        keep = ~leave
        if not bool(keep.any()):
            break
        K, Ktu, alive = K[keep], Ktu[keep], alive[keep]
    if failed:
        idx = torch.cat(failed)
        out[idx] = _sinkhorn_max_log(grad[idx], reg, max_iter, tol)
    return out


def _sinkhorn_max_log(grad, reg: float, max_iter: int, tol: float):
    """:func:`_sinkhorn_max` in the log domain (the same iterates as ``log u``, ``log v``): the slow, safe fallback."""
    import torch

    r, m, _ = grad.shape
    lam = reg / grad.abs().amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
    logK = grad * lam
    f = grad.new_full((r, m), -math.log(m))
    g = grad.new_full((r, m), -math.log(m))
    out = torch.empty_like(grad)
    alive = torch.arange(r, device=grad.device)
    for it in range(max_iter):
        g = -torch.logsumexp(logK + f[:, :, None], dim=1)
        f = -torch.logsumexp(logK + g[:, None, :], dim=2)
        if it % 10 and it != max_iter - 1:
            continue
        cols = torch.exp(logK + f[:, :, None] + g[:, None, :]).sum(dim=1)
        leave = torch.linalg.vector_norm(cols - 1.0, dim=1) < tol
        if it == max_iter - 1:
            leave[:] = True
        if bool(leave.any()):
            out[alive[leave]] = torch.exp(logK[leave] + f[leave][:, :, None] + g[leave][:, None, :])
            keep = ~leave
            if not bool(keep.any()):
                break
            logK, f, g, alive = logK[keep], f[keep], g[keep], alive[keep]
    return out


def _transport_batch(blocks, a, b, lo, hi, fill_starts, full_perm, best, m, max_iter, tol, reg, s_max_iter, s_tol,
                     dev, dtype):
    """Restarts ``lo..hi-1`` of the transport (GOAT) relaxation: the direction is a dense Sinkhorn plan ``Q``."""
    import torch

    P = torch.empty((hi - lo, m, m), device=dev, dtype=dtype)
    fill_starts(P, lo, hi)
    n_iter = np.zeros(hi - lo, dtype=np.int64)
    converged = np.zeros(hi - lo, dtype=bool)
    final_P: list = [None] * (hi - lo)
    alive = np.arange(hi - lo)  # batch positions of the restarts still iterating (the rows of P, G1, G2)
    G1 = blocks.prod(P)
    G2 = G1 if blocks.sym else blocks.prod_t(P)
    for it in range(1, max_iter + 1):
        grad = torch.add(blocks.C, G1, alpha=2.0) if blocks.sym else blocks.C + G1 + G2
        gP = (grad * P).sum(dim=(1, 2))
        G1P = (G1 * P).sum(dim=(1, 2))
        PP = (P * P).sum(dim=(1, 2))
        Q = _sinkhorn_max(grad, reg, s_max_iter, s_tol)
        AQB = blocks.prod(Q)
        qq = (AQB * Q).sum(dim=(1, 2))
        gQ = (grad * Q).sum(dim=(1, 2))
        G1Q = (G1 * Q).sum(dim=(1, 2))
        G2Q = G1Q if blocks.sym else (G2 * Q).sum(dim=(1, 2))
        DD = (Q * Q).sum(dim=(1, 2)) - 2 * (Q * P).sum(dim=(1, 2)) + PP
        del grad
        lin = gQ - gP
        quad = qq - G2Q - G1Q + G1P
        t_interior = torch.clamp(-lin / (2 * torch.where(quad < 0, quad, -torch.ones_like(quad))), 0.0, 1.0)
        t = torch.where(quad < 0, t_interior, (lin + quad >= 0).to(dtype))
        step = t * torch.sqrt(torch.clamp(DD, min=0.0)) / math.sqrt(m)
        P.mul_((1.0 - t)[:, None, None])
        P.add_(t[:, None, None] * Q)
        n_iter[alive] = it
        done = (step < tol).cpu().numpy()
        converged[alive[done]] = True
        if it == max_iter:
            done[:] = True
        for k in np.flatnonzero(done):
            final_P[alive[k]] = P[k].detach().cpu().numpy().copy()
        if done.all():
            break
        AtQB = None if blocks.sym else blocks.prod_t(Q)
        if done.any():
            keep = torch.from_numpy(~done).to(dev)
            P, G1, t, AQB = P[keep], G1[keep], t[keep], AQB[keep]
            if not blocks.sym:
                G2, AtQB = G2[keep], AtQB[keep]
            alive = alive[~done]
        G1.lerp_(AQB, t[:, None, None])  # (1 - t) G1 + t A Q B^T
        if blocks.sym:
            G2 = G1
        else:
            G2.lerp_(AtQB, t[:, None, None])
    for k, r in enumerate(range(lo, hi)):
        Pk = final_P[k]
        if np.all(Pk.max(axis=1) == 1.0):  # already a permutation matrix: it is its own projection
            cols = Pk.argmax(axis=1)
        else:
            cols = linear_sum_assignment(Pk, maximize=True)[1]
        perm = full_perm(cols)
        score = _score(a, b, torch.from_numpy(perm).to(dev))
        if best is None or score > best[0]:
            best = (score, perm, int(n_iter[k]), bool(converged[k]))
        log.debug("faq restart %d: score %.6g after %d iterations", r, score, n_iter[k])
    return best

