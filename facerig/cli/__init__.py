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

from facerig import __version__


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
    from pathlib import Path

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


def batch_summary(done: list, failures: list, n_inputs: int, out, verb: str) -> int:
    """Print a batch's summary (when there were several inputs or any failure) and return the exit
    status: 0 all done, 1 some failed, 2 all failed. ``failures`` holds ``(label, message)`` pairs."""
    if n_inputs > 1 or failures:
        print(f"summary: {len(done)} {verb}, {len(failures)} failed, {n_inputs} inputs; outputs in {out}")
        for label, err in failures:
            print(f"  failed: {err}" if label in err else f"  failed: {label}: {err}")
    if failures:
        return 2 if not done else 1
    return 0


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
