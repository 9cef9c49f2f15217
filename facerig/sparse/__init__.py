"""Sparse coding on the energy core: ISTA / FISTA, the LISTA family, dictionary learning.

The batched Lasso ``y*(x) = argmin_y ½‖x − y·D‖² + α‖y‖₁`` with a dictionary ``D`` of shape
``(n_atoms, n_features)`` (atoms as rows), signals ``X`` ``(n_samples, n_features)`` and codes
``(n_samples, n_atoms)`` — scikit-learn's layout and, for ``sparse_encode(..., "lasso_cd")``,
its ``alpha`` (see :mod:`facerig.sparse.lasso` for the exact relation to ``Lasso``'s scaling).

* :mod:`~facerig.sparse.lasso` — objective, duality gap, ISTA / FISTA from
  :mod:`facerig.energy.solvers` with gap stopping, warm starts, active-set shrinking and
  support polishing; :func:`sparse_encode`.
* :mod:`~facerig.sparse.networks` — :class:`LISTANet`: LISTA, tied LISTA, LISTA-CP, ALISTA,
  step-only LISTA (with optional support selection); :func:`alista_weight`.
* :mod:`~facerig.sparse.training` — the Lasso as a :class:`facerig.energy.training.Problem`
  and :func:`train_lista` (supervised / self-supervised / unsupervised, joint or layer-wise).
* :mod:`~facerig.sparse.dictionary` — online dictionary learning.
* :mod:`~facerig.sparse.data` — natural-image patches (scikit-image photos) and synthetic
  compressed-sensing problems.
* Estimators: :class:`SparseCoder`, :class:`LISTA`, :class:`DictionaryLearning`.
"""

from facerig.sparse.dictionary import DictionaryLearning, learn_dictionary
from facerig.sparse.estimators import LISTA, SparseCoder
from facerig.sparse.lasso import (
    LassoResult,
    alpha_max,
    lasso_duality_gap,
    lasso_objective,
    lasso_solve,
    sparse_encode,
)
from facerig.sparse.networks import PARAMETRIZATIONS, LISTANet, alista_weight, lipschitz_constant
from facerig.sparse.training import lasso_problem, train_lista

__all__ = [
    "SparseCoder",
    "LISTA",
    "DictionaryLearning",
    "LISTANet",
    "PARAMETRIZATIONS",
    "LassoResult",
    "alista_weight",
    "alpha_max",
    "lasso_duality_gap",
    "lasso_objective",
    "lasso_problem",
    "lasso_solve",
    "learn_dictionary",
    "lipschitz_constant",
    "sparse_encode",
    "train_lista",
]
