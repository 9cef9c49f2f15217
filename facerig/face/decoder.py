"""The face decoder ``g(y)``: graphic code -> camera-space mesh -> pixels -> image, alpha, landmarks.

Shared by the optimisation-based fitter (:mod:`facerig.face.fit`) and the encoder training
(MoFA): a thin layer over :mod:`facerig.model` (shape, albedo, landmark maps, masks) and
:mod:`facerig.render` (camera, rasteriser, interpolation, SH shading, antialiasing).

Frames and units
----------------
* Model frame (see :mod:`facerig.model`), centimetres.
* Camera frame: OpenCV (x right, y down, z forward),
  ``X_cam = R(code.rotation) @ MODEL_TO_OPENCV @ X_model + code.translation``
  (:meth:`facerig.model.GraphicCode.transform`).
* Pixel frame: x right, y down, the centre of pixel (row i, column j) at ``(j + 0.5, i + 0.5)``;
  square pixels of focal ``code.focal``; the principal point is the image centre unless
  ``principal_point`` is given (e.g. for a crop of a larger photo, whose principal point is the
  photo's centre mapped into the crop).
* SH light: ``code.sh`` (B, 9, 3) in the renderer's basis (:mod:`facerig.render.shading`);
  :data:`SH_AMBIENT` in ``sh[:, 0]`` (all channels) gives irradiance 1 (colour = albedo).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from facerig.model import FaceModel, GraphicCode, load_model
from facerig.render import PerspectiveCamera, antialias, interpolate, rasterize, sh_irradiance, vertex_normals
from facerig.render.mesh import face_adjacency
from facerig.render.shading import SH_CONSTANTS, check_shading, pixel_sh_shading

__all__ = ["FaceDecoder", "DecoderOutput", "SH_AMBIENT", "ambient_sh", "make_camera"]

SH_AMBIENT = 1.0 / SH_CONSTANTS[0]
"""``sh[:, 0]`` value for which :func:`facerig.render.sh_irradiance` is exactly 1 (renderer's basis)."""


def ambient_sh(batch: int, level: float = 1.0, dtype=torch.float32, device=None) -> Tensor:
    """(B, 9, 3) SH coefficients of a uniform (ambient) light of irradiance ``level``."""
    sh = torch.zeros(batch, 9, 3, dtype=dtype, device=device)
    sh[:, 0] = SH_AMBIENT * level
    return sh


def make_camera(focal: Tensor, image_size, principal_point: Tensor | None = None) -> PerspectiveCamera:
    """OpenCV pinhole camera with square pixels.

    Args:
        focal: (B, 1) or (B,) focal length in pixels.
        image_size: (H, W) pixels.
        principal_point: optional (B, 2) or (2,) ``(cx, cy)`` in pixels; default the image centre
            ``(W / 2, H / 2)``.
    """
    f = focal.reshape(-1)
    H, W = (int(s) for s in image_size)
    if principal_point is None:
        cx = torch.full_like(f, W / 2.0)
        cy = torch.full_like(f, H / 2.0)
    else:
        pp = torch.as_tensor(principal_point, dtype=f.dtype, device=f.device).reshape(-1, 2)
        cx, cy = pp[:, 0].expand_as(f), pp[:, 1].expand_as(f)
    return PerspectiveCamera(f, f, cx, cy)


@dataclass
class DecoderOutput:
    """What :meth:`FaceDecoder.forward` returns (batch B, image H x W).

    Attributes:
        image: (B, H, W, 3) rendered colour composited over ``background`` (float).
        alpha: (B, H, W, 1) coverage in [0, 1] (fractional on antialiased silhouettes).
        skin: (B, H, W, 1) the model's ``skin`` region weight at each covered pixel (0 outside).
        verts_cam: (B, V, 3) camera-frame vertices, cm.
        verts_pix: (B, V, 3) pixel-space vertices ``(u, v, depth cm)``.
        landmarks: (B, L, 2) projected landmarks (``landmark_kind`` map), pixels.
        albedo: (B, V, 3) per-vertex albedo (not clamped).
        fragments: the rasteriser's :class:`~facerig.render.Fragments`.
    """

    image: Tensor
    alpha: Tensor
    skin: Tensor
    verts_cam: Tensor
    verts_pix: Tensor
    landmarks: Tensor
    albedo: Tensor
    fragments: object


class FaceDecoder(nn.Module):
    """``g(y)``: a :class:`~facerig.model.GraphicCode` -> mesh, projected landmarks and a rendered image.

    Example::

        dec = FaceDecoder("default")
        code = dec.zero_code(1, image_size=224)
        out = dec(code, (224, 224))              # DecoderOutput
        lm = dec.landmarks2d(code, (224, 224))   # (1, 68, 2) pixels

    Args:
        model: a :class:`~facerig.model.FaceModel` or a name / path for :func:`facerig.model.load_model`.
        landmark_kind: default landmark map for :attr:`DecoderOutput.landmarks` ("ibug68" or
            "mediapipe468").
        dtype, device: move the model there (default: the model's own).
        shading: default of :meth:`forward`'s ``shading``: "vertex" (default; Gouraud: SH
            irradiance x albedo at the vertices, colours interpolated) or "pixel" (Phong-style:
            normals and albedo interpolated with the perspective-correct barycentrics, the normal
            normalised and the SH irradiance evaluated per pixel,
            :func:`facerig.render.shading.pixel_sh_shading`).
    """

    def __init__(self, model: FaceModel | str = "default", landmark_kind: str = "ibug68", dtype=None, device=None,
                 shading: str = "vertex"):
        super().__init__()
        self.shading = check_shading(shading)
        if not isinstance(model, FaceModel):
            model = load_model(model)
        if dtype is not None or device is not None:
            model = model.to(dtype=dtype or model.dtype, device=device or model.device)
        if landmark_kind not in model.landmark_maps:
            raise ValueError(f"landmark_kind: {landmark_kind!r} is not one of {sorted(model.landmark_maps)}")
        self.model = model
        self.landmark_kind = landmark_kind
        self.faces = model.faces
        self.adjacency = face_adjacency(model.faces)
        skin = model.masks.get("skin")
        self.skin_weight = skin if skin is not None else torch.ones(model.n_vertices, dtype=model.dtype)

    # ------------------------------------------------------------------ code helpers
    @property
    def sizes(self) -> dict:
        """Part sizes of the code vector (:meth:`facerig.model.GraphicCode.sizes_for`)."""
        return GraphicCode.sizes_for(self.model)

    def zero_code(self, batch: int, image_size: int = 224, dtype=None, device=None) -> GraphicCode:
        """Frontal mean face (:meth:`GraphicCode.zeros`) under unit ambient light in the renderer's SH basis."""
        code = GraphicCode.zeros(batch, self.model, image_size=image_size, dtype=dtype, device=device)
        code.sh = ambient_sh(batch, 1.0, code.sh.dtype, code.sh.device)
        return code

    def as_code(self, y) -> GraphicCode:
        """A :class:`GraphicCode` from a code or a (B, D) vector in the ``to_vector`` layout."""
        if isinstance(y, GraphicCode):
            return y
        return GraphicCode.from_vector(y, self.sizes)

    # ------------------------------------------------------------------ geometry
    def vertices(self, y) -> Tensor:
        """Camera-frame vertices (B, V, 3) cm of a code (or code vector)."""
        code = self.as_code(y)
        return code.transform(self.model.shape(code.identity, code.expression))

    def project(self, verts_cam: Tensor, focal: Tensor, image_size, principal_point=None) -> Tensor:
        """Camera-frame points (B, N, 3) -> pixel-space ``(u, v, depth)`` (B, N, 3)."""
        return make_camera(focal, image_size, principal_point).project(verts_cam)

    def landmarks2d(self, y, image_size, principal_point=None, kind: str | None = None) -> Tensor:
        """Projected landmarks (B, L, 2) in pixels (``kind`` default :attr:`landmark_kind`).

        Only the landmark vertices are transformed and projected (cheap: used by the landmark
        energy and the LM Jacobians).
        """
        code = self.as_code(y)
        lmap = self.model.landmark_maps[kind or self.landmark_kind]
        verts = self.model.shape(code.identity, code.expression)
        lm_model = lmap.apply(verts)
        lm_cam = code.transform(lm_model)
        return self.project(lm_cam, code.focal, image_size, principal_point)[..., :2]

    def albedo(self, y) -> Tensor:
        """Per-vertex albedo (B, V, 3)."""
        return self.model.albedo(self.as_code(y).albedo)

    # ------------------------------------------------------------------ rendering
    def forward(self, y, image_size, principal_point=None, background=None, antialias_edges: bool = False,
                shade: bool = True, shading: str | None = None) -> DecoderOutput:
        """Render the faces of code ``y``.

        Args:
            y: :class:`GraphicCode` or (B, D) code vector.
            image_size: (H, W) pixels.
            principal_point: optional (B, 2) / (2,) ``(cx, cy)`` pixels (default image centre).
            background: (B, H, W, 3) image, a float, or None (black).
            antialias_edges: run :func:`facerig.render.antialias` (silhouette gradients; slower).
            shade: apply the SH light (``False``: colour = albedo).
            shading: "vertex" (Gouraud) or "pixel" (per-pixel SH on interpolated normals); default
                the decoder's :attr:`shading` (see the class).

        Returns:
            :class:`DecoderOutput`.
        """
        code = self.as_code(y)
        H, W = (int(s) for s in image_size)
        verts = self.vertices(code)
        cam = make_camera(code.focal, (H, W), principal_point)
        verts_pix = cam.project(verts)
        faces = self.faces.to(verts.device)
        frags = rasterize(verts_pix, faces, (H, W), perspective_correct=True)
        shading = self.shading if shading is None else shading
        check_shading(shading)
        alb = self.albedo(code)
        skin = self.skin_weight.to(dtype=verts.dtype, device=verts.device)[None, :, None].expand(verts.shape[0], -1, 1)
        if shade and shading == "pixel":
            both = interpolate(torch.cat([alb, vertex_normals(verts, faces), skin], -1), frags, faces)
            rgb, skin_pix = pixel_sh_shading(both[..., 3:6], both[..., :3], code.sh), both[..., 6:]
        else:
            col = alb * sh_irradiance(vertex_normals(verts, faces), code.sh) if shade else alb
            both = interpolate(torch.cat([col, skin], -1), frags, faces)
            rgb, skin_pix = both[..., :3], both[..., 3:]
        mask = frags.mask[..., None].to(verts.dtype)
        if background is None:
            image = rgb * mask
        else:
            if not isinstance(background, Tensor):
                background = torch.tensor(float(background), dtype=verts.dtype, device=verts.device)
            image = mask * rgb + (1 - mask) * background.to(verts.dtype)
        alpha = mask
        if antialias_edges:
            out = antialias(torch.cat([image, alpha], -1), frags, verts_pix, faces, self.adjacency.to(verts.device))
            image, alpha = out[..., :3], out[..., 3:]
        lmap = self.model.landmark_maps[self.landmark_kind]
        landmarks = lmap.apply(verts_pix[..., :2])
        # landmarks of a perspective projection: project the 3D landmark (exact for barycentric maps)
        if not lmap.is_index:
            landmarks = cam.project(lmap.apply(verts))[..., :2]
        return DecoderOutput(image=image, alpha=alpha, skin=skin_pix * mask, verts_cam=verts, verts_pix=verts_pix,
                             landmarks=landmarks, albedo=alb, fragments=frags)
