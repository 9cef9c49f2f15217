"""The files of a :class:`facerig.rig.Rig`: ``rig.glb``, ``blendshapes/*.obj``, ``texture.png``,
``tracking.csv``, ``rig.json`` (:func:`write_rig_files`), ``preview.mp4`` (:func:`write_preview`:
video | overlay | rig) and ``report.png`` (:func:`write_report`: weights and jitter over time).
All written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from facerig.face.decoder import SH_AMBIENT, make_camera
from facerig.io import atomic_open, atomic_path, atomic_write, write_image
from facerig.model import camera_pose_to_model, export_blendshapes_obj, export_rig_glb
from facerig.render import axis_angle_to_matrix, render_mesh
from facerig.video import VideoWriter

__all__ = ["write_rig_files", "write_preview", "write_report", "frame_progress", "TRACKING_COLUMNS", "tracking_csv_header",
           "tracking_csv_row"]


def frame_progress(total, desc, enabled):
    """A tqdm bar counting frames (``disable``d when not ``enabled``)."""
    return tqdm(total=total or None, desc=desc, unit="frame", disable=not enabled, leave=True,
                dynamic_ncols=True, mininterval=0.5)


TRACKING_COLUMNS = ("frame", "source_frame", "time", "face_found", "landmark_error_px", "rx", "ry", "rz",
                    "tx_cm", "ty_cm", "tz_cm")
"""The leading columns of tracking.csv (then one column per blendshape name)."""


def tracking_csv_header(names) -> str:
    """The header line of tracking.csv (with its newline): :data:`TRACKING_COLUMNS` then ``names``."""
    return ",".join(TRACKING_COLUMNS) + "," + ",".join(names) + "\n"


def tracking_csv_row(frame: int, source_frame: int, time_s: float, found: bool, error_px, rotation, translation,
                     weights) -> str:
    """One line of tracking.csv (with its newline): output frame number, source frame number, time
    (s), face found (0/1), mean landmark error (px; empty when not finite), head rotation (3,)
    axis-angle radians and translation (3,) cm (camera frame), then the blendshape weights."""
    e = float(error_px) if error_px is not None else float("nan")
    return (f"{int(frame)},{int(source_frame)},{float(time_s):.4f},{int(bool(found))},"
            + ("" if not np.isfinite(e) else f"{e:.3f}") + ","
            + ",".join(f"{float(x):.5f}" for x in (*rotation, *translation)) + ","
            + ",".join(f"{float(x):.4f}" for x in weights) + "\n")


def write_rig_files(rig, out: Path, blendshapes: bool = True) -> dict:
    """Write ``rig`` (a :class:`facerig.rig.Rig`) into the folder ``out``: rig.glb, blendshapes/*.obj
    (``blendshapes``), texture.png, tracking.csv, rig.json. Returns ``{kind: path}``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    rot_m, trans_m = camera_pose_to_model(rig.rotations, rig.translations)
    # head motion relative to the first frame's camera-to-head offset keeps the rig near the origin
    trans_m = trans_m - trans_m[:1]
    tex = {}
    if rig.texture is not None and rig.uvs is not None:
        tex = {"uvs": rig.uvs, "texture": rig.texture}
        write_image(out / "texture.png", rig.texture)
        files["texture"] = out / "texture.png"
    export_rig_glb(out / "rig.glb", rig.neutral, rig.faces, rig.blendshapes, rig.names, weights=rig.weights,
                   rotations=rot_m, translations=trans_m, fps=rig.fps,
                   colors=None if tex else np.clip(rig.albedo, 0, 1), name="face_rig", **tex)
    files["rig"] = out / "rig.glb"
    if blendshapes:
        export_blendshapes_obj(out / "blendshapes", rig.neutral, rig.faces, rig.blendshapes, rig.names,
                               uvs=rig.uvs)
        files["blendshapes"] = out / "blendshapes"
    with atomic_open(out / "tracking.csv", "w") as fh:
        fh.write(tracking_csv_header(rig.names))
        for t in range(len(rig.frames)):
            fh.write(tracking_csv_row(t, int(rig.frames[t]), t / rig.fps, bool(rig.found[t]), rig.landmark_error[t],
                                      rig.rotations[t], rig.translations[t], rig.weights[t]))
    files["tracking"] = out / "tracking.csv"
    meta = {"frames": int(len(rig.frames)), "fps": rig.fps, "image_size": list(rig.image_size), "focal_px": rig.focal,
            "keyframes": [int(k) for k in rig.keyframes], "model": rig.model_name, "blendshapes": rig.names,
            "metrics": {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in rig.metrics.items()},
            "timings_s": {k: round(float(v), 3) for k, v in rig.timings.items()},
            "camera": "OpenCV pinhole, principal point at the frame centre; tracking.csv poses are camera-frame "
                      "(X_cam = R(r) @ diag(1,-1,-1) @ X + t, cm); rig.glb animates the head in the model (= glTF) "
                      "frame relative to the first frame's position",
            "identity": np.round(rig.identity, 5).tolist(), "albedo": np.round(rig.albedo_coeffs, 5).tolist()}
    atomic_write(out / "rig.json", json.dumps(meta, indent=1))
    files["json"] = out / "rig.json"
    return files


def _panel(rgb, h):
    import cv2
    H, W = rgb.shape[:2]
    if H == h:
        return rgb
    w = max(2, int(round(W * h / H)))
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if h < H else cv2.INTER_LINEAR)


def write_preview(rig, reader, path: Path, progress: bool, dtype, height: int | None = None):
    """preview.mp4 at ``path`` from the video ``reader`` (a :class:`facerig.video.VideoReader`): original | the fitted rig rendered over the frame (tracked pose, weights and
    light, textured) | the textured rig alone (frontal camera, tracked rotation and weights, a fixed
    soft light); each panel ``min(H, 360)`` pixels high (``RigOptions.preview_height``). Also
    preview.jpg: the frame with the widest jaw opening."""
    import cv2

    H, W = rig.image_size
    h = int(height or min(H, 360))
    h -= h % 2
    s = h / H
    w = int(round(W * s))
    w -= w % 2
    sq = h
    pm = rig.model(dtype)
    faces = pm.faces
    codes = rig.codes(dtype=dtype)
    tex = uvs = None
    if rig.texture is not None and rig.uvs is not None:
        tex = torch.as_tensor(rig.texture, dtype=dtype) / 255.0
        uvs = torch.as_tensor(rig.uvs, dtype=dtype).clone()
        uvs[:, 1] = 1.0 - uvs[:, 1]  # the model's v points down; the renderer's sampler has v up
    colors = pm.albedo_mean.to(dtype).clamp(0, 1)[None]
    M = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype))
    centre = torch.as_tensor(rig.neutral, dtype=dtype).mean(0)
    sh_rig = torch.zeros(1, 9, 3, dtype=dtype)
    sh_rig[:, 0] = SH_AMBIENT * 0.9
    sh_rig[:, 1] = 0.15 * SH_AMBIENT  # a little light from above (renderer basis)
    sh_rig[:, 3] = 0.25 * SH_AMBIENT  # and from the front
    cam_o = make_camera(torch.tensor([rig.focal * s], dtype=dtype), (h, w))
    cam_r = make_camera(torch.tensor([3.0 * sq], dtype=dtype), (sq, sq))
    bar = frame_progress(len(rig.frames), "preview", progress)
    # a still for documents: the frame with the widest-open jaw (else the middle one)
    names = list(rig.names)
    still_k = int(np.argmax(rig.weights[:, names.index("jawOpen")])) if "jawOpen" in names else len(rig.frames) // 2
    with VideoWriter(path, rig.fps, (2 * w + sq, h)) as vw:
        for k, (_i, rgb) in enumerate(reader):
            if k >= len(rig.frames):
                break
            small = np.ascontiguousarray(_panel(rgb, h)[:, :w])
            code = codes[k]
            with torch.no_grad():
                shape = pm.shape(None, code.expression)  # (1, V, 3) model frame
                o = render_mesh(code.transform(shape), faces, cam_o, (h, w), colors=colors, sh_coeffs=code.sh,
                                uvs=uvs, texture=tex, antialias=False)
                a = o.alpha[0].numpy() * 0.85
                over = np.clip(a * o.image[0].clamp(0, 1).numpy() + (1 - a) * (small / 255.0), 0, 1)
                R = axis_angle_to_matrix(code.rotation)[0]
                vc = ((shape[0] - centre) @ M.T) @ R.T + torch.tensor([0.0, 0.0, 60.0], dtype=dtype)
                r = render_mesh(vc[None], faces, cam_r, (sq, sq), colors=colors, sh_coeffs=sh_rig, uvs=uvs,
                                texture=tex, background=0.18, antialias=False)
                rig_img = r.image[0].clamp(0, 1).numpy()
            frame = np.concatenate([small, (over * 255 + 0.5).astype(np.uint8),
                                    (rig_img * 255 + 0.5).astype(np.uint8)], 1)
            if not rig.found[k]:
                cv2.putText(frame, "no face", (w + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 80, 80), 1,
                            cv2.LINE_AA)
            vw.write(frame)
            if k == still_k:
                write_image(path.with_suffix(".jpg"), frame)
            bar.update(1)
    bar.close()
    return path


def write_report(rig, path: Path, lm_fit: np.ndarray):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    T = len(rig.frames)
    t = np.arange(T) / rig.fps
    fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    var = rig.weights.std(0)
    top = np.argsort(-var)[:8]
    for j in top:
        ax[0].plot(t, rig.weights[:, j], lw=1.2, label=rig.names[j])
    ax[0].set_ylabel("blendshape weight")
    ax[0].legend(fontsize=7, ncol=4, loc="upper right")
    ax[0].set_title("the 8 most active blendshapes")
    acc = np.full(T, np.nan)
    if T >= 3:
        a = np.linalg.norm(lm_fit[2:] - 2 * lm_fit[1:-1] + lm_fit[:-2], axis=-1).mean(-1)
        acc[1:-1] = a
    ax[1].plot(t, acc, lw=1, color="C3")
    m = rig.metrics
    ax[1].set_ylabel("px / frame²")
    ax[1].set_title(f"landmark jitter (acceleration of the fitted 468 landmarks): mean "
                    f"{m.get('jitter_landmarks_px', float('nan')):.3f}; weights "
                    f"{m.get('jitter_weights', float('nan')):.4f} / frame²")
    ax[2].plot(t, rig.landmark_error, lw=1, color="C0", label="landmark error (px)")
    lost = ~rig.found
    if lost.any():
        ax[2].fill_between(t, 0, np.nanmax(np.r_[rig.landmark_error[np.isfinite(rig.landmark_error)], 1.0]),
                           where=lost, color="0.8", step="mid", label="face lost")
    ax[2].set_ylabel("px")
    ax[2].set_xlabel("time (s)")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
