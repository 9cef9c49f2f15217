"""facerig.energy.gram: masked Gram matrices and the normalised multi-layer style loss,
checked against hand-computed values and finite differences."""

import pytest
import torch

from facerig.energy import gram_matrix
from facerig.energy.gram import StyleLoss, masked_gram_matrix, resize_mask, style_loss


def test_gram_hand_computed():
    # two positions with features (1, 2) and (3, 0): G = (f1 f1^T + f2 f2^T) / 2
    f = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])  # (1, 1, 2, 2)
    want = torch.tensor([[(1 + 9) / 2, (2 + 0) / 2], [(2 + 0) / 2, (4 + 0) / 2]])
    assert torch.allclose(masked_gram_matrix(f)[0], want)
    assert torch.allclose(gram_matrix(f)[0], want)
    # a mask keeping only the second position: G = f2 f2^T
    m = torch.tensor([[[0.0, 1.0]]])
    assert torch.allclose(masked_gram_matrix(f, m)[0], torch.tensor([[9.0, 0.0], [0.0, 0.0]]))
    # weights 1 and 3: (1 f1 f1^T + 3 f2 f2^T) / 4
    m = torch.tensor([[[1.0, 3.0]]])
    want = (torch.outer(f[0, 0, 0], f[0, 0, 0]) + 3 * torch.outer(f[0, 0, 1], f[0, 0, 1])) / 4
    assert torch.allclose(masked_gram_matrix(f, m)[0], want)


def test_masked_gram_of_all_ones_is_plain_and_mask_is_area_resampled():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 4, 6, 5, generator=g)
    assert torch.allclose(masked_gram_matrix(f, torch.ones(2, 8, 12)), gram_matrix(f), atol=1e-6)
    m = torch.zeros(1, 4, 4)
    m[:, :2] = 1  # top half
    assert torch.allclose(resize_mask(m, (2, 2)), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]))
    f2 = torch.randn(1, 2, 2, 3, generator=g)
    assert torch.allclose(masked_gram_matrix(f2, m), gram_matrix(f2[:, :1]), atol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        masked_gram_matrix(f, torch.ones(3, 4, 6))


def test_style_loss_hand_computed_and_weights():
    f = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
    G = torch.tensor([[5.0, 1.0], [1.0, 2.0]])
    T = torch.tensor([[4.0, 0.0], [0.0, 1.0]])
    d = ((G - T) ** 2).sum()
    n = (T ** 2).sum()
    feats, targets = {"a": f, "b": 2 * f}, {"a": T, "b": T}
    G2 = 4 * G  # features doubled: Gram x 4
    d2 = ((G2 - T) ** 2).sum()
    assert torch.allclose(style_loss(feats, targets), torch.stack([d / n + d2 / n]))
    assert torch.allclose(style_loss(feats, targets, normalize=False), torch.stack([d + d2]))
    assert torch.allclose(style_loss(feats, targets, {"a": 2.0, "b": 0.5}), torch.stack([2 * d / n + 0.5 * d2 / n]))
    # per-sample weights as a (B, L) tensor, in the order of the features' keys
    assert torch.allclose(style_loss(feats, targets, torch.tensor([[2.0, 0.5]])),
                          style_loss(feats, targets, {"a": 2.0, "b": 0.5}))
    # the loss of the target features themselves is zero
    assert float(style_loss({"a": f}, {"a": G[None]})) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="target_grams"):
        style_loss(feats, {"a": T})


def test_style_loss_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(2, 3, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    T = torch.randn(4, 4, dtype=torch.float64, generator=g)
    T = T @ T.T / 4
    m = torch.rand(2, 3, 3, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda x: style_loss({"l": x}, {"l": T}, mask=m), (f,))
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double()

    def feats(y):
        return {"c": torch.relu(conv(y.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)}

    y = torch.rand(1, 5, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    term = StyleLoss(feats)
    assert torch.autograd.gradcheck(lambda x: term({"c": T}, x), (y,))
