"""MoFA training: the encoder + the face decoder trained on the face energy with the core's
:func:`facerig.energy.train` (one loop for the unsupervised, self-supervised and supervised modes).

:func:`train_encoder` wires the pieces together:

* data: any map-style dataset of encoder items (:mod:`facerig.encoder.synthetic_data`,
  ``facerig.encoder.data.PreparedFaces``, or a ``ConcatDataset`` of them), batched by
  :class:`BatchStream` (a seeded permutation per epoch, resumable at any step);
* loss: :class:`facerig.encoder.losses.MoFALoss` as the problem's ``batch_loss``: each sample's
  losses follow its ``source``, weighted by the per-mode weights;
* optimiser AdamW, cosine learning rate with warm-up, gradient clipping, bfloat16 autocast of the
  backbone on CUDA (``FaceEncoder.amp``);
* every ``log_every`` steps: a row of ``log.csv`` (and TensorBoard scalars when installed) and the
  checkpoint ``checkpoint.pt`` (resumable: ``resume=True``);
* every epoch (and at the end): validation (:func:`evaluate`: photometric error, landmark error in
  px, geometry error in mm after similarity alignment on synthetic items) appended to
  ``validation.csv`` and a PNG of reconstructions ``images/step_<step, 6 digits>.png`` (e.g. ``step_000500.png``);
* at the end: ``encoder.pt`` (:meth:`FaceEncoder.save`).
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from facerig.encoder.losses import MoFALoss
from facerig.encoder.model import FaceEncoder
from facerig.energy.training import Problem, TrainResult, train
from facerig.face.decoder import FaceDecoder
from facerig.io import atomic_open, atomic_write, write_image
from facerig.model.geometry import similarity_aligned

__all__ = ["BatchStream", "TrainOptions", "TrainConfig", "train_encoder", "evaluate", "MODE_PRESETS", "reconstruction_grid"]

MODE_PRESETS = {
    "unsupervised": {"unsupervised": 1.0},
    "self_supervised": {"self_supervised": 1.0},
    "supervised": {"supervised": 1.0},
    "mixed": {"unsupervised": 1.0, "self_supervised": 1.0, "supervised": 1.0},
}
"""``--mode`` name -> per-mode loss weights."""

ITEM_KEYS = ("image", "landmarks", "focal", "principal_point", "code", "source")


class _ListSampler(Sampler):
    def __init__(self, indices):
        self.indices = list(indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class BatchStream:
    """Iterable of collated batches of a map-style dataset: epoch ``e`` visits a permutation seeded by
    ``(seed, e)`` in batches of ``batch_size`` (the last partial batch dropped). Deterministic and
    resumable (:meth:`start_at`). ``num_workers > 0`` loads in "spawn" worker processes.

    Iterating gives one epoch; :func:`facerig.energy.train` cycles it.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, num_workers: int = 0):
        if len(dataset) < batch_size:
            raise ValueError(f"dataset: {len(dataset)} items, fewer than one batch of {batch_size}")
        self.dataset, self.batch_size, self.seed, self.num_workers = dataset, int(batch_size), int(seed), int(num_workers)
        self.epoch, self.offset = 0, 0

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.dataset) // self.batch_size

    def start_at(self, step: int) -> None:
        """Position the stream so that the next batch is the ``step``-th (0-based) of the whole run."""
        self.epoch, self.offset = divmod(int(step), len(self))

    def _order(self, epoch: int):
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        return torch.randperm(len(self.dataset), generator=g)[: len(self) * self.batch_size].tolist()

    def __iter__(self):
        order = self._order(self.epoch)[self.offset * self.batch_size:]
        self.epoch, self.offset = self.epoch + 1, 0
        kw = {}
        if self.num_workers > 0:
            kw = {"num_workers": self.num_workers, "multiprocessing_context": "spawn", "persistent_workers": False}
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=_ListSampler(order), drop_last=True,
                            collate_fn=_collate, **kw)
        yield from loader


def _collate(items):
    return default_collate([{k: it[k] for k in ITEM_KEYS if k in it} for it in items])


@dataclass
class TrainOptions:
    """Settings of :func:`train_encoder` (saved as ``config.json`` in the run folder).

    ``mode``: a :data:`MODE_PRESETS` name or ``{mode: weight}`` (checked when created); ``steps`` total optimisation steps
    (or ``epochs`` x batches per epoch when ``steps`` is None); ``terms``: unsupervised energy
    weights (:data:`facerig.encoder.losses.DEFAULT_TERMS`); ``energy_scale``: factor on the face
    energy; ``val_every``: validation period in steps (default: once per epoch); ``render_size``:
    resolution of the photometric term (:class:`~facerig.encoder.losses.MoFALoss`).
    """

    mode: str | dict = "mixed"
    steps: int | None = None
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    lr_schedule: str = "cosine"
    grad_clip: float = 5.0
    seed: int = 0
    log_every: int = 25
    val_every: int | None = None
    val_images: int = 8
    num_workers: int = 0
    terms: dict = field(default_factory=dict)
    energy_scale: float = 1e-3
    render_size: int | None = None
    code_weights: dict = field(default_factory=dict)

    def __post_init__(self):
        _mode_weights(self.mode)  # ValueError naming ``mode`` for an unknown preset


TrainConfig = TrainOptions
"""The former name of :class:`TrainOptions` (kept as an alias)."""


def _mode_weights(mode) -> dict:
    if isinstance(mode, str):
        if mode not in MODE_PRESETS:
            raise ValueError(f"mode: expected one of {sorted(MODE_PRESETS)} or a dict mode -> weight, got {mode!r}")
        return dict(MODE_PRESETS[mode])
    return {k: float(v) for k, v in dict(mode).items()}


def make_problem(loss: MoFALoss) -> Problem:
    """The :class:`facerig.energy.Problem` of encoder training: ``batch_loss(net, batch, modes)``."""

    def batch_loss(net, batch, modes):
        y = net(batch["image"], batch["focal"], batch["principal_point"])
        return loss(y, batch, modes)

    def energy(x, y):
        return loss.unsupervised(y, x)

    return Problem(energy=energy, batch_loss=batch_loss)


# ------------------------------------------------------------------------------------ validation
@torch.no_grad()
def evaluate(encoder: FaceEncoder, batches, decoder: FaceDecoder, loss: MoFALoss | None = None) -> dict:
    """Validation metrics of an encoder over an iterable of batches (dicts of items).

    Returns ``{"photometric": mean absolute colour error over the rendered skin pixels (0-255 units),
    "landmarks_px": mean 2D error of the 468 landmarks (crop px, where known), "geometry_mm": mean
    per-vertex error after similarity alignment (items with a target code), "loss": mean scaled
    face energy, "n": items}``.
    """
    was = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    loss = loss or MoFALoss(decoder)
    photo, lmk, geo, en, n = [], [], [], [], 0
    for batch in batches:
        batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        y = encoder(batch["image"], batch["focal"], batch["principal_point"])
        B, S = y.shape[0], batch["image"].shape[1]
        out = decoder(y, (S, S), batch["principal_point"])
        w = (out.skin * out.alpha)[..., 0]
        err = (out.image - batch["image"]).abs().mean(-1) * 255
        photo += ((err * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1)).tolist()
        lm_pred = decoder.landmarks2d(y, (S, S), batch["principal_point"], kind="mediapipe468")
        d = (lm_pred - batch["landmarks"].to(lm_pred)).norm(dim=-1)
        for b in range(B):
            ok = torch.isfinite(d[b])
            if ok.any():
                lmk.append(float(d[b][ok].mean()))
        code = batch["code"].to(y)
        has = torch.isfinite(code).all(1)
        if has.any():
            vp = decoder.vertices(y[has]).double()
            vt = decoder.vertices(code[has]).double()
            geo += ((similarity_aligned(vp, vt) - vt).norm(dim=-1).mean(1) * 10.0).tolist()
        en += loss.unsupervised(y, batch).tolist()
        n += B
    encoder.train(was)
    nan = float("nan")
    return {"photometric": float(np.mean(photo)) if photo else nan, "landmarks_px": float(np.mean(lmk)) if lmk else nan,
            "geometry_mm": float(np.mean(geo)) if geo else nan, "loss": float(np.mean(en)) if en else nan, "n": n}


@torch.no_grad()
def reconstruction_grid(encoder: FaceEncoder, batch: dict, decoder: FaceDecoder, n: int = 8):
    """(2 S, n S, 3) float image: the crops (top) and the reconstructions rendered over them (bottom),
    with the predicted landmarks (red dots) and the given ones (green)."""
    was = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    img = batch["image"][:n].to(dev)
    y = encoder(img, batch["focal"][:n].to(dev), batch["principal_point"][:n].to(dev))
    S = img.shape[1]
    out = decoder(y, (S, S), batch["principal_point"][:n].to(dev), antialias_edges=True)
    over = out.alpha * out.image + (1 - out.alpha) * img
    top = img.clone()
    lm = decoder.landmarks2d(y, (S, S), batch["principal_point"][:n].to(dev), kind="ibug68")
    given = batch["landmarks"][:n].to(dev)
    for b in range(img.shape[0]):
        for pts, col in ((given[b], (0.0, 1.0, 0.0)), (lm[b], (1.0, 0.0, 0.0))):
            p = pts[torch.isfinite(pts).all(-1)].long().clamp(0, S - 1)
            top[b, p[:, 1], p[:, 0]] = torch.tensor(col, device=dev)
    encoder.train(was)
    grid = torch.cat([torch.cat(list(top), 1), torch.cat(list(over.clamp(0, 1)), 1)], 0)
    return grid.cpu()


# ------------------------------------------------------------------------------------ training
def train_encoder(encoder: FaceEncoder, dataset: Dataset, out, *, options: TrainOptions | None = None,
                  val_dataset: Dataset | None = None, device=None, resume: bool = False, progress: bool = True,
                  decoder: FaceDecoder | None = None, log=print, config: TrainOptions | None = None) -> TrainResult:
    """Train ``encoder`` on ``dataset`` (encoder items) into the run folder ``out``.

    Args:
        encoder: a :class:`FaceEncoder` (its ``input_size`` must match the items' crops).
        dataset: map-style dataset of encoder items (sources may be mixed).
        out: run folder: ``config.json``, ``checkpoint.pt``, ``log.csv``, ``validation.csv``,
            ``images/``, ``encoder.pt``, ``tensorboard/`` (when installed).
        options: :class:`TrainOptions` (default ``TrainOptions()``); ``config=`` is its former
            name (DeprecationWarning).
        val_dataset: validation items (default: none; no validation).
        device: torch device (default: the encoder's).
        resume: continue from ``out/checkpoint.pt`` when it exists (same config).
        decoder: the :class:`FaceDecoder` (default: the encoder's face model).
        log: function receiving one line per validation.

    Returns:
        The core's :class:`~facerig.energy.TrainResult` (loss history per mode).
    """
    if config is not None:
        if options is not None:
            raise TypeError("train_encoder: pass options= only (config= is its former name)")
        warnings.warn("train_encoder(config=...) is deprecated; pass options=TrainOptions(...)", DeprecationWarning,
                      stacklevel=2)
        options = config
    cfg = options or TrainOptions()
    weights = _mode_weights(cfg.mode)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    if device is not None:
        encoder.to(device)
    dev = next(encoder.parameters()).device
    dec = decoder or FaceDecoder(encoder.model_ref, device=dev)
    loss = MoFALoss(dec, terms=cfg.terms, energy_scale=cfg.energy_scale, render_size=cfg.render_size,
                    code_weights=cfg.code_weights or None)
    stream = BatchStream(dataset, cfg.batch_size, cfg.seed, cfg.num_workers)
    per_epoch = len(stream)
    steps = int(cfg.steps) if cfg.steps else int(cfg.epochs) * per_epoch
    val_every = int(cfg.val_every or per_epoch)
    atomic_write(out / "config.json", json.dumps({"train": asdict(cfg), "encoder": encoder.config,
                                                 "train_items": len(dataset), "steps": steps,
                                                 "steps_per_epoch": per_epoch}, indent=2, default=str))
    ckpt = out / "checkpoint.pt"
    if not resume:
        for name in ("log.csv", "validation.csv"):
            (out / name).unlink(missing_ok=True)
    tb = None
    try:  # optional
        from torch.utils.tensorboard import SummaryWriter
        tb = SummaryWriter(str(out / "tensorboard"))
    except Exception:  # noqa: BLE001 - tensorboard not installed
        tb = None
    val_batches = None
    if val_dataset is not None:
        bs = min(cfg.batch_size, len(val_dataset))
        val_batches = [_collate([val_dataset[j] for j in range(i, min(i + bs, len(val_dataset)))])
                       for i in range(0, len(val_dataset), bs)]
    t_start = time.perf_counter()
    state = {"last_t": t_start, "last_step": None, "last_val": None}

    def append_csv(name, row):
        path = out / name
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def validate(step):
        if val_batches is None:
            return
        m = evaluate(encoder, val_batches, dec, loss)
        append_csv("validation.csv", {"step": step, "epoch": round(step / per_epoch, 3), **{k: round(v, 5) if isinstance(v, float) else v for k, v in m.items()}})
        grid = reconstruction_grid(encoder, val_batches[0], dec, cfg.val_images)
        write_image(out / "images" / f"step_{step:06d}.png", grid)
        if tb is not None:
            for k, v in m.items():
                tb.add_scalar(f"val/{k}", v, step)
        log(f"step {step} (epoch {step / per_epoch:.2f}): validation photometric {m['photometric']:.2f}/255, "
            f"landmarks {m['landmarks_px']:.2f} px, geometry {m['geometry_mm']:.2f} mm, loss {m['loss']:.4f}")

    def callback(step, means):
        now = time.perf_counter()
        prev = state["last_step"] if state["last_step"] is not None else step - cfg.log_every
        ips = (step - prev) * cfg.batch_size / max(now - state["last_t"], 1e-9)
        state["last_t"], state["last_step"] = now, step
        append_csv("log.csv", {"step": step, "epoch": round(step / per_epoch, 3), "time_s": round(now - t_start, 2),
                               "images_per_s": round(ips, 2), **{k: round(v, 6) for k, v in means.items()}})
        if tb is not None:
            for k, v in means.items():
                tb.add_scalar(f"train/{k}", v, step)
        prev_val = state["last_val"] if state["last_val"] is not None else prev
        if step // val_every > prev_val // val_every or step == steps:  # crossed a validation point
            state["last_val"] = step
            validate(step)
        return None

    problem = make_problem(loss)
    if not resume or not ckpt.is_file():
        validate(0)
    result = train(encoder, problem, stream, mode=weights, steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                   optimizer="adamw", seed=cfg.seed, log_every=cfg.log_every, callback=callback,
                   checkpoint=ckpt, resume=resume, progress=progress, lr_schedule=cfg.lr_schedule,
                   warmup=min(cfg.warmup, max(1, steps // 10)), weight_decay=cfg.weight_decay,
                   grad_clip=cfg.grad_clip)
    # the checkpoint also records the encoder's configuration (load_encoder reads it)
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    blob["extra"]["encoder_config"] = encoder.config
    with atomic_open(ckpt) as fh:
        torch.save(blob, fh)
    encoder.save(out / "encoder.pt", extra={"steps": result.n_steps, "mode": weights})
    if tb is not None:
        tb.close()
    return result
