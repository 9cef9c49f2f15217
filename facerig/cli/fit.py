"""``facerig fit``: reconstruct faces from photos by analysis-by-synthesis fitting.

    facerig fit -o out/fit                         # the shipped sample, scikit-image's astronaut()
    facerig fit photo.jpg -o out/fit               # one photo  -> out/fit/photo/
    facerig fit photos/ more.png -o out/fit        # a batch: folders are scanned for images

Per input, ``OUT/<stem>/`` receives ``mesh.obj`` (or ``mesh.glb``; model frame, cm, albedo vertex
colours; on the model's detail surface when it has one - the default model's 1833 vertices, the
first 468 its Face Mesh vertices), ``overlay.png`` (the fitted face rendered over the photo), ``landmarks.png`` (detected
landmarks in green, the fitted model's in red) and ``code.json`` (graphic code, model name,
camera, landmarks68, detected landmarks, energies, errors, timings).

Exit status: 0 when every input was fitted; for a single input, 2 when it has no face or cannot
be read; for a batch, 1 when some inputs failed (they are reported and skipped), 2 when all did.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from facerig.cli import IMAGE_EXTENSIONS, UserError, batch_inputs, run_batch



def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit", help="reconstruct 3D faces from photos (landmarks + photometric fitting)",
        description="Fit the face model to photos: pose from landmarks, identity and expression by "
                    "Levenberg-Marquardt, then photometric refinement with albedo and SH light. "
                    "With no input, fits the shipped sample (scikit-image's astronaut(), public domain).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 all fitted; 2 single input without a face / unreadable; 1 batch with "
               "some failures; 2 batch where every input failed.")
    p.add_argument("inputs", nargs="*", metavar="PHOTO|FOLDER",
                   help="image files or folders of images (default: the astronaut sample)")
    p.add_argument("-o", "--out", default="out/fit", help="output folder (default: out/fit)")
    p.add_argument("--model", default="default", help="face model: 'default' or a model path (see 'facerig model')")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--iterations", type=int, default=None,
                   help="photometric Levenberg-Marquardt iterations (default 9: 4 at 80 px, 2 at 120 px, 3 at 160 px; "
                        "0 = landmark-only fit)")
    p.add_argument("--all-faces", action="store_true", help="fit every face, not only the largest "
                                                           "(outputs OUT/<stem>_face<k>/)")
    p.add_argument("--landmarks", choices=("dense", "sparse"), default="dense",
                   help="fit the 468 Face Mesh points (dense, default) or the iBUG-68 subset (sparse)")
    p.add_argument("--format", choices=("obj", "glb", "ply"), default="obj", help="mesh format (default obj)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the fitting's tensors are small, and several threads "
                        "run many times slower when the cores are busy; 0 = torch's default)")
    p.set_defaults(func=run)


def export_face_mesh(path: Path, model, identity, expression, albedo) -> int:
    """Write the face of the (1, K) coefficients as a mesh (model frame, cm, albedo vertex colours)
    on the model's detail surface when it has one (:meth:`facerig.model.FaceModel.detailed`: the
    default model's 1833 vertices, the first 468 being its Face Mesh vertices), else on its mesh.
    Returns the number of vertices written."""
    import torch  # heavy: imported by the commands that run, so that ``facerig --help`` stays fast

    from facerig.model import export_mesh

    m = model.detailed() if model.has_detail else model
    with torch.no_grad():
        shape = m.shape(identity.to(m.mean), expression.to(m.mean))[0].cpu()
        colors = m.albedo(albedo.to(m.mean))[0].clamp(0, 1).cpu()
    export_mesh(path, shape.numpy(), m.faces.cpu().numpy(), colors=colors.numpy())
    return m.n_vertices


def write_outputs(fit, image, folder: Path, mesh_format: str = "obj") -> dict:
    """Write mesh, overlay.png, landmarks.png and code.json of a :class:`facerig.face.FaceFit` (atomically)."""
    import cv2

    from facerig.io import atomic_write, write_image
    from facerig.io import as_rgb_uint8
    from facerig.landmarks import draw_landmarks

    folder.mkdir(parents=True, exist_ok=True)
    rgb = as_rgb_uint8(image)
    dec = fit.decoder
    mesh = folder / f"mesh.{mesh_format}"
    n_vertices = export_face_mesh(mesh, dec.model, fit.code.identity, fit.code.expression, fit.code.albedo)

    write_image(folder / "overlay.png", fit.render(rgb, alpha=0.75))
    scale = min(1.0, 1024 / max(rgb.shape[:2]))
    small = rgb if scale == 1.0 else cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                                                interpolation=cv2.INTER_AREA)
    r = max(1.5, min(small.shape[:2]) / 200)
    pic = draw_landmarks(small, fit.detected68 * scale, color=(0, 255, 0), radius=r)
    pic = draw_landmarks(pic, fit.landmarks68 * scale, color=(255, 0, 0), radius=r * 0.7)
    write_image(folder / "landmarks.png", pic)
    data = fit.to_dict()
    data["mesh"] = {"file": mesh.name, "frame": "model frame (x subject's left, y up, z toward the viewer), cm",
                    "colors": "albedo", "vertices": n_vertices,
                    "surface": "detail level (the first model.n_vertices are the model's)" if dec.model.has_detail
                    else "the model's mesh"}
    atomic_write(folder / "code.json", json.dumps(data, indent=1))
    return data


def run(args) -> int:
    import torch

    from facerig.face import FaceDecoder, FitOptions, NoFaceError, fit_faces, fit_image
    from facerig.io import ImageReadError, load_image
    from facerig.model import ModelFileError

    if args.threads is not None and args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.iterations is not None and args.iterations < 0:
        raise UserError("--iterations must be >= 0")
    try:
        dec = FaceDecoder(args.model, device=args.device)
    except (ModelFileError, RuntimeError) as err:
        raise UserError(str(err)) from None
    items, single = batch_inputs(args.inputs, IMAGE_EXTENSIONS, "fit", "images",
                                 "fitting the sample image: scikit-image's astronaut() (public domain)")
    opts = FitOptions(landmarks=args.landmarks)
    out = Path(args.out)

    def work(stem, src, label, say):
        image = load_image(src) if isinstance(src, Path) else src
        t0 = time.perf_counter()
        if args.all_faces:
            fits = fit_faces(image, dec, options=opts, iterations=args.iterations)
            names = [f"{stem}_face{k}" for k in range(len(fits))]
        else:
            fits = [fit_image(image, dec, options=opts, iterations=args.iterations)]
            names = [stem]
        for fit, name in zip(fits, names):
            write_outputs(fit, image, out / name, args.format)
            msg = (f"{label}: fitted in {time.perf_counter() - t0:.2f} s; landmark error "
                   f"{fit.landmark_error_px:.2f} px (68 points)")
            if fit.landmark_error_dense_px is not None:
                msg += f", {fit.landmark_error_dense_px:.2f} px (468)"
            say(f"{msg} -> {out / name}")

    return run_batch(items, work, command="fit", verb="fitted", out=out, single=single,
                     failure=(NoFaceError, ImageReadError),
                     describe=lambda err, label: f"no face found in {label}" if isinstance(err, NoFaceError) else str(err))
