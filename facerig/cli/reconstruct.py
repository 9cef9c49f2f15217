"""``facerig reconstruct``: 3D faces from photos and videos with the MoFA encoder (milliseconds per face).

    facerig reconstruct -o out/rec                          # the sample photo, astronaut()
    facerig reconstruct photo.jpg photos/ -o out/rec        # photos -> out/rec/<stem>/
    facerig reconstruct clip.mp4 -o out/rec --stride 2      # video  -> out/rec/clip/
    facerig reconstruct photo.jpg -o out/rec --refine 5 --encoder runs/enc   # own encoder, refined

Photos get exactly the outputs of ``facerig fit`` (``OUT/<stem>/``: ``mesh.obj``, ``overlay.png``,
``landmarks.png``, ``code.json``). A video ``OUT/<stem>/`` gets ``codes.jsonl`` (one JSON line per
processed frame: ``frame``, ``time_s``, ``face`` and, when found, the ``code.json`` fields without
the 468 detections), ``overlay.mp4`` (the face rendered over every processed frame, mp4v) and
``mesh.obj`` (the mean identity and albedo over the frames, neutral expression); ``--frames``
also writes the photo outputs of every frame to ``OUT/<stem>/frame_<n>/`` (n = the source frame number, 5 digits: ``frame_00042``).

Exit status as ``facerig fit``: 0 when every input was reconstructed; for a single input, 2 when it
has no face (a video: in no frame) or cannot be read; for a batch, 1 when some inputs failed
(reported and skipped), 2 when all did; 2 when there is no encoder (the message says how to train one).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from facerig.cli import IMAGE_EXTENSIONS, UserError, batch_inputs, run_batch


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reconstruct", help="reconstruct 3D faces from photos and videos with the trained encoder",
        description="Detect the face, crop it, and regress its graphic code with the MoFA encoder; "
                    "optionally refine with N steps of the fitting energy. Same outputs as `facerig fit`. "
                    "With no input, reconstructs the shipped sample (scikit-image's astronaut()).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Videos: OUT/<stem>/codes.jsonl + overlay.mp4 + mesh.obj (+ frame_<n>/ with --frames, n = source frame, 5 digits). "
               "Exit status: 0 all reconstructed; 2 single input without a face / unreadable, or no encoder; "
               "1 batch with some failures; 2 batch where every input failed.")
    p.add_argument("inputs", nargs="*", metavar="PHOTO|VIDEO|FOLDER",
                   help="photos, videos or folders of them (default: the astronaut sample)")
    p.add_argument("-o", "--out", default="out/reconstruct", help="output folder (default: out/reconstruct)")
    p.add_argument("--encoder", default="default",
                   help="'default' (assets/default_encoder.pt), an encoder .pt file or a `facerig train` run folder")
    p.add_argument("--refine", type=int, default=0,
                   help="refinement: N Levenberg-Marquardt steps of the fitter's photometric stage from the "
                        "encoder's answer (photometric + priors at 80 px, the last of N >= 3 at 160 px; default 0; "
                        "5 steps reach the fit's error on synthetic faces in ~0.4x of its CPU time)")
    p.add_argument("--model", default=None, help="face model of the encoder's codes (default: the encoder's)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--format", choices=("obj", "glb", "ply"), default="obj", help="mesh format (default obj)")
    p.add_argument("--stride", type=int, default=1, help="videos: process every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="videos: at most N processed frames")
    p.add_argument("--frames", action="store_true", help="videos: also write OUT/<stem>/frame_<n>/ per frame (n = source frame number, 5 digits)")
    p.add_argument("--batch-size", type=int, default=16, help="faces per encoder pass (default 16)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1; 0 = torch's default)")
    p.set_defaults(func=run)


def _video(rec, path: Path, folder: Path, args, say) -> int:
    """Reconstruct a video into ``folder``; returns the number of frames with a face."""
    import torch

    from facerig.cli.fit import export_face_mesh, write_outputs
    from facerig.io import atomic_open
    from facerig.video import VideoReader, VideoWriter

    stop = None
    with VideoReader(path, stride=args.stride) as probe:
        fps, source_fps = probe.fps, probe.source_fps
        if args.max_frames is not None:
            stop = args.max_frames * args.stride
    folder.mkdir(parents=True, exist_ok=True)
    found, lines = 0, []
    ids, albs = [], []
    writer = None
    t0 = time.perf_counter()
    try:
        k = 0
        for index, fit, rgb in rec.video(path, stride=args.stride, stop=stop, with_frames=True):
            rec_line = {"frame": int(index), "time_s": round(index / source_fps, 4), "face": fit is not None}
            k += 1
            if fit is not None:
                found += 1
                d = fit.to_dict()
                d.pop("detected_landmarks", None)
                rec_line.update(d)
                ids.append(fit.code.identity[0].detach().cpu())
                albs.append(fit.code.albedo[0].detach().cpu())
                pic = fit.render(rgb, alpha=0.75)
                if args.frames:
                    write_outputs(fit, rgb, folder / f"frame_{index:05d}", args.format)
            else:
                import cv2
                s = min(1.0, 1024 / max(rgb.shape[:2]))
                pic = rgb if s == 1.0 else cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)),
                                                      interpolation=cv2.INTER_AREA)
            if writer is None:
                writer = VideoWriter(folder / "overlay.mp4", fps, (pic.shape[1], pic.shape[0]))
            writer.write(pic)
            lines.append(json.dumps(rec_line))
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.__exit__(RuntimeError, RuntimeError("aborted"), None)
        raise
    if found:
        with atomic_open(folder / "codes.jsonl", "w") as fh:
            fh.write("".join(line + "\n" for line in lines))
        dec = rec.decoder
        ident = torch.stack(ids).mean(0, keepdim=True)
        export_face_mesh(folder / f"mesh.{args.format}", dec.model, ident, torch.zeros(1, dec.model.n_expression),
                         torch.stack(albs).mean(0, keepdim=True))
        say(f"{path}: {found} of {k} frames reconstructed in {time.perf_counter() - t0:.2f} s "
            f"({k / max(time.perf_counter() - t0, 1e-9):.1f} frames/s) -> {folder}")
    else:
        (folder / "overlay.mp4").unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass
    return found


def run(args) -> int:
    import torch

    from facerig.cli.fit import write_outputs
    from facerig.encoder.reconstruct import EncoderNotFoundError, Reconstructor
    from facerig.face import NoFaceError
    from facerig.io import ImageReadError, load_image
    from facerig.video import VIDEO_EXTENSIONS, is_video

    if args.threads is not None and args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.refine < 0:
        raise UserError("--refine must be >= 0")
    if args.stride < 1:
        raise UserError("--stride must be >= 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be >= 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    items, single = batch_inputs(args.inputs, IMAGE_EXTENSIONS | set(VIDEO_EXTENSIONS), "reconstruct",
                                 "photos or videos",
                                 "reconstructing the sample image: scikit-image's astronaut() (public domain)")
    try:
        rec = Reconstructor(args.encoder, args.model, refine=args.refine, device=args.device,
                            batch_size=args.batch_size)
    except EncoderNotFoundError as err:
        raise UserError(str(err)) from None
    except (ValueError, RuntimeError) as err:
        raise UserError(f"cannot load encoder {args.encoder!r}: {err}") from None
    out = Path(args.out)

    def work(stem, src, label, say):
        if isinstance(src, Path) and is_video(src):
            if not _video(rec, src, out / stem, args, say):
                raise NoFaceError(f"no face found in any frame of {label}")
            return
        image = load_image(src) if isinstance(src, Path) else src
        t0 = time.perf_counter()
        fit = rec(image)
        write_outputs(fit, image, out / stem, args.format)
        say(f"{label}: reconstructed in {time.perf_counter() - t0:.3f} s (encoder "
            f"{fit.timings['encode'] * 1000:.1f} ms); landmark error "
            f"{fit.landmark_error_px:.2f} px (68 points), {fit.landmark_error_dense_px:.2f} px (468) "
            f"-> {out / stem}")

    def describe(err, label):
        msg = str(err)
        if isinstance(err, NoFaceError) and "frame" not in msg:
            msg = f"no face found in {label}"
        return msg

    return run_batch(items, work, command="reconstruct", verb="reconstructed", out=out, single=single, unit="input",
                     failure=(NoFaceError, ImageReadError), describe=describe)
