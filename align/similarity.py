"""Do two encoders represent the same items similarly? CKA and its relatives, exact, scalable, honest about chance.

``X`` (n, d_x) and ``Y`` (n, d_y) are features of the same n items from two encoders (row i of each describes
item i). Every metric accepts numpy arrays, memory-mapped ``.npy`` files or torch tensors on any device, reads them
in row chunks, computes in float64 on the input's device (or ``device=``) and never holds two ``n × n`` matrices:

==================  ==========  ==============================================================================
metric              kind        how it scales
==================  ==========  ==============================================================================
``linear_cka``      similarity  feature-space moments, O(n d²) time, O(d²) memory (Gram blocks when n < d)
``unbiased_cka``    similarity  same, from Song et al.'s unbiased HSIC; ``kernel="rbf"`` in Gram blocks
``minibatch_cka``   similarity  unbiased HSIC averaged over minibatches (Nguyen et al. 2021), streams a file
``rbf_cka``         similarity  O(n² d) time; whole n × n matrices up to n ≈ 4,096, square tiles beyond (O(t²)
                                memory); exact median bandwidth (sampled bracket + one float32 pass, proven bound)
``mutual_knn``      similarity  blocked top-k, O(n² d) time, O(n k) memory
``cknna``           similarity  blocked top-k + sparse HSIC on the mutual-neighbour pattern (not symmetric)
``cycle_knn``       similarity  blocked top-k (not symmetric)
``svcca``           similarity  from the same moments as linear CKA
``pwcca``           similarity  from the same moments (not symmetric: weights come from the smaller side)
``procrustes``      distance    nuclear norm of the centred cross-covariance (angular shape metric)
``rsa``             similarity  Spearman correlation of RDMs, O(n²) memory (refuses n past ``max_pairs``);
                                the same value for every ``batch_size`` (fixed RDM blocks, ties rounded)
==================  ==========  ==============================================================================

:func:`list_metrics` gives each metric's declared invariances and defaults; :func:`compare` returns the value with
the settings actually used (e.g. the RBF bandwidths); :func:`permutation_null` measures chance; :func:`layer_sweep`
compares every layer of one encoder with every layer of another; :func:`rank_pairs` ranks candidate encoder pairs.
:func:`nearest_neighbors` gives the per-item neighbour lists behind the kNN metrics.

References: Kornblith et al., "Similarity of neural network representations revisited", ICML 2019; Song et al.,
"Feature selection via dependence maximization", JMLR 2012; Nguyen, Raghu & Kornblith, "Do wide and deep networks
learn the same things?", ICLR 2021; Huh et al., "The Platonic representation hypothesis", ICML 2024; Raghu et al.,
"SVCCA", NeurIPS 2017; Morcos et al., "Insights on representational similarity ... with canonical correlation",
NeurIPS 2018; Williams et al., "Generalized shape metrics on neural representations", NeurIPS 2021;
Kriegeskorte et al., "Representational similarity analysis", 2008; Maniparambil et al., "Do vision and language
encoders represent the world similarly?", CVPR 2024.
"""
from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._backend import resolve_device
from ._similarity._common import check_batch_size, validate_pair
from ._similarity._memory import check_similarity_memory
from ._similarity._neighbors import nearest_neighbors
from ._similarity._registry import INVARIANCES, SPECS, MetricInfo, bind_params, get_spec
from ._validation import InputTypeError, check_int, check_rng, is_torch

__all__ = [
    "INVARIANCES",
    "LayerSweepResult",
    "MetricInfo",
    "NullResult",
    "PairRanking",
    "PairScore",
    "SimilarityResult",
    "cknna",
    "compare",
    "cycle_knn",
    "layer_sweep",
    "linear_cka",
    "list_metrics",
    "minibatch_cka",
    "mutual_knn",
    "nearest_neighbors",
    "permutation_null",
    "procrustes",
    "pwcca",
    "rank_pairs",
    "rbf_cka",
    "rsa",
    "similarity",
    "svcca",
    "unbiased_cka",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimilarityResult:
    """One measured value and everything needed to reproduce it.

    Attributes
    ----------
    metric : str
    value : float
    n : int
        Number of items (rows).
    kind : str
        ``"similarity"`` (larger is more similar) or ``"distance"``.
    settings : dict
        Every parameter used, defaults included, plus what was derived from the data (e.g. ``sigma_x``,
        ``sigma_y`` for RBF CKA, the computation route, kept SVCCA dimensions).
    """

    metric: str
    value: float
    n: int
    kind: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value, "n": self.n, "kind": self.kind,
                "settings": dict(self.settings)}


@dataclass(frozen=True)
class NullResult:
    """A permutation test: the observed value against values for randomly re-paired rows.

    ``p_value = (1 + #{null >= observed}) / (1 + n_permutations)`` for a similarity (``<=`` for a distance), so it
    is never 0 (Phipson & Smyth 2010).
    """

    metric: str
    observed: float
    null_mean: float
    null_std: float
    p_value: float
    n_permutations: int
    n: int
    kind: str
    null_values: tuple[float, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "observed": self.observed, "null_mean": self.null_mean,
                "null_std": self.null_std, "p_value": self.p_value, "n_permutations": self.n_permutations,
                "n": self.n, "kind": self.kind, "null_values": list(self.null_values),
                "settings": dict(self.settings)}


@dataclass(frozen=True)
class LayerSweepResult:
    """``matrix[i, j]`` = metric(layer ``layers_x[i]`` of X, layer ``layers_y[j]`` of Y).

    ``argmax`` / ``max`` are the largest entry; ``best`` / ``best_value`` the most similar pair (the smallest entry
    for a distance).
    """

    metric: str
    kind: str
    layers_x: tuple[str, ...]
    layers_y: tuple[str, ...]
    matrix: np.ndarray
    argmax: tuple[str, str]
    max: float
    best: tuple[str, str]
    best_value: float

    def to_dict(self) -> dict:
        return {"metric": self.metric, "kind": self.kind, "layers_x": list(self.layers_x),
                "layers_y": list(self.layers_y), "matrix": self.matrix.tolist(), "argmax": list(self.argmax),
                "max": self.max, "best": list(self.best), "best_value": self.best_value}


@dataclass(frozen=True)
class PairScore:
    """One candidate pair of encoders: the metric of (features[a], features[b]) and, if asked, its null."""

    a: str
    b: str
    value: float
    null_mean: float | None = None
    null_std: float | None = None
    p_value: float | None = None

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "value": self.value, "null_mean": self.null_mean,
                "null_std": self.null_std, "p_value": self.p_value}


@dataclass(frozen=True)
class PairRanking:
    """Encoder pairs ranked most similar first (largest similarity or smallest distance)."""

    metric: str
    kind: str
    n: int
    pairs: tuple[PairScore, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> PairScore:
        return self.pairs[0]

    def to_dict(self) -> dict:
        return {"metric": self.metric, "kind": self.kind, "n": self.n,
                "pairs": [p.to_dict() for p in self.pairs], "settings": dict(self.settings)}


# --------------------------------------------------------------------------------------------------------------
# Front door
# --------------------------------------------------------------------------------------------------------------


def list_metrics() -> dict[str, MetricInfo]:
    """The available metrics: name -> :class:`MetricInfo` (kind, invariances, symmetry, defaults, reference).

    >>> info = list_metrics()["linear_cka"]
    >>> info.kind, info.invariances
    ('similarity', ('rotation', 'isotropic_scale', 'translation'))
    """
    return {name: spec.info for name, spec in SPECS.items()}


# Biased (HSIC_0) CKA estimators: with n < d, two unrelated random feature sets score near 1 (n = 20, d = 500:
# linear 0.96, RBF 0.98; unbiased 0.05).
_BIASED_CKA = ("linear_cka", "rbf_cka")


def compare(X: Any, Y: Any, metric: str = "linear_cka", *, batch_size: int | None = None, device: Any = None,
            **params: Any) -> SimilarityResult:
    """Measure how similarly ``X`` and ``Y`` represent the same items, with the settings used.

    Parameters
    ----------
    X : array-like or torch.Tensor, shape (n, d_x)
        Features of n items from the first encoder (float32 is fine: every sum is taken in float64).
        A memory-mapped array (``np.load(path, mmap_mode="r")``) is streamed in chunks.
    Y : array-like or torch.Tensor, shape (n, d_y)
        Features of the same n items, row i <-> row i, from the second encoder.
    metric : str
        One of :func:`list_metrics`.
    batch_size : int, optional
        Rows per chunk (per Gram block for the kNN metrics; the tile size of the kernel routes, where giving it
        also forces the tiled route over whole n × n matrices); by default about 64-128 MB per chunk, 512-row
        tiles. It never changes the value beyond float64 rounding (RSA: not at all).
    device : str or torch.device, optional
        Where to compute; default the inputs' device (CPU for numpy).
    **params
        The metric's own parameters (see ``list_metrics()[metric].defaults``), e.g. ``sigma`` for ``rbf_cka``,
        ``k`` for ``mutual_knn``.

    Returns
    -------
    SimilarityResult

    Raises
    ------
    ValueError
        Unknown metric, NaN / inf (the first bad row is named), constant input, entries whose largest magnitude
        lies outside [1e-60, 1e60] (float64 products would overflow or underflow), mismatched rows, 1-D input,
        too few rows, ``k >= n`` for the kNN metrics.
    TypeError
        Unknown parameter names, wrong types.
    """
    spec = get_spec(metric)
    p = bind_params(spec, params)
    batch_size = check_batch_size(batch_size)
    X, Y = validate_pair(X, Y, min_rows=spec.min_rows, metric=metric)
    dev = _device(device, X, Y)
    check_similarity_memory(metric, X.shape[0], X.shape[1], Y.shape[1], p, batch_size, dev)
    if metric in _BIASED_CKA and X.shape[0] < max(X.shape[1], Y.shape[1]):
        warnings.warn(
            f"{metric} is biased upward when there are fewer items than features (n = {X.shape[0]}, d = "
            f"{max(X.shape[1], Y.shape[1])}): unrelated random features score near 1. Use unbiased_cka, compare "
            "against permutation_null, or measure more items", UserWarning, stacklevel=2)
    value, derived = _run(spec, X, Y, dev, batch_size, p)
    return SimilarityResult(metric=metric, value=float(value), n=int(X.shape[0]), kind=spec.info.kind,
                            settings=_settings(p, derived))


def _settings(params: dict, derived: dict) -> dict:
    """Parameters used plus derived settings, as plain JSON-able values (a Generator shows as its repr)."""
    out = {}
    for key, value in {**params, **derived}.items():
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    return out


def similarity(X: Any, Y: Any, metric: str = "linear_cka", **params: Any) -> float:
    """The value of ``metric`` between paired features ``X`` (n, d_x) and ``Y`` (n, d_y); see :func:`compare`.

    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(100, 8))
    >>> round(similarity(X, 2 * X + 1), 12)
    1.0
    """
    return compare(X, Y, metric, **params).value


def _device(device, X, Y):
    """The compute device: ``"cpu"`` for numpy inputs without ``device=`` (so that the numpy-only routes, such as
    linear CKA's moments, never import torch: about a second on a first call), else :func:`resolve_device`."""
    if device is None and not is_torch(X) and not is_torch(Y):
        return "cpu"
    return resolve_device(device, X, Y)


def _run(spec, X, Y, device, batch_size, params):
    if not (is_torch(X) or is_torch(Y)):  # numpy inputs: no autograd graph can be recorded
        return spec.compute(X, Y, device, batch_size, **params)
    import torch

    with torch.no_grad():
        return spec.compute(X, Y, device, batch_size, **params)


# --------------------------------------------------------------------------------------------------------------
# Chance, layers, pairs
# --------------------------------------------------------------------------------------------------------------


def permutation_null(X: Any, Y: Any, metric: str = "linear_cka", n_permutations: int = 100, rng: Any = None, *,
                     batch_size: int | None = None, device: Any = None, **params: Any) -> NullResult:
    """Permutation test: the metric for the true pairing against ``n_permutations`` random re-pairings.

    Each draw permutes the rows of ``Y`` (breaking the item correspondence, keeping both marginal distributions).
    For the moment-based metrics (linear / unbiased CKA in feature space, SVCCA, PWCCA, Procrustes) a draw only
    recomputes the cross moments, O(n d_x d_y); the others recompute the metric.

    Parameters
    ----------
    n_permutations : int
        Number of random permutations (>= 1).
    rng : int, numpy.random.Generator or None
        Source of the permutations.

    Returns
    -------
    NullResult
    """
    import torch

    from ._similarity import _moments

    spec = get_spec(metric)
    p = bind_params(spec, params)
    n_permutations = check_int("n_permutations", n_permutations, min_value=1)
    gen = check_rng(rng)
    batch_size = check_batch_size(batch_size)
    X, Y = validate_pair(X, Y, min_rows=spec.min_rows, metric=metric)
    dev = _device(device, X, Y)
    check_similarity_memory(metric, X.shape[0], X.shape[1], Y.shape[1], p, batch_size, dev)
    n, dx = X.shape
    dy = Y.shape[1]
    moment_params = {k: v for k, v in p.items() if k not in ("kernel", "sigma", "median_scale")}
    values = []
    with torch.no_grad():
        if spec.from_moments is not None and spec.uses_features(n, dx, dy, p):
            base = _moments.accumulate(X, Y, dev, batch_size=batch_size, higher=spec.higher)
            observed, derived = spec.from_moments(base, **moment_params)
            for _ in range(n_permutations):
                m = _moments.accumulate(X, Y, dev, batch_size=batch_size, higher=spec.higher,
                                        perm=gen.permutation(n), base=base)
                values.append(spec.from_moments(m, **moment_params)[0])
        else:
            observed, derived = spec.compute(X, Y, dev, batch_size, **p)
            for _ in range(n_permutations):
                perm = gen.permutation(n)
                Yp = Y[torch.as_tensor(perm, device=Y.device)] if is_torch(Y) else np.asarray(Y[perm])
                values.append(spec.compute(X, Yp, dev, batch_size, **p)[0])
    null = np.asarray(values, dtype=np.float64)
    if spec.info.kind == "similarity":
        extreme = int((null >= observed).sum())
    else:
        extreme = int((null <= observed).sum())
    return NullResult(
        metric=metric, observed=float(observed), null_mean=float(null.mean()),
        null_std=float(null.std(ddof=1)) if n_permutations > 1 else 0.0,
        p_value=(1 + extreme) / (1 + n_permutations), n_permutations=n_permutations, n=int(n),
        kind=spec.info.kind, null_values=tuple(float(v) for v in null), settings=_settings(p, derived),
    )


def _check_feature_map(feats: Any, name: str) -> dict:
    if not isinstance(feats, Mapping):
        raise InputTypeError(f"`{name}` must be a mapping of name -> (n, d) features, got {type(feats).__name__}")
    if len(feats) == 0:
        raise ValueError(f"`{name}` is empty; give at least one named feature array")
    return {str(k): v for k, v in feats.items()}


def layer_sweep(feats_x: Mapping[str, Any], feats_y: Mapping[str, Any], metric: str = "linear_cka",
                **params: Any) -> LayerSweepResult:
    """Compare every layer of one encoder with every layer of another on the same items.

    Parameters
    ----------
    feats_x, feats_y : Mapping[str, array of shape (n, d_layer)]
        Per-layer features (for example ``{"block3": ..., "block6": ...}``); all with the same n rows.
    metric, **params
        As in :func:`compare`.

    Returns
    -------
    LayerSweepResult
        The ``len(feats_x) × len(feats_y)`` matrix, its maximum and argmax.
    """
    fx = _check_feature_map(feats_x, "feats_x")
    fy = _check_feature_map(feats_y, "feats_y")
    spec = get_spec(metric)
    M = np.empty((len(fx), len(fy)))
    for i, (a, X) in enumerate(fx.items()):
        for j, (b, Y) in enumerate(fy.items()):
            M[i, j] = compare(X, Y, metric, **params).value
            log.debug("layer_sweep %s x %s: %.6f", a, b, M[i, j])
    names_x, names_y = tuple(fx), tuple(fy)
    i, j = np.unravel_index(int(np.argmax(M)), M.shape)
    bi, bj = (i, j) if spec.info.kind == "similarity" else np.unravel_index(int(np.argmin(M)), M.shape)
    return LayerSweepResult(metric=metric, kind=spec.info.kind, layers_x=names_x, layers_y=names_y, matrix=M,
                            argmax=(names_x[i], names_y[j]), max=float(M[i, j]),
                            best=(names_x[bi], names_y[bj]), best_value=float(M[bi, bj]))


def rank_pairs(features: Mapping[str, Any], metric: str = "linear_cka", n_permutations: int = 0, rng: Any = None,
               **params: Any) -> PairRanking:
    """Rank every pair of candidate encoders by how similarly they represent the same items.

    The "pick the most similar pair before training projectors" step of Maniparambil et al. (CVPR 2024): given
    each encoder's features on the same n items, measure ``metric`` for every pair (both orders for an asymmetric
    metric) and sort most similar first. With ``n_permutations > 0`` each pair also gets a permutation null
    (one child generator of ``rng`` per pair, so the result does not depend on the order of ``features``' keys
    beyond the pairs themselves).

    Parameters
    ----------
    features : Mapping[str, array of shape (n, d_name)]
        Features of the same n items from each candidate encoder (at least two).
    metric : str
    n_permutations : int
        0 for no null.
    rng : int, numpy.random.Generator or None

    Returns
    -------
    PairRanking
    """
    feats = _check_feature_map(features, "features")
    if len(feats) < 2:
        raise ValueError(f"`features` must hold at least two encoders to rank pairs, got {list(feats)}")
    spec = get_spec(metric)
    bind_params(spec, {k: v for k, v in params.items() if k not in ("batch_size", "device")})
    n_permutations = check_int("n_permutations", n_permutations, min_value=0)
    rows = {k: int(np.shape(v)[0]) if np.ndim(v) >= 1 or is_torch(v) else -1 for k, v in feats.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"every encoder's features must describe the same items (same number of rows), got {rows}")
    names = list(feats)
    pairs = list(itertools.combinations(names, 2) if spec.info.symmetric else itertools.permutations(names, 2))
    gens = check_rng(rng).spawn(len(pairs)) if n_permutations else [None] * len(pairs)
    scores, settings = [], {}
    for (a, b), g in zip(pairs, gens):
        if n_permutations:
            r = permutation_null(feats[a], feats[b], metric, n_permutations, g, **params)
            scores.append(PairScore(a, b, r.observed, r.null_mean, r.null_std, r.p_value))
        else:
            r = compare(feats[a], feats[b], metric, **params)
            scores.append(PairScore(a, b, r.value))
        settings = {k: v for k, v in r.settings.items() if not k.startswith("sigma_")}
    sign = -1.0 if spec.info.kind == "similarity" else 1.0
    scores.sort(key=lambda s: sign * s.value)
    return PairRanking(metric=metric, kind=spec.info.kind, n=rows[names[0]], pairs=tuple(scores), settings=settings)


# --------------------------------------------------------------------------------------------------------------
# One function per metric (the same as compare(X, Y, metric, ...).value)
# --------------------------------------------------------------------------------------------------------------


def linear_cka(X, Y, *, batch_size=None, device=None) -> float:
    """Linear CKA (Kornblith et al. 2019).

    .. math::
        \\mathrm{CKA}(X, Y) = \\frac{\\|X_c^\\top Y_c\\|_F^2}{\\|X_c^\\top X_c\\|_F \\, \\|Y_c^\\top Y_c\\|_F},

    with :math:`X_c` the column-centred X. Computed from streamed float64 moments when n (d_x + d_y) >=
    d_x² + d_y² + d_x d_y (O(n d²) time, O(d²) memory, any n), else from Gram blocks. Invariant to rotation,
    isotropic scaling and translation of either input, not to general invertible linear maps.
    """
    return compare(X, Y, "linear_cka", batch_size=batch_size, device=device).value


def rbf_cka(X, Y, *, sigma="median", median_scale=1.0, batch_size=None, device=None) -> float:
    """CKA with Gaussian kernels :math:`k(x, x') = \\exp(-\\|x - x'\\|^2 / (2\\sigma^2))`, biased HSIC.

    ``sigma="median"``: :math:`\\sigma = \\text{median\\_scale} \\cdot \\sqrt{\\operatorname{median}_{ij} D^2_{ij}}`
    over the full n × n squared-distance matrix, diagonal included (Kornblith et al.'s code), found exactly
    (not estimated) separately for X and Y. ``sigma="platonic"``: 1.0 for both (Huh et al.'s code, applied
    there to L2-normalised features). A number: that sigma for both. :func:`compare` reports the sigmas used
    and the route.

    Everything is float64. Up to n ≈ 4,096 (two n × n float64 matrices in 256 MB) and without ``batch_size`` the
    whole kernel matrices are built (``syrk``, then ``exp`` in place); beyond, square tiles on and above the
    diagonal (two 512 × 512 tiles plus copies of the rows), each one GEMM of norm-augmented rows. The median is
    bracketed by a sample of pairs and settled by one float32 pass whose error bound is proven (see
    ``align._similarity._kernel``), with the undecided pairs recomputed in float64. Time against the papers' float32
    Gram-matrix code (which drifts by 1e-6 at n = 1,000 to 5e-3 at n = 20,000 from the float64 value): the generated
    similarity table of ``benchmarks/README.md`` (``benchmarks/results/full-similarity.json``).
    """
    return compare(X, Y, "rbf_cka", sigma=sigma, median_scale=median_scale, batch_size=batch_size,
                   device=device).value


def unbiased_cka(X, Y, *, kernel="linear", sigma="median", median_scale=1.0, batch_size=None, device=None) -> float:
    """CKA from the unbiased HSIC estimator of Song et al. (2012, eq. 5):

    .. math::
        \\mathrm{HSIC}_1(K, L) = \\frac{1}{n(n-3)} \\Big[\\operatorname{tr}(\\tilde K \\tilde L)
        + \\frac{1^\\top \\tilde K 1 \\, 1^\\top \\tilde L 1}{(n-1)(n-2)}
        - \\frac{2}{n-2} 1^\\top \\tilde K \\tilde L 1\\Big],

    :math:`\\tilde K` = K with its diagonal set to 0. Needs n >= 4. Averages to 0 for independent X and Y at
    any n, where the biased estimator is inflated at small n.
    """
    return compare(X, Y, "unbiased_cka", kernel=kernel, sigma=sigma, median_scale=median_scale,
                   batch_size=batch_size, device=device).value


def minibatch_cka(X, Y, *, minibatch_size=1024, rng=None, device=None) -> float:
    """Minibatch CKA of Nguyen, Raghu & Kornblith (2021): unbiased linear HSIC summed over minibatches of
    ``minibatch_size`` rows (in order, or shuffled by ``rng``); streams a memory-mapped file."""
    return compare(X, Y, "minibatch_cka", minibatch_size=minibatch_size, rng=rng, device=device).value


def mutual_knn(X, Y, *, k=10, normalize=True, batch_size=None, device=None) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024):
    :math:`\\frac1n \\sum_i |N_k^X(i) \\cap N_k^Y(i)| / k`, neighbours by inner product (cosine if ``normalize``)."""
    return compare(X, Y, "mutual_knn", k=k, normalize=normalize, batch_size=batch_size, device=device).value


def cknna(X, Y, *, k=10, normalize=True, batch_size=None, device=None) -> float:
    """CKNNA (Huh et al. 2024): unbiased CKA of the inner-product kernels restricted to the pairs (i, j) where j is
    among the k nearest neighbours of i in both X and Y. Same formula as the Platonic code (``unbiased=True``),
    without its ``+ 1e-6`` in the denominator, and with O(n k) memory. Like that code it is not exactly symmetric:
    the masked kernels A, B are not symmetric matrices, so the :math:`1^\top A B 1` term changes when X and Y
    swap."""
    return compare(X, Y, "cknna", k=k, normalize=normalize, batch_size=batch_size, device=device).value


def cycle_knn(X, Y, *, k=10, normalize=True, batch_size=None, device=None) -> float:
    """Cycle k-NN (Huh et al. 2024): fraction of items i with i among the X-neighbours of some Y-neighbour of i.
    Not symmetric."""
    return compare(X, Y, "cycle_knn", k=k, normalize=normalize, batch_size=batch_size, device=device).value


def svcca(X, Y, *, variance=0.99, n_components=None, batch_size=None, device=None) -> float:
    """SVCCA (Raghu et al. 2017): keep the top principal directions of each side (explaining ``variance`` of it, or
    ``n_components``), then the mean of the min(k_x, k_y) canonical correlations between the kept subspaces."""
    return compare(X, Y, "svcca", variance=variance, n_components=n_components, batch_size=batch_size,
                   device=device).value


def pwcca(X, Y, *, batch_size=None, device=None) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): :math:`\\sum_i \\alpha_i \\rho_i / \\sum_i \\alpha_i` with
    :math:`\\alpha_i = \\sum_j |\\langle h_i, x_j \\rangle|`, :math:`h_i` the unit-norm canonical variates of the
    side with fewer dimensions (X on a tie) and :math:`x_j` its centred feature columns. (Morcos et al.'s code
    projects the uncentred activations; here both are centred, which makes the value translation invariant.)"""
    return compare(X, Y, "pwcca", batch_size=batch_size, device=device).value


def procrustes(X, Y, *, form="angular", batch_size=None, device=None) -> float:
    """Orthogonal Procrustes shape distance between centred, unit-Frobenius-norm X and Y (zero-padded to the same
    width): :math:`\\arccos(\\|X_c^\\top Y_c\\|_* / (\\|X_c\\|_F \\|Y_c\\|_F))` (``form="angular"``, Williams et al.
    2021) or :math:`\\sqrt{2 - 2\\|X_c^\\top Y_c\\|_* / (\\|X_c\\|_F \\|Y_c\\|_F)}` (``"euclidean"``, Ding et al.
    2021). A distance: 0 when Y is a rotated, scaled, translated copy of X."""
    return compare(X, Y, "procrustes", form=form, batch_size=batch_size, device=device).value


def rsa(X, Y, *, dissimilarity="correlation", correlation="spearman", max_pairs=50_000_000, batch_size=None,
        device=None) -> float:
    """Representational similarity analysis (Kriegeskorte et al. 2008): the ``correlation`` (Spearman, ties
    averaged; or Pearson) of the upper triangles of the two RDMs, ``dissimilarity`` = 1 - Pearson r between items,
    Euclidean distance or cosine distance. Needs n >= 3.

    Reproducible ranks: the RDM is built in fixed 256-row blocks whatever ``batch_size`` is, and for Spearman its
    entries are rounded to a binary grid of about 6e-11 of the largest before ranking, so dissimilarities that are
    equal in exact arithmetic tie (near-duplicate Euclidean pairs are recomputed by direct differences)."""
    return compare(X, Y, "rsa", dissimilarity=dissimilarity, correlation=correlation, max_pairs=max_pairs,
                   batch_size=batch_size, device=device).value


# Importing this module binds ``align.similarity`` to the module itself (Python sets a submodule as an attribute of
# its package), which would shadow the function of the same name. Making the module callable keeps
# ``align.similarity(X, Y, metric=...)`` working however it was first reached.
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, X: Any, Y: Any, metric: str = "linear_cka", **params: Any) -> float:
        return similarity(X, Y, metric, **params)


_sys.modules[__name__].__class__ = _CallableModule
