"""Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008).

Each representation gives a representational dissimilarity matrix (RDM) over the n items; RSA is the rank
(Spearman) or linear (Pearson) correlation of the two RDMs' upper triangles. Ranking needs every one of the
``n (n - 1) / 2`` dissimilarities at once, so RSA holds two condensed triangles (one ``n × n`` matrix's worth of
float64) and refuses sizes past ``max_pairs``; subsample items for larger n.
"""
from __future__ import annotations

import numpy as np

from ._common import iter_chunks, load64, scan
from ._kernel import block_rows


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
    for s, e in iter_chunks(n, block_rows(n, batch_size)):
        if dissimilarity == "euclidean":
            from ._kernel import sq_dist_block

            D = sq_dist_block(Z, sq, s, e).sqrt_()
        else:
            D = 1.0 - Z[s:e] @ Z.T
        i = torch.arange(s, e, device=Z.device)[:, None]
        j = torch.arange(n, device=Z.device)[None, :]
        out.append(D[j > i].cpu().numpy())  # row-major upper triangle, as scipy's squareform
    return np.concatenate(out)


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
        scan(Z, name, device, batch_size)
        rdms.append(_condensed_rdm(load64(Z, device, batch_size), dissimilarity, batch_size, name))
    a, b = rdms
    if correlation == "spearman":
        a, b = rankdata(a), rankdata(b)
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    if den == 0:
        raise ValueError("one of the RDMs is constant (all items equally dissimilar), so RSA is undefined")
    return float((a @ b) / den), {"dissimilarity": dissimilarity, "correlation": correlation}
