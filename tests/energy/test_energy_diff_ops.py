"""The specialised finite-difference kernels (in-place ones in the TV prox, channels-first ones in
the unrolled layers) must equal the reference operators of facerig.energy.ops."""

import torch

from facerig.energy import divergence, finite_diff
from facerig.energy.prox import _add_grad, _div
from facerig.energy.unroll import _grad2, _grad2_adjoint


def test_unrolled_layer_differences_match_reference_operators():
    u = torch.randn(3, 1, 7, 5, dtype=torch.float64)  # (N, 1, H, W) channels-first
    ref = finite_diff(u.permute(0, 2, 3, 1))  # (2, N, H, W, 1)
    torch.testing.assert_close(_grad2(u), ref[..., 0].permute(1, 0, 2, 3))
    p = torch.randn(3, 2, 7, 5, dtype=torch.float64)
    p_ref = p.permute(1, 0, 2, 3)[..., None]
    # _grad2_adjoint is the adjoint of _grad2: minus the divergence of the same field
    torch.testing.assert_close(_grad2_adjoint(p)[:, 0], -divergence(p_ref)[..., 0])


def test_prox_in_place_kernels_match_reference_operators():
    u = torch.randn(2, 6, 4, 3, dtype=torch.float64)  # (B, H, W, C)
    q = [torch.zeros_like(u), torch.zeros_like(u)]
    _add_grad(q, u, 0.5)
    torch.testing.assert_close(torch.stack(q), 0.5 * finite_diff(u))
    p = finite_diff(torch.randn_like(u))  # zero last slice along each direction (the prox's invariant)
    torch.testing.assert_close(_div(list(p)), divergence(p))
