"""The ``facerig`` command line: a thin layer over the public Python API.

Each sub-command lives in its own module of this package and defines
``register(subparsers)``, which adds an ``argparse`` sub-parser whose ``func`` default is the
function to run (it returns the process exit status). Modules are discovered automatically,
so adding a command means adding one file. Heavy imports happen inside the command functions
so that ``facerig --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from facerig import __version__

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm"}
"""Suffixes (lower case) of the photo files the commands pick from folders."""


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it without a traceback.

    ``exit_code`` is the process exit status (2 for bad input, as argparse uses).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def collect_files(inputs, extensions, command: str, what: str) -> list:
    """Expand CLI inputs: files are kept as given, folders give their files whose suffix (any case) is
    in ``extensions`` (sorted by name; a warning naming ``what`` when a folder has none). A missing
    path raises :class:`UserError`. Returns a list of ``pathlib.Path``."""
    exts = {e.lower() for e in extensions}
    files = []
    for s in inputs:
        path = Path(s)
        if path.is_dir():
            found = sorted(q for q in path.iterdir() if q.is_file() and q.suffix.lower() in exts)
            if not found:
                print(f"facerig {command}: warning: no {what} in folder {path}", file=sys.stderr)
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return files


def batch_status(n_done: int, n_failed: int) -> int:
    """The exit status of a batch command: 0 nothing failed, 1 some inputs failed, 2 all failed."""
    if n_failed:
        return 2 if not n_done else 1
    return 0


def batch_summary(done: list, failures: list, n_inputs: int, out, verb: str) -> int:
    """Print a batch's summary (when there were several inputs or any failure) and return the exit
    status (:func:`batch_status`). ``failures`` holds ``(label, message)`` pairs."""
    if n_inputs > 1 or failures:
        print(f"summary: {len(done)} {verb}, {len(failures)} failed, {n_inputs} inputs; outputs in {out}")
        for label, err in failures:
            print(f"  failed: {err}" if label in err else f"  failed: {label}: {err}")
    return batch_status(len(done), len(failures))


def unique_stems(paths) -> list:
    """Output folder names for inputs: each path's stem, with ``_2``, ``_3``... for repeated stems."""
    seen: dict = {}
    out = []
    for p in paths:
        stem = p.stem if isinstance(p, Path) else str(p)
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}_{n + 1}")
    return out


def batch_inputs(inputs, extensions, command: str, what: str, sample_note: str):
    """The inputs of a batch command: ``(items, single)`` with ``items`` a list of ``(stem, source)``.

    With ``inputs``: the files of :func:`collect_files` (``what`` names them in messages; none ->
    :class:`UserError`), stems from :func:`unique_stems`; ``single`` when one file was named. Without:
    the shipped sample photo (scikit-image's ``astronaut()``, an ``(H, W, 3)`` uint8 array; stem
    "astronaut"), announcing it with ``sample_note``."""
    if inputs:
        paths = collect_files(inputs, extensions, command, what)
        if not paths:
            raise UserError(f"no {what} to {command}")
        single = len(inputs) == 1 and len(paths) == 1 and not Path(inputs[0]).is_dir()
        return list(zip(unique_stems(paths), paths)), single
    from skimage.data import astronaut

    print(sample_note)
    return [("astronaut", astronaut())], True


def run_batch(items, work, *, command: str, verb: str, out, single: bool, unit: str = "image",
              failure=(), describe=None) -> int:
    """Run ``work(stem, source, label, say)`` on every ``(stem, source)`` of ``items``; return the exit
    status (:func:`batch_summary`).

    ``label`` names the input in messages (the path, or the stem of an in-memory sample); ``say``
    prints a line (above the progress bar, shown for several inputs). An exception of the types in
    ``failure`` (e.g. no face, unreadable file) fails that input: its message (``describe(err, label)``,
    default ``str(err)``) is a :class:`UserError` for a ``single`` input, else it is reported, the
    input skipped and counted in the summary. Other exceptions propagate."""
    failures, done = [], []
    bar = None
    if len(items) > 1:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(items), desc=f"facerig {command}", unit=unit)
    say = bar.write if bar else print
    for stem, src in items:
        label = str(src) if isinstance(src, Path) else stem
        try:
            work(stem, src, label, say)
            done.append(label)
        except failure as err:
            msg = describe(err, label) if describe is not None else str(err)
            if single:
                raise UserError(msg) from None
            failures.append((label, msg))
            say(f"skipped: {msg}", file=sys.stderr)
        finally:
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return batch_summary(done, failures, len(items), out, verb)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facerig",
        description="Differentiable 3D face inverse rendering on the CPU.",
    )
    parser.add_argument("--version", action="version", version=f"facerig {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"facerig {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
