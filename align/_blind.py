r"""Blind alignment machinery shared by :mod:`matching` (``match(..., method="blind")``) and :mod:`projectors`
(``make_projector("blind")``): correspondences between two sets of embeddings with no known pair at all.

The pipeline (:func:`blind_align`), on centred, unit-norm rows and their cosine kernels
:math:`K_x = X X^\top`, :math:`K_y = Y Y^\top`:

1. **Rotation starts** (:func:`rotation_starts`). If the two spaces are close to isometric, their leading principal
   axes correspond up to sign. For the ``k`` leading PCA scores of each side, every sign pattern
   :math:`W_0 = \mathrm{diag}(s)`, :math:`s \in \{\pm 1\}^k` (``2^k`` starts) is refined by alternating an
   assignment :math:`P \leftarrow \arg\max_P \langle P, X_k W Y_k^\top\rangle` and Procrustes
   :math:`W \leftarrow \mathrm{polar}(X_k^\top P Y_k)` (Wasserstein–Procrustes, Grave et al. 2019, restricted to
   ``k`` dimensions where ``2^k`` starts cover the orthogonal group's sign ambiguity). The best ``n_candidates``
   distinct matchings by :math:`\langle P, X_k W Y_k^\top\rangle` go on.
2. **Gromov–Wasserstein refinement** (:func:`entropic_gw`): entropic GW (Peyré, Cuturi & Solomon 2016; the
   projected-gradient iteration of POT's ``ot.gromov.entropic_gromov_wasserstein``, here with the kernels kept as
   ``(n, r)`` factors so one step costs :math:`O(n^2 r)`, not :math:`O(n^3)`) started from each candidate.
3. **2-opt on the QAP** (:func:`two_opt`): best-improvement transpositions on
   :math:`f(P) = \mathrm{tr}(K_x P K_y P^\top)` until none gains; each step updates the gain matrix in
   :math:`O(n^2)`. The candidate with the largest :math:`f` wins.
4. **Self-learning** (:func:`self_learn`): the pairs that are stable across candidates and mutual nearest
   neighbours under a map fitted on the others are taken as pseudo-known pairs; Procrustes in ``r`` PCA dimensions
   fitted on them, CSLS scores (Conneau et al. 2018), a new assignment; repeated while the pseudo-pair set grows.
   The result replaces the QAP matching only when it has a larger :math:`f`.

A confidence report (:func:`confidence_report`) comes with every result; see :class:`BlindOutcome`.

References
----------
Grave, Joulin & Berthet, "Unsupervised alignment of embeddings with Wasserstein Procrustes", AISTATS 2019.
Artetxe, Labaka & Agirre, "A robust self-learning method for fully unsupervised cross-lingual mappings of word
embeddings", ACL 2018 (VecMap). Conneau et al., "Word translation without parallel data", ICLR 2018 (CSLS).
Peyré, Cuturi & Solomon, "Gromov-Wasserstein averaging of kernel and distance matrices", ICML 2016.
Schnaus et al., "It's a (Blind) Match! Towards vision-language correspondence without parallel data", CVPR 2025.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

log = logging.getLogger(__name__)

__all__ = ["standardize", "pca_scores", "polar", "csls", "assignment", "rotation_starts", "entropic_gw", "two_opt",
           "qap_objective", "self_learn", "confidence_report", "blind_align", "BlindOutcome", "CONFIDENCE_RULE"]

#: The documented rule behind ``report["confident"]`` (see :func:`confidence_report`).
CONFIDENCE_RULE = "holdout_agreement >= 0.5 and stability >= 0.5"
HOLDOUT_MIN = 0.5
FAST_ASSIGN_ENTRIES = 90_000
STABILITY_MIN = 0.5


# ---- small linear-algebra pieces ------------------------------------------------------------------------------
def standardize(Z: Any) -> np.ndarray:
    """float64 copy, columns centred, rows scaled to unit norm (the cosine geometry every stage works in)."""
    Z = np.array(Z, dtype=np.float64)
    Z -= Z.mean(axis=0)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    return Z


def pca_scores(Z: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` leading principal-component scores :math:`U_k \\Sigma_k` of the (already centred) ``Z`` (n, k)."""
    U, s, _ = np.linalg.svd(Z, full_matrices=False)
    k = min(k, len(s))
    sc = U[:, :k] * s[:k]
    # deterministic signs (largest-|entry| of each axis positive), so the sign patterns are reproducible
    idx = np.abs(U[:, :k]).argmax(axis=0)
    return sc * np.sign(U[idx, np.arange(k)])[None, :]


def polar(M: np.ndarray) -> np.ndarray:
    """The orthogonal (semi-orthogonal when not square) factor :math:`UV^\\top` of :math:`M = U\\Sigma V^\\top`."""
    U, _, Vt = np.linalg.svd(M, full_matrices=False)
    return U @ Vt


def csls(S: np.ndarray, k: int = 10) -> np.ndarray:
    r"""Cross-domain similarity local scaling (Conneau et al. 2018): :math:`2S_{ij} - r_x(i) - r_y(j)`.

    :math:`r_x(i)` is the mean of the ``k`` largest entries of row ``i``, :math:`r_y(j)` of column ``j``: a hub
    (an item close to everything) is penalised.
    """
    kx = min(k, S.shape[1])
    ky = min(k, S.shape[0])
    rx = np.partition(S, S.shape[1] - kx, axis=1)[:, -kx:].mean(axis=1)
    ry = np.partition(S, S.shape[0] - ky, axis=0)[-ky:, :].mean(axis=0)
    return 2 * S - rx[:, None] - ry[None, :]


def assignment(S: np.ndarray) -> np.ndarray:
    """Maximum-weight one-to-one assignment: ``col[i]`` = column of row ``i`` (``-1`` when rows outnumber columns)."""
    r, c = linear_sum_assignment(S, maximize=True)
    col = np.full(S.shape[0], -1, dtype=np.int64)
    col[r] = c
    return col


def qap_objective(A: np.ndarray, B: np.ndarray, col: np.ndarray) -> float:
    r""":math:`\sum_{ab} A_{ab} B_{c_a c_b}` over the matched rows (``col >= 0``)."""
    m = col >= 0
    c = col[m]
    return float((A[np.ix_(m, m)] * B[np.ix_(c, c)]).sum())


# ---- 1. rotation starts ---------------------------------------------------------------------------------------
def rotation_starts(Xk: np.ndarray, Yk: np.ndarray, *, n_iter: int = 10, n_keep: int = 8,
                    max_starts: int = 256, rng: np.random.Generator | None = None) -> list[tuple[float, np.ndarray]]:
    r"""Procrustes / assignment alternation from every sign pattern of the ``k`` principal axes (at most
    ``max_starts``: beyond that a random subset of the patterns).

    Returns the ``n_keep`` best distinct matchings as ``(score, col)`` with score
    :math:`\sum_i \langle x_i W, y_{c_i}\rangle` (``Xk`` (n_x, k), ``Yk`` (n_y, k) PCA scores).
    """
    k = Xk.shape[1]
    patterns = list(itertools.product((1.0, -1.0), repeat=k))
    if len(patterns) > max_starts:
        rng = rng if rng is not None else np.random.default_rng(0)
        patterns = [patterns[i] for i in np.sort(rng.choice(len(patterns), max_starts, replace=False))]
    found: dict[bytes, tuple[float, np.ndarray]] = {}
    # above ~300 x 300 items the alternation assigns each row its best column (a LAP per step would dominate);
    # the final matching of every start is still one-to-one
    fast = Xk.shape[0] * Yk.shape[0] > FAST_ASSIGN_ENTRIES
    step = (lambda S: S.argmax(axis=1)) if fast else assignment
    for signs in patterns:
        W = np.diag(signs)
        col = None
        for _ in range(n_iter):
            S = Xk @ W @ Yk.T
            new = step(S)
            if col is not None and np.array_equal(new, col):
                break
            col = new
            m = col >= 0
            W = polar(Xk[m].T @ Yk[col[m]])
        S = Xk @ W @ Yk.T
        m = col >= 0
        score = float(S[np.flatnonzero(m), col[m]].sum())
        key = col.tobytes()
        if key not in found or found[key][0] < score:
            found[key] = (score, col, W)
    best = sorted(found.values(), key=lambda t: -t[0])[:n_keep]
    if fast:  # one-to-one matchings of the kept starts only
        best = [(sc, assignment(Xk @ W @ Yk.T)) for sc, _, W in best]
    return [(sc, col) for sc, col, *_ in best]


# ---- 2. entropic Gromov-Wasserstein with factored kernels -----------------------------------------------------
def _sinkhorn(M: np.ndarray, p: np.ndarray, q: np.ndarray, eps: float, f: np.ndarray, g: np.ndarray,
              n_iter: int = 1000, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-domain Sinkhorn (POT's ``sinkhorn_log`` iteration) from the potentials ``f, g`` (warm start): the
    coupling of cost ``M`` with marginals ``p, q`` and the final potentials."""
    def logsumexp(Z, axis):  # plain numpy: scipy's array-API wrapper costs more than the arithmetic here
        m = Z.max(axis=axis, keepdims=True)
        return (m + np.log(np.exp(Z - m).sum(axis=axis, keepdims=True))).squeeze(axis)

    L = -M / eps
    lp, lq = np.log(p), np.log(q)
    for it in range(n_iter):
        f = lp - logsumexp(L + g[None, :], axis=1)
        g = lq - logsumexp(L + f[:, None], axis=0)
        if it % 5 == 4:
            err = np.abs(np.exp(logsumexp(L + f[:, None] + g[None, :], axis=1)) - p).sum()
            if err < tol:
                break
    return np.exp(L + f[:, None] + g[None, :]), f, g


def entropic_gw(Fx: np.ndarray, Fy: np.ndarray, T0: np.ndarray, *, epsilon: float = 0.01, max_iter: int = 100,
                tol: float = 1e-6) -> tuple[np.ndarray, int]:
    r"""Entropic GW (square loss) between :math:`C_x = F_x F_x^\top / \max|C_x|` and :math:`C_y` likewise, from ``T0``.

    Each step is POT's ``entropic_gromov_wasserstein`` (``solver="PGD"``) step
    :math:`T \leftarrow \mathrm{Sinkhorn}_\varepsilon(p, q, -4 C_x T C_y)` (the constant part of the square-loss
    gradient is absorbed by the marginals), computed as :math:`F_x (F_x^\top T F_y) F_y^\top` in
    :math:`O(n^2 r)`. Stops when :math:`\lVert T_{t+1} - T_t\rVert_F <` ``tol``. Returns ``(T, iterations)``.
    """
    n_x, n_y = Fx.shape[0], Fy.shape[0]
    sx = max(float(np.abs(Fx @ Fx[: min(n_x, 2000)].T).max()), 1e-300)
    sy = max(float(np.abs(Fy @ Fy[: min(n_y, 2000)].T).max()), 1e-300)
    p = np.full(n_x, 1.0 / n_x)
    q = np.full(n_y, 1.0 / n_y)
    T = T0
    it = 0
    f, g = np.zeros(n_x), np.zeros(n_y)
    for it in range(1, max_iter + 1):
        G = -4.0 * (Fx @ ((Fx.T @ T) @ Fy) @ Fy.T) / (sx * sy)
        T_new, f, g = _sinkhorn(G - G.min(), p, q, epsilon, f, g)
        done = np.linalg.norm(T_new - T) < tol
        T = T_new
        if done:
            break
    return T, it


# ---- 3. 2-opt on the QAP ----------------------------------------------------------------------------------------
def _gains(A: np.ndarray, Bp: np.ndarray, M: np.ndarray) -> np.ndarray:
    r"""Gain of :math:`\sum_{ab}A_{ab}(B_p)_{ab}` for every transposition (i, j) of symmetric ``A``, ``Bp``,
    ``M = A Bp``."""
    dM = np.diag(M)
    dA = np.diag(A)
    dB = np.diag(Bp)
    D = M + M.T - dM[:, None] - dM[None, :]
    D -= (dA[:, None] - A) * (Bp - dB[:, None])
    D -= (A - dA[None, :]) * (dB[None, :] - Bp)
    D *= 2.0
    D += (dA[:, None] - dA[None, :]) * (dB[None, :] - dB[:, None])
    np.fill_diagonal(D, 0.0)
    return D


def two_opt(A: np.ndarray, B: np.ndarray, col: np.ndarray, *, max_iter: int = 100_000,
            fixed: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    r"""Best-improvement 2-opt on :math:`f(c) = \sum_{ab} A_{ab} B_{c_a c_b}` for symmetric square ``A``, ``B``.

    Swaps the pair of rows with the largest gain until none gains (or ``max_iter`` swaps); rows in ``fixed`` never
    move. The gain matrix is kept up to date in :math:`O(n^2)` per swap (only rows/columns ``i`` and ``j`` of
    :math:`B_p = B[c][:, c]` change, so :math:`M = A B_p` changes by two rank-2 terms). Returns ``(col, swaps)``.
    """
    col = np.array(col, dtype=np.int64)
    n = len(col)
    Bp = B[np.ix_(col, col)].copy()
    M = A @ Bp
    scale = max(float(np.abs(A).sum() * np.abs(B).max()), 1.0)
    frozen = np.zeros(n, dtype=bool)
    if fixed is not None and len(fixed):
        frozen[fixed] = True
    swaps = 0
    D = _gains(A, Bp, M)
    while swaps < max_iter:
        if frozen.any():
            D[frozen, :] = -np.inf
            D[:, frozen] = -np.inf
        flat = int(np.argmax(D))
        i, j = divmod(flat, n)
        if not D[i, j] > 1e-12 * scale:
            break
        col[i], col[j] = col[j], col[i]
        # columns c outside {i, j} of Bp change only in entries i and j (swapped): M changes by a rank-1 term
        M += np.outer(A[:, i] - A[:, j], Bp[j] - Bp[i])
        Bp[[i, j]] = Bp[[j, i]]
        Bp[:, [i, j]] = Bp[:, [j, i]]
        M[:, [i, j]] = A @ Bp[:, [i, j]]
        D = _gains(A, Bp, M)
        swaps += 1
    return col, swaps


# ---- 4. self-learning -----------------------------------------------------------------------------------------
def _fit_map(Xr: np.ndarray, Yr: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Orthogonal Procrustes on the pairs ``(rows[t], cols[t])`` of the reduced spaces."""
    return polar(Xr[rows].T @ Yr[cols])


def _map_scores(Xr, Yr, rows, cols, k):
    W = _fit_map(Xr, Yr, rows, cols)
    Z = Xr @ W
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    Yn = Yr / np.maximum(np.linalg.norm(Yr, axis=1, keepdims=True), 1e-12)
    return csls(Z @ Yn.T, k)


def _mutual(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose best column has that row as its best row, and those columns."""
    fwd = S.argmax(axis=1)
    back = S.argmax(axis=0)
    rows = np.flatnonzero(back[fwd] == np.arange(S.shape[0]))
    return rows, fwd[rows]


def self_learn(Xr: np.ndarray, Yr: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, csls_k: int = 10,
               max_iter: int = 20) -> tuple[np.ndarray, int]:
    r"""Grow a dictionary of pseudo-known pairs: Procrustes on the pairs, CSLS, assignment, keep the pairs that are
    also mutual CSLS nearest neighbours; repeat until the dictionary stops changing (VecMap's loop, Artetxe et al.
    2018, with a one-to-one assignment). ``Xr``, ``Yr``: reduced (PCA) coordinates. Returns ``(col, iterations)``.
    """
    pairs = set(zip(rows.tolist(), cols.tolist()))
    col = None
    it = 0
    for it in range(1, max_iter + 1):
        r = np.fromiter((a for a, _ in sorted(pairs)), dtype=np.int64)
        c = np.fromiter((b for _, b in sorted(pairs)), dtype=np.int64)
        S = _map_scores(Xr, Yr, r, c, csls_k)
        col = assignment(S)
        mr, mc = _mutual(S)
        new = {(a, b) for a, b in zip(mr.tolist(), mc.tolist()) if col[a] == b}
        if len(new) < 2 or new == pairs:
            break
        pairs = new
    return col, it


# ---- 5. confidence ----------------------------------------------------------------------------------------------
def confidence_report(Xs: np.ndarray, Ys: np.ndarray, Kx: np.ndarray, Ky: np.ndarray, col: np.ndarray,
                      candidates: list[np.ndarray], *, n_null: int = 200, n_holdout: int = 5, csls_k: int = 10,
                      rng: np.random.Generator) -> dict:
    r"""How much to trust a blind matching ``col``, without ground truth.

    Keys
    ----
    alignment : :math:`f(P) / (\lVert K_x\rVert_F \lVert K_y\rVert_F)`, the kernel alignment at the matching (1 for
        isometric spaces matched exactly).
    null_mean, null_std, z : the alignment of ``n_null`` uniformly random matchings and the matching's z-score
        against them. Any optimised matching beats this null by far, so it says that the objective is not noise,
        not that the matching is right; the next three keys say that.
    stability : fraction of rows on which at least half of the refined candidates (independent starts) agree with
        ``col``. A true correspondence is one broad basin that most starts fall into; spurious optima differ.
    holdout_agreement : ``n_holdout`` random halvings of the matched pairs; an orthogonal map fitted (in ``r``
        principal dimensions) on one half predicts the other half by its CSLS nearest neighbour among all rows of
        Y; the mean fraction that agrees with ``col``. A spurious matching is an overfit of the objective and does
        not generalise from half of itself to the other half (chance about ``1 / n_y``).
    mutual_nn : fraction of matched pairs that are mutual CSLS nearest neighbours under the map fitted on all pairs.
    confident : ``holdout_agreement >= 0.5 and stability >= 0.5`` (:data:`CONFIDENCE_RULE`).
    """
    n_x, n_y = len(Xs), len(Ys)
    matched = np.flatnonzero(col >= 0)
    f = qap_objective(Kx, Ky, col)
    norm = max(float(np.linalg.norm(Kx) * np.linalg.norm(Ky)), 1e-300)
    null = np.empty(n_null)
    for t in range(n_null):
        perm = rng.permutation(n_y)[: len(matched)]
        c = np.full(n_x, -1, dtype=np.int64)
        c[matched] = perm
        null[t] = qap_objective(Kx, Ky, c) / norm
    alignment = f / norm
    null_std = float(null.std())
    if candidates:
        agree = np.mean([c == col for c in candidates], axis=0)
        stability = float(np.mean(agree[matched] >= 0.5))
    else:
        stability = float("nan")
    r = max(2, min(32, len(matched) // 4, Xs.shape[1], Ys.shape[1]))
    Xr, Yr = pca_scores(Xs, r), pca_scores(Ys, r)
    hold = []
    for _ in range(n_holdout):
        perm = rng.permutation(matched)
        a, b = perm[: len(perm) // 2], perm[len(perm) // 2:]
        S = _map_scores(Xr, Yr, a, col[a], csls_k)
        hold.append(float(np.mean(S[b].argmax(axis=1) == col[b])))
        S = _map_scores(Xr, Yr, b, col[b], csls_k)
        hold.append(float(np.mean(S[a].argmax(axis=1) == col[a])))
    holdout = float(np.mean(hold))
    S = _map_scores(Xr, Yr, matched, col[matched], csls_k)
    mr, mc = _mutual(S)
    is_mutual = np.zeros(n_x, dtype=bool)
    is_mutual[mr[col[mr] == mc]] = True
    mutual = float(is_mutual[matched].mean())
    confident = bool(holdout >= HOLDOUT_MIN and stability >= STABILITY_MIN)
    return {
        "confident": confident,
        "rule": CONFIDENCE_RULE,
        "alignment": float(alignment),
        "null_mean": float(null.mean()),
        "null_std": null_std,
        "z": float((alignment - null.mean()) / null_std) if null_std > 0 else float("inf"),
        "stability": stability,
        "holdout_agreement": holdout,
        "mutual_nn": mutual,
        "n_candidates": len(candidates),
        "chance": 1.0 / n_y,
    }


# ---- the pipeline -----------------------------------------------------------------------------------------------
@dataclass
class BlindOutcome:
    """What :func:`blind_align` found: ``col[i]`` = row of Y for row i of X (``-1`` none), the QAP objective, the
    refined candidates (one matching per start), the confidence report and the timings of the stages."""

    col: np.ndarray
    objective: float
    candidates: list = field(repr=False)
    report: dict
    stages: dict
    n_iter: int


def _pad(K: np.ndarray, m: int) -> np.ndarray:
    if K.shape[0] == m:
        return K
    out = np.zeros((m, m))
    out[: K.shape[0], : K.shape[0]] = K
    return out


def blind_align(X: Any, Y: Any, *, n_components: int = 8, n_candidates: int = 8, epsilon: float = 0.01,
                gw_max_iter: int = 100, refine: str = "gw+two_opt", self_learning: bool = True, csls_k: int = 10,
                n_null: int = 200, n_holdout: int = 5, rng: Any = None) -> BlindOutcome:
    """The blind pipeline of this module (see its docstring) on two numpy arrays ``X`` (n_x, d_x), ``Y`` (n_y, d_y).

    ``refine``: ``"gw+two_opt"`` (default), ``"two_opt"``, ``"gw"`` or ``"none"`` (rotation starts only).
    """
    import time

    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    Xs, Ys = standardize(X), standardize(Y)
    n_x, n_y = len(Xs), len(Ys)
    m = max(n_x, n_y)
    Kx, Ky = Xs @ Xs.T, Ys @ Ys.T
    k = max(1, min(n_components, Xs.shape[1], Ys.shape[1], min(n_x, n_y) - 1))
    starts = rotation_starts(pca_scores(Xs, k), pca_scores(Ys, k), n_keep=n_candidates, rng=rng)
    stages["starts_s"] = time.perf_counter() - t0
    Fx = Xs if Xs.shape[1] <= n_x else pca_scores(Xs, n_x)
    Fy = Ys if Ys.shape[1] <= n_y else pca_scores(Ys, n_y)
    Ax, By = _pad(Kx, m), _pad(Ky, m)
    refined = []
    n_iter = 0
    t1 = time.perf_counter()
    for _, col in starts:
        if "gw" in refine:
            T0 = np.zeros((n_x, n_y))
            T0[np.flatnonzero(col >= 0), col[col >= 0]] = 1.0 / m
            T, it = entropic_gw(Fx, Fy, T0 + 1e-3 / (n_x * n_y), epsilon=epsilon, max_iter=gw_max_iter)
            n_iter += it
            col = assignment(T)
        if "two_opt" in refine:
            full = _complete(col, m)
            full, swaps = two_opt(Ax, By, full)
            n_iter += swaps
            col = np.where(full[:n_x] < n_y, full[:n_x], -1)
        refined.append((qap_objective(Kx, Ky, col), col))
    stages["refine_s"] = time.perf_counter() - t1
    refined.sort(key=lambda t: -t[0])
    best_f, best = refined[0]
    cands = [c for _, c in refined]
    t2 = time.perf_counter()
    if self_learning and min(n_x, n_y) >= 8:
        r = max(2, min(64, min(n_x, n_y) // 2, Xs.shape[1], Ys.shape[1]))
        Xr, Yr = pca_scores(Xs, r), pca_scores(Ys, r)
        agree = np.mean([c == best for c in cands], axis=0)
        seeds = np.flatnonzero((agree >= 0.5) & (best >= 0))
        if len(seeds) >= 2:
            sl, it = self_learn(Xr, Yr, seeds, best[seeds], csls_k=csls_k)
            n_iter += it
            if "two_opt" in refine:
                full, swaps = two_opt(Ax, By, _complete(sl, m))
                sl = np.where(full[:n_x] < n_y, full[:n_x], -1)
            f_sl = qap_objective(Kx, Ky, sl)
            log.debug("self-learning: objective %.6g vs %.6g", f_sl, best_f)
            if f_sl > best_f:
                best_f, best = f_sl, sl
    stages["self_learning_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    report = confidence_report(Xs, Ys, Kx, Ky, best, cands, n_null=n_null, n_holdout=n_holdout, csls_k=csls_k,
                               rng=rng)
    stages["confidence_s"] = time.perf_counter() - t3
    return BlindOutcome(col=best, objective=best_f, candidates=cands, report=report, stages=stages, n_iter=n_iter)


def _complete(col: np.ndarray, m: int) -> np.ndarray:
    """A permutation of ``range(m)`` extending the partial matching ``col`` (unmatched rows and dummy rows take the
    unused columns in order)."""
    full = np.full(m, -1, dtype=np.int64)
    full[: len(col)] = col
    used = np.zeros(m, dtype=bool)
    used[col[col >= 0]] = True
    free = iter(np.flatnonzero(~used).tolist())
    for i in range(m):
        if full[i] < 0:
            full[i] = next(free)
    return full
