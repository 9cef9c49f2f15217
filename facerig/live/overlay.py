"""Overlay pictures of live frames (the window and overlay.mp4 use the same code).

Modes: "shaded" (the fitted face rendered with its albedo under the frame's estimated SH light,
blended over the frame), "textured" (the rig's texture when ``--rig`` has one, else as shaded),
"wireframe" (the fitted mesh's edges), "landmarks" (the detected 468 points). A HUD line (fps,
latency, dropped frames, mode) is drawn when ``hud`` is given.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OVERLAY_MODES", "draw_overlay", "draw_hud"]

OVERLAY_MODES = ("shaded", "textured", "wireframe", "landmarks")


def _code(tracker, live):
    """The tracker's code of the frame with the output (smoothed) weights and pose."""
    import torch

    tr = tracker._tracker
    y = live.code.clone()
    sl = tr.sl
    y[0, sl["expression"]] = torch.as_tensor(live.weights, dtype=y.dtype)
    y[0, sl["rotation"]] = torch.as_tensor(live.rotation, dtype=y.dtype)
    y[0, sl["translation"]] = torch.as_tensor(live.translation, dtype=y.dtype)
    return y


def draw_overlay(tracker, live, mode: str = "shaded", hud: dict | None = None) -> np.ndarray:
    """Picture of one processed frame.

    Args:
        tracker: the :class:`facerig.live.LiveTracker` that made ``live``.
        live: a :class:`facerig.live.LiveFrame`.
        mode: one of :data:`OVERLAY_MODES`.
        hud: optional ``{"fps": .., "latency_ms": .., "dropped": ..}`` drawn as a text line.

    Returns:
        (H, W, 3) uint8 RGB (the frame itself where there is no face).
    """
    import cv2
    import torch

    if mode not in OVERLAY_MODES:
        raise ValueError(f"mode: expected one of {', '.join(OVERLAY_MODES)}, got {mode!r}")
    img = live.rgb.copy()
    H, W = img.shape[:2]
    if live.found and live.code is not None and tracker._tracker is not None:
        tr = tracker._tracker
        dec = tracker.decoder
        if mode == "landmarks":
            from facerig.landmarks import draw_landmarks

            img = draw_landmarks(img, live.landmarks, color=(0, 255, 0), radius=1.0)
        else:
            with torch.no_grad():
                y = _code(tracker, live)
                code = dec.as_code(y)
                verts = dec.vertices(code)
            if mode == "wireframe":
                with torch.no_grad():
                    pix = dec.project(verts, code.focal, (H, W), tr.pp)[0, :, :2].numpy()
                faces = dec.faces.cpu().numpy()
                # back faces out: the projected triangle's winding (counter-clockwise from outside)
                p = pix[faces]
                cross = ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
                         - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0]))
                tri = np.round((p[cross < 0] - 0.5) * 16).astype(np.int32)
                cv2.polylines(img, list(tri), True, (80, 220, 255), 1, cv2.LINE_AA, shift=4)
            else:
                from facerig.face import make_camera
                from facerig.render import render_mesh

                m = dec.model
                colors = m.albedo_mean.clamp(0, 1)[None]
                tex = uvs = None
                if mode == "textured" and tracker.texture is not None and m.uvs is not None:
                    tex = torch.as_tensor(tracker.texture, dtype=verts.dtype) / 255.0
                    uvs = m.uvs.to(verts.dtype).clone()
                    uvs[:, 1] = 1.0 - uvs[:, 1]  # the model's v points down; the sampler's up
                cam = make_camera(code.focal, (H, W), tr.pp)
                with torch.no_grad():
                    o = render_mesh(verts, dec.faces, cam, (H, W), colors=colors, sh_coeffs=code.sh, uvs=uvs,
                                    texture=tex, antialias=False)
                a = o.alpha[0].numpy() * 0.85
                img = np.clip(a * o.image[0].clamp(0, 1).numpy() * 255.0 + (1 - a) * img, 0, 255).astype(np.uint8)
    elif not live.found:
        cv2.putText(img, "no face", (6, H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 80, 80), 1, cv2.LINE_AA)
    if hud is not None:
        img = draw_hud(img, hud, mode)
    return img


def draw_hud(img: np.ndarray, hud: dict, mode: str = "") -> np.ndarray:
    """Draw "fps | latency | dropped | mode" on the top left of an (H, W, 3) uint8 image (in place; returned)."""
    import cv2

    text = (f"{hud.get('fps', 0.0):.1f} fps  {hud.get('latency_ms', 0.0):.0f} ms  "
            f"dropped {int(hud.get('dropped', 0))}  {mode}"
            + (f"  identity: {hud['identity']}" if hud.get("identity") not in (None, "default", "rig", "frozen") else ""))
    scale = max(0.35, img.shape[0] / 900)
    cv2.putText(img, text, (6, int(16 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, int(16 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0), 1, cv2.LINE_AA)
    return img
