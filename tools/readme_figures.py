"""Build the README's pictures.

* ``assets/readme_fit.jpg``: astronaut() | fitted face overlay | landmarks (detected vs fitted). The
  photo is scikit-image's astronaut() (public domain, NASA); a small JPEG of the face region.
* ``assets/readme_rig.jpg``: the preview frame that ``facerig rig`` writes for the shipped sample clip
  (original | overlay | rig render), i.e. ``out/rig/preview.jpg`` of the README's main command.

Run:  .venv/bin/python tools/readme_figures.py [--out assets/readme_fit.jpg] [--rig-out assets/readme_rig.jpg]
Both are reproducible by this script.
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
    ap.add_argument("--rig-out", default="assets/readme_rig.jpg", help="'' to skip the rig picture")
    args = ap.parse_args()
    if args.rig_out:
        import shutil
        import tempfile

        from facerig.rig import build_rig

        with tempfile.TemporaryDirectory() as tmp:
            build_rig(out=tmp, progress=False)
            shutil.copyfile(f"{tmp}/preview.jpg", args.rig_out)
        print(f"wrote {args.rig_out}")
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
