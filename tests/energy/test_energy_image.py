"""TV denoising matches scikit-image's ROF problem; TV inpainting keeps fixed pixels exactly."""

import numpy as np
import pytest
import torch
from skimage import data
from skimage.restoration import denoise_tv_chambolle
from skimage.util import img_as_float

from facerig.energy import psnr, rof_energy, tv_denoise, tv_inpaint


@pytest.fixture(scope="module")
def noisy_crops():
    rng = np.random.default_rng(0)
    gray = img_as_float(data.camera())[200:264, 200:264]
    rgb = img_as_float(data.astronaut())[100:148, 180:228]
    return gray + 0.1 * rng.standard_normal(gray.shape), rgb + 0.1 * rng.standard_normal(rgb.shape)


def test_tv_denoise_solves_skimages_rof_problem(noisy_crops):
    gray, rgb = noisy_crops
    for image, kw in ((gray, {}), (rgb, {"channel_axis": -1})):
        # Chambolle's algorithm converges slowly: 2000 iterations are close to, not at, the optimum
        ref = denoise_tv_chambolle(image, weight=0.1, eps=1e-12, max_num_iter=2000, **kw)
        ours = tv_denoise(image, 0.1, tol=1e-7, max_iter=5000)
        assert isinstance(ours, torch.Tensor) and ours.shape == image.shape and ours.dtype == torch.float64
        e_ref, e_ours = float(rof_energy(ref, image, 0.1)), float(rof_energy(ours, image, 0.1))
        assert e_ours <= e_ref and e_ref - e_ours < 1e-4 * e_ref
        diff = np.abs(ours.numpy() - ref)
        assert diff.max() < 2e-3 and diff.mean() < 2e-4
    # the default tolerance reaches at least the energy of skimage's default stopping rule
    default = denoise_tv_chambolle(gray, weight=0.1)
    res = tv_denoise(gray, 0.1, return_result=True)
    assert float(rof_energy(res.x, gray, 0.1)) <= float(rof_energy(default, gray, 0.1))
    assert res.stop_reason == "gap"


def test_tv_denoise_layouts_dtypes_and_errors(noisy_crops):
    gray, rgb = noisy_crops
    u8 = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    out = tv_denoise(u8, 0.1)
    assert out.shape == u8.shape and out.dtype == torch.float32
    batch = torch.from_numpy(rgb).float()[None].repeat(2, 1, 1, 1)
    assert torch.allclose(tv_denoise(batch, 0.1)[1], tv_denoise(batch[1], 0.1), atol=1e-5)
    assert float(psnr(tv_denoise(gray, 0.1), img_as_float(data.camera())[200:264, 200:264])) > 25
    with pytest.raises(ValueError, match="weight"):
        tv_denoise(gray, -0.1)
    with pytest.raises(ValueError, match="image"):
        tv_denoise(np.full((4, 4), np.nan), 0.1)
    with pytest.raises(ValueError, match="image"):
        tv_denoise(np.zeros((1, 2, 4, 4, 1)), 0.1)
    with pytest.raises(ValueError, match="channels"):
        tv_denoise(gray, 0.1, channels="joint")


def test_tv_inpaint_keeps_fixed_pixels_and_fills_the_hole():
    clean = torch.from_numpy(img_as_float(data.camera())[180:244, 180:244]).float()
    g = torch.Generator().manual_seed(0)
    observed = torch.rand(64, 64, generator=g) >= 0.5
    hole = torch.zeros(64, 64, dtype=torch.bool)
    hole[20:36, 24:40] = True
    ring = torch.zeros_like(hole)
    ring[19:37, 23:41] = True
    ring &= ~hole
    observed = (observed | ring) & ~hole
    image = torch.where(observed, clean, torch.zeros(()))
    res = tv_inpaint(image, observed, 0.01, fixed=ring, max_iter=80, return_result=True)
    out = res.x
    assert out.shape == image.shape
    assert torch.equal(out[ring], clean[ring])  # the boundary condition holds exactly
    err_hole = (out - clean)[hole].abs().mean()
    assert err_hole < (clean[hole] - clean[observed].mean()).abs().mean()  # better than the mean
    assert float(psnr(out, clean)) > 25
    with pytest.raises(ValueError, match="mask"):
        tv_inpaint(image, torch.ones(3, 3, dtype=torch.bool), 0.01)
    with pytest.raises(TypeError, match="fixed"):
        tv_inpaint(image, observed, 0.01, fixed=ring.float())
