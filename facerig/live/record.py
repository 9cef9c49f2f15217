"""Recording live results: tracking.csv, overlay.mp4, live.json and a Live Link Face CSV.

Every file is written to a temporary name next to its destination and moved into place by
:meth:`Recorder.close` (atomic: a file is complete and playable or absent); :meth:`Recorder.abort`
removes the temporaries (nothing half-done is left, older files are kept).

Live Link Face CSV (``--live-link-csv``): the layout Epic's Live Link Face app records, which
Unreal's Live Link Face importer and MetaHuman tools read: ``Timecode,BlendShapeCount,`` then
the 52 ARKit blendshapes in the app's order, then ``HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,
LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll``; BlendShapeCount is 61;
Timecode ``HH:MM:SS:FF.mmm`` (FF frames at the recording's rate). The header and its order were
checked against open importers of the app's files: the ``FaceBlendShape`` enum of
JimWest/PyLiveLinkFace (the app's UDP payload order, the same as its CSV columns) and the
``LIVE_LINK_FACE_HEADER`` string of Blender add-ons built on it.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np

__all__ = ["Recorder", "LIVE_LINK_BLENDSHAPES", "LIVE_LINK_HEADER", "live_link_values", "live_link_timecode"]

LIVE_LINK_BLENDSHAPES = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel",
    "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft",
    "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight",
    "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft",
    "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft",
    "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut")
"""The 52 ARKit blendshape columns of a Live Link Face CSV, in the app's order."""
LIVE_LINK_HEADER = ("Timecode", "BlendShapeCount", *LIVE_LINK_BLENDSHAPES, "HeadYaw", "HeadPitch", "HeadRoll",
                    "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")


def _arkit_name(column: str) -> str:
    """'EyeBlinkLeft' -> 'eyeBlink_L' (the model's ICT/ARKit-style name)."""
    base = column[0].lower() + column[1:]
    for side, suffix in (("Left", "_L"), ("Right", "_R")):
        # jawLeft / jawRight / mouthLeft / mouthRight are directions, not sides
        if base.endswith(side) and base not in ("jawLeft", "jawRight", "mouthLeft", "mouthRight"):
            return base[: -len(side)] + suffix
    return base


def live_link_values(weights, names) -> np.ndarray:
    """(52,) Live Link Face blendshape values from the model's weights.

    Args:
        weights: (K,) weights in [0, 1]; names: their K names (ICT/ARKit style: ``eyeBlink_L``,
            ``browInnerUp_L``, ``jawOpen``, ...).

    ``XLeft`` / ``XRight`` take ``X_L`` / ``X_R``; shapes the model splits in two that ARKit has
    once (browInnerUp, cheekPuff) take the mean of both sides; shapes the model lacks (TongueOut)
    are 0.
    """
    idx = {n: i for i, n in enumerate(names)}
    w = np.asarray(weights, np.float64)
    out = np.zeros(len(LIVE_LINK_BLENDSHAPES))
    for j, col in enumerate(LIVE_LINK_BLENDSHAPES):
        name = _arkit_name(col)
        if name in idx:
            out[j] = w[idx[name]]
        elif f"{name}_L" in idx and f"{name}_R" in idx:
            out[j] = 0.5 * (w[idx[f"{name}_L"]] + w[idx[f"{name}_R"]])
    return out


def live_link_timecode(t: float, fps: float) -> str:
    """``HH:MM:SS:FF.mmm`` of ``t`` seconds at ``fps`` frames per second (FF whole frames, then
    the fraction of a frame in thousandths), as Live Link Face writes it."""
    t = max(0.0, float(t))
    s = math.floor(t)
    frames = (t - s) * fps
    ff = math.floor(frames + 1e-9)
    sub = int(round((frames - ff) * 1000))
    if sub >= 1000:
        ff, sub = ff + 1, 0
    return f"{s // 3600:02d}:{(s // 60) % 60:02d}:{s % 60:02d}:{ff:02d}.{sub:03d}"


class Recorder:
    """Write the live outputs of one run into ``out`` (any of them can be off).

    Args:
        out: folder for tracking.csv, overlay.mp4 and live.json (None: none of them).
        names: the K expression names (tracking.csv's weight columns, as the rig's).
        fps: the source's frame rate (overlay.mp4's rate; the Live Link timecode's frame rate).
        size: (W, H) of the frames (overlay.mp4's size, made even).
        overlay: write overlay.mp4; live_link: path of a Live Link Face CSV (or None).

    :meth:`add` one processed frame (with its overlay picture when ``overlay``), then
    :meth:`close` with the run's summary (written as live.json) or :meth:`abort`.
    """

    def __init__(self, out, names, fps: float, size, *, overlay: bool = True, live_link=None):
        from facerig.io import atomic_open

        self.out = None if out is None else Path(out)
        self.names = list(names)
        self.fps = float(fps)
        self._stack = contextlib.ExitStack()
        self._csv = self._ll = self._video = None
        self.rows = 0
        self.closed = False
        W, H = int(size[0]), int(size[1])
        self.size = (W - W % 2, H - H % 2)
        try:
            if self.out is not None:
                from facerig.rig import tracking_csv_header

                self.out.mkdir(parents=True, exist_ok=True)
                self._csv = self._stack.enter_context(atomic_open(self.out / "tracking.csv", "w"))
                self._csv.write(tracking_csv_header(self.names))
                if overlay:
                    from facerig.video import VideoWriter

                    self._video = VideoWriter(self.out / "overlay.mp4", self.fps, self.size)
            if live_link is not None:
                Path(live_link).parent.mkdir(parents=True, exist_ok=True)
                self._ll = self._stack.enter_context(atomic_open(live_link, "w"))
                self._ll.write(",".join(LIVE_LINK_HEADER) + "\n")
        except BaseException:
            self.abort()
            raise
        self.live_link = None if live_link is None else Path(live_link)

    @property
    def wants_overlay(self) -> bool:
        return self._video is not None

    def add(self, live, names=None, overlay_rgb=None) -> None:
        """Record one :class:`facerig.live.LiveFrame` (``overlay_rgb``: its (H, W, 3) uint8 picture)."""
        from facerig.rig import tracking_csv_row

        if self._csv is not None:
            self._csv.write(tracking_csv_row(self.rows, live.index, live.t, live.found, live.landmark_error,
                                             live.rotation, live.translation, live.weights))
        if self._ll is not None:
            yaw, pitch, roll = live.euler_degrees()
            vals = live_link_values(live.weights, self.names)
            self._ll.write(f"{live_link_timecode(live.t, self.fps)},61," + ",".join(f"{v:.6f}" for v in vals)
                           + f",{yaw:.4f},{pitch:.4f},{roll:.4f},0,0,0,0,0,0\n")
        if self._video is not None and overlay_rgb is not None:
            W, H = self.size
            self._video.write(np.ascontiguousarray(overlay_rgb[:H, :W]))
        self.rows += 1

    def close(self, summary: dict | None = None) -> dict:
        """Move every file into place; write ``summary`` as live.json (with the file list).
        Returns {name: path} of the files written."""
        from facerig.io import atomic_write

        files = {}
        if self.closed:
            return files
        self.closed = True
        if self._video is not None:
            self._video.close()
            files["overlay"] = self.out / "overlay.mp4"
        self._stack.close()
        if self._csv is not None:
            files["tracking"] = self.out / "tracking.csv"
        if self._ll is not None:
            files["live_link"] = self.live_link
        if self.out is not None:
            files["summary"] = self.out / "live.json"
            meta = dict(summary or {})
            meta["files"] = {k: str(v) for k, v in files.items()}
            atomic_write(self.out / "live.json", json.dumps(meta, indent=1))
        return files

    def abort(self) -> None:
        """Remove the temporaries; nothing is moved into place."""
        if self.closed:
            return
        self.closed = True
        if self._video is not None:
            self._video._abort()
            self._video = None
        err = RuntimeError("recording aborted")  # the atomic writers see an error: temporaries removed
        self._stack.__exit__(type(err), err, None)
