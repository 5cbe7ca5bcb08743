"""Kernel (Gram-matrix) route of CKA: RBF CKA (biased and unbiased), and linear CKA when n is smaller than d.

Both estimators follow from a few sums over the two ``n × n`` kernel matrices K (of X) and L (of Y),

.. math::
    \\langle K, L \\rangle_F, \\; \\langle K, K \\rangle_F, \\; \\langle L, L \\rangle_F, \\; K 1, \\; L 1,
    \\; \\operatorname{diag} K, \\; \\operatorname{diag} L,

with no centring matrix and without centring either kernel:

.. math::
    \\operatorname{tr}(K H L H) = \\langle K, L \\rangle - \\tfrac{2}{n} (K1)^\\top (L1)
        + \\tfrac{1}{n^2} (1^\\top K 1)(1^\\top L 1),

and Song et al.'s (2012) unbiased HSIC with :math:`\\tilde K = K - \\operatorname{diag}(K)`.

Two routes to those sums, both in float64:

* **whole matrices** when no ``batch_size`` is given and both fit in ``FULL_BYTES`` (n up to about 4,000): one
  ``Z Z^T`` per side (BLAS ``syrk`` on CPU, half a GEMM), the squared distances formed in place, the median
  bandwidth selected from them, the kernel exponentiated in place. Memory: the two ``n × n`` matrices.
* **square tiles** of ``TILE`` (or ``batch_size``) rows otherwise. Only tiles on or above the diagonal are built (K is
  symmetric, so an off-diagonal tile counts twice), each as a single GEMM of rows augmented with their squared norms,
  so that the tile *is* the exponent :math:`-\\|z_i - z_j\\|^2 / (2\\sigma^2)`; ``exp`` then runs in place on the
  same buffer. Memory: two tiles, a few ``n × (d + 2)`` copies of the rows, and the pairs the median pass keeps
  (about ``KEEP_TARGET``, 36 MB): 313 MB at n = 20,000, d = 384 + 256. Time: :math:`n^2 (d_x + d_y) / 2`
  multiply-adds for the sums (half of the full products) plus a float32 pass of the same size for each median.

On CPU the engine runs on numpy views of the float64 tensors (numpy's float64 ``exp`` is about twice as fast as
torch's, and ``Z @ Z.T`` runs ``syrk``); on other devices the same code runs on torch tensors.

The median bandwidth is found exactly, without the n × n matrix on the tiled route: :mod:`._median`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._common import cka_ratio, iter_chunks, load64, ops_for
from ._median import augmented, median_of_full, median_sq_distance_tiled

# Both whole n × n float64 kernel matrices are held at once when they fit here (n <= 4,096) and batch_size is None.
FULL_BYTES = 256 * 2**20
# Rows (= columns) of a square tile of the tiled route: two float64 tiles of 512 × 512 are 4 MB, in cache.
TILE = 512


# --------------------------------------------------------------------------------------------------------------
# The sums
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GramSums:
    n: int
    kl: float
    kk: float
    ll: float
    k1: Any
    l1: Any
    dk: Any
    dl: Any

    def hsic_biased(self) -> tuple[float, float, float]:
        n = self.n
        sk, sl = float(self.k1.sum()), float(self.l1.sum())

        def h(kl, a1, b1, sa, sb):
            return kl - 2.0 / n * float(a1 @ b1) + sa * sb / n**2

        return h(self.kl, self.k1, self.l1, sk, sl), h(self.kk, self.k1, self.k1, sk, sk), \
            h(self.ll, self.l1, self.l1, sl, sl)

    def hsic_unbiased(self) -> tuple[float, float, float]:
        n = self.n
        kt1, lt1 = self.k1 - self.dk, self.l1 - self.dl  # K~ 1, L~ 1
        sk, sl = float(kt1.sum()), float(lt1.sum())

        def h(tr, a1, b1, sa, sb):
            return (tr + sa * sb / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a1 @ b1)) / (n * (n - 3))

        return (
            h(self.kl - float(self.dk @ self.dl), kt1, lt1, sk, sl),
            h(self.kk - float(self.dk @ self.dk), kt1, kt1, sk, sk),
            h(self.ll - float(self.dl @ self.dl), lt1, lt1, sl, sl),
        )


def full_sums(K, L, ops) -> GramSums:
    """The sums from two whole kernel matrices."""
    return GramSums(n=K.shape[0], kl=ops.vdot(K, L), kk=ops.vdot(K, K), ll=ops.vdot(L, L), k1=K.sum(1),
                    l1=L.sum(1), dk=ops.diag(K), dl=ops.diag(L))


def tiled_sums(tile_x: Callable, tile_y: Callable, n: int, ops, size: int) -> GramSums:
    """The sums from square tiles on and above the diagonal; ``tile_x(s0, e0, s1, e1, out)`` fills ``out`` with
    ``K[s0:e0, s1:e1]`` and returns it. An off-diagonal tile stands for itself and its transpose."""
    blocks = list(iter_chunks(n, size))
    bx, by = ops.empty(size * size, ops.f64), ops.empty(size * size, ops.f64)
    k1, l1, dk, dl = ops.zeros(n), ops.zeros(n), ops.zeros(n), ops.zeros(n)
    kl = kk = ll = 0.0
    for a, (s0, e0) in enumerate(blocks):
        for s1, e1 in blocks[a:]:
            h, w = e0 - s0, e1 - s1
            K = tile_x(s0, e0, s1, e1, bx[: h * w].reshape(h, w))
            L = tile_y(s0, e0, s1, e1, by[: h * w].reshape(h, w))
            weight = 1.0 if s0 == s1 else 2.0
            kl += weight * ops.vdot(K, L)
            kk += weight * ops.vdot(K, K)
            ll += weight * ops.vdot(L, L)
            k1[s0:e0] += K.sum(1)
            l1[s0:e0] += L.sum(1)
            if s0 == s1:
                dk[s0:e0] = ops.diag(K)
                dl[s0:e0] = ops.diag(L)
            else:
                k1[s1:e1] += K.sum(0)
                l1[s1:e1] += L.sum(0)
    return GramSums(n=n, kl=kl, kk=kk, ll=ll, k1=k1, l1=l1, dk=dk, dl=dl)


def full_fits(n: int, batch_size: int | None) -> bool:
    """Whether the whole-matrix route applies: no ``batch_size`` asked for and two n × n float64 matrices fit."""
    return batch_size is None and 2 * 8 * n * n <= FULL_BYTES


def tile_size(n: int, batch_size: int | None) -> int:
    return max(1, min(n, batch_size if batch_size is not None else TILE))


def linear_tile(z, ops):
    def tile(s0, e0, s1, e1, out):
        return ops.mm(z[s0:e0], z[s1:e1], out)

    return tile


def rbf_tile(z, sq, sigma: float, ops):
    """Tiles of :math:`\\exp(-\\|z_i - z_j\\|^2 / (2 \\sigma^2))`: one GEMM gives the exponent, ``exp`` in place."""
    a, b = augmented(z, sq, ops, scale=-1.0 / (2.0 * sigma * sigma))

    def tile(s0, e0, s1, e1, out):
        ops.mm(a[s0:e0], b[s1:e1], out)
        if s0 == s1:
            ops.fill_diag(out, 0.0)  # exactly exp(0) = 1 on the diagonal
        return ops.exp_(out)

    return tile


def full_sq_dist(z, sq, ops):
    """The whole ``n × n`` matrix of squared distances (diagonal exactly 0; off-diagonal entries of near-duplicate
    rows may round to about -1e-16 |z|^2, which order statistics and ``exp`` tolerate)."""
    D = ops.gram(z)
    D *= -2.0
    D += sq[:, None]
    D += sq[None, :]
    ops.fill_diag(D, 0.0)
    return D


def centred(X, device, batch_size, *, check: str | None = None):
    Z = load64(X, device, batch_size, check=check)
    z = Z.numpy() if Z.device.type == "cpu" else Z  # numpy's mean is cheaper for small inputs
    z -= z.mean(0)
    return Z


def cka_from_gram(g: GramSums, unbiased: bool) -> float:
    h = g.hsic_unbiased() if unbiased else g.hsic_biased()
    return cka_ratio(*h)


def sq_dist_block(Z, sq, s, e):
    """Squared distances of rows ``s:e`` to all rows (torch), clamped at 0, with an exact zero diagonal."""
    import torch

    d2 = sq[s:e, None] + sq[None, :] - 2.0 * (Z[s:e] @ Z.T)
    d2.clamp_(min=0.0)
    idx = torch.arange(e - s, device=Z.device)
    d2[idx, idx + s] = 0.0
    return d2


def _zero_median_error(name: str) -> ValueError:
    return ValueError(
        f"the median squared distance between rows of `{name}` is 0 (more than half of the pairs are "
        "duplicates), so the median bandwidth is 0; pass an explicit `sigma`"
    )


def _sigma_rule(sigma: Any, median_scale: float, median: Callable, name: str) -> tuple[float, str]:
    """The bandwidth actually used and the rule that gave it; ``median()`` is only called for ``"median"``."""
    if sigma == "median":
        med = median()
        if med <= 0:
            raise _zero_median_error(name)
        return median_scale * math.sqrt(med), "median"
    if sigma == "platonic":
        return 1.0, "platonic"
    return float(sigma), "fixed"


def resolve_sigma(sigma: Any, Z, sq, *, median_scale: float, batch_size, name: str) -> tuple[float, str]:
    """The bandwidth for ``Z`` (tiled route)."""
    ops = ops_for(Z.device)
    return _sigma_rule(sigma, median_scale, lambda: median_sq_distance_tiled(
        Z, sq, ops, tile_size(Z.shape[0], batch_size))[0], name)


def _prepare(X, Y, device, batch_size):
    """Both inputs as centred float64 tensors, checked (finite, not constant) while they are read."""
    return centred(X, device, batch_size, check="X"), centred(Y, device, batch_size, check="Y")


def rbf_cka_value(X, Y, device, *, sigma, median_scale, unbiased, batch_size) -> tuple[float, dict]:
    Zx, Zy = _prepare(X, Y, device, batch_size)
    n = Zx.shape[0]
    ops = ops_for(Zx.device)
    zx, zy = ops.wrap(Zx), ops.wrap(Zy)
    sqx, sqy = ops.rowdot(zx, zx), ops.rowdot(zy, zy)
    if full_fits(n, batch_size):
        kernels, sigmas = [], []
        for z, sq, name in ((zx, sqx, "X"), (zy, sqy, "Y")):
            D = full_sq_dist(z, sq, ops)
            sig, rule = _sigma_rule(sigma, median_scale, lambda D=D: median_of_full(D, ops), name)
            D *= -1.0 / (2.0 * sig * sig)
            kernels.append(ops.exp_(D))  # in place: D becomes the kernel matrix
            sigmas.append(sig)
        g = full_sums(*kernels, ops)
        del kernels, D
        route = "whole"
    else:
        size = tile_size(n, batch_size)
        sig_x, rule = resolve_sigma(sigma, Zx, _as_tensor(sqx, Zx), median_scale=median_scale,
                                    batch_size=batch_size, name="X")
        sig_y, _ = resolve_sigma(sigma, Zy, _as_tensor(sqy, Zy), median_scale=median_scale,
                                 batch_size=batch_size, name="Y")
        sigmas = [sig_x, sig_y]
        g = tiled_sums(rbf_tile(zx, sqx, sig_x, ops), rbf_tile(zy, sqy, sig_y, ops), n, ops, size)
        route = "tiles"
    settings = {
        "kernel": "rbf", "estimator": "unbiased" if unbiased else "biased", "bandwidth": rule,
        "sigma_x": sigmas[0], "sigma_y": sigmas[1], "route": route,
    }
    if rule == "median":
        settings["median_scale"] = median_scale
    return cka_from_gram(g, unbiased), settings


def _as_tensor(a, like):
    import torch

    return a if isinstance(a, torch.Tensor) else torch.from_numpy(a)


def linear_gram_sums(Zx, Zy, batch_size) -> GramSums:
    """The sums for the linear kernels of the centred rows ``Zx``, ``Zy`` (torch tensors on one device)."""
    n = Zx.shape[0]
    ops = ops_for(Zx.device)
    zx, zy = ops.wrap(Zx), ops.wrap(Zy)
    if full_fits(n, batch_size):
        return full_sums(ops.gram(zx), ops.gram(zy), ops)
    return tiled_sums(linear_tile(zx, ops), linear_tile(zy, ops), n, ops, tile_size(n, batch_size))


def linear_gram_value(X, Y, device, *, unbiased: bool, batch_size) -> tuple[float, dict]:
    Zx, Zy = _prepare(X, Y, device, batch_size)
    g = linear_gram_sums(Zx, Zy, batch_size)
    return cka_from_gram(g, unbiased), {
        "kernel": "linear", "estimator": "unbiased" if unbiased else "biased", "route": "gram"}
