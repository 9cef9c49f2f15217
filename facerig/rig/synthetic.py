"""Synthetic talking-head performances with known ground truth (sample clip, tests, benchmark).

:func:`performance_curves` makes smooth ARKit weight curves (jaw opening, smiles, blinks, brow
raises, a few random others) and head motion; :func:`render_talking_head` renders them with the
default model (open eyes, :class:`facerig.face.synthetic.FaceRenderer`, optionally styled eyes
and mouth) over a photo background
into a video file. Everything is seeded.
"""

from __future__ import annotations

import numpy as np
import torch

from facerig.face import FaceDecoder
from facerig.face.synthetic import SyntheticFaces, background_photos, head_rotation, random_crop, random_sh
from facerig.video import VideoWriter

__all__ = ["performance_curves", "render_talking_head", "head_rotation"]


def _smooth_noise(rng, T, fps, period_s, n=1):
    """(T, n) smooth random curves in about [-1, 1] (sum of random sinusoids ~ period_s)."""
    t = np.arange(T) / fps
    out = np.zeros((T, n))
    for j in range(n):
        for _ in range(3):
            f = 1.0 / (period_s * rng.uniform(0.6, 1.6))
            out[:, j] += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.4, 1.0)
    return out / 2.0


def performance_curves(n_frames: int, fps: float, names, seed: int = 0, head: float = 1.0, lively: float = 1.0):
    """Smooth random ARKit weight curves and head motion.

    Args:
        n_frames, fps: length and rate. names: the model's blendshape names (ARKit).
        head: scale of the head motion (1 = yaw +-20, pitch +-10, roll +-5 degrees).
        lively: scale of the secondary expression activity.

    Returns:
        ``(weights (T, K) in [0, 1], yaw (T,), pitch (T,), roll (T,) degrees)``: jawOpen in
        talking bursts, mouthSmile_L/R smooth and correlated, eyeBlink_L/R blinks every 2-4 s
        (about 0.25 s), browInnerUp and a few other shapes at low levels.
    """
    rng = np.random.default_rng(seed)
    T = int(n_frames)
    names = list(names)
    K = len(names)
    W = np.zeros((T, K))
    t = np.arange(T) / fps

    def put(name, v):
        if name in names:
            W[:, names.index(name)] = np.clip(v, 0, 1)

    # jaw: syllable-rate opening (~3 Hz) inside slow talking bursts
    burst = np.clip(_smooth_noise(rng, T, fps, 2.5)[:, 0] * 1.5 + 0.4, 0, 1)
    syll = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1.2, 1.8) * t + rng.uniform(0, 6))
    put("jawOpen", 0.55 * burst * syll)
    smile = np.clip(_smooth_noise(rng, T, fps, 3.0)[:, 0] * 1.2 + 0.15, 0, 1) * 0.8
    put("mouthSmile_L", smile * rng.uniform(0.85, 1.0))
    put("mouthSmile_R", smile * rng.uniform(0.85, 1.0))
    blink = np.zeros(T)
    tb = rng.uniform(0.3, 1.5)
    while tb < t[-1] + 1 if T else False:
        blink = np.maximum(blink, np.exp(-0.5 * ((t - tb) / 0.07) ** 2))
        tb += rng.uniform(1.8, 3.5)
    put("eyeBlink_L", blink)
    put("eyeBlink_R", blink)
    brow = np.clip(_smooth_noise(rng, T, fps, 2.0)[:, 0], 0, 1) * 0.6
    put("browInnerUp_L", brow)
    put("browInnerUp_R", brow)
    others = [n for n in ("mouthFunnel", "mouthPucker", "browDown_L", "browDown_R", "cheekSquint_L", "mouthFrown_L",
                          "mouthFrown_R", "noseSneer_L") if n in names]
    if others and lively > 0:
        sel = rng.choice(others, size=min(3, len(others)), replace=False)
        curves = np.clip(_smooth_noise(rng, T, fps, 2.0, len(sel)), 0, 1) * 0.4 * lively
        for n, c in zip(sel, curves.T):
            put(n, c)
    m = _smooth_noise(rng, T, fps, 3.0, 3) * head
    return W, 20 * m[:, 0], 10 * m[:, 1], 5 * m[:, 2]


def render_talking_head(path, n_frames: int = 48, fps: float = 12.0, size: int = 288, seed: int = 0,
                        head: float = 1.0, distance: float = 65.0, background: bool = True, decoder=None,
                        styled: bool = False):
    """Render a synthetic talking head of the default model into a video (mp4v .mp4 / MJPG .avi).

    Args:
        path: output file; n_frames, fps: length and rate; size: square frame side, px.
        seed: identity, albedo, light, background crop and curves all follow it.
        head: head-motion scale; distance: cm from the camera.
        background: a photo crop behind the face (False: grey).
        styled: :class:`~facerig.face.synthetic.FaceRenderer`'s opt-in styling: eyes with a
            sclera, iris and pupil that close to skin when blinking, and an open mouth (the
            model's mouth_opening group removed) with a dark interior.

    Returns:
        dict with the ground truth: ``weights`` (T, K), ``rotation`` (T, 3), ``translation`` (T, 3),
        ``identity`` (1, K_id), ``albedo`` (1, K_alb), ``sh`` (1, 9, 3), ``focal``, ``names``.
    """
    rng = np.random.default_rng(seed)
    dec = decoder or FaceDecoder("default")
    m = dec.model
    gen = SyntheticFaces(dec, size=size, photos=background_photos(size) if background else [], styled=styled,
                         open_mouth=styled)
    g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    s = m.sample(1, g)
    identity = s["identity"] * 0.8
    albedo = s["albedo"] * 0.5
    sh = random_sh(rng, ambient=(0.95, 1.05), band1=0.15)
    bg = random_crop(rng, gen.photos, size) if background else np.full((size, size, 3), 110, np.uint8)
    W, yaw, pitch, roll = performance_curves(n_frames, fps, m.expression_names, seed=int(rng.integers(1 << 31)), head=head)
    rot = head_rotation(yaw, pitch, roll)
    code = dec.zero_code(n_frames, image_size=size)
    code.focal = torch.full_like(code.focal, gen.focal)
    code.identity = identity.expand(n_frames, -1).clone()
    code.albedo = albedo.expand(n_frames, -1).clone()
    code.expression = torch.as_tensor(W, dtype=code.expression.dtype)
    code.rotation = rot
    code.sh = sh.expand(n_frames, 9, 3).clone()
    base_t = code.translation[0].clone()
    drift = _smooth_noise(rng, n_frames, fps, 4.0, 2) * 0.8
    code.translation = torch.stack([base_t[0] + torch.as_tensor(drift[:, 0], dtype=base_t.dtype),
                                    base_t[1] + torch.as_tensor(drift[:, 1], dtype=base_t.dtype),
                                    torch.full((n_frames,), float(distance), dtype=base_t.dtype)], 1)
    with VideoWriter(path, fps, (size, size)) as vw:
        for t in range(n_frames):
            vw.write(gen.render(code[t], bg)[0])
    return {"weights": W, "rotation": rot.numpy(), "translation": code.translation.numpy(), "identity": identity.numpy(),
            "albedo": albedo.numpy(), "sh": sh.numpy(), "focal": gen.focal, "names": list(m.expression_names)}
