"""An albedo texture in the model's UV space, gathered from video frames and de-lit.

For every texel the surface point is found by rasterising the mesh in UV space; in each frame
the point is projected into the image, kept where it is visible (its depth matches the frame's
z-buffer) and front-facing, and its colour divided by the frame's estimated irradiance
(SH light at the surface normal) -- the de-lighting. Frames are averaged with weight
``cos(view angle)^2``; texels no frame saw keep the fitted albedo model's colour.
"""

from __future__ import annotations

import numpy as np
import torch

from facerig.face.decoder import make_camera
from facerig.render import interpolate, rasterize, sh_irradiance, vertex_normals

__all__ = ["TextureBuilder"]


class TextureBuilder:
    """Accumulate a de-lit UV albedo texture (size x size, top-left origin, v down = glTF).

    Args:
        faces: (F, 3) int64 triangles; uvs: (V, 2) per-vertex UVs in [0, 1] (v down).
        size: texture side in texels.
        fallback: (V, 3) per-vertex albedo used where no frame saw the surface.
    """

    def __init__(self, faces, uvs, size: int = 256, fallback=None):
        self.faces = torch.as_tensor(faces).long()
        uv = torch.as_tensor(uvs, dtype=torch.float64)
        self.size = S = int(size)
        pix = torch.cat([uv * S, torch.ones(uv.shape[0], 1, dtype=uv.dtype)], 1)[None]
        frags = rasterize(pix.float(), self.faces, (S, S), perspective_correct=False)
        self.face_id = frags.pix_to_face[0]  # (S, S)
        self.bary = frags.bary[0].double()  # (S, S, 3)
        self.inside = self.face_id >= 0
        self.sum = torch.zeros(S, S, 3, dtype=torch.float64)
        self.weight = torch.zeros(S, S, dtype=torch.float64)
        self.fallback = None
        if fallback is not None:
            fb = interpolate(torch.as_tensor(fallback, dtype=torch.float32)[None], frags, self.faces)[0]
            self.fallback = fb.double()
        self.frames = 0

    def _texel_attr(self, per_vertex: torch.Tensor) -> torch.Tensor:
        """(V, C) -> (N, C) at the covered texels."""
        f = self.faces[self.face_id[self.inside]]  # (N, 3)
        b = self.bary[self.inside]  # (N, 3)
        return (per_vertex[f] * b[..., None]).sum(1)

    @torch.no_grad()
    def add(self, image, verts_cam, focal: float, sh, principal_point=None, min_cos: float = 0.3) -> int:
        """Add one frame.

        Args:
            image: (H, W, 3) uint8 RGB (or float in [0, 1]).
            verts_cam: (V, 3) camera-frame vertices, cm (OpenCV frame).
            focal: pixels; principal_point: (cx, cy), default the image centre.
            sh: (9, 3) SH light of the frame (renderer basis).
            min_cos: texels seen at a grazing angle (cos below this) are skipped.
        Returns:
            the number of texels this frame contributed to.
        """
        img = torch.as_tensor(np.asarray(image))
        img = img.double() / 255.0 if img.dtype == torch.uint8 else img.double()
        H, W = img.shape[:2]
        v = torch.as_tensor(verts_cam, dtype=torch.float64)
        pp = None if principal_point is None else torch.as_tensor(principal_point, dtype=torch.float64).reshape(1, 2)
        cam = make_camera(torch.tensor([float(focal)], dtype=torch.float64), (H, W), pp)
        vp = cam.project(v[None])  # (1, V, 3) u, v, depth
        frags = rasterize(vp.float(), self.faces, (H, W))
        zbuf = frags.zbuf[0].double()  # (H, W)
        n = vertex_normals(v[None], self.faces)[0]
        P = self._texel_attr(v)  # (N, 3) camera-frame points
        N = self._texel_attr(n)
        N = N / N.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        q = cam.project(P[None])[0]
        view = -P / P.norm(dim=-1, keepdim=True)
        cos = (N * view).sum(-1)
        x, y = q[:, 0], q[:, 1]
        ok = (cos > min_cos) & (x > 1) & (y > 1) & (x < W - 2) & (y < H - 2)
        xi = x.clamp(0, W - 1).long()
        yi = y.clamp(0, H - 1).long()
        zb = zbuf[yi, xi]
        ok &= (zb > 0) & ((q[:, 2] - zb).abs() < 0.5)  # visible: depth within 5 mm of the z-buffer
        # bilinear colour
        xs, ys = (x - 0.5).clamp(0, W - 1.001), (y - 0.5).clamp(0, H - 1.001)
        x0, y0 = xs.floor().long(), ys.floor().long()
        fx, fy = (xs - x0)[:, None], (ys - y0)[:, None]
        col = (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
               + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)
        irr = sh_irradiance(N[None], torch.as_tensor(sh, dtype=torch.float64).reshape(1, 9, 3))[0]
        alb = col / irr.clamp(min=0.05)
        w = torch.where(ok, cos.clamp(min=0) ** 2, torch.zeros_like(cos))
        S = torch.zeros_like(self.sum)
        Wt = torch.zeros_like(self.weight)
        S[self.inside] = alb * w[:, None]
        Wt[self.inside] = w
        self.sum += S
        self.weight += Wt
        self.frames += 1
        return int(ok.sum())

    def texture(self, blend: float = 0.3) -> np.ndarray:
        """(size, size, 3) uint8 texture. Texels with total weight below ``blend`` fade into the
        fallback albedo; texels outside the UV charts get the mean colour (no dark seams)."""
        S = self.size
        seen = self.weight > 0
        avg = torch.zeros(S, S, 3, dtype=torch.float64)
        avg[seen] = self.sum[seen] / self.weight[seen][:, None]
        if self.fallback is not None:
            a = (self.weight / blend).clamp(max=1.0)[..., None]
            tex = a * avg + (1 - a) * self.fallback
        else:
            tex = avg
        inside = self.inside
        if inside.any():
            mean = tex[inside].mean(0)
            tex[~inside] = mean
        tex = tex.clamp(0, 1).numpy()
        out = (tex * 255 + 0.5).astype(np.uint8)
        # grow the charts over the background so bilinear / mip lookups at seams stay skin coloured
        import cv2
        mask = (~inside.numpy()).astype(np.uint8)
        if mask.any() and (~mask.astype(bool)).any():
            out = cv2.inpaint(out, mask, 3, cv2.INPAINT_TELEA) if mask.mean() < 0.95 else out
        return out

    @property
    def coverage(self) -> float:
        """Fraction of the UV charts' texels seen by at least one frame."""
        return float((self.weight[self.inside] > 0).double().mean()) if self.inside.any() else 0.0
