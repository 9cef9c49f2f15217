"""Command-line front end of :mod:`facerig.sparse` (``facerig sparse ...``).

    facerig sparse learn  -o dict.npy [--atoms 100] [--alpha 0.1] [--patch 10] [--patches 20000] [--steps 300]
    facerig sparse encode X.npy --dictionary dict.npy -o codes.npy [--alpha 0.1] [--tol 1e-6] [--algorithm fista]

Arrays are ``.npy`` files: ``X`` ``(n_samples, n_features)``, dictionaries ``(n_atoms, n_features)``,
codes ``(n_samples, n_atoms)``. Outputs are written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def _save_npy(path: str, array) -> None:
    import numpy as np

    from facerig.io import atomic_path

    with atomic_path(path) as tmp:
        np.save(tmp, array)


def _load_npy(path: str, what: str):
    import numpy as np

    from facerig.cli import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} file {p} does not exist")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise UserError(f"{what} file {p} is not a readable .npy array: {err}") from err


def _learn(args) -> int:
    from facerig.cli import UserError
    from facerig.sparse.data import DICTIONARY_IMAGES, natural_patches
    from facerig.sparse.dictionary import learn_dictionary

    images = args.images.split(",") if args.images else list(DICTIONARY_IMAGES)
    try:
        X = natural_patches(args.patches, images, patch_size=args.patch, seed=args.seed)
        res = learn_dictionary(X, args.atoms, args.alpha, n_steps=args.steps, seed=args.seed)
    except (ValueError, TypeError) as err:
        raise UserError(str(err)) from err
    _save_npy(args.output, res.dictionary)
    print(f"learned {args.atoms} atoms of {args.patch}x{args.patch} patches from {len(images)} images "
          f"in {res.seconds:.1f} s (batch objective {res.history[0]:.4f} -> {res.history[-1]:.4f}); "
          f"wrote {args.output}")
    return 0


def _encode(args) -> int:
    from facerig.cli import UserError
    from facerig.sparse.lasso import sparse_encode

    X = _load_npy(args.input, "input")
    D = _load_npy(args.dictionary, "dictionary")
    try:
        codes, res = sparse_encode(X, D, args.alpha, algorithm=args.algorithm, tol=args.tol,
                                   max_iter=args.max_iter, return_result=True)
    except (ValueError, TypeError) as err:
        raise UserError(str(err)) from err
    _save_npy(args.output, codes)
    nnz = float((codes != 0).sum(axis=1).mean())
    print(f"encoded {codes.shape[0]} samples on {codes.shape[1]} atoms: {res.n_iter} iterations, "
          f"stop={res.stop_reason}, mean objective {float(res.objective.mean()):.6g}, "
          f"{nnz:.1f} non-zeros per code; wrote {args.output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``facerig sparse {learn, encode}`` to the CLI."""
    p = subparsers.add_parser("sparse", help="sparse coding: learn a dictionary, encode signals (Lasso)")
    sub = p.add_subparsers(dest="sparse_command", metavar="ACTION", required=True)
    learn = sub.add_parser("learn", help="learn a dictionary on patches of scikit-image photographs")
    learn.add_argument("-o", "--output", required=True, help="output .npy dictionary (n_atoms, n_features)")
    learn.add_argument("--atoms", type=int, default=100)
    learn.add_argument("--alpha", type=float, default=0.1)
    learn.add_argument("--patch", type=int, default=10, help="patch side in pixels")
    learn.add_argument("--patches", type=int, default=20000)
    learn.add_argument("--steps", type=int, default=300)
    learn.add_argument("--images", default="", help="comma-separated skimage.data names")
    learn.add_argument("--seed", type=int, default=0)
    learn.set_defaults(func=_learn)
    enc = sub.add_parser("encode", help="Lasso codes of the rows of a .npy array")
    enc.add_argument("input", help=".npy signals (n_samples, n_features)")
    enc.add_argument("--dictionary", required=True, help=".npy dictionary (n_atoms, n_features)")
    enc.add_argument("-o", "--output", required=True, help="output .npy codes (n_samples, n_atoms)")
    enc.add_argument("--alpha", type=float, default=0.1)
    enc.add_argument("--algorithm", choices=("fista", "ista"), default="fista")
    enc.add_argument("--tol", type=float, default=1e-6, help="relative duality gap")
    enc.add_argument("--max-iter", type=int, default=10000)
    enc.set_defaults(func=_encode)
