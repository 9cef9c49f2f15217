#!/usr/bin/env python
"""Benchmark facerig.render: forward and forward+backward of a full render on icospheres.

Pipeline timed (what a face fit does per iteration): camera projection -> rasterize ->
per-vertex SH shading (vertex normals, 9x3 SH light) -> interpolate -> composite over a
background -> MSE loss against a target image; "fwd+bwd" adds ``loss.backward()`` to the vertex
positions, colours and light. "+AA" adds the analytic antialiasing pass (silhouette gradients).

Usage:
    python tools/bench_render.py --quick            # the two target configurations
    python tools/bench_render.py                    # 5k/20k/82k triangles x 224/512/1024 x B 1/8
    python tools/bench_render.py --tris 20480 --sizes 224 --batch 1 --runs 50 --device cuda

Prints a markdown table (median of ``--runs`` runs after warm-up) and saves a plot
(``--plot``). Peak memory: CUDA ``max_memory_allocated``; CPU the peak increase of the
process's resident set size while the configuration runs (sampled every millisecond).
If pytorch3d is importable its ``rasterize_meshes`` (bin_size 0 and None) is timed on the same
meshes; otherwise the reference figures measured on a machine of this kind are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

import facerig.render as R
from facerig.timing import time_runs as _time_runs

SUBDIV = {1280: 3, 5120: 4, 20480: 5, 81920: 6}
# pytorch3d 0.7.9 (source build), torch 2.13 CPU, 2 threads, hard rasterisation, 1 face/pixel,
# 224 x 224, measured on a machine of this kind (ms): forward, backward
P3D_REFERENCE = {(5120, 224): (600.0, 520.0), (20480, 224): (2500.0, 520.0)}
P3D_REFERENCE_RANGE = {(5120, 224): "~600 + ~520", (20480, 224): "2,300-2,700 + ~520"}
TARGETS = {(20480, 224, 1): 15.0, (81920, 512, 1): 100.0}


class RssPeak:
    """Peak increase of the resident set size (bytes) while the context is active (Linux)."""

    def __init__(self, interval=0.001):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self):
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        except OSError:
            return 0

    def __enter__(self):
        self.base = self._rss()
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def delta(self):
        return self.peak - self.base


def make_scene(n_tris, size, batch, device, dtype=torch.float32):
    v, f = R.icosphere(SUBDIV[n_tris], dtype=dtype, device=device)
    g = torch.Generator(device="cpu").manual_seed(0)
    aa = (torch.rand(batch, 3, generator=g, dtype=dtype) - 0.5) * 0.6
    Rm = R.axis_angle_to_matrix(aa).to(device)
    t = torch.tensor([0.0, 0.0, 3.0], dtype=dtype, device=device).expand(batch, 3)
    verts = R.transform_points(v[None].expand(batch, -1, -1), Rm, t).contiguous()
    colors = (0.5 + 0.4 * torch.rand(batch, v.shape[0], 3, generator=g, dtype=dtype)).to(device)
    gamma = torch.zeros(batch, 9, 3, dtype=dtype, device=device)
    gamma[:, 0] = 0.9
    gamma[:, 1:4] = 0.2
    cam = R.PerspectiveCamera(float(size), float(size), size / 2.0, size / 2.0)
    bg = torch.full((batch, size, size, 3), 0.3, dtype=dtype, device=device)
    target = torch.full((batch, size, size, 3), 0.5, dtype=dtype, device=device)
    return verts, f, colors, gamma, cam, bg, target


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_runs(fn, runs, device, warmup=3):
    """Median wall-clock ms and median process CPU ms (all threads) over ``runs`` runs."""
    t = _time_runs(fn, runs, warmup=warmup, sync=lambda: sync(device))
    return t.median * 1e3, t.median_cpu * 1e3


def bench_config(n_tris, size, batch, device, runs, with_aa):
    verts, faces, colors, gamma, cam, bg, target = make_scene(n_tris, size, batch, device)
    adj = R.face_adjacency(faces)
    leaves = [verts.clone().requires_grad_(True), colors.clone().requires_grad_(True), gamma.clone().requires_grad_(True)]

    def forward(aa, grad):
        v, c, g = leaves if grad else (verts, colors, gamma)
        out = R.render_mesh(v, faces, cam, (size, size), colors=c, sh_coeffs=g, background=bg,
                            antialias=aa, adjacency=adj)
        return (out.image - target).square().mean()

    def fwd():
        with torch.no_grad():
            forward(False, False)

    def fwd_bwd(aa=False):
        for x in leaves:
            x.grad = None
        forward(aa, True).backward()

    res = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with RssPeak() as mem:
        res["fwd"], _ = time_runs(fwd, runs, device)
        res["fwd_bwd"], res["fwd_bwd_cpu"] = time_runs(fwd_bwd, runs, device)
    if with_aa:
        res["fwd_bwd_aa"], _ = time_runs(lambda: fwd_bwd(True), runs, device)
    res["mem_mb"] = ((torch.cuda.max_memory_allocated() - base) if device.type == "cuda" else mem.delta) / 2**20
    with torch.no_grad():
        vp = cam.project(verts)
        fr = R.rasterize(vp, faces, (size, size))
        res["coverage"] = float(fr.mask.float().mean())
    return res


def bench_pytorch3d(n_tris, size, batch, device, runs):
    """Time pytorch3d's rasterize_meshes on the same mesh (only when pytorch3d is importable)."""
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    verts, faces, *_ , cam, _, _ = make_scene(n_tris, size, batch, device)
    vp = cam.project(verts)
    s = size / 2.0
    ndc = torch.stack([-(vp[..., 0] - s) / s, -(vp[..., 1] - s) / s, vp[..., 2]], -1)  # +x left, +y up
    out = {}
    for bin_size in (0, None):
        def fwd_bwd():
            v = ndc.clone().requires_grad_(True)
            m = Meshes(verts=list(v), faces=[faces] * batch)
            p2f, zbuf, bary, dists = rasterize_meshes(m, image_size=size, blur_radius=0.0, faces_per_pixel=1, bin_size=bin_size)
            (bary.sum() + zbuf.sum()).backward()

        def fwd():
            with torch.no_grad():
                m = Meshes(verts=list(ndc), faces=[faces] * batch)
                rasterize_meshes(m, image_size=size, blur_radius=0.0, faces_per_pixel=1, bin_size=bin_size)

        out[bin_size] = (time_runs(fwd, max(3, runs // 4), device, warmup=1)[0], time_runs(fwd_bwd, max(3, runs // 4), device, warmup=1)[0])
    return out


def save_plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, ((dev, size, batch), pts) in enumerate(sorted(rows.items())):
        pts = sorted(pts)
        color = f"C{n % 10}"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=f"{dev} {size}² B={batch}")
        if dev == "cpu":  # CPU time (summed over threads): robust to other load on the machine
            ax.plot([p[0] for p in pts], [p[2] for p in pts], marker=".", ls="--", color=color, alpha=0.6)
    for (tris, size, batch), ms in TARGETS.items():
        ax.scatter([tris], [ms], marker="*", s=150, color="k", zorder=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("triangles")
    ax.set_ylabel("forward+backward median (ms)")
    ax.set_title("facerig.render: wall (solid), CPU time (dashed); stars: CPU targets", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="only the target configurations (20k@224, 82k@512, B=1)")
    p.add_argument("--tris", type=int, nargs="+", default=[5120, 20480, 81920], choices=sorted(SUBDIV))
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 1024])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--runs", type=int, default=20, help="timed runs per measurement (median reported)")
    p.add_argument("--device", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda when present)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the CPU runs")
    p.add_argument("--no-aa", action="store_true", help="skip the fwd+bwd with antialiasing column")
    p.add_argument("--plot", default="bench_render.png", help="where to save the plot ('' = no plot)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    configs = [(20480, 224, 1), (81920, 512, 1)] if args.quick else [
        (t, s, b) for t in args.tris for s in args.sizes for b in args.batch
    ]
    try:
        import pytorch3d  # noqa: F401

        have_p3d = True
    except Exception:  # noqa: BLE001
        have_p3d = False
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, devices {devices}, runs {args.runs}, "
          f"pytorch3d {'available' if have_p3d else 'not importable'}")
    print("Pipeline: project, rasterize, vertex normals, SH shading, interpolate, composite, MSE loss.")
    print("Wall-clock medians; 'CPU-time' = process CPU time summed over threads (robust to other load).\n")
    head = "| device | triangles | image | B | coverage | fwd ms | fwd+bwd ms | fwd+bwd CPU-time ms |" + ("" if args.no_aa else " fwd+bwd+AA ms |") + " peak mem MB | vs pytorch3d (fwd+bwd) | target |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    plot_rows = {}
    for dev in devices:
        device = torch.device(dev)
        for tris, size, batch in configs:
            r = bench_config(tris, size, batch, device, args.runs, not args.no_aa)
            ratio = ""
            if have_p3d:
                try:
                    p3 = bench_pytorch3d(tris, size, batch, device, args.runs)
                    ratio = ", ".join(f"bin {k}: {v[1]:.0f} ms ({v[1] / r['fwd_bwd']:.0f}x)" for k, v in p3.items())
                except Exception as e:  # noqa: BLE001
                    ratio = f"pytorch3d failed: {type(e).__name__}"
            elif dev == "cpu" and batch == 1 and (tris, size) in P3D_REFERENCE:
                fwd, bwd = P3D_REFERENCE[(tris, size)]
                ratio = f"ref {P3D_REFERENCE_RANGE[(tris, size)]} ms: {(fwd + bwd) / r['fwd_bwd']:.0f}x"
            target = TARGETS.get((tris, size, batch)) if dev == "cpu" else None
            tgt = "" if target is None else (f"<= {target:.0f} ms: " + ("met" if r["fwd_bwd"] <= target else f"missed x{r['fwd_bwd'] / target:.1f}"))
            aa = "" if args.no_aa else f" {r['fwd_bwd_aa']:.1f} |"
            print(f"| {dev} | {tris:,} | {size}² | {batch} | {r['coverage']:.2f} | {r['fwd']:.1f} | {r['fwd_bwd']:.1f} | {r['fwd_bwd_cpu']:.1f} |{aa} "
                  f"{r['mem_mb']:.0f} | {ratio} | {tgt} |", flush=True)
            plot_rows.setdefault((dev, size, batch), []).append((tris, r["fwd_bwd"], r["fwd_bwd_cpu"]))
    if not have_p3d:
        print("\npytorch3d is not importable here; reference (pytorch3d 0.7.9 from source, torch 2.13 CPU, 2 threads,"
              " hard rasterisation, 1 face/pixel, 224²): 20,480 triangles ~2,300-2,700 ms forward + ~520 ms backward;"
              " 5,120 triangles ~600 ms + ~520 ms. Ratios above use 2,500+520 and 600+520 ms.")
    if args.plot:
        save_plot(plot_rows, args.plot)
        print(f"plot saved to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
