"""facerig.model.geometry: batched torch similarity alignment against the NumPy Umeyama reference."""

import numpy as np
import torch


def test_similarity_aligned_matches_umeyama_and_has_the_exact_gradient():
    """Batched alignment = facerig.model.geometry.umeyama per sample; a scaled, rotated, moved copy
    aligns back exactly; the gradient of the aligned error (alignment held fixed) equals the
    finite difference of the minimum over similarities (envelope theorem)."""
    from facerig.model.geometry import similarity_aligned, umeyama
    from facerig.render import axis_angle_to_matrix

    g = torch.Generator().manual_seed(0)
    src = torch.randn(2, 40, 3, generator=g, dtype=torch.float64)
    dst = torch.randn(2, 40, 3, generator=g, dtype=torch.float64)
    al = similarity_aligned(src, dst)
    for b in range(2):
        s, R, t = umeyama(src[b].numpy(), dst[b].numpy())
        np.testing.assert_allclose(al[b].numpy(), src[b].numpy() @ (s * R).T + t, atol=1e-10)
    R = axis_angle_to_matrix(torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64))[0]
    copy = 1.7 * src @ R.T + torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
    np.testing.assert_allclose(similarity_aligned(copy, src).numpy(), src.numpy(), atol=1e-10)

    x = src.clone().requires_grad_(True)
    grad = torch.autograd.grad((similarity_aligned(x, dst) - dst).square().sum(), x)[0]

    def minimum(v):
        out = 0.0
        for b in range(2):
            s, R, t = umeyama(v[b], dst[b].numpy())
            out += ((v[b] @ (s * R).T + t - dst[b].numpy()) ** 2).sum()
        return out

    v, h = src.numpy(), 1e-6
    for idx in [(0, 3, 0), (1, 7, 2), (1, 20, 1)]:
        vp, vm = v.copy(), v.copy()
        vp[idx] += h
        vm[idx] -= h
        assert abs((minimum(vp) - minimum(vm)) / (2 * h) - float(grad[idx])) < 1e-5
