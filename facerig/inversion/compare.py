"""Inversions of one photo per layer and method, their numbers and a picture grid (``facerig invert``,
``tools/bench_inversion.py``).

Methods: ``"opt"`` (optimisation with both priors), ``"opt-alpha"`` / ``"opt-tv"`` / ``"opt-none"``
(one prior / none), ``"learned"`` (the learned inverse) and ``"hybrid"`` (learned + a few steps).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from facerig.inversion.optim import Inversion, invert, invert_hybrid, invert_learned

__all__ = ["METHODS", "Record", "psnr_ssim", "run_inversions", "save_grid"]

METHODS = ("opt", "opt-alpha", "opt-tv", "opt-none", "learned", "hybrid")
_PRIOR = {"opt": "both", "opt-alpha": "alpha", "opt-tv": "tv", "opt-none": "none"}


@dataclass
class Record:
    """One inversion: layer, method, normalised feature error, PSNR (dB) / SSIM to the original,
    wall and CPU seconds, and the image ``(H, W, 3)`` in [0, 1]."""

    layer: str
    method: str
    feature_error: float
    psnr: float
    ssim: float
    seconds: float
    image: Tensor
    cpu_seconds: float = float("nan")

    def as_dict(self) -> dict:
        """The numbers (no image), for JSON."""
        return {"layer": self.layer, "method": self.method, "feature_error": self.feature_error, "psnr": self.psnr,
                "ssim": self.ssim, "seconds": self.seconds, "cpu_seconds": self.cpu_seconds}


def psnr_ssim(image: Tensor, reference: Tensor) -> tuple[float, float]:
    """PSNR (dB, peak 1) and SSIM (scikit-image, RGB) of ``(H, W, 3)`` images in [0, 1]."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = image.detach().double().cpu().numpy()
    b = reference.detach().double().cpu().numpy()
    return (float(peak_signal_noise_ratio(b, a, data_range=1.0)),
            float(structural_similarity(b, a, data_range=1.0, channel_axis=-1)))


def run_inversions(features_factory, image: Tensor, layers, methods=("opt", "learned", "hybrid"), *, inverse=None,
                   steps: int = 200, hybrid_steps: int = 40, log=None, **opt_kwargs) -> list[Record]:
    """Invert ``image``'s features at every layer with every method.

    Args:
        features_factory: ``layer -> feature map`` returning ``{layer: features}`` (e.g.
            ``lambda n: VGG16Features(layers=(n,))``).
        image: ``(H, W, 3)`` RGB in [0, 1] (the original).
        layers: layer names.
        methods: names from :data:`METHODS`.
        inverse: the :class:`~facerig.inversion.LearnedInverse` (needed by ``"learned"``, ``"hybrid"``).
        steps, hybrid_steps: optimisation budgets of ``"opt*"`` and ``"hybrid"``.
        log: optional ``str -> None`` called after each inversion.
        **opt_kwargs: more arguments of :func:`~facerig.inversion.invert` (weights, lr, jitter, ...).

    Returns:
        One :class:`Record` per (layer, method), layers outer.
    """
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods: unknown {bad}; expected names from {list(METHODS)}")
    if inverse is None and any(m in ("learned", "hybrid") for m in methods):
        raise ValueError("inverse: the learned and hybrid methods need a learned inverse")
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"image: expected (H, W, 3) RGB in [0, 1], got shape {tuple(image.shape)}")
    x0 = image[None].float()
    H, W = image.shape[:2]
    records = []
    for layer in layers:
        phi = features_factory(layer)
        with torch.no_grad():
            target = {k: v.detach() for k, v in phi(x0).items()}
        for m in methods:
            if m in _PRIOR:
                res: Inversion = invert(phi, target, (H, W), prior=_PRIOR[m], steps=steps, **opt_kwargs)
            elif m == "learned":
                res = invert_learned(inverse, target, layer, features=phi)
            else:
                res = invert_hybrid(phi, target, inverse, layer=layer, steps=hybrid_steps, **opt_kwargs)
            p, s = psnr_ssim(res.image[0], image)
            rec = Record(layer, m, float(res.feature_error[0]), p, s, res.seconds, res.image[0].detach().cpu(),
                         res.cpu_seconds)
            records.append(rec)
            if log is not None:
                log(f"{layer:8s} {m:9s} feature error {rec.feature_error:.4f}  PSNR {p:5.2f} dB  SSIM {s:.3f}  "
                    f"{rec.seconds:.3f} s (CPU {rec.cpu_seconds:.3f} s)")
    return records


def save_grid(records: list[Record], original: Tensor, path: str | os.PathLike, title: str | None = None,
              panel_inches: float = 1.6, dpi: int = 100) -> None:
    """A grid: one row per layer, the original then one panel per method, the normalised feature
    error (and time) printed under each panel. Written atomically (.png or .jpg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facerig.io import atomic_path

    layers = list(dict.fromkeys(r.layer for r in records))
    methods = list(dict.fromkeys(r.method for r in records))
    by = {(r.layer, r.method): r for r in records}
    fig, axes = plt.subplots(len(layers), len(methods) + 1, squeeze=False,
                             figsize=(panel_inches * (len(methods) + 1), panel_inches * 1.22 * len(layers)))
    for i, layer in enumerate(layers):
        for j in range(len(methods) + 1):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.imshow(original.clamp(0, 1).cpu().numpy())
                ax.set_ylabel(layer, fontsize=9)
                ax.set_xlabel("original", fontsize=7)
                if i == 0:
                    ax.set_title("photo", fontsize=9)
                continue
            r = by.get((layer, methods[j - 1]))
            if i == 0:
                ax.set_title(methods[j - 1], fontsize=9)
            if r is None:
                ax.axis("off")
                continue
            ax.imshow(r.image.clamp(0, 1).numpy())
            ax.set_xlabel(f"err {r.feature_error:.3f} · {r.seconds:.3g} s", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    suffix = os.path.splitext(str(path))[1] or ".png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=suffix.lstrip(".").replace("jpg", "jpeg"))
    plt.close(fig)
