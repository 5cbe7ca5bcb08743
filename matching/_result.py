"""The typed result every matcher returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["MatchResult"]


@dataclass(frozen=True)
class MatchResult:
    """A correspondence between the rows of ``X`` and the rows of ``Y``.

    Attributes
    ----------
    col_ind : ndarray of shape (n_x,), int64
        ``col_ind[i]`` is the row of ``Y`` matched to row ``i`` of ``X``; ``-1`` where row ``i`` is left unmatched
        (only when ``n_x > n_y``). Known pairs (``partial_match``) are always kept. Always a numpy array, whatever
        the kind of the inputs.
    score : float
        The method's objective at the returned matching (larger is better): the QAP objective
        :math:`\\mathrm{tr}(A P B^\\top P^\\top)` for ``faq``; the summed pair scores of the assignment for methods
        that produce a score matrix.
    n_iter : int
        Iterations of the solver that produced the returned matching (0 for closed-form methods).
    converged : bool
        Whether that solver met its tolerance before ``max_iter``.
    method : str
        The method name.
    similarity : ndarray of shape (n_x, n_y) or None
        Pair scores (larger means more alike) for methods that produce them (``local_cka``, ``procrustes``,
        ``lstsq``, ``relative``, ``asif``, the OT couplings); ``None`` for ``faq``. Rows and columns of known pairs
        are included as computed; retrieval metrics should use the non-seed block.
    n_restarts : int
        Restarts run (``faq``); 1 otherwise.
    """

    col_ind: np.ndarray
    score: float
    n_iter: int
    converged: bool
    method: str
    similarity: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    n_restarts: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the similarity matrix is left out; it can be large)."""
        return {
            "method": self.method,
            "col_ind": [int(c) for c in self.col_ind],
            "score": float(self.score),
            "n_iter": int(self.n_iter),
            "converged": bool(self.converged),
            "n_restarts": int(self.n_restarts),
        }
