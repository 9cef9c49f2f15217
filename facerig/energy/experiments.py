"""The denoising / completion experiment of the core, shared by ``facerig demo`` and the benchmark.

Test images are scikit-image's ``camera()`` and ``astronaut()``; learned solvers train on
patches of *other* scikit-image images (coffee, chelsea, rocket, brick, grass, gravel), all
bundled with scikit-image (nothing is downloaded). Everything is seeded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from facerig.energy._checks import check_nonneg, check_option, check_positive_int
from facerig.energy.image import psnr, tv_denoise, tv_inpaint
from facerig.energy.prox import prox_tv
from facerig.energy.terms import squared_l2, total_variation
from facerig.energy.training import MODES, Problem, TrainResult, train
from facerig.energy.unroll import tv_unrolled

__all__ = [
    "TRAIN_IMAGES",
    "test_image",
    "training_patches",
    "add_noise",
    "inpainting_masks",
    "denoising_problem",
    "train_tv_unrolled",
    "Timed",
    "timed",
    "run_restoration",
]

#: scikit-image images used for training (never the test images camera / astronaut).
TRAIN_IMAGES = ("coffee", "chelsea", "rocket", "brick", "grass", "gravel")


def _skimage(name: str) -> np.ndarray:
    from skimage import data
    from skimage.util import img_as_float32

    return img_as_float32(getattr(data, name)())


def test_image(name: str) -> Tensor:
    """``camera`` (``(512, 512, 1)``) or ``astronaut`` (``(512, 512, 3)``) as float32 in [0, 1]."""
    check_option(name, "name", ("camera", "astronaut"))
    im = torch.from_numpy(_skimage(name))
    return im[..., None] if im.dim() == 2 else im


def training_patches(n: int = 512, size: int = 48, seed: int = 0) -> Tensor:
    """``(n, size, size, 1)`` float32 grayscale patches of :data:`TRAIN_IMAGES`, random positions and flips.

    Colour images contribute their channels as separate grayscale images.
    """
    check_positive_int(n, "n")
    check_positive_int(size, "size", minimum=8)
    planes = []
    for name in TRAIN_IMAGES:
        im = _skimage(name)
        planes += [im] if im.ndim == 2 else [im[..., c] for c in range(im.shape[-1])]
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        p = planes[rng.integers(len(planes))]
        r, c = rng.integers(p.shape[0] - size + 1), rng.integers(p.shape[1] - size + 1)
        patch = p[r:r + size, c:c + size]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch.T
        out[i] = patch
    return torch.from_numpy(out)[..., None]


def add_noise(image: Tensor, sigma: float = 0.1, seed: int = 0) -> Tensor:
    """``image + sigma * N(0, 1)`` with a seeded generator (no clipping, the ROF data model)."""
    check_nonneg(sigma, "sigma")
    g = torch.Generator().manual_seed(seed)
    return image + sigma * torch.randn(image.shape, generator=g, dtype=image.dtype)


def inpainting_masks(height: int, width: int, missing: float = 0.5, hole: int = 32, seed: int = 0):
    """Masks of the inpainting experiment.

    Returns:
        ``(observed, fixed, hole_mask)`` bool ``(H, W)`` tensors: ``observed`` is True on the
        pixels kept (a random ``1 - missing`` fraction, outside a centred ``hole x hole``
        square), ``fixed`` is the one-pixel ring around the hole (observed and held fixed,
        the boundary condition), ``hole_mask`` the hole itself.
    """
    g = torch.Generator().manual_seed(seed)
    observed = torch.rand(height, width, generator=g) >= missing
    r0, c0 = (height - hole) // 2, (width - hole) // 2
    hole_mask = torch.zeros(height, width, dtype=torch.bool)
    hole_mask[r0:r0 + hole, c0:c0 + hole] = True
    ring = torch.zeros_like(hole_mask)
    ring[r0 - 1:r0 + hole + 1, c0 - 1:c0 + hole + 1] = True
    ring &= ~hole_mask
    observed = (observed | ring) & ~hole_mask
    return observed, ring, hole_mask


def denoising_problem(weight: float = 0.1, sigma: float = 0.1, clean: Tensor | None = None,
                      solver_iters: int = 100) -> Problem:
    """The ROF denoising :class:`Problem` on ``(B, H, W, 1)`` patches.

    ``energy(x, y) = (1/2 ||y - x||^2 + weight TV(y)) / (H W)``; ``solve`` is the dual FISTA
    (:func:`prox_tv`, ``solver_iters`` iterations); ``sample_prior`` draws patches of ``clean``
    and ``synthesize`` adds Gaussian noise of std ``sigma``.
    """

    def energy(x, y):
        return (0.5 * squared_l2(y, x) + weight * total_variation(y)) / (x.shape[1] * x.shape[2])

    def sample_prior(n, gen):
        return clean[torch.randint(len(clean), (n,), generator=gen)]

    def synthesize(y):
        return y + sigma * torch.randn_like(y)

    def solve(x):
        return prox_tv(x, weight, max_iter=solver_iters, tol=1e-4)

    return Problem(energy=energy, solve=solve,
                   sample_prior=None if clean is None else sample_prior,
                   synthesize=None if clean is None else synthesize)


def train_tv_unrolled(mode, *, n_layers: int = 10, weight: float = 0.1, sigma: float = 0.1, steps: int = 100,
                      batch_size: int = 8, patch: int = 32, n_patches: int = 128, lr: float = 0.02, seed: int = 0,
                      progress: bool = False) -> tuple[torch.nn.Module, TrainResult]:
    """Train an unrolled primal-dual TV solver (:func:`tv_unrolled`) on noisy training patches.

    Args:
        mode: a training mode (``"unsupervised"``, ``"supervised"``, ``"self_supervised"``) or
            a dict of mode weights (see :func:`facerig.energy.train`).
        n_layers: iterations K of the unrolled solver.
        weight, sigma: TV weight of the energy and noise level of the data.
        steps, batch_size, lr, seed, progress: training options.
        patch, n_patches: size and number of training patches.

    Returns:
        The trained network (eval mode) and the :class:`TrainResult`.
    """
    if isinstance(mode, str):
        check_option(mode, "mode", MODES)
    clean = training_patches(n_patches, patch, seed)
    noisy = add_noise(clean, sigma, seed + 1)
    net = tv_unrolled(n_layers, weight)
    problem = denoising_problem(weight, sigma, clean)
    result = train(net, problem, noisy, mode=mode, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                   log_every=max(1, steps // 10), progress=progress)
    return net, result


@dataclass
class Timed:
    """A result and the best wall time of its repeats (seconds)."""

    value: object
    seconds: float


def timed(fn, repeat: int = 1) -> Timed:
    """Run ``fn()`` ``repeat`` times (no autograd); keep the last value and the fastest time."""
    best = float("inf")
    value = None
    with torch.no_grad():
        for _ in range(repeat):
            t0 = time.perf_counter()
            value = fn()
            best = min(best, time.perf_counter() - t0)
    return Timed(value, best)


def run_restoration(name: str, *, weight: float = 0.1, sigma: float = 0.1, inpaint_weight: float = 0.02,
                    nets: dict | None = None, repeat: int = 1, progress: bool = False) -> dict:
    """Denoise and inpaint one test image with the iterative solvers (and trained ``nets``).

    Returns:
        ``{"clean", "noisy", "observed", "results": {method: (image, seconds, psnr)}}``.
    """
    clean = test_image(name)
    noisy = add_noise(clean, sigma, seed=1)
    results = {}
    r = timed(lambda: tv_denoise(noisy, weight), repeat)
    results["TV denoise (dual FISTA)"] = (r.value, r.seconds, float(psnr(r.value, clean)))
    for label, net in (nets or {}).items():
        r = timed(lambda: net(noisy[None])[0], repeat)
        results[label] = (r.value, r.seconds, float(psnr(r.value, clean)))
    observed, fixed, hole = inpainting_masks(clean.shape[0], clean.shape[1])
    obs_img = torch.where(observed[..., None], clean, torch.zeros(()))
    r = timed(lambda: tv_inpaint(obs_img, observed, inpaint_weight, fixed=fixed, progress=progress), repeat)
    results["TV inpaint (FISTA)"] = (r.value, r.seconds, float(psnr(r.value, clean)))
    return {"clean": clean, "noisy": noisy, "observed": obs_img, "hole": hole, "results": results}
