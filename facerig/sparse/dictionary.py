"""Online dictionary learning (Mairal, Bach, Ponce & Sapiro 2009) on the batched Lasso solver.

Learns ``D`` ``(n_atoms, n_features)`` with atoms in the unit ball minimising

    Σ_i ½‖x_i − y_i·D‖² + α‖y_i‖₁

(scikit-learn's ``MiniBatchDictionaryLearning`` objective with the same ``alpha``). Each step codes
a mini-batch with FISTA (:func:`facerig.sparse.lasso.lasso_solve`), accumulates the sufficient
statistics ``A ← β A + Yᵀ Y`` and ``B ← β B + Yᵀ X`` and updates the atoms by one pass of block
coordinate descent with projection onto the unit ball; atoms that stop being used are
re-initialised from random samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from facerig.sparse._validation import (
    check_alpha,
    check_dictionary,
    check_positive_int,
    check_samples,
    to_output,
)
from facerig.sparse.lasso import lasso_objective, lasso_solve, sparse_encode

__all__ = ["DictionaryLearningResult", "learn_dictionary", "DictionaryLearning"]


@dataclass
class DictionaryLearningResult:
    """Output of :func:`learn_dictionary`: the dictionary ``(n_atoms, n_features)`` tensor, the mean
    Lasso objective of each mini-batch before its update (``history``), steps run and seconds."""

    dictionary: torch.Tensor
    history: list = field(default_factory=list)
    n_steps: int = 0
    seconds: float = 0.0
    n_resampled: int = 0


def _update_atoms(D: torch.Tensor, A: torch.Tensor, B: torch.Tensor, eps: float) -> torch.Tensor:
    """One pass of block coordinate descent on the atoms (Mairal et al. 2009, Algorithm 2).

    Decreases the surrogate ``½ tr(Dᵀ A D) − tr(Dᵀ B)`` atom by atom, keeping every atom in the unit
    ball; ``D`` ``(n_atoms, n_features)`` is updated in place and returned.
    """
    n_atoms = D.shape[0]
    for j in range(n_atoms):
        ajj = A[j, j]
        if ajj <= eps:
            continue
        # d_j <- d_j + (b_j - a_j D) / a_jj ; project onto ‖d_j‖ <= 1
        D[j] += (B[j] - A[j] @ D) / ajj
        n = D[j].norm()
        if n > 1:
            D[j] /= n
    return D


def learn_dictionary(X: Any, n_atoms: int, alpha: float, n_steps: int = 300, batch_size: int = 256,
                     seed: int = 0, init: Any = None, tol: float = 1e-3, max_iter: int = 200,
                     verbose: bool = False) -> DictionaryLearningResult:
    """Learn a dictionary by online (mini-batch) dictionary learning.

    Parameters
    ----------
    X : (n_samples, n_features) array or tensor
        Training signals (e.g. :func:`facerig.sparse.data.natural_patches`). Computation follows
        its dtype / device (NumPy input runs in float64 on the CPU).
    n_atoms : int
        Number of atoms.
    alpha : float >= 0
        Lasso weight of the coding step (the objective above).
    n_steps : int
        Mini-batch steps.
    batch_size : int
    seed : int
        Seeds the initial atoms (random samples) and the batch order.
    init : (n_atoms, n_features) array/tensor or None
        Initial dictionary (rows are normalised).
    tol, max_iter :
        FISTA stopping rule of each coding step (relative duality gap, iteration limit).

    Returns
    -------
    :class:`DictionaryLearningResult` whose ``dictionary`` has unit-norm rows and the type of ``X``
    (NumPy or tensor).
    """
    T, was_np = check_samples(X)
    alpha = check_alpha(alpha)
    n_atoms = check_positive_int(n_atoms, "n_atoms")
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    n_samples, n_features = T.shape
    g = torch.Generator().manual_seed(int(seed))
    if init is None:
        idx = torch.randperm(n_samples, generator=g)[:n_atoms]
        if idx.numel() < n_atoms:
            idx = torch.randint(0, n_samples, (n_atoms,), generator=g)
        D = T[idx.to(T.device)].clone()
        D += 1e-3 * torch.randn(D.shape, generator=g, dtype=D.dtype).to(D.device)
    else:
        D, _ = check_dictionary(init, "init", dtype=T.dtype, device=T.device)
        if D.shape != (n_atoms, n_features):
            raise ValueError(f"init must be ({n_atoms}, {n_features}), got {tuple(D.shape)}")
        D = D.clone()
    D /= D.norm(dim=1, keepdim=True).clamp_min(1e-12)
    A = torch.zeros(n_atoms, n_atoms, dtype=T.dtype, device=T.device)
    B = torch.zeros(n_atoms, n_features, dtype=T.dtype, device=T.device)
    history: list[float] = []
    n_resampled = 0
    t0 = time.perf_counter()
    order = torch.randperm(n_samples, generator=g).to(T.device)
    pos = 0
    for step in range(1, n_steps + 1):
        if pos + batch_size > n_samples:
            order = torch.randperm(n_samples, generator=g).to(T.device)
            pos = 0
        Xb = T[order[pos:pos + batch_size]]
        pos += batch_size
        res = lasso_solve(Xb, D, alpha, algorithm="fista", max_iter=max_iter, tol=tol)
        Y = res.codes
        history.append(float(res.objective.mean()))
        # forgetting factor of scikit-learn's MiniBatchDictionaryLearning
        bs = Xb.shape[0]
        theta = bs * step if step < bs - 1 else bs ** 2 + step - bs
        beta = (theta + 1 - bs) / (theta + 1)
        A.mul_(beta).add_(Y.T @ Y)
        B.mul_(beta).add_(Y.T @ Xb)
        _update_atoms(D, A, B, eps=1e-12)
        # re-initialise atoms that are (almost) never used
        if step % 10 == 0:
            usage = torch.diagonal(A)
            dead = usage < 1e-6 * usage.max().clamp_min(1e-30)
            n_dead = int(dead.sum())
            if n_dead:
                ridx = torch.randint(0, n_samples, (n_dead,), generator=g).to(T.device)
                D[dead] = T[ridx] / T[ridx].norm(dim=1, keepdim=True).clamp_min(1e-12)
                A[dead, :] = 0
                A[:, dead] = 0
                B[dead] = 0
                n_resampled += n_dead
        if verbose and (step % 50 == 0 or step == n_steps):
            print(f"  dictionary step {step}/{n_steps}: batch objective {history[-1]:.4f}")
    # unit-norm atoms (rows never collapse to 0: dead atoms are resampled)
    D /= D.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return DictionaryLearningResult(dictionary=to_output(D, was_np), history=history,
                                    n_steps=n_steps, seconds=time.perf_counter() - t0,
                                    n_resampled=n_resampled)


class DictionaryLearning:
    """Scikit-learn-style online dictionary learning (see :func:`learn_dictionary`).

    ``fit(X)`` sets ``components_`` ``(n_atoms, n_features)`` (unit-norm rows, NumPy for NumPy
    input, tensor for tensor input) and ``history_``; ``transform(X)`` returns the Lasso codes
    ``(n_samples, n_atoms)`` by FISTA; ``score(X)`` is minus the mean Lasso objective.
    """

    def __init__(self, n_atoms: int = 100, alpha: float = 0.1, n_steps: int = 300,
                 batch_size: int = 256, seed: int = 0, tol: float = 1e-3, max_iter: int = 200):
        self.n_atoms = n_atoms
        self.alpha = alpha
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.seed = seed
        self.tol = tol
        self.max_iter = max_iter

    _param_names = ("n_atoms", "alpha", "n_steps", "batch_size", "seed", "tol", "max_iter")

    def get_params(self, deep: bool = True) -> dict:
        """The constructor parameters as a dict (scikit-learn convention)."""
        return {k: getattr(self, k) for k in self._param_names}

    def set_params(self, **params) -> "DictionaryLearning":
        """Set constructor parameters; unknown names raise ``ValueError``."""
        for k, v in params.items():
            if k not in self._param_names:
                raise ValueError(f"invalid parameter {k!r} for DictionaryLearning; "
                                 f"valid: {self._param_names}")
            setattr(self, k, v)
        return self

    def fit(self, X: Any, y: Any = None) -> "DictionaryLearning":
        res = learn_dictionary(X, self.n_atoms, self.alpha, n_steps=self.n_steps,
                               batch_size=self.batch_size, seed=self.seed, tol=self.tol,
                               max_iter=self.max_iter)
        self.components_ = res.dictionary
        self.history_ = res.history
        self.n_features_in_ = int(res.dictionary.shape[1])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise RuntimeError("DictionaryLearning is not fitted; call fit(X) first")

    def transform(self, X: Any) -> Any:
        """Lasso codes ``(n_samples, n_atoms)`` of ``X`` on the learned dictionary."""
        self._check_fitted()
        return sparse_encode(X, self.components_, self.alpha, algorithm="fista",
                             max_iter=max(self.max_iter, 1000), tol=1e-6)

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the mean per-sample Lasso objective of ``X`` (higher is better)."""
        self._check_fitted()
        D, _ = check_dictionary(self.components_)
        T, _ = check_samples(X, D.shape[1], dtype=D.dtype, device=D.device)
        codes = self.transform(T)
        return -float(lasso_objective(T, codes, D, self.alpha).mean())
