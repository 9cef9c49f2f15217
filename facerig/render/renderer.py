"""High-level mesh rendering: camera -> rasterise -> interpolate/texture -> SH shading -> composite."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .antialias import antialias as _antialias
from .interpolate import interpolate, sample_texture
from .mesh import face_adjacency
from .raster import Fragments, rasterize
from .shading import blinn_phong, check_shading, composite, pixel_sh_shading, sh_irradiance, vertex_normals

__all__ = ["RenderOutput", "render_mesh", "Renderer"]


@dataclass
class RenderOutput:
    """Result of :func:`render_mesh`.

    Attributes:
        image: (B, H, W, 3) composited colour (float, in [0, 1] for albedo/light in range).
        alpha: (B, H, W, 1) coverage (1 inside, 0 outside; fractional on antialiased silhouettes).
        fragments: the :class:`~facerig.render.Fragments` of the hard rasterisation.
        verts_pix: (B, V, 3) pixel-space vertices ``(u, v, depth)`` that were rasterised.
    """

    image: torch.Tensor
    alpha: torch.Tensor
    fragments: Fragments
    verts_pix: torch.Tensor


def render_mesh(
    verts: torch.Tensor,
    faces: torch.Tensor,
    camera,
    image_size,
    colors: torch.Tensor | None = None,
    sh_coeffs: torch.Tensor | None = None,
    uvs: torch.Tensor | None = None,
    uv_faces: torch.Tensor | None = None,
    texture: torch.Tensor | None = None,
    background: torch.Tensor | float | None = None,
    shading: str = "vertex",
    antialias: bool = True,
    cull_backfaces: bool = False,
    specular: dict | None = None,
    adjacency: torch.Tensor | None = None,
    z_near: float = 1e-3,
) -> RenderOutput:
    """Render camera-space meshes with per-vertex colours or a UV texture under SH light.

    Args:
        verts: (B, V, 3) camera-space vertices (OpenCV frame: x right, y down, z forward; any
            length unit, e.g. cm).
        faces: (F, 3) int64, counter-clockwise seen from outside.
        camera: :class:`~facerig.render.PerspectiveCamera` or :class:`~facerig.render.OrthographicCamera`.
        image_size: (H, W).
        colors: (B, V, 3) or (V, 3) per-vertex albedo in [0, 1]. Default: 0.7 grey.
        sh_coeffs: (B, 9, 3) or (B, 27) SH illumination (see :mod:`facerig.render.shading`);
            None = unlit (colour = albedo).
        uvs: (V, 2) / (B, V, 2) per-vertex UVs, or (T, 2) with ``uv_faces`` (F, 3) per-corner UVs.
        texture: (B, Ht, Wt, 3) or (Ht, Wt, 3) albedo texture (used instead of ``colors``).
        background: (B, H, W, 3) image, (3,) colour, float, or None (black).
        shading: "vertex" (Gouraud: light computed per vertex then interpolated; fastest; the
            MoFA / Deep3DFaceRecon choice) or "pixel" (normals interpolated, light per pixel).
            With a texture the light is always per pixel (irradiance may be per vertex).
        antialias: apply :func:`facerig.render.antialias` to colour and alpha (gives silhouette
            gradients).
        cull_backfaces: skip faces turned away from the camera.
        specular: optional Blinn-Phong dict ``{"light_dir": (B, 3), "shininess": float,
            "strength": float}`` (camera frame), added per pixel.
        adjacency: optional cached :func:`facerig.render.face_adjacency` (F, 3).
        z_near: near-plane depth.

    Returns:
        :class:`RenderOutput`.
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (B, V, 3) camera-space vertices, got {tuple(verts.shape)}")
    check_shading(shading)
    B, V, _ = verts.shape
    verts_pix = camera.project(verts)
    frags = rasterize(
        verts_pix, faces, image_size, perspective_correct=camera.perspective_correct,
        cull_backfaces=cull_backfaces, z_near=z_near,
    )
    mask = frags.mask[..., None].to(verts.dtype)
    rgb = None
    need_normals = sh_coeffs is not None or specular is not None
    normals = vertex_normals(verts, faces) if need_normals else None
    if texture is not None:
        if uvs is None:
            raise ValueError("texture needs uvs")
        uv = interpolate(uvs, frags, uv_faces if uv_faces is not None else faces)
        albedo = sample_texture(texture, uv)
        if sh_coeffs is not None:
            if shading == "vertex":
                rgb = albedo * interpolate(sh_irradiance(normals, sh_coeffs), frags, faces)
            else:
                rgb = pixel_sh_shading(interpolate(normals, frags, faces), albedo, sh_coeffs)
        else:
            rgb = albedo
    else:
        if colors is None:
            colors = torch.full((B, V, 3), 0.7, dtype=verts.dtype, device=verts.device)
        elif colors.ndim == 2:
            colors = colors[None].expand(B, -1, -1)
        # hot path: per-vertex colour, composited over the background inside interpolate()
        fast_bg = specular is None and (background is None or not isinstance(background, torch.Tensor) or background.ndim in (1, 4))
        if sh_coeffs is None or shading == "vertex":
            vcol = colors if sh_coeffs is None else colors * sh_irradiance(normals, sh_coeffs)
            if fast_bg:
                bg = 0.0 if background is None else background
                if isinstance(bg, torch.Tensor) and bg.ndim == 4 and bg.shape[-1] != 3:
                    raise ValueError(f"background must have 3 channels, got {tuple(bg.shape)}")
                image = interpolate(vcol, frags, faces, background=bg)
                rgb = None
            else:
                rgb = interpolate(vcol, frags, faces)
        else:
            both = interpolate(torch.cat([colors, normals], -1), frags, faces)
            rgb = pixel_sh_shading(both[..., 3:], both[..., :3], sh_coeffs)
    if specular is not None:
        both = interpolate(torch.cat([normals, verts], -1), frags, faces)
        n_pix = torch.nn.functional.normalize(both[..., :3], dim=-1, eps=1e-12)
        rgb = rgb + blinn_phong(
            n_pix, both[..., 3:], specular["light_dir"], specular.get("shininess", 32.0), specular.get("strength", 0.2)
        ) * mask
    if rgb is not None:
        image = composite(rgb, mask, background)
    alpha = mask
    if antialias:
        both = _antialias(torch.cat([image, alpha], -1), frags, verts_pix, faces, adjacency, z_near=z_near)
        image, alpha = both[..., :3], both[..., 3:]
    return RenderOutput(image, alpha, frags, verts_pix)


class Renderer(torch.nn.Module):
    """Module wrapper of :func:`render_mesh` that holds the faces, their adjacency and the settings.

    Example::

        r = Renderer(faces, image_size=(224, 224))
        out = r(verts_cam, camera, colors=albedo, sh_coeffs=gamma, background=photo)
    """

    def __init__(self, faces: torch.Tensor, image_size, shading: str = "vertex", antialias: bool = True,
                 cull_backfaces: bool = False, z_near: float = 1e-3, uv_faces: torch.Tensor | None = None):
        super().__init__()
        faces = torch.as_tensor(faces, dtype=torch.int64)
        self.register_buffer("faces", faces, persistent=False)
        self.register_buffer("adjacency", face_adjacency(faces), persistent=False)
        self.register_buffer("uv_faces", None if uv_faces is None else torch.as_tensor(uv_faces, dtype=torch.int64), persistent=False)
        self.image_size = tuple(int(s) for s in image_size)
        self.shading, self.antialias, self.cull_backfaces, self.z_near = shading, antialias, cull_backfaces, z_near

    def forward(self, verts, camera, colors=None, sh_coeffs=None, uvs=None, texture=None, background=None, specular=None):
        """See :func:`render_mesh`; returns a :class:`RenderOutput`."""
        return render_mesh(
            verts, self.faces, camera, self.image_size, colors=colors, sh_coeffs=sh_coeffs, uvs=uvs,
            uv_faces=self.uv_faces, texture=texture, background=background, shading=self.shading,
            antialias=self.antialias, cull_backfaces=self.cull_backfaces, specular=specular,
            adjacency=self.adjacency, z_near=self.z_near,
        )
