"""Learned sparse-coding solvers: the LISTA family as ``nn.Module`` s.

All networks solve (approximately) the batched Lasso

    y*(x) = argmin_y  ½‖x − y·D‖² + α‖y‖₁

with the dictionary ``D`` of shape ``(n_atoms, n_features)``, signals ``x`` as rows of
``(B, n_features)`` and codes as rows of ``(B, n_atoms)`` (the literature's column convention
``x = A y`` has ``A = D.T``). Each network unrolls ``n_layers`` iterations of ISTA,
``y ← η_θ(y − ρ ∇f(y))`` with ``∇f(y) = (y·D − x)·Dᵀ`` and the soft threshold ``η_θ``, and makes
some of the iteration's quantities learnable:

===============  =====================================================  ==============================
parametrization  layer k                                                learned
===============  =====================================================  ==============================
``"lista"``      ``y ← η(x·W_k + y·S_k, α t_k)``                          ``W_k, S_k, t_k`` (untied)
``"tied"``       ``y ← η(x·W + y·S, α t_k)``                              ``W, S`` shared, ``t_k``
``"cp"``         ``y ← η(y + (x − y·D)·W_k, α t_k)``                      ``W_k, t_k`` (LISTA-CP)
``"alista"``     ``y ← η(y + γ_k (x − y·D)·W̃, α t_k)``                    ``γ_k, t_k``; ``W̃`` analytic
``"step"``       ``y ← η(y + ρ_k (x − y·D)·Dᵀ, α ρ_k)``                   ``ρ_k`` (Ablin et al. 2019)
===============  =====================================================  ==============================

(Gregor & LeCun 2010; Chen et al. 2018 "LISTA-CP"; Liu et al. 2019 "ALISTA"; Ablin et al. 2019
"Learning step sizes for unfolded sparse coding".) Every network except ALISTA is initialised to
be exactly ISTA with step ``1/L`` (``L = ‖D‖₂²``), so an untrained K-layer network equals K ISTA
iterations; ALISTA starts from ``γ_k = 1/‖D·W̃‖₂`` and ``θ_k = α·γ_k``.

Thresholds are stored in units of ``α`` (``θ_k = α·t_k``), so ``forward(x, alpha=...)`` can take a
different ``α`` at inference: this is exact for ``"step"`` (every layer is a true ISTA step of
the Lasso with that ``α``) and a threshold rescaling for the other parametrisations.

Optional *support selection* (``support_selection=(p_step, p_max)``, Chen et al. 2018): in layer
k the ``min(k·p_step, p_max)`` percent largest-magnitude entries of each code bypass the
threshold, which is what lets LISTA-CP / ALISTA converge linearly to very small errors.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from facerig.energy.prox import soft_threshold

__all__ = [
    "PARAMETRIZATIONS",
    "LISTANet",
    "alista_weight",
    "lipschitz_constant",
]

PARAMETRIZATIONS = ("lista", "tied", "cp", "alista", "step")


def lipschitz_constant(dictionary: torch.Tensor) -> float:
    """``L = ‖D‖₂² = λ_max(D·Dᵀ)``: the Lipschitz constant of the Lasso gradient ``(y·D − x)·Dᵀ``.

    ``dictionary`` is ``(n_atoms, n_features)``; computed in float64 from the smaller Gram matrix.
    """
    D = dictionary.detach().to(torch.float64)
    G = D @ D.T if D.shape[0] <= D.shape[1] else D.T @ D
    return float(torch.linalg.eigvalsh(G)[-1])


def alista_weight(dictionary: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    """The analytic weight of ALISTA (Liu et al. 2019), in closed form.

    In the column convention (``A = Dᵀ``, ``(n_features, n_atoms)``) ALISTA uses

        W̃ = argmin_W ‖Wᵀ A‖_F²   subject to   diag(Wᵀ A) = 1,

    whose columns separate: ``w_i = argmin wᵀ M w s.t. a_iᵀ w = 1`` with ``M = A Aᵀ``, solved by
    ``w_i = M⁻¹ a_i / (a_iᵀ M⁻¹ a_i)`` (a pseudo-inverse when ``M`` is singular; ``ridge`` adds
    ``ridge·trace(M)/m·I`` to ``M`` for ill-conditioned dictionaries). The paper computes the same
    minimiser by projected gradient descent; this solve is exact.

    Parameters
    ----------
    dictionary : (n_atoms, n_features) tensor
    ridge : float >= 0

    Returns
    -------
    (n_features, n_atoms) tensor ``W̃`` (dtype and device of ``dictionary``), used as
    ``y ← η(y + γ (x − y·D)·W̃, θ)``; it satisfies ``(D·W̃)_ii = 1``.
    """
    D = dictionary.detach().to(torch.float64)
    A = D.T  # (m, n)
    M = A @ A.T
    if ridge > 0:
        M = M + ridge * torch.trace(M) / M.shape[0] * torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    MinvA = torch.linalg.pinv(M, hermitian=True) @ A  # (m, n)
    denom = (A * MinvA).sum(dim=0)  # a_i^T M^-1 a_i
    if bool((denom.abs() < 1e-12).any()):
        raise ValueError("dictionary: an atom lies in the null space of the pseudo-inverse; "
                         "use ridge > 0")
    W = MinvA / denom
    return W.to(dtype=dictionary.dtype, device=dictionary.device)


def _support_selection_threshold(z: torch.Tensor, theta: torch.Tensor, percent: float) -> torch.Tensor:
    """Soft threshold where each row's ``percent`` % largest |entries| pass unthresholded."""
    out = soft_threshold(z, theta)
    n = z.shape[-1]
    k = int(math.floor(percent / 100.0 * n))
    if k <= 0:
        return out
    kth = torch.topk(z.detach().abs(), k, dim=-1).values[..., -1:]
    keep = z.detach().abs() >= kth
    return torch.where(keep, z, out)


class LISTANet(nn.Module):
    """An unrolled, learnable ISTA network for the Lasso (see the module docstring for the layers).

    Parameters
    ----------
    dictionary : (n_atoms, n_features) tensor
        The Lasso dictionary ``D`` (kept as a buffer; atoms as rows).
    n_layers : int
        Number of unrolled iterations K.
    alpha : float
        The Lasso weight ``α`` the thresholds are expressed in (``θ_k = α·t_k``).
    parametrization : one of ``"lista"``, ``"tied"``, ``"cp"``, ``"alista"``, ``"step"``.
    support_selection : None or (p_step, p_max) percentages, e.g. ``(1.2, 13.0)``.

    ``forward(x)`` maps ``(B, n_features)`` signals to ``(B, n_atoms)`` codes, following the
    dtype and device of the network's parameters (move it with ``.to(...)``).
    """

    def __init__(self, dictionary: torch.Tensor, n_layers: int, alpha: float,
                 parametrization: str = "lista",
                 support_selection: tuple[float, float] | None = None):
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
        if not isinstance(dictionary, torch.Tensor) or dictionary.ndim != 2:
            raise ValueError("dictionary must be a 2-D tensor (n_atoms, n_features)")
        if int(n_layers) < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        if support_selection is not None:
            p_step, p_max = (float(v) for v in support_selection)
            if p_step < 0 or not 0 <= p_max <= 100:
                raise ValueError("support_selection must be (p_step >= 0, 0 <= p_max <= 100) percentages")
            support_selection = (p_step, p_max)
        self.parametrization = parametrization
        self.n_layers = int(n_layers)
        self.alpha = float(alpha)
        self.support_selection = support_selection
        D = dictionary.detach().clone()
        self.register_buffer("dictionary", D)
        L = lipschitz_constant(D)
        self.lipschitz = L
        n_atoms, n_features = D.shape
        K = self.n_layers
        Dt = D.T.contiguous()
        eye = torch.eye(n_atoms, dtype=D.dtype, device=D.device)
        G = D @ D.T
        if parametrization == "lista":
            self.W = nn.Parameter(Dt.div(L).unsqueeze(0).repeat(K, 1, 1))          # (K, m, n)
            self.S = nn.Parameter((eye - G / L).unsqueeze(0).repeat(K, 1, 1))      # (K, n, n)
        elif parametrization == "tied":
            self.W = nn.Parameter(Dt / L)
            self.S = nn.Parameter(eye - G / L)
        elif parametrization == "cp":
            self.W = nn.Parameter(Dt.div(L).unsqueeze(0).repeat(K, 1, 1))
        elif parametrization == "alista":
            W = alista_weight(D)
            self.register_buffer("W", W)
            gamma0 = 1.0 / _alista_step_scale(D, W)
            self.gamma = nn.Parameter(torch.full((K,), gamma0, dtype=D.dtype, device=D.device))
        if parametrization == "step":
            self.rho = nn.Parameter(torch.full((K,), 1.0 / L, dtype=D.dtype, device=D.device))
        elif parametrization == "alista":
            self.t = nn.Parameter(self.gamma.detach().clone())
        else:
            self.t = nn.Parameter(torch.full((K,), 1.0 / L, dtype=D.dtype, device=D.device))

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def n_atoms(self) -> int:
        return self.dictionary.shape[0]

    @property
    def n_features(self) -> int:
        return self.dictionary.shape[1]

    def thresholds(self, alpha: float | None = None) -> torch.Tensor:
        """Per-layer thresholds ``θ_k`` ``(K,)`` for the Lasso weight ``alpha`` (default: training α)."""
        a = self.alpha if alpha is None else float(alpha)
        base = self.rho if self.parametrization == "step" else self.t
        return a * base.clamp_min(0)

    def _threshold(self, z: torch.Tensor, theta: torch.Tensor, k: int) -> torch.Tensor:
        if self.support_selection is None:
            return soft_threshold(z, theta)
        p_step, p_max = self.support_selection
        return _support_selection_threshold(z, theta, min((k + 1) * p_step, p_max))

    def layer(self, k: int, x: torch.Tensor, y: torch.Tensor | None, theta: torch.Tensor) -> torch.Tensor:
        """Apply layer ``k`` (0-based) to the code ``y`` (``None`` = the zero code) given signals ``x``."""
        p = self.parametrization
        D = self.dictionary
        if p in ("lista", "tied"):
            W = self.W[k] if p == "lista" else self.W
            z = x @ W
            if y is not None:
                S = self.S[k] if p == "lista" else self.S
                z = z + y @ S
        else:
            r = x if y is None else x - y @ D  # residual (B, m)
            if p == "cp":
                z = r @ self.W[k]
            elif p == "alista":
                z = self.gamma[k] * (r @ self.W)
            else:  # step
                z = self.rho[k].clamp_min(0) * (r @ D.T)
            if y is not None:
                z = z + y
        return self._threshold(z, theta[k], k)

    def forward(self, x: torch.Tensor, n_layers: int | None = None, alpha: float | None = None,
                return_all: bool = False):
        """Codes ``(B, n_atoms)`` of signals ``x`` ``(B, n_features)``.

        ``n_layers`` runs only the first layers (default all); ``alpha`` overrides the Lasso
        weight the thresholds are scaled by; ``return_all`` returns the list of every layer's
        output instead (length ``n_layers``).
        """
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x must be (B, {self.n_features}), got shape {tuple(x.shape)}")
        K = self.n_layers if n_layers is None else int(n_layers)
        if not 0 <= K <= self.n_layers:
            raise ValueError(f"n_layers must be in [0, {self.n_layers}], got {n_layers}")
        theta = self.thresholds(alpha)
        y = None
        outs = []
        for k in range(K):
            y = self.layer(k, x, y, theta)
            outs.append(y)
        if y is None:
            y = x.new_zeros(x.shape[0], self.n_atoms)
        return outs if return_all else y

    def extra_repr(self) -> str:
        return (f"parametrization={self.parametrization!r}, n_layers={self.n_layers}, "
                f"n_atoms={self.n_atoms}, n_features={self.n_features}, alpha={self.alpha:g}, "
                f"support_selection={self.support_selection}")


def _alista_step_scale(dictionary: torch.Tensor, W: torch.Tensor) -> float:
    """``‖D·W̃‖₂``, the spectral norm of the ALISTA gradient map; ALISTA starts from step ``1/‖D·W̃‖₂``."""
    M = (dictionary.detach().to(torch.float64) @ W.detach().to(torch.float64))
    return float(torch.linalg.matrix_norm(M, ord=2))
