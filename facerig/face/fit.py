"""Analysis-by-synthesis fitting of the face model to a photo (or to several frames), coarse to fine.

Pipeline of :func:`fit_image` (all stages minimise the face energy of :mod:`facerig.face.energy`
with the core solvers of :mod:`facerig.energy.solvers`):

0. **Landmarks** (:func:`facerig.landmarks.detect_landmarks`, 468 Face Mesh points) and a square
   working crop around them (:func:`facerig.landmarks.square_crop`, ``crop_size`` pixels); the
   crop keeps the photo's camera: same focal (times the crop scale) and the photo's centre as the
   principal point, mapped into the crop, so every result maps back exactly.
1. **Pose and camera** from the landmarks: PnP (``cv2.solvePnP``) of the mean face's landmark
   vertices, then Gauss-Newton / Levenberg-Marquardt on the robust landmark energy (rotation,
   translation). The focal length is fixed (``focal`` or ``focal_factor x max(H, W)``): landmarks
   alone barely constrain it.
2. **Identity + expression** from the landmarks: Levenberg-Marquardt on landmarks + Gaussian
   priors (whitened coefficients), with the jaw / face-oval correspondences re-chosen on the
   silhouette between rounds (:func:`facerig.face.energy.contour_correspondence`).
3. **Photometric refinement** of everything (identity, expression, albedo, pose, SH light):
   closed-form least-squares initialisation of SH light and albedo on the visible skin
   vertices, then Levenberg-Marquardt (the core's :func:`~facerig.energy.solvers.levenberg_marquardt`)
   on photometric + landmarks + priors, coarse to fine (``FitOptions.photo_schedule``: 4
   iterations on an 80 px render with weak landmarks, then 2 at 120 px and 3 at the crop's
   160 px without them - the detector's landmarks are biased by several pixels, so the photo decides). The
   photometric residual is the signed square root of the Charbonnier loss of the render clamped
   to [0, 1] (photos saturate) over the skin mask; its Jacobian is in closed form
   (:func:`_vertex_jacobian`: linear shape model, rotation, projection, vertex normals, SH
   irradiance; then perspective-correct barycentric interpolation with the visible triangle of
   each pixel frozen, as one sparse product), with no autograd in the loop.

:func:`fit_frames` does the same for N frames of one person: one identity and one albedo shared by
all frames, per-frame expression, pose and light, and temporal smoothness terms (its photometric
stage couples the frames and runs the core's Adam, ``FitOptions.adam_iterations``).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from facerig.energy.solvers import levenberg_marquardt, minimize_adam, minimize_lbfgs
from facerig.face.decoder import FaceDecoder
from facerig.face.energy import (FaceObservation, contour_correspondence, contour_normals, face_energy,
                                 stacked_residuals)
from facerig.model import DEFAULT_FOCAL_FACTOR, FaceModel, GraphicCode
from facerig.render.shading import check_shading

__all__ = ["FaceFit", "MultiFrameFit", "NoFaceError", "FitOptions", "fit_image", "fit_faces", "fit_frames",
           "fit_observations", "init_light_albedo", "photometric_refine"]

_PARTS = ("identity", "expression", "albedo", "rotation", "translation", "focal", "sh")
# Jacobians of the landmark residuals by forward-mode autograd (torch.func.jacfwd, one tangent per
# free parameter): about 2x faster than reverse mode here. The first call in a process pays a
# one-time torch.func set-up of a few seconds.
JACOBIAN_MODE = "forward"


SUBDIVIDE_SCHEMES = ("midpoint", "butterfly", "detail")
"""Names of ``FitOptions.photo_subdivide_scheme`` (see :func:`_subdivided`)."""


class NoFaceError(ValueError):
    """No face was found in the image (the message names the image when known)."""


@dataclass
class FitOptions:
    """Settings of the fitter (defaults tuned on ``tools/bench_fit.py``).

    Attributes:
        landmarks: "dense" (468 Face Mesh points; needs a Face Mesh topology model) or "sparse" (iBUG-68).
        crop_size: side of the working crop in pixels (landmark and photometric stages).
        margin: crop margin around the landmarks' box (fraction of its longer side).
        focal_factor: focal length = ``focal_factor x max(H, W)`` pixels when ``focal`` is not given.
        pose_iterations, shape_rounds, shape_iterations: LM iterations of stage 1, rounds x
            iterations of stage 2.
        photo_iterations: iterations of stage 3 (0 = landmark-only fit; None = the schedule's own
            counts, 9 Levenberg-Marquardt iterations, or 40 for Adam). An int is spread over the
            schedule's rounds in proportion (:meth:`photo_rounds`).
        photo_solver: "lm" (Levenberg-Marquardt, default) or "adam" (the core's Adam on the same
            energy; multi-frame fits always use Adam: their frames share identity and albedo).
        photo_schedule: LM rounds ``((render size px, iterations, landmark weight), ...)``,
            coarse to fine; the landmark weight replaces ``w_landmarks_photo`` in that round.
        photo_damping: initial LM damping.
        photo_clamp: compare the render clamped to [0, 1] with the photo (saturated pixels).
        w_identity_lm, w_expression_lm: prior weights of the LM photometric stage (the Adam
            variant uses w_identity_photo, w_expression_photo).
        photo_eps: Charbonnier scale of the LM photometric residual (colour units in [0, 1]:
            residuals much larger than it are weighted like L1, robust to occluders and to
            pixels the model cannot reproduce).
        photo_subdivide, photo_subdivide_min_size: subdivision levels (``photo_subdivide_scheme``)
            of the mesh the LM rounds render, with the same code (about 4x the vertices per level;
            slower), applied in the rounds whose render size is >= ``photo_subdivide_min_size`` px
            (default: 1 level from 120 px, i.e. the last two rounds).
        photo_exclude: face groups of the model (:attr:`FaceModel.face_groups`, e.g. "mouth_opening")
            whose pixels the LM photometric term leaves out (groups the model lacks are ignored).
        photo_subdivide_scheme: "detail" (default: the model's own finer surface,
            :meth:`facerig.model.FaceModel.detailed` - the default model's 1833 vertices on the
            ICT-FaceKit surface it was sampled from; models without a detail level are not
            subdivided), "midpoint" (the piecewise-linear surface) or "butterfly" (a smooth surface
            through the same vertices, still linear in the code; :func:`_butterfly_model`).
            Measured on tools/bench_fit.py (30 faces): the cross-model error drops from 0.62x to
            0.45x the mean face's with the detail level from 120 px (+0.13 s per fit).
        photo_shading: how the LM photometric stage renders: "vertex" (default; Gouraud: SH
            irradiance x albedo at the vertices, colours interpolated) or "pixel" (Phong-style:
            normals and albedo interpolated with the perspective-correct barycentrics, SH per pixel;
            closed-form Jacobian in :meth:`_PhotoLM._pixel_jacobian`; the Adam / multi-frame stage
            renders per vertex).
        photo_erode: leave out of the LM photometric term the pixels within this many pixels of
            the rendered silhouette (partly background in the photo).
        photo_lr: Adam learning rate (whitened coefficients); photo_shape_lr: its factor for
            identity and expression (pose and light use fixed smaller factors).
        sigma: landmark noise in crop pixels; delta: Huber threshold (in sigmas).
        contour_weight: weight of the jaw / face-oval landmarks (the others have 1).
        w_identity, w_expression: prior weights of stage 2 (strong: detector landmarks carry
            biases of several pixels); w_identity_photo, w_expression_photo, w_albedo,
            w_landmarks_photo (Adam; LM rounds set their own), w_photometric: weights of stage 3
            (the photometric term decides);
        w_temporal: temporal smoothness weight (multi-frame).
        fit_identity_modes: number of leading identity modes left free (the rest stay 0).
    """

    landmarks: str = "dense"
    crop_size: int = 160
    margin: float = 0.2
    focal_factor: float = DEFAULT_FOCAL_FACTOR
    pose_iterations: int = 10
    shape_rounds: int = 3
    shape_iterations: int = 6
    photo_iterations: int | None = None
    photo_lr: float = 0.03
    photo_shape_lr: float = 1.0
    sigma: float = 2.0
    delta: float = 3.0
    contour_weight: float = 0.5
    w_identity: float = 20.0
    w_expression: float = 20.0
    w_albedo: float = 1.0
    w_photometric: float = 20000.0
    w_landmarks_photo: float = 0.2
    w_identity_photo: float = 1.0
    w_expression_photo: float = 2.0
    w_temporal: float = 10.0
    fit_identity_modes: int = 80
    photo_solver: str = "lm"
    photo_schedule: tuple = ((80, 4, 0.05), (120, 2, 0.0), (160, 3, 0.0))
    photo_damping: float = 1e-3
    photo_clamp: bool = True
    w_identity_lm: float = 3.0
    w_expression_lm: float = 5.0
    photo_subdivide: int = 1
    photo_subdivide_min_size: int = 120
    photo_eps: float = 0.005
    photo_erode: int = 1
    photo_subdivide_scheme: str = "detail"
    photo_exclude: tuple = ()
    photo_shading: str = "vertex"

    def __post_init__(self):
        if self.landmarks not in ("dense", "sparse"):
            raise ValueError(f"landmarks: expected 'dense' or 'sparse', got {self.landmarks!r}")
        if int(self.crop_size) < 32:
            raise ValueError(f"crop_size: expected >= 32 pixels, got {self.crop_size!r}")
        for name in ("pose_iterations", "shape_rounds", "shape_iterations", "photo_iterations"):
            v = getattr(self, name)
            if (v is not None or name != "photo_iterations") and (not isinstance(v, int) or v < 0):
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        if self.photo_solver not in ("lm", "adam"):
            raise ValueError(f"photo_solver: expected 'lm' or 'adam', got {self.photo_solver!r}")
        try:
            rounds = [(int(r[0]), int(r[1]), float(r[2])) for r in self.photo_schedule]
        except (TypeError, ValueError, IndexError):
            rounds = None
        if not rounds or any(r[0] < 8 or r[1] < 0 or r[2] < 0 for r in rounds):
            raise ValueError("photo_schedule: expected rounds (render size >= 8 px, LM iterations >= 0, landmark "
                             f"weight >= 0), e.g. ((80, 4, 0.05), (160, 3, 0.0)); got {self.photo_schedule!r}")
        self.photo_schedule = tuple(rounds)
        for name in ("photo_subdivide", "photo_subdivide_min_size", "photo_erode"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        if isinstance(self.photo_exclude, str) or not all(isinstance(g, str) for g in self.photo_exclude):
            raise ValueError(f"photo_exclude: expected a tuple of face-group names, e.g. ('mouth_opening',), "
                             f"got {self.photo_exclude!r}")
        self.photo_exclude = tuple(self.photo_exclude)
        if self.photo_subdivide_scheme not in SUBDIVIDE_SCHEMES:
            raise ValueError(f"photo_subdivide_scheme: expected one of {SUBDIVIDE_SCHEMES}, got "
                             f"{self.photo_subdivide_scheme!r}")
        check_shading(self.photo_shading, "photo_shading")
        if not float(self.photo_eps) > 0:
            raise ValueError(f"photo_eps: expected a positive colour difference (e.g. 0.01), got {self.photo_eps!r}")

    def photo_rounds(self) -> list:
        """The Levenberg-Marquardt rounds of stage 3, ``[(render size px, iterations, landmark weight)]``:
        ``photo_schedule``, its iteration counts rescaled to total ``photo_iterations`` when that is set."""
        rounds = list(self.photo_schedule)
        if self.photo_iterations is None:
            return rounds
        total = sum(r[1] for r in rounds) or 1
        out, done, acc = [], 0, 0.0
        for size, n, w in rounds:
            acc += n * self.photo_iterations / total
            k = int(round(acc)) - done
            done += k
            out.append((size, k, w))
        return out

    @property
    def adam_iterations(self) -> int:
        """Iterations of the Adam variant of stage 3 (``photo_solver="adam"`` and multi-frame fits):
        ``photo_iterations``, default 40."""
        return 40 if self.photo_iterations is None else self.photo_iterations


@dataclass
class FaceFit:
    """The result of fitting one face in one image.

    All pixel quantities are in the INPUT image's pixels (x right, y down, pixel centre of column
    j at j + 0.5); the camera is OpenCV pinhole with focal ``code.focal`` and the principal
    point at the image centre.

    Attributes:
        code: :class:`~facerig.model.GraphicCode` (batch 1): identity, expression, albedo, pose
            (camera frame), focal (input pixels), SH light (renderer basis, see
            :mod:`facerig.face.decoder`).
        vertices: (V, 3) camera-frame vertices, cm.
        energies: per-term energy values at the solution and "total" (weighted by the
            stage-3 weights: ``w_landmarks_photo``, ``w_photometric``, ``w_albedo`` and the LM's
            ``w_identity_lm`` / ``w_expression_lm`` or Adam's ``w_identity_photo`` / ``w_expression_photo``).
        landmark_error_px: mean 2D distance (input pixels) between the fitted model's iBUG-68
            landmarks and the detected ones.
        landmark_error_dense_px: the same over all 468 Face Mesh points (None in sparse mode /
            for models without the Face Mesh map).
        landmarks68: (68, 2) the fitted model's iBUG-68 landmarks projected into the input image.
        detected: (N, 2) the detected landmarks (468 Face Mesh points, or 68).
        detected68: (68, 2) the iBUG-68 subset of the detections.
        image_size: (H, W) of the input image.
        model_name: the face model's name.
        timings: seconds per stage ("detect", "pose", "shape", "photometric", "total").
        stages: camera-frame vertices (V, 3) after each stage ("pose", "landmarks", "photometric").
        crop_box: (4,) the working crop's window in input pixels.
    """

    code: GraphicCode
    vertices: Tensor
    energies: dict
    landmark_error_px: float
    landmark_error_dense_px: float | None
    landmarks68: np.ndarray
    detected: np.ndarray
    detected68: np.ndarray
    image_size: tuple
    model_name: str
    timings: dict
    stages: dict = field(default_factory=dict)
    crop_box: np.ndarray | None = None
    decoder: FaceDecoder | None = field(default=None, repr=False)

    @property
    def principal_point(self) -> tuple:
        """``(cx, cy)`` = the input image's centre, pixels."""
        H, W = self.image_size
        return (W / 2.0, H / 2.0)

    def camera_dict(self) -> dict:
        """JSON-ready camera: OpenCV intrinsics K, image size, convention."""
        f = float(self.code.focal.reshape(-1)[0])
        cx, cy = self.principal_point
        return {"model": "opencv-pinhole", "K": [[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]],
                "image_size": [int(self.image_size[0]), int(self.image_size[1])],
                "convention": "x right, y down, z forward; X_cam = R(rotation) @ diag(1,-1,-1) @ X_model + "
                              "translation (cm); pixel (row i, col j) centre at (j+0.5, i+0.5)"}

    def to_dict(self, decimals: int = 5) -> dict:
        """JSON-ready dict: code parts, model name, camera, landmarks, energies, errors, timings."""
        def r(a):
            return np.round(np.asarray(a, dtype=np.float64), decimals).tolist()

        c = self.code
        return {
            "model": self.model_name,
            "image_size": [int(v) for v in self.image_size],
            "camera": self.camera_dict(),
            "code": {"identity": r(c.identity[0].detach().cpu()), "expression": r(c.expression[0].detach().cpu()),
                     "albedo": r(c.albedo[0].detach().cpu()), "rotation_axis_angle": r(c.rotation[0].detach().cpu()),
                     "translation_cm": r(c.translation[0].detach().cpu()), "focal_px": float(c.focal.reshape(-1)[0]),
                     "sh": r(c.sh[0].detach().cpu())},
            "expression_names": list(self.decoder.model.expression_names) if self.decoder is not None else None,
            "landmarks68": r(self.landmarks68),
            "detected_landmarks": r(self.detected),
            "detected_landmarks68": r(self.detected68),
            "landmark_error_px": float(self.landmark_error_px),
            "landmark_error_dense_px": None if self.landmark_error_dense_px is None else float(self.landmark_error_dense_px),
            "energies": {k: float(v) for k, v in self.energies.items()},
            "timings_s": {k: round(float(v), 4) for k, v in self.timings.items()},
            "crop_box": None if self.crop_box is None else r(self.crop_box),
        }

    def render(self, image=None, max_side: int = 1024, alpha: float = 1.0) -> np.ndarray:
        """The fitted face rendered over ``image`` (or black), (H', W', 3) uint8 RGB.

        Rendered at the input resolution, or scaled so the longer side is at most ``max_side``.
        ``alpha`` blends the render with the photo (1 = opaque face).
        """
        H, W = self.image_size
        s = min(1.0, max_side / max(H, W))
        h, w = max(1, round(H * s)), max(1, round(W * s))
        sx = w / W
        dec = self.decoder
        code = self.code.clone()
        with torch.no_grad():
            # scaling the image scales focal and principal point (square pixels: use sx ~ sy)
            code.focal = code.focal * sx
            out = dec(code, (h, w), torch.tensor([[w / 2.0, h / 2.0]], dtype=code.focal.dtype), antialias_edges=True)
        rgb = out.image[0].clamp(0, 1).cpu().numpy()
        a = out.alpha[0].cpu().numpy() * alpha
        if image is not None:
            from facerig.landmarks import as_rgb_uint8
            photo = as_rgb_uint8(image)
            if photo.shape[:2] != (h, w):
                import cv2
                photo = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
            bg = photo.astype(np.float32) / 255.0
        else:
            bg = np.zeros_like(rgb)
        return (np.clip(a * rgb + (1 - a) * bg, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class MultiFrameFit:
    """Result of :func:`fit_frames`: one identity and albedo, per-frame everything else.

    Attributes:
        frames: one :class:`FaceFit` per input frame (their codes share identity and albedo).
        identity: (K_id,) shared identity coefficients; albedo: (K_alb,) shared albedo.
        energies: per-term energies summed over the frames, and "total".
        timings: seconds per stage.
    """

    frames: list
    identity: Tensor
    albedo: Tensor
    energies: dict
    timings: dict


# ------------------------------------------------------------------------------------------ helpers
class _Packer:
    """Free parameters p <-> code vectors y.

    ``y[part] = p[part] * scale[part]`` for free parts (whitened coordinates), the base code's
    values for fixed parts. Shared parts (multi-frame) have one copy in ``p`` (batch 1) expanded
    over the N frames; per-frame parts are stored frame after frame.
    """

    def __init__(self, base: Tensor, sizes: dict, scales: dict, shared=(), joint: bool = False):
        self.base, self.sizes, self.scales = base.detach(), sizes, scales
        self.sl = GraphicCode.slices(sizes)
        self.free = [p for p in _PARTS if p in scales]
        self.shared = set(shared) if joint else set()
        self.joint = joint
        self.N = base.shape[0]
        layout, start = {}, 0
        for part in self.free:
            k = self.sl[part].stop - self.sl[part].start
            n = k if (not joint or part in self.shared) else k * self.N
            layout[part] = (slice(start, start + n), k)
            start += n
        self.layout, self.P = layout, start

    def unpack(self, p: Tensor) -> Tensor:
        pieces = []
        for part in _PARTS:
            if part not in self.layout:
                pieces.append(self.base[:, self.sl[part]].to(p.dtype))
                continue
            sl, k = self.layout[part]
            v = p[:, sl]
            if self.joint:
                v = v.expand(self.N, k) if part in self.shared else v.reshape(self.N, k)
            pieces.append(v * self.scales[part].to(p))
        return torch.cat(pieces, 1)

    def pack(self, y: Tensor) -> Tensor:
        pieces = []
        for part in self.free:
            s = self.scales[part].to(y)
            v = torch.where(s > 0, y[:, self.sl[part]] / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
            if self.joint:
                v = v.mean(0, keepdim=True) if part in self.shared else v.reshape(1, -1)
            pieces.append(v)
        return torch.cat(pieces, 1).detach()


def _scales(dec: FaceDecoder, parts, n_identity: int | None = None) -> dict:
    m = dec.model
    dt, dev = m.dtype, m.device
    out = {}
    for p in parts:
        if p == "identity":
            s = m.identity_std.clone()
            if n_identity is not None and n_identity < s.numel():
                s[n_identity:] = 0.0  # frozen modes: y = p * 0
            out[p] = s
        elif p == "expression":
            out[p] = m.expression_std.clone()
        elif p == "albedo":
            out[p] = m.albedo_std.clone()
        elif p == "rotation":
            out[p] = torch.ones(3, dtype=dt, device=dev)
        elif p == "translation":
            out[p] = torch.full((3,), 10.0, dtype=dt, device=dev)
        elif p == "sh":
            out[p] = torch.ones(27, dtype=dt, device=dev)
        else:
            raise ValueError(p)
    return out


def _pnp(obj: np.ndarray, img: np.ndarray, f: float, pp: np.ndarray):
    """(rvec (3,), tvec (3,)) of the OpenCV camera seeing object points obj (N,3) at img (N,2)."""
    import cv2

    K = np.array([[f, 0, pp[0]], [0, f, pp[1]], [0, 0, 1]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj.astype(np.float64), img.astype(np.float64), K, None,
                                  flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(obj.astype(np.float64), img.astype(np.float64), K, None, rvec, tvec,
                                      useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or not np.all(np.isfinite(tvec)) or tvec[2, 0] <= 0:
        # fall back: frontal face at the depth that matches the landmark spread
        spread_img = np.linalg.norm(img - img.mean(0), axis=1).mean()
        spread_obj = np.linalg.norm(obj[:, :2] - obj[:, :2].mean(0), axis=1).mean()
        z = f * spread_obj / max(spread_img, 1e-6)
        c = (img.mean(0) - pp) * z / f
        return np.zeros(3), np.array([c[0], c[1], z]) - obj.mean(0)
    return rvec.reshape(3), tvec.reshape(3)


def _residual_fn(energy, obs, packer):
    def r(p):
        return stacked_residuals(energy, obs, packer.unpack(p))
    return r


def _update_contour(dec: FaceDecoder, obs: FaceObservation, y: Tensor, own_ids: Tensor) -> None:
    """Re-choose the model vertices of the contour landmarks on the current silhouette (in place)."""
    if obs.contour.numel() == 0:
        return
    with torch.no_grad():
        code = dec.as_code(y)
        verts = dec.vertices(code)
        pix = dec.project(verts, code.focal, obs.image_size, obs.principal_point)
        c = obs.contour.to(y.device)
        ids = contour_correspondence(pix, verts, dec.faces, obs.landmarks[:, c].to(pix.dtype), own_ids[c],
                                     max_dist=0.1 * obs.image_size[0])
        obs.vertex_ids = obs.vertex_ids.clone()
        obs.vertex_ids[:, c] = ids


def _lm(energy, obs, packer, y, iters, dec: FaceDecoder | None = None):
    if iters <= 0:
        return y
    jacobian = JACOBIAN_MODE
    if dec is not None and not packer.joint and all(p not in packer.layout for p in ("albedo", "sh")):
        def jacobian(q):  # closed form (see _vertex_jacobian / _stacked_jacobian)
            yq = packer.unpack(q)
            pix, J = _vertex_jacobian(dec, packer, q, yq, obs.image_size, obs.principal_point, colours=False)
            return _stacked_jacobian(energy, obs, packer, q, pix, J)
    res = levenberg_marquardt(_residual_fn(energy, obs, packer), packer.pack(y), max_iter=iters, damping=1e-3,
                              tol=1e-7, jacobian=jacobian)
    return packer.unpack(res.x).detach()


def _sample_image(image: Tensor, pts: Tensor) -> Tensor:
    """Bilinear samples (B, N, 3) of images (B, H, W, 3) at pixel points (B, N, 2) (centre convention)."""
    B, H, W, _ = image.shape
    g = torch.stack([pts[..., 0] / W * 2 - 1, pts[..., 1] / H * 2 - 1], -1)[:, :, None]
    s = torch.nn.functional.grid_sample(image.permute(0, 3, 1, 2), g.to(image.dtype), align_corners=False,
                                        padding_mode="border")
    return s[..., 0].permute(0, 2, 1)


@torch.no_grad()
def init_light_albedo(dec: FaceDecoder, obs: FaceObservation, y: Tensor, shared_albedo: bool = False) -> Tensor:
    """Closed-form SH light and albedo on the visible skin vertices (alternating linear least squares).

    Args:
        dec: the decoder; obs: the observation (its ``image`` (B, H, W, 3) is sampled at the visible
            vertices' projections); y: (B, D) code vectors (geometry and camera are kept).
        shared_albedo: one albedo for all B samples (multi-frame fits).
    Returns:
        (B, D) the code with ``albedo`` and ``sh`` replaced.
    """
    from facerig.render import rasterize, sh_basis, vertex_normals

    m = dec.model
    code = dec.as_code(y).clone()
    B = code.batch_size
    verts = dec.vertices(code)
    pix = dec.project(verts, code.focal, obs.image_size, obs.principal_point)
    faces = dec.faces.to(verts.device)
    frags = rasterize(pix, faces, obs.image_size)
    vis = torch.zeros(B, m.n_vertices, dtype=torch.bool, device=verts.device)
    for b in range(B):
        f = frags.pix_to_face[b]
        vis[b, faces[torch.unique(f[f >= 0])].reshape(-1)] = True
    skin = dec.skin_weight.to(verts) > 0.5
    inside = (pix[..., 0] > 1) & (pix[..., 0] < obs.image_size[1] - 1) & (pix[..., 1] > 1) & (pix[..., 1] < obs.image_size[0] - 1)
    use = vis & skin[None] & inside
    colors = _sample_image(obs.image.to(verts.dtype), pix[..., :2])  # (B, V, 3)
    Y = sh_basis(vertex_normals(verts, faces))  # (B, V, 9)
    alb_mean = m.albedo_mean.to(verts)
    basis = m.albedo_basis.to(verts)  # (K, V, 3)
    std = m.albedo_std.to(verts)
    K = basis.shape[0]
    alb_coef = code.albedo.clone()
    sh = code.sh.clone()
    for _ in range(2):
        alb = alb_mean[None] + torch.einsum("bk,kvc->bvc", alb_coef, basis)
        for b in range(B):
            u = use[b]
            if int(u.sum()) < 20:
                continue
            for ch in range(3):
                A = alb[b, u, ch, None] * Y[b, u]  # (n, 9)
                rhs = colors[b, u, ch]
                reg = 1e-3 * torch.eye(9, dtype=A.dtype, device=A.device)
                sh[b, :, ch] = torch.linalg.solve(A.T @ A + reg, A.T @ rhs)
        irr = torch.einsum("bvk,bkc->bvc", Y, sh)  # (B, V, 3)
        # albedo: colors = irr * (mean + sum_k b_k basis_k)  -> linear in b, ridge prior b ~ N(0, std^2)
        rows_A, rows_r = [], []
        for b in range(B):
            u = use[b]
            if int(u.sum()) < 20:
                rows_A.append(None)
                rows_r.append(None)
                continue
            A = (irr[b, u][None] * basis[:, u]).permute(1, 2, 0).reshape(-1, K)  # (n*3, K)
            r = (colors[b, u] - irr[b, u] * alb_mean[u]).reshape(-1)
            rows_A.append(A)
            rows_r.append(r)
        lam = 0.05 * torch.diag(1.0 / std.square())
        if shared_albedo:
            AtA = sum(A.T @ A for A in rows_A if A is not None)
            Atr = sum(A.T @ r for A, r in zip(rows_A, rows_r) if A is not None)
            if isinstance(AtA, Tensor):
                sol = torch.linalg.solve(AtA + lam * max(1, len(rows_A)), Atr)
                alb_coef[:] = sol
        else:
            for b in range(B):
                if rows_A[b] is None:
                    continue
                A = rows_A[b]
                alb_coef[b] = torch.linalg.solve(A.T @ A + lam, A.T @ rows_r[b])
    code.sh = sh
    code.albedo = alb_coef
    return code.to_vector()


def _vertex_jacobian(dec: FaceDecoder, pk: "_Packer", p: Tensor, y: Tensor, size, principal_point: Tensor,
                     colours: bool = True, depth: bool = False, normals: bool = False):
    """Projected vertices and shaded vertex colours of code vector ``y = pk.unpack(p)`` and their
    Jacobian w.r.t. the packer's free parameters ``p``, in closed form (forward mode by hand:
    linear shape model, rotation, pinhole projection, area-weighted vertex normals, SH irradiance).

    Returns ``vals`` (B, V, 5) = (u, v, r, g, b) and ``J`` (B, V, 5, P); pixels of an image of
    ``size`` with ``principal_point`` (B, 2) and the focal of ``y``. ``colours=False``: only the
    projected positions, (B, V, 2) and (B, V, 2, P). ``depth=True``: the camera-frame depth z (cm)
    is inserted after (u, v): (B, V, 6) = (u, v, z, r, g, b). ``normals=True`` (per-pixel shading):
    no SH light at the vertices; (B, V, 9) = (u, v, z, unit normal (3, camera frame), albedo (3)).
    """
    from facerig.render import axis_angle_to_matrix, sh_basis
    from facerig.render.shading import sh_basis_grad
    from facerig.model.code import model_to_opencv

    m = dec.model
    code = dec.as_code(y)
    B, V = y.shape[0], m.n_vertices
    dt, dev = y.dtype, y.device
    P = p.shape[1]
    faces = dec.faces.to(dev)
    Mflip = model_to_opencv(dt, dev)
    rot = code.rotation
    Rm = axis_angle_to_matrix(rot)
    R = Rm @ Mflip  # (B, 3, 3)
    X = m.shape(code.identity, code.expression)  # (B, V, 3) model frame
    cam = X @ R.transpose(1, 2) + code.translation[:, None]
    Jc = torch.zeros(B, V, 3, P, dtype=dt, device=dev)  # d cam / d p
    Ja = torch.zeros(B, V, 3, P, dtype=dt, device=dev)  # d albedo / d p
    Jsh = {}
    for part, (sl, k) in pk.layout.items():
        s = pk.scales[part].to(dt)
        if part in ("identity", "expression"):
            basis = (m.identity_basis if part == "identity" else m.expression_basis).to(dt)  # (K, V, 3)
            Jc[..., sl] = torch.einsum("bij,kvj->bvik", R, basis * s[:, None, None])
        elif part == "translation":
            Jc[..., sl] = torch.diag(s)[None, None].expand(B, V, 3, 3)
        elif part == "rotation":
            # dR/d rot_k of Rodrigues' formula: central differences in float64 (error ~1e-8)
            h = 1e-6
            r64 = rot.detach().to(torch.float64)[:, None, :] + torch.eye(3, dtype=torch.float64, device=dev) * h
            r64m = r64 - 2 * h * torch.eye(3, dtype=torch.float64, device=dev)
            dR = ((axis_angle_to_matrix(r64) - axis_angle_to_matrix(r64m)) / (2 * h)).permute(0, 2, 3, 1).to(dt)  # (B,3,3,3)
            dRf = torch.einsum("bijk,jl->bilk", dR, Mflip)  # d(R Mflip)/d rot_k
            Jc[..., sl] = torch.einsum("bvj,bijk->bvik", X, dRf) * s
        elif part == "albedo":
            Ja[..., sl] = torch.einsum("kvc->vck", m.albedo_basis.to(dt) * s[:, None, None])[None]
        elif part == "sh":
            Jsh["sl"], Jsh["s"] = sl, s
    # projection
    f = code.focal.reshape(B, 1)
    z = cam[..., 2]
    pix_u = f * cam[..., 0] / z + principal_point[:, 0:1]
    pix_v = f * cam[..., 1] / z + principal_point[:, 1:2]
    fz = f / z
    Ju = fz[..., None] * (Jc[:, :, 0] - (cam[..., 0] / z)[..., None] * Jc[:, :, 2])
    Jv = fz[..., None] * (Jc[:, :, 1] - (cam[..., 1] / z)[..., None] * Jc[:, :, 2])
    if not colours:
        return torch.stack([pix_u, pix_v], -1), torch.stack([Ju, Jv], 2)
    # area-weighted vertex normals m_v = sum of the (unnormalised) normals of the faces around v, and
    # their tangents dm = M @ Jc with a sparse (3V x 3V) matrix M (:func:`_normal_tangent_matrix`)
    x0, x1, x2 = cam[:, faces[:, 0]], cam[:, faces[:, 1]], cam[:, faces[:, 2]]  # (B, F, 3)
    fn = torch.linalg.cross(x1 - x0, x2 - x0, dim=-1)
    msum = torch.zeros(B, V, 3, dtype=dt, device=dev)
    for k in range(3):
        msum = msum.index_add(1, faces[:, k], fn)
    dm = torch.stack([_normal_tangent_matrix(dec, cam[b]) @ Jc[b].reshape(V * 3, P) for b in range(B)]).reshape(B, V, 3, P)
    norm = msum.norm(dim=-1, keepdim=True).clamp(min=1e-20)
    n = msum / norm
    dn = (dm - n[..., None] * (n[..., None] * dm).sum(-2, keepdim=True)) / norm[..., None]
    # SH irradiance: irr_c = sum_k Y_k(n) sh_kc
    if normals:  # per-pixel shading: the SH light is applied at the pixels (_PhotoLM._pixel_jacobian)
        alb = m.albedo(code.albedo)
        vals = torch.cat([torch.stack([pix_u, pix_v, z], -1), n, alb], -1)
        J = torch.cat([torch.stack([Ju, Jv, Jc[:, :, 2]], 2), dn, Ja], 2)
        return vals, J
    Y = sh_basis(n)  # (B, V, 9)
    dY = sh_basis_grad(n)  # (B, V, 3 normal comps, 9)
    sh = code.sh  # (B, 9, 3)
    irr = torch.einsum("bvk,bkc->bvc", Y, sh)
    dirr_dn = torch.einsum("bvjk,bkc->bvcj", dY, sh)  # (B, V, 3 ch, 3 comps)
    dirr = torch.einsum("bvcj,bvjp->bvcp", dirr_dn, dn)
    if Jsh:
        sl, s = Jsh["sl"], Jsh["s"]
        blk = torch.zeros(B, V, 3, 9, 3, dtype=dt, device=dev)  # column (k, c') of channel c: Y_k [c == c']
        for c in range(3):
            blk[:, :, c, :, c] = Y
        dirr[..., sl] = dirr[..., sl] + blk.reshape(B, V, 3, 27) * s
    alb = m.albedo(code.albedo)
    col = alb * irr
    dcol = Ja * irr[..., None] + alb[..., None] * dirr
    if depth:
        vals = torch.cat([torch.stack([pix_u, pix_v, z], -1), col], -1)
        J = torch.cat([torch.stack([Ju, Jv, Jc[:, :, 2]], 2), dcol], 2)
    else:
        vals = torch.cat([torch.stack([pix_u, pix_v], -1), col], -1)
        J = torch.cat([torch.stack([Ju, Jv], 2), dcol], 2)
    return vals, J


def _normal_tangent_matrix(dec: FaceDecoder, cam: Tensor) -> Tensor:
    """The sparse (3V x 3V) CSR matrix M with ``d m = M @ d x`` for the area-weighted vertex
    normals ``m_v = sum_{faces f at v} (x_1 - x_0) x (x_2 - x_0)`` of vertices ``cam`` (V, 3).

    Face f's normal is ``sum_{edges (p, q) of its cycle} r_p x r_q`` for positions ``r = x - c``
    relative to any point c; with c = the vertex v it is added to (well conditioned: edge-sized
    numbers), ``d(r_p x r_q) = -[r_q]x dx_p + [r_p]x dx_q`` (c's own terms cancel around the cycle),
    so block (v, u) of M sums the skew matrices of the faces around v that touch u: the one-ring
    pattern, ~7 blocks per row, built once per mesh and cached on ``dec``."""
    faces = dec.faces.to(cam.device)
    V = cam.shape[0]
    cache = dec.__dict__.setdefault("_normal_tangent_cache", {})
    key = (str(cam.device), V)
    if key not in cache:
        F = faces.shape[0]
        t = torch.arange(3, device=cam.device)
        cyc_p, cyc_q = t, (t + 1) % 3  # the cycle's directed edges (p, q), corner indices
        vt = faces[:, :, None].expand(F, 3, 3)  # (F, target corner, edge)
        vp = faces[:, cyc_p][:, None, :].expand(F, 3, 3)
        vq = faces[:, cyc_q][:, None, :].expand(F, 3, 3)
        key_p, key_q = vt * V + vp, vt * V + vq  # block (row vertex, column vertex)
        blocks, inv = torch.unique(torch.stack([key_p, key_q], -1).reshape(-1), return_inverse=True)
        rv, cv = blocks // V, blocks % V
        n_blk = blocks.shape[0]
        ij = torch.arange(3, device=cam.device)
        rows = (rv[:, None, None] * 3 + ij[None, :, None]).expand(n_blk, 3, 3).reshape(-1)
        cols = (cv[:, None, None] * 3 + ij[None, None, :]).expand(n_blk, 3, 3).reshape(-1)
        order = torch.argsort(rows * (3 * V) + cols)  # CSR: row-major, columns ascending
        counts = torch.bincount(rows, minlength=3 * V)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        cache[key] = (inv.reshape(F, 3, 3, 2), n_blk, order, crow, cols[order], cyc_p, cyc_q)
    inv, n_blk, order, crow, cols, cyc_p, cyc_q = cache[key]
    X = cam[faces]  # (F, 3 corners, 3)
    r = X[:, None, :, :] - X[:, :, None, :]  # (F, target t, corner k, 3): x_k - x_t
    rp, rq = r[:, :, cyc_p], r[:, :, cyc_q]  # (F, t, edge, 3)

    def skew(a):  # (..., 3) -> (..., 3, 3) with skew(a) @ b = a x b
        z = torch.zeros_like(a[..., 0])
        return torch.stack([torch.stack([z, -a[..., 2], a[..., 1]], -1), torch.stack([a[..., 2], z, -a[..., 0]], -1),
                            torch.stack([-a[..., 1], a[..., 0], z], -1)], -2)

    contrib = torch.stack([-skew(rq), skew(rp)], 3)  # (F, t, edge, {p, q}, 3, 3)
    vals = torch.zeros(n_blk, 3, 3, dtype=cam.dtype, device=cam.device).index_add_(0, inv.reshape(-1), contrib.reshape(-1, 3, 3))
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, vals.reshape(-1)[order], (3 * V, 3 * V), check_invariants=False)


def _stacked_jacobian(energy, obs: FaceObservation, pk: "_Packer", p: Tensor, pix: Tensor, Jpix: Tensor) -> Tensor:
    """Jacobian (B, M, P) of ``stacked_residuals(energy, obs, pk.unpack(p))`` w.r.t. ``p``.

    :class:`~facerig.face.energy.LandmarkTerm` rows come in closed form from the projected
    vertices ``pix`` (B, V, 2) (pixels of ``obs``) and their Jacobian ``Jpix`` (B, V, 2, P);
    :class:`~facerig.face.energy.CodePrior` rows are diagonal, as are those of any term with a
    ``part`` name, a ``slice`` of the code vector and a ``diagonal_derivative(y) -> (B, K)`` method
    (d residual_k / d y[slice][k]); any other term falls back to forward-mode autograd.
    """
    from facerig.energy.solvers import batched_jacobian
    from facerig.face.energy import CodePrior, LandmarkTerm

    B, P = p.shape
    rows = []
    for name, term in energy.terms.items():
        sw = math.sqrt(energy.weights[name])
        if isinstance(term, LandmarkTerm):
            idx = obs.vertex_ids.to(pix.device)
            L = idx.shape[1]
            pred = torch.gather(pix, 1, idx[..., None].expand(-1, -1, 2))
            Jp = torch.gather(Jpix, 1, idx[..., None, None].expand(-1, -1, 2, P))  # (B, L, 2, P)
            e = pred - obs.landmarks.to(pred.dtype)
            if obs.contour.numel():
                c = obs.contour.to(e.device)
                n = obs.normals.to(e.dtype)
                t = torch.stack([n[..., 1], -n[..., 0]], -1)
                st = math.sqrt(term.tangent_weight)
                ec, Jcn = e[:, c], Jp[:, c]
                e = e.index_copy(1, c, torch.stack([(ec * n).sum(-1), (ec * t).sum(-1) * st], -1))
                Jp = Jp.index_copy(1, c, torch.stack([(Jcn * n[..., None]).sum(2), (Jcn * t[..., None]).sum(2) * st], 2))
            z = e / term.sigma
            if term.delta is None:
                dr = torch.full_like(z, 1.0 / math.sqrt(2.0))
            else:
                a = z.abs()
                dr = torch.where(a <= term.delta, torch.full_like(z, 1.0 / math.sqrt(2.0)),
                                 term.delta / (2.0 * (term.delta * (a - 0.5 * term.delta)).clamp(min=1e-30).sqrt()))
            w = term._weights(obs, z).sqrt()  # (B, L, 1)
            rows.append(((sw / term.sigma) * (dr * w)[..., None] * Jp).reshape(B, 2 * L, P))
        elif isinstance(term, CodePrior) or callable(getattr(term, "diagonal_derivative", None)):
            # diagonal terms: residual k depends on coordinate k of the term's part only
            K = term.slice.stop - term.slice.start
            J = torch.zeros(B, K, P, dtype=p.dtype, device=p.device)
            if term.part in pk.layout and not pk.joint:
                sl, _k = pk.layout[term.part]
                if isinstance(term, CodePrior):  # (y - mean) / scale: the mean does not matter
                    std = term.scale.to(p) if isinstance(term.scale, Tensor) else torch.full((K,), float(term.scale), dtype=p.dtype, device=p.device)
                    d = sw * pk.scales[term.part].to(p) / std
                else:
                    d = sw * pk.scales[term.part].to(p) * term.diagonal_derivative(pk.unpack(p))
                J[:, torch.arange(K), torch.arange(sl.start, sl.stop)] = d
            rows.append(J)
        else:
            rows.append(sw * batched_jacobian(lambda q, t=term: t.residuals(obs, pk.unpack(q)), p, "forward")[1])
    return torch.cat(rows, 1)


def _robust_rho(e: Tensor, eps: float) -> Tensor:
    """Signed square root of the Charbonnier loss, ``rho(e)^2 = sqrt(e^2 + eps^2) - eps`` (smooth at 0)."""
    return e / ((e.square() + eps * eps).sqrt() + eps).sqrt()


def _robust_rho_grad(e: Tensor, eps: float) -> Tensor:
    """d rho / d e of :func:`_robust_rho`."""
    R = (e.square() + eps * eps).sqrt()
    s = (R + eps).sqrt()
    return 1.0 / s - e.square() / (2.0 * R * s ** 3)


class _PhotoLM:
    """Residuals and Jacobian of the stage-3 energy (landmarks + priors + photometric) for the
    core's Levenberg-Marquardt.

    The photometric residual of colour channel c at pixel p is
    ``sqrt(w_photo * m_p / area) * rho(clamp(I_p, 0, 1) - photo_p)`` with ``rho`` the signed square
    root of the Charbonnier loss, ``m`` the skin mask x coverage (less the ``erode`` px next to the
    silhouette) x valid pixels and ``area`` its sum, so the squared residuals sum to the same value as :class:`~facerig.face.energy.PhotometricTerm`
    (rendered at ``size`` pixels: the photo is area-downsampled, focal and principal point scaled).
    It is evaluated on a fixed pixel set (the coverage at the start, dilated by ``pad`` pixels), so
    the residual vector keeps its length while the face moves.

    Jacobian, in closed form: landmark and diagonal prior rows from :func:`_stacked_jacobian`
    (``e_rest`` may hold any terms it handles, e.g. a caller's own priors); the photometric rows by
    the chain rule through the perspective-correct barycentrics of the pixel's triangle (visibility
    frozen at the current parameters), the per-vertex quantities of :func:`_vertex_jacobian`
    (positions, depth, and colours or normals + albedo with ``shading="pixel"``), the clamp and ``rho``.
    """

    def __init__(self, dec: FaceDecoder, obs: FaceObservation, pk: "_Packer", e_rest, w_photo: float, eps: float,
                 size: int, pad: int = 2, erode: int = 0, exclude_faces: Tensor | None = None, shading: str = "vertex"):
        from facerig.energy.terms import WeightedSum  # noqa: F401 (type only)

        self.shading = check_shading(shading)

        self.dec, self.obs, self.pk, self.e_rest = dec, obs, pk, e_rest
        self.w_photo, self.eps = float(w_photo), float(eps)
        H, W = obs.image_size
        self.size = (int(size), int(round(size * W / H)))
        h, w = self.size
        self.scale = h / H
        img = obs.image.permute(0, 3, 1, 2)
        valid = torch.ones_like(img[:, :1]) if obs.valid is None else obs.valid.permute(0, 3, 1, 2).to(img.dtype)
        if (h, w) != (H, W):
            img = torch.nn.functional.interpolate(img, size=(h, w), mode="area")
            valid = (torch.nn.functional.interpolate(valid, size=(h, w), mode="area") > 0.999).to(img.dtype)
        self.photo = img.permute(0, 2, 3, 1).reshape(img.shape[0], h * w, 3)
        self.valid = valid.reshape(img.shape[0], h * w)
        self.pp = obs.principal_point * self.scale
        self.pad = int(pad)
        self.erode = int(erode)
        # optional (F,) bool: pixels whose visible triangle is one of these are left out (e.g. the mouth opening)
        self.exclude = None if exclude_faces is None else torch.as_tensor(exclude_faces, dtype=torch.bool)
        self.sel = None

    # --------------------------------------------------------------- helpers
    def _scaled(self, y: Tensor) -> Tensor:
        sl = GraphicCode.slices(self.dec.sizes)["focal"]
        return torch.cat([y[:, :sl.start], y[:, sl] * self.scale, y[:, sl.stop:]], 1)

    def _render(self, p: Tensor):
        return self.dec(self._scaled(self.pk.unpack(p)), self.size, self.pp, shading=self.shading)

    def set_support(self, p: Tensor) -> None:
        """Fix the pixel set: coverage at ``p`` dilated by ``pad`` pixels, within the valid pixels."""
        with torch.no_grad():
            out = self._render(p)
        a = out.alpha.permute(0, 3, 1, 2)
        if self.pad > 0:
            a = torch.nn.functional.max_pool2d(a, 2 * self.pad + 1, stride=1, padding=self.pad)
        keep = (a.reshape(a.shape[0], -1) > 0) & (self.valid > 0)
        n = int(keep.sum(1).max().clamp(min=1))
        # per-sample pixel indices padded to n (padding rows get flag 0)
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :n]
        self.sel = order
        self.flag = torch.gather(keep, 1, order).to(p.dtype)
        h, w = self.size
        self.centres = torch.stack([(order % w).to(p.dtype) + 0.5, torch.div(order, w, rounding_mode="floor").to(p.dtype) + 0.5], -1)
        self.photo_sel = torch.gather(self.photo, 1, order[..., None].expand(-1, -1, 3))

    def _photo_parts(self, out):
        """(mask weights on the support (B, N), rendered colours (B, N, 3), area (B,))."""
        B = out.image.shape[0]
        m = out.skin * out.alpha
        if self.erode > 0:  # drop the pixels within ``erode`` px of the silhouette (partial coverage in the photo)
            k = 2 * self.erode + 1
            inner = -torch.nn.functional.max_pool2d(-out.alpha.permute(0, 3, 1, 2), k, stride=1, padding=self.erode)
            m = m * inner.permute(0, 2, 3, 1)
        m = m.reshape(B, -1) * self.valid
        if self.exclude is not None:
            p2f = out.fragments.pix_to_face.reshape(B, -1)
            ex = self.exclude.to(p2f.device)[p2f.clamp(min=0)] & (p2f >= 0)
            m = m * (~ex).to(m.dtype)
        area = m.sum(1).clamp(min=1.0)
        idx = self.sel
        ms = torch.gather(m, 1, idx) * self.flag
        img = torch.gather(out.image.reshape(B, -1, 3), 1, idx[..., None].expand(-1, -1, 3))
        return ms.detach(), img, area.detach()

    # --------------------------------------------------------------- LM interface
    def residual(self, p: Tensor) -> Tensor:
        y = self.pk.unpack(p)
        r_rest = stacked_residuals(self.e_rest, self.obs, y)
        out = self.dec(self._scaled(y), self.size, self.pp, shading=self.shading)
        ms, img, area = self._photo_parts(out)
        e = img.clamp(0.0, 1.0) - self.photo_sel
        r = _robust_rho(e, self.eps) * (self.w_photo * ms / area[:, None]).sqrt()[..., None]
        return torch.cat([r_rest, r.reshape(r.shape[0], -1)], 1)

    def jacobian(self, p: Tensor) -> Tensor:
        dec, pk = self.dec, self.pk
        with torch.no_grad():
            out = self._render(p)
            ms, img, area = self._photo_parts(out)
            p2f = torch.gather(out.fragments.pix_to_face.reshape(p.shape[0], -1), 1, self.sel)
            factor = _robust_rho_grad(img.clamp(0.0, 1.0) - self.photo_sel, self.eps)
            factor = factor * ((img >= 0) & (img <= 1)).to(p.dtype)
            factor = factor * (self.w_photo * ms / area[:, None]).sqrt()[..., None] * (p2f >= 0)[..., None].to(p.dtype)
        faces = dec.faces.to(p.device)
        B = p.shape[0]
        if self.shading == "pixel":
            return self._pixel_jacobian(p, p2f, factor)

        # vertex quantities (u, v, z, r, g, b) and their Jacobians (B, V, 6), (B, V, 6, P)
        vals, Jv = _vertex_jacobian(dec, pk, p, self._scaled(pk.unpack(p)), self.size, self.pp, depth=True)
        J_rest = _stacked_jacobian(self.e_rest, self.obs, pk, p, vals[..., :2] / self.scale, Jv[:, :, :2] / self.scale)
        tri = faces[p2f.clamp(min=0)]  # (B, N, 3) vertices of the triangle seen at each pixel
        N = tri.shape[1]
        flat = tri.reshape(B, N * 3)
        g = torch.gather(vals, 1, flat[..., None].expand(-1, -1, 6)).reshape(B, N, 3, 6)
        P_, z_, C_ = g[..., :2], g[..., 2], g[..., 3:]  # corners: positions (B,N,3,2), depths (B,N,3), colours (B,N,3,3)
        q = self.centres[:, :, None]  # (B, N, 1, 2)
        # perspective-correct barycentrics: lam_k = w_k / W with w_k = A_k / z_k, W = sum_k w_k and
        # A_k = cross(x_{k+1} - q, x_{k+2} - q) (twice the screen area opposite corner k). With
        # I = sum_k lam_k C_k: dI = sum_k (C_k - I) dw_k / W + lam_k dC_k and
        # dw_k = dA_k / z_k - A_k dz_k / z_k^2; A_{k+1} and A_{k+2} depend on corner k:
        # dA_{k+1}/dx_k = (-(x_{k+2}-q)_y, (x_{k+2}-q)_x), dA_{k+2}/dx_k = ((x_{k+1}-q)_y, -(x_{k+1}-q)_x)
        rel = P_ - q
        nxt, prv = rel.roll(-1, 2), rel.roll(1, 2)  # corner k+1, k+2 (= k-1)
        A = nxt[..., 0] * prv[..., 1] - nxt[..., 1] * prv[..., 0]  # (B, N, 3)
        w = A / z_
        W = w.sum(-1, keepdim=True)
        W = torch.where(W.abs() > 1e-20, W, torch.full_like(W, 1e-20))
        lam = w / W
        I = (lam[..., None] * C_).sum(2)  # (B, N, 3)
        G = (C_ - I[:, :, None]) / (z_ * W)[..., None]  # (C_k - I) / (z_k W)  (B, N, 3 corners, 3 ch)
        dA1 = torch.stack([-prv[..., 1], prv[..., 0]], -1)  # dA_{k+1}/dx_k  (B, N, 3, 2)
        dA2 = torch.stack([nxt[..., 1], -nxt[..., 0]], -1)  # dA_{k+2}/dx_k
        dI_dx = G.roll(-1, 2)[..., None] * dA1[..., None, :] + G.roll(1, 2)[..., None] * dA2[..., None, :]  # (B,N,k,c,2)
        dI_dz = -G * (A / z_)[..., None]  # (B, N, k, c)
        # The pixel rows are sparse combinations of the vertex rows: row (n, c) =
        # sum_k dI_dx[n,k,c] . Jv[v_k, uv] + dI_dz[n,k,c] Jv[v_k, z] + lam[n,k] Jv[v_k, colour c]:
        # 12 non-zeros per row -> one CSR (3N x 6V) @ (6V x P) product per sample.
        V, Pn = Jv.shape[1], Jv.shape[-1]
        cidx = torch.arange(3, device=p.device)
        col_pos = (tri[..., None, None] * 6 + torch.arange(3, device=p.device)).expand(B, N, 3, 3, 3)  # (B,N,k,c,uvz)
        col_col = (tri[..., None] * 6 + 3 + cidx).expand(B, N, 3, 3)  # (B,N,k,c)
        val_pos = torch.cat([dI_dx, dI_dz[..., None]], -1) * factor[:, :, None, :, None]
        val_col = lam[..., None] * factor[:, :, None, :]
        cols = torch.cat([col_pos.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9), col_col.permute(0, 1, 3, 2)], -1)
        vals_ = torch.cat([val_pos.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9), val_col.permute(0, 1, 3, 2)], -1)
        J_ph = _pixel_rows_product(cols, vals_, Jv.reshape(B, V * 6, Pn))
        return torch.cat([J_rest, J_ph], 1)

    def _pixel_jacobian(self, p: Tensor, p2f: Tensor, factor: Tensor) -> Tensor:
        """:meth:`jacobian` with per-pixel shading (``shading="pixel"``), in closed form.

        At a pixel with perspective-correct barycentrics ``lam_k`` of its triangle's corners k, the
        interpolated albedo ``a = sum_k lam_k a_k`` and normal ``m = sum_k lam_k n_k`` (vertex unit
        normals) give ``I_c = a_c * sum_j Y_j(m / |m|) sh_jc``. So
        ``dI_c = irr_c da_c + sum_i D_ci dm_i + a_c Y_j d sh_jc`` with ``D = a_c (d irr_c / d n^)
        (I - n^ n^T) / |m|``; ``da`` and ``dm`` are interpolations, differentiated as the vertex
        path's colours are (corner terms ``lam_k d a_k``, ``lam_k d n_k`` plus the barycentrics'
        dependence on the corner positions and depths, with ``irr_c (a_k - a)_c + D (n_k - m)``
        in place of ``C_k - I``). The SH columns are dense per pixel and added directly.
        """
        from facerig.render.shading import sh_basis, sh_basis_grad

        dec, pk = self.dec, self.pk
        faces = dec.faces.to(p.device)
        B = p.shape[0]
        y = self._scaled(pk.unpack(p))
        vals, Jv = _vertex_jacobian(dec, pk, p, y, self.size, self.pp, depth=True, normals=True)  # (B,V,9), (B,V,9,P)
        J_rest = _stacked_jacobian(self.e_rest, self.obs, pk, p, vals[..., :2] / self.scale, Jv[:, :, :2] / self.scale)
        tri = faces[p2f.clamp(min=0)]  # (B, N, 3)
        N = tri.shape[1]
        g = torch.gather(vals, 1, tri.reshape(B, N * 3)[..., None].expand(-1, -1, 9)).reshape(B, N, 3, 9)
        P_, z_, Nk, Ak = g[..., :2], g[..., 2], g[..., 3:6], g[..., 6:9]
        rel = P_ - self.centres[:, :, None]
        nxt, prv = rel.roll(-1, 2), rel.roll(1, 2)
        A = nxt[..., 0] * prv[..., 1] - nxt[..., 1] * prv[..., 0]
        w = A / z_
        W = w.sum(-1, keepdim=True)
        W = torch.where(W.abs() > 1e-20, W, torch.full_like(W, 1e-20))
        lam = w / W  # (B, N, 3)
        alb = (lam[..., None] * Ak).sum(2)  # (B, N, 3 ch)
        M = (lam[..., None] * Nk).sum(2)  # (B, N, 3 comps)
        mlen = M.norm(dim=-1, keepdim=True).clamp(min=1e-20)
        nh = M / mlen
        sh = dec.as_code(y).sh.to(p.dtype)  # (B, 9, 3)
        Y = sh_basis(nh)  # (B, N, 9)
        irr = torch.einsum("bnk,bkc->bnc", Y, sh)
        dirr = torch.einsum("bnjk,bkc->bncj", sh_basis_grad(nh), sh)  # d irr_c / d n^_j
        proj = (torch.eye(3, dtype=p.dtype, device=p.device) - nh[..., :, None] * nh[..., None, :]) / mlen[..., None]
        D = alb[..., None] * torch.einsum("bncj,bnji->bnci", dirr, proj)  # d I_c / d m_i  (B, N, 3, 3)
        E = irr[:, :, None] * (Ak - alb[:, :, None]) + torch.einsum("bnci,bnki->bnkc", D, Nk - M[:, :, None])
        G = E / (z_ * W)[..., None]  # (B, N, k, c)
        dA1 = torch.stack([-prv[..., 1], prv[..., 0]], -1)
        dA2 = torch.stack([nxt[..., 1], -nxt[..., 0]], -1)
        dI_dx = G.roll(-1, 2)[..., None] * dA1[..., None, :] + G.roll(1, 2)[..., None] * dA2[..., None, :]  # (B,N,k,c,2)
        dI_dz = -G * (A / z_)[..., None]  # (B, N, k, c)
        # row (n, c): per corner k: (u, v, z) 3 + normal 3 + albedo of channel c 1 = 21 non-zeros
        V, Pn = Jv.shape[1], Jv.shape[-1]
        ar3 = torch.arange(3, device=p.device)
        base = (tri * 9)[..., None, None]  # (B, N, k, 1, 1)
        col_pos = (base + ar3).expand(B, N, 3, 3, 3)  # (B, N, k, c, uvz)
        col_nrm = (base + 3 + ar3).expand(B, N, 3, 3, 3)  # (B, N, k, c, i)
        col_alb = (tri[..., None] * 9 + 6 + ar3).expand(B, N, 3, 3)  # (B, N, k, c)
        f5 = factor[:, :, None, :, None]
        val_pos = torch.cat([dI_dx, dI_dz[..., None]], -1) * f5
        val_nrm = lam[..., None, None] * D[:, :, None] * f5  # lam_k D_ci
        val_alb = lam[..., None] * irr[:, :, None] * factor[:, :, None]
        cols = torch.cat([col_pos.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9), col_nrm.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9),
                          col_alb.permute(0, 1, 3, 2)], -1)
        vals_ = torch.cat([val_pos.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9), val_nrm.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9),
                           val_alb.permute(0, 1, 3, 2)], -1)
        J_ph = _pixel_rows_product(cols, vals_, Jv.reshape(B, V * 9, Pn))
        if "sh" in pk.layout:  # d I_c / d sh_kc' = alb_c Y_k [c == c'], column k * 3 + c' of the part
            sl, _k = pk.layout["sh"]
            blk = torch.zeros(B, N, 3, 9, 3, dtype=p.dtype, device=p.device)
            for c in range(3):
                blk[:, :, c, :, c] = Y * (alb[..., c] * factor[..., c])[..., None]
            J_ph = J_ph.view(B, N, 3, Pn)
            J_ph[..., sl] += blk.reshape(B, N, 3, 27) * pk.scales["sh"].to(p.dtype)
            J_ph = J_ph.reshape(B, 3 * N, Pn)
        return torch.cat([J_rest, J_ph], 1)


def _pixel_rows_product(cols: Tensor, vals: Tensor, Jflat: Tensor) -> Tensor:
    """Per-pixel Jacobian rows as sparse combinations of per-vertex rows: ``(B, R, P)``.

    ``cols`` / ``vals`` ``(B, N, 3, K)``: for each pixel n and colour channel, K (column index into
    the flattened vertex quantities, weight) pairs; ``Jflat`` ``(B, V*Q, P)`` the vertex quantities'
    Jacobian. One CSR ``(3N x V*Q) @ (V*Q x P)`` product per sample, R = 3N rows (pixel-major)."""
    B, N, _, K = cols.shape
    crow = torch.arange(0, K * 3 * N + 1, K, device=cols.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.stack([torch.sparse_csr_tensor(crow, cols[b].reshape(-1), vals[b].reshape(-1), (3 * N, Jflat.shape[1]),
                                                    check_invariants=False) @ Jflat[b] for b in range(B)])


def _landmark_setup(dec: FaceDecoder, kind: str, opts: FitOptions):
    """(vertex ids (L,), detection index (L,) into the 468 points or None for 68, contour idx, closed, weights)."""
    from facerig.landmarks import MEDIAPIPE_FACE_OVAL

    m = dec.model
    if kind == "dense":
        ids = m.landmarks_mediapipe468.indices
        contour = torch.as_tensor(MEDIAPIPE_FACE_OVAL, dtype=torch.long)
        closed = True
    else:
        ids = m.landmarks_ibug68.indices
        contour = torch.arange(17)
        closed = False
    w = torch.ones(len(ids), dtype=m.dtype, device=m.device)
    w[contour] = opts.contour_weight
    return ids.to(m.device), contour.to(m.device), closed, w


# ------------------------------------------------------------------------------------------ core
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
        from facerig.landmarks import to_ibug68
        landmarks = to_ibug68(landmarks)
    B = landmarks.shape[0]
    H, W = (int(s) for s in image_size)
    pp = torch.as_tensor(principal_point, dtype=dt, device=dev).reshape(B, 2)
    focal = torch.as_tensor(focal, dtype=dt, device=dev).reshape(B)
    ids, contour, closed, weights = _landmark_setup(dec, kind, opts)
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
        rvec, tvec = _pnp(mean_lm.cpu()[inner].numpy(), landmarks[b].cpu()[inner].numpy(), float(focal[b]),
                          pp[b].cpu().numpy())
        code.rotation[b] = torch.as_tensor(rvec, dtype=dt)
        code.translation[b] = torch.as_tensor(tvec, dtype=dt)
    y = code.to_vector()
    e_pose = face_energy(dec, landmarks=1.0, identity=0, expression=0, albedo=0, sigma=opts.sigma, delta=opts.delta)
    pk = _Packer(y, dec.sizes, _scales(dec, ("rotation", "translation")))
    for _ in range(2):
        _update_contour(dec, obs, y, ids)
        y = _lm(e_pose, obs, pk, y, max(1, opts.pose_iterations // 2), dec)
    timings["pose"] = time.perf_counter() - t0
    if keep_stages:
        stages["pose"] = y.clone()

    # ---- stage 2: identity + expression from landmarks (LM), per image
    t0 = time.perf_counter()
    e_shape = face_energy(dec, landmarks=1.0, identity=opts.w_identity, expression=opts.w_expression, albedo=0,
                          sigma=opts.sigma, delta=opts.delta)
    pk = _Packer(y, dec.sizes, _scales(dec, ("identity", "expression", "rotation", "translation"),
                                       opts.fit_identity_modes))
    for _ in range(opts.shape_rounds):
        _update_contour(dec, obs, y, ids)
        y = _lm(e_shape, obs, pk, y, opts.shape_iterations, dec)
    if shared and B > 1:
        # one identity for all frames: start from the mean, then minimise jointly (L-BFGS: the
        # joint problem couples all frames) with temporal smoothness
        e_joint = face_energy(dec, landmarks=1.0, identity=opts.w_identity / B, expression=opts.w_expression,
                              albedo=0, temporal=opts.w_temporal, sigma=opts.sigma, delta=opts.delta,
                              temporal_scales=_temporal_scales(dec))
        pk = _Packer(y, dec.sizes, _scales(dec, ("identity", "expression", "rotation", "translation"),
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
                         sigma=opts.sigma, delta=opts.delta, temporal_scales=_temporal_scales(dec),
                         photo_clamp=opts.photo_clamp)
    if image is not None and opts.photo_iterations != 0:
        y = _photometric_stage(dec, obs, y, opts, shared and B > 1, energy)
    timings["photometric"] = time.perf_counter() - t0
    if keep_stages:
        stages["photometric"] = y.clone()
    with torch.no_grad():
        energies = energy.breakdown(obs, y)
    return y, obs, energies, timings, stages


def _subdivided(dec: FaceDecoder, levels: int, scheme: str = "midpoint") -> FaceDecoder:
    """A decoder on the model subdivided ``levels`` times, cached on ``dec``; same code layout and
    landmark vertex indices (the original vertices come first and keep their positions).

    ``scheme="midpoint"``: ``dec.model.subdivide(levels)`` (same piecewise-linear surface; per-vertex
    shading sampled 4x more densely per level). ``"butterfly"``: :func:`_butterfly_model`, a smooth
    interpolating surface that is still a linear shape model (closed-form Jacobians unchanged).
    ``"detail"``: the model's own finer surface (:meth:`facerig.model.FaceModel.detailed`: the
    default model's follows the ICT-FaceKit surface it was sampled from), further levels by
    midpoint subdivision; a model without a detail level is not subdivided.
    """
    if levels <= 0 or (scheme == "detail" and not dec.model.has_detail):
        return dec
    if scheme not in SUBDIVIDE_SCHEMES:
        raise ValueError(f"scheme: expected one of {SUBDIVIDE_SCHEMES}, got {scheme!r}")
    cache = dec.__dict__.setdefault("_subdivided_cache", {})
    key = (levels, dec.model.dtype, str(dec.model.device)) + ((scheme,) if scheme != "midpoint" else ())
    if key not in cache:
        m = dec.model
        for level in range(levels):
            if scheme == "detail" and level == 0:
                m = m.detailed()
            else:
                m = _butterfly_model(m) if scheme == "butterfly" else m.subdivide(1)
        cache[key] = FaceDecoder(m, landmark_kind=dec.landmark_kind)
    return cache[key]


def _excluded_faces(dec: FaceDecoder, opts: FitOptions) -> Tensor | None:
    """(F,) bool: the render mesh's faces left out of the LM photometric term (``photo_exclude``
    face groups of the model, e.g. "mouth_opening"), or None."""
    groups = [dec.model.face_groups[g] for g in opts.photo_exclude if g in dec.model.face_groups]
    if not groups:
        return None
    out = torch.zeros(dec.model.n_faces, dtype=torch.bool, device=dec.model.faces.device)
    for g in groups:
        g = g.to(out.device)
        if g.dtype == torch.bool:
            out |= g
        else:
            out[g] = True
    return out


def _butterfly_stencil(faces: Tensor, n_vertices: int):
    """The butterfly scheme's correction of the midpoints of :meth:`FaceModel.subdivide`'s new
    vertices (one per edge, its order): ``(idx (E, 6) int64, w (E, 6))`` such that the new vertex of
    edge (a, b) is ``(x_a + x_b) / 2 + sum_j w[e, j] x[idx[e, j]]``; weights 1/8 for the two opposite
    vertices c, d and -1/16 for the four wing vertices (Dyn, Levin & Gregory 1990, tension 1/16).
    Edges whose stencil is incomplete (mesh boundary and next to it) keep the midpoint (w = 0)."""
    from facerig.model import FaceModel

    F = faces.cpu().numpy()
    edges, _ = FaceModel._midpoint_topology(faces.cpu(), n_vertices)
    opp: dict = {}  # directed edge (a, b) of a face -> its third vertex
    for a, b, c in F.tolist():
        opp[(a, b)], opp[(b, c)], opp[(c, a)] = c, a, b

    def third(u, v):  # the vertex opposite edge (u, v) on the face across from the face containing (u, v)
        return opp.get((v, u))

    idx = np.zeros((edges.shape[0], 6), dtype=np.int64)
    w = np.zeros((edges.shape[0], 6))
    for e, (a, b) in enumerate(edges.tolist()):
        c, d = opp.get((a, b)), opp.get((b, a))
        if c is None or d is None:
            continue
        wings = [third(b, c), third(c, a), third(a, d), third(d, b)]
        if any(x is None for x in wings):
            continue
        idx[e] = [c, d] + wings
        w[e] = [0.125, 0.125, -0.0625, -0.0625, -0.0625, -0.0625]
    return torch.from_numpy(idx), torch.from_numpy(w)


def _butterfly_model(m: FaceModel) -> FaceModel:
    """One level of butterfly subdivision of a face model: the topology, albedo, masks, UVs and
    landmark maps of ``m.subdivide(1)``; the geometry (mean and the identity / expression bases)
    of each new vertex gets the butterfly correction (:func:`_butterfly_stencil`) as its
    :meth:`FaceModel.detailed` offsets, so the surface is smooth, passes through the original
    vertices and stays linear in the code."""
    if m.lbs is not None:
        raise ValueError("butterfly subdivision: skinned models (lbs) are not supported; use scheme='midpoint'")
    idx, w = _butterfly_stencil(m.faces, m.n_vertices)
    idx, w = idx.to(m.device), w.to(m.device, m.dtype)

    def stencil(x):  # (K, V, 3) -> (K, E, 3): sum_j w[e, j] x[:, idx[e, j]]
        return (x[:, idx] * w[None, :, :, None]).sum(2)

    return m.detailed({"mean": stencil(m.mean[None])[0], "identity": stencil(m.identity_basis),
                       "expression": stencil(m.expression_basis)})


def photometric_refine(dec: FaceDecoder, obs: FaceObservation, y: Tensor, options: FitOptions | None = None,
                       rounds=None, init_light: bool = True) -> Tensor:
    """Photometric refinement of identity, expression, albedo, pose and SH light, image by image: the
    fitter's stage 3 (Levenberg-Marquardt with closed-form Jacobians, coarse to fine).

    Args:
        dec: the decoder; obs: a :class:`FaceObservation` with its ``image`` (B, H, W, 3) in [0, 1]
            and landmarks in the same working-image pixels.
        y: (B, D) start codes (e.g. a landmark fit or an encoder's answer), the working image's camera.
        options: :class:`FitOptions` (weights, ``photo_eps``, ``photo_erode``, ``photo_damping``,
            ``photo_subdivide``...); default ``FitOptions()``.
        rounds: ``[(render size px, iterations, landmark weight), ...]``; default
            ``options.photo_rounds()``.
        init_light: first set SH light and albedo in closed form (:func:`init_light_albedo`).
    Returns:
        (B, D) refined codes (detached).
    """
    opts = options or FitOptions()
    if init_light:
        y = init_light_albedo(dec, obs, y)
    parts = ("identity", "expression", "albedo", "rotation", "translation", "sh")
    pk = _Packer(y, dec.sizes, _scales(dec, parts, opts.fit_identity_modes))
    p = pk.pack(y)
    for size, iters, w_lm in (opts.photo_rounds() if rounds is None else rounds):
        if int(iters) <= 0:
            continue
        dec_r = _subdivided(dec, int(opts.photo_subdivide) if size >= opts.photo_subdivide_min_size else 0,
                            opts.photo_subdivide_scheme)
        e_rest = face_energy(dec_r, landmarks=float(w_lm), photometric=0, identity=opts.w_identity_lm,
                             expression=opts.w_expression_lm, albedo=opts.w_albedo, sigma=opts.sigma,
                             delta=opts.delta)
        prob = _PhotoLM(dec_r, obs, pk, e_rest, opts.w_photometric, eps=opts.photo_eps, size=int(size),
                        erode=opts.photo_erode, exclude_faces=_excluded_faces(dec_r, opts), shading=opts.photo_shading)
        prob.set_support(p)
        p = levenberg_marquardt(prob.residual, p, jacobian=prob.jacobian, max_iter=int(iters),
                                damping=opts.photo_damping, tol=1e-6).x
    return pk.unpack(p).detach()


def _photometric_stage(dec: FaceDecoder, obs: FaceObservation, y: Tensor, opts: FitOptions, joint: bool, energy) -> Tensor:
    """Stage 3: photometric refinement of identity, expression, albedo, pose and SH light from the
    code vectors ``y`` (B, D) of stage 2; ``joint``: one identity and albedo for the B frames
    (Adam on ``energy``), else Levenberg-Marquardt (:class:`_PhotoLM`) per image."""
    if opts.photo_solver == "lm" and not joint:
        return photometric_refine(dec, obs, y, opts)
    return photometric_refine_adam(dec, obs, y, opts, energy=energy, joint=joint)


def photometric_refine_adam(dec: FaceDecoder, obs: FaceObservation, y: Tensor, options: FitOptions | None = None,
                            iterations: int | None = None, *, energy=None, joint: bool = False,
                            init_light: bool = True) -> Tensor:
    """The Adam variant of the photometric stage (``FitOptions.photo_solver="adam"`` and the joint
    multi-frame fit): the core's Adam on the whitened identity, expression, albedo, pose and SH light.

    Adam takes steps of about ``options.photo_lr`` in every whitened coordinate; pose, light and
    shape get smaller ones (rotation 0.1, translation 0.05, SH 0.3, identity / expression
    ``photo_shape_lr``). Adam is not monotone, so the best iterate is kept: per image, or by the
    batch total when ``joint`` (one identity and albedo shared by the B frames).

    Args:
        dec: the decoder; obs: a :class:`FaceObservation` with its ``image`` (B, H, W, 3) in [0, 1].
        y: (B, D) start codes in the working image's camera.
        options: :class:`FitOptions` (default ``FitOptions()``); iterations: Adam iterations
            (default ``options.adam_iterations``).
        energy: the :class:`~facerig.energy.WeightedSum` to minimise, per-sample values (B,);
            default the fitter's photometric-stage energy for ``options``.
        joint: share identity and albedo over the batch; init_light: first set SH light and albedo
            in closed form (:func:`init_light_albedo`).
    Returns:
        (B, D) refined codes (detached).
    """
    opts = options or FitOptions()
    iterations = opts.adam_iterations if iterations is None else int(iterations)
    B = y.shape[0]
    if energy is None:
        energy = face_energy(dec, landmarks=opts.w_landmarks_photo, photometric=opts.w_photometric,
                             identity=opts.w_identity_photo / (B if joint else 1), expression=opts.w_expression_photo,
                             albedo=opts.w_albedo / (B if joint else 1), sigma=opts.sigma, delta=opts.delta,
                             photo_clamp=opts.photo_clamp)
    if init_light:
        y = init_light_albedo(dec, obs, y, shared_albedo=joint)
    if iterations <= 0:
        return y.detach()
    dt, dev = y.dtype, y.device
    parts = ("identity", "expression", "albedo", "rotation", "translation", "sh")
    pk = _Packer(y, dec.sizes, _scales(dec, parts, opts.fit_identity_modes),
                 shared=("identity", "albedo"), joint=joint)
    lr_scale = torch.ones(pk.P, dtype=dt, device=dev)
    for part, (sl, _k) in pk.layout.items():
        lr_scale[sl] = {"rotation": 0.1, "translation": 0.05, "sh": 0.3, "identity": opts.photo_shape_lr,
                        "expression": opts.photo_shape_lr}.get(part, 1.0)
    p0 = pk.pack(y)

    def f(q):  # per image (B,), or the batch total when the frames share one packed vector
        e = energy(obs, pk.unpack(p0 + (q - p0) * lr_scale))
        return e.sum() if joint else e

    best = {"e": f(p0).detach().reshape(-1), "q": p0.clone()}

    def keep_best(k, q, e):  # Adam is not monotone; a diverging run falls back to the best iterate
        e = e.detach().reshape(-1)
        better = e < best["e"]
        best["q"] = torch.where(better[:, None], q.detach(), best["q"])
        best["e"] = torch.where(better, e, best["e"])

    minimize_adam(f, p0, lr=opts.photo_lr, max_iter=iterations, tol=0.0, callback=keep_best)
    return pk.unpack(p0 + (best["q"] - p0) * lr_scale).detach()


def _temporal_scales(dec: FaceDecoder) -> dict:
    m = dec.model
    return {"expression": m.expression_std.to(m.device) * 0.5, "rotation": 0.05, "translation": 0.5}


# ------------------------------------------------------------------------------------------ public
def _decoder(model, device, dtype) -> FaceDecoder:
    if isinstance(model, FaceDecoder):
        return model
    dtype = dtype or torch.float32
    return FaceDecoder(model, dtype=dtype, device=device)


def _detect(rgb: np.ndarray, name: str, max_faces: int = 1):
    from facerig.landmarks import detect_landmarks

    faces = detect_landmarks(rgb, max_faces=max_faces, refine=False)
    if not faces:
        raise NoFaceError(f"no face found in {name}")
    return faces


def _prepare(rgb: np.ndarray, points: np.ndarray, opts: FitOptions, focal: float | None, dec: FaceDecoder):
    """Working crop of one face: (crop, landmarks in crop px (N,2), principal point (2,), focal crop px, image, valid)."""
    from facerig.landmarks import square_crop

    H, W = rgb.shape[:2]
    crop = square_crop(rgb, points[:, :2], size=opts.crop_size, margin=opts.margin, border="replicate")
    lm = crop.to_crop(points[:, :2])
    pp = crop.to_crop(np.array([[W / 2.0, H / 2.0]]))[0]
    f_in = float(focal) if focal is not None else opts.focal_factor * max(H, W)
    return crop, lm, pp, f_in * crop.scale, f_in


def _make_fit(dec, y_b, obs, b, crop, rgb_shape, f_in, points, energies, timings, stages, name) -> FaceFit:
    from facerig.landmarks import to_ibug68

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
    from facerig.landmarks import as_rgb_uint8

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
        from facerig.landmarks import LandmarkTracker
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

