"""Data for sparse coding: natural-image patches and synthetic compressed-sensing problems.

Natural images come from scikit-image's bundled photographs (offline, no download). Patches are
returned as rows of a ``(n_patches, patch_size ** 2)`` float array, the layout every estimator of
:mod:`facerig.sparse` uses for ``X``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from facerig.sparse._validation import check_positive_int

__all__ = [
    "DICTIONARY_IMAGES",
    "CODING_IMAGES",
    "TEST_IMAGES",
    "load_gray_image",
    "extract_patches",
    "preprocess_patches",
    "natural_patches",
    "gaussian_dictionary",
    "bernoulli_gaussian_codes",
    "add_noise_snr",
]

#: scikit-image photographs used to learn dictionaries.
DICTIONARY_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")
#: photographs used to train learned encoders (disjoint from the dictionary images).
CODING_IMAGES = ("brick", "grass", "gravel", "coins", "clock", "moon", "immunohistochemistry")
#: held-out photographs used only for evaluation.
TEST_IMAGES = ("camera", "cat")


def load_gray_image(name: str) -> np.ndarray:
    """Load a bundled scikit-image photograph as a ``(H, W)`` float64 gray image in [0, 1].

    ``name`` is the name of a function of :mod:`skimage.data` (e.g. ``"camera"``, ``"astronaut"``).
    Only images shipped inside the scikit-image wheel are available (nothing is downloaded).
    """
    import skimage.color
    import skimage.data
    import skimage.util

    loader = getattr(skimage.data, str(name), None)
    if loader is None or not callable(loader):
        raise ValueError(f"name must be an image of skimage.data, got {name!r}")
    img = loader()
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = skimage.color.rgba2rgb(img)
        img = skimage.color.rgb2gray(img)
    return skimage.util.img_as_float64(img)


def extract_patches(image: np.ndarray, patch_size: int, n_patches: int | None = None,
                    rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Extract square patches of a gray image as flattened rows.

    Parameters
    ----------
    image : (H, W) array
        Gray image.
    patch_size : int
        Side of the square patch in pixels.
    n_patches : int or None
        Number of patches drawn uniformly at random (with replacement of positions); ``None``
        returns every overlapping patch in raster order.
    rng : numpy Generator, int seed or None

    Returns
    -------
    (n_patches, patch_size ** 2) float64 array, each row a patch in row-major pixel order.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D gray image (H, W), got shape {image.shape}")
    p = check_positive_int(patch_size, "patch_size")
    H, W = image.shape
    if p > H or p > W:
        raise ValueError(f"patch_size={p} is larger than the image ({H}x{W})")
    windows = np.lib.stride_tricks.sliding_window_view(image, (p, p))  # (H-p+1, W-p+1, p, p)
    if n_patches is None:
        return windows.reshape(-1, p * p).copy()
    n = check_positive_int(n_patches, "n_patches")
    gen = np.random.default_rng(rng)
    rows = gen.integers(0, H - p + 1, size=n)
    cols = gen.integers(0, W - p + 1, size=n)
    return windows[rows, cols].reshape(n, p * p).copy()


def preprocess_patches(patches: np.ndarray, normalize: str = "l2",
                       min_norm: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Remove each patch's mean and normalise its contrast.

    Parameters
    ----------
    patches : (n, d) array
    normalize : ``"l2"`` (each patch scaled to unit Euclidean norm), ``"std"`` (each patch
        divided by the standard deviation of all mean-removed pixels) or ``"none"``.
    min_norm : float
        With ``"l2"``, patches whose mean-removed norm is below ``min_norm`` (flat regions,
        whose direction is noise) are dropped.

    Returns
    -------
    (patches, keep) : the processed ``(m, d)`` float64 array and the boolean ``(n,)`` mask of the
    input rows that were kept.
    """
    X = np.asarray(patches, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"patches must be 2-D (n_patches, n_pixels), got shape {X.shape}")
    X = X - X.mean(axis=1, keepdims=True)
    keep = np.ones(X.shape[0], dtype=bool)
    if normalize == "l2":
        norms = np.linalg.norm(X, axis=1)
        keep = norms >= min_norm
        X = X[keep] / norms[keep, None]
    elif normalize == "std":
        s = X.std()
        X = X / (s if s > 0 else 1.0)
    elif normalize != "none":
        raise ValueError(f"normalize must be 'l2', 'std' or 'none', got {normalize!r}")
    return X, keep


def natural_patches(n_patches: int, images: Sequence[str] = DICTIONARY_IMAGES, patch_size: int = 10,
                    normalize: str = "l2", seed: int = 0) -> np.ndarray:
    """Random mean-removed, contrast-normalised patches from bundled scikit-image photographs.

    Draws an equal share of the patches from each image (more than needed, since flat patches
    are dropped with ``normalize="l2"``), shuffles them and returns ``(n_patches, patch_size**2)``
    float64 rows (the Gregor & LeCun 2010 setting uses 10x10 patches).
    """
    n = check_positive_int(n_patches, "n_patches")
    if len(images) == 0:
        raise ValueError("images must name at least one skimage.data image")
    rng = np.random.default_rng(seed)
    per_image = int(np.ceil(n / len(images)))
    out = []
    for name in images:
        img = load_gray_image(name)
        got = np.empty((0, patch_size * patch_size))
        # draw until enough non-flat patches were found (flat images may need a few rounds)
        for _ in range(20):
            raw = extract_patches(img, patch_size, 2 * per_image, rng)
            proc, _ = preprocess_patches(raw, normalize)
            got = np.concatenate([got, proc])
            if got.shape[0] >= per_image:
                break
        out.append(got[:per_image])
    X = np.concatenate(out)
    X = X[rng.permutation(X.shape[0])]
    if X.shape[0] < n:
        raise ValueError(f"only {X.shape[0]} non-flat patches found in {list(images)}, asked {n}")
    return X[:n]


def gaussian_dictionary(n_atoms: int, n_features: int, seed: int = 0,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random Gaussian dictionary ``(n_atoms, n_features)`` with unit-norm atoms (rows).

    In the column convention of the compressed-sensing literature this is ``A = D.T``, an
    ``(n_features, n_atoms)`` matrix with normalised columns (the ALISTA setting uses 250x500).
    """
    g = torch.Generator().manual_seed(int(seed))
    D = torch.randn(check_positive_int(n_atoms, "n_atoms"), check_positive_int(n_features, "n_features"),
                    generator=g, dtype=torch.float64)
    return (D / D.norm(dim=1, keepdim=True)).to(dtype)


def bernoulli_gaussian_codes(n_samples: int, n_atoms: int, p: float = 0.1,
                             generator: torch.Generator | None = None,
                             dtype: torch.dtype = torch.float32,
                             device: torch.device | str | None = None) -> torch.Tensor:
    """Sparse codes ``(n_samples, n_atoms)``: each entry is N(0, 1) with probability ``p``, else 0."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p}")
    # draw on the CPU generator, then move (torch generators are device-bound)
    mask = torch.rand(n_samples, n_atoms, generator=generator) < p
    vals = torch.randn(n_samples, n_atoms, generator=generator)
    return (vals * mask).to(dtype=dtype, device=device)


def add_noise_snr(X: torch.Tensor, snr_db: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise at a signal-to-noise ratio of ``snr_db`` decibels.

    The noise variance is ``mean(X**2) / 10**(snr_db/10)`` (one level for the whole batch, the
    convention of the LISTA-CP / ALISTA papers). ``snr_db = inf`` returns ``X`` unchanged.
    """
    if np.isinf(snr_db) and snr_db > 0:
        return X
    sigma2 = X.pow(2).mean() / (10.0 ** (snr_db / 10.0))
    noise = torch.randn(X.shape, generator=generator, dtype=X.dtype).to(X.device)
    return X + noise * sigma2.sqrt()
