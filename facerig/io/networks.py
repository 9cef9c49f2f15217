"""Network weight files: half-precision state, configuration and a format tag, written atomically.

One file layout for every trained network facerig ships besides the encoder (the learned inverse
of :mod:`facerig.inversion`, the style networks of :mod:`facerig.style`): a ``torch.save`` dict
``{key: tag, "config": dict, "state": state dict (floating tensors float16), **extra}``.
"""

from __future__ import annotations

import os
from pathlib import Path

from facerig.io.files import atomic_open

__all__ = ["save_network", "read_network", "load_network"]


def save_network(path: str | os.PathLike, net, tag: str, *, config: dict, key: str = "kind",
                 extra: dict | None = None, half: bool = True) -> Path:
    """Write ``net.state_dict()`` (floating tensors as float16 when ``half``) with ``config``, the
    format ``tag`` under ``key`` and the ``extra`` fields to ``path`` atomically (folders created).
    Returns the path."""
    import torch

    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in net.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        torch.save({key: tag, "config": config, "state": state, **(extra or {})}, fh)
    return path


def read_network(path: str | os.PathLike, tag: str, *, what: str, hint: str, key: str = "kind",
                 arg: str = "path", weights_only: bool = True) -> dict:
    """Read a file written by :func:`save_network`: the dict, its ``"state"`` back in float32.

    Raises:
        FileNotFoundError: no file (the message names the argument ``arg``, the file and ``hint``);
        ValueError: not a ``tag`` file (``what`` names what was expected).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{arg}: {what} {path} does not exist ({hint})")
    blob = torch.load(path, map_location="cpu", weights_only=weights_only)
    if not isinstance(blob, dict) or blob.get(key) != tag:
        raise ValueError(f"{arg}: {path} is not a {what}")
    blob["state"] = {k: (v.float() if v.is_floating_point() else v) for k, v in blob["state"].items()}
    return blob


def load_network(path: str | os.PathLike, tag: str, cls, **kwargs):
    """``cls(**config)`` with the state of a :func:`save_network` file (float32, eval mode), its
    ``"meta"`` field (``{}`` when absent) as ``.meta``. ``kwargs`` go to :func:`read_network`."""
    blob = read_network(path, tag, **kwargs)
    net = cls(**blob["config"])
    net.load_state_dict(blob["state"])
    net.meta = blob.get("meta", {})
    return net.eval()
