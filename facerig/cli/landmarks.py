"""``facerig landmarks``: detect faces and Face Mesh landmarks in photos (a thin layer over facerig.landmarks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facerig.cli import UserError

_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "landmarks",
        help="detect faces and 478 Face Mesh landmarks in a photo or a folder of photos",
        description="Writes OUT/<stem>/landmarks.png (drawing) and OUT/<stem>/landmarks.json "
        "(points in pixels, pixel centres at +0.5; iBUG-68 subset; scores).",
    )
    p.add_argument("input", help="an image file or a folder of images")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--max-faces", type=int, default=1, help="faces per image (default 1)")
    p.add_argument("--no-refine", action="store_true", help="468 points without irises")
    p.add_argument("--tessellation", action="store_true", help="draw the mesh edges")
    p.set_defaults(func=run)


def _one(path: Path, out: Path, args) -> int:
    import facerig.landmarks as fl
    from facerig.io import atomic_write, write_image

    image = fl.load_image(path)
    faces = fl.detect_landmarks(image, max_faces=args.max_faces, refine=not args.no_refine)
    if not faces:
        raise UserError(f"{path}: no face found")
    folder = out / path.stem
    folder.mkdir(parents=True, exist_ok=True)
    drawing = fl.draw_landmarks(image, faces, tessellation=args.tessellation, boxes=True)
    write_image(folder / "landmarks.png", drawing)
    doc = {
        "image": str(path),
        "image_size": list(image.shape[:2]),
        "faces": [dict(f.to_dict(), ibug68=fl.to_ibug68(f.points)[:, :2].round(3).tolist()) for f in faces],
    }
    atomic_write(folder / "landmarks.json", json.dumps(doc))
    return len(faces)


def run(args: argparse.Namespace) -> int:
    import facerig.landmarks as fl

    src, out = Path(args.input), Path(args.output)
    if args.max_faces < 1:
        raise UserError("--max-faces must be >= 1")
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in _EXTS)
        if not files:
            raise UserError(f"{src}: no image files ({', '.join(sorted(_EXTS))})")
        failed = 0
        for p in files:
            try:
                n = _one(p, out, args)
                print(f"{p.name}: {n} face(s) -> {out / p.stem}")
            except (UserError, fl.ImageReadError) as err:
                failed += 1
                print(f"{p.name}: skipped: {err}", file=sys.stderr)
        print(f"{len(files) - failed} of {len(files)} images done, {failed} skipped")
        return 0 if failed < len(files) else 2
    try:
        n = _one(src, out, args)
    except fl.ImageReadError as err:
        raise UserError(str(err)) from err
    print(f"{src.name}: {n} face(s) -> {out / src.stem}")
    return 0
