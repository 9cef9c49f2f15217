"""Benchmark the three style-transfer solvers on content/style pairs never used in training.

    python tools/bench_style.py [--sizes 256,512] [--iters 50,100,200] [--threads 2]
        [--fast-dir DIR] [--model assets/style_flexible.pt] [--pairs-512 1] [--grid assets/readme_style.jpg]

For every pair (contents :data:`~facerig.style.images.HELDOUT_CONTENT` x styles
:data:`~facerig.style.images.HELDOUT_STYLES`, resized so the longer side is the size) it measures the
total energy (content + style + TV, :data:`~facerig.style.energy.DEFAULT_WEIGHTS`, of the clamped
result) and the wall time of: Gatys (L-BFGS from the content; the 50 / 100 iteration rows are the
same run's snapshots, timed at those iterations), the fast network of the style (``fast_<style>.pt``
in ``--fast-dir``, trained by ``tools/train_style.py fast``; skipped if absent) and the flexible
solver at each step count. It prints a table (means over the pairs; the energy ratio and speed-up
are per-pair ratios to Gatys-200, averaged) and writes a picture grid. Results are cached in
``--cache`` (JSON + PNGs) so a run can be resumed or extended; ``--fresh`` ignores the cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facerig.io import atomic_write, write_image  # noqa: E402
from facerig.style import get_energy, load_fast, load_flexible, load_image, resize_image  # noqa: E402
from facerig.style.gatys import gatys  # noqa: E402
from facerig.style.images import HELDOUT_CONTENT, HELDOUT_STYLES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _name(src: str) -> str:
    return src.split(":")[-1].split(".")[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--iters", default="50,100,200")
    p.add_argument("--styles", default=",".join(HELDOUT_STYLES[:2]))
    p.add_argument("--contents", default=",".join(HELDOUT_CONTENT))
    p.add_argument("--pairs-512", type=int, default=1, help="pairs run at sizes > 256 (Gatys is slow)")
    p.add_argument("--model", default=str(REPO / "assets" / "style_flexible.pt"))
    p.add_argument("--fast-dir", default=str(REPO / "assets"))
    p.add_argument("--flex-steps", default="", help="step counts (default 1..K)")
    p.add_argument("--grad-size", type=int, default=0, help="also run flexible with this gradient size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default="/tmp/facerig_bench_style")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--skip-gatys", action="store_true")
    p.add_argument("--grid", default=str(REPO / "assets" / "readme_style.jpg"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    db_path = cache / "results.json"
    db = {} if args.fresh or not db_path.is_file() else json.loads(db_path.read_text())

    def save():
        atomic_write(db_path, json.dumps(db, indent=1))

    E = get_energy()
    sizes = [int(s) for s in args.sizes.split(",")]
    iters = sorted(int(i) for i in args.iters.split(","))
    pairs = [(c, s) for c in args.contents.split(",") for s in args.styles.split(",")]
    solver = load_flexible(args.model) if Path(args.model).is_file() else None
    K = solver.n_steps if solver is not None else 0
    flex_steps = [int(k) for k in args.flex_steps.split(",")] if args.flex_steps else list(range(1, K + 1))
    for size in sizes:
        for pi, (csrc, ssrc) in enumerate(pairs):
            if size > 256 and pi >= args.pairs_512:
                continue
            key = f"{size}|{_name(csrc)}|{_name(ssrc)}"
            c = load_image(csrc, size)[None]
            s = load_image(ssrc, size)
            tg = E.targets(c, s)

            def energy(y):
                with torch.no_grad():
                    return float(E(y.clamp(0, 1), tg)[0])

            def record(method, y, seconds):
                db[f"{key}|{method}"] = {"energy": energy(y), "seconds": seconds}
                write_image(cache / f"{key.replace('|', '_')}_{method}.png", y[0])
                save()
                print(f"{size} {_name(csrc)}/{_name(ssrc)} {method}: energy {db[f'{key}|{method}']['energy']:.3f} "
                      f"in {seconds:.3f} s", flush=True)

            if f"{key}|content" not in db:
                record("content", c, 0.0)
            if not args.skip_gatys and any(f"{key}|gatys-{i}" not in db for i in iters):
                snaps = {}
                t0 = time.perf_counter()

                def cb(k, y, e):
                    if k in iters:
                        snaps[k] = (y.clone(), time.perf_counter() - t0)

                gatys(E, tg, iterations=iters[-1], callback=cb)
                for k, (y, sec) in snaps.items():
                    record(f"gatys-{k}", y, sec)
            fast_path = Path(args.fast_dir) / f"fast_{_name(ssrc)}.pt"
            if fast_path.is_file():
                net = load_fast(fast_path)
                with torch.no_grad():
                    net(c)  # warm-up
                    t0 = time.perf_counter()
                    y = net(c)
                    record("fast", y, time.perf_counter() - t0)
            if solver is not None:
                variants = [(f"flexible-{k}", k, None) for k in flex_steps]
                if args.grad_size:
                    variants += [(f"flexible-{k}-g{args.grad_size}", k, args.grad_size) for k in flex_steps]
                solver.solve(E, tg, steps=1)  # warm-up
                for name, k, gs in variants:
                    t0 = time.perf_counter()
                    y = solver.solve(E, tg, steps=k, grad_size=gs)
                    record(name, y, time.perf_counter() - t0)
    # table
    methods = []
    for k in db:
        m = k.split("|", 3)[3]
        if m not in methods:
            methods.append(m)
    print(f"\nstyle transfer on held-out pairs ({torch.get_num_threads()} threads)")
    print(f"{'size':>5} {'method':<22} {'pairs':>5} {'energy':>9} {'x Gatys-200':>11} {'time s':>9} {'speed-up':>9}")
    for size in sizes:
        for m in methods:
            rows = []
            for csrc, ssrc in pairs:
                key = f"{size}|{_name(csrc)}|{_name(ssrc)}"
                r, ref = db.get(f"{key}|{m}"), db.get(f"{key}|gatys-{iters[-1]}")
                if r is not None:
                    rows.append((r, ref))
            if not rows:
                continue
            n = len(rows)
            e = sum(r["energy"] for r, _ in rows) / n
            t = sum(r["seconds"] for r, _ in rows) / n
            withref = [(r, ref) for r, ref in rows if ref is not None]
            ratio = sum(r["energy"] / ref["energy"] for r, ref in withref) / len(withref) if withref else float("nan")
            sp = (sum(ref["seconds"] / max(r["seconds"], 1e-9) for r, ref in withref) / len(withref)
                  if withref and m != "content" else float("nan"))
            print(f"{size:>5} {m:<22} {n:>5} {e:>9.3f} {ratio:>11.2f} {t:>9.3f} {sp:>9.1f}")
    # grid: rows = pairs at the first size; columns = content, style, then methods
    size = sizes[0]
    cols = ["content"] + [m for m in (f"gatys-{iters[0]}", f"gatys-{iters[-1]}", "fast",
                                      f"flexible-{flex_steps[-1]}" if flex_steps else "") if m]
    rows = []
    for csrc, ssrc in pairs:
        key = f"{size}|{_name(csrc)}|{_name(ssrc)}".replace("|", "_")
        tiles = []
        for m in cols:
            f = cache / f"{key}_{m}.png"
            tiles.append(resize_image(load_image(f), (size, size)) if f.is_file() else torch.zeros(size, size, 3))
        tiles.insert(1, resize_image(load_image(ssrc, size), (size, size)))
        rows.append(torch.cat(tiles, 1))
    if args.grid:
        write_image(args.grid, torch.cat(rows, 0))
        print(f"grid (rows: pairs; columns: content, style, {', '.join(cols[1:])}) -> {args.grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
