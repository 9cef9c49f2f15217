"""``facerig train``: train a MoFA encoder (CNN -> graphic code) through the face model and renderer.

    facerig train --data synthetic --out out/run                   # synthetic faces only (offline)
    facerig train --data DATA --out out/run --synthetic 2000       # a `facerig prepare` folder + synthetic faces
    facerig train --data DATA --out out/run --mode unsupervised --arch resnet --size 224 --device cuda
    facerig train --data DATA --out out/run --resume               # continue an interrupted run

Modes (per-sample losses follow each item's source; the mode sets the weights):
``unsupervised`` (MoFA: photometric + landmarks + priors), ``self_supervised`` (code loss on
synthetic faces), ``supervised`` (code loss against the fitter's codes stored by prepare),
``mixed`` (all three, default).

The run folder receives ``config.json``, ``checkpoint.pt`` (resumable), ``log.csv`` (and
``tensorboard/`` when TensorBoard is installed), ``validation.csv`` (per epoch: photometric error,
landmark error in px, synthetic geometry error in mm), ``images/step_*.png`` (reconstructions) and
``encoder.pt`` (load it with ``facerig.encoder.load_encoder(RUN)`` or ``facerig reconstruct --encoder RUN``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

MODES = ("unsupervised", "self_supervised", "supervised", "mixed")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a MoFA encoder (photo -> graphic code) on prepared and/or synthetic faces",
        description="Train a CNN encoder end to end through the face model and the differentiable renderer "
                    "(MoFA), in the unsupervised, self-supervised or supervised mode or a mix.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", required=True, metavar="DATA",
                   help="a folder written by `facerig prepare`, or 'synthetic' (synthetic faces only)")
    p.add_argument("--out", "-o", required=True, metavar="RUN", help="run folder (checkpoints, logs, images)")
    p.add_argument("--mode", choices=MODES, default="mixed", help="loss weights preset (default mixed)")
    p.add_argument("--arch", choices=("mobile", "resnet"), default="mobile", help="encoder architecture (default mobile)")
    p.add_argument("--size", type=int, default=128, help="crop size, a multiple of 32 (default 128)")
    p.add_argument("--width", type=float, default=1.0, help="mobile width multiplier (default 1.0)")
    p.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="synthetic faces added to the data (default: 2000 with --data synthetic, else 0)")
    p.add_argument("--cache", action="store_true", help="keep the synthetic faces in memory after their first use")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, default=None, help="epochs (default 10)")
    g.add_argument("--steps", type=int, default=None, help="optimisation steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val", type=int, default=64, help="validation items (held out of DATA, plus as many synthetic; default 64)")
    p.add_argument("--render-size", type=int, default=None,
                   help="resolution of the photometric term (default: the crop size; e.g. 64 on a CPU)")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes (spawn; default 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0 = torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check(args):
    from facerig.cli import UserError

    if args.size < 32 or args.size % 32:
        raise UserError(f"--size: expected a multiple of 32 (e.g. 128 or 224), got {args.size}")
    for name in ("epochs", "steps", "batch_size", "val"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "val" else 1):
            raise UserError(f"--{name.replace('_', '-')}: expected a positive number, got {v}")
    if args.lr <= 0:
        raise UserError(f"--lr: expected > 0, got {args.lr}")
    if args.synthetic is not None and args.synthetic < 0:
        raise UserError(f"--synthetic: expected >= 0, got {args.synthetic}")
    if args.render_size is not None and not 16 <= args.render_size <= args.size:
        raise UserError(f"--render-size: expected 16..{args.size}, got {args.render_size}")
    if str(args.device).startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU is available to torch (install the CUDA build of PyTorch)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a folder")
    if (out / "checkpoint.pt").is_file() and not args.resume:
        raise UserError(f"--out: {out} already holds a training run; pass --resume to continue it or choose another folder")


def _prepared(path: str, size: int):
    """The prepared folder at ``path`` as ``facerig.encoder.data.PreparedFaces``.

    Returns ``(train, val)`` views of the folder at ``size``: augmented for training, plain for validation."""
    from facerig.cli import UserError

    root = Path(path)
    if not root.is_dir():
        raise UserError(f"--data: {root} is not a folder; give a folder written by `facerig prepare`, or 'synthetic'")
    from facerig.encoder.data import PreparedFaces

    try:
        train = PreparedFaces(root, size=size, augment=True)
        val = PreparedFaces(root, size=size)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(f"--data: {err}") from err
    if len(train) == 0:
        raise UserError(f"--data: {root} holds no face crops; run `facerig prepare` on photos or videos first")
    return train, val


def run(args) -> int:
    import time

    import torch
    from torch.utils.data import ConcatDataset, Subset

    from facerig.cli import UserError
    from facerig.encoder.model import FaceEncoder
    from facerig.encoder.synthetic_data import SyntheticFaceDataset
    from facerig.encoder.training import MODE_PRESETS, TrainOptions, train_encoder

    _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts, val_parts = [], []
    synthetic_only = args.data == "synthetic"
    n_syn = args.synthetic if args.synthetic is not None else (2000 if synthetic_only else 0)
    if synthetic_only and n_syn == 0:
        raise UserError("--synthetic: --data synthetic needs at least one synthetic face")
    if not synthetic_only:
        ds, ds_val = _prepared(args.data, args.size)
        n_val = min(args.val, len(ds) // 5)
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed)).tolist()
        if n_val:
            val_parts.append(Subset(ds_val, perm[:n_val]))
        parts.append(Subset(ds, perm[n_val:]))
    if n_syn:
        parts.append(SyntheticFaceDataset(n_syn, args.size, seed=args.seed, cache=args.cache))
    if args.val:
        val_parts.append(SyntheticFaceDataset(max(8, min(args.val, 256)), args.size, seed=1_000_003 + args.seed))
    if args.mode == "supervised" and synthetic_only:
        raise UserError("--mode supervised: needs prepared items with the fitter's codes (source 2); "
                        "synthetic faces train the self_supervised mode")
    if args.mode == "self_supervised" and not n_syn:
        raise UserError("--mode self_supervised: needs synthetic faces; add --synthetic N")
    data = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if len(data) < args.batch_size:
        raise UserError(f"--batch-size: only {len(data)} training items; lower --batch-size or add data")
    val = None if not val_parts else (val_parts[0] if len(val_parts) == 1 else ConcatDataset(val_parts))
    backbone = {"width": args.width} if args.arch == "mobile" else {}
    enc = FaceEncoder(args.arch, args.size, backbone=backbone, seed=args.seed)
    cfg = TrainOptions(mode=MODE_PRESETS[args.mode], steps=args.steps, epochs=args.epochs or 10,
                       batch_size=args.batch_size, lr=args.lr, seed=args.seed, num_workers=args.workers,
                       render_size=args.render_size)
    print(f"training a {args.arch} encoder ({args.size}x{args.size}) on {len(data)} items "
          f"({'synthetic' if synthetic_only else args.data}{f' + {n_syn} synthetic' if n_syn and not synthetic_only else ''}), "
          f"mode {args.mode}, device {args.device}; run folder {args.out}")
    t0 = time.perf_counter()
    try:
        res = train_encoder(enc, data, args.out, options=cfg, val_dataset=val, device=args.device,
                            resume=args.resume, progress=not args.quiet)
    except FloatingPointError as err:
        raise UserError(f"training diverged: {err}") from err
    last = {k: v[-1] for k, v in res.history.items() if v}
    print(f"done: {res.n_steps} steps in {time.perf_counter() - t0:.1f} s; last losses "
          + ", ".join(f"{k} {v:.4g}" for k, v in last.items()) + f"; encoder -> {Path(args.out) / 'encoder.pt'}")
    return 0
