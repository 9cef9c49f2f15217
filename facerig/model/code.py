"""The graphic code: every parameter the face decoder g(y) needs, as one dataclass.

Layout of :meth:`GraphicCode.to_vector` (one row per batch element, in this order):

====================  ===========  ==========================================================
part                  length       meaning
====================  ===========  ==========================================================
identity              K_id         model identity coefficients, prior N(0, identity_std^2)
expression            K_exp        model expression coefficients (blendshape weights)
albedo                K_alb        model albedo coefficients, prior N(0, albedo_std^2)
rotation              3            axis-angle (radians), in the camera frame (see below)
translation           3            cm, camera frame (OpenCV: x right, y down, z forward)
focal                 1            focal length in pixels (square pixels)
sh                    27           9 SH coefficients x RGB, flattened row-major from (9, 3)
====================  ===========  ==========================================================

Pose: camera-frame vertices are ``X_cam = R(rotation) @ MODEL_TO_OPENCV @ X_model + translation``.
``MODEL_TO_OPENCV`` (``diag(1, -1, -1)``) turns the model frame (x to the subject's left, y up,
z out of the face) into the OpenCV frame facing the camera, so ``rotation = 0`` is a frontal,
upright face; the rotation is applied about the camera axes and about the model origin (the
head's centre, about 5-8 cm behind the nose tip): a positive angle about camera +y (down) turns
the face toward image left; a positive angle about camera +x (right) makes the face look down.
The principal point is the image centre (the renderer's concern).

SH illumination: ``sh`` (B, 9, 3) are second-order real SH irradiance coefficients per colour
channel in the basis of ``facerig.render.shading`` (MoFA / Deep3DFaceRecon constants: basis
``Y_k(n) * a_k * c_k``, band-0 value ``pi / sqrt(4 pi) = 0.8862``), evaluated on camera-frame
normals; shading = albedo * sum_k sh[k] * basis_k(n). :data:`SH_UNIT_AMBIENT` in ``sh[:, 0]``
(= 1 / 0.8862 = 2 / sqrt(pi)) gives irradiance 1 (shaded colour == albedo). The constant is
checked against the renderer in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from facerig.render.transforms import axis_angle_to_matrix

__all__ = ["GraphicCode", "MODEL_TO_OPENCV", "SH_UNIT_AMBIENT", "model_to_opencv", "DEFAULT_DISTANCE_CM",
           "DEFAULT_FOCAL_FACTOR"]

MODEL_TO_OPENCV = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
"""3x3 rotation (det +1) from the model frame (x subject's left, y up, z toward the viewer) to
an OpenCV camera frame (x right, y down, z forward) in which the face looks at the camera."""

SH_UNIT_AMBIENT = 2.0 / math.sqrt(math.pi)  # 1 / (pi * Y00) = 1.1284
"""``sh[:, 0]`` value (all channels) for which the irradiance is 1 (shading == albedo)."""

DEFAULT_DISTANCE_CM = 50.0
"""Camera distance of the head origin in :meth:`GraphicCode.zeros` (cm)."""

DEFAULT_FOCAL_FACTOR = 2.5
"""Default focal length in units of the image size: f = 2.5 * image_size pixels (about 23 deg
field of view): at 50 cm a face fills about 85 % of the image height."""


def model_to_opencv(dtype=torch.float32, device=None) -> torch.Tensor:
    """:data:`MODEL_TO_OPENCV` as a (3, 3) tensor of the given dtype / device."""
    return MODEL_TO_OPENCV.to(dtype=dtype, device=device)


_PARTS = ("identity", "expression", "albedo", "rotation", "translation", "focal", "sh")


@dataclass
class GraphicCode:
    """The graphic code y of a batch of faces (all tensors share batch size, dtype and device).

    Attributes:
        identity: (B, K_id); expression: (B, K_exp); albedo: (B, K_alb) model coefficients.
        rotation: (B, 3) axis-angle radians, camera frame, applied after MODEL_TO_OPENCV.
        translation: (B, 3) cm, camera frame.
        focal: (B, 1) pixels.
        sh: (B, 9, 3) SH irradiance coefficients (see module docstring).
    """

    identity: torch.Tensor
    expression: torch.Tensor
    albedo: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    focal: torch.Tensor
    sh: torch.Tensor

    def __post_init__(self):
        b = self.identity.shape[0] if self.identity.ndim == 2 else None
        expect = {"identity": 2, "expression": 2, "albedo": 2, "rotation": 2, "translation": 2, "focal": 2, "sh": 3}
        for f in _PARTS:
            t = getattr(self, f)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{f}: expected a torch.Tensor, got {type(t).__name__}")
            if t.ndim != expect[f] or t.shape[0] != b:
                raise ValueError(f"{f}: expected a ({b}, ...) tensor with {expect[f]} dims, got {tuple(t.shape)}")
        for f, last in (("rotation", (3,)), ("translation", (3,)), ("focal", (1,)), ("sh", (9, 3))):
            if tuple(getattr(self, f).shape[1:]) != last:
                want = ", ".join(map(str, last))
                raise ValueError(f"{f}: expected shape (B, {want}), got {tuple(getattr(self, f).shape)}")

    # -------------------------------------------------------------------- sizes and layout
    @property
    def batch_size(self) -> int:
        """B, the batch size."""
        return int(self.identity.shape[0])

    @property
    def sizes(self) -> dict:
        """Lengths of each part in :meth:`to_vector` order (``{"identity": K_id, ...}``)."""
        return {"identity": self.identity.shape[1], "expression": self.expression.shape[1],
                "albedo": self.albedo.shape[1], "rotation": 3, "translation": 3, "focal": 1, "sh": 27}

    @staticmethod
    def sizes_for(model) -> dict:
        """Part lengths for a :class:`~facerig.model.FaceModel`."""
        return {"identity": model.n_identity, "expression": model.n_expression, "albedo": model.n_albedo,
                "rotation": 3, "translation": 3, "focal": 1, "sh": 27}

    @staticmethod
    def slices(sizes: dict) -> dict:
        """``{part: slice}`` into the flat vector for the given part sizes."""
        out, start = {}, 0
        for p in _PARTS:
            out[p] = slice(start, start + int(sizes[p]))
            start += int(sizes[p])
        return out

    def to_vector(self) -> torch.Tensor:
        """(B, D) flat vector in the documented layout, D = K_id + K_exp + K_alb + 34."""
        return torch.cat([getattr(self, p).reshape(self.batch_size, -1) for p in _PARTS], 1)

    @classmethod
    def from_vector(cls, vec: torch.Tensor, sizes) -> "GraphicCode":
        """Inverse of :meth:`to_vector`; ``sizes`` is a dict from :attr:`sizes` /
        :meth:`sizes_for` or a FaceModel. Differentiable (views into ``vec``)."""
        if not isinstance(sizes, dict):
            sizes = cls.sizes_for(sizes)
        sl = cls.slices(sizes)
        total = sl["sh"].stop
        if not isinstance(vec, torch.Tensor) or vec.ndim != 2 or vec.shape[1] != total:
            raise ValueError(f"vec: expected shape (B, {total}), got {tuple(getattr(vec, 'shape', ()))}")
        parts = {p: vec[:, sl[p]] for p in _PARTS}
        parts["sh"] = parts["sh"].reshape(-1, 9, 3)
        return cls(**parts)

    # -------------------------------------------------------------------- constructors
    @classmethod
    def zeros(cls, batch: int, model, image_size: int = 224, dtype=None, device=None) -> "GraphicCode":
        """A frontal, upright, neutral mean face at :data:`DEFAULT_DISTANCE_CM` (its mean-shape
        centroid on the optical axis) under unit ambient light, focal
        ``DEFAULT_FOCAL_FACTOR * image_size`` px."""
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch: expected a positive int, got {batch!r}")
        dtype = dtype or model.dtype
        device = device or model.device
        z = lambda k: torch.zeros(batch, k, dtype=dtype, device=device)  # noqa: E731
        c = model.mean.to(dtype=dtype, device=device).mean(0)
        centre = model_to_opencv(dtype, device) @ c
        t = torch.stack([-centre[0], -centre[1], DEFAULT_DISTANCE_CM - centre[2]]).expand(batch, 3).clone()
        sh = torch.zeros(batch, 9, 3, dtype=dtype, device=device)
        sh[:, 0] = SH_UNIT_AMBIENT
        return cls(identity=z(model.n_identity), expression=z(model.n_expression), albedo=z(model.n_albedo),
                   rotation=z(3), translation=t, focal=torch.full((batch, 1), DEFAULT_FOCAL_FACTOR * image_size,
                                                                  dtype=dtype, device=device), sh=sh)

    def to(self, *args, **kwargs) -> "GraphicCode":
        """Every part moved / cast like ``torch.Tensor.to``."""
        return GraphicCode(**{p: getattr(self, p).to(*args, **kwargs) for p in _PARTS})

    def detach(self) -> "GraphicCode":
        """Every part detached from the autograd graph."""
        return GraphicCode(**{p: getattr(self, p).detach() for p in _PARTS})

    def clone(self) -> "GraphicCode":
        """A deep copy of every part."""
        return GraphicCode(**{p: getattr(self, p).clone() for p in _PARTS})

    def requires_grad_(self, flag: bool = True) -> "GraphicCode":
        """Set ``requires_grad`` on every part (in place); returns self."""
        for p in _PARTS:
            getattr(self, p).requires_grad_(flag)
        return self

    def __getitem__(self, idx) -> "GraphicCode":
        """Batch slicing / indexing (keeps the batch dimension for ints)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return GraphicCode(**{p: getattr(self, p)[idx] for p in _PARTS})

    # -------------------------------------------------------------------- geometry
    def rotation_matrix(self) -> torch.Tensor:
        """(B, 3, 3) full model->camera rotation ``R(rotation) @ MODEL_TO_OPENCV``."""
        r = axis_angle_to_matrix(self.rotation)
        return r @ model_to_opencv(r.dtype, r.device)

    def transform(self, verts_model: torch.Tensor) -> torch.Tensor:
        """Model-frame vertices (B, V, 3) cm -> camera frame (B, V, 3) cm."""
        return verts_model @ self.rotation_matrix().transpose(1, 2) + self.translation[:, None]

    # -------------------------------------------------------------------- priors
    @staticmethod
    def prior_scales(model, *, rotation_std: float = 0.5, translation_std=(10.0, 10.0, 30.0),
                     focal_std: float | None = None, focal: float | None = None, sh_std: float = 1.0,
                     image_size: int = 224, dtype=None, device=None) -> torch.Tensor:
        """(D,) per-coordinate standard deviations in the :meth:`to_vector` layout, so that the
        Gaussian prior energy of a code vector ``v`` about :meth:`prior_means` ``m`` is
        ``(((v - m) / scales) ** 2).sum(-1)``.

        Model coefficients use the model's stds; the pose, camera and light entries are weak
        default priors (rotation 0.5 rad, translation (10, 10, 30) cm, focal 30 % of the default
        focal, SH 1.0) that callers may override.
        """
        dtype = dtype or model.dtype
        device = device or model.device
        f0 = focal if focal is not None else DEFAULT_FOCAL_FACTOR * image_size
        fs = focal_std if focal_std is not None else 0.3 * f0
        parts = [model.identity_std, model.expression_std, model.albedo_std,
                 torch.full((3,), rotation_std), torch.as_tensor(translation_std, dtype=torch.float64),
                 torch.tensor([fs]), torch.full((27,), sh_std)]
        return torch.cat([p.to(dtype=dtype, device=device).reshape(-1) for p in parts])

    @classmethod
    def prior_means(cls, model, image_size: int = 224, dtype=None, device=None) -> torch.Tensor:
        """(D,) prior means: the :meth:`zeros` code as a vector."""
        return cls.zeros(1, model, image_size, dtype, device).to_vector()[0]

    @staticmethod
    def prior_energy(vec: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) ``sum(((vec - means) / scales)^2)`` for code vectors (B, D)."""
        d = vec if means is None else vec - means
        return ((d / scales) ** 2).sum(-1)

