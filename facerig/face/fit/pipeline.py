"""The fitter's entry points: :func:`fit_observations` (the three stages on working images with
known landmarks), :func:`fit_image`, :func:`fit_faces` and :func:`fit_frames` (photos and frames:
detection, working crop, fit, results in input pixels)."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from facerig.energy.solvers import minimize_lbfgs
from facerig.face.decoder import FaceDecoder
from facerig.face.energy import FaceObservation, contour_normals, face_energy
from facerig.face.fit.landmark import landmark_lm, landmark_setup, pnp_pose, update_contour
from facerig.face.fit.options import FitOptions, NoFaceError
from facerig.face.fit.params import ParameterPacker, parameter_scales, temporal_scales
from facerig.face.fit.photometric import photometric_stage
from facerig.face.fit.results import FaceFit, MultiFrameFit
from facerig.io import as_rgb_uint8
from facerig.landmarks import LandmarkTracker, detect_landmarks, square_crop, to_ibug68
from facerig.model import FaceModel

__all__ = ["fit_observations", "fit_image", "fit_faces", "fit_frames"]


def fit_observations(dec: FaceDecoder, landmarks: Tensor, image_size, principal_point: Tensor, focal: Tensor,
                     image: Tensor | None = None, valid: Tensor | None = None, options: FitOptions | None = None,
                     shared: bool = False, keep_stages: bool = False):
    """Fit B working images given their detected landmarks (the engine of :func:`fit_image` /
    :func:`fit_frames`; use it directly with synthetic data or your own detector).

    Args:
        dec: the :class:`FaceDecoder`.
        landmarks: (B, L, 2) detections in working-image pixels: L = 468 (Face Mesh order,
            ``options.landmarks == "dense"``) or 68 (iBUG order, "sparse"; 468 are reduced to 68).
        image_size: (H, W) of the working images.
        principal_point: (B, 2) pixels; focal: (B,) pixels (fixed).
        image: optional (B, H, W, 3) float photo in [0, 1] (needed for the photometric stage).
        valid: optional (B, H, W, 1) bool, real photo pixels.
        options: :class:`FitOptions`.
        shared: the B images show one person (multi-frame): identity and albedo are shared and
            a temporal term smooths expression and pose over consecutive frames.
        keep_stages: also return the code vectors after each stage.

    Returns:
        ``(y, obs, energies, timings, stages)``: the (B, D) code vectors, the final
        :class:`FaceObservation`, per-term energies (B,) tensors, seconds per stage, and
        ``{"pose": y1, "landmarks": y2, "photometric": y3}`` when ``keep_stages``.
    """
    opts = options or FitOptions()
    m = dec.model
    dt, dev = m.dtype, m.device
    kind = opts.landmarks
    if kind == "dense" and m.landmarks_mediapipe468 is None:
        kind = "sparse"
    landmarks = torch.as_tensor(landmarks, dtype=dt, device=dev)
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2 or landmarks.shape[1] not in (68, 468, 478):
        raise ValueError(f"landmarks: expected (B, 68 | 468 | 478, 2) pixels, got {tuple(landmarks.shape)}")
    if landmarks.shape[1] == 478:
        landmarks = landmarks[:, :468]
    if kind == "dense" and landmarks.shape[1] != 468:
        kind = "sparse"
    if kind == "sparse" and landmarks.shape[1] == 468:
        landmarks = to_ibug68(landmarks)
    B = landmarks.shape[0]
    H, W = (int(s) for s in image_size)
    pp = torch.as_tensor(principal_point, dtype=dt, device=dev).reshape(B, 2)
    focal = torch.as_tensor(focal, dtype=dt, device=dev).reshape(B)
    ids, contour, closed, weights = landmark_setup(dec, kind, opts)
    obs = FaceObservation(landmarks=landmarks, vertex_ids=ids[None].expand(B, -1).clone(), image_size=(H, W),
                          principal_point=pp, weights=weights, contour=contour,
                          normals=contour_normals(landmarks[:, contour], closed),
                          image=None if image is None else torch.as_tensor(image, dtype=dt, device=dev),
                          valid=valid)
    timings = {}
    stages = {}

    # ---- stage 1: pose (PnP + LM)
    t0 = time.perf_counter()
    code = dec.zero_code(B, image_size=max(H, W), dtype=dt, device=dev)
    code.focal = focal[:, None].clone()
    mean_lm = (m.mean.to(dev, dt) @ torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dt, device=dev)))[ids]
    for b in range(B):
        inner = torch.ones(len(ids), dtype=torch.bool)
        inner[contour.cpu()] = False
        rvec, tvec = pnp_pose(mean_lm.cpu()[inner].numpy(), landmarks[b].cpu()[inner].numpy(), float(focal[b]),
                          pp[b].cpu().numpy())
        code.rotation[b] = torch.as_tensor(rvec, dtype=dt)
        code.translation[b] = torch.as_tensor(tvec, dtype=dt)
    y = code.to_vector()
    e_pose = face_energy(dec, landmarks=1.0, identity=0, expression=0, albedo=0, sigma=opts.sigma, delta=opts.delta)
    pk = ParameterPacker(y, dec.sizes, parameter_scales(dec, ("rotation", "translation")))
    for _ in range(2):
        update_contour(dec, obs, y, ids)
        y = landmark_lm(e_pose, obs, pk, y, max(1, opts.pose_iterations // 2), dec)
    timings["pose"] = time.perf_counter() - t0
    if keep_stages:
        stages["pose"] = y.clone()

    # ---- stage 2: identity + expression from landmarks (LM), per image
    t0 = time.perf_counter()
    e_shape = face_energy(dec, landmarks=1.0, identity=opts.w_identity, expression=opts.w_expression, albedo=0,
                          sigma=opts.sigma, delta=opts.delta)
    pk = ParameterPacker(y, dec.sizes, parameter_scales(dec, ("identity", "expression", "rotation", "translation"),
                                       opts.fit_identity_modes))
    for _ in range(opts.shape_rounds):
        update_contour(dec, obs, y, ids)
        y = landmark_lm(e_shape, obs, pk, y, opts.shape_iterations, dec)
    if shared and B > 1:
        # one identity for all frames: start from the mean, then minimise jointly (L-BFGS: the
        # joint problem couples all frames) with temporal smoothness
        e_joint = face_energy(dec, landmarks=1.0, identity=opts.w_identity / B, expression=opts.w_expression,
                              albedo=0, temporal=opts.w_temporal, sigma=opts.sigma, delta=opts.delta,
                              temporal_scales=temporal_scales(dec))
        pk = ParameterPacker(y, dec.sizes, parameter_scales(dec, ("identity", "expression", "rotation", "translation"),
                                           opts.fit_identity_modes), shared=("identity",), joint=True)
        res = minimize_lbfgs(lambda p: e_joint(obs, pk.unpack(p)).sum(), pk.pack(y), max_iter=30, tol=1e-7)
        y = pk.unpack(res.x).detach()
    timings["shape"] = time.perf_counter() - t0
    if keep_stages:
        stages["landmarks"] = y.clone()

    # ---- stage 3: photometric refinement (Levenberg-Marquardt per image, Adam for joint multi-frame fits)
    t0 = time.perf_counter()
    lm_path = opts.photo_solver == "lm" and not (shared and B > 1)
    w_id = opts.w_identity_lm if lm_path else opts.w_identity_photo
    w_exp = opts.w_expression_lm if lm_path else opts.w_expression_photo
    energy = face_energy(dec, landmarks=opts.w_landmarks_photo, photometric=opts.w_photometric if image is not None else 0,
                         identity=w_id / (B if shared else 1), expression=w_exp,
                         albedo=opts.w_albedo / (B if shared else 1), temporal=opts.w_temporal if shared and B > 1 else 0,
                         sigma=opts.sigma, delta=opts.delta, temporal_scales=temporal_scales(dec),
                         photo_clamp=opts.photo_clamp)
    if image is not None and opts.photo_iterations != 0:
        y = photometric_stage(dec, obs, y, opts, shared and B > 1, energy)
    timings["photometric"] = time.perf_counter() - t0
    if keep_stages:
        stages["photometric"] = y.clone()
    with torch.no_grad():
        energies = energy.breakdown(obs, y)
    return y, obs, energies, timings, stages


def _decoder(model, device, dtype) -> FaceDecoder:
    if isinstance(model, FaceDecoder):
        return model
    dtype = dtype or torch.float32
    return FaceDecoder(model, dtype=dtype, device=device)


def _detect(rgb: np.ndarray, name: str, max_faces: int = 1):
    faces = detect_landmarks(rgb, max_faces=max_faces, refine=False)
    if not faces:
        raise NoFaceError(f"no face found in {name}")
    return faces


def _prepare(rgb: np.ndarray, points: np.ndarray, opts: FitOptions, focal: float | None, dec: FaceDecoder):
    """Working crop of one face: (crop, landmarks in crop px (N,2), principal point (2,), focal crop px, image, valid)."""
    H, W = rgb.shape[:2]
    crop = square_crop(rgb, points[:, :2], size=opts.crop_size, margin=opts.margin, border="replicate")
    lm = crop.to_crop(points[:, :2])
    pp = crop.to_crop(np.array([[W / 2.0, H / 2.0]]))[0]
    f_in = float(focal) if focal is not None else opts.focal_factor * max(H, W)
    return crop, lm, pp, f_in * crop.scale, f_in


def _make_fit(dec, y_b, obs, b, crop, rgb_shape, f_in, points, energies, timings, stages, name) -> FaceFit:
    H, W = rgb_shape[:2]
    code = dec.as_code(y_b[b:b + 1]).detach().clone()
    code.focal = torch.full_like(code.focal, f_in)
    with torch.no_grad():
        verts = dec.vertices(code)[0]
        pp = torch.tensor([[W / 2.0, H / 2.0]], dtype=verts.dtype, device=verts.device)
        lm68 = dec.landmarks2d(code, (H, W), pp, kind="ibug68")[0].cpu().numpy().astype(np.float64)
        dense_err = None
        pts = np.asarray(points, dtype=np.float64)[:, :2]
        if pts.shape[0] >= 468 and dec.model.landmarks_mediapipe468 is not None:
            lm468 = dec.landmarks2d(code, (H, W), pp, kind="mediapipe468")[0].cpu().numpy()
            dense_err = float(np.linalg.norm(lm468 - pts[:468], axis=1).mean())
            det68 = to_ibug68(pts[:468])
        else:
            det68 = pts[:68]
        err68 = float(np.linalg.norm(lm68 - det68, axis=1).mean())
        st = {}
        for k, v in stages.items():
            c = dec.as_code(v[b:b + 1])
            st[k] = dec.vertices(c)[0].detach()
    return FaceFit(code=code, vertices=verts.detach(), energies={k: float(v[b]) for k, v in energies.items()},
                   landmark_error_px=err68, landmark_error_dense_px=dense_err, landmarks68=lm68, detected=pts,
                   detected68=np.asarray(det68, dtype=np.float64), image_size=(H, W), model_name=dec.model.name,
                   timings=dict(timings), stages=st, crop_box=None if crop is None else np.asarray(crop.box),
                   decoder=dec)


def _read(image):
    name = str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") else "the image"
    return as_rgb_uint8(image), name


def fit_image(image, model: FaceModel | FaceDecoder | str = "default", *, landmarks=None, options: FitOptions | None = None,
              focal: float | None = None, iterations: int | None = None, device=None, dtype=None,
              keep_stages: bool = False) -> FaceFit:
    """Fit the face model to the (largest) face of a photo by analysis-by-synthesis.

    Args:
        image: (H, W, 3) uint8 RGB, (H, W) gray, (H, W, 4) RGBA, float in [0, 1], or a path.
            Huge images are handled on a resampled crop (results in input pixels).
        model: face model name / path, a :class:`~facerig.model.FaceModel` or a :class:`FaceDecoder`.
        landmarks: optional detections to use instead of running the detector: a
            :class:`facerig.landmarks.FaceLandmarks` or an (N, 2|3) array of input pixels
            (N = 468 / 478 Face Mesh order, or 68 iBUG order).
        options: :class:`FitOptions` (stages, weights, crop size...).
        focal: focal length in input pixels (default ``options.focal_factor x max(H, W)``).
        iterations: shortcut for ``options.photo_iterations`` (0 = landmark-only fit).
        device, dtype: where to fit (default CPU float32).
        keep_stages: keep the vertices after each stage in ``FaceFit.stages``.

    Returns:
        :class:`FaceFit`.

    Raises:
        NoFaceError: no face was detected. facerig.landmarks.ImageReadError: unreadable file.

    Performance: the tensors are small (468 vertices, a 160 px crop), so one torch thread is
    about as fast as several on an idle CPU and many times faster on a busy one
    (``torch.set_num_threads(1)``; the CLI's default). The first call in a process also pays a
    few seconds of one-time set-up (mediapipe graphs, torch.func forward-mode autograd).
    """
    t_all = time.perf_counter()
    opts = options or FitOptions()
    if iterations is not None:
        opts = FitOptions(**{**opts.__dict__, "photo_iterations": int(iterations)})
    dec = _decoder(model, device, dtype)
    rgb, name = _read(image)
    t0 = time.perf_counter()
    if landmarks is None:
        face = _detect(rgb, name)[0]
        points = face.points
    else:
        points = np.asarray(getattr(landmarks, "points", landmarks), dtype=np.float64)
        if points.ndim != 2 or points.shape[0] not in (68, 468, 478) or points.shape[1] not in (2, 3):
            raise ValueError(f"landmarks: expected (68 | 468 | 478, 2 | 3) pixels, got shape {points.shape}")
    t_detect = time.perf_counter() - t0
    return _fit_one(dec, rgb, points, opts, focal, keep_stages, t_detect, t_all, name)


def _fit_one(dec, rgb, points, opts, focal, keep_stages, t_detect, t_all, name):
    crop, lm, pp, f_crop, f_in = _prepare(rgb, points, opts, focal, dec)
    dt, dev = dec.model.dtype, dec.model.device
    img = torch.as_tensor(crop.image, device=dev).to(dt)[None] / 255.0
    y, obs, energies, timings, stages = fit_observations(
        dec, torch.as_tensor(lm, dtype=dt)[None], (opts.crop_size, opts.crop_size), torch.as_tensor(pp)[None],
        torch.tensor([f_crop]), image=img, valid=torch.as_tensor(crop.valid, device=dev)[None, ..., None],
        options=opts, keep_stages=keep_stages)
    timings = {"detect": t_detect, **timings}
    timings["total"] = time.perf_counter() - t_all
    return _make_fit(dec, y, obs, 0, crop, rgb.shape, f_in, points, energies, timings, stages, name)


def fit_faces(image, model="default", *, max_faces: int = 10, **kwargs) -> list:
    """Fit every detected face (up to ``max_faces``, largest first); arguments as :func:`fit_image`.

    Raises NoFaceError when there is none.
    """
    dec = _decoder(model, kwargs.pop("device", None), kwargs.pop("dtype", None))
    rgb, name = _read(image)
    t0 = time.perf_counter()
    faces = _detect(rgb, name, max_faces=max_faces)
    t_detect = time.perf_counter() - t0
    opts = kwargs.pop("options", None) or FitOptions()
    if kwargs.get("iterations") is not None:
        opts = FitOptions(**{**opts.__dict__, "photo_iterations": int(kwargs.pop("iterations"))})
    kwargs.pop("iterations", None)
    focal = kwargs.pop("focal", None)
    keep = kwargs.pop("keep_stages", False)
    if kwargs:
        raise TypeError(f"fit_faces: unexpected arguments {sorted(kwargs)}")
    return [_fit_one(dec, rgb, f.points, opts, focal, keep, t_detect / len(faces), time.perf_counter(), name)
            for f in faces]


def fit_frames(images, model="default", *, landmarks=None, options: FitOptions | None = None,
               focal: float | None = None, device=None, dtype=None, track: bool = True) -> MultiFrameFit:
    """Fit one person seen in N images or video frames: shared identity and albedo, per-frame
    expression, pose and SH light, temporal smoothness between consecutive frames.

    Args:
        images: a sequence of images (anything :func:`fit_image` accepts), in temporal order.
        model, options, focal, device, dtype: as :func:`fit_image`.
        landmarks: optional list of per-frame detections (as in :func:`fit_image`).
        track: detect with :class:`facerig.landmarks.LandmarkTracker` (video mode, smoothed);
            False runs the still-image detector on every frame.

    Returns:
        :class:`MultiFrameFit`.

    Raises:
        NoFaceError: a frame without a face (its index is named).
    """
    t_all = time.perf_counter()
    opts = options or FitOptions()
    dec = _decoder(model, device, dtype)
    frames = [_read(im) for im in images]
    if not frames:
        raise ValueError("images: expected at least one image")
    t0 = time.perf_counter()
    pts_all = []
    if landmarks is not None:
        if len(landmarks) != len(frames):
            raise ValueError(f"landmarks: {len(landmarks)} detections for {len(frames)} images")
        pts_all = [np.asarray(getattr(lm, "points", lm), dtype=np.float64) for lm in landmarks]
    elif track:
        tracker = LandmarkTracker(max_faces=1, refine=False)
        for i, (rgb, name) in enumerate(frames):
            found = tracker.process(rgb)
            if found is None:
                raise NoFaceError(f"no face found in frame {i} ({name})")
            pts_all.append(found.points)
    else:
        for i, (rgb, name) in enumerate(frames):
            pts_all.append(_detect(rgb, f"frame {i} ({name})")[0].points)
    t_detect = time.perf_counter() - t0
    preps = [_prepare(rgb, pts, opts, focal, dec) for (rgb, _), pts in zip(frames, pts_all)]
    dt, dev = dec.model.dtype, dec.model.device
    lm = torch.stack([torch.as_tensor(p[1], dtype=dt) for p in preps])
    pp = torch.stack([torch.as_tensor(p[2], dtype=dt) for p in preps])
    fc = torch.tensor([p[3] for p in preps], dtype=dt)
    img = torch.stack([torch.as_tensor(p[0].image).to(dt) / 255.0 for p in preps]).to(dev)
    valid = torch.stack([torch.as_tensor(p[0].valid) for p in preps]).to(dev)[..., None]
    y, obs, energies, timings, _ = fit_observations(dec, lm, (opts.crop_size, opts.crop_size), pp, fc, image=img,
                                                    valid=valid, options=opts, shared=True)
    timings = {"detect": t_detect, **timings, "total": time.perf_counter() - t_all}
    fits = [_make_fit(dec, y, obs, b, preps[b][0], frames[b][0].shape, preps[b][4], pts_all[b], energies, timings, {},
                      frames[b][1]) for b in range(len(frames))]
    code = dec.as_code(y)
    return MultiFrameFit(frames=fits, identity=code.identity[0].detach(), albedo=code.albedo[0].detach(),
                         energies={k: float(v.sum()) for k, v in energies.items()}, timings=timings)
