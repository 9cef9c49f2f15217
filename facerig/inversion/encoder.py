"""Inverting facerig's face encoder: which image would make it output this face code?

The encoder (:class:`facerig.encoder.FaceEncoder`) maps a crop ``(B, S, S, 3)`` to a graphic-code
vector through a fixed parametrisation of its head's raw outputs (whitened shape / albedo
coefficients, pose offsets, lighting). Its inversion matches those raw outputs, where every
coordinate has about unit scale: the energy is Mahendran & Vedaldi's (:func:`facerig.inversion.invert`)
with the feature map ``y -> head(backbone(y))``, the target ``raw_from_code(code)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from facerig.inversion.optim import Inversion, invert

__all__ = ["raw_from_code", "encoder_feature_map", "invert_encoder"]


def raw_from_code(encoder, code: Tensor, principal_point: Tensor) -> Tensor:
    """The head outputs ``r`` (B, D - 1) with ``encoder.decode_raw(r, focal, principal_point) == code``.

    The exact inverse of the encoder's parametrisation (see :mod:`facerig.encoder.model`): shape and
    albedo coefficients divided by the model's standard deviations, rotation by 0.5, lighting
    offset from unit ambient light, and the translation turned back into the anchor's crop pixel and
    depth. The focal is the code's own (``code``'s focal entry).

    Args:
        encoder: a :class:`~facerig.encoder.FaceEncoder`.
        code: ``(B, D)`` code vectors in the crop camera (``GraphicCode.to_vector`` layout).
        principal_point: ``(B, 2)`` crop pixels.

    Returns:
        ``(B, D - 1)``.
    """
    from facerig.face.decoder import SH_AMBIENT
    from facerig.model.code import model_to_opencv
    from facerig.render.transforms import axis_angle_to_matrix

    D = encoder.code_size
    if code.dim() != 2 or code.shape[1] != D:
        raise ValueError(f"code: expected (B, {D}) code vectors of this encoder's model, got shape {tuple(code.shape)}")
    k_id, k_exp, k_alb = encoder.sizes["identity"], encoder.sizes["expression"], encoder.sizes["albedo"]
    i = 0
    ident = code[:, i:i + k_id] / encoder.id_std.to(code)
    i += k_id
    expr = code[:, i:i + k_exp] / encoder.exp_std.to(code)
    i += k_exp
    alb = code[:, i:i + k_alb] / encoder.alb_std.to(code)
    i += k_alb
    rot = code[:, i:i + 3]
    t = code[:, i + 3:i + 6]
    f = code[:, i + 6:i + 7]
    sh = code[:, i + 7:i + 34].clone()
    sh[:, :3] = sh[:, :3] - SH_AMBIENT
    sh = sh / (0.5 * SH_AMBIENT)
    R = axis_angle_to_matrix(rot) @ model_to_opencv(code.dtype, code.device)
    P = t + (R @ encoder.anchor.to(code))
    z = P[:, 2:3]
    S = float(encoder.input_size)
    uv = P[:, :2] * f / z + principal_point.reshape(-1, 2).to(code)
    tr = torch.cat([(uv - S / 2.0) / (S / 4.0), 4.0 * torch.log(z / encoder.base_depth(f))], 1)
    return torch.cat([ident, expr, alb, rot / 0.5, tr, sh], 1)


def encoder_feature_map(encoder):
    """``(B, S, S, 3) -> (B, D - 1)`` the encoder's raw head outputs, differentiable in the image
    (eval mode; the encoder's parameters are not changed)."""
    encoder.eval()

    def phi(images: Tensor) -> Tensor:
        return encoder.head(encoder.features(images))

    return phi


def invert_encoder(encoder, code: Tensor, principal_point: Tensor | None = None, *, init: Tensor | None = None,
                   steps: int = 200, lr: float = 0.03, prior: str = "both", **kwargs) -> Inversion:
    """An image whose encoder code is ``code``: Mahendran & Vedaldi's optimisation on the encoder.

    Args:
        encoder: a :class:`~facerig.encoder.FaceEncoder` (e.g. :func:`facerig.encoder.load_encoder`).
        code: ``(B, D)`` target code vectors in the crop camera, e.g. ``encoder(photo, focal, pp)`` or a
            :class:`~facerig.model.GraphicCode`'s ``to_vector()``.
        principal_point: ``(B, 2)`` crop pixels (default: the crop's centre).
        init: ``(B, S, S, 3)`` start (default: mid-grey plus a little noise).
        steps, lr, prior, **kwargs: as :func:`facerig.inversion.invert`.

    Returns:
        :class:`~facerig.inversion.Inversion`; ``feature_error`` is the normalised error of the raw
        codes, ``info["code"]`` the final image's code vectors ``(B, D)``.
    """
    if hasattr(code, "to_vector"):
        code = code.to_vector()
    code = code.detach().float()
    B = code.shape[0]
    S = encoder.input_size
    if principal_point is None:
        principal_point = torch.full((B, 2), S / 2.0, dtype=code.dtype, device=code.device)
    target = raw_from_code(encoder, code, principal_point)
    res = invert(encoder_feature_map(encoder), target, (S, S), init=init, steps=steps, lr=lr, prior=prior, **kwargs)
    with torch.no_grad():
        f = code[:, encoder.code_size - 28:encoder.code_size - 27]
        res.info["code"] = encoder(res.image, f, principal_point)
    return res
