"""Build the README's picture: astronaut() | fitted face overlay | landmarks (detected vs fitted).

Run:  .venv/bin/python tools/readme_figures.py [--out assets/readme_fit.jpg]

The photo is scikit-image's astronaut() (public domain, NASA). The output is a small JPEG of the
face region, reproducible by this script.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from skimage import data

from facerig.face import fit_image
from facerig.io import write_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/readme_fit.jpg")
    args = ap.parse_args()
    photo = data.astronaut()
    fit = fit_image(photo)
    overlay = fit.render(photo, alpha=0.75)
    marks = photo.copy()
    for pts, colour in ((fit.detected68, (0, 255, 0)), (fit.landmarks68, (255, 0, 0))):
        for x, y in np.asarray(pts)[:, :2]:
            xi, yi = int(x), int(y)
            cv2.circle(marks, (xi, yi), 1, colour, -1)
    # crop the face region (square around the fitted landmarks, 60 % margin)
    lm = np.asarray(fit.landmarks68)
    c = (lm.min(0) + lm.max(0)) / 2
    half = 0.8 * (lm.max(0) - lm.min(0)).max()
    x0, y0 = (c - half).astype(int).clip(0)
    x1, y1 = (c + half).astype(int)
    panels = [cv2.resize(p[y0:y1, x0:x1], (256, 256), interpolation=cv2.INTER_CUBIC)
              for p in (photo, overlay, marks)]
    write_image(args.out, np.concatenate(panels, axis=1))
    print(f"landmark error {fit.landmark_error_px:.2f} px; wrote {args.out}")


if __name__ == "__main__":
    main()
