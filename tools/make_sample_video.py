#!/usr/bin/env python
"""Render the sample clip of ``facerig rig``: assets/sample_face.mp4.

A synthetic talking head of facerig's default face model (a fixed random identity and albedo;
FaceRenderer's styled eyes - sclera, iris, pupil, closing to skin in blinks - and an open mouth with
a dark interior; ``--plain`` for the unstyled look) over a scikit-image photo crop: 4 s at 12 fps,
288 x 288, mp4v. The performance
(:func:`facerig.rig.performance_curves`) has talking-rate jaw opening, smiles, two blinks, brow
raises and smooth head motion (yaw +-20, pitch +-10, roll +-5 degrees). Deterministic: the same
seed gives the same frames (and, with this OpenCV build, the same bytes).

Run:  .venv/bin/python tools/make_sample_video.py [--out assets/sample_face.mp4] [--seconds 4] [--fps 12]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "assets" / "sample_face.mp4"))
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--fps", type=float, default=12.0)
    ap.add_argument("--size", type=int, default=288)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--plain", action="store_true", help="FaceRenderer's default look (no eye / mouth styling)")
    args = ap.parse_args()
    import torch

    from facerig.rig import render_talking_head

    torch.set_num_threads(1)
    n = int(round(args.seconds * args.fps))
    gt = render_talking_head(args.out, n_frames=n, fps=args.fps, size=args.size, seed=args.seed,
                             styled=not args.plain)
    size = Path(args.out).stat().st_size
    active = np.argsort(-gt["weights"].std(0))[:5]
    print(f"wrote {args.out}: {n} frames, {args.size}x{args.size} at {args.fps:g} fps, {size / 1e6:.2f} MB; "
          f"most active shapes: {', '.join(gt['names'][j] for j in active)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
