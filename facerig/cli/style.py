"""Command-line front end of :mod:`facerig.style` (``facerig style ...``).

    facerig style CONTENT STYLE [STYLE ...] -o OUT.png [--method flexible|gatys|fast] [--size 512]
                  [--mix 0.7,0.3] [--intensity 1] [--layer-weights conv1_2=1,conv4_3=0.5]
                  [--preserve-colors] [--photorealistic] [--mask MASK.png]
    facerig style CONTENT -o OUT.png --method fast --model fast_style.pt
    facerig style VIDEO STYLE -o OUT.mp4 [--temporal 1]
    facerig style --rig RIG_DIR STYLE [-o OUT_DIR]

Images: a file or a bundled picture (``skimage:NAME``, ``mpl:FILE``). Outputs are written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def _parse_floats(text: str, what: str) -> list[float]:
    from facerig.cli import UserError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise UserError(f"--{what}: expected comma-separated numbers, e.g. 0.7,0.3; got {text!r}") from err


def _layer_weights(text: str | None):
    from facerig.cli import UserError
    from facerig.style import STYLE_LAYERS

    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, _, val = item.partition("=")
        name = name.strip()
        if name not in STYLE_LAYERS:
            raise UserError(f"--layer-weights: unknown layer {name!r}; use names from {', '.join(STYLE_LAYERS)} "
                            "as NAME=WEIGHT,...")
        try:
            out[name] = float(val)
        except ValueError as err:
            raise UserError(f"--layer-weights: {item!r} is not NAME=WEIGHT") from err
    return out


def _image(source: str, size: int | None, what: str):
    from facerig.cli import UserError
    from facerig.style import load_image

    try:
        return load_image(source, size)
    except (ValueError, OSError) as err:
        raise UserError(f"{what}: {err}") from err


def _run(args) -> int:
    import torch

    from facerig.cli import UserError
    from facerig.io import write_image
    from facerig.style import METHODS, stylize
    from facerig.video import is_video

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.method not in METHODS:
        raise UserError(f"--method: expected one of {', '.join(METHODS)}")
    if args.size is not None and args.size < 16:
        raise UserError(f"--size: expected at least 16 px, got {args.size}")
    if args.intensity <= 0:
        raise UserError(f"--intensity: expected a number > 0, got {args.intensity}")
    inputs = list(args.inputs)
    rig = args.rig
    if rig is None and not inputs:
        raise UserError("give a CONTENT image or video (and a STYLE), or --rig RIG_DIR STYLE")
    content_src = None if rig else inputs.pop(0)
    style_srcs = inputs
    if args.method != "fast" and not style_srcs:
        raise UserError(f"STYLE: the {args.method} method needs a style image after the content "
                        "(a file or skimage:NAME)")
    if args.method == "fast" and not args.model:
        raise UserError("--model: the fast method needs a network trained for the style "
                        "(python tools/train_style.py fast --style STYLE -o FILE.pt)")
    if args.model and not Path(args.model).is_file():
        raise UserError(f"--model: {args.model} does not exist")
    mix = _parse_floats(args.mix, "mix") if args.mix else None
    if mix is not None and len(mix) != len(style_srcs):
        raise UserError(f"--mix: {len(mix)} weights for {len(style_srcs)} styles")
    if mix is not None and (min(mix) < 0 or sum(mix) <= 0):
        raise UserError("--mix: weights must be >= 0 with a positive sum")
    kwargs = dict(mix=mix, intensity=args.intensity, layer_weights=_layer_weights(args.layer_weights),
                  preserve_colors=args.preserve_colors, photorealism=args.photorealistic,
                  iterations=args.iterations, steps=args.steps, model=args.model, grad_size=args.grad_size)
    styles = [_image(s, None, "STYLE") for s in style_srcs]  # resized to the content's size by the energy
    style = (styles[0] if len(styles) == 1 else styles) if styles else None
    try:
        if rig is not None:
            from facerig.style.face import stylize_rig

            if not Path(rig).is_dir():
                raise UserError(f"--rig: {rig} is not a folder (give the output folder of `facerig rig`)")
            r = stylize_rig(rig, style, args.output, method=args.method, **kwargs)
            print(f"stylised the texture of {rig} with {args.method} in {r['seconds']:.2f} s; wrote {r['texture']}, "
                  f"{r['rig']}, {r['preview']}")
            return 0
        if is_video(content_src):
            from facerig.style.video import stylize_video

            if not args.output:
                raise UserError("-o: give the output video (.mp4 or .avi)")
            r = stylize_video(content_src, style, args.output, method=args.method, size=args.size or 256,
                              temporal=args.temporal, stop=args.frames, progress=sys.stderr.isatty(), **kwargs)
            print(f"stylised {r['frames']} frames with {args.method} ({r['per_frame']:.2f} s per frame); "
                  f"wrote {r['path']}")
            return 0
        if not args.output:
            raise UserError("-o: give the output image (.png or .jpg)")
        content = _image(content_src, args.size or 512, "CONTENT")
        mask = None
        if args.mask:
            from facerig.style import resize_image

            mask = resize_image(_image(args.mask, None, "--mask"), tuple(content.shape[:2])).mean(-1)
        res = stylize(content, style, args.method, mask=mask, progress=args.method == "gatys" and sys.stderr.isatty(), **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    write_image(args.output, res.image)
    e = res.energy
    energy = (f"; energy {float(e['total'][0]):.3f} (content {float(e['content'][0]):.3f}, "
              f"style {float(e['style'][0]):.3f}, tv {float(e['tv'][0]):.3f})") if e else ""
    h, w = res.image.shape[:2]
    print(f"stylised {content_src} ({w}x{h}) with {args.method} in {res.seconds:.2f} s{energy}; wrote {args.output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``facerig style`` to the CLI."""
    p = subparsers.add_parser("style", help="neural style transfer: images, videos, a rig's face texture",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="CONTENT (image or video) then STYLE image(s); with --rig: STYLE(s)")
    p.add_argument("-o", "--output", help="output image / video / folder (--rig; default RIG_DIR/style)")
    p.add_argument("--method", default="flexible", help="flexible (default), gatys or fast")
    p.add_argument("--rig", help="stylise the texture of this rig folder (written by `facerig rig`)")
    p.add_argument("--size", type=int, help="longer side of the result in px (default: images 512, videos 256; "
                   "--rig: the texture's size)")
    p.add_argument("--mix", help="weights of several styles, e.g. 0.7,0.3")
    p.add_argument("--intensity", type=float, default=1.0, help="style strength (default 1)")
    p.add_argument("--layer-weights", help="per-layer style weights NAME=W,... (conv1_2, conv2_2, conv3_3, conv4_3)")
    p.add_argument("--preserve-colors", action="store_true", help="keep the content's colours")
    p.add_argument("--photorealistic", action="store_true", help="edge-preserving smoothing guided by the content")
    p.add_argument("--mask", help="grayscale image: where the style applies (white) or not (black)")
    p.add_argument("--iterations", type=int, default=200, help="gatys: L-BFGS iterations (default 200)")
    p.add_argument("--steps", type=int, help="flexible: learned steps used (default all)")
    p.add_argument("--grad-size", type=int, help="flexible: longer side of the gradient evaluation (faster)")
    p.add_argument("--model", help="fast: the style's network (.pt); flexible: another solver than the shipped one")
    p.add_argument("--temporal", type=float, default=1.0, help="video: temporal consistency weight (0: off)")
    p.add_argument("--frames", type=int, help="video: stop after this source frame")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.set_defaults(func=_run)
