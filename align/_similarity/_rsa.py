"""Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008).

Each representation gives a representational dissimilarity matrix (RDM) over the n items; RSA is the rank
(Spearman) or linear (Pearson) correlation of the two RDMs' upper triangles. Ranking needs every one of the
``n (n - 1) / 2`` dissimilarities at once, so RSA holds two condensed triangles (one ``n × n`` matrix's worth of
float64) and refuses sizes past ``max_pairs``; subsample items for larger n.

Ranks are decided by ties, so the RDM must not depend on how it was computed: its rows are built in blocks of a
fixed ``RDM_BLOCK`` rows whatever ``batch_size`` is (a GEMM's rounding depends on its shape), and before ranking
every entry is rounded to a binary grid of ``2**-RDM_BITS`` times the largest one (about 6e-11 relative), so
dissimilarities that are equal in exact arithmetic but differ in their last bits tie, as they should.
"""
from __future__ import annotations

import numpy as np

from ._common import iter_chunks, load64

# Rows per block of the RDM, fixed so that the value never depends on batch_size.
RDM_BLOCK = 256
# Entries are rounded to multiples of 2**-RDM_BITS * (a power of two >= the largest) before ranking.
RDM_BITS = 34
# Euclidean pairs with |z_i - z_j|^2 below this fraction of |z_i|^2 + |z_j|^2 are recomputed by direct differences.
NEAR_DUPLICATE = 1e-4


def _condensed_rdm(Z, dissimilarity: str, batch_size, name: str) -> np.ndarray:
    import torch

    n = Z.shape[0]
    if dissimilarity in ("correlation", "cosine"):
        if dissimilarity == "correlation":
            if Z.shape[1] < 2:
                raise ValueError(f"`{name}` needs at least 2 columns for the correlation dissimilarity")
            Z = Z - Z.mean(1, keepdim=True)
        norms = Z.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            i = int(torch.nonzero(norms[:, 0] == 0)[0])
            what = "constant" if dissimilarity == "correlation" else "all-zero"
            raise ValueError(
                f"row {i} of `{name}` is {what}, so its {dissimilarity} dissimilarity is undefined; "
                "drop it or use dissimilarity='euclidean'"
            )
        Z = Z / norms
    else:
        Z = Z - Z.mean(0)
        sq = (Z * Z).sum(1)
    out = []
    for s, e in iter_chunks(n, RDM_BLOCK):
        if dissimilarity == "euclidean":
            from ._kernel import sq_dist_block

            d2 = sq_dist_block(Z, sq, s, e)
            # |z_i|^2 + |z_j|^2 - 2 z_i.z_j loses the digits of near-duplicate pairs (a duplicate comes out as
            # sqrt(1e-16 |z|^2), not 0): recompute those few by direct differences.
            r, c = torch.nonzero(d2 < NEAR_DUPLICATE * (sq[s:e, None] + sq[None, :]), as_tuple=True)
            if r.numel():
                d2[r, c] = ((Z[r + s] - Z[c]) ** 2).sum(1)
            D = d2.sqrt_()
        else:
            D = 1.0 - Z[s:e] @ Z.T
        i = torch.arange(s, e, device=Z.device)[:, None]
        j = torch.arange(n, device=Z.device)[None, :]
        out.append(D[j > i].cpu().numpy())  # row-major upper triangle, as scipy's squareform
    return np.concatenate(out)


def _round_to_grid(a: np.ndarray) -> np.ndarray:
    """``a`` rounded to multiples of ``q = 2**(e - RDM_BITS)``, ``2**e`` > max |a| (scaling by q is exact)."""
    top = float(np.abs(a).max()) if a.size else 0.0
    if top == 0.0 or not np.isfinite(top):
        return a
    q = np.ldexp(1.0, np.frexp(top)[1] - RDM_BITS)
    return np.round(a / q) * q


def rsa_value(X, Y, device, *, dissimilarity: str, correlation: str, max_pairs: int, batch_size
              ) -> tuple[float, dict]:
    from scipy.stats import rankdata

    n = X.shape[0]
    pairs = n * (n - 1) // 2
    if pairs > max_pairs:
        raise ValueError(
            f"RSA ranks all n (n - 1) / 2 = {pairs} dissimilarities, more than `max_pairs` = {max_pairs}; "
            "subsample the items (e.g. X[idx], Y[idx] with idx = rng.choice(n, 10_000, replace=False)) or raise "
            "max_pairs if the memory (about 32 bytes per pair) is there"
        )
    rdms = []
    for Z, name in ((X, "X"), (Y, "Y")):
        rdms.append(_condensed_rdm(load64(Z, device, batch_size, check=name), dissimilarity, batch_size, name))
    a, b = rdms
    if correlation == "spearman":
        a, b = rankdata(_round_to_grid(a)), rankdata(_round_to_grid(b))
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    if den == 0:
        raise ValueError("one of the RDMs is constant (all items equally dissimilar), so RSA is undefined")
    return float((a @ b) / den), {"dissimilarity": dissimilarity, "correlation": correlation}
