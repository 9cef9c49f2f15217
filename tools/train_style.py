"""Train facerig's learned style solvers with the core's ``train`` (unsupervised: the loss is the style energy).

    python tools/train_style.py flexible -o assets/style_flexible.pt [--size 128] [--steps 800] [--batch 4]
    python tools/train_style.py fast --style skimage:rocket -o fast_rocket.pt [--size 128] [--steps 400]

Training content: random crops of the development videos' frames (``/work/shared/data/videos``, or
``--videos DIR``; read at training time, never copied) and of bundled photographs
(:data:`facerig.style.images.TRAIN_CONTENT`). Flexible styles: the bundled real pictures of
:data:`facerig.style.images.TRAIN_STYLES` and procedural styles; the benchmark's styles and contents
(:data:`~facerig.style.images.HELDOUT_STYLES`, :data:`~facerig.style.images.HELDOUT_CONTENT`) are
never used. A log line per window goes to stdout; ``--checkpoint`` resumes an interrupted run (and a run
with ``--steps`` at or below the checkpoint's step only writes the model of the checkpoint).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facerig.style import FlexibleSolver, TransformNet, get_energy, save_fast, save_flexible, train_fast, train_flexible  # noqa: E402
from facerig.style.images import TRAIN_CONTENT, TRAIN_STYLES, load_image  # noqa: E402
from facerig.style.training import StyleBatches, content_crops, video_frames  # noqa: E402

VIDEOS = Path(os.environ.get("FACERIG_DATA", "/work/shared/data")) / "videos"


def _contents(args) -> torch.Tensor:
    images = [load_image(n, 512) for n in TRAIN_CONTENT]
    vdir = Path(args.videos) if args.videos else VIDEOS
    vids = sorted(vdir.glob("*.mp4")) if vdir.is_dir() else []
    frames = video_frames(vids, every=10, limit=args.frames) if vids else []
    print(f"content: {len(images)} photographs + {len(frames)} video frames from {len(vids)} videos in {vdir}",
          flush=True)
    return content_crops(images + frames, args.crops, args.size, seed=args.seed)


def _log(t0):
    def cb(step, losses):
        print(f"step {step}: energy {losses['total']:.4f} ({time.time() - t0:.0f} s)", flush=True)
    return cb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("flexible", "fast"))
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--style", help="fast: the style image (a file or skimage:NAME)")
    p.add_argument("--size", type=int, default=128, help="training crop side (px)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--crops", type=int, default=600, help="content crops drawn once")
    p.add_argument("--frames", type=int, default=150, help="video frames used at most")
    p.add_argument("--videos", help="folder of training videos (default /work/shared/data/videos)")
    p.add_argument("--n-steps", type=int, default=4, help="flexible: learned steps")
    p.add_argument("--width", type=int, default=24, help="flexible: CNN width / fast: network width")
    p.add_argument("--procedural", type=int, default=96, help="flexible: procedural training styles")
    p.add_argument("--grad-size", type=int, default=None, help="flexible: gradient resolution in training")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    E = get_energy()
    t0 = time.time()
    crops = _contents(args)
    if args.kind == "fast":
        if not args.style:
            p.error("fast needs --style")
        style = load_image(args.style, args.size)
        net = TransformNet(width=args.width if args.width != 24 else 16)
        res = train_fast(net, E, E.grams(style), crops, steps=args.steps, batch_size=args.batch, lr=args.lr,
                         seed=args.seed, log_every=25, checkpoint=args.checkpoint, resume=bool(args.checkpoint),
                         callback=_log(t0))
        save_fast(args.output, net, {"style": args.style, "size": args.size, "steps": res.n_steps,
                                     "batch": args.batch, "seconds": round(time.time() - t0),
                                     "final_energy": res.history["total"][-1]})
    else:
        styles = [load_image(n) for n in TRAIN_STYLES]
        sb = StyleBatches(E, crops, styles, n_procedural=args.procedural, batch_size=args.batch,
                          style_size=args.size, seed=args.seed)
        if args.grad_size:
            sb.grad_size = args.grad_size
        print(f"styles: {len(styles)} pictures + {args.procedural} procedural ({time.time() - t0:.0f} s)", flush=True)
        solver = FlexibleSolver(n_steps=args.n_steps, width=args.width)
        res = train_flexible(solver, E, sb, steps=args.steps, lr=args.lr, seed=args.seed, log_every=25,
                             checkpoint=args.checkpoint, resume=bool(args.checkpoint), callback=_log(t0))
        save_flexible(args.output, solver, {"size": args.size, "steps": res.n_steps, "batch": args.batch,
                                            "seconds": round(time.time() - t0), "styles": list(TRAIN_STYLES),
                                            "procedural": args.procedural,
                                            "final_energy": res.history["total"][-1]})
    print(f"wrote {args.output} ({Path(args.output).stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f} s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
