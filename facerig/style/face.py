"""Faces wearing a style: stylise a rig's UV albedo texture and render the animated rig with it.

A rig folder written by ``facerig rig VIDEO -o OUT/`` holds ``rig.glb`` (mesh, UVs, blendshapes as
morph targets, the texture embedded), ``texture.png`` (the de-lit UV albedo) and ``tracking.csv``
(per-frame blendshape weights). :func:`stylize_rig` stylises the texture inside the region the
mesh's UVs cover (a mask: texels outside it are kept, and the style statistics are those of the
face), writes ``texture.png`` and ``rig.glb`` with the new texture into another folder and renders
a preview through :func:`facerig.render.render_mesh`: the original and the stylised rig at a few
tracked expressions.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["uv_mask", "stylize_rig", "render_rig"]


def uv_mask(uvs: np.ndarray, faces: np.ndarray, size: tuple[int, int]) -> Tensor:
    """``(H, W)`` float mask (1 where a triangle of the UV layout covers the texel).

    Args:
        uvs: ``(V, 2)`` per-vertex UVs in [0, 1], origin top-left, v down (glTF).
        faces: ``(F, 3)`` triangles.
        size: ``(H, W)`` of the texture.
    """
    from facerig.render import rasterize

    H, W = size
    uv = torch.as_tensor(np.asarray(uvs), dtype=torch.float32)
    pix = torch.cat([uv[:, :1] * W, uv[:, 1:] * H, torch.ones(len(uv), 1)], 1)[None]
    frags = rasterize(pix, torch.as_tensor(np.asarray(faces)).long(), (H, W), perspective_correct=False)
    return (frags.pix_to_face[0] >= 0).float()


def _tracked_weights(path: Path, names: list, n: int) -> list[np.ndarray]:
    """Up to ``n`` weight vectors from tracking.csv: the widest jaw opening, the strongest
    expression, and evenly spaced frames."""
    if not path.is_file() or not names:
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return []
    W = np.array([[float(r.get(k) or 0.0) for k in names] for r in rows])
    picks = []
    if "jawOpen" in names:
        picks.append(int(np.argmax(W[:, names.index("jawOpen")])))
    picks.append(int(np.argmax(W.sum(1))))
    picks += [int(i) for i in np.linspace(0, len(W) - 1, n + 2)[1:-1]]
    out, seen = [], set()
    for i in picks:
        if i not in seen:
            seen.add(i)
            out.append(W[i])
    return out[:n]


def render_rig(mesh: dict, texture: Tensor, weights: list[np.ndarray] = (), size: int = 256) -> Tensor:
    """Render the rig frontally with a texture: ``(N, size, size, 3)`` float in [0, 1], the neutral
    face then one image per weight vector (morph targets applied).

    Args:
        mesh: :func:`facerig.model.glb.glb_mesh` of the rig (metres, glTF frame).
        texture: ``(Ht, Wt, 3)`` float RGB in [0, 1] (v down, as stored).
    """
    from facerig.face.decoder import SH_AMBIENT, make_camera
    from facerig.render import render_mesh

    dtype = torch.float32
    pos = torch.as_tensor(mesh["positions"], dtype=dtype) * 100.0  # cm
    faces = torch.as_tensor(mesh["faces"]).long()
    uvs = torch.as_tensor(mesh["uvs"], dtype=dtype).clone()
    uvs[:, 1] = 1.0 - uvs[:, 1]  # the renderer's sampler has v up
    shapes = [pos]
    if mesh["targets"] is not None:
        D = torch.as_tensor(mesh["targets"], dtype=dtype) * 100.0
        for w in weights:
            shapes.append(pos + torch.einsum("k,kvc->vc", torch.as_tensor(w, dtype=dtype), D))
    verts = torch.stack(shapes)
    centre = pos.mean(0)
    M = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype))
    extent = float((pos - centre).abs().max())
    vc = (verts - centre) @ M.T + torch.tensor([0.0, 0.0, 6.0 * extent], dtype=dtype)
    sh = torch.zeros(len(verts), 9, 3, dtype=dtype)
    sh[:, 0] = SH_AMBIENT * 0.9
    sh[:, 1] = 0.15 * SH_AMBIENT
    sh[:, 3] = 0.25 * SH_AMBIENT
    cam = make_camera(torch.full((len(verts),), 2.6 * size, dtype=dtype), (size, size))
    with torch.no_grad():
        out = render_mesh(vc, faces, cam, (size, size), sh_coeffs=sh, uvs=uvs, texture=texture.to(dtype),
                          background=0.18, antialias=False)
    return out.image.clamp(0, 1)


def stylize_rig(rig_dir, style, out=None, *, method: str = "flexible", preview_frames: int = 3, **kwargs) -> dict:
    """Stylise a rig's texture and write the stylised rig.

    Args:
        rig_dir: a folder written by ``facerig rig`` (``rig.glb``, ``texture.png``; ``tracking.csv``
            for the preview's expressions).
        style: a style image ``(H, W, 3)`` (or a list, mixed with ``mix=``).
        out: output folder (default ``rig_dir/style``); the rig folder itself is never modified.
        method: see :func:`facerig.style.stylize` (``kwargs`` go there too: intensity, model, ...).
        preview_frames: tracked expressions rendered besides the neutral face.

    Returns:
        ``{"texture": path, "rig": path, "preview": path, "seconds": float, "energy": {...}}``.

    Raises:
        ValueError: the folder is not a rig (no rig.glb / texture, or no UVs).
    """
    from facerig.io import write_image
    from facerig.model.glb import glb_mesh, replace_glb_texture
    from facerig.style.core import stylize
    from facerig.style.images import load_image

    rig_dir = Path(rig_dir)
    glb = rig_dir / "rig.glb"
    if not glb.is_file():
        raise ValueError(f"rig: {rig_dir} has no rig.glb; give a folder written by `facerig rig VIDEO -o OUT/`")
    mesh = glb_mesh(glb)
    if mesh["uvs"] is None:
        raise ValueError(f"rig: {glb} has no texture coordinates; build the rig with a texture")
    if (rig_dir / "texture.png").is_file():
        tex = load_image(rig_dir / "texture.png")
    elif mesh["texture"] is not None:
        import cv2

        bgr = cv2.imdecode(np.frombuffer(mesh["texture"], np.uint8), cv2.IMREAD_COLOR)
        tex = torch.from_numpy(bgr[:, :, ::-1].copy()).float() / 255.0
    else:
        raise ValueError(f"rig: {rig_dir} has no texture.png and {glb} embeds no texture")
    mask = uv_mask(mesh["uvs"], mesh["faces"], tex.shape[:2])
    res = stylize(tex, style, method, mask=mask, **kwargs)
    styled = res.image
    out = Path(out) if out is not None else rig_dir / "style"
    out.mkdir(parents=True, exist_ok=True)
    tex_path = write_image(out / "texture.png", styled)
    rig_path = replace_glb_texture(glb, out / "rig.glb", tex_path.read_bytes())
    weights = _tracked_weights(rig_dir / "tracking.csv", mesh["target_names"], preview_frames)
    a = render_rig(mesh, tex, weights)
    b = render_rig(mesh, styled, weights)
    S = a.shape[1]
    thumbs = [torch.nn.functional.interpolate(t.permute(2, 0, 1)[None], size=(S, S), mode="bilinear",
                                              antialias=True, align_corners=False)[0].permute(1, 2, 0)
              for t in (tex, styled)]
    top = torch.cat([thumbs[0], *a], dim=1)
    bottom = torch.cat([thumbs[1], *b], dim=1)
    prev = write_image(out / "preview.png", torch.cat([top, bottom], dim=0))
    return {"texture": tex_path, "rig": rig_path, "preview": prev, "seconds": res.seconds, "energy": res.energy}
