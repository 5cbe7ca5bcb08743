"""scikit-learn conventions every projector follows: tags, ``score``, pickling, and a clear error for a missing Y.

scikit-learn is imported only when one of these is used (``get_tags``, ``score``), never when :mod:`projectors` is.
With them a projector passes ``sklearn.utils.estimator_checks.parametrize_with_checks`` (see
``tests/projectors/test_sklearn_conventions.py`` for the few checks that cannot apply, and why), ``clone`` /
``get_params`` / ``set_params`` round-trip, and it composes: ``Pipeline([("scale", StandardScaler()), ("proj",
make_projector("linear"))])`` fits on paired ``(X, Y)``, and ``GridSearchCV`` tunes it by :meth:`score`.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["SklearnConventions"]


def sklearn_input(A: Any, name: str, *, fitting: bool = False, target: bool = False):
    """The input checks scikit-learn's estimator checks expect, in their words; everything else is left to
    :func:`align._validation.check_array`.

    Sparse matrices and complex values are refused, object arrays of numbers become float64, a 1-D target ``Y``
    becomes one column (a 1-D ``X`` is refused: it is ambiguous), empty inputs and a single training pair are refused.
    torch tensors pass through unchanged.
    """
    from align._validation import is_torch

    if is_torch(A):
        return A
    if hasattr(A, "tocsr") or hasattr(A, "toarray"):
        raise ValueError(f"`{name}` is a sparse matrix; sparse input is not supported: pass dense features "
                         f"({name}.toarray())")
    arr = np.asarray(A)
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: `{name}` has dtype {arr.dtype}; pass real-valued features")
    if arr.dtype.kind == "O":
        arr = arr.astype(np.float64)  # numbers convert; anything else raises numpy's TypeError naming the value
    if arr.ndim == 1 and target:
        arr = arr.reshape(-1, 1)
    elif arr.ndim == 1:
        raise ValueError(
            f"Expected a 2-D array for `{name}`, got a 1-D array of shape {arr.shape}. Reshape your data: "
            f"{name}.reshape(-1, 1) if it has a single feature, {name}.reshape(1, -1) if it is a single row"
        )
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ValueError(f"`{name}` has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required.")
    if fitting and arr.ndim == 2 and arr.shape[0] < 2:
        raise ValueError(f"n_samples={arr.shape[0]}: `{name}` needs at least 2 paired rows to fit a projector")
    return arr  # np.asarray: the same buffer for arrays and memory-maps (no copy)


def _require_y(fit):
    """Wrap a ``fit(X, Y, ...)``: a missing Y says what is needed (scikit-learn's wording), and X and Y get the checks
    of :func:`sklearn_input`."""

    @functools.wraps(fit)
    def wrapper(self, X, Y=None, *args, **kwargs):
        if Y is None and "y" in kwargs:  # scikit-learn's keyword
            Y = kwargs.pop("y")
        if Y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: a projector learns from "
                "paired rows, fit(X, Y) with row i of Y describing the same item as row i of X"
            )
        X = sklearn_input(X, "X", fitting=True)
        Y = sklearn_input(Y, "Y", fitting=True, target=True)
        return fit(self, X, Y, *args, **kwargs)

    wrapper._requires_y = True
    return wrapper


def _merged_signature(cls):
    """``cls(*, every parameter)``: the keyword-only parameters of every ``__init__`` along the MRO (the kinds pass
    the shared training settings through ``**training``), so ``inspect.signature(cls)`` — which ``help``, IDEs and
    scikit-learn read — lists them all with their defaults."""
    import inspect

    params, seen = [], set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        sig = inspect.signature(init)
        for p in sig.parameters.values():
            if p.kind == p.KEYWORD_ONLY and p.name not in seen:
                seen.add(p.name)
                params.append(p)
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return inspect.Signature(params)


class SklearnConventions:
    """Mixin: scikit-learn estimator tags, ``score`` (held-out retrieval R@1), pickling of fitted torch heads."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fit = cls.__dict__.get("fit")
        if fit is not None and not getattr(fit, "_requires_y", False):
            cls.fit = _require_y(fit)
        if hasattr(cls, "_param_names"):
            cls.__signature__ = _merged_signature(cls)

    # ---- scikit-learn protocol -----------------------------------------------------------------------------------
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_features_in_")

    def __sklearn_tags__(self):
        """A transformer that needs a 2-D, multi-output target Y (the paired embeddings), float32/float64 kept."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=True, one_d_labels=False, two_d_labels=False, positive_only=False,
                                   multi_output=True, single_output=False),
            transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
            input_tags=InputTags(two_d_array=True, allow_nan=False),
            requires_fit=True,
        )

    def score(self, X: Any, Y: Any = None, sample_weight: Any = None, *, y: Any = None) -> float:
        r"""Retrieval R@1 of the pairs ``(X[i], Y[i])``: the fraction of rows whose mapped ``X[i]`` is closest to
        its own mapped ``Y[i]`` among all rows of ``Y`` (cosine similarity).

        With :math:`q_i` = ``transform(X)[i]`` and :math:`g_j` = ``transform_y(Y)[j]``,

        .. math:: \mathrm{R@1} = \frac{1}{n}\sum_i \big[\,\mathrm{rank}_i = 1\,\big], \qquad
                  \mathrm{rank}_i = |\{j : \cos(q_i, g_j) \ge \cos(q_i, g_i)\}|,

        (:func:`align.evaluation.retrieval_metrics`, query-to-gallery direction; ties count against the pair).
        Larger is better, so ``GridSearchCV`` and ``cross_val_score`` can tune a projector on held-out pairs.

        Parameters
        ----------
        X : array of shape (n, d_x)
        Y : array of shape (n, d_y)
            Row i of Y is the partner of row i of X.
        sample_weight : None
            Not supported (present for scikit-learn's signature).
        y : array, optional
            scikit-learn's name for ``Y`` (``score(X, y=Y)``).
        """
        from align.evaluation import retrieval_metrics

        if Y is None:
            Y = y
        if sample_weight is not None:
            raise ValueError("`sample_weight` is not supported by projector.score; pass None")
        if Y is None:
            raise ValueError("score(X, Y) needs the paired Y (row i of Y is the partner of row i of X)")
        Q = self.transform(X)
        G = self.transform_y(sklearn_input(Y, "Y", target=True))
        if Q.shape[0] != G.shape[0]:
            raise ValueError(f"`X` and `Y` must have the same number of rows (pairs), got {Q.shape[0]} and "
                             f"{G.shape[0]}")
        return retrieval_metrics(Q, G, ks=(1,)).recall_at(1, "q2g")

    # ---- pickling: fitted torch heads are rebuilt from their state, not pickled as (local) classes --------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        try:
            from torch import nn
        except ImportError:  # pragma: no cover - torch is a dependency
            return state
        modules = [k for k, v in state.items() if isinstance(v, nn.Module)]
        if modules and hasattr(self, "n_features_in_"):
            for k in modules:
                del state[k]
            state["__projector_state__"] = self._get_state()
        return state

    def __setstate__(self, state: dict) -> None:
        saved = state.pop("__projector_state__", None)
        self.__dict__.update(state)
        if saved is not None:
            self._set_state(saved)
