"""Exact order statistics of all pairwise squared distances without the n × n matrix: the median bandwidth of
the RBF kernel (:mod:`._kernel`).

The median bandwidth (Kornblith et al.'s convention: the median of the full squared-distance matrix, zero diagonal
included) is found exactly. The whole-matrix route brackets the median with a sample of entries and selects inside
the bracket (``np.partition`` on a few percent of the entries). The tiled route brackets it with a sample of pairs,
then makes **one float32 pass** over the upper triangle: each float32 squared distance is within a proven bound
:math:`\\delta` of the float64 value (see :func:`float32_sq_dist_bound`), so it counts what lies certainly below the
bracket, keeps what lies in it, and recomputes in float64 only the few pairs within :math:`2\\delta` of the median's
float32 estimate. Should the sample miss (probability about 1e-6 per side) or the bound leave too many pairs
undecided, a float64 pass and, last, histogram refinement (:func:`offdiag_order_statistics`) give the same exact
value, only slower.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ._common import U32, block_rows, iter_chunks

# The bracket of the median: the sample quantiles at q ± Z_BRACKET standard errors (misses with probability ~1e-6).
Z_BRACKET = 5.0
# Target number of entries kept inside the bracket by the tiled pass, and the cap past which the pass gives up.
KEEP_TARGET = 3_000_000
KEEP_CAP = 12_000_000
# Pairs recomputed in float64 around the float32 estimate of an order statistic, at most.
RECOMPUTE_CAP = 200_000


def _rng():
    """The sampling that brackets a median only decides how fast the exact value is found, never the value; a fixed
    seed keeps the run time reproducible."""
    return np.random.default_rng(0x5EED)


def augmented(z, sq, ops, *, scale: float = 1.0, dtype=None):
    """Rows ``[z_i, |z_i|^2, 1]`` and ``scale * [-2 z_j, 1, |z_j|^2]``: their inner product is
    ``scale * |z_i - z_j|^2`` (one GEMM gives a tile of squared distances, or of RBF exponents)."""
    n, d = z.shape
    a, b = ops.empty((n, d + 2), ops.f64), ops.empty((n, d + 2), ops.f64)
    a[:, :d] = z
    a[:, d] = sq
    a[:, d + 1] = 1.0
    b[:, :d] = z
    b[:, :d] *= -2.0 * scale
    b[:, d] = scale
    b[:, d + 1] = sq
    b[:, d + 1] *= scale
    if dtype is not None and dtype != ops.f64:
        a, b = ops.astype(a, dtype), ops.astype(b, dtype)
    return a, b


# --------------------------------------------------------------------------------------------------------------
# Bandwidth: the median heuristic over all pairs, exactly.
# --------------------------------------------------------------------------------------------------------------


def _bracket(sample: np.ndarray, quantiles: list[float], z: float | None = None) -> tuple[float, float]:
    """``[lo, hi]`` that holds the population quantiles ``quantiles`` unless the sample is off by more than ``z``
    (default ``Z_BRACKET``) standard errors; infinite ends where the sample cannot say."""
    z = Z_BRACKET if z is None else z
    m = sample.size
    q0, q1 = min(quantiles), max(quantiles)
    se = z * math.sqrt(max(q0 * (1 - q0), q1 * (1 - q1), 1.0 / m) * m)
    i_lo, i_hi = math.floor(q0 * m - se) - 1, math.ceil(q1 * m + se) + 1
    keep = [i for i in (i_lo, i_hi) if 0 <= i < m]
    part = np.partition(sample, keep) if keep else sample
    lo = float(part[i_lo]) if 0 <= i_lo < m else -math.inf
    hi = float(part[i_hi]) if 0 <= i_hi < m else math.inf
    return lo, hi


def full_order_statistics(D, positions: list[int], ops, *, sample_size: int = 20_000) -> list[float]:
    """Values at 0-based ``positions`` of the sorted entries of the whole matrix ``D``, clamped at 0: a sampled
    bracket, one counting pass, and a partition of the entries inside it (a full partition if the sample missed)."""
    flat = D.reshape(-1)
    total = flat.shape[0]
    if total <= 20_000:  # tiny: one partition of a copy
        return [max(0.0, v) for v in ops.kth(flat, positions)]
    m = min(sample_size, max(2_000, total // 16))
    # a deterministic, evenly spread sample (golden-ratio steps over the flat index): cheaper than a generator, and
    # only the speed depends on it (a miss falls back to a full partition)
    idx = (np.arange(1, m + 1) * 0.6180339887498949 % 1.0 * total).astype(np.int64)
    sample = np.asarray(ops.to_numpy(flat[ops.index(idx, flat)]), dtype=np.float64)
    lo, hi = _bracket(sample, [(p + 0.5) / total for p in positions])
    below = ops.count(flat < lo)
    inside = flat[(flat >= lo) & (flat <= hi)]
    local = [p - below for p in positions]
    if all(0 <= t < inside.shape[0] for t in local):
        values = ops.kth(inside, local)
    else:
        values = ops.kth(flat, positions)
    # Clamping is monotone, so the order statistics of the clamped matrix are the clamped order statistics.
    return [max(0.0, v) for v in values]


def median_of_full(D, ops) -> float:
    """``np.median`` of the whole (clamped) squared-distance matrix ``D``."""
    total = D.shape[0] * D.shape[1]
    positions = [total // 2] if total % 2 else [total // 2 - 1, total // 2]
    return float(np.mean(full_order_statistics(D, positions, ops)))


def float32_sq_dist_bound(d: int, max_sq_norm: float) -> float:
    """A bound on ``|f - D_ij|`` for every squared distance ``f`` computed by :func:`augmented` rows in float32
    (one float32 GEMM), against the exact ``D_ij``.

    With :math:`a_i = [z_i, s_i, 1]`, :math:`b_j = [-2 z_j, 1, s_j]` (:math:`s = |z|^2`), rounding each entry to
    float32 perturbs it by at most :math:`u |\\cdot|` (:math:`u = 2^{-24}`), and a float32 dot product of
    :math:`D = d + 2` terms in any order (blocked, FMA) errs by at most :math:`\\gamma_D \\sum_k |a_{ik} b_{jk}|`,
    :math:`\\gamma_D = D u / (1 - D u)` (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1). With
    :math:`\\sum_k |a_{ik} b_{jk}| \\le 2|z_i||z_j| + s_i + s_j = (|z_i| + |z_j|)^2 \\le 4 \\max s`:

    .. math:: |f - D_{ij}| \\le (\\gamma_D (1 + u)^2 + 2u + u^2) \\cdot 4 \\max_i s_i \\le 1.01 (d + 5) u \\cdot
        4 \\max_i s_i.

    Entries that underflow to float32 subnormals err by at most :math:`2^{-149}` each, which the 1 % margin covers
    when the rows are first scaled by a power of two to :math:`\\max |z| \\le 1` (the caller does).
    """
    return 1.01 * (d + 5) * U32 * 4.0 * max_sq_norm


def float32_rows(z, sq, ops):
    """float32 :func:`augmented` rows of ``z`` scaled by a power of two to ``max |z| < 1`` (exactly), the squared
    scale, and the bound of :func:`float32_sq_dist_bound` in scaled units: ``a[i] @ b[j]`` (one float32 GEMM) is
    within ``delta`` of ``scale2 * |z_i - z_j|^2``."""
    max_sq = float(sq.max())
    e = math.frexp(math.sqrt(max_sq))[1] if max_sq > 0 else 0  # max|z| < 2**e
    scale2 = math.ldexp(1.0, -2 * e)  # (2**-e)**2: exact
    zs, sqs = z * math.ldexp(1.0, -e), sq * scale2
    a, b = augmented(zs, sqs, ops, dtype=ops.f32)
    return a, b, scale2, float32_sq_dist_bound(z.shape[1], float(sqs.max()))


def _sample_pairs(z, sq, m: int, rng, ops) -> np.ndarray:
    """Squared distances of ``m`` pairs ``i != j`` drawn uniformly (with replacement), as float64 numpy, from
    float32 copies of the rows (half the memory traffic of the gathers; a bracket needs no more precision)."""
    n = z.shape[0]
    i = rng.integers(0, n, size=m)
    j = rng.integers(0, n - 1, size=m)
    j += j >= i
    z32 = ops.astype(z, ops.f32)
    out = np.empty(m)
    for s, e in iter_chunks(m, 1024):  # small gathers stay in cache
        ii, jj = ops.index(i[s:e], z), ops.index(j[s:e], z)
        v = sq[ii] + sq[jj] - 2.0 * ops.astype(ops.rowdot(z32[ii], z32[jj]), ops.f64)
        out[s:e] = ops.to_numpy(v)
    return out


def _bracket_pass(z, sq, lo: float, hi: float, ops, size: int, *, low_precision: bool):
    """One pass over the upper triangle (``i < j``): the number of squared distances certainly below ``lo``, and the
    values and flat indices ``i * n + j`` of those that may lie in ``[lo, hi]``; None if more than ``KEEP_CAP``.

    ``low_precision``: one float32 GEMM per tile, on rows scaled by a power of two (exact) to ``max |z| <= 1``; a
    value ``f`` then lies within ``delta`` (returned, in the caller's units) of the float64 one. Otherwise float64
    tiles and ``delta = 0``.
    """
    n = z.shape[0]
    if low_precision:
        a, b, scale2, delta_s = float32_rows(z, sq, ops)
        buf = ops.empty(size * size, ops.f32)
    else:
        scale2, delta_s = 1.0, 0.0
        a, b = augmented(z, sq, ops)
        buf = ops.empty(size * size, ops.f64)
    lo_s, hi_s = lo * scale2 - delta_s, hi * scale2 + delta_s
    below, values, where, kept = 0, [], [], 0
    blocks = list(iter_chunks(n, size))
    for k, (s0, e0) in enumerate(blocks):
        for s1, e1 in blocks[k:]:
            h, w = e0 - s0, e1 - s1
            T = ops.mm(a[s0:e0], b[s1:e1], buf[: h * w].reshape(h, w))
            if s0 == s1:  # keep the strict upper triangle only: NaN fails every comparison below
                r = np.arange(h)
                T[ops.index(r[:, None] >= r[None, :], T)] = math.nan
            below += ops.count(T < lo_s)
            flat = ops.flatnonzero((T >= lo_s) & (T <= hi_s))
            kept += int(flat.shape[0])
            if kept > KEEP_CAP:
                return None
            values.append(T.reshape(-1)[flat])
            where.append((flat // w + s0) * n + (flat % w + s1))
    v = ops.cat(values, ops.f32 if low_precision else ops.f64)
    v = ops.astype(v, ops.f64) / scale2  # exact: scale2 is a power of two
    return below, v, ops.cat(where, ops.i64), delta_s / scale2


def _exact_sq_dist(z, sq, pairs, ops):
    """float64 squared distances of the pairs with flat indices ``i * n + j``, in cache-sized gathers."""
    n = z.shape[0]
    i, j = pairs // n, pairs % n
    out = ops.empty(pairs.shape[0], ops.f64)
    for s, e in iter_chunks(int(pairs.shape[0]), 1024):
        ii, jj = i[s:e], j[s:e]
        out[s:e] = sq[ii] + sq[jj] - 2.0 * ops.rowdot(z[ii], z[jj])
    return out


def _resolve(z, sq, rank: int, below: int, v, where, delta: float, lo: float, hi: float, ops):
    """The exact order statistic ``rank`` of the upper-triangle squared distances from one bracket pass, or None
    (with the reason) when this pass cannot decide it."""
    t = rank - below
    if not 0 <= t < v.shape[0]:
        return None, "miss"
    vstar = ops.kth(v, [t])[0]  # the float32 order statistic; the exact one lies within delta of it
    if delta == 0.0:
        return vstar, "ok"
    if not (lo + delta <= vstar <= hi - delta):
        return None, "miss"
    near = ops.flatnonzero((v >= vstar - 2 * delta) & (v <= vstar + 2 * delta))
    if near.shape[0] > RECOMPUTE_CAP:
        return None, "undecided"
    exact = _exact_sq_dist(z, sq, where[near], ops)
    lower = below + ops.count(v < vstar - 2 * delta) + ops.count(exact < vstar - delta)
    inside = exact[(exact >= vstar - delta) & (exact <= vstar + delta)]
    k = rank - lower
    if not 0 <= k < inside.shape[0]:  # cannot happen while the bound holds; fall back rather than guess
        return None, "undecided"
    return ops.kth(inside, [k])[0], "ok"


def offdiag_order_statistics_sampled(z, sq, ranks: list[int], ops, size: int, *, low_precision: bool = True,
                                     sample_size: int | None = None) -> tuple[list[float] | None, str]:
    """Order statistics ``ranks`` (0-based) of the ``n (n - 1) / 2`` distinct-pair squared distances by a sampled
    bracket and one pass (float32 with the proven bound when ``low_precision``, then float64 if needed); returns
    ``(values, route)`` with ``values`` None when the bracket missed (the caller then refines)."""
    n = z.shape[0]
    total = n * (n - 1) // 2
    if sample_size is None:  # enough pairs that about KEEP_TARGET entries fall in the bracket
        sample_size = int(min(2_000_000, max(20_000, (total * Z_BRACKET / KEEP_TARGET) ** 2)))
    sample = _sample_pairs(z, sq, min(sample_size, max(total, 1)), _rng(), ops)
    lo, hi = _bracket(sample, [(r + 0.5) / total for r in ranks])
    for low in ((True, False) if low_precision else (False,)):
        res = _bracket_pass(z, sq, lo, hi, ops, size, low_precision=low)
        if res is None:
            return None, "overflow"
        below, v, where, delta = res
        out, why = [], "ok"
        for r in ranks:
            value, why = _resolve(z, sq, r, below, v, where, delta, lo, hi, ops)
            if value is None:
                break
            out.append(value)
        if why == "ok":
            return out, "float32" if low else "float64"
        if why == "miss":
            return None, "miss"
    return None, why


def median_sq_distance(Z, sq, *, batch_size: int | None, cap: int = 4_000_000, bins: int = 4096) -> float:
    """``np.median`` of the full ``n × n`` squared-distance matrix, diagonal zeros included (Kornblith et al.'s
    convention: ``sigma = sqrt(median)``), found exactly without holding the matrix, by histogram refinement.

    The n zeros of the diagonal come first in sorted order and every off-diagonal value appears twice, so the
    full-matrix order statistic at position p is 0 for p < n and else the off-diagonal one of rank (p - n) // 2;
    those are found by histogram refinement over row blocks (each pass costs half a sweep of distances: the upper
    triangle only; one pass when n (n - 1) / 2 <= cap, typically two otherwise). The fallback of
    :func:`median_sq_distance_tiled`.
    """
    return _median_from_offdiag(Z.shape[0], lambda ranks: offdiag_order_statistics(
        Z, sq, ranks, batch_size=batch_size, cap=cap, bins=bins))


def _median_from_offdiag(n: int, solve: Callable) -> float:
    total = n * n
    positions = [total // 2] if total % 2 else [total // 2 - 1, total // 2]
    ranks = sorted({(p - n) // 2 for p in positions if p >= n})
    found = dict(zip(ranks, solve(ranks))) if ranks else {}
    # clamping is monotone: the clamped matrix's order statistics are the clamped ones
    return float(np.mean([0.0 if p < n else max(0.0, found[(p - n) // 2]) for p in positions]))


def median_sq_distance_tiled(Z, sq, ops, size: int, *, low_precision: bool | None = None) -> tuple[float, str]:
    """The median of :func:`median_sq_distance` from a sampled bracket and one (float32) pass over the upper
    triangle; falls back to refinement when the bracket misses. Returns the value and the route that decided it.

    ``low_precision`` (default: on CPU only, where numpy's float32 GEMM is plain IEEE float32; a GPU may run float32
    products in TF32, which the bound does not cover) allows the float32 pass."""
    if low_precision is None:
        low_precision = ops.is_numpy
    z, s = ops.wrap(Z), ops.wrap(sq)
    route = {}

    def solve(ranks):
        values, route["how"] = offdiag_order_statistics_sampled(z, s, ranks, ops, size, low_precision=low_precision)
        if values is None:
            route["how"] = "refinement"
            values = offdiag_order_statistics(Z, sq, ranks, batch_size=size, cap=4_000_000, bins=4096)
        return values

    value = _median_from_offdiag(Z.shape[0], solve)
    return value, route.get("how", "diagonal")


def offdiag_order_statistic(Z, sq, rank: int, *, batch_size: int | None, cap: int, bins: int) -> float:
    """The value of 0-based ``rank`` among the ``n (n - 1) / 2`` squared distances of distinct pairs."""
    return offdiag_order_statistics(Z, sq, [rank], batch_size=batch_size, cap=cap, bins=bins)[0]


def offdiag_order_statistics(Z, sq, ranks, *, batch_size: int | None, cap: int, bins: int) -> list[float]:
    """Several order statistics of the distinct-pair squared distances by histogram refinement (torch tensors);
    ranks whose search interval coincides (neighbouring ranks, as for an even-count median) share every pass."""
    import torch

    n = Z.shape[0]
    device = Z.device
    rows = block_rows(n, batch_size)
    hi0 = 4.0 * float(sq.max()) * (1 + 1e-9) + 1e-300  # |z_i - z_j|^2 <= (|z_i| + |z_j|)^2 <= 4 max |z|^2
    pending = {r: (0.0, hi0, r, n * (n - 1) // 2) for r in set(ranks)}  # rank -> (lo, hi, rank in [lo, hi), count)
    out: dict[int, float] = {}
    while pending:
        lo, hi, _, count = next(iter(pending.values()))
        group = [r for r, st in pending.items() if st[:2] == (lo, hi)]
        collect = count <= cap
        edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64, device=device)
        hist = torch.zeros(bins, dtype=torch.float64, device=device)
        kept, vmin, vmax = [], math.inf, -math.inf
        for s, e in iter_chunks(n, rows):
            # only columns j >= s: the upper triangle, half the work of full rows
            d2 = (sq[s:e, None] + sq[None, s:] - 2.0 * (Z[s:e] @ Z[s:].T)).clamp_(min=0.0)
            i = torch.arange(s, e, device=device)[:, None]
            j = torch.arange(s, n, device=device)[None, :]
            v = d2[(j > i) & (d2 >= lo) & (d2 < hi)]
            if v.numel() == 0:
                continue
            vmin, vmax = min(vmin, float(v.min())), max(vmax, float(v.max()))
            if collect:
                kept.append(v)
            else:
                b = (torch.bucketize(v, edges, right=True) - 1).clamp_(0, bins - 1)
                hist += torch.bincount(b, minlength=bins).to(torch.float64)
        if collect and vmin != vmax:
            ordered = torch.sort(torch.cat(kept)).values
        cum = torch.cumsum(hist, 0)
        for r in group:
            local = pending.pop(r)[2]
            if vmin == vmax:  # every value in the interval is the same
                out[r] = vmin
            elif collect:
                out[r] = float(ordered[local])
            else:
                b = int(torch.searchsorted(cum, torch.tensor(float(local), dtype=torch.float64, device=device),
                                           right=True))
                below = int(cum[b - 1]) if b > 0 else 0
                pending[r] = (float(edges[b]), float(edges[b + 1]), local - below, int(hist[b]))
    return [out[r] for r in ranks]
