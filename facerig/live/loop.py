"""The live tracking loop: :class:`LiveTracker` and :func:`track` (a generator of :class:`LiveFrame`).

Two stages run concurrently (the machine this targets has two cores):

1. **capture + landmarks** (a background thread): the source's capture thread
   (:class:`facerig.live.FrameSource`) hands over its newest frame; MediaPipe Face Mesh in video
   mode (:class:`facerig.landmarks.LandmarkTracker`, its causal One-Euro filter on) finds the 468
   points; the result goes to a one-frame slot (a result the solver did not take before the next
   one is dropped and counted, never queued).
2. **solve** (the caller's thread, in the generator): the rig tracker's landmark solve
   (:meth:`facerig.rig.FrameTracker.fit_landmarks`: weights in [0, 1], head pose; warm-started,
   temporal terms centred on the previous frame), its closed-form light, then its photometric
   step (:meth:`~facerig.rig.FrameTracker.refine_photometric`) when the latency budget allows
   (``photometric="auto"``: skipped when the frame would then leave later than
   ``latency_budget_ms`` after its capture), and a causal One-Euro filter on the weights and the
   head pose (:class:`CodeFilter`; live output cannot look ahead).

Latency is measured from the frame's capture (decode) to the weights out (the yield).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerig.live.source import Frame, FrameSource, SourceError, open_source

__all__ = ["LiveOptions", "LiveFrame", "LiveTracker", "CodeFilter", "track", "load_rig_identity"]


@dataclass
class LiveOptions:
    """Settings of :class:`LiveTracker`.

    Attributes:
        realtime: files and folders: play at their frame rate, keeping the newest frame (default
            True), or hand over every frame as fast as the tracker goes (False). Cameras and
            streams are always real time.
        fps: source frame-rate override (folders default to 30).
        photometric: "auto" (default): the rig tracker's photometric step when the frame's
            latency stays within ``latency_budget_ms`` (estimated from the step's measured cost)
            and no newer frame is waiting; on every frame of a lossless source (``realtime=False``:
            no real-time budget); "always"; "off".
        latency_budget_ms: capture-to-output budget of the "auto" photometric step (ms).
        photo_size: side (px) of the photometric step's face crop.
        iterations: Levenberg-Marquardt iterations of the landmark solve per frame.
        smoothing: causal One-Euro filter on the output weights and head pose (:class:`CodeFilter`).
        min_cutoff, beta: its weight parameters (Hz; Hz per weight unit per second);
            pose_min_cutoff, pose_beta: the head pose's (Hz; Hz per radian or per 10 cm per second).
        landmark_smoothing: the landmark tracker's own One-Euro filter on the 468 points.
        threads: torch CPU threads of the solve (default 1).
        max_no_face_s: stop with :class:`facerig.face.NoFaceError` when no face was found in this
            many seconds of source time from the start (None: never; files are checked at their end).
        identity: "default" (the default face) or "online": frames of the first ``identity_seconds``
            with a face are collected, ``identity_keyframes`` diverse ones
            (:func:`facerig.rig.select_keyframes`) fitted (:func:`facerig.face.fit_image`, a short
            photometric schedule), their mean identity and albedo personalised
            (:func:`facerig.rig.personalise`) and frozen; real-time sources fit in a background
            thread (tracking goes on with the default face meanwhile), lossless ones in line.
            :meth:`LiveTracker.reset_identity` starts a new estimate. Ignored with a rig.
    """

    realtime: bool | None = None
    fps: float | None = None
    photometric: str = "auto"
    latency_budget_ms: float = 50.0
    photo_size: int = 80
    iterations: int = 3
    smoothing: bool = True
    min_cutoff: float = 3.0
    beta: float = 2.0
    pose_min_cutoff: float = 2.0
    pose_beta: float = 0.5
    landmark_smoothing: bool = True
    threads: int = 1
    max_no_face_s: float | None = None
    identity: str = "default"
    identity_seconds: float = 2.0
    identity_keyframes: int = 4

    def __post_init__(self):
        if self.photometric not in ("auto", "always", "off"):
            raise ValueError(f"photometric: expected 'auto', 'always' or 'off', got {self.photometric!r}")
        if not self.latency_budget_ms > 0:
            raise ValueError(f"latency_budget_ms: expected > 0 ms, got {self.latency_budget_ms!r}")
        if isinstance(self.photo_size, bool) or not isinstance(self.photo_size, int) or self.photo_size < 16:
            raise ValueError(f"photo_size: expected a crop side >= 16 px, got {self.photo_size!r}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"iterations: expected an int >= 1, got {self.iterations!r}")
        if not (self.min_cutoff > 0 and self.beta >= 0 and self.pose_min_cutoff > 0 and self.pose_beta >= 0):
            raise ValueError("min_cutoff and pose_min_cutoff must be > 0 Hz, beta and pose_beta >= 0")
        if self.identity not in ("default", "online"):
            raise ValueError(f"identity: expected 'default' or 'online', got {self.identity!r}")
        if not self.identity_seconds > 0 or not (isinstance(self.identity_keyframes, int) and self.identity_keyframes >= 1):
            raise ValueError("identity_seconds must be > 0 and identity_keyframes an int >= 1")


@dataclass
class LiveFrame:
    """One processed frame.

    Attributes:
        index: source frame number; t: seconds since the source started (files: media time);
        captured: ``time.perf_counter()`` of the capture.
        found: a face was tracked (False: weights / pose hold the last values, or rest at 0).
        weights: (K,) float64 in [0, 1], the model's expression names (``LiveTracker.names``).
        rotation: (3,) axis-angle radians, translation: (3,) cm (camera frame, as tracking.csv:
            ``X_cam = R(rotation) @ diag(1,-1,-1) @ X + translation``); sh: (9, 3) SH light.
        landmarks: (468, 2) detected points in frame pixels (None without a face).
        landmark_error: mean 468-point error of the fit in pixels (NaN without a face).
        latency_ms: capture -> weights out; stages_ms: ms per stage: "landmarks" (MediaPipe, wall
            time: it works in its own threads), "solve", "light", "photometric" (CPU time of the
            solving thread); a stage that did not run is absent.
        photometric: the photometric step ran on this frame.
        dropped: frames dropped so far (capture and landmark slots together).
        rgb: (H, W, 3) uint8 frame; code: (1, D) the tracker's code vector (unsmoothed, for overlays).
    """

    index: int
    t: float
    captured: float
    found: bool
    weights: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    sh: np.ndarray
    landmarks: np.ndarray | None
    landmark_error: float
    latency_ms: float
    stages_ms: dict
    photometric: bool
    dropped: int
    rgb: np.ndarray
    code: object = None

    def euler_degrees(self) -> tuple[float, float, float]:
        """(yaw, pitch, roll) in degrees of the head rotation relative to facing the camera.

        The head's model frame (x subject's left, y up, z toward the viewer) maps to the camera
        by ``R(rotation) @ diag(1, -1, -1)``; with ``R = Ry(yaw) Rx(pitch) Rz(roll)`` (intrinsic
        y-x-z): yaw > 0 turns the face towards the camera's +x (image right), pitch > 0 tilts
        it down in the image (camera y is down), roll > 0 rotates it clockwise in the image."""
        from scipy.spatial.transform import Rotation

        yaw, pitch, roll = Rotation.from_rotvec(self.rotation).as_euler("YXZ", degrees=True)
        return float(yaw), float(pitch), float(roll)

    def message(self, names) -> dict:
        """The per-frame JSON object of the streaming format (STREAM_FORMAT: type, frame, t, face,
        weights by name, rotation, translation, yaw / pitch / roll in degrees, latency_ms)."""
        yaw, pitch, roll = self.euler_degrees()
        return {"type": "frame", "frame": int(self.index), "t": round(float(self.t), 4), "face": bool(self.found),
                "weights": {n: round(float(w), 4) for n, w in zip(names, self.weights)},
                "rotation": [round(float(x), 5) for x in self.rotation],
                "translation": [round(float(x), 4) for x in self.translation],
                "yaw": round(yaw, 3), "pitch": round(pitch, 3), "roll": round(roll, 3),
                "latency_ms": round(float(self.latency_ms), 2)}


class CodeFilter:
    """Causal One-Euro smoothing (:class:`facerig.landmarks.OneEuroFilter`) of the per-frame
    weights (K,) and head pose (rotation (3,) radians, translation (3,) cm, filtered in units of
    10 cm so one ``pose_beta`` suits both), clipped back to [0, 1] for the weights.
    :meth:`reset` after a gap (the next sample passes through)."""

    def __init__(self, min_cutoff=3.0, beta=2.0, pose_min_cutoff=2.0, pose_beta=0.5):
        from facerig.landmarks import OneEuroFilter

        self.w = OneEuroFilter(min_cutoff, beta, 1.0)
        self.pose = OneEuroFilter(pose_min_cutoff, pose_beta, 1.0)

    def reset(self):
        self.w.reset()
        self.pose.reset()

    def __call__(self, weights, rotation, translation, t: float):
        """Filter one frame at time ``t`` (s, strictly increasing). Returns (weights, rotation, translation)."""
        w = np.clip(self.w(weights, t), 0.0, 1.0)
        p = self.pose(np.r_[rotation, np.asarray(translation) / 10.0], t)
        return w, p[:3], p[3:] * 10.0


def load_rig_identity(folder) -> dict:
    """Read a ``facerig rig`` output folder's rig.json: ``{"identity": (K_id,), "albedo": (K_alb,),
    "focal": px, "image_size": (H, W), "model": name, "texture": (S, S, 3) uint8 or None}``.

    Raises:
        SourceError: the folder has no readable rig.json (names the file and the command that makes it).
    """
    folder = Path(folder)
    path = folder / "rig.json"
    try:
        meta = json.loads(path.read_text())
        out = {"identity": np.asarray(meta["identity"], np.float64), "albedo": np.asarray(meta["albedo"], np.float64),
               "focal": float(meta["focal_px"]), "image_size": tuple(int(s) for s in meta["image_size"]),
               "model": str(meta.get("model", "default")), "texture": None}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SourceError(f"--rig {folder}: cannot read {path} ({err}); make one with `facerig rig VIDEO -o {folder}`") \
            from None
    tex = folder / "texture.png"
    if tex.exists():
        from facerig.landmarks import load_image

        out["texture"] = load_image(tex)
    return out


class _Slot:
    """A one-item hand-over: put() replaces an untaken item (counted in ``dropped``) unless
    ``lossless`` (then it waits for the taker)."""

    def __init__(self, lossless: bool):
        self.lossless = lossless
        self.cond = threading.Condition()
        self.item = None
        self.closed = False
        self.dropped = 0

    def put(self, item) -> bool:
        with self.cond:
            while self.lossless and self.item is not None and not self.closed:
                self.cond.wait(0.1)
            if self.closed:
                return False
            if self.item is not None:
                self.dropped += 1
            self.item = item
            self.cond.notify_all()
            return True

    def get(self):
        with self.cond:
            while self.item is None and not self.closed:
                self.cond.wait(0.5)
            item, self.item = self.item, None
            self.cond.notify_all()
            return item

    def pending(self) -> bool:
        with self.cond:
            return self.item is not None

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()


_END = object()


class LiveTracker:
    """Track one face live from a source; iterate :meth:`frames` for :class:`LiveFrame` results.

    Args:
        source: a :class:`FrameSource` or anything :func:`facerig.live.open_source` opens
            (camera index, video file, folder of frames, URL).
        options: :class:`LiveOptions`.
        rig: a ``facerig rig`` output folder (its rig.json identity and albedo: the person's
            personalised blendshapes) or None for the default face.
        model: the generic face model (must have the MediaPipe 468-point map: "default").

    Attributes:
        names: the K expression names (the model's ARKit-style names, e.g. ``eyeBlink_L``).
        fps, size: the source's frame rate and (W, H).
        focal: px (the rig's, scaled to this source's size, or 2.5 x max(H, W)).
        stats: counters (frames processed, with a face, with the photometric step, dropped).
        texture, uvs: the rig's texture (S, S, 3) uint8 and (V, 2) UVs when there is one.

    Raises (at construction): :class:`SourceError` (source or rig folder unreadable).
    """

    def __init__(self, source=0, options: LiveOptions | None = None, *, rig=None, model="default"):
        import torch

        from facerig.face import FaceDecoder, FitOptions
        from facerig.model import load_model

        self.options = opts = options or LiveOptions()
        self.source = source if isinstance(source, FrameSource) else open_source(source, realtime=opts.realtime,
                                                                                  fps=opts.fps)
        self.fps, self.size = self.source.fps, self.source.size
        W, H = self.size
        base = load_model(model) if isinstance(model, str) else model
        if base.landmarks_mediapipe468 is None:
            raise ValueError(f"model: {base.name!r} has no MediaPipe 468-point map; use 'default'")
        self.texture = None
        self.uvs = None if base.uvs is None else base.uvs.detach().cpu().double().numpy()
        if rig is not None:
            from facerig.rig import personalise

            info = load_rig_identity(rig)
            pm = personalise(base.to(dtype=torch.float64, device="cpu"), info["identity"], info["albedo"])[0]
            H0, W0 = info["image_size"]
            self.focal = info["focal"] * max(H, W) / max(H0, W0)
            self.texture = info["texture"]
        else:
            pm = base
            self.focal = FitOptions().focal_factor * max(H, W)
        self.dtype = torch.float32
        self.decoder = FaceDecoder(pm, dtype=self.dtype)
        self.names = list(base.expression_names)
        self._fit_defaults = FitOptions()
        self._tracker = None
        self._threads = opts.threads
        self.stats = {"frames": 0, "faces": 0, "photometric": 0, "dropped": 0}
        self._base = base
        self.identity_state = "rig" if rig is not None else ("collecting" if opts.identity == "online" else "default")
        self._samples: list = []
        self._pending = None
        self._id_thread: threading.Thread | None = None
        self._id_generation = 0

    # ------------------------------------------------------------------ pieces
    def _make_tracker(self, points):
        """The rig tracker for this source; its landmark noise follows the first face's size (the
        fitter's sigma at its crop size, in frame pixels)."""
        from facerig.rig import RigOptions, make_tracker

        W, H = self.size
        box = points.max(0) - points.min(0)
        crop = 1.5 * float(max(box))  # the fitter's square crop: the box side with 25 % margins
        fo = self._fit_defaults
        sigma = fo.sigma * crop / fo.crop_size
        o = self.options
        ropts = RigOptions(iterations=o.iterations, photo_size=o.photo_size if o.photometric != "off" else 0)
        return make_tracker(self.decoder, (H, W), self.focal, sigma, ropts)

    def _landmark_stage(self, slot: _Slot, lm_tracker):
        """Thread: newest source frame -> MediaPipe -> slot (drops counted by the slot)."""
        try:
            while True:
                frame = self.source.get()
                if frame is None:
                    break
                w0 = time.perf_counter()  # wall: MediaPipe works in its own threads
                face = lm_tracker.process(frame.rgb, timestamp=frame.t)
                ms = 1000.0 * (time.perf_counter() - w0)
                if not slot.put((frame, face, ms)):
                    break
        except BaseException as err:  # noqa: BLE001 - re-raised by the solve stage
            slot.put(("error", err, 0.0))
        finally:
            slot.put((_END, None, 0.0))

    # ------------------------------------------------------------------ main loop
    def frames(self):
        """Generator of :class:`LiveFrame`, one per processed frame, until the source ends (or the
        generator is closed: ``break`` out of the loop, ``close()``; the source is closed then).

        Raises :class:`facerig.face.NoFaceError` when ``max_no_face_s`` passed without a face, and
        at the end of a source in which no frame had a face."""
        import torch

        from facerig.face import NoFaceError
        from facerig.landmarks import LandmarkTracker

        opts = self.options
        torch_threads = torch.get_num_threads()
        if self._threads and self._threads > 0:
            torch.set_num_threads(self._threads)
        lossless = not self.source.realtime
        slot = _Slot(lossless)
        lm_tracker = LandmarkTracker(max_faces=1, refine=True, smoothing=opts.landmark_smoothing, fps=self.fps)
        worker = threading.Thread(target=self._landmark_stage, args=(slot, lm_tracker), daemon=True,
                                  name="facerig-landmarks")
        filt = CodeFilter(opts.min_cutoff, opts.beta, opts.pose_min_cutoff, opts.pose_beta)
        K = len(self.names)
        prev = None
        last = (np.zeros(K), np.zeros(3), np.array([0.0, 0.0, 50.0]), np.zeros((9, 3)))
        photo_ms = None  # running estimate of the photometric step's cost
        any_face = False
        try:
            self._warm_up(lm_tracker)
            self.source.start()  # the source's clock starts after the warm-up
            worker.start()
            while True:
                item = slot.get()
                if item is None or item[0] is _END:
                    break
                if item[0] == "error":
                    raise item[1]
                frame, face, lm_ms = item
                if self._pending is not None:  # the online identity is ready: track with it from now on
                    self.decoder, secs, nk = self._pending
                    self._pending = None
                    self._tracker = None
                    self.identity_state = "frozen"
                    self.stats["identity_s"] = round(secs, 2)
                    self.stats["identity_keyframes"] = nk
                stages = {"landmarks": lm_ms}
                self.stats["frames"] += 1
                found = face is not None
                pts = None
                err = float("nan")
                did_photo = False
                code = None
                if found:
                    pts = np.asarray(face.points[:468, :2], np.float64)
                    if self._tracker is None:  # (re)made: the code layout may change, the temporal state restarts
                        self._tracker, prev = self._make_tracker(pts), None
                    tr = self._tracker
                    c0 = time.thread_time()
                    y0 = prev if prev is not None else tr.initial_code()
                    y, err = tr.fit_landmarks(pts, y0, prev)
                    c1 = time.thread_time()
                    prev_sh = None if prev is None else prev[0, tr.sl["sh"]].reshape(9, 3)
                    y = tr.fit_light(frame.rgb, y, prev_sh)
                    c2 = time.thread_time()
                    stages["solve"], stages["light"] = 1000 * (c1 - c0), 1000 * (c2 - c1)
                    if opts.photometric == "always" or (opts.photometric == "auto" and self._photo_fits(frame, photo_ms, slot)):
                        w0 = time.perf_counter()
                        y = tr.refine_photometric(frame.rgb, pts, y, warm=prev is not None)
                        wall = 1000 * (time.perf_counter() - w0)
                        stages["photometric"] = 1000 * (time.thread_time() - c2)
                        photo_ms = wall if photo_ms is None else 0.8 * photo_ms + 0.2 * wall
                        did_photo = True
                        self.stats["photometric"] += 1
                        with torch.no_grad():
                            err = float(tr.lm_term.pixel_errors(tr.last_obs, y).mean())
                    if prev is None:
                        filt.reset()
                    prev = y.detach()
                    code = prev
                    yv = y[0].double().cpu().numpy()
                    sl = tr.sl
                    w, r, tt = yv[sl["expression"]], yv[sl["rotation"]], yv[sl["translation"]]
                    if opts.smoothing:
                        w, r, tt = filt(w, r, tt, frame.t)
                    last = (np.clip(w, 0, 1), r, tt, yv[sl["sh"]].reshape(9, 3))
                    any_face = True
                    self.stats["faces"] += 1
                    if self.identity_state == "collecting":
                        self._collect(frame, pts)
                else:
                    prev = None  # the temporal terms restart after a gap
                    if (opts.max_no_face_s is not None and not any_face and frame.t > opts.max_no_face_s):
                        raise NoFaceError(f"no face in the first {opts.max_no_face_s:g} s of {self.source.name}")
                self.stats["dropped"] = self.source.dropped + slot.dropped
                out = LiveFrame(index=frame.index, t=frame.t, captured=frame.captured, found=found, weights=last[0],
                                rotation=last[1], translation=last[2], sh=last[3], landmarks=pts, landmark_error=err,
                                latency_ms=1000 * (time.perf_counter() - frame.captured), stages_ms=stages,
                                photometric=did_photo, dropped=self.stats["dropped"], rgb=frame.rgb, code=code)
                yield out
            if not any_face:
                raise NoFaceError(f"no face found in {self.source.name} ({self.stats['frames']} frames processed)")
        finally:
            slot.close()
            self.source.close()
            if worker.ident is not None:
                worker.join(timeout=5.0)
            self._id_generation += 1  # a fit still running is not applied
            if self._id_thread is not None:
                self._id_thread.join(timeout=30.0)
            lm_tracker.close()
            self.stats["dropped"] = self.source.dropped + slot.dropped
            torch.set_num_threads(torch_threads)

    # ------------------------------------------------------------------ online identity
    def _collect(self, frame: Frame, pts: np.ndarray):
        """Keep a sample of the first ``identity_seconds`` with a face; then fit (thread or in line)."""
        o = self.options
        if not self._samples or frame.t - self._samples[-1][0] >= o.identity_seconds / 12:  # about 12 samples
            self._samples.append((frame.t, frame.rgb.copy(), pts.copy()))
        if frame.t - self._samples[0][0] >= o.identity_seconds and len(self._samples) >= min(3, o.identity_keyframes):
            samples, self._samples = self._samples, []
            self.identity_state = "fitting"
            gen = self._id_generation
            if self.source.realtime:
                self._id_thread = threading.Thread(target=self._fit_identity, args=(samples, gen), daemon=True,
                                                   name="facerig-identity")
                self._id_thread.start()
            else:
                self._fit_identity(samples, gen)

    def _fit_identity(self, samples, generation):
        """Mean identity and albedo of single-image fits of diverse samples -> a pending personalised decoder."""
        import torch

        from facerig.face import FaceDecoder, FitOptions, fit_image
        from facerig.rig import personalise, select_keyframes

        try:
            t0 = time.perf_counter()
            torch.set_num_threads(max(1, self._threads or 1))
            pts = np.stack([p for _, _, p in samples])
            keys = select_keyframes(pts, np.ones(len(samples), bool), self.options.identity_keyframes)
            fopts = FitOptions(photo_schedule=((80, 4, 0.05), (120, 2, 0.0)), photo_subdivide=0)
            dec = FaceDecoder(self._base)
            codes = [fit_image(samples[k][1], dec, landmarks=samples[k][2], focal=self.focal, options=fopts).code
                     for k in keys]
            identity = torch.cat([c.identity for c in codes]).mean(0)
            albedo = torch.cat([c.albedo for c in codes]).mean(0)
            pm = personalise(self._base.to(dtype=torch.float64, device="cpu"), identity.double(), albedo.double())[0]
            if generation == self._id_generation:
                self._pending = (FaceDecoder(pm, dtype=self.dtype), time.perf_counter() - t0, len(keys))
        except Exception as err:  # noqa: BLE001 - tracking goes on with the face it has
            self.stats["identity_error"] = f"{type(err).__name__}: {err}"
            if generation == self._id_generation:
                self.identity_state = "default"

    def _warm_up(self, lm_tracker):
        """Start MediaPipe's graph (a blank frame) and run the solver once on the default face's own
        landmarks, so the first real frame does not pay for initialisation (hundreds of ms, which a
        real-time source would otherwise drop frames for)."""
        W, H = self.size
        lm_tracker.process(np.zeros((H, W, 3), np.uint8), timestamp=-1.0)  # no face: no track starts
        W, H = self.size
        d = 0.3 * min(W, H)
        tr = self._make_tracker(np.array([[W / 2 - d, H / 2 - d], [W / 2 + d, H / 2 + d]]))
        y0 = tr.initial_code()
        pts = tr.landmarks2d(y0)
        gray = np.full((H, W, 3), 128, np.uint8)
        y, _ = tr.fit_landmarks(pts, y0, None)
        y = tr.fit_light(gray, y, None)
        y2, _ = tr.fit_landmarks(pts, y, y)
        if tr.photo_size > 0:
            tr.refine_photometric(gray, pts, y2, warm=True)

    def _photo_fits(self, frame: Frame, photo_ms, slot: _Slot) -> bool:
        """"auto": run the photometric step unless a newer frame is already waiting (we are behind)
        or the frame would then leave later than the latency budget."""
        if photo_ms is None or not self.source.realtime:
            return True  # measure it once; a lossless source has no real-time budget
        if self.source.realtime and slot.pending():
            return False
        elapsed = 1000 * (time.perf_counter() - frame.captured)
        return elapsed + photo_ms <= self.options.latency_budget_ms

    def overlay(self, live: LiveFrame, mode: str = "shaded", hud: dict | None = None):
        """(H, W, 3) uint8 picture of a processed frame; see :func:`facerig.live.overlay.draw_overlay`."""
        from facerig.live.overlay import draw_overlay

        return draw_overlay(self, live, mode, hud)

    def reset_identity(self):
        """Re-make the tracker at the next face (from that face's size; the temporal state restarts);
        with ``identity="online"`` also start a new identity estimate (the face in use stays until
        the new one is ready)."""
        self._tracker = None
        if self.options.identity == "online" and self.identity_state != "rig":
            self._id_generation += 1
            self._samples, self._pending = [], None
            self.identity_state = "collecting"


def track(source=0, options: LiveOptions | None = None, *, rig=None, **kwargs):
    """Generator of :class:`LiveFrame` for ``source`` (camera index, video file, folder of frames,
    URL): ``for f in facerig.live.track("clip.mp4", realtime=False): print(f.weights)``.

    ``kwargs`` are :class:`LiveOptions` fields (used when ``options`` is None); ``rig`` a
    ``facerig rig`` output folder. The source is closed when the generator ends or is closed."""
    if options is None:
        options = LiveOptions(**kwargs)
    elif kwargs:
        raise TypeError("track: pass either options= or LiveOptions fields as keywords, not both")
    lt = LiveTracker(source, options, rig=rig)
    yield from lt.frames()
