"""Memory estimates of the similarity routes, checked before anything large is allocated."""
from __future__ import annotations

from typing import Any

from .._validation import check_memory


def check_similarity_memory(metric: str, n: int, dx: int, dy: int, params: dict, batch_size: int | None,
                            device: Any) -> None:
    """Refuse, before allocating, a similarity whose route cannot fit in the free memory (float64 bytes).

    Raises :class:`align._validation.MemoryBudgetError` (a ``ValueError``) naming the memory needed and the fix.
    The estimates are set above the peaks measured on CPU (n = 4,000-8,000; they vary by up to 50% between runs):
    a guard against computations far beyond the memory, not an exact budget.

    Feature-space routes hold ``d x d`` moment matrices (CCA and Procrustes decompose them: twice that); Gram and
    k-NN routes a float64 copy of both inputs plus one block of kernel rows (the whole-matrix kernel route, both
    ``n x n`` matrices and a selection buffer); RSA both condensed dissimilarity vectors (at most ``max_pairs``
    entries), their ranks and temporaries: about 13 float64 per pair as measured at n = 4,000-8,000, 14 counted.
    """
    from . import _common, _kernel
    from ._registry import features_route

    block_bytes = _common.BLOCK_BYTES  # the Gram routes' block budget

    n, dx, dy = int(n), int(dx), int(dy)
    moments = 8.0 * (dx * dx + dy * dy + dx * dy)
    copies = 8.0 * n * (dx + dy)
    block = 8.0 * 4 * n * (min(n, block_bytes // (8 * 4 * max(n, 1))) if batch_size is None else batch_size)
    if metric in ("svcca", "pwcca"):
        need, route = 2 * moments, "feature-space moments"
    elif metric in ("linear_cka", "procrustes") or (metric == "unbiased_cka" and params.get("kernel", "linear")
                                                    == "linear"):
        if features_route(n, dx, dy):
            factor = 2 if metric in ("procrustes", "unbiased_cka") else 1  # SVD / higher moments
            chunks = 3 * min(copies, 128 * 2**20)  # float64 chunks of the rows and their products
            need, route = factor * moments + chunks, "feature-space moments"
        else:
            need, route = copies + block, "Gram blocks"
    elif metric == "rsa":
        n_pairs = min(n * (n - 1) / 2, float(params.get("max_pairs") or n * (n - 1) / 2))
        need, route = 8.0 * 14 * n_pairs + copies, "condensed n x n dissimilarity matrices"
    elif metric == "minibatch_cka":
        m = int(params.get("minibatch_size", 1024) or 1024)
        need, route = 8.0 * m * (dx + dy) + 8.0 * 2 * m * m, "minibatch Gram matrices"
    else:  # rbf_cka, unbiased_cka (rbf), mutual_knn, cknna, cycle_knn
        need, route = copies + 2 * block + 8.0 * 2 * n * int(params.get("k", 10) or 10), "Gram / k-NN blocks"
        if metric in ("rbf_cka", "unbiased_cka") and _kernel.full_fits(n, batch_size):
            need += 3 * 8.0 * n * n  # both whole kernel matrices and the median's selection buffer
    if route == "Gram blocks" or "moments" in route:
        fix = "reduce the dimensions (e.g. PCA first) or the number of items, or use a machine with more memory"
    else:
        fix = ("measure a random subset of the items, or use linear_cka (its feature-space route needs no n x n "
               "matrices) or minibatch_cka")
    check_memory(need, f"metric {metric!r} on ({n:,}, {dx:,}) and ({n:,}, {dy:,}) features ({route})", fix,
                 device=device)
