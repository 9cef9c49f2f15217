"""Video -> personalised face rig: :func:`build_rig`.

Stages (frames are streamed from :class:`facerig.video.VideoReader`; nothing holds the video):

1. **Landmark tracking** (:class:`facerig.landmarks.LandmarkTracker`, video mode): 468 Face
   Mesh points per frame, a "face found" flag; zero-phase Gaussian smoothing over time
   (:func:`facerig.rig.track.smooth_tracks`; ``RigOptions.zero_phase``).
2. **Keyframes** (:func:`facerig.rig.track.select_keyframes`): diverse poses and expressions.
3. **Identity and albedo** from the keyframes: by default the mean of independent single-image
   fits (:func:`facerig.face.fit_image`: landmarks, then Levenberg-Marquardt photometric);
   ``RigOptions(identity_fit="joint")``: one identity fitted jointly on them
   (:func:`facerig.face.fit_frames`).
4. **Personalisation**: the generic ARKit blendshapes carried onto the fitted neutral by
   deformation transfer (:func:`facerig.rig.transfer.deformation_transfer`).
5. **Per-frame tracking** of the 53 weights, head pose and SH light with the personalised rig
   (:class:`facerig.rig.track.FrameTracker`: LM on the landmarks warm-started from the previous
   frame, temporal terms, closed-form light, then one photometric LM step on an 80 px crop),
   cached per chunk of frames so an interrupted run resumes with the same result; then a
   zero-phase smoothing of the weights and pose over about one frame; lost frames are interpolated.
6. **Texture**: a de-lit UV albedo texture from the keyframes (:class:`facerig.rig.texture.TextureBuilder`).
7. **Outputs** (when ``out`` is given): ``rig.glb``, ``blendshapes/*.obj``, ``texture.png``,
   ``tracking.csv``, ``preview.mp4`` (original | overlay | rig), ``report.png``, ``rig.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from facerig.assets import asset_path
from facerig.face import FaceDecoder, FitOptions, NoFaceError, fit_frames, fit_image
from facerig.io import atomic_path
from facerig.landmarks import LandmarkTracker
from facerig.model import FaceModel, GraphicCode, load_model
from facerig.rig.correctives import corrective_shapes
from facerig.rig.outputs import (TRACKING_COLUMNS, frame_progress, tracking_csv_header, tracking_csv_row, write_preview,
                                 write_report, write_rig_files)
from facerig.rig.texture import TextureBuilder
from facerig.rig.track import (EYE_OPENING_COLOR, LANDMARK_SHAPE_PRIOR, MOUTH_OPENING_COLOR, FrameTracker, jitter,
                               select_keyframes, smooth_tracks)
from facerig.rig.transfer import deformation_transfer
from facerig.video import VideoError, VideoReader

__all__ = ["RigOptions", "Rig", "build_rig", "SAMPLE_VIDEO", "KEYFRAME_FIT", "TRACKING_COLUMNS", "tracking_csv_header",
           "tracking_csv_row", "personalise", "make_tracker"]

SAMPLE_VIDEO = "sample_face.mp4"
KEYFRAME_FIT = FitOptions(crop_size=224, photo_subdivide=1, photo_subdivide_min_size=120, w_identity_lm=1.0,
                          photo_schedule=((80, 4, 0.05), (120, 2, 0.0), (160, 2, 0.0), (224, 3, 0.0)))
"""Default :class:`facerig.face.FitOptions` of the keyframe fits (``RigOptions.key_fit``; a copy is used):
a 224 px working crop with a last photometric round at full size, the mesh subdivided once in the
rounds >= 120 px, a weaker identity prior. On tools/bench_rig.py's clips the mean keyframe identity
error went from 1.40 to 1.20 mm (8 keyframes each about 1.5 s instead of 1 s). With the model's detail
level in the rounds >= 120 px (FitOptions' default scheme) it is 0.98 mm at w_identity_lm 2 and 0.95 mm
at 1: the mean of 8 fits has less variance than one, so a weaker prior (less shrinkage) pays."""
CACHE_VERSION = 2


@dataclass
class RigOptions:
    """Settings of :func:`build_rig`.

    Attributes:
        keyframes: number of keyframes for the identity / albedo fit.
        identity_fit: "average" (default): an independent single-image fit of each keyframe
            (:func:`facerig.face.fit_image`: landmarks, then Levenberg-Marquardt photometric), identity
            and albedo = the mean of their coefficients (the model is linear in them, so the neutral
            is the mean of the neutrals; per-frame errors of pose, expression and detection average
            out); "joint": one identity and albedo fitted jointly on the keyframes
            (:func:`facerig.face.fit_frames`, Adam photometric stage).
        smoothing: smooth the tracked landmarks over time (False: raw detections).
        zero_phase: (seconds, seconds): how: a zero-phase Gaussian smoothing of the raw landmarks
            over time (default; no lag, so short blinks keep their depth), the first std for most
            points, the second for the eye and lip points (default 0: raw, a blink lasts a few
            frames; ``smooth_codes`` smooths the result) (:func:`facerig.rig.track.smooth_tracks`);
            None: the landmark tracker's causal One-Euro filter.
        w_temporal: weight of the per-frame temporal terms (0 = independent frames).
        temporal_scales: expected frame-to-frame change per part (``expression`` weight units,
            ``rotation`` radians, ``translation`` cm; :class:`facerig.rig.track.FrameTracker`).
        w_expression: weight of the expression prior in per-frame tracking.
        w_sparse: weight of the sparsity prior on the weights (:class:`facerig.rig.track.SparseWeights`).
        eye_weight, lip_weight: landmark weights of the eye and lip points in per-frame tracking
            (eye 15: on tools/bench_rig.py's clips the eyeBlink_R correlation is 0.83 against 0.79
            at 5, eyeBlink_L 0.88 at both, jawOpen 0.90 against 0.92, landmark jitter 0.28x
            against 0.25x of per-frame fitting).
        contour_weight: landmark weight of the face-oval (jaw line) points in per-frame tracking
            (sliding contour; the detector's chin follows an opening jaw poorly).
        shape_prior: ``{blendshape name or fnmatch pattern: factor}`` multiplying the per-frame
            expression prior of those shapes (:class:`facerig.rig.track.FrameTracker`; default
            :data:`facerig.rig.track.LANDMARK_SHAPE_PRIOR`; None = the same prior for all).
        correctives: number of low-rank corrective shapes learned from the landmark residuals
            (:func:`facerig.rig.correctives.corrective_shapes`; 0 = none), appended to the rig as
            ``corrective_1..k`` morph targets with their per-frame weights.
        iterations: LM iterations per frame (warm start).
        key_photo_iterations: photometric (Adam) iterations of the keyframe fit (``identity_fit="joint"``).
        key_fit: :class:`facerig.face.FitOptions` of the independent keyframe fits
            (``identity_fit="average"``; default a copy of :data:`KEYFRAME_FIT`: a finer photometric
            stage than a single photo's default, the identity fit runs once per video). A dict is
            accepted and converted: ``FitOptions(**key_fit)`` (the fitter's defaults + its keys).
        texture_size: side of texture.png in texels (0 = no texture).
        preview: write preview.mp4; preview_height: height of each preview panel (px, default
            min(frame height, 360)).
        chunk: frames per cache file.
        light: estimate per-frame SH light (closed form); False keeps the keyframes' mean light.
        dtype: tracking precision ("float32" default; the tracker's Jacobians are in closed form).
        photo_size: per-frame photometric step after the landmark solve
            (:meth:`facerig.rig.track.FrameTracker.refine_photometric`): side in pixels of the square
            crop around the face it renders and compares (0 = landmarks only). The pixels see what
            the detector's landmarks miss (the chin and lips of an opening jaw).
        photo_iterations: Levenberg-Marquardt iterations of that step per frame.
        w_photo, w_landmarks_photo, photo_eps: its photometric weight, the landmark term's weight in
            it, the Charbonnier scale of its colour residual.
        photo_light: the SH light is free in that step too (after its closed-form estimate).
        photo_eyes, photo_mouth: the step renders the vertices around the eye / mouth openings dark
            and counts them (open eyes and mouths are darker than skin); on the synthetic benchmark
            the dark mouth helps jawOpen, dark eyes lowered the eyeBlink correlation (off by default).
        smooth_codes: std in seconds of a zero-phase Gaussian applied to the tracked weights and
            head pose over time after tracking (:func:`facerig.rig.track.smooth_tracks`; 0 = off):
            removes the frame-to-frame noise of the photometric step (about one frame at 30 fps).
    """

    keyframes: int = 8
    identity_fit: str = "average"
    smoothing: bool = True
    zero_phase: tuple | None = (0.1, 0.0)
    w_temporal: float = 1.0
    temporal_scales: dict | None = None
    w_expression: float = 5.0
    w_sparse: float = 5.0
    eye_weight: float = 15.0
    lip_weight: float = 5.0
    contour_weight: float = 0.1
    shape_prior: dict | None = field(default_factory=lambda: dict(LANDMARK_SHAPE_PRIOR))
    correctives: int = 0
    iterations: int = 3
    key_photo_iterations: int = 40
    key_fit: FitOptions = field(default_factory=lambda: replace(KEYFRAME_FIT))
    texture_size: int = 256
    preview: bool = True
    preview_height: int | None = None
    chunk: int = 32
    light: bool = True
    dtype: str = "float32"
    photo_size: int = 80
    photo_iterations: int = 1
    w_photo: float = 20000.0
    w_landmarks_photo: float = 1.0
    photo_light: bool = True
    photo_eps: float = 0.02
    photo_eyes: bool = False
    photo_mouth: bool = True
    smooth_codes: float = 0.034

    def __post_init__(self):
        if self.key_fit is None or isinstance(self.key_fit, dict):
            self.key_fit = FitOptions(**(self.key_fit or {}))
        if not isinstance(self.key_fit, FitOptions):
            raise ValueError(f"key_fit: expected a facerig.face.FitOptions (or a dict of its fields), "
                             f"got {type(self.key_fit).__name__}")
        for name in ("keyframes", "iterations", "chunk"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if not (self.w_temporal >= 0 and self.w_expression >= 0):
            raise ValueError("w_temporal and w_expression must be >= 0")
        if isinstance(self.correctives, bool) or not isinstance(self.correctives, int) or self.correctives < 0:
            raise ValueError(f"correctives: expected an int >= 0, got {self.correctives!r}")
        if self.texture_size < 0:
            raise ValueError(f"texture_size: expected >= 0, got {self.texture_size}")
        if self.identity_fit not in ("average", "joint"):
            raise ValueError(f"identity_fit: expected 'average' or 'joint', got {self.identity_fit!r}")
        if isinstance(self.photo_size, bool) or not isinstance(self.photo_size, int) or not (
                self.photo_size == 0 or self.photo_size >= 16):
            raise ValueError(f"photo_size: expected 0 (off) or a crop side >= 16 pixels, got {self.photo_size!r}")
        if isinstance(self.photo_iterations, bool) or not isinstance(self.photo_iterations, int) or self.photo_iterations < 0:
            raise ValueError(f"photo_iterations: expected an int >= 0, got {self.photo_iterations!r}")
        if not (self.smooth_codes >= 0 and self.w_photo >= 0 and self.w_landmarks_photo >= 0 and self.photo_eps > 0):
            raise ValueError("smooth_codes, w_photo and w_landmarks_photo must be >= 0 and photo_eps > 0")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")


@dataclass
class Rig:
    """A personalised face rig and the performance tracked in the video.

    Geometry is in the model frame (x subject's left, y up, z toward the viewer), cm; poses are
    camera-frame codes (``X_cam = R(rotation) @ diag(1,-1,-1) @ X + translation``, OpenCV
    camera with ``focal`` px and the principal point at the frame centre).

    Attributes:
        neutral: (V, 3) the person's neutral face.
        blendshapes: (K, V, 3) personalised blendshape deltas; names: K ARKit names.
        faces: (F, 3) int64; uvs: (V, 2) texture coordinates (top-left origin, v down).
        texture: (S, S, 3) uint8 de-lit albedo texture, or None.
        albedo: (V, 3) per-vertex albedo of the fit.
        weights: (T, K) blendshape weights per frame (lost frames interpolated).
        rotations: (T, 3) axis-angle; translations: (T, 3) cm (camera frame); sh: (T, 9, 3) light.
        found: (T,) bool "face found"; landmark_error: (T,) mean 468-point error in px (NaN if lost).
        frames: (T,) source frame numbers; fps: frame rate of the T frames; image_size: (H, W);
        focal: px.
        keyframes: source frame numbers of the keyframes.
        identity: (K_id,) generic model identity coefficients; albedo_coeffs: (K_alb,).
        metrics: jitter and error summaries; timings: seconds per stage; files: written paths.
    """

    neutral: np.ndarray
    blendshapes: np.ndarray
    names: list
    faces: np.ndarray
    uvs: np.ndarray | None
    texture: np.ndarray | None
    albedo: np.ndarray
    weights: np.ndarray
    rotations: np.ndarray
    translations: np.ndarray
    sh: np.ndarray
    found: np.ndarray
    landmark_error: np.ndarray
    frames: np.ndarray
    fps: float
    image_size: tuple
    focal: float
    keyframes: list
    identity: np.ndarray
    albedo_coeffs: np.ndarray
    model_name: str = "default"
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)

    def model(self, dtype=torch.float64):
        """The rig as a :class:`~facerig.model.FaceModel` (mean = neutral, expression basis = the
        personalised blendshapes, albedo = the fitted per-vertex albedo, no identity modes)."""

        base = load_model(self.model_name)
        return _personal_model(base, torch.as_tensor(self.neutral), torch.as_tensor(self.blendshapes),
                               torch.as_tensor(self.albedo)).to(dtype=dtype)

    def codes(self, frames=None, dtype=torch.float64):
        """:class:`~facerig.model.GraphicCode` (batch T, or the selected frames) of :meth:`model`."""
        sel = slice(None) if frames is None else np.asarray(frames)
        T = len(self.weights[sel])
        K = self.blendshapes.shape[0]
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
        return GraphicCode(identity=torch.zeros(T, 0, dtype=dtype), expression=t(self.weights[sel]).reshape(T, K),
                           albedo=torch.zeros(T, 0, dtype=dtype), rotation=t(self.rotations[sel]).reshape(T, 3),
                           translation=t(self.translations[sel]).reshape(T, 3),
                           focal=torch.full((T, 1), float(self.focal), dtype=dtype), sh=t(self.sh[sel]).reshape(T, 9, 3))

    def save(self, out, *, blendshapes: bool = True) -> dict:
        """Write rig.glb, blendshapes/*.obj, texture.png, tracking.csv and rig.json into ``out``."""
        return write_rig_files(self, Path(out), blendshapes=blendshapes)


# ------------------------------------------------------------------------------------------ public pieces
def personalise(base, identity, albedo):
    """The personalised model of identity and albedo coefficients of a generic model.

    Args:
        base: the generic :class:`~facerig.model.FaceModel` (e.g. ``load_model("default")``).
        identity: (K_id,) identity coefficients; albedo: (K_alb,) albedo coefficients (e.g. a
            rig's ``identity`` / ``albedo_coeffs``, rig.json's "identity" / "albedo").

    Returns:
        ``(model, neutral, albedo, deltas)``: the personalised float64 CPU model (mean = the
        person's neutral, expression basis = the generic blendshapes carried onto it by
        :func:`facerig.rig.transfer.deformation_transfer`, per-vertex albedo), the (V, 3) neutral
        and (V, 3) albedo (float64 tensors, cm and [0, 1]) and the (K, V, 3) deltas (NumPy, cm).
    """
    from facerig.rig.transfer import deformation_transfer

    with torch.no_grad():
        idc = torch.as_tensor(np.asarray(identity), dtype=base.dtype, device=base.device)[None]
        neutral = base.shape(idc)[0].double().cpu()
        alb = base.albedo(torch.as_tensor(np.asarray(albedo), dtype=base.dtype, device=base.device)[None])[0]
        alb = alb.clamp(0, 1).double().cpu()
    deltas = deformation_transfer(base.mean.double().cpu().numpy(), base.expression_basis.double().cpu().numpy(),
                                  neutral.numpy(), base.faces.cpu().numpy())
    pm = _personal_model(base.to(dtype=torch.float64, device="cpu"), neutral, torch.as_tensor(deltas), alb)
    return pm, neutral, alb, deltas


def make_tracker(decoder, image_size, focal: float, sigma: float, options: RigOptions | None = None):
    """The :class:`facerig.rig.track.FrameTracker` :func:`build_rig` tracks with, set from
    :class:`RigOptions` (``decoder``: the personalised model's :class:`~facerig.face.FaceDecoder`;
    ``image_size`` (H, W) px; ``focal`` px; ``sigma`` landmark noise in frame pixels)."""
    from facerig.rig.track import FrameTracker

    opts = options or RigOptions()
    return FrameTracker(decoder, image_size, focal, sigma=sigma, w_expression=opts.w_expression,
                        w_temporal=opts.w_temporal, temporal_scales=opts.temporal_scales,
                        iterations=opts.iterations, w_sparse=opts.w_sparse,
                        eye_weight=opts.eye_weight, lip_weight=opts.lip_weight,
                        contour_weight=opts.contour_weight, shape_prior=opts.shape_prior,
                        photo_size=opts.photo_size, photo_iterations=opts.photo_iterations, w_photo=opts.w_photo,
                        w_landmarks_photo=opts.w_landmarks_photo, photo_light=opts.photo_light,
                        photo_eps=opts.photo_eps, eye_color=EYE_OPENING_COLOR if opts.photo_eyes else None,
                        mouth_color=MOUTH_OPENING_COLOR if opts.photo_mouth else None)


# ------------------------------------------------------------------------------------------ helpers
def _personal_model(base, neutral, deltas, albedo):
    dt = base.dtype
    K0, K = base.n_expression, deltas.shape[0]
    std = torch.cat([base.expression_std, torch.ones(max(0, K - K0), dtype=base.expression_std.dtype)])[:K]
    names = list(base.expression_names) + [f"corrective_{j + 1}" for j in range(max(0, K - K0))]
    return FaceModel(mean=neutral.to(dt), faces=base.faces, expression_basis=deltas.to(dt),
                     expression_std=std, expression_names=names[:K],
                     albedo_mean=albedo.to(dt), uvs=base.uvs, uv_faces=base.uv_faces,
                     landmark_maps=base.landmark_maps, masks=base.masks, face_groups=base.face_groups,
                     name="personalised", unit=base.unit, license=base.license, source=f"facerig rig of {base.name}")


_STAGE_OPTIONS = {  # which options each cached stage depends on
    "landmarks": ("smoothing", "zero_phase"),
    "identity": ("smoothing", "zero_phase", "keyframes", "identity_fit", "key_photo_iterations", "key_fit"),
    "track": ("smoothing", "zero_phase", "keyframes", "identity_fit", "key_photo_iterations", "key_fit", "w_temporal", "temporal_scales", "w_expression", "w_sparse", "eye_weight",
              "lip_weight", "contour_weight", "shape_prior", "iterations",
              "chunk",
              "light", "dtype", "photo_size", "photo_iterations", "w_photo", "w_landmarks_photo", "photo_light",
              "photo_eps", "photo_eyes", "photo_mouth"),
}


def _stage_keys(path: Path, reader, opts: RigOptions, model: str) -> dict:
    """A hash per cached stage: the input (path, size, mtime, frame range) and the options it uses,
    so changing e.g. the temporal weight reuses the landmarks and the identity fit."""
    st = path.stat()
    files = ""
    if path.is_dir():
        files = ",".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(path.iterdir()))
    base = {"path": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns, "files": files,
            "start": reader.start, "stop": reader.stop, "stride": reader.stride, "fps": reader.source_fps,
            "model": model, "v": CACHE_VERSION}
    o = asdict(opts)
    keys = {}
    for stage, names in _STAGE_OPTIONS.items():
        raw = json.dumps({**base, **{n: o[n] for n in names}}, sort_keys=True)
        keys[stage] = hashlib.sha1(raw.encode()).hexdigest()[:12]
    return keys


class _Cache:
    """Per-run cache folder: stage results and chunks of per-frame tracking (``.npz``, atomic).
    File names carry their stage's key; files of other keys are removed when a run starts."""

    def __init__(self, folder: Path | None, keys: dict):
        self.folder, self.keys = folder, keys
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        current = set(keys.values())
        for p in folder.glob("*.npz"):
            parts = p.stem.split("_")
            if len(parts) < 2 or parts[1] not in current:
                p.unlink(missing_ok=True)

    def _file(self, name):
        stage = name.split("_")[0]
        rest = name[len(stage):]
        return self.folder / f"{stage}_{self.keys[stage]}{rest}.npz"

    def load(self, name):
        if self.folder is None or not self._file(name).exists():
            return None
        try:
            with np.load(self._file(name), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:  # a damaged file: recompute
            return None

    def save(self, name, **arrays):
        if self.folder is None:
            return
        with atomic_path(self._file(name)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)


def _interpolate_lost(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames without a face (nearest value at the ends)."""
    out = np.array(values, dtype=np.float64, copy=True)
    idx = np.flatnonzero(found)
    if idx.size == 0 or idx.size == len(found):
        return out
    flat = out.reshape(len(found), -1)
    t = np.arange(len(found))
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(t, idx, flat[idx, j])
    return flat.reshape(out.shape)


# ------------------------------------------------------------------------------------------ stages
def _track_landmarks(reader, opts, progress, cache):
    hit = cache.load("landmarks")
    if hit is not None:
        return hit["points"], hit["found"].astype(bool), hit["frames"], float(hit["seconds"])

    t0 = time.perf_counter()
    pts, found, frames = [], [], []
    bar = frame_progress(reader.frame_count, "landmarks", progress)
    smooth = opts.smoothing and opts.zero_phase is None
    with LandmarkTracker(max_faces=1, refine=True, smoothing=smooth, fps=reader.fps) as tracker:
        for k, (i, rgb) in enumerate(reader):
            face = tracker.process(rgb, timestamp=k / reader.fps)
            frames.append(i)
            if face is None:
                pts.append(np.full((468, 2), np.nan, np.float32))
                found.append(False)
            else:
                pts.append(face.points[:468, :2].astype(np.float32))
                found.append(True)
            bar.update(1)
    bar.close()
    if not frames:
        raise VideoError(f"video {str(reader.path)!r} has no frames in the selected range")
    points, found, frames = np.stack(pts), np.asarray(found), np.asarray(frames, np.int64)
    if opts.zero_phase is not None and opts.smoothing:
        m = load_model("default")
        ids = m.landmarks_mediapipe468.indices.numpy()
        detail = np.zeros(468, bool)
        for region in ("eyes", "lips"):
            if region in m.masks:
                detail |= m.masks[region].numpy()[ids] > 0.5
        s_all, s_detail = (float(x) * reader.fps for x in opts.zero_phase)
        points = smooth_tracks(points, found, np.where(detail, s_detail, s_all)).astype(np.float32)
    seconds = time.perf_counter() - t0
    cache.save("landmarks", points=points, found=found, frames=frames, seconds=np.float64(seconds))
    return points, found, frames, seconds


def _read_frames(reader, wanted):
    wanted = set(int(w) for w in wanted)
    out = {}
    for i, rgb in reader:
        if i in wanted:
            out[i] = rgb
            if len(out) == len(wanted):
                break
    return out


def _fit_identity(reader, points, found, frames, opts, dec, cache, log, focal=None):
    key_pos = select_keyframes(points, found, opts.keyframes)
    hit = cache.load("identity")
    if hit is not None and np.array_equal(hit["key_pos"], key_pos):
        return hit
    key_frames = frames[key_pos]
    images = _read_frames(reader, key_frames)
    if opts.identity_fit == "average":
        log(f"fitting {len(key_pos)} keyframes independently (frames {', '.join(map(str, key_frames))}); "
            "identity and albedo = their mean")
        t0 = time.perf_counter()
        kopts = opts.key_fit
        fits = [fit_image(images[int(frames[p])], dec, landmarks=points[p], focal=focal, options=kopts) for p in key_pos]
        codes = [f.code for f in fits]
        identity = torch.cat([c.identity for c in codes]).mean(0)
        albedo = torch.cat([c.albedo for c in codes]).mean(0)
        crop = [f.crop_box for f in fits]
        seconds = time.perf_counter() - t0
    else:
        fopts = FitOptions(w_temporal=0.0, photo_iterations=opts.key_photo_iterations)
        log(f"fitting identity and albedo on {len(key_pos)} keyframes (frames {', '.join(map(str, key_frames))})")
        mf = fit_frames([images[int(i)] for i in key_frames], dec, landmarks=[points[p] for p in key_pos],
                        options=fopts, focal=focal)
        codes = [f.code for f in mf.frames]
        identity, albedo = mf.identity, mf.albedo
        crop = [f.crop_box for f in mf.frames]
        seconds = mf.timings.get("total", 0.0)
    res = {
        "key_pos": key_pos, "identity": identity.cpu().double().numpy(), "albedo": albedo.cpu().double().numpy(),
        "rotation": np.stack([c.rotation[0].cpu().double().numpy() for c in codes]),
        "translation": np.stack([c.translation[0].cpu().double().numpy() for c in codes]),
        "expression": np.stack([c.expression[0].cpu().double().numpy() for c in codes]),
        "sh": np.stack([c.sh[0].cpu().double().numpy() for c in codes]),
        "focal": np.float64(codes[0].focal.reshape(-1)[0]),
        "crop_scale": np.array([(b[2] - b[0]) for b in crop], np.float64),
        "seconds": np.float64(seconds),
    }
    cache.save("identity", **res)
    return res


def _track_frames(reader, points, found, frames, ident, tracker, opts, progress, cache):
    """Per-frame LM with warm start; chunks of ``opts.chunk`` frames cached. Returns ``(codes (T, D),
    landmark errors (T,), wall seconds, CPU seconds, frames tracked now (not from the cache))``."""
    T = len(frames)
    D = sum(tracker.sizes.values())
    Y = np.zeros((T, D), np.float64)
    err = np.full(T, np.nan)
    done = 0
    prev = None
    # resume: consecutive cached chunks
    while done < T:
        hit = cache.load(f"track_{done:07d}")
        if hit is None or hit["y"].shape[1] != D:
            break
        n = hit["y"].shape[0]
        Y[done:done + n], err[done:done + n] = hit["y"], hit["err"]
        prev = None if not hit["has_prev"] else torch.as_tensor(hit["prev"][None], dtype=tracker.dt)
        done += n
    t0, c0 = time.perf_counter(), time.process_time()
    key_pos = np.asarray(ident["key_pos"])
    sh_mean = torch.as_tensor(ident["sh"].mean(0), dtype=tracker.dt)
    bar = frame_progress(T, "tracking", progress)
    bar.update(done)
    if done < T:
        images = VideoReader(reader.path, start=int(frames[done]), stop=reader.stop, stride=reader.stride,
                             fps=reader.source_fps) if done else reader
        chunk_start = done
        k = done
        for i, rgb in images:
            if k >= T:
                break
            if found[k]:
                if prev is None:  # cold start from the nearest keyframe's pose and expression
                    j = int(np.argmin(np.abs(key_pos - k)))
                    y0 = tracker.initial_code(ident["rotation"][j], ident["translation"][j],
                                              np.clip(ident["expression"][j], 0, 1), ident["sh"][j])
                    y, e = tracker.fit_landmarks(points[k], y0, None)
                else:
                    y, e = tracker.fit_landmarks(points[k], prev, prev)
                if opts.light:
                    prev_sh = sh_mean if prev is None else prev[0, tracker.sl["sh"]].reshape(9, 3)
                    y = tracker.fit_light(rgb, y, prev_sh)
                else:
                    y = y.clone()
                    y[:, tracker.sl["sh"]] = sh_mean.reshape(1, -1)
                if tracker.photo_size > 0:
                    y = tracker.refine_photometric(rgb, points[k], y, warm=prev is not None)
                    with torch.no_grad():
                        e = float(tracker.lm_term.pixel_errors(tracker.last_obs, y).mean())
                prev = y
                Y[k], err[k] = y[0].cpu().numpy(), e
            else:
                prev = None  # the temporal terms restart after a gap
            k += 1
            bar.update(1)
            if k - chunk_start == opts.chunk or k == T:
                cache.save(f"track_{chunk_start:07d}", y=Y[chunk_start:k], err=err[chunk_start:k],
                           has_prev=np.bool_(prev is not None),
                           prev=(prev[0].cpu().numpy() if prev is not None else np.zeros(D)))
                chunk_start = k
        if k < T:
            raise RuntimeError(f"the video ended after {k} of {T} frames while tracking")
    bar.close()
    return Y, err, time.perf_counter() - t0, time.process_time() - c0, T - done


# ------------------------------------------------------------------------------------------ main
def build_rig(video=None, out=None, *, model="default", start: int = 0, stop: int | None = None, stride: int = 1,
              fps: float | None = None, focal: float | None = None, options: RigOptions | None = None, device=None,
              resume: bool = True,
              cache_dir=None, progress: bool = False, log=None) -> Rig:
    """Turn a video of one person into a personalised, animated face rig.

    Args:
        video: a video file (mp4v .mp4, MJPG .avi, or anything this OpenCV decodes) or a folder
            of frames; None = the shipped sample clip (``assets/sample_face.mp4``).
        out: output folder (None: write nothing, return the :class:`Rig`). Files: ``rig.glb``,
            ``blendshapes/*.obj``, ``texture.png``, ``tracking.csv``, ``preview.mp4`` (+ a still,
            ``preview.jpg``), ``report.png``, ``rig.json`` (all atomic) and ``cache/`` (per-frame
            results).
        model: the generic face model (must have the Face Mesh 468 map: "default").
        start, stop, stride: source frame range; fps: source frame rate override (folders: 30).
        focal: the camera's focal length in pixels if known (default
            ``FitOptions.focal_factor x max(H, W)``); the principal point is the frame centre.
        options: :class:`RigOptions`.
        device: torch device for the fits (default CPU).
        resume: reuse ``cache/`` results of an interrupted run with the same input and options
            (the result is the same as an uninterrupted run).
        cache_dir: where the cache lives (default ``out/cache``; without ``out`` no cache).
        progress: tqdm progress bars (frames/s); log: callable for status lines (default silent).

    Returns:
        :class:`Rig` (``rig.files`` lists what was written).

    Raises:
        facerig.video.VideoError: unreadable video / unsupported codec (names the working codecs).
        facerig.face.NoFaceError: no frame has a face.
    """

    opts = options or RigOptions()
    log = log or (lambda msg: None)
    t_all = time.perf_counter()
    if video is None:
        video = asset_path(SAMPLE_VIDEO, missing_hint="Rebuild it with tools/make_sample_video.py.")
    path = Path(video)
    reader = VideoReader(path, start=start, stop=stop, stride=stride, fps=fps)
    H, W = reader.size[1], reader.size[0]
    out = None if out is None else Path(out)
    folder = Path(cache_dir) if cache_dir is not None else (out / "cache" if out is not None else None)
    model_name = model if isinstance(model, str) else getattr(model, "name", "model")
    cache = _Cache(folder, _stage_keys(path, reader, opts, f"{model_name}|{focal}"))
    if not resume and folder is not None:
        for p in folder.glob("*.npz"):
            p.unlink()
    timings = {}

    # 1. landmarks
    points, found, frames, timings["landmarks"] = _track_landmarks(reader, opts, progress, cache)
    T = len(frames)
    if not found.any():
        raise NoFaceError(f"no face found in {path} ({T} frame{'s' if T != 1 else ''} read)")
    log(f"{path.name}: {T} frames at {reader.fps:.3g} fps, {W}x{H}; face found in {int(found.sum())}")

    # 2-3. keyframes, identity and albedo
    dec = FaceDecoder(model, device=device)
    base = dec.model
    if base.landmarks_mediapipe468 is None:
        raise ValueError(f"model: {base.name!r} has no MediaPipe 468-point map; use 'default'")
    t0 = time.perf_counter()
    ident = _fit_identity(reader, points, found, frames, opts, dec, cache, log, focal)
    timings["identity"] = time.perf_counter() - t0
    key_pos = np.asarray(ident["key_pos"])

    # 4. personalised blendshapes
    t0 = time.perf_counter()
    dt = torch.float64 if opts.dtype == "float64" else torch.float32
    pm, neutral, albedo, deltas = personalise(base, ident["identity"], ident["albedo"])
    pdec = FaceDecoder(pm, dtype=dt, device=device)
    timings["transfer"] = time.perf_counter() - t0

    # 5. per-frame tracking
    focal = float(ident["focal"])
    crop = float(np.median(ident["crop_scale"]))
    sigma = FitOptions().sigma * crop / FitOptions().crop_size  # the fitter's landmark noise, in frame pixels
    tracker = make_tracker(pdec, (H, W), focal, sigma, opts)
    Y, err, t_track, cpu_track, n_tracked = _track_frames(reader, points, found, frames, ident, tracker, opts, progress,
                                                          cache)
    timings["tracking"] = t_track
    timings["tracking_cpu"] = cpu_track
    sl = tracker.sl
    if opts.smooth_codes > 0 and found.sum() > 2:
        cols = np.r_[np.arange(sl["expression"].start, sl["expression"].stop),
                     np.arange(sl["rotation"].start, sl["translation"].stop)]
        Y = Y.copy()
        Y[:, cols] = smooth_tracks(Y[:, cols, None], found, opts.smooth_codes * reader.fps)[..., 0]
        Y[:, sl["expression"]] = Y[:, sl["expression"]].clip(0, 1)
    Y = _interpolate_lost(Y, found)
    weights, rot, trans = Y[:, sl["expression"]], Y[:, sl["rotation"]], Y[:, sl["translation"]]
    sh = Y[:, sl["sh"]].reshape(T, 9, 3)
    names = list(base.expression_names)
    if opts.correctives > 0:
        t0 = time.perf_counter()
        cshapes, cweights, explained = corrective_shapes(tracker, points, found, Y, opts.correctives)
        deltas = np.concatenate([deltas, cshapes], 0)
        weights = np.concatenate([weights, cweights], 1)
        names += [f"corrective_{j + 1}" for j in range(cshapes.shape[0])]
        timings["correctives"] = time.perf_counter() - t0
        timings["correctives_explained"] = float(np.sum(explained))

    # 6. texture from the keyframes (their fits' poses and light)
    t0 = time.perf_counter()
    texture = None
    if opts.texture_size > 0 and base.uvs is not None and base.uv_faces is None:
        tb = TextureBuilder(base.faces.cpu(), base.uvs.cpu(), opts.texture_size, fallback=albedo)
        images = _read_frames(reader, frames[key_pos])
        for j, p in enumerate(key_pos):
            code = pdec.as_code(torch.as_tensor(Y[p:p + 1], dtype=dt))
            with torch.no_grad():
                verts = pdec.vertices(code)[0]
            tb.add(images[int(frames[p])], verts, focal, torch.as_tensor(Y[p, sl["sh"]]).reshape(9, 3))
        texture = tb.texture()
        timings["texture_coverage"] = tb.coverage
    timings["texture"] = time.perf_counter() - t0

    # metrics
    with torch.no_grad():
        lm_fit = np.stack([tracker.landmarks2d(torch.as_tensor(Y[t:t + 1], dtype=dt)) for t in range(T)])
    metrics = {
        "frames": T, "faces_found": int(found.sum()),
        "jitter_landmarks_px": jitter(lm_fit, found),
        "jitter_detected_px": jitter(np.nan_to_num(points.astype(np.float64)), found),
        "jitter_weights": jitter(Y[:, sl["expression"]], found),
        "landmark_error_px": float(np.nanmean(err)) if np.isfinite(err).any() else float("nan"),
        "tracking_fps": (n_tracked / t_track) if n_tracked and t_track > 0 else None,
        "landmarks_fps": T / timings["landmarks"] if timings["landmarks"] > 0 else None,
    }
    rig = Rig(neutral=neutral.numpy(), blendshapes=deltas, names=names,
              faces=base.faces.cpu().numpy(), uvs=None if base.uvs is None else base.uvs.cpu().double().numpy(),
              texture=texture, albedo=albedo.numpy(), weights=weights, rotations=rot, translations=trans, sh=sh,
              found=found, landmark_error=err, frames=frames, fps=float(reader.fps), image_size=(H, W), focal=focal,
              keyframes=[int(frames[p]) for p in key_pos], identity=np.asarray(ident["identity"]),
              albedo_coeffs=np.asarray(ident["albedo"]), model_name=str(model_name), metrics=metrics, timings=timings)
    if opts.correctives > 0:
        # the same 468-point error without and with the corrective shapes (frames with a face)
        full = FaceDecoder(rig.model(dt))
        with torch.no_grad():
            lm_c = full.landmarks2d(rig.codes(dtype=dt), (H, W), tracker.pp.expand(T, 2), kind="mediapipe468").numpy()
        det = points.astype(np.float64)
        metrics["landmark_error_rig_px"] = float(np.linalg.norm(lm_fit - det, axis=-1)[found].mean())
        metrics["landmark_error_correctives_px"] = float(np.linalg.norm(lm_c - det, axis=-1)[found].mean())

    # 7. outputs
    if out is not None:
        t0 = time.perf_counter()
        files = rig.save(out)
        if opts.preview:
            files["preview"] = write_preview(rig, reader, out / "preview.mp4", progress, dt, opts.preview_height)
            files["preview_still"] = out / "preview.jpg"
        files["report"] = write_report(rig, out / "report.png", lm_fit)
        timings["outputs"] = time.perf_counter() - t0
        rig.files = files
    timings["total"] = time.perf_counter() - t_all
    reader.close()
    return rig
