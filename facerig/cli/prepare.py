"""``facerig prepare``: photos and videos -> cached face crops + landmarks for encoder training.

    facerig prepare photos/ clip.mp4 -o data/faces             # 224 px JPEG crops, every frame
    facerig prepare clips/ -o data/faces --stride 10 --size 128 # every 10th frame, 128 px crops
    facerig prepare photos/ -o data/fitted --fit                # + the fitter's code per crop

The folder holds ``crops/<shard>/<n>.jpg``, ``shards/<shard>.npz`` (landmarks, crop camera,
source, fitter codes) and ``index.jsonl`` (one line per finished shard); see
:mod:`facerig.encoder.data`. Running the same command again resumes an interrupted run and
skips everything already prepared. Photos and frames without a face are skipped and counted.

Exit status: 0 when every input could be read (faceless ones included); 1 when some inputs were
unreadable (reported, skipped); 2 on bad arguments or when every input was unreadable.
"""

from __future__ import annotations

import argparse
import sys

from facerig.cli import UserError, batch_status


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare", help="cache face crops + landmarks of photos and videos for encoder training",
        description="Detect the largest face of every photo and sampled video frame, cut a square crop "
                    "around its MediaPipe landmarks and store the crop, the 468 landmarks (crop pixels) and "
                    "the crop camera, resumably. Optionally store the optimisation fitter's code (--fit).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Focal length: photos and videos of unknown focal get f = FOCAL_FACTOR x max(H, W) pixels "
               "(2.5, as `facerig fit`), principal point at the image centre; the crop camera is that "
               "camera mapped into the crop. Exit status: 0 ok; 1 some inputs unreadable; 2 bad arguments "
               "or every input unreadable.")
    p.add_argument("sources", nargs="+", metavar="SRC", help="photos, videos (.mp4 .avi ...) or folders of them")
    p.add_argument("-o", "--out", required=True, metavar="DATA", help="output folder (resumed when it exists)")
    p.add_argument("--size", type=int, default=224, help="crop side in pixels (default 224)")
    p.add_argument("--margin", type=float, default=0.25,
                   help="crop margin, a fraction of the landmarks' box on each side (default 0.25)")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg", help="crop file format (default jpg)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality 1-100 (default 95)")
    p.add_argument("--stride", type=int, default=1, help="keep every N-th video frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="at most N sampled frames per video")
    p.add_argument("--focal-factor", type=float, default=2.5,
                   help="focal of the source camera in units of max(H, W) (default 2.5, as `facerig fit`)")
    p.add_argument("--fit", action="store_true",
                   help="also fit the face model to every crop's photo and store its code (about 1 s per crop)")
    p.add_argument("--iterations", type=int, default=None,
                   help="photometric iterations of --fit (default: the fitter's 40)")
    p.add_argument("--model", default="default", help="face model of --fit (default: default)")
    p.add_argument("--shard-size", type=int, default=256, help="photos or frames per shard (default 256)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for --fit (default 1; 0 = torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.threads and args.threads > 0:
        import torch
        torch.set_num_threads(args.threads)
    if not 1 <= args.quality <= 100:
        raise UserError("--quality must be in 1..100")
    if args.iterations is not None and args.iterations < 0:
        raise UserError("--iterations must be >= 0")
    from facerig.encoder.data import list_inputs, prepare_faces

    try:
        inputs = list_inputs(args.sources)
    except FileNotFoundError as err:
        raise UserError(str(err).replace("sources: ", "")) from None
    if not inputs:
        raise UserError("no photos or videos in " + ", ".join(args.sources))
    fit_options = None
    if args.fit and args.iterations is not None:
        from facerig.face import FitOptions
        fit_options = FitOptions(photo_iterations=args.iterations)
    try:
        summary = prepare_faces(inputs, args.out, size=args.size, margin=args.margin, image_format=args.format,
                                quality=args.quality, stride=args.stride, max_frames=args.max_frames,
                                focal_factor=args.focal_factor, fit=args.fit, model=args.model,
                                fit_options=fit_options, shard_size=args.shard_size, progress=not args.quiet,
                                log=lambda m: print(m, file=sys.stderr))
    except ValueError as err:
        raise UserError(str(err)) from None
    for line in summary.lines(args.out):
        print(line)
    n_bad = len(summary.unreadable)
    return batch_status(len(inputs) - summary.skipped - n_bad, n_bad)
