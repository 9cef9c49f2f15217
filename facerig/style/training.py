"""Training data for the learned style solvers: content crops and random style problems.

* :func:`content_crops`: random square crops of photographs and video frames, ``(N, S, S, 3)``.
* :class:`StyleBatches`: an endless, seeded iterable of style problems for
  :func:`facerig.style.flexible.train_flexible` - contents, target Gram matrices of a random style
  or a random mix of two styles (styles: real pictures and :func:`~facerig.style.images.procedural_style`),
  random intensities and random per-layer weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from facerig.style.energy import StyleEnergy
from facerig.style.images import procedural_style, resize_image

__all__ = ["content_crops", "video_frames", "StyleBatches"]


def video_frames(paths: Sequence, every: int = 15, limit: int = 200) -> list[Tensor]:
    """Frames ``(H, W, 3)`` float in [0, 1] of videos: every ``every``-th frame, at most ``limit`` in all.
    Unreadable videos are skipped."""
    from facerig.video import VideoError, VideoReader

    out: list[Tensor] = []
    for p in paths:
        try:
            with VideoReader(p, stride=every) as video:
                for _, rgb in video:
                    out.append(torch.from_numpy(rgb).float() / 255.0)
                    if len(out) >= limit:
                        return out
        except (VideoError, ValueError):
            continue
    return out


def content_crops(images: Sequence[Tensor], n: int, size: int, seed: int = 0, min_frac: float = 0.4) -> Tensor:
    """``n`` random square crops (side uniform in ``[min_frac, 1]`` of the shorter side, random
    position and horizontal flip) resized to ``size``: ``(n, size, size, 3)`` float32."""
    if not images:
        raise ValueError("images: give at least one (H, W, 3) image")
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        im = images[int(torch.randint(len(images), (1,), generator=g))]
        H, W = im.shape[:2]
        short = min(H, W)
        side = int(torch.randint(max(8, int(min_frac * short)), short + 1, (1,), generator=g))
        top = int(torch.randint(H - side + 1, (1,), generator=g))
        left = int(torch.randint(W - side + 1, (1,), generator=g))
        crop = resize_image(im[top:top + side, left:left + side], size)
        if bool(torch.rand((), generator=g) < 0.5):
            crop = crop.flip(1)
        out.append(crop)
    return torch.stack(out).float()


class StyleBatches:
    """Endless seeded batches of random style problems (an iterable for the core's ``train``).

    Args:
        energy: the :class:`StyleEnergy` (its features give the Gram matrices).
        contents: ``(N, S, S, 3)`` content crops.
        styles: real style images ``(H, W, 3)`` (any size; resized to ``style_size``).
        n_procedural: procedural styles generated once (:func:`procedural_style`).
        batch_size: problems per batch.
        style_size: side the styles are resized to before their Gram matrices.
        p_mix: probability that a problem mixes two styles (random weights).
        intensity: ``(lo, hi)`` range of the log-uniform intensity.
        p_layers: probability that the per-layer weights are random (else all 1).
        seed: the generator's seed.

    Each batch: ``{"content": (B, S, S, 3), "grams": {layer: (B, C, C)}, "intensity": (B,),
    "layer_weights": (B, L)}`` (and ``"grad_size"`` when :attr:`grad_size` is set).
    """

    def __init__(self, energy: StyleEnergy, contents: Tensor, styles: Sequence[Tensor] = (), n_procedural: int = 64,
                 batch_size: int = 4, style_size: int = 128, p_mix: float = 0.25, intensity=(0.3, 3.0),
                 p_layers: float = 0.5, seed: int = 0):
        self.energy, self.contents, self.batch_size = energy, contents, int(batch_size)
        self.p_mix, self.intensity, self.p_layers, self.seed = p_mix, intensity, p_layers, seed
        g = torch.Generator().manual_seed(seed)
        imgs = [resize_image(s, style_size) for s in styles]
        imgs += [procedural_style(style_size, g) for _ in range(n_procedural)]
        if not imgs:
            raise ValueError("styles: give style images or n_procedural > 0")
        self.style_images = imgs
        grams = [energy.grams(s) for s in imgs]
        self.grams = {n: torch.cat([g_[n] for g_ in grams]) for n in energy.style_layers}
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.grad_size: int | None = None  # flexible: gradient resolution (longer side), None = full

    def start_at(self, step: int) -> None:
        """Restart the generator as if ``step`` batches had been drawn (resumed training)."""
        self.gen = torch.Generator().manual_seed(self.seed + 1 + 7919 * int(step))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        g, B = self.gen, self.batch_size
        L = len(self.energy.style_layers)
        ns = self.grams[self.energy.style_layers[0]].shape[0]
        idx = torch.randint(len(self.contents), (B,), generator=g)
        a = torch.randint(ns, (B,), generator=g)
        b = torch.randint(ns, (B,), generator=g)
        t = torch.rand(B, generator=g) * (torch.rand(B, generator=g) < self.p_mix)
        grams = {n: (1 - t)[:, None, None] * self.grams[n][a] + t[:, None, None] * self.grams[n][b]
                 for n in self.energy.style_layers}
        lo, hi = torch.log(torch.tensor(self.intensity[0])), torch.log(torch.tensor(self.intensity[1]))
        inten = torch.exp(lo + (hi - lo) * torch.rand(B, generator=g))
        lw = torch.ones(B, L)
        rnd = torch.rand(B, generator=g) < self.p_layers
        w = torch.rand(B, L, generator=g) * 2
        lw[rnd] = w[rnd] / w[rnd].mean(dim=1, keepdim=True).clamp(min=1e-3)
        batch = {"content": self.contents[idx], "grams": grams, "intensity": inten, "layer_weights": lw}
        if self.grad_size is not None:
            batch["grad_size"] = self.grad_size
        return batch
