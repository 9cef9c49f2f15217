#!/usr/bin/env python
"""Timings of the face model operations (CPU): shape(), landmarks(), albedo(), subdivide(),
sample(), rig export. Prints a table; run on a quiet machine for stable numbers.

    .venv/bin/python tools/bench_model.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from facerig.model import export_model_rig, load_model
from facerig.timing import time_runs


def timeit(fn, repeat):
    """Median wall-clock ms of ``repeat`` runs after one warm-up."""
    return time_runs(fn, repeat, warmup=1).median * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    t = time.perf_counter()
    model = load_model("default")
    rows.append(("load_model('default')", "-", (time.perf_counter() - t) * 1e3))
    g = torch.Generator().manual_seed(0)
    for name, m in (("default (468 v)", model), ("default.subdivide(2) (7257 v)", model.subdivide(2))):
        for B in (1, 64):
            a = torch.randn(B, m.n_identity, generator=g) * m.identity_std
            w = torch.rand(B, m.n_expression, generator=g)
            b = torch.randn(B, m.n_albedo, generator=g) * m.albedo_std
            rows.append((f"{name} shape()", B, timeit(lambda: m.shape(a, w), args.repeat)))
            v = m.shape(a, w)
            rows.append((f"{name} landmarks()", B, timeit(lambda: m.landmarks(v), args.repeat)))
            rows.append((f"{name} albedo()", B, timeit(lambda: m.albedo(b), args.repeat)))
            a.requires_grad_(True)
            w.requires_grad_(True)
            rows.append((f"{name} shape()+backward", B,
                         timeit(lambda: m.shape(a, w).square().sum().backward(), args.repeat)))
    rows.append(("default.subdivide(1)", "-", timeit(lambda: model.subdivide(1), max(3, args.repeat // 4))))
    rows.append(("default.subdivide(2)", "-", timeit(lambda: model.subdivide(2), max(3, args.repeat // 4))))
    rows.append(("default.sample(256)", 256, timeit(lambda: model.sample(256, g), args.repeat)))
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("export_model_rig(.glb, 53 targets)", "-",
                     timeit(lambda: export_model_rig(model, Path(tmp) / "rig.glb"), max(3, args.repeat // 4))))
        rows.append(("export_model_rig(OBJ folder)", "-",
                     timeit(lambda: export_model_rig(model, Path(tmp) / "bs"), 3)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'operation':44s} {'batch':>6s} {'median ms':>10s}")
    for op, B, ms in rows:
        print(f"{op:44s} {str(B):>6s} {ms:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
