"""Face reconstruction with the MoFA encoder: photo -> detect -> square crop -> encoder -> graphic code.

:func:`reconstruct` is the encoder's counterpart of :func:`facerig.face.fit_image` and returns the
same :class:`facerig.face.FaceFit` (code in the input image's camera, ``landmarks68`` in input
pixels, detections, energies, timings), in milliseconds instead of a second:

1. landmarks: :func:`facerig.landmarks.detect_landmarks` (468 Face Mesh points; or given);
2. a square crop of the encoder's size and margin (:func:`facerig.landmarks.square_crop`, as
   ``facerig prepare`` cuts its training crops) and its camera (:func:`facerig.encoder.data.crop_camera`:
   focal ``focal_factor x max(H, W)`` unless given, principal point at the photo's centre);
3. the encoder's code vector in that crop camera, mapped exactly to the photo's camera
   (same pose and shape, ``focal / crop.scale``: :func:`facerig.encoder.data.code_from_crop`);
4. optionally ``refine=N``: N Levenberg-Marquardt steps of the fitter's photometric stage
   (photometric + priors with the weights of :class:`facerig.face.FitOptions`, landmarks at
   weight 0 by default, rendered at 80 px, the last (N >= 5: last two) of N >= 3 steps at 160 px) on the fitter's
   160 px working crop, from the encoder's answer (:func:`refine_codes`, :func:`refine_rounds`).

:class:`Reconstructor` keeps the encoder and decoder loaded for many calls: ``rec(image)``,
``rec.batch(images)`` (one encoder pass for many photos) and ``rec.video(path)`` (frames tracked
with :class:`facerig.landmarks.LandmarkTracker`, encoded in batches).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from facerig.encoder.data import DEFAULT_MARGIN, code_from_crop, crop_camera
from facerig.encoder.losses import observation_from_batch
from facerig.encoder.model import load_encoder
from facerig.energy.solvers import levenberg_marquardt
from facerig.face.decoder import FaceDecoder
from facerig.face.energy import contour_correspondence, face_energy, stacked_residuals
from facerig.face.fit import (FaceFit, FitOptions, NoFaceError, init_light_albedo, photometric_refine,
                              photometric_refine_adam)
from facerig.io import as_rgb_uint8, load_image
from facerig.landmarks import LandmarkTracker, detect_landmarks, square_crop, to_ibug68
from facerig.model import GraphicCode
from facerig.video import VideoReader

__all__ = ["reconstruct", "reconstruct_batch", "reconstruct_video", "Reconstructor", "EncoderNotFoundError", "refine_codes",
           "refine_rounds"]


class EncoderNotFoundError(FileNotFoundError):
    """No encoder file: the shipped one is missing or the given path does not exist (the message
    says how to train one)."""


TRAIN_HINT = ("train one with `facerig prepare PHOTOS_OR_VIDEOS -o DATA` then `facerig train --data DATA --out RUN` "
              "and pass `--encoder RUN` (Python: encoder='RUN'), or copy RUN/encoder.pt to assets/default_encoder.pt")


def _load_encoder(encoder, device):
    if isinstance(encoder, torch.nn.Module):
        return encoder

    try:
        enc = load_encoder(encoder, device=device)
    except FileNotFoundError as err:
        what = ("there is no trained encoder: assets/default_encoder.pt is missing" if str(encoder) == "default"
                else f"encoder {str(encoder)!r} not found")
        raise EncoderNotFoundError(f"{what}. To get one, {TRAIN_HINT}. (Details: {err})") from None
    return enc.eval()


def _module_device(module: torch.nn.Module):
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


# ------------------------------------------------------------------------------------ refinement
def refine_codes(decoder: FaceDecoder, y: Tensor, landmarks: Tensor, image: Tensor, principal_point: Tensor,
                 steps: int, valid: Tensor | None = None, options: FitOptions | None = None,
                 pose_steps: int | None = None, init_light: bool = True, solver: str = "lm",
                 render_size: int = 80, landmark_weight: float = 0.0, final_size: int | None = 160):
    """Refine code vectors with the fitter's energies from the encoder's answer (batched).

    The face-oval landmarks slide: they are re-matched on the model's silhouette first
    (:func:`facerig.face.contour_correspondence`). Then, with ``solver="lm"`` (default):

    * ``steps`` Levenberg-Marquardt iterations of the fitter's photometric stage (closed-form
      Jacobians; robust photometric term over the skin mask + robust landmarks x
      ``landmark_weight`` + the priors of ``options``, a :class:`facerig.face.FitOptions`) on
      identity (its ``fit_identity_modes`` leading modes), expression, albedo, pose and SH light,
      rendered at ``render_size`` pixels (the working image is area-downsampled), after the
      fitter's closed-form SH light and albedo (``init_light``): :func:`facerig.face.photometric_refine`.
      With ``steps >= 3`` and ``final_size``, the last (``steps >= 5``: the last two) of the
      ``steps`` iterations render at ``final_size`` pixels instead (the fitter's finest level,
      160 px: :func:`refine_rounds`).

    With ``solver="adam"`` (the previous method): ``pose_steps`` (default ``min(steps, 3)``) LM
    iterations of the landmark energy on the pose, the closed-form light and albedo
    (``init_light``), then ``steps`` Adam iterations of the photometric-stage energy
    (:func:`facerig.face.photometric_refine_adam`, the fitter's Adam variant; each sample keeps its
    best iterate).

    One step (``solver="lm"``) is one Levenberg-Marquardt iteration: the closed-form Jacobian of
    all residuals (the 80 px render's skin pixels x 3 colours, 936 landmark rows, priors) w.r.t.
    the ~190 free parameters, a Cholesky solve and one trial render; about 40 ms of CPU time per
    face (1 thread), of which ~16 ms is the per-vertex Jacobian with its normals and ~5 ms the
    renders; the closed-form light and albedo before the first step cost ~5 ms.

    Choices, measured on the held-out synthetic faces of tools/bench_encoder.py (seeds 1000..;
    26 faces, encoder 2.64 mm, the full fit 1.11 mm in 0.78 s CPU): the encoder's answer is
    already well placed, so the landmarks get weight 0 (MediaPipe's landmarks carry biases of a
    few pixels that pull the shape away from the photometric optimum): 5 steps at 80 px gave
    1.31 mm with weight 0.05 (the previous default), 1.29 mm with 0.01 and 1.26 mm with 0;
    moving the last step to 160 px: 1.21 mm (1.10x the fit) for ~70 ms more; since the detail level
    (160 px renders on it, truth drawn on it, 30 faces): the last two at 160 px 1.09 mm vs 1.19 mm. Smaller renders
    are cheaper but much less accurate (8 faces, 5 steps at 64 / 48 px: 1.40 / 1.64 mm vs
    1.14 mm at 80 px), and leaving light and albedo out of the steps (closed form only, fewer
    parameters) does not converge (2.9 mm). A single step does not help (2.76 mm: light,
    albedo and shape move together; a larger initial damping gives 2.39-2.56 mm on 14 faces).

    Args:
        decoder: the face decoder; y: (B, D) code vectors in the working images' camera.
        landmarks: (B, 468, 2) detections in working-image pixels.
        image: (B, H, W, 3) working images in [0, 1]; valid: optional (B, H, W, 1) bool.
        principal_point: (B, 2) pixels; steps: LM or Adam iterations (0: only the energies are
            evaluated, unless ``pose_steps`` > 0).
        options: :class:`facerig.face.FitOptions` (weights, sigma, damping, identity modes).
        pose_steps: landmark LM iterations on the pose before the photometric steps (default
            0 with ``"lm"``, ``min(steps, 3)`` with ``"adam"``).
        solver: ``"lm"`` or ``"adam"``; render_size: LM render size (px); landmark_weight: weight
            of the landmark term in the LM steps at ``render_size`` (default 0, as the fitter's
            later rounds; its first round, which starts from a landmark fit, uses 0.05);
            final_size: render size of the last step(s) (:func:`refine_rounds`; None: all at ``render_size``).

    Returns:
        ``(y, energies)``: refined (B, D) vectors and the per-term energies ``{name: (B,)}`` at them
        (the fitter's photometric-stage energy on the working image).
    """
    opts = options or FitOptions()
    dec = decoder
    m = dec.model
    dt, dev = m.dtype, m.device
    y = y.detach().to(dev, dt)
    obs = observation_from_batch(dec, {"image": image.to(dev, dt), "landmarks": landmarks.to(dev, dt),
                                       "principal_point": principal_point.to(dev, dt)},
                                 contour_weight=opts.contour_weight)
    obs.valid = valid
    energy = face_energy(dec, landmarks=opts.w_landmarks_photo, photometric=opts.w_photometric,
                         identity=opts.w_identity_photo, expression=opts.w_expression_photo, albedo=opts.w_albedo,
                         sigma=opts.sigma, delta=opts.delta)
    with torch.no_grad():  # the face-oval landmarks slide: match them to the current silhouette
        code = dec.as_code(y)
        verts = dec.vertices(code)
        pix = dec.project(verts, code.focal, obs.image_size, obs.principal_point)
        c = obs.contour
        ids = obs.vertex_ids.clone()
        ids[:, c] = contour_correspondence(pix, verts, dec.faces, obs.landmarks[:, c].to(pix.dtype), ids[0, c],
                                           max_dist=0.1 * obs.image_size[0])
        obs.vertex_ids = ids
    if solver not in ("lm", "adam"):
        raise ValueError(f"solver: expected 'lm' or 'adam', got {solver!r}")
    pose_steps = (0 if solver == "lm" else min(int(steps), 3)) if pose_steps is None else int(pose_steps)
    if pose_steps > 0:
        y = _pose_lm(dec, obs, y, pose_steps, opts)
    if solver == "lm" and steps > 0:  # the fitter's own photometric stage, one round (light/albedo first)
        y = photometric_refine(dec, obs, y, opts, rounds=refine_rounds(steps, render_size, landmark_weight, final_size),
                               init_light=init_light)
    elif steps > 0 and init_light:
        y = init_light_albedo(dec, obs, y)
    if solver == "adam" and steps > 0:  # the fitter's Adam variant of the same stage, each sample keeps its best iterate
        y = photometric_refine_adam(dec, obs, y, opts, iterations=int(steps), energy=energy, init_light=False)
    with torch.no_grad():
        energies = energy.breakdown(obs, y)
    return y, energies


def refine_rounds(steps: int, render_size: int = 80, landmark_weight: float = 0.0,
                  final_size: int | None = 160) -> list:
    """The Levenberg-Marquardt rounds ``[(render size px, iterations, landmark weight)]`` of
    ``refine=steps`` (:func:`facerig.face.photometric_refine`'s ``rounds``): ``steps`` iterations
    at ``render_size``, except that with ``final_size`` the last one (``steps`` 3 or 4) or the last
    two (``steps >= 5``) render at ``final_size`` (landmark weight 0; at >= 120 px the fitter renders
    the model's detail level there). E.g. ``refine_rounds(5) == [(80, 3, 0.0), (160, 2, 0.0)]``.
    On tools/bench_encoder.py's faces (30, detail-surface truth) 5 steps gave 1.19 mm with one
    final step and 1.09 mm with two (the fit: 1.11 mm), for ~100 ms more."""
    steps = int(steps)
    if steps >= 3 and final_size:
        k = 2 if steps >= 5 else 1
        return [(int(render_size), steps - k, float(landmark_weight)), (int(final_size), k, 0.0)]
    return [(int(render_size), steps, float(landmark_weight))]


def _pose_lm(dec: FaceDecoder, obs, y: Tensor, iters: int, opts: FitOptions,
             parts=("rotation", "translation")) -> Tensor:
    """Levenberg-Marquardt on the robust landmark energy over ``parts`` of the code (whitened)."""
    m = dec.model
    sl = GraphicCode.slices(dec.sizes)
    energy = face_energy(dec, landmarks=1.0, identity=opts.w_identity, expression=opts.w_expression, albedo=0,
                         sigma=opts.sigma, delta=opts.delta)
    free = torch.cat([torch.arange(sl[p].start, sl[p].stop) for p in parts]).to(y.device)
    sc = {"expression": m.expression_std, "identity": m.identity_std, "rotation": torch.ones(3),
          "translation": torch.full((3,), 10.0)}
    scale = torch.cat([sc[p].to(y) for p in parts])
    y0 = y.detach()

    def unpack(p):
        return y0.index_copy(1, free, p * scale)

    res = levenberg_marquardt(lambda p: stacked_residuals(energy, obs, unpack(p)), y0[:, free] / scale,
                              max_iter=iters, damping=1e-3, tol=1e-7, jacobian="forward")
    return unpack(res.x).detach()


# ------------------------------------------------------------------------------------ reconstructor
class Reconstructor:
    """An encoder and a face decoder, loaded once, for many reconstructions.

    Args:
        encoder: ``"default"`` (``assets/default_encoder.pt``), an encoder file or training run
            folder (:func:`facerig.encoder.model.load_encoder`), or an ``nn.Module`` with the
            :class:`~facerig.encoder.model.FaceEncoder` interface (``forward(images (B, S, S, 3)
            in [0, 1], focal (B, 1), principal_point (B, 2)) -> (B, D)`` code vectors in the crop
            camera; attribute ``input_size`` S; optional ``margin``).
        model: face model of the encoder's codes (name, path, :class:`~facerig.model.FaceModel`
            or :class:`~facerig.face.FaceDecoder`; default the encoder's ``model_ref`` or "default").
        refine: default refinement steps (see :func:`refine_codes`).
        options: :class:`~facerig.face.FitOptions` (refinement crop and weights, focal factor).
        device, dtype: where the decoder works (default: the encoder's device, float32).
        batch_size: crops per encoder pass in :meth:`batch` / :meth:`video`.
        pose_steps: landmark LM iterations on the pose before the photometric steps (default:
            :func:`refine_codes`'s).
        refine_solver: ``"lm"`` (default) or ``"adam"``; refine_size: render size of the LM
            steps in pixels (default 80); refine_landmarks: weight of the landmark term in the
            LM steps (default 0); refine_final_size: render size of the last step(s) when refining
            3 steps or more (default 160; None: all at ``refine_size``); see :func:`refine_codes`.

    Raises:
        EncoderNotFoundError: no such encoder (the message says how to train one).
        ValueError: the encoder's code length does not match the model's.
    """

    def __init__(self, encoder="default", model=None, *, refine: int = 0, options: FitOptions | None = None,
                 device=None, dtype=None, batch_size: int = 32, pose_steps: int | None = None,
                 refine_solver: str = "lm", refine_size: int = 80, refine_landmarks: float = 0.0,
                 refine_final_size: int | None = 160):
        self.encoder = _load_encoder(encoder, device)
        if device is not None:
            self.encoder.to(device)
        self.device = torch.device(device) if device is not None else _module_device(self.encoder)
        if model is None:
            model = getattr(self.encoder, "model_ref", "default")
        self.decoder = model if isinstance(model, FaceDecoder) else FaceDecoder(model, device=self.device,
                                                                                 dtype=dtype or torch.float32)
        D = sum(int(v) for v in self.decoder.sizes.values())
        d_enc = getattr(self.encoder, "code_size", None)
        if d_enc is not None and int(d_enc) != D:
            raise ValueError(f"model: the encoder outputs {d_enc}-long codes, model {self.decoder.model.name!r} "
                             f"has {D}; pass the model the encoder was trained with")
        self.input_size = int(self.encoder.input_size)
        self.margin = float(getattr(self.encoder, "margin", DEFAULT_MARGIN))
        self.options = options or FitOptions()
        self.refine = self._check_refine(refine)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.pose_steps = pose_steps
        if refine_solver not in ("lm", "adam"):
            raise ValueError(f"refine_solver: expected 'lm' or 'adam', got {refine_solver!r}")
        if not isinstance(refine_size, int) or refine_size < 16:
            raise ValueError(f"refine_size: expected an int >= 16 (pixels), got {refine_size!r}")
        if not float(refine_landmarks) >= 0:
            raise ValueError(f"refine_landmarks: expected a weight >= 0, got {refine_landmarks!r}")
        self.refine_solver, self.refine_size = refine_solver, refine_size
        self.refine_landmarks = float(refine_landmarks)
        if refine_final_size is not None and (not isinstance(refine_final_size, int) or refine_final_size < 16):
            raise ValueError(f"refine_final_size: expected None or an int >= 16 (pixels), got {refine_final_size!r}")
        self.refine_final_size = refine_final_size

    @staticmethod
    def _check_refine(refine) -> int:
        if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
            raise ValueError(f"refine: expected an int >= 0 (refinement steps), got {refine!r}")
        return int(refine)

    # -------------------------------------------------------------- low level
    @torch.no_grad()
    def encode(self, crops, focal, principal_point) -> Tensor:
        """Code vectors (B, D) in the crop camera of crops (B, S, S, 3) (uint8 or float in [0, 1],
        NumPy or torch), focal (B,) or (B, 1) and principal point (B, 2) in crop pixels."""
        x = torch.as_tensor(np.asarray(crops) if not isinstance(crops, Tensor) else crops)
        x = x.to(self.device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        f = torch.as_tensor(np.asarray(focal, dtype=np.float32)).reshape(-1, 1).to(self.device)
        pp = torch.as_tensor(np.asarray(principal_point, dtype=np.float32)).reshape(-1, 2).to(self.device)
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            out.append(self.encoder(x[i:i + self.batch_size], f[i:i + self.batch_size], pp[i:i + self.batch_size]))
        return torch.cat(out).float()

    def from_landmarks(self, images, points, *, focal=None, refine: int | None = None, names=None,
                       energies: bool = True, t_detect=None) -> list[FaceFit]:
        """Reconstruct faces of known landmarks: one per (image, points) pair, batched.

        Args:
            images: list of (H, W, 3) uint8 RGB arrays; points: list of (468 | 478, 2 | 3) Face
                Mesh landmarks in their pixels.
            focal: None (``options.focal_factor x max(H, W)``), a number or a list, input pixels.
            refine: refinement steps (default ``self.refine``).
            energies: compute ``FaceFit.energies`` (one render per face when not refining).
            t_detect: list of detection times (s) to report in the timings.

        Returns:
            list of :class:`~facerig.face.FaceFit`.
        """
        refine = self.refine if refine is None else self._check_refine(refine)
        n = len(images)
        if len(points) != n:
            raise ValueError(f"points: {len(points)} landmark sets for {n} images")
        if n == 0:
            return []
        focals = focal if isinstance(focal, (list, tuple, np.ndarray)) else [focal] * n
        t0 = time.perf_counter()
        crops, f_c, pp_c, f_src, pts_all = [], [], [], [], []
        for rgb, pts, f in zip(images, points, focals):
            pts = np.asarray(getattr(pts, "points", pts), dtype=np.float64)
            if pts.ndim != 2 or pts.shape[0] not in (468, 478) or pts.shape[1] not in (2, 3):
                raise ValueError(f"points: expected (468 | 478, 2 | 3) Face Mesh landmarks, got {pts.shape}")
            crop = square_crop(rgb, pts[:, :2], size=self.input_size, margin=self.margin, border="replicate")
            fc, pp, fs = crop_camera(crop, f, self.options.focal_factor)
            crops.append(crop)
            f_c.append(fc)
            pp_c.append(pp)
            f_src.append(fs)
            pts_all.append(pts)
        t_crop = time.perf_counter() - t0
        t0 = time.perf_counter()
        dec = self.decoder
        dt, dev = dec.model.dtype, dec.model.device
        y = self.encode(np.stack([c.image for c in crops]), f_c, pp_c).to(dev, dt)
        t_enc = time.perf_counter() - t0
        # the encoder's answer in each photo's camera (pose and shape unchanged, focal / crop scale)
        code = dec.as_code(y).clone()
        code.focal = torch.as_tensor(f_src, dtype=dt, device=dev).reshape(-1, 1)
        y_src = code.to_vector()
        t0 = time.perf_counter()
        eng = {}
        if refine > 0 or energies:
            opts = self.options
            wc = [square_crop(rgb, pts[:, :2], size=opts.crop_size, margin=opts.margin, border="replicate")
                  for rgb, pts in zip(images, pts_all)]
            lm = torch.stack([torch.as_tensor(c.to_crop(p[:468, :2]), dtype=dt) for c, p in zip(wc, pts_all)])
            img = torch.stack([torch.as_tensor(c.image).to(dt) / 255.0 for c in wc]).to(dev)
            valid = torch.stack([torch.as_tensor(c.valid) for c in wc]).to(dev)[..., None]
            pp = torch.stack([torch.as_tensor(crop_camera(c, fs)[1], dtype=dt) for c, fs in zip(wc, f_src)])
            s = torch.as_tensor([c.scale for c in wc], dtype=dt, device=dev)
            cw = dec.as_code(y_src).clone()
            cw.focal = cw.focal * s[:, None]
            yw, eng = refine_codes(dec, cw.to_vector(), lm, img, pp, refine, valid=valid, options=opts,
                                   pose_steps=self.pose_steps, solver=self.refine_solver,
                                   render_size=self.refine_size, landmark_weight=self.refine_landmarks,
                                   final_size=self.refine_final_size)
            cw = dec.as_code(yw).clone()
            cw.focal = cw.focal / s[:, None]
            y_src = cw.to_vector()
        t_ref = time.perf_counter() - t0
        fits = []
        for b in range(n):
            timings = {"detect": 0.0 if t_detect is None else float(t_detect[b]), "crop": t_crop / n,
                       "encode": t_enc / n, "refine": t_ref / n}
            timings["total"] = sum(timings.values())
            fits.append(_make_fit(dec, y_src[b:b + 1], images[b].shape, pts_all[b],
                                  {k: float(v[b]) for k, v in eng.items()}, timings, crops[b]))
        return fits

    # -------------------------------------------------------------- images
    def _detect(self, image, name=None):
        if isinstance(image, (str, Path)):
            name = name or str(image)
            rgb = load_image(image)
        else:
            rgb = as_rgb_uint8(image)
        t0 = time.perf_counter()
        faces = detect_landmarks(rgb, max_faces=1, refine=False)
        t = time.perf_counter() - t0
        return rgb, (faces[0].points if faces else None), t, name or "the image"

    def __call__(self, image, *, landmarks=None, focal=None, refine: int | None = None,
                 energies: bool = True) -> FaceFit:
        """Reconstruct the largest face of one photo (arguments as :func:`reconstruct`;
        ``energies=False`` skips the energy evaluation - one render - when not refining)."""
        t_all = time.perf_counter()
        if landmarks is None:
            rgb, pts, t_det, name = self._detect(image)
            if pts is None:
                raise NoFaceError(f"no face found in {name}")
        else:
            rgb = load_image(image) if isinstance(image, (str, Path)) else as_rgb_uint8(image)
            pts, t_det = getattr(landmarks, "points", landmarks), 0.0
        fit = self.from_landmarks([rgb], [pts], focal=focal, refine=refine, energies=energies, t_detect=[t_det])[0]
        fit.timings["total"] = time.perf_counter() - t_all
        return fit

    def batch(self, images, *, focal=None, refine: int | None = None, energies: bool = True) -> list:
        """Reconstruct the largest face of each photo with batched encoder passes.

        ``images``: a list of anything :func:`reconstruct` takes. Returns one entry per image: a
        :class:`~facerig.face.FaceFit`, or ``None`` when the photo has no face. Unreadable files
        raise :class:`facerig.landmarks.ImageReadError`.
        """
        rgbs, pts, times, where = [], [], [], []
        focals = focal if isinstance(focal, (list, tuple, np.ndarray)) else [focal] * len(images)
        fs = []
        for i, im in enumerate(images):
            rgb, p, t, _ = self._detect(im)
            if p is not None:
                rgbs.append(rgb)
                pts.append(p)
                times.append(t)
                where.append(i)
                fs.append(focals[i])
        fits = self.from_landmarks(rgbs, pts, focal=fs, refine=refine, energies=energies, t_detect=times)
        out = [None] * len(images)
        for i, f in zip(where, fits):
            out[i] = f
        return out

    # -------------------------------------------------------------- video
    def video(self, video, *, stride: int = 1, start: int = 0, stop: int | None = None, focal=None,
              refine: int | None = None, smoothing: bool = True, energies: bool = True, with_frames: bool = False):
        """Reconstruct the tracked face of every ``stride``-th frame of a video (generator).

        Args:
            video: a video file or frame folder (:class:`facerig.video.VideoReader`), or an
                iterable of frames (RGB arrays) in order.
            stride, start, stop: frame sampling (files / folders only).
            smoothing: One-Euro smoothing of the tracked landmarks
                (:class:`facerig.landmarks.LandmarkTracker`).
            with_frames: also yield each frame.

        Yields:
            ``(index, FaceFit | None)`` in frame order (index: the source frame number for files,
            the position for iterables; None: no face tracked in that frame), or
            ``(index, FaceFit | None, rgb)`` with ``with_frames``; frames are encoded
            ``batch_size`` at a time.

        Raises:
            facerig.video.VideoError: unreadable video.
        """
        if isinstance(video, (str, Path)):
            reader = VideoReader(video, start=start, stop=stop, stride=stride)
            frames, fps = iter(reader), reader.fps
        else:
            reader, frames, fps = None, enumerate(video), 30.0
        pending = []

        def flush():
            ok = [(i, rgb, p, t) for i, rgb, p, t in pending if p is not None]
            fits = self.from_landmarks([o[1] for o in ok], [o[2] for o in ok], focal=focal, refine=refine,
                                       energies=energies, t_detect=[o[3] for o in ok]) if ok else []
            by = {o[0]: f for o, f in zip(ok, fits)}
            out = [(i, by.get(i), rgb) if with_frames else (i, by.get(i)) for i, rgb, *_ in pending]
            pending.clear()
            return out

        try:
            with LandmarkTracker(max_faces=1, refine=False, smoothing=smoothing, fps=fps) as tracker:
                for k, (index, rgb) in enumerate(frames):
                    rgb = as_rgb_uint8(rgb, "frame")
                    t0 = time.perf_counter()
                    face = tracker.process(rgb, timestamp=k / fps)
                    pending.append((index, rgb, None if face is None else face.points, time.perf_counter() - t0))
                    if len(pending) >= self.batch_size:
                        yield from flush()
                if pending:
                    yield from flush()
        finally:
            if reader is not None:
                reader.close()


def _make_fit(dec: FaceDecoder, y: Tensor, shape, points: np.ndarray, energies: dict, timings: dict, crop) -> FaceFit:
    """A :class:`FaceFit` of code vector y (1, D) in the photo's camera (principal point at its centre)."""
    H, W = shape[:2]
    code = dec.as_code(y).detach().clone()
    with torch.no_grad():
        verts_b = dec.vertices(code)  # (1, V, 3) camera frame; landmark maps commute with the rigid transform
        verts = verts_b[0]
        pp = torch.tensor([[W / 2.0, H / 2.0]], dtype=verts.dtype, device=verts.device)

        def project(kind):
            lm_cam = dec.model.landmark_maps[kind].apply(verts_b)
            return dec.project(lm_cam, code.focal, (H, W), pp)[0, :, :2].cpu().numpy().astype(np.float64)

        lm68 = project("ibug68")
        pts = np.asarray(points, dtype=np.float64)[:468, :2]
        dense = None
        if dec.model.landmarks_mediapipe468 is not None:
            dense = float(np.linalg.norm(project("mediapipe468") - pts, axis=1).mean())
    det68 = np.asarray(to_ibug68(pts), dtype=np.float64)
    if energies:
        energies = {**energies, "total": float(sum(energies.values()))} if "total" not in energies else energies
    return FaceFit(code=code, vertices=verts.detach(), energies=energies,
                   landmark_error_px=float(np.linalg.norm(lm68 - det68, axis=1).mean()),
                   landmark_error_dense_px=dense, landmarks68=lm68, detected=pts, detected68=det68,
                   image_size=(H, W), model_name=dec.model.name, timings=timings, stages={},
                   crop_box=np.asarray(crop.box), decoder=dec)


_CACHE: dict = {}


def _reconstructor(encoder, model, device, dtype) -> Reconstructor:
    """The cached Reconstructor of the last (encoder, model, device, dtype) asked for."""
    def ref(x):
        return ("id", id(x)) if isinstance(x, torch.nn.Module) else ("name", str(x))

    key = (ref(encoder), ref(model), str(device), str(dtype))
    hit = _CACHE.get("last")
    if hit is None or hit[0] != key:
        _CACHE["last"] = (key, Reconstructor(encoder, model, device=device, dtype=dtype))
    return _CACHE["last"][1]


def reconstruct(image, encoder="default", refine: int = 0, model=None, *, landmarks=None, focal: float | None = None,
                device=None, dtype=None) -> FaceFit:
    """Reconstruct the largest face of a photo with the MoFA encoder (milliseconds on a CPU).

    Args:
        image: (H, W, 3) uint8 RGB, (H, W) gray, (H, W, 4) RGBA, float in [0, 1], or a path.
        encoder: "default" (``assets/default_encoder.pt``), an encoder file / training run folder,
            or a :class:`~facerig.encoder.model.FaceEncoder` (or compatible module).
        refine: N Levenberg-Marquardt steps of the fitter's photometric stage from the encoder's
            answer (0: the encoder alone; N >= 3: the last at 160 px; ~40 ms of CPU per 80 px
            step). See :func:`refine_codes`.
        model: the face model of the encoder's codes (default: the encoder's own).
        landmarks: optional Face Mesh detections (:class:`facerig.landmarks.FaceLandmarks` or a
            (468 | 478, 2 | 3) array in input pixels) instead of running the detector.
        focal: focal length in input pixels (default ``2.5 x max(H, W)``, as :func:`facerig.face.fit_image`).
        device, dtype: where to run (default: CPU float32).

    Returns:
        :class:`facerig.face.FaceFit`, in the input image's camera and pixels (``landmarks68``
        (68, 2) input pixels; ``crop_box`` the encoder's crop window; timings in seconds:
        ``detect``, ``crop``, ``encode``, ``refine`` (refinement and the energy evaluation),
        ``total``; ``stages`` is empty).

    Raises:
        NoFaceError: no face detected. EncoderNotFoundError: no encoder (says how to train one).
        facerig.landmarks.ImageReadError: unreadable file.

    The encoder and decoder of the last call are cached; use :class:`Reconstructor` to control that.
    """
    rec = _reconstructor(encoder, model, device, dtype)
    return rec(image, landmarks=landmarks, focal=focal, refine=refine)


def reconstruct_batch(images, encoder="default", refine: int = 0, model=None, *, focal=None, device=None,
                      dtype=None, energies: bool = True) -> list:
    """Reconstruct the largest face of each of many photos, the encoder running on batches of crops.

    Arguments as :func:`reconstruct` (``focal``: one value or one per image). Returns a list with
    a :class:`facerig.face.FaceFit` per photo, ``None`` for photos without a face.
    ``energies=False`` skips the energy evaluation (one render per face) when not refining.
    """
    rec = _reconstructor(encoder, model, device, dtype)
    return rec.batch(images, focal=focal, refine=refine, energies=energies)


def reconstruct_video(video, encoder="default", refine: int = 0, model=None, *, stride: int = 1, start: int = 0,
                      stop: int | None = None, focal: float | None = None, smoothing: bool = True, device=None,
                      dtype=None, batch_size: int = 32) -> list:
    """Reconstruct the tracked face in the frames of a video (file, frame folder or list of frames).

    Arguments as :func:`reconstruct` and :meth:`Reconstructor.video`. Returns a list of
    ``(frame index, FaceFit | None)``.
    """
    rec = Reconstructor(encoder, model, refine=refine, device=device, dtype=dtype, batch_size=batch_size)
    return list(rec.video(video, stride=stride, start=start, stop=stop, focal=focal, smoothing=smoothing))

