"""Scikit-learn-style estimators for sparse coding: :class:`SparseCoder` and :class:`LISTA`.

Conventions (as scikit-learn's ``SparseCoder``): ``dictionary`` is ``(n_atoms, n_features)`` with
atoms as rows, ``X`` is ``(n_samples, n_features)``, codes are ``(n_samples, n_atoms)``, and the
per-sample objective is

    ½‖x − y·D‖² + alpha·‖y‖₁

(``sklearn.decomposition.sparse_encode(..., algorithm="lasso_cd", alpha=alpha)`` solves the same
problem with the same ``alpha``; ``sklearn.linear_model.Lasso`` fitted on ``Dᵀ`` needs
``alpha / n_features``, see :mod:`facerig.sparse.lasso`).

NumPy in, NumPy out; torch tensors in, tensors out (on the tensor's device; the computation
runs in the dictionary's dtype on ``X``'s device). ``get_params`` / ``set_params`` follow
scikit-learn, so the estimators work with ``sklearn.base.clone``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from facerig.sparse._validation import (
    check_alpha,
    check_dictionary,
    check_positive_int,
    check_samples,
    to_output,
)
from facerig.sparse.lasso import lasso_objective, lasso_solve
from facerig.sparse.networks import PARAMETRIZATIONS, LISTANet
from facerig.sparse.training import SCHEDULES, _check_mode, lasso_problem, train_lista

__all__ = ["SparseCoder", "LISTA"]

MODES = ("supervised", "self_supervised", "unsupervised")


class _Estimator:
    """get_params / set_params from the constructor signature (scikit-learn's convention)."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters as a dict."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> "_Estimator":
        """Set constructor parameters (unknown names raise ``ValueError``); returns ``self``."""
        valid = self._param_names()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"invalid parameter {k!r} for {type(self).__name__}; valid: {valid}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = []
        for k, v in self.get_params().items():
            if hasattr(v, "shape"):
                v = f"<{type(v).__name__} {tuple(v.shape)}>"
            else:
                v = repr(v)
            args.append(f"{k}={v}")
        return f"{type(self).__name__}({', '.join(args)})"

    # -- shared validation --------------------------------------------------------------------
    def _dictionary(self, device: torch.device | None = None) -> torch.Tensor:
        D, _ = check_dictionary(self.dictionary, "dictionary", device=device)
        return D

    def _samples(self, X: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Validated ``(X, D, was_numpy)`` with ``X`` in ``D``'s dtype on ``X``'s device."""
        D0, _ = check_dictionary(self.dictionary, "dictionary")
        if isinstance(X, torch.Tensor):
            device = X.device
        else:
            device = D0.device
        D = D0.to(device)
        T, was_np = check_samples(X, D.shape[1], "X", dtype=D.dtype, device=device)
        return T, D, was_np


class SparseCoder(_Estimator):
    """Lasso sparse coding of signals on a fixed dictionary.

    Parameters
    ----------
    dictionary : (n_atoms, n_features) array or tensor
        Atoms as rows; no atom may have zero norm.
    alpha : float >= 0
        Weight of the L1 penalty in ``½‖x − y·D‖² + alpha·‖y‖₁``.
    algorithm : ``"fista"`` (default), ``"ista"`` or ``"lista"``
        ``"fista"`` / ``"ista"``: the energy core's proximal solvers (no fitting needed).
        ``"lista"``: a learned solver, trained by ``fit(X)`` (see :class:`LISTA`, whose options are
        passed through ``lista_params``).
    max_iter : int
        Iteration limit of ISTA / FISTA.
    tol : float >= 0
        Relative duality-gap tolerance per sample (``stop="gap"``) or relative objective change
        (``stop="objective"``).
    stop : ``"gap"`` or ``"objective"``
    polish : bool
        FISTA with certified support polishing (``stop="gap"``; see
        :func:`facerig.sparse.lasso.lasso_solve`): float32 FISTA rounds, exact solves of the
        optimality system on the detected supports, accepted only where the duality gap meets
        ``tol``; 3-6x faster than plain FISTA to ``tol = 1e-6`` on natural patches.
    n_layers : int
        Layers of the learned solver (``algorithm="lista"``).
    lista_params : dict or None
        Extra :class:`LISTA` parameters (``parametrization``, ``mode``, ``n_steps``, ...).

    Attributes (after ``fit``)
    --------------------------
    n_features_in_ : int
    lista_ : the fitted :class:`LISTA` (``algorithm="lista"`` only)
    n_iter_ : iterations of the last ``transform`` (ISTA / FISTA)

    ``score(X)`` returns minus the mean Lasso objective of the codes (higher is better), so
    estimators with smaller objectives score higher.
    """

    def __init__(self, dictionary: Any, alpha: float = 1.0, algorithm: str = "fista",
                 max_iter: int = 1000, tol: float = 1e-6, stop: str = "gap", polish: bool = True,
                 n_layers: int = 16, lista_params: dict | None = None):
        self.dictionary = dictionary
        self.alpha = alpha
        self.algorithm = algorithm
        self.max_iter = max_iter
        self.tol = tol
        self.stop = stop
        self.polish = polish
        self.n_layers = n_layers
        self.lista_params = lista_params

    def _validate(self) -> None:
        check_alpha(self.alpha, "alpha")
        if self.algorithm not in ("fista", "ista", "lista"):
            raise ValueError(f"algorithm must be 'fista', 'ista' or 'lista', got {self.algorithm!r}")
        check_positive_int(self.max_iter, "max_iter")
        if not isinstance(self.tol, (int, float)) or not self.tol >= 0:
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        if self.stop not in ("gap", "objective"):
            raise ValueError(f"stop must be 'gap' or 'objective', got {self.stop!r}")
        check_positive_int(self.n_layers, "n_layers")

    def fit(self, X: Any, y: Any = None) -> "SparseCoder":
        """Validate the parameters and ``X``; with ``algorithm="lista"`` train the learned solver on ``X``."""
        self._validate()
        T, D, _ = self._samples(X)
        self.n_features_in_ = int(D.shape[1])
        if self.algorithm == "lista":
            params = dict(self.lista_params or {})
            self.lista_ = LISTA(self.dictionary, n_layers=self.n_layers, alpha=self.alpha, **params)
            self.lista_.fit(X)
        return self

    def transform(self, X: Any) -> Any:
        """Codes ``(n_samples, n_atoms)`` of ``X`` ``(n_samples, n_features)``."""
        self._validate()
        if self.algorithm == "lista":
            if not hasattr(self, "lista_"):
                raise RuntimeError("SparseCoder(algorithm='lista') is not fitted; call fit(X) first")
            return self.lista_.transform(X)
        T, D, was_np = self._samples(X)
        res = lasso_solve(T, D, float(self.alpha), algorithm=self.algorithm, max_iter=self.max_iter,
                          tol=float(self.tol), stop=self.stop, polish=bool(self.polish))
        self.n_iter_ = res.n_iter
        self.converged_ = res.converged
        return to_output(res.codes, was_np)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        return self.fit(X).transform(X)

    def objective(self, X: Any, codes: Any) -> Any:
        """Per-sample objective ``½‖x − y·D‖² + alpha‖y‖₁`` ``(n_samples,)`` of given codes."""
        T, D, was_np = self._samples(X)
        Y, _ = check_samples(codes, D.shape[0], "codes", dtype=D.dtype, device=T.device)
        if Y.shape[0] != T.shape[0]:
            raise ValueError(f"codes has {Y.shape[0]} rows but X has {T.shape[0]}")
        return to_output(lasso_objective(T, Y, D, check_alpha(self.alpha)), was_np)

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the mean per-sample Lasso objective of ``transform(X)`` (higher is better)."""
        T, D, _ = self._samples(X)
        codes = self.transform(T)
        return -float(lasso_objective(T, codes, D, check_alpha(self.alpha)).mean())


class LISTA(_Estimator):
    """A learned Lasso solver (LISTA family) with the scikit-learn estimator API.

    Parameters
    ----------
    dictionary : (n_atoms, n_features) array or tensor
        The Lasso dictionary (atoms as rows). The network computes in its dtype.
    n_layers : int
        Unrolled iterations K.
    parametrization : ``"lista"`` (untied W_k, S_k), ``"tied"``, ``"cp"`` (LISTA-CP),
        ``"alista"`` (analytic weight, learned steps / thresholds) or ``"step"`` (learned step
        sizes only); see :mod:`facerig.sparse.networks`.
    mode : ``"supervised"`` (targets = the FISTA solution of each training sample),
        ``"self_supervised"`` (codes drawn from a Bernoulli-Gaussian prior, ``x = y·D + noise``;
        ``X`` then only fixes the feature count), ``"unsupervised"`` (the Lasso objective is the
        loss) or a dict ``{mode: weight}``.
    alpha : float >= 0
        Lasso weight (targets, unsupervised loss, threshold units).
    n_steps, batch_size, lr, schedule, deep_supervision :
        Training (see :func:`facerig.sparse.training.train_lista`; ``schedule="progressive"``
        trains layer by layer, ``n_steps`` per stage).
    support_selection : None or (p_step, p_max) percentages (Chen et al. 2018's "SS": in layer k
        the ``min(k·p_step, p_max)`` % largest entries bypass the threshold; any parametrization).
    code_loss : ``"mse"`` (``‖ŷ − y‖²``) or ``"relative"`` (``‖ŷ − y‖² / ‖y‖²`` per sample).
    lr_schedule : ``"constant"`` or ``"cosine"`` (each training stage decays its rate to 0).
    warmup : int >= 0
        Linear learning-rate warm-up steps at the start of each training stage (validated by the
        core's ``train``). Deep untied networks on large dictionaries can blow up in their first
        steps without it; ``tools/bench_sparse.py`` uses 500 at 400 atoms.
    prior_p, noise_std, snr_db : self-supervised prior and noise.
    seed : int

    Attributes (after ``fit``): ``net_`` (the trained :class:`~facerig.sparse.networks.LISTANet`),
    ``train_result_``, ``n_features_in_``.

    ``transform(X, alpha=None)`` runs the network (``alpha`` rescales the thresholds, exact for
    ``parametrization="step"``); ``score(X)`` is minus the mean Lasso objective of its codes.
    """

    def __init__(self, dictionary: Any, n_layers: int = 16, parametrization: str = "lista",
                 mode: str | dict = "supervised", alpha: float = 0.1, n_steps: int = 1000,
                 batch_size: int = 128, lr: float = 1e-3, schedule: str = "joint",
                 deep_supervision: bool = False, support_selection: tuple | None = None,
                 prior_p: float = 0.1, noise_std: float = 0.0, snr_db: float | None = None,
                 seed: int = 0, code_loss: str = "mse", lr_schedule: str = "constant", warmup: int = 0):
        self.dictionary = dictionary
        self.n_layers = n_layers
        self.parametrization = parametrization
        self.mode = mode
        self.alpha = alpha
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.lr = lr
        self.schedule = schedule
        self.deep_supervision = deep_supervision
        self.support_selection = support_selection
        self.prior_p = prior_p
        self.noise_std = noise_std
        self.snr_db = snr_db
        self.seed = seed
        self.code_loss = code_loss
        self.lr_schedule = lr_schedule
        self.warmup = warmup

    def _validate(self) -> None:
        if self.code_loss not in ("mse", "relative"):
            raise ValueError(f"code_loss must be 'mse' or 'relative', got {self.code_loss!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        check_alpha(self.alpha, "alpha")
        check_positive_int(self.n_layers, "n_layers")
        check_positive_int(self.n_steps, "n_steps")
        check_positive_int(self.batch_size, "batch_size")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}")
        _check_mode(self.mode)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a number > 0, got {self.lr!r}")
        if not 0 < float(self.prior_p) <= 1:
            raise ValueError(f"prior_p must be in (0, 1], got {self.prior_p!r}")

    def fit(self, X: Any, y: Any = None) -> "LISTA":
        """Train the network on ``X`` ``(n_samples, n_features)`` in the chosen mode."""
        self._validate()
        T, D, _ = self._samples(X)
        torch.manual_seed(int(self.seed))
        net = LISTANet(D, self.n_layers, float(self.alpha), self.parametrization,
                       support_selection=self.support_selection)
        modes = [self.mode] if isinstance(self.mode, str) else list(self.mode)
        problem = lasso_problem(D, float(self.alpha), prior_p=float(self.prior_p),
                                noise_std=float(self.noise_std), snr_db=self.snr_db,
                                data=T if "supervised" in modes else None, code_loss=self.code_loss)
        self.train_result_ = train_lista(net, problem, T, mode=self.mode, schedule=self.schedule,
                                         steps=int(self.n_steps), batch_size=int(self.batch_size),
                                         lr=float(self.lr), seed=int(self.seed),
                                         deep_supervision=bool(self.deep_supervision),
                                         lr_schedule=self.lr_schedule, warmup=self.warmup,
                                         final_steps=0 if self.lr_schedule == "cosine" else None)
        self.net_ = net.eval()
        self.n_features_in_ = int(D.shape[1])
        return self

    def transform(self, X: Any, alpha: float | None = None, n_layers: int | None = None) -> Any:
        """Codes ``(n_samples, n_atoms)``; ``alpha`` / ``n_layers`` override the Lasso weight of
        the thresholds and the depth used (a prefix of the network)."""
        if not hasattr(self, "net_"):
            raise RuntimeError("LISTA is not fitted; call fit(X) first")
        T, D, was_np = self._samples(X)
        if alpha is not None:
            alpha = check_alpha(alpha, "alpha")
        net = self.net_.to(T.device)
        with torch.no_grad():
            codes = net(T.to(net.dictionary.dtype), n_layers=n_layers, alpha=alpha)
        return to_output(codes, was_np)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        return self.fit(X).transform(X)

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the mean per-sample Lasso objective of ``transform(X)`` (higher is better)."""
        T, D, _ = self._samples(X)
        codes = self.transform(T)
        return -float(lasso_objective(T, codes, D, check_alpha(self.alpha)).mean())
