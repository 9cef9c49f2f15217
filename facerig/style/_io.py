"""Saving and loading the style networks: half-precision weights, configuration and metadata."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def save_model(path: str | os.PathLike, kind: str, net: nn.Module, meta: dict | None = None) -> Path:
    """Write ``{"kind", "config", "state" (float16), "meta"}`` to ``path`` atomically."""
    from facerig.io import atomic_open

    payload = {"kind": kind, "config": net.config,
               "state": {k: v.half() for k, v in net.state_dict().items()}, "meta": meta or {}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        torch.save(payload, fh)
    return path


def load_model(path: str | os.PathLike, kind: str, cls, what: str, hint: str) -> nn.Module:
    """Read a file written by :func:`save_model` as ``cls(**config)`` (float32, eval mode, ``.meta`` set).

    Raises:
        FileNotFoundError: no file (the message gives ``hint``); ValueError: not a ``kind`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model: {path} does not exist ({hint})")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise ValueError(f"model: {path} is not a {what}")
    net = cls(**ckpt["config"])
    net.load_state_dict({k: v.float() for k, v in ckpt["state"].items()})
    net.meta = ckpt.get("meta", {})
    return net.eval()
