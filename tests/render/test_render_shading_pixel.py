"""pixel_sh_shading and sh_basis_grad (facerig.render.shading)."""

from __future__ import annotations

import torch

from facerig.render.shading import pixel_sh_shading, sh_basis, sh_basis_grad, sh_shading


def test_sh_basis_grad_matches_autograd():
    g = torch.Generator().manual_seed(0)
    n = torch.randn(5, 7, 3, generator=g, dtype=torch.float64)
    J = torch.func.vmap(torch.func.jacfwd(sh_basis))(n.reshape(-1, 3))  # (N, 9, 3)
    assert torch.allclose(sh_basis_grad(n).reshape(-1, 3, 9), J.transpose(1, 2), atol=1e-12)


def test_pixel_sh_shading_normalises_and_equals_sh_shading():
    g = torch.Generator().manual_seed(1)
    n = torch.nn.functional.normalize(torch.randn(2, 4, 4, 3, generator=g, dtype=torch.float64), dim=-1)
    alb = torch.rand(2, 4, 4, 3, generator=g, dtype=torch.float64)
    gamma = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    ref = sh_shading(n, alb, gamma)
    # interpolated normals are shorter than 1: the per-pixel shader normalises them
    assert torch.allclose(pixel_sh_shading(0.7 * n, alb, gamma), ref, atol=1e-12)
    assert torch.allclose(pixel_sh_shading(n, alb, gamma.transpose(1, 2).reshape(2, 27)), ref, atol=1e-12)
    # uncovered pixels (zero normal, zero albedo) give 0 and finite gradients
    z = torch.zeros(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    out = pixel_sh_shading(z, torch.zeros(1, 2, 2, 3, dtype=torch.float64), gamma[:1])
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.isfinite(z.grad).all()
