"""Training networks on an energy: one API for the supervised, self-supervised and unsupervised modes.

A :class:`Problem` describes ``E(x, y) = Loss(x, g(y)) + Prior(y)`` and what each mode needs;
:func:`train` fits a network ``net(x) -> y`` (a free-form network or an unrolled solver from
:mod:`facerig.energy.unroll`) in one mode or in a weighted mix of modes:

* ``"unsupervised"``: the loss is the energy of the prediction, ``mean_b E(x_b, net(x_b))``,
  on observations ``x`` from ``data``;
* ``"supervised"``: the loss is ``code_loss(net(x), y*)`` with targets ``y* = problem.solve(x)``
  from an iterative solver, computed once per data sample and cached;
* ``"self_supervised"``: draw codes ``y ~ problem.sample_prior``, synthesise
  ``x = problem.synthesize(y)`` and regress ``code_loss(net(x), y)``.

``data`` is either an ``(N, ...)`` tensor of observations (batches drawn with replacement, one per
mode) or, for data sets that do not fit a tensor, any iterable of batches (e.g. a
``torch.utils.data.DataLoader`` of dict batches, cycled over epochs) together with
``problem.batch_loss``, which returns the modes' losses of one batch - so one batch can mix
samples of different modes (each sample's losses follow its own kind).

Training is seeded and deterministic (batches come from a seeded generator; the global RNG,
used e.g. by ``synthesize`` for noise, is seeded inside a forked RNG state, so the caller's
random state is untouched). Checkpoints are written atomically and can resume a run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerig.energy._checks import check_nonneg, check_option, check_positive_int
from facerig.io import atomic_open

__all__ = ["Problem", "TrainResult", "train", "save_checkpoint", "load_checkpoint", "MODES", "lr_factor"]

MODES = ("unsupervised", "self_supervised", "supervised")


@dataclass
class Problem:
    """An energy ``E(x, y) = Loss(x, g(y)) + Prior(y)`` and what the training modes need.

    Attributes:
        energy: ``(x, y) -> (B,)`` per-sample energy (e.g. a :class:`~facerig.energy.terms.WeightedSum`);
            the loss of the unsupervised mode.
        synthesize: ``y -> x``, the forward model ``g(y)`` plus noise (self-supervised mode).
        sample_prior: ``(n, generator) -> y``, ``n`` codes from the prior (self-supervised mode).
        solve: ``x -> y*``, an iterative solver giving supervised targets.
        code_loss: ``(y_pred, y_true) -> scalar``; the mean squared error by default.
        batch_loss: ``(net, batch, modes) -> {mode: scalar}``, the losses of the listed modes on one
            batch of an iterable ``data`` (which then replaces the per-mode pieces above).
    """

    energy: Callable[[Tensor, Tensor], Tensor]
    synthesize: Callable[[Tensor], Tensor] | None = None
    sample_prior: Callable[[int, torch.Generator], Tensor] | None = None
    solve: Callable[[Tensor], Tensor] | None = None
    code_loss: Callable[[Tensor, Tensor], Tensor] | None = None
    batch_loss: Callable[..., dict] | None = None

    def loss_between(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        """``code_loss(y_pred, y_true)`` (MSE when unset)."""
        if self.code_loss is None:
            return F.mse_loss(y_pred, y_true)
        return self.code_loss(y_pred, y_true)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: ``{mode: [loss, ...], "total": [...]}``, the losses averaged over each logging
            window (every ``log_every`` steps).
        steps: logged step numbers (1-based), one per history entry.
        n_steps: total optimisation steps done (including those of a resumed run).
        seconds: wall time of this call.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)
    n_steps: int = 0
    seconds: float = 0.0


def save_checkpoint(path, net: nn.Module, optimizer: torch.optim.Optimizer | None = None, step: int = 0,
                    extra: dict | None = None) -> None:
    """Write ``{"model", "optimizer", "step", "extra"}`` to ``path`` atomically (temp file + rename).

    Args:
        path: destination file (its folder is created).
        net: the network (its ``state_dict``).
        optimizer: optional optimiser whose state is saved too.
        step: the training step reached.
        extra: any picklable metadata (e.g. RNG states, the configuration).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "extra": extra or {},
    }
    with atomic_open(path) as fh:
        torch.save(payload, fh)


def load_checkpoint(path, net: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    map_location=None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``net`` (and ``optimizer``).

    Returns:
        The checkpoint dict (``"step"``, ``"extra"``, ...).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a facerig checkpoint or does not fit ``net``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location=map_location or "cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"path: {path} is not a facerig checkpoint")
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ValueError(f"net: the checkpoint {path} does not fit this network: {err}") from err
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt


def lr_factor(schedule, step: int, steps: int, warmup: int = 0) -> float:
    """Learning-rate multiplier at 1-based ``step`` of ``steps``: linear warm-up over ``warmup`` steps,
    then ``"constant"`` (1), ``"cosine"`` (half a cosine down to 0.01) or ``"step"`` (x0.1 after 70 %
    and again after 90 % of the steps); a callable ``schedule(step, steps)`` is used as is."""
    if callable(schedule):
        return float(schedule(step, steps))
    w = min(1.0, step / warmup) if warmup > 0 else 1.0
    if schedule == "constant":
        return w
    if schedule == "cosine":
        t = min(1.0, max(0.0, (step - warmup) / max(1, steps - warmup)))
        return w * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))
    if schedule == "step":
        return w * (0.1 ** ((step > 0.7 * steps) + (step > 0.9 * steps)))
    raise ValueError(f"lr_schedule: expected 'constant', 'cosine', 'step' or a callable, got {schedule!r}")


def _to_device(batch, device):
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class _Cycle:
    """Endless batches of an iterable (re-iterated at each epoch). A resumed run continues where the
    interrupted one stopped: ``data.start_at(step)`` is called when the data source has it; otherwise
    the batches already consumed are skipped (``step % len(data)`` of them when the data has a length
    and yields the same batches every epoch, e.g. a list or an unshuffled / seeded DataLoader)."""

    def __init__(self, data, start: int):
        self.data = data
        if start and hasattr(data, "start_at"):
            data.start_at(start)
            start = 0
        self.it = iter(data)
        if start:
            try:
                start %= len(data)
            except TypeError:
                pass
            for _ in range(start):
                self.next()

    def next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.data)
            try:
                return next(self.it)
            except StopIteration:
                raise ValueError("data: the iterable yielded no batch") from None


def _modes(mode) -> dict[str, float]:
    if isinstance(mode, str):
        check_option(mode, "mode", MODES)
        return {mode: 1.0}
    if isinstance(mode, dict) and mode:
        for name, w in mode.items():
            check_option(name, "mode", MODES)
            check_nonneg(w, f"mode weight of {name!r}")
        return {k: float(v) for k, v in mode.items()}
    raise ValueError(f"mode: expected one of {MODES} or a dict mode -> weight, got {mode!r}")


class _TargetCache:
    """Supervised targets ``problem.solve(x)``, computed once per data sample."""

    def __init__(self, solve: Callable[[Tensor], Tensor], n: int):
        self.solve = solve
        self.values: Tensor | None = None
        self.have = torch.zeros(n, dtype=torch.bool)

    def get(self, data: Tensor, idx: Tensor) -> Tensor:
        missing = idx[~self.have[idx]].unique()
        if len(missing):
            with torch.no_grad():
                y = self.solve(data[missing]).detach()
            if self.values is None:
                self.values = torch.zeros((self.have.shape[0],) + tuple(y.shape[1:]), dtype=y.dtype, device=y.device)
            self.values[missing] = y
            self.have[missing] = True
        return self.values[idx]


def train(
    net: nn.Module,
    problem: Problem,
    data: Tensor | None = None,
    *,
    mode: str | dict[str, float] = "unsupervised",
    steps: int = 500,
    batch_size: int = 16,
    lr: float = 1e-3,
    optimizer: str = "adam",
    seed: int = 0,
    device: torch.device | str | None = None,
    log_every: int = 50,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    lr_schedule="constant",
    warmup: int = 0,
    weight_decay: float = 0.0,
    grad_clip: float | None = None,
) -> TrainResult:
    """Train ``net(x) -> y`` on a :class:`Problem` in one mode or a weighted mix of modes.

    Args:
        net: the network (free-form or unrolled); moved to ``device`` when given.
        problem: the energy and the pieces the chosen modes need.
        data: ``(N, ...)`` observations ``x`` (unsupervised and supervised modes); batches are
            drawn from it with replacement. Or an iterable of batches (tensors, dicts or lists of
            tensors; e.g. a DataLoader), cycled, with ``problem.batch_loss`` giving the modes'
            losses per batch; if it has ``start_at(step)``, a resumed run calls it first.
        mode: ``"unsupervised"``, ``"supervised"``, ``"self_supervised"`` or a dict
            ``{mode: weight}``; the loss is the weighted sum of the modes' losses, each on its own
            batch of ``batch_size`` samples.
        steps: total optimisation steps (a resumed run continues up to this number).
        batch_size: samples per mode and step (tensor data; an iterable's batches keep their size).
        lr: learning rate.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        seed: seeds the batches, the prior samples and the global RNG (inside a forked state).
        device: where to train (default: the device of ``net``'s parameters).
        log_every: steps per logging window (history entry, progress-bar update, checkpoint).
        callback: ``callback(step, losses)`` after each logging window with the window's mean
            losses per mode and ``"total"``; returning ``True`` stops training.
        checkpoint: file written atomically at every logging window and at the end (model,
            optimizer, step, RNG states, history).
        resume: continue from ``checkpoint`` when the file exists.
        progress: show a tqdm progress bar.
        lr_schedule: ``"constant"``, ``"cosine"``, ``"step"`` or ``f(step, steps) -> factor``
            (see :func:`lr_factor`); warmup: linear warm-up steps.
        weight_decay: weight decay (decoupled for ``"adamw"``).
        grad_clip: clip the gradients' global norm to this value (None: no clipping).

    Returns:
        :class:`TrainResult`.
    """
    modes = _modes(mode)
    check_positive_int(steps, "steps")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(log_every, "log_every")
    check_nonneg(lr, "lr", strict=True)
    check_option(optimizer, "optimizer", ("adam", "adamw", "sgd"))
    check_nonneg(weight_decay, "weight_decay")
    check_positive_int(warmup, "warmup", minimum=0)
    if grad_clip is not None:
        check_nonneg(grad_clip, "grad_clip", strict=True)
    lr_factor(lr_schedule, 1, steps, warmup)  # validates the schedule
    if resume and checkpoint is None:
        raise ValueError("checkpoint: resume=True needs a checkpoint path")
    iterable = data is not None and not isinstance(data, Tensor)
    if iterable:
        if problem.batch_loss is None:
            raise ValueError("problem: an iterable data source needs problem.batch_loss(net, batch, modes)")
        if not hasattr(data, "__iter__"):
            raise ValueError(f"data: expected an (N, ...) tensor or an iterable of batches, got {type(data).__name__}")
        needs_data = []
    else:
        needs_data = [m for m in modes if m in ("unsupervised", "supervised")]
        if needs_data and (data is None or data.dim() < 1 or len(data) == 0):
            raise ValueError(f"data: the {needs_data[0]} mode needs a non-empty (N, ...) tensor of observations")
        if "supervised" in modes and problem.solve is None:
            raise ValueError("problem: the supervised mode needs problem.solve")
        if "self_supervised" in modes and (problem.sample_prior is None or problem.synthesize is None):
            raise ValueError("problem: the self_supervised mode needs problem.sample_prior and problem.synthesize")

    params = list(net.parameters())
    if not params:
        raise ValueError("net: has no parameters to train")
    if device is not None:
        net.to(device)
    device = params[0].device
    if data is not None and not iterable:
        data = data.to(device)
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    result = TrainResult(history={m: [] for m in [*modes, "total"]})
    cache = _TargetCache(problem.solve, len(data)) if "supervised" in modes and not iterable else None
    start = 0
    global_rng = None
    if resume and Path(checkpoint).is_file():
        ckpt = load_checkpoint(checkpoint, net, opt, map_location=device)
        start = ckpt["step"]
        extra = ckpt["extra"]
        gen.set_state(extra["generator"])
        global_rng = extra["global_rng"]
        result.history = extra["history"]
        result.steps = extra["log_steps"]
        if cache is not None and extra.get("targets") is not None:
            cache.values, cache.have = extra["targets"]
            cache.values = cache.values.to(device)

    def save(step: int) -> None:
        if checkpoint is None:
            return
        targets = None if cache is None or cache.values is None else (cache.values.cpu(), cache.have)
        save_checkpoint(checkpoint, net, opt, step, {
            "generator": gen.get_state(), "global_rng": torch.get_rng_state(),
            "history": result.history, "log_steps": result.steps, "targets": targets,
        })

    bar = None
    if progress and start < steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc="train", leave=False)
    t0 = time.perf_counter()
    batches = _Cycle(data, start) if iterable and start < steps else None
    sums = {m: 0.0 for m in [*modes, "total"]}
    count = 0
    net.train()
    with torch.random.fork_rng(devices=[]):
        if global_rng is not None:
            torch.set_rng_state(global_rng)
        else:
            torch.manual_seed(seed)
        step = start
        while step < steps:
            step += 1
            losses: dict[str, Tensor] = {}
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(lr_schedule, step, steps, warmup)
            if iterable:
                batch = _to_device(batches.next(), device)
                losses = problem.batch_loss(net, batch, tuple(modes))
                missing = [m for m in modes if m not in losses]
                if missing:
                    raise ValueError(f"problem.batch_loss: returned no loss for mode(s) {missing}")
            if needs_data:
                idx = torch.randint(len(data), (batch_size,), generator=gen)
                x = data[idx.to(device)]
                if "unsupervised" in modes:
                    losses["unsupervised"] = problem.energy(x, net(x)).mean()
                if "supervised" in modes:
                    losses["supervised"] = problem.loss_between(net(x), cache.get(data, idx.to(device)))
            if "self_supervised" in modes and not iterable:
                y = problem.sample_prior(batch_size, gen).to(device)
                with torch.no_grad():
                    xs = problem.synthesize(y)
                losses["self_supervised"] = problem.loss_between(net(xs), y)
            total = sum(modes[m] * losses[m] for m in modes)
            if not torch.isfinite(total):
                raise FloatingPointError(f"train: the loss became {float(total.detach())} at step {step}; lower lr")
            opt.zero_grad(set_to_none=True)
            total.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            for m in modes:
                sums[m] += float(losses[m].detach())
            sums["total"] += float(total.detach())
            count += 1
            if bar is not None:
                bar.update(1)
            if step % log_every == 0 or step == steps:
                means = {k: v / count for k, v in sums.items()}
                for k, v in means.items():
                    result.history[k].append(v)
                result.steps.append(step)
                sums = {k: 0.0 for k in sums}
                count = 0
                if bar is not None:
                    bar.set_postfix(loss=f"{means['total']:.4g}")
                save(step)
                if callback is not None and callback(step, means) is True:
                    break
    if bar is not None:
        bar.close()
    net.eval()
    result.n_steps = step if start < steps else start
    result.seconds = time.perf_counter() - t0
    return result
