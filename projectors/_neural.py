"""Trained projectors: linear (closed-form ridge or trained), residual MLP head, SAIL-style gated MLP.

Each estimator builds its head(s), hands them to :func:`projectors.trainer.train` and keeps the best weights. The
training settings are the same keyword arguments for every trained kind (see :class:`TrainedProjector`).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from align._validation import (
    InputTypeError,
    check_choice,
    check_float,
    check_int,
    check_paired,
)

from ._base import Projector, register
from ._heads import _gated_mlp, _residual_mlp, _torch, _warm_start
from ._pairs import _check_groups, _check_training_pairs, split_pairs

log = logging.getLogger(__name__)


# ---- the trained estimator base --------------------------------------------------------------------------------
class TrainedProjector(Projector):
    """Shared training settings for the trained kinds.

    Parameters
    ----------
    loss : {"infonce", "siglip"}
        Symmetric InfoNCE with a learnable clamped temperature, or the SigLIP sigmoid loss with learnable scale/bias.
    temperature : float
        Initial InfoNCE temperature.
    batch_size : int
        Global batch (contrastive negatives come from the batch; larger is usually better).
    max_epochs, lr, weight_decay, warmup, patience :
        AdamW, linear warmup over a ``warmup`` fraction of the steps then cosine decay; stop after ``patience``
        epochs without better validation R@1.
    val_fraction : float
        Fraction of the pairs held out for early stopping when ``fit`` gets no explicit validation set (0: none).
    project_y : bool
        Also train a head of the same kind on Y (two-sided alignment into an ``out_dim`` space).
    out_dim : int, optional
        Output dimension; default ``d_y`` (required to differ from it only with ``project_y``).
    checkpoint : str, optional
        Path for resumable checkpoints; a killed ``fit`` with the same settings continues from it.
    amp : bool
        bfloat16 autocast on GPU.
    device : str, optional
        Default: CUDA when available, else CPU.
    init : {"auto", "ridge", "random"}
        ``"ridge"`` starts the head as the closed-form ridge map from X to Y (penalty ``init_alpha``; residual
        branches start at zero), so training refines the least-squares solution instead of starting from scratch.
        One-sided only (``project_y=False``). ``"auto"`` (default): ``"ridge"`` when one-sided, else ``"random"``.
        The start competes in validation (``best_epoch == -1``, ``fit_report_["start_kept"]``), so with a
        validation set the fitted map is never more than one standard error of its R@1 below the closed-form start
        on it (within that, the lower validation loss wins: :class:`projectors.trainer.TrainResult`). When the start wins and the
        validation pairs were held out of ``X`` by ``val_fraction``, the closed form is refitted on all pairs
        (``fit_report_["start_refit_on_all_pairs"]``): the result is then the ``linear`` kind's default map.
    init_alpha : float or "auto"
        Ridge penalty of that start; ``"auto"`` chooses it by k-fold held-out retrieval on the training rows
        (:func:`align._ridge.ridge_cv`), stored in ``init_alpha_`` and ``init_alpha_curve_``.
    rng : int, numpy.random.Generator or None
        Seed of the initialisation, the split, the folds and the data order. ``fit`` draws one int seed from it
        (``seed_``) and stores that in checkpoints.

    Attributes
    ----------
    fit_report_ : dict
        Plain values for a fit summary: the chosen ridge penalty of the start and its validation curve, the
        validation R@1 of the start and of the returned weights, the best epoch and whether the start was kept.
    """

    def __init__(
        self,
        *,
        loss: str = "infonce",
        temperature: float = 0.07,
        batch_size: int = 1024,
        max_epochs: int = 30,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup: float = 0.05,
        patience: int = 5,
        val_fraction: float = 0.1,
        project_y: bool = False,
        out_dim: int | None = None,
        checkpoint: str | None = None,
        checkpoint_every: int = 0,
        amp: bool = True,
        device: str | None = None,
        init: str = "auto",
        init_alpha: float | str = "auto",
        rng: Any = 0,
    ):
        self.loss = loss
        self.temperature = temperature
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.patience = patience
        self.val_fraction = val_fraction
        self.project_y = project_y
        self.out_dim = out_dim
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.amp = amp
        self.device = device
        self.init = init
        self.init_alpha = init_alpha
        self.rng = rng

    # subclasses: build one head d_in -> d_out
    def _make_head(self, d_in: int, d_out: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _arch(self) -> dict:
        return {}

    @property
    def trains(self) -> bool:
        """True: ``fit`` runs the training loop (the training settings apply)."""
        return True

    def _validate_params(self) -> None:
        """Check every parameter value (types, ranges, choices); one-line errors naming the parameter."""
        check_choice("loss", self.loss, ("infonce", "siglip"))
        check_float("temperature", self.temperature, min_value=0.0, inclusive=False)
        check_int("batch_size", self.batch_size, min_value=2)
        check_int("max_epochs", self.max_epochs, min_value=1)
        check_float("lr", self.lr, min_value=0.0, inclusive=False)
        check_float("weight_decay", self.weight_decay, min_value=0.0)
        check_float("warmup", self.warmup, min_value=0.0, max_value=1.0)
        check_int("patience", self.patience, min_value=1)
        check_float("val_fraction", self.val_fraction, min_value=0.0, max_value=0.9)
        check_int("checkpoint_every", self.checkpoint_every, min_value=0)
        if self.out_dim is not None:
            check_int("out_dim", self.out_dim, min_value=1)
        check_choice("init", self.init, ("auto", "ridge", "random"))
        if self.init == "ridge" and self.project_y:
            raise ValueError("init='ridge' maps X into Y's own space; it cannot be combined with project_y=True "
                             "(use init='auto' or 'random')")
        _check_alpha("init_alpha", self.init_alpha)
        _check_rng_param(self.rng)
        self._validate_arch()

    def _validate_arch(self) -> None:
        pass

    def _seed(self) -> int:
        from align._validation import check_rng

        if isinstance(self.rng, (int, np.integer)) and not isinstance(self.rng, bool):
            return int(self.rng)  # an int seed is used as is (same splits and order as before; resumable)
        return int(check_rng(self.rng).integers(2 ** 63))

    def _train_config(self):
        from .trainer import TrainConfig

        self._validate_params()
        self.seed_ = self._seed()
        return TrainConfig(
            loss=self.loss, temperature=float(self.temperature), batch_size=int(self.batch_size),
            max_epochs=int(self.max_epochs), lr=float(self.lr), weight_decay=float(self.weight_decay),
            warmup=float(self.warmup), patience=int(self.patience), amp=bool(self.amp), seed=self.seed_,
            checkpoint_every=int(self.checkpoint_every),
        )

    def fit(self, X: Any, Y: Any, *, groups: Any = None, X_val: Any = None, Y_val: Any = None,
            groups_val: Any = None, callback=None, metadata: dict | None = None) -> TrainedProjector:
        """Train on pairs (row i of X with row i of Y).

        Parameters
        ----------
        X, Y : arrays of shape (n, d_x), (n, d_y); memory-maps are read batch by batch.
        groups : int array of shape (n,), optional
            Rows with the same group are all positives of each other (several captions per image).
        X_val, Y_val, groups_val : optional
            An explicit validation set; otherwise ``val_fraction`` of the groups is held out.
        callback : callable, optional
            Receives each epoch's record (loss, lr, logit scale, val R@1, timings).
        metadata : dict, optional
            Plain values saying where X and Y came from (``x_encoder``, ``y_encoder``, ``layer``, ``pooling``),
            stored in the checkpoint and in :attr:`metadata_` (so ``save`` writes them). Resuming a ``checkpoint``
            written for other encoders, or for other training rows (a fingerprint of X and Y is stored too), is
            refused.
        """
        torch = _torch()
        from .trainer import train

        X, Y = _check_training_pairs(X, Y)
        n = X.shape[0]
        config = self._train_config()
        groups = None if groups is None else _check_groups(groups, n, "groups")
        all_pairs = (X, Y, groups)  # before any internal split: the start is refitted on all of them if it wins
        split_here = False
        if X_val is None:
            split_here = True
            train_rows, val_rows = split_pairs(n, groups, float(self.val_fraction), config.seed)
            if val_rows is not None:
                X_val, Y_val = np.asarray(X[val_rows], np.float32), np.asarray(Y[val_rows], np.float32)
                groups_val = None if groups is None else groups[val_rows]
                if groups is not None:
                    groups = groups[train_rows]
                X, Y = np.asarray(X[train_rows], np.float32), np.asarray(Y[train_rows], np.float32)
        else:
            X_val, Y_val = check_paired(X_val, Y_val, names=("X_val", "Y_val"))
            if X_val.shape[1] != X.shape[1] or Y_val.shape[1] != Y.shape[1]:
                raise ValueError("`X_val`/`Y_val` must have the same columns as `X`/`Y`")
            groups_val = None if groups_val is None else _check_groups(groups_val, X_val.shape[0], "groups_val")
        d_x, d_y = X.shape[1], Y.shape[1]
        d_out = d_y if self.out_dim is None else check_int("out_dim", self.out_dim, min_value=1)
        if d_out != d_y and not self.project_y:
            raise ValueError(
                f"`out_dim` ({d_out}) differs from Y's dimension ({d_y}) but Y is not projected; "
                "set project_y=True or leave out_dim unset"
            )
        with torch.random.fork_rng(devices=[]):  # seeded heads without touching the caller's global torch RNG
            torch.manual_seed(config.seed)
            x_head = self._make_head(d_x, d_out)
            y_head = self._make_head(d_y, d_out) if self.project_y else None
        self.init_alpha_, self.init_alpha_curve_ = None, None
        start = "ridge" if self.init == "ridge" or (self.init == "auto" and not self.project_y) else "random"
        if start == "ridge":
            W, b, self.init_alpha_, self.init_alpha_curve_ = _closed_form(
                X, Y, self.init_alpha, fit_intercept=True, groups=groups, seed=config.seed)
            _warm_start(x_head, W, b)
        from .trainer import data_fingerprint

        given = {k: v for k, v in (metadata or {}).items() if v is not None}
        ckpt_meta = {"kind": self.kind, **given, "X": data_fingerprint(X), "Y": data_fingerprint(Y)}
        result = train(x_head, y_head, X, Y, config=config, groups=groups, X_val=X_val, Y_val=Y_val,
                       groups_val=groups_val, device=self.device, checkpoint=self.checkpoint,
                       metadata=ckpt_meta, callback=callback)
        self.metadata_ = dict(getattr(self, "metadata_", {}) or {}, **given)
        self.x_head_ = x_head.cpu().eval()
        self.y_head_ = y_head.cpu().eval() if y_head is not None else None
        self.train_result_ = result
        self.history_ = result.history
        self.n_features_in_, self.n_features_y_ = d_x, d_y
        self.fit_report_ = {
            "kind": self.kind, "trains": True, "start": start, "init_alpha": self.init_alpha_,
            "init_alpha_curve": self.init_alpha_curve_, "n_train": int(X.shape[0]),
            "n_val": None if X_val is None else int(X_val.shape[0]),
            "val_R@1_start": None if X_val is None else result.initial_score,
            "val_R@1": None if X_val is None else result.best_score,
            "best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "start_kept": bool(X_val is not None and result.best_epoch == -1),
        }
        self.fit_report_["start_refit_on_all_pairs"] = False
        if self.fit_report_["start_kept"]:
            log.info("%s: no epoch beat the %s start on validation R@1 (%.4f); returning the start", self.kind,
                     start, result.initial_score)
            if start == "ridge" and split_here:
                # the held-out pairs only served to compare epochs: the closed form they chose gets them back
                Xa, Ya, ga = all_pairs
                W, b, self.init_alpha_, self.init_alpha_curve_ = _closed_form(
                    Xa, Ya, self.init_alpha, fit_intercept=True, groups=ga, seed=config.seed)
                _warm_start(self.x_head_, W, b)
                self.fit_report_.update(start_refit_on_all_pairs=True, init_alpha=self.init_alpha_,
                                        init_alpha_curve=self.init_alpha_curve_, n_train=int(Xa.shape[0]))
        return self

    def _transform_torch(self, X, side):
        torch = _torch()
        head = self.x_head_ if side == "x" else self.y_head_
        if head is None:
            return X
        head = head.to(X.device)
        try:
            return torch.cat([head(X[s:s + 8192].float()) for s in range(0, X.shape[0], 8192)])
        finally:
            head.cpu()  # the fitted head lives on the CPU; never keep the caller's GPU memory

    def _get_state(self):
        return {"x_head": self.x_head_.state_dict(),
                "y_head": self.y_head_.state_dict() if self.y_head_ is not None else None,
                "fit_report": _plain(getattr(self, "fit_report_", None))}

    def _set_state(self, s):
        d_out = self.n_features_y_ if self.out_dim is None else self.out_dim
        self.x_head_ = self._make_head(self.n_features_in_, d_out)
        self.x_head_.load_state_dict(s["x_head"])
        self.x_head_.eval()
        self.y_head_ = None
        if s.get("y_head") is not None:
            self.y_head_ = self._make_head(self.n_features_y_, d_out)
            self.y_head_.load_state_dict(s["y_head"])
            self.y_head_.eval()
        if s.get("fit_report") is not None:
            self.fit_report_ = s["fit_report"]
            self.init_alpha_ = self.fit_report_.get("init_alpha")
            self.init_alpha_curve_ = self.fit_report_.get("init_alpha_curve")


def _check_alpha(name: str, value: Any) -> None:
    if isinstance(value, str):
        check_choice(name, value, ("auto",))
    else:
        check_float(name, value, min_value=0.0)


def _check_rng_param(rng: Any) -> None:
    from align._validation import check_rng

    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        check_int("rng", rng, min_value=0)
    else:
        check_rng(rng)


def _plain(value: Any) -> Any:
    """Plain Python values (dicts, lists, floats, str, None) that ``torch.load(weights_only=True)`` reads back."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _closed_form(X, Y, alpha, *, fit_intercept: bool, groups=None, seed: int = 0, scoring: str = "r@1"):
    """Ridge map X -> Y with ``alpha`` a number or ``"auto"`` (k-fold held-out retrieval, which also chooses the
    weight of Y's mean in the intercept, ``curve["intercept_scale"]``): W, b, alpha, curve."""
    from align._ridge import ridge_cv, ridge_fit

    curve, gamma = None, 1.0
    if isinstance(alpha, str):
        cv = ridge_cv(X, Y, fit_intercept=fit_intercept, groups=groups, rng=seed, scoring=scoring)
        alpha, curve, gamma = cv.alpha, cv.to_dict(), cv.intercept_scale
    W, b = ridge_fit(X, Y, alpha=float(alpha), fit_intercept=fit_intercept, intercept_scale=gamma)
    return W, b, float(alpha), curve


# ---- kinds -------------------------------------------------------------------------------------------------------
@register("linear", "affine map: closed-form ridge regression (solver='closed_form') or trained contrastively")
class LinearProjector(TrainedProjector):
    r"""Affine map :math:`x \mapsto xW + b` into Y's space.

    ``solver="closed_form"`` solves ridge regression :math:`\min \|Y - XW - b\|_F^2 + \alpha\|W\|_F^2` exactly in
    float64 from chunked second moments (:math:`O(n d^2)`, no training settings used) — the "least squares" latent
    space translation of Maiorca et al. (2023). By default (``alpha="auto"``) the penalty is chosen by 5-fold
    validation of held-out retrieval R@1 over a grid relative to the spectrum of :math:`X_c^\top X_c` that includes
    0 (:func:`align._ridge.ridge_cv`: the smallest :math:`\alpha` within one standard error of the best), so raw
    and L2-normalised features both work; measurements against ``np.linalg.lstsq`` are in ``benchmarks/README.md``
    ("Projector defaults vs least squares"). ``solver="trained"`` learns :math:`W, b` with the contrastive loss
    (all :class:`TrainedProjector` settings apply), starting from the closed form.

    Parameters
    ----------
    solver : {"closed_form", "trained"}
    alpha : float or "auto"
        Ridge penalty of the closed form; a number is used as given (0: minimum-norm least squares).
    alpha_scoring : {"r@1", "mse"}
        What ``alpha="auto"`` validates: held-out retrieval R@1 (cosine) or mean squared error.
    fit_intercept : bool
        Learn :math:`b` (closed form: centre both sides first).

    Attributes
    ----------
    coef_ : ndarray (d_x, d_y), intercept_ : ndarray (d_y,)
        The closed-form map.
    alpha_ : float
        The penalty used (the chosen one with ``alpha="auto"``).
    alpha_curve_ : dict or None
        With ``alpha="auto"``: the validation curve (``alphas``, ``relative_alphas``, ``mean``, ``std``,
        ``fold_scores``, ``scoring``, ``rule``; :class:`align._ridge.RidgeCVResult` as plain values).
    fit_report_ : dict
        Plain values for a fit summary (``alpha``, ``alpha_curve``, ``n_train``, ``trains``).
    """

    def __init__(self, *, solver: str = "closed_form", alpha: float | str = "auto", alpha_scoring: str = "r@1",
                 fit_intercept: bool = True, **training):
        super().__init__(**training)
        self.solver = solver
        self.alpha = alpha
        self.alpha_scoring = alpha_scoring
        self.fit_intercept = fit_intercept

    @property
    def trains(self) -> bool:
        """True only with ``solver="trained"``; the closed form has no training loop."""
        return self.solver == "trained"

    def _validate_arch(self) -> None:
        check_choice("solver", self.solver, ("closed_form", "trained"))
        _check_alpha("alpha", self.alpha)
        check_choice("alpha_scoring", self.alpha_scoring, ("r@1", "mse"))

    def _make_head(self, d_in, d_out):
        from torch import nn

        return nn.Linear(d_in, d_out, bias=bool(self.fit_intercept))

    def fit(self, X, Y, **fit_params):
        self._validate_params()
        for name in ("coef_", "intercept_", "alpha_", "alpha_curve_", "fit_report_"):
            self.__dict__.pop(name, None)
        if self.solver == "trained":
            return super().fit(X, Y, **fit_params)
        extra = [k for k, v in fit_params.items() if v is not None and k not in ("callback", "metadata")]
        if extra:
            raise InputTypeError(f"{', '.join(extra)} only apply to solver='trained'")
        if self.project_y:
            raise ValueError("project_y=True needs solver='trained'; the closed form maps X into Y's space")
        X, Y = _check_training_pairs(X, Y)
        W, b, alpha, curve = _closed_form(X, Y, self.alpha, fit_intercept=bool(self.fit_intercept),
                                          seed=self._seed(), scoring=self.alpha_scoring)
        head = self._make_head(X.shape[1], Y.shape[1]).double()
        torch = _torch()
        with torch.no_grad():
            head.weight.copy_(W.T)
            if head.bias is not None:
                head.bias.copy_(b)
        self.x_head_ = head.float().eval()
        self.coef_ = W.cpu().numpy()
        self.intercept_ = b.cpu().numpy()
        self.alpha_, self.alpha_curve_ = alpha, curve
        self.y_head_ = None
        self.history_ = []
        self.n_features_in_, self.n_features_y_ = X.shape[1], Y.shape[1]
        given = {k: v for k, v in (fit_params.get("metadata") or {}).items() if v is not None}
        if given:
            self.metadata_ = dict(getattr(self, "metadata_", {}) or {}, **given)
        self.fit_report_ = {"kind": self.kind, "trains": False, "alpha": alpha, "alpha_curve": curve,
                            "n_train": int(X.shape[0])}
        return self

    def _transform_torch(self, X, side):
        torch = _torch()
        if side == "x" and hasattr(self, "coef_"):  # closed form: exact float64 map
            W = torch.as_tensor(self.coef_, device=X.device)
            b = torch.as_tensor(self.intercept_, device=X.device)
            return X.to(torch.float64) @ W + b
        return super()._transform_torch(X, side)

    def _get_state(self):
        state = super()._get_state()
        if hasattr(self, "coef_"):
            torch = _torch()
            state["coef"] = torch.from_numpy(self.coef_)
            state["intercept"] = torch.from_numpy(self.intercept_)
        return state

    def _set_state(self, s):
        super()._set_state(s)
        if s.get("coef") is not None:
            self.coef_ = s["coef"].numpy()
            self.intercept_ = s["intercept"].numpy()
            report = s.get("fit_report") or {}
            self.alpha_ = report.get("alpha", self.alpha if not isinstance(self.alpha, str) else None)
            self.alpha_curve_ = report.get("alpha_curve")


@register("mlp", "residual MLP projection head trained contrastively (Maniparambil et al. 2024)")
class MLPProjector(TrainedProjector):
    r"""Residual MLP head: a linear stem into the output space, then pre-norm residual blocks.

    .. math:: h_0 = W_0 x + b_0, \qquad h_{l+1} = h_l + W_2\,\mathrm{GELU}(W_1 \mathrm{LN}(h_l)),

    trained with a contrastive loss (Maniparambil et al., "From Unimodal to Multimodal: Scaling up Projectors to Align
    Modalities", 2024). Because the stem is linear, zero-initialised blocks reduce to the ``linear`` kind.

    Parameters
    ----------
    hidden_dim : int
        Width of each block's hidden layer.
    n_blocks : int
        Number of residual blocks.
    dropout : float
        Dropout inside the blocks.
    """

    def __init__(self, *, hidden_dim: int = 1024, n_blocks: int = 1, dropout: float = 0.0, **training):
        super().__init__(**training)
        self.hidden_dim = hidden_dim
        self.n_blocks = n_blocks
        self.dropout = dropout

    def _validate_arch(self) -> None:
        check_int("hidden_dim", self.hidden_dim, min_value=1)
        check_int("n_blocks", self.n_blocks, min_value=0)
        check_float("dropout", self.dropout, min_value=0.0, max_value=1.0)

    def _make_head(self, d_in, d_out):
        return _residual_mlp(d_in, d_out, check_int("hidden_dim", self.hidden_dim, min_value=1),
                             check_int("n_blocks", self.n_blocks, min_value=0),
                             check_float("dropout", self.dropout, min_value=0.0, max_value=1.0, inclusive=True))


@register("glu", "gated (GLU/SwiGLU) MLP head with a linear skip, as in SAIL (Zhang et al. 2025)")
class GLUProjector(TrainedProjector):
    r"""SAIL-style gated MLP: :math:`W_s x + W_o(\mathrm{SiLU}(W_g \mathrm{LN}(x)) \odot W_u \mathrm{LN}(x))`.

    SAIL (Zhang et al., CVPR 2025) pre-encodes both modalities and trains such a light gated alignment layer with the
    SigLIP loss (use ``loss="siglip"``) at very large batch on one GPU.

    Parameters
    ----------
    hidden_dim : int
        Width of the gated hidden layer.
    dropout : float
    """

    def __init__(self, *, hidden_dim: int = 1024, dropout: float = 0.0, **training):
        super().__init__(**training)
        self.hidden_dim = hidden_dim
        self.dropout = dropout

    def _validate_arch(self) -> None:
        check_int("hidden_dim", self.hidden_dim, min_value=1)
        check_float("dropout", self.dropout, min_value=0.0, max_value=1.0)

    def _make_head(self, d_in, d_out):
        return _gated_mlp(d_in, d_out, check_int("hidden_dim", self.hidden_dim, min_value=1),
                          check_float("dropout", self.dropout, min_value=0.0, max_value=1.0))

