"""``facerig rig``: turn a video of a face into a personalised, animated blendshape rig.

    facerig rig -o out/rig                      # the shipped sample clip (assets/sample_face.mp4)
    facerig rig talk.mp4 -o out/rig             # a video file (mp4v .mp4, MJPG .avi, ...)
    facerig rig frames/ --fps 25 -o out/rig     # a folder of frames (sorted by name)

``OUT/`` receives ``rig.glb`` (personalised neutral + 53 ARKit-named morph targets + the
performance as weight and head-pose animation at the video's frame rate, texture embedded),
``blendshapes/*.obj``, ``texture.png``, ``tracking.csv``, ``preview.mp4`` (original | overlay |
rig) and a still of it ``preview.jpg``, ``report.png``, ``rig.json`` and ``cache/`` (an
interrupted run resumes from it; a rerun with other tracking options reuses its landmarks and
identity fit).

Exit status: 0 done; 2 unreadable video / unsupported codec / no face in the video.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rig", help="video -> personalised face rig (rig.glb with ARKit blendshapes + animation)",
        description="Track a face through a video, fit one identity and albedo on keyframes, carry the "
                    "ARKit blendshapes onto it (deformation transfer), track the per-frame weights, head "
                    "pose and light, and write an animated glTF rig, OBJ blendshapes, a de-lit texture, "
                    "tracking.csv, a side-by-side preview and a report. With no input, runs on the "
                    "shipped synthetic sample clip.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 done; 2 bad input (unreadable video, unsupported codec, no face).")
    p.add_argument("video", nargs="?", metavar="VIDEO|FOLDER",
                   help="a video file or a folder of frames (default: assets/sample_face.mp4)")
    p.add_argument("-o", "--out", default="out/rig", help="output folder (default: out/rig)")
    p.add_argument("--start", type=int, default=0, help="first source frame (default 0)")
    p.add_argument("--stop", type=int, default=None, help="stop before this source frame (default: the end)")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    p.add_argument("--fps", type=float, default=None,
                   help="source frame rate (default: the file's; 30 for a folder of frames)")
    p.add_argument("--keyframes", type=int, default=8, help="keyframes for the identity fit (default 8)")
    p.add_argument("--identity-fit", choices=("average", "joint"), default="average",
                   help="average: mean of independent single-image fits of the keyframes (default); "
                        "joint: one identity fitted jointly on them")
    p.add_argument("--temporal", type=float, default=1.0,
                   help="weight of the temporal smoothness terms (default 1; 0 = independent frames)")
    p.add_argument("--no-smoothing", action="store_true", help="no temporal smoothing of the tracked landmarks (default: a zero-phase Gaussian, 0.1 s; none on eyes and lips)")
    p.add_argument("--photometric", type=int, default=80, metavar="PX",
                   help="per-frame photometric step on a PX-pixel face crop after the landmark solve "
                        "(default 80; 0 = landmarks only, faster)")
    p.add_argument("--correctives", type=int, default=0, metavar="K",
                   help="add K low-rank corrective shapes learned from the landmark residuals (default 0)")
    p.add_argument("--texture-size", type=int, default=256, help="texture.png side in texels (default 256; 0 = none)")
    p.add_argument("--no-preview", action="store_true", help="skip preview.mp4 / preview.jpg")
    p.add_argument("--no-resume", action="store_true", help="ignore OUT/cache and recompute everything")
    p.add_argument("--model", default="default", help="generic face model (default: the shipped one)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from facerig.cli import UserError
    from facerig.face import NoFaceError
    from facerig.model import ModelFileError
    from facerig.rig import RigOptions, build_rig
    from facerig.video import VideoError

    if args.threads and args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.video is not None and not Path(args.video).exists():
        raise UserError(f"{args.video}: no such file or folder")
    try:
        opts = RigOptions(keyframes=args.keyframes, identity_fit=args.identity_fit, smoothing=not args.no_smoothing,
                          w_temporal=args.temporal, photo_size=args.photometric,
                          texture_size=args.texture_size, preview=not args.no_preview, correctives=args.correctives)
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.video is None:
        print("building a rig from the sample clip: assets/sample_face.mp4 (synthetic, made by "
              "tools/make_sample_video.py from the default model)")
    out = Path(args.out)
    try:
        rig = build_rig(args.video, out, model=args.model, start=args.start, stop=args.stop, stride=args.stride,
                        fps=args.fps, options=opts, device=args.device, resume=not args.no_resume,
                        progress=not args.quiet, log=print)
    except (VideoError, NoFaceError, ModelFileError) as err:
        raise UserError(str(err)) from None
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    m, t = rig.metrics, rig.timings
    fps = f"{m['tracking_fps']:.1f} frames/s" if m.get("tracking_fps") else "from the cache"
    print(f"tracked {m['frames']} frames ({m['faces_found']} with a face) in {t['landmarks'] + t['tracking']:.1f} s "
          f"(landmarks {m['landmarks_fps']:.1f} frames/s, fitting {fps}); identity fit {t['identity']:.1f} s")
    print(f"landmark error {m['landmark_error_px']:.2f} px; jitter {m['jitter_landmarks_px']:.3f} px/frame² "
          f"(detections {m['jitter_detected_px']:.3f}), weights {m['jitter_weights']:.4f}/frame²")
    if "landmark_error_correctives_px" in m:
        print(f"{args.correctives} corrective shapes: 468-point error {m['landmark_error_rig_px']:.2f} -> "
              f"{m['landmark_error_correctives_px']:.2f} px")
    names = sorted(rig.files)
    print(f"wrote {out}/: " + ", ".join(Path(rig.files[k]).name + ("/" if k == "blendshapes" else "") for k in names)
          + f" in {t['total']:.1f} s")
    if m["faces_found"] < m["frames"]:
        print(f"note: no face in {m['frames'] - m['faces_found']} frames (marked in tracking.csv, animation "
              "interpolated)", file=sys.stderr)
    return 0
