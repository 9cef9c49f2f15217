"""Training learned Lasso solvers with the energy core's three modes (:mod:`facerig.energy.training`).

:func:`lasso_problem` writes the Lasso as a :class:`facerig.energy.training.Problem`:

* ``energy(x, y)``   = ``½‖x − y·D‖² + α‖y‖₁`` per sample (the unsupervised loss);
* ``solve(x)``       = the FISTA solution (supervised targets; precomputed once for ``data``);
* ``sample_prior``   = Bernoulli-Gaussian codes (each atom active with probability ``p``);
* ``synthesize(y)``  = ``y·D`` plus white noise (self-supervised pairs ``(x, y)``);
* ``code_loss``      = the mean over samples of ``‖ŷ − y‖²`` (``code_loss="mse"``) or of
  ``‖ŷ − y‖² / ‖y‖²`` (``code_loss="relative"``: every sample counts equally, whatever its
  energy; the benchmarks' metric is the ratio of the means of these two norms).

:func:`train_lista` trains a :class:`~facerig.sparse.networks.LISTANet` with
:func:`facerig.energy.training.train`, either all layers at once (``schedule="joint"``) or layer
by layer (``schedule="progressive"``: stage k trains the first k layers, as in the LISTA-CP /
ALISTA papers), optionally with the loss summed over every layer's output
(``deep_supervision=True``) so that each prefix of the network is itself a good solver.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from facerig.energy.training import Problem, train
from facerig.sparse.data import bernoulli_gaussian_codes
from facerig.sparse.lasso import lasso_objective, lasso_solve
from facerig.sparse.networks import LISTANet

__all__ = ["lasso_problem", "train_lista", "LISTATrainResult", "MODES", "SCHEDULES"]

MODES = ("supervised", "self_supervised", "unsupervised")
SCHEDULES = ("joint", "progressive")


class _TargetTable:
    """Supervised targets for a fixed data tensor, solved once in one batched FISTA call.

    The core's trainer asks ``solve(x_rows)`` for rows of ``data``; rows are found by their exact
    bytes (they are copies of ``data`` rows), anything else is solved on the fly.
    """

    def __init__(self, data: torch.Tensor, solve: Callable[[torch.Tensor], torch.Tensor]):
        self.solve = solve
        self.targets = solve(data)
        cpu = data.detach().cpu().contiguous()
        self.index = {cpu[i].numpy().tobytes(): i for i in range(cpu.shape[0])}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cpu = x.detach().cpu().contiguous()
        idx = [self.index.get(cpu[i].numpy().tobytes(), -1) for i in range(cpu.shape[0])]
        if min(idx) < 0:
            return self.solve(x)
        return self.targets[torch.tensor(idx, device=self.targets.device)]


def _per_layer_mean(v: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``(B, K)`` per-layer values -> ``(B,)`` weighted mean over layers."""
    if weights is None:
        return v.mean(dim=1)
    return (v * weights).sum(dim=1) / weights.sum()


def lasso_problem(dictionary: torch.Tensor, alpha: float, *, prior_p: float = 0.1,
                  prior_scale: float = 1.0, noise_std: float = 0.0, snr_db: float | None = None,
                  solver_tol: float = 1e-5, solver_max_iter: int = 3000,
                  data: torch.Tensor | None = None,
                  layer_weights: torch.Tensor | None = None,
                  code_loss: str = "mse") -> Problem:
    """The Lasso as a :class:`facerig.energy.training.Problem`.

    Parameters
    ----------
    dictionary : (n_atoms, n_features) tensor
    alpha : float
        Lasso weight of the energy and of the supervised targets.
    prior_p, prior_scale :
        Self-supervised codes: each entry ``N(0, prior_scale²)`` with probability ``prior_p``.
    noise_std, snr_db :
        Noise added by ``synthesize``: white Gaussian of standard deviation ``noise_std``, or, if
        ``snr_db`` is given, of variance ``mean(x²)/10^(snr_db/10)`` per batch.
    solver_tol, solver_max_iter :
        FISTA stopping rule for the supervised targets (relative duality gap).
    data : (N, n_features) tensor or None
        Observations whose targets are solved once, in one batched call (the core's trainer
        otherwise solves them batch by batch).
    layer_weights : (K,) tensor or None
        With a network returning every layer's output ``(B, K, n_atoms)`` (deep supervision),
        the losses are averaged over layers with these weights (uniform when None).
    code_loss : ``"mse"`` or ``"relative"``
        Supervised / self-supervised loss per sample: ``‖ŷ − y‖²``, or ``‖ŷ − y‖² / ‖y‖²``
        (the denominator floored at 1e-3 times its batch mean, so all-zero targets stay finite).

    The ``energy`` and ``code_loss`` accept codes ``(B, n_atoms)`` or ``(B, K, n_atoms)``.
    """
    D = dictionary.detach()
    alpha = float(alpha)
    if code_loss not in ("mse", "relative"):
        raise ValueError(f"code_loss must be 'mse' or 'relative', got {code_loss!r}")
    relative = code_loss == "relative"

    def energy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.ndim == 3:
            B, K, n = y.shape
            e = lasso_objective(x.repeat_interleave(K, 0), y.reshape(B * K, n), D, alpha).reshape(B, K)
            return _per_layer_mean(e, layer_weights)
        return lasso_objective(x, y, D, alpha)

    def loss_fn(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if relative:
            norm = y_true.pow(2).sum(dim=1)
            norm = norm.clamp_min(1e-3 * float(norm.mean()) + 1e-12)
        if y_pred.ndim == 3:
            err = (y_pred - y_true[:, None, :]).pow(2).sum(dim=2)  # (B, K)
            if relative:
                err = err / norm[:, None]
            return _per_layer_mean(err, layer_weights).mean()
        err = (y_pred - y_true).pow(2).sum(dim=1)
        return (err / norm).mean() if relative else err.mean()

    def solve(x: torch.Tensor) -> torch.Tensor:
        return lasso_solve(x, D.to(x.device), alpha, tol=solver_tol, max_iter=solver_max_iter,
                           polish=True).codes

    def sample_prior(n: int, generator: torch.Generator) -> torch.Tensor:
        return prior_scale * bernoulli_gaussian_codes(n, D.shape[0], prior_p, generator, dtype=D.dtype,
                                                      device=D.device)

    def synthesize(y: torch.Tensor) -> torch.Tensor:
        x = y @ D
        if snr_db is not None and math.isfinite(snr_db):
            sigma = (x.pow(2).mean() / 10.0 ** (snr_db / 10.0)).sqrt()
            x = x + sigma * torch.randn_like(x)
        elif noise_std > 0:
            x = x + noise_std * torch.randn_like(x)
        return x

    table = _TargetTable(data, solve) if data is not None else None
    return Problem(energy=energy, synthesize=synthesize, sample_prior=sample_prior,
                   solve=table if table is not None else solve, code_loss=loss_fn)


class _Prefix(nn.Module):
    """The first ``k`` layers of a :class:`LISTANet` (all layer outputs stacked with ``all_layers``)."""

    def __init__(self, net: LISTANet, k: int, all_layers: bool):
        super().__init__()
        self.net = net
        self.k = k
        self.all_layers = all_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.all_layers:
            return torch.stack(self.net(x, n_layers=self.k, return_all=True), dim=1)
        return self.net(x, n_layers=self.k)


def _check_mode(mode) -> dict:
    if isinstance(mode, str):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} or a dict mode -> weight, got {mode!r}")
        return {mode: 1.0}
    if isinstance(mode, dict) and mode and all(m in MODES for m in mode):
        return {m: float(w) for m, w in mode.items()}
    raise ValueError(f"mode must be one of {MODES} or a dict mode -> weight, got {mode!r}")


@dataclass
class LISTATrainResult:
    """Losses of every :func:`facerig.energy.training.train` call (``stages``: list of
    ``(n_layers, lr, history dict)``), the loss of the untrained and trained network on the
    training problem (``initial_loss`` / ``final_loss``, by mode) and the wall time."""

    stages: list = field(default_factory=list)
    initial_loss: dict = field(default_factory=dict)
    final_loss: dict = field(default_factory=dict)
    seconds: float = 0.0


@torch.no_grad()
def _eval_losses(net: nn.Module, problem: Problem, data: torch.Tensor | None, modes: dict,
                 n_eval: int, seed: int) -> dict:
    out = {}
    g = torch.Generator().manual_seed(seed + 12345)
    if data is not None:
        xb = data[:n_eval]
        if "unsupervised" in modes:
            out["unsupervised"] = float(problem.energy(xb, net(xb)).mean())
        if "supervised" in modes:
            out["supervised"] = float(problem.loss_between(net(xb), problem.solve(xb)))
    if "self_supervised" in modes:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 54321)
            y = problem.sample_prior(n_eval, g)
            x = problem.synthesize(y)
        out["self_supervised"] = float(problem.loss_between(net(x), y))
    return out


def train_lista(net: LISTANet, problem: Problem, data: torch.Tensor | None = None, *,
                mode: str | dict = "supervised", schedule: str = "joint", steps: int = 1000,
                batch_size: int = 128, lr: float = 1e-3, seed: int = 0, deep_supervision: bool = False,
                final_steps: int | None = None, n_eval: int = 512, lr_schedule: str = "constant",
                warmup: int = 0, verbose: bool = False) -> LISTATrainResult:
    """Train a :class:`LISTANet` on ``problem`` with :func:`facerig.energy.training.train`.

    Parameters
    ----------
    net : LISTANet
        Trained in place (its dtype / device is used).
    problem : Problem
        Usually :func:`lasso_problem`.
    data : (N, n_features) tensor or None
        Observations (needed by the supervised and unsupervised modes).
    mode : ``"supervised"``, ``"self_supervised"``, ``"unsupervised"`` or ``{mode: weight}``.
    schedule : ``"joint"`` or ``"progressive"``
        ``"joint"``: ``steps`` Adam steps on all layers at ``lr``, then ``final_steps`` at
        ``lr/10``. ``"progressive"``: for k = 1..K, ``steps`` steps on the first k layers at
        ``lr`` then ``steps // 2`` at ``lr/5``; finally ``final_steps`` on all layers at ``lr/10``.
    deep_supervision : bool
        Average the loss over the outputs of every layer (each prefix becomes a solver).
    final_steps : int or None
        Default ``steps // 2``.
    lr_schedule : ``"constant"`` or ``"cosine"``
        Learning-rate schedule of every stage (the core's ``train(lr_schedule=...)``); with
        ``"cosine"`` each stage decays its rate to 0, so ``final_steps=0`` is the natural choice.
    warmup : int >= 0
        Linear learning-rate warm-up steps at the start of every stage (the core's
        ``train(warmup=...)``, which validates it). Deep untied LISTAs on large dictionaries need it: at 400 atoms a
        7-layer network trained at ``lr=3e-3`` from the first step blew up within 50 steps (loss
        0.66 -> 400) and settled at a code error of 0.32, worse than one layer.
    n_eval : int
        Samples used to report ``initial_loss`` / ``final_loss``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    modes = _check_mode(mode)
    if data is not None:
        p0 = next(net.parameters())
        data = data.to(dtype=p0.dtype, device=p0.device)
    final_steps = steps // 2 if final_steps is None else int(final_steps)
    K = net.n_layers
    result = LISTATrainResult()
    full = _Prefix(net, K, False)
    result.initial_loss = _eval_losses(full, problem, data, modes, n_eval, seed)
    t0 = time.perf_counter()

    def run(k: int, n: int, rate: float, stage_seed: int) -> None:
        if n <= 0:
            return
        model = _Prefix(net, k, deep_supervision)
        res = train(model, problem, data, mode=mode, steps=n, batch_size=batch_size, lr=rate,
                    seed=stage_seed, log_every=max(1, n // 5), progress=False, lr_schedule=lr_schedule,
                    warmup=warmup)
        result.stages.append((k, rate, res.history))
        if verbose:
            print(f"    layers {k:2d} lr {rate:.1e}: loss {res.history['total'][0]:.4g} -> "
                  f"{res.history['total'][-1]:.4g}")

    if schedule == "joint":
        run(K, steps, lr, seed)
    else:
        for k in range(1, K + 1):
            run(k, steps, lr, seed + 2 * k)
            run(k, steps // 2, lr / 5, seed + 2 * k + 1)
    run(K, final_steps, lr / 10, seed + 10_000)
    result.seconds = time.perf_counter() - t0
    result.final_loss = _eval_losses(full, problem, data, modes, n_eval, seed)
    return result
