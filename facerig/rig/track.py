"""Per-frame tracking of expression, pose and light with a fixed (personalised) identity.

Each frame minimises, with the core's Levenberg-Marquardt (:func:`facerig.energy.levenberg_marquardt`)
on the face energy's terms (:mod:`facerig.face.energy`)::

    E(w, R, t) = landmarks(468 Face Mesh points, robust, sliding contour)
               + w_expression * ||w / std||^2                     (expression prior, per-shape
                                                                    factors: LANDMARK_SHAPE_PRIOR)
               + w_sparse * sum_k w_k^2 / (w_k + eps)             (sparsity)
               + w_temporal * (||(w - w_prev) / s_w||^2 + ||(R - R_prev) / s_R||^2 + ||(t - t_prev) / s_t||^2)

warm-started from the previous frame, with the blendshape weights ``w`` kept in [0, 1] (the
solver's projection). The temporal terms are :class:`facerig.face.CodePrior` terms centred on
the previous frame's code. The landmark rows of the Jacobian are the fitter's closed form
(:func:`facerig.face.fit.vertex_jacobian` / ``stacked_jacobian``), the prior rows diagonal,
so float32 works. Light (9 SH coefficients per channel) then comes in closed form from
the colours of the visible skin vertices and the personalised albedo (ridge towards the previous
frame's light). Then (``photo_size > 0``, :meth:`FrameTracker.refine_photometric`) one
Levenberg-Marquardt step of the fitter's photometric energy (:class:`facerig.face.fit.PhotometricLM`,
closed-form Jacobian) on a small square crop around the face, with the same priors: the pixels
see the chin and lips of an opening jaw that the detector's landmarks follow poorly.

Also here: :func:`select_keyframes` (diverse poses and expressions from the tracked landmarks) and
:func:`jitter` (the temporal-stability metric).
"""

from __future__ import annotations

import functools
from fnmatch import fnmatchcase

import numpy as np
import torch
from torch import Tensor

from facerig.energy.solvers import levenberg_marquardt
from facerig.energy.terms import Term, WeightedSum
from facerig.face import (CodePrior, FaceDecoder, FaceObservation, LandmarkTerm, contour_correspondence,
                          contour_normals, stacked_residuals)
from facerig.face.fit import ParameterPacker, PhotometricLM, parameter_scales, stacked_jacobian, vertex_jacobian
from facerig.landmarks import MEDIAPIPE_FACE_OVAL, square_crop
from facerig.model import GraphicCode
from facerig.render import sh_basis, vertex_normals

__all__ = ["FrameTracker", "select_keyframes", "jitter", "similarity_normalise", "smooth_tracks",
           "LANDMARK_SHAPE_PRIOR", "EYE_OPENING_COLOR", "MOUTH_OPENING_COLOR"]

EYE_OPENING_COLOR = (0.3, 0.3, 0.3)
"""Albedo the photometric step gives the vertices around the eye openings when asked (RigOptions.photo_eyes)."""
MOUTH_OPENING_COLOR = (0.25, 0.08, 0.07)
"""Albedo of the vertices around the mouth opening in the photometric step (an open mouth is dark)."""

LANDMARK_SHAPE_PRIOR = {
    # barely visible in 2-D landmarks (gaze, lip rolls / shrugs / presses, puffs, jaw thrust): x10
    "eyeLook*": 10.0, "mouthRoll*": 10.0, "mouthShrug*": 10.0, "mouthPress*": 10.0, "cheekPuff*": 10.0,
    "jawForward": 10.0, "mouthClose": 10.0,
    # visible but confusable with jawOpen / mouthSmile / eyeBlink: x5, x3
    "mouthLowerDown*": 5.0, "mouthUpperUp*": 5.0, "mouthDimple*": 5.0, "mouthStretch*": 5.0, "jawLeft": 5.0,
    "jawRight": 5.0, "mouthLeft": 5.0, "mouthRight": 5.0, "eyeSquint*": 5.0, "eyeWide*": 5.0,
    "mouthFunnel": 3.0, "mouthPucker": 3.0,
}
"""Default per-shape factors of the per-frame expression prior (:class:`FrameTracker` ``shape_prior``,
ARKit names): shapes the tracked 2-D landmarks observe poorly get a stronger prior, so they do not
absorb the detector's biases and steal the motion of jawOpen, mouthSmile and eyeBlink. On the
synthetic benchmark (tools/bench_rig.py) it lowered the per-frame expression error from 2.50 to
2.30 mm."""


def similarity_normalise(points: np.ndarray) -> np.ndarray:
    """(N, L, 2) landmark sets -> the same with translation, scale and in-plane rotation removed
    (Procrustes to the first valid set, then to the mean). Used to compare face configurations."""
    P = np.asarray(points, np.float64)
    P = P - P.mean(1, keepdims=True)
    P = P / np.sqrt((P ** 2).sum((1, 2), keepdims=True)).clip(1e-9)
    ref = P[0]
    for _ in range(2):
        out = np.empty_like(P)
        for i, X in enumerate(P):
            u, _, vt = np.linalg.svd(X.T @ ref)
            R = u @ vt
            if np.linalg.det(R) < 0:
                u[:, -1] *= -1
                R = u @ vt
            out[i] = X @ R
        ref = out.mean(0)
        ref /= np.sqrt((ref ** 2).sum()).clip(1e-9)
    return out


def select_keyframes(landmarks: np.ndarray, found: np.ndarray, k: int = 8, subset=None) -> np.ndarray:
    """Pick ``k`` frames with diverse poses and expressions (farthest-point sampling).

    Args:
        landmarks: (T, L, 2) tracked landmarks, pixels (rows of lost frames are ignored).
        found: (T,) bool, frames with a face.
        k: number of keyframes (fewer when fewer frames have a face).
        subset: optional landmark indices to compare (default all).

    Frames are compared by their similarity-normalised landmark configuration (out-of-plane pose
    and expression change it; position, size and roll do not). The first keyframe is the one
    nearest the mean configuration. Returns sorted frame indices (int64).
    """
    idx = np.flatnonzero(np.asarray(found, bool))
    if idx.size == 0:
        return idx
    k = int(min(k, idx.size))
    P = np.asarray(landmarks, np.float64)[idx]
    if subset is not None:
        P = P[:, subset]
    X = similarity_normalise(P).reshape(len(idx), -1)
    d_mean = np.linalg.norm(X - X.mean(0), axis=1)
    chosen = [int(np.argmin(d_mean))]
    dist = np.linalg.norm(X - X[chosen[0]], axis=1)
    while len(chosen) < k:
        j = int(np.argmax(dist))
        if dist[j] <= 0:
            break
        chosen.append(j)
        dist = np.minimum(dist, np.linalg.norm(X - X[j], axis=1))
    return np.sort(idx[chosen])


def smooth_tracks(tracks: np.ndarray, valid: np.ndarray, sigma) -> np.ndarray:
    """Zero-phase Gaussian smoothing over time (no lag), frames without a face left out.

    Args:
        tracks: (T, L, C) per-frame points (e.g. (T, 468, 2) pixels); rows of invalid frames are
            ignored (and returned unchanged).
        valid: (T,) bool.
        sigma: Gaussian std in frames, a float or (L,) per point (0 = no smoothing).

    Returns:
        (T, L, C) float64: per point, the normalised convolution over the valid frames (a
        window of +-3 sigma), so the ends and gaps are not pulled towards zero.
    """
    X = np.asarray(tracks, np.float64)
    ok = np.asarray(valid, bool)
    if X.ndim != 3 or ok.shape != (X.shape[0],):
        raise ValueError(f"tracks / valid: expected (T, L, C) and (T,), got {X.shape} and {ok.shape}")
    sig = np.broadcast_to(np.asarray(sigma, np.float64), (X.shape[1],))
    out = X.copy()
    Xz = np.where(ok[:, None, None], np.nan_to_num(X), 0.0)
    t = np.arange(X.shape[0])
    for s in np.unique(sig):
        if s <= 0:
            continue
        cols = sig == s
        r = int(np.ceil(3 * s))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        num = np.stack([np.convolve(np.pad(Xz[:, j].reshape(len(t), -1)[:, c], r), k, "valid")
                        for j in np.flatnonzero(cols) for c in range(X.shape[2])], 1)
        den = np.convolve(np.pad(ok.astype(np.float64), r), k, "valid")
        sm = (num / np.maximum(den, 1e-12)[:, None]).reshape(len(t), int(cols.sum()), X.shape[2])
        block = out[:, cols]
        block[ok] = sm[ok]
        out[:, cols] = block
    return out


def jitter(tracks: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Temporal jitter: the mean norm of the second difference (frame-to-frame acceleration).

    Args:
        tracks: (T, ...) a per-frame quantity (e.g. (T, L, 2) projected landmarks in pixels, or
            (T, K) blendshape weights); per point the last axis is the vector whose norm is taken
            (a (T, K) array counts each weight as a 1-D point).
        valid: optional (T,) bool; only triples of consecutive valid frames count.

    Returns:
        mean ``|x[t+1] - 2 x[t] + x[t-1]|`` in the units of ``tracks`` per frame^2 (NaN when T < 3).
    """
    X = np.asarray(tracks, np.float64)
    if X.ndim == 2:
        X = X[..., None]
    if X.shape[0] < 3:
        return float("nan")
    acc = X[2:] - 2 * X[1:-1] + X[:-2]
    ok = np.ones(X.shape[0], bool) if valid is None else np.asarray(valid, bool)
    ok3 = ok[2:] & ok[1:-1] & ok[:-2]
    if not ok3.any():
        return float("nan")
    return float(np.linalg.norm(acc[ok3], axis=-1).mean())


class SparseWeights(Term):
    """Smooth L1 (sparsity) prior on non-negative blendshape weights:
    ``sum_k w_k^2 / (w_k + eps)`` (about ``sum_k w_k`` for ``w_k >> eps``, quadratic near 0), so a
    few shapes explain an expression instead of many similar ones sharing it. Residual form
    ``w / sqrt(w + eps)`` for Levenberg-Marquardt."""

    part = "expression"

    def __init__(self, sizes: dict, eps: float = 0.05):
        super().__init__()
        self.slice = GraphicCode.slices(sizes)["expression"]
        self.eps = float(eps)

    def residuals(self, x, y: Tensor) -> Tensor:
        w = y[:, self.slice].clamp(min=0)
        return w / (w + self.eps).sqrt()

    def diagonal_derivative(self, y: Tensor) -> Tensor:
        """(B, K) d residual_k / d w_k (0 below 0, where the weight is clamped): the closed-form
        Jacobian hook of :func:`facerig.face.fit.stacked_jacobian`."""
        w = y[:, self.slice]
        wc = w.clamp(min=0)
        return (wc + 2 * self.eps) / (2 * (wc + self.eps) ** 1.5) * (w >= 0).to(w)

    def forward(self, x, y: Tensor) -> Tensor:
        return self.residuals(x, y).square().sum(1)


class FrameTracker:
    """Track one face through frames: expression weights, head pose and SH light per frame.

    Args:
        decoder: a :class:`FaceDecoder` of the *personalised* model (its mean is the person's
            neutral; identity and albedo bases may be empty).
        image_size: (H, W) of the video frames, pixels.
        focal: focal length, pixels (principal point at the image centre).
        sigma: landmark noise, pixels of the frame (the landmark term divides by it).
        w_expression: weight of the expression prior (whitened by the model's expression std).
        w_temporal: weight of the temporal terms (0 = independent per-frame fits).
        temporal_scales: expected frame-to-frame change: ``expression`` (weight units),
            ``rotation`` (radians), ``translation`` (cm).
        iterations: LM iterations per frame (``first_iterations`` for a cold start).
        contour_weight: weight of the face-oval landmarks (sliding contour).
        light_ridge: ridge weight pulling the SH light towards the previous frame's.
        w_sparse: weight of the :class:`SparseWeights` prior (0 = off).
        eye_weight, lip_weight: landmark weights of the eye / lip points (the model's "eyes" and
            "lips" masks; blinks and mouth shapes move few points by few pixels).
        shape_prior: optional ``{name or fnmatch pattern: factor}`` multiplying the expression
            prior of those blendshapes (e.g. ``{"eyeLook*": 10}``: shapes the 2-D landmarks barely
            observe, which otherwise absorb the detector's biases and steal motion from the
            shapes that are observed). The first matching pattern wins.
        photo_size: side (px) of the face crop of the per-frame photometric step
            (:meth:`refine_photometric`; 0 = off); photo_iterations: its LM iterations.
        w_photo, w_landmarks_photo, photo_eps: photometric weight (the fitter's scale: the
            colour term is a mean over the face's pixels), weight of the landmark term in that
            step, Charbonnier scale of the colour residual.
        photo_light: the SH light is free in that step too.
        eye_color, mouth_color: albedo of the vertices around the eye / mouth openings in that
            step (open eyes and mouths are dark, e.g. :data:`EYE_OPENING_COLOR` /
            :data:`MOUTH_OPENING_COLOR`; None = the person's albedo and the model's skin mask,
            which leaves the openings' rims out). Defaults as :class:`facerig.rig.RigOptions`:
            a dark mouth, eyes as skin (dark eyes lowered the blink correlation on the benchmark).
    """

    def __init__(self, decoder: FaceDecoder, image_size, focal: float, sigma: float = 2.0, *,
                 w_expression: float = 1.0, w_temporal: float = 1.0, temporal_scales: dict | None = None,
                 iterations: int = 4, first_iterations: int = 15, contour_weight: float = 0.5, delta: float = 3.0,
                 light_ridge: float = 1.0, w_sparse: float = 0.0, eye_weight: float = 1.0, lip_weight: float = 1.0,
                 shape_prior: dict | None = None, photo_size: int = 0, photo_iterations: int = 1,
                 w_photo: float = 20000.0, w_landmarks_photo: float = 1.0, photo_light: bool = True,
                 photo_eps: float = 0.02, eye_color=None, mouth_color=MOUTH_OPENING_COLOR):
        self.dec = decoder
        m = decoder.model
        if m.landmarks_mediapipe468 is None:
            raise ValueError("decoder: the rig tracker needs a model with the MediaPipe 468-point map")
        self.dt, self.dev = m.dtype, m.device
        self.H, self.W = (int(s) for s in image_size)
        self.focal = float(focal)
        self.sizes = decoder.sizes
        self.sl = GraphicCode.slices(self.sizes)
        self.ids = m.landmarks_mediapipe468.indices.to(self.dev)
        self.contour = torch.as_tensor(MEDIAPIPE_FACE_OVAL, dtype=torch.long, device=self.dev)
        w = torch.ones(len(self.ids), dtype=self.dt, device=self.dev)
        w[self.contour] = contour_weight
        for region, factor in (("eyes", eye_weight), ("lips", lip_weight)):
            mask = m.masks.get(region)
            if mask is not None and factor != 1.0:
                w = torch.where(mask.to(self.dev)[self.ids] > 0.5, w * factor, w)
        self.weights = w
        self.iterations, self.first_iterations = int(iterations), int(first_iterations)
        ts = {"expression": 0.25, "rotation": 0.03, "translation": 0.5, **(temporal_scales or {})}
        K = m.n_expression
        self.exp_scale = m.expression_std.to(self.dev, self.dt)
        factor = torch.ones(K, dtype=self.dt, device=self.dev)
        if shape_prior:
            for k, name in enumerate(m.expression_names):
                for pat, f in shape_prior.items():
                    if fnmatchcase(name, pat):
                        if not f > 0:
                            raise ValueError(f"shape_prior: factor of {pat!r} must be > 0, got {f!r}")
                        factor[k] = float(f)
                        break
        self.prior_exp = CodePrior(self.sizes, "expression", self.exp_scale / factor.sqrt())
        self.t_exp = CodePrior(self.sizes, "expression", float(ts["expression"]), mean=torch.zeros(1, K))
        self.t_rot = CodePrior(self.sizes, "rotation", float(ts["rotation"]), mean=torch.zeros(1, 3))
        self.t_trans = CodePrior(self.sizes, "translation", float(ts["translation"]), mean=torch.zeros(1, 3))
        self.lm_term = LandmarkTerm(decoder, sigma=sigma, delta=delta)
        cold = {"landmarks": (1.0, self.lm_term), "expression": (w_expression, self.prior_exp)}
        if w_sparse > 0:
            cold["sparse"] = (w_sparse, SparseWeights(self.sizes))
        self.energy_cold = WeightedSum(**cold)
        terms = dict(cold)
        if w_temporal > 0:
            terms.update(temporal_expression=(w_temporal, self.t_exp), temporal_rotation=(w_temporal, self.t_rot),
                         temporal_translation=(w_temporal, self.t_trans))
        self.energy_warm = WeightedSum(**terms)
        self.light_ridge = float(light_ridge)
        # free parameters: expression (whitened by its std), rotation (rad), translation (cm / 10)
        self.K = K
        self.p_scale = torch.cat([self.exp_scale, torch.ones(3, dtype=self.dt, device=self.dev),
                                  torch.full((3,), 10.0, dtype=self.dt, device=self.dev)])
        self.hi = torch.cat([1.0 / self.exp_scale, torch.full((6,), float("inf"), dtype=self.dt, device=self.dev)])
        self.lo = torch.cat([torch.zeros(K, dtype=self.dt, device=self.dev),
                             torch.full((6,), -float("inf"), dtype=self.dt, device=self.dev)])
        self.P = K + 6
        # closed-form landmark Jacobians (the fitter's): the packer's layout and scales are the
        # tracker's parameter vector (whitened expression, rotation, translation / 10)
        self.pk = ParameterPacker(torch.zeros(1, sum(self.sizes.values()), dtype=self.dt, device=self.dev), self.sizes,
                                     parameter_scales(decoder, ("expression", "rotation", "translation")))
        self._lm_energy = WeightedSum(landmarks=(1.0, self.lm_term))
        self.pp = torch.tensor([[self.W / 2.0, self.H / 2.0]], dtype=self.dt, device=self.dev)
        # photometric step
        self.photo_size, self.photo_iterations = int(photo_size), int(photo_iterations)
        self.w_photo, self.w_landmarks_photo, self.photo_eps = float(w_photo), float(w_landmarks_photo), float(photo_eps)
        self.photo_light = bool(photo_light)
        self.priors_cold = WeightedSum(**{k: v for k, v in cold.items() if k != "landmarks"})
        self.priors_warm = WeightedSum(**{k: v for k, v in terms.items() if k != "landmarks"})
        if self.photo_size > 0:
            self.photo_dec = self._photo_decoder(eye_color, mouth_color)
            parts = ("expression", "rotation", "translation") + (("sh",) if self.photo_light else ())
            self.photo_scales = parameter_scales(decoder, parts)
            n_sh = 27 if self.photo_light else 0
            inf = torch.full((n_sh,), float("inf"), dtype=self.dt, device=self.dev)
            self.photo_lo, self.photo_hi = torch.cat([self.lo, -inf]), torch.cat([self.hi, inf])

    def _photo_decoder(self, eye_color, mouth_color) -> FaceDecoder:
        """The personalised model as the photometric step renders it: the vertices around the eye
        and mouth openings get a dark albedo (an open eye or mouth is darker than skin), so the
        rendered lids and lips shade from skin to dark at their edges and the photometric
        residual sees them move; they count in the photometric mask (the skin weight)."""
        m = self.dec.model.to(dtype=self.dt, device=self.dev)
        alb = m.albedo_mean.clone()
        weight = self.dec.skin_weight.to(self.dev, self.dt).clone()
        for group, colour in (("eye_openings", eye_color), ("mouth_opening", mouth_color)):
            faces = (m.face_groups or {}).get(group)
            if faces is None or colour is None:
                continue
            v = torch.unique(m.faces[torch.as_tensor(faces, device=self.dev)])
            alb[v] = torch.as_tensor(colour, dtype=self.dt, device=self.dev)
            weight[v] = 1.0
        m.albedo_mean = alb
        dec = FaceDecoder(m)
        dec.skin_weight = weight
        return dec

    # ------------------------------------------------------------------ codes
    def initial_code(self, rotation=None, translation=None, expression=None, sh=None) -> Tensor:
        """(1, D) code vector of the personalised model at the given pose (camera frame; default
        frontal at 50 cm), expression (default neutral) and light (default ambient)."""
        code = self.dec.zero_code(1, image_size=max(self.H, self.W), dtype=self.dt, device=self.dev)
        code.focal = torch.full_like(code.focal, self.focal)
        for name, v in (("rotation", rotation), ("translation", translation), ("expression", expression), ("sh", sh)):
            if v is not None:
                setattr(code, name, torch.as_tensor(v, dtype=self.dt, device=self.dev).reshape(getattr(code, name).shape))
        return code.to_vector()

    def _unpack(self, p: Tensor, base: Tensor) -> Tensor:
        sl = self.sl
        v = p * self.p_scale
        b = base.to(p).expand(p.shape[0], -1)
        return torch.cat([b[:, :sl["expression"].start], v[:, :self.K], b[:, sl["albedo"]], v[:, self.K:],
                          b[:, sl["focal"].start:]], 1)

    def _pack(self, y: Tensor) -> Tensor:
        sl = self.sl
        return torch.cat([y[:, sl["expression"]], y[:, sl["rotation"]], y[:, sl["translation"]]], 1) / self.p_scale

    def _prior_rows(self, energy: WeightedSum, p: Tensor, skip=("landmarks",)) -> Tensor:
        """Jacobian rows (B, M, P) of the non-landmark terms of ``energy`` (priors and sparsity: diagonal
        in the whitened parameters, :func:`facerig.face.fit.stacked_jacobian`), in ``stacked_residuals`` order."""
        rest = {n: (energy.weights[n], t) for n, t in energy.terms.items() if n not in skip}
        if not rest:
            return p.new_zeros(p.shape[0], 0, p.shape[1])
        return stacked_jacobian(WeightedSum(**rest), None, self.pk, p, None, None)

    def _jacobian(self, energy: WeightedSum, obs: FaceObservation, base: Tensor, p: Tensor) -> Tensor:
        """Jacobian (B, M, P) of ``stacked_residuals(energy, obs, self._unpack(p, base))``: landmark rows
        in closed form (:func:`facerig.face.fit.vertex_jacobian` / ``stacked_jacobian``: linear shape
        model, rotation, projection), prior rows diagonal."""
        if next(iter(energy.terms)) != "landmarks":
            raise ValueError("FrameTracker: the landmark term must come first")
        y = self._unpack(p, base)
        pix, Jpix = vertex_jacobian(self.dec, self.pk, p, y, obs.image_size, obs.principal_point, colours=False)
        J_lm = stacked_jacobian(self._lm_energy, obs, self.pk, p, pix, Jpix)
        return torch.cat([J_lm, self._prior_rows(energy, p)], 1)

    # ------------------------------------------------------------------ one frame
    def observation(self, landmarks) -> FaceObservation:
        """FaceObservation of one frame's (468|478, 2|3) tracked landmarks (frame pixels)."""
        lm = torch.as_tensor(np.asarray(landmarks)[:468, :2], dtype=self.dt, device=self.dev)[None]
        return FaceObservation(landmarks=lm, vertex_ids=self.ids[None].clone(), image_size=(self.H, self.W),
                               principal_point=self.pp, weights=self.weights, contour=self.contour,
                               normals=contour_normals(lm[:, self.contour], True))

    def _update_contour(self, obs: FaceObservation, y: Tensor) -> None:
        with torch.no_grad():
            code = self.dec.as_code(y)
            verts = self.dec.vertices(code)
            pix = self.dec.project(verts, code.focal, obs.image_size, obs.principal_point)
            ids = contour_correspondence(pix, verts, self.dec.faces, obs.landmarks[:, self.contour].to(pix.dtype),
                                         self.ids[self.contour], max_dist=0.1 * self.H)
            obs.vertex_ids = obs.vertex_ids.clone()
            obs.vertex_ids[:, self.contour] = ids

    def fit_landmarks(self, landmarks, y_init: Tensor, prev: Tensor | None) -> tuple[Tensor, float]:
        """Expression and pose of one frame. ``y_init`` (1, D) start code; ``prev`` (1, D) the
        previous frame's code for the temporal terms (None: a cold start, no temporal terms and
        ``first_iterations`` iterations). Returns (code (1, D), mean landmark error in pixels)."""
        obs = self.observation(landmarks)
        y = y_init.detach().to(self.dev, self.dt)
        if prev is None:
            energy, iters, rounds = self.energy_cold, self.first_iterations, 3
        else:
            energy, iters, rounds = self.energy_warm, self.iterations, 1
            sl = self.sl
            self.t_exp.mean = prev[:, sl["expression"]].detach()
            self.t_rot.mean = prev[:, sl["rotation"]].detach()
            self.t_trans.mean = prev[:, sl["translation"]].detach()
        base = y.clone()
        lo, hi = self.lo, self.hi
        for r in range(rounds):
            self._update_contour(obs, y)
            n = max(1, iters // rounds) if r < rounds - 1 else max(1, iters - (rounds - 1) * (iters // rounds))
            jac = functools.partial(self._jacobian, energy, obs, base)
            res = levenberg_marquardt(lambda p: stacked_residuals(energy, obs, self._unpack(p, base)),
                                      self._pack(y).clamp(lo, hi), max_iter=n, damping=1e-3, tol=1e-7,
                                      jacobian=jac, project=lambda p: torch.maximum(torch.minimum(p, hi), lo))
            y = self._unpack(res.x, base).detach()
        with torch.no_grad():
            err = float(self.lm_term.pixel_errors(obs, y).mean())
        self.last_obs = obs
        return y, err

    def refine_photometric(self, rgb, landmarks, y: Tensor, warm: bool = True) -> Tensor:
        """A few Levenberg-Marquardt steps of the photometric energy on a small crop after the
        landmark solve (:meth:`fit_landmarks`, whose observation and temporal terms it reuses).

        Energy: the fitter's LM photometric residual (:class:`facerig.face.fit.PhotometricLM`: robust
        colour differences over the rendered face of :meth:`_photo_decoder` on a ``photo_size``
        px square crop around the landmarks, closed-form Jacobian) + ``w_landmarks_photo`` x the
        landmark term + the tracker's priors (expression, sparsity, temporal when ``warm``).
        Free: weights in [0, 1], pose and (``photo_light``) the SH light; identity and albedo
        stay the person's. ``rgb`` (H, W, 3) uint8 frame, ``landmarks`` its (468, 2) points,
        ``y`` (1, D) the landmark solve with its light. Returns (1, D)."""
        if self.photo_size <= 0 or self.photo_iterations <= 0:
            return y
        S = self.photo_size
        pts = np.asarray(landmarks, np.float64)[:468, :2]
        crop = square_crop(rgb, pts, size=S, margin=0.05, border="replicate")
        s = crop.scale
        obs0 = self.last_obs
        dt, dev = self.dt, self.dev
        lm = torch.as_tensor(crop.to_crop(pts), dtype=dt, device=dev)[None]
        pp = torch.as_tensor(crop.to_crop(np.array([[self.W / 2.0, self.H / 2.0]])), dtype=dt, device=dev)
        img = torch.as_tensor(crop.image, device=dev).to(dt)[None] / 255.0
        valid = torch.as_tensor(crop.valid, device=dev)[None, :, :, None]
        obs = FaceObservation(landmarks=lm, vertex_ids=obs0.vertex_ids, image_size=(S, S), principal_point=pp,
                              weights=self.weights, contour=self.contour, normals=obs0.normals, image=img, valid=valid)
        fsl = self.sl["focal"]
        yc = y.detach().clone()
        yc[:, fsl] = yc[:, fsl] * s
        pk = ParameterPacker(yc, self.sizes, self.photo_scales)
        lm_term = LandmarkTerm(self.photo_dec, sigma=self.lm_term.sigma * s, delta=self.lm_term.delta)
        priors = self.priors_warm if warm else self.priors_cold
        e_rest = WeightedSum(landmarks=(self.w_landmarks_photo, lm_term),
                             **{n: (priors.weights[n], t) for n, t in priors.terms.items()})
        prob = PhotometricLM(self.photo_dec, obs, pk, e_rest, self.w_photo, eps=self.photo_eps, size=S, erode=1)
        p = pk.pack(yc)
        lo, hi = self.photo_lo, self.photo_hi
        prob.set_support(p)
        res = levenberg_marquardt(prob.residual, p, jacobian=prob.jacobian, max_iter=self.photo_iterations,
                                  damping=1e-3, tol=1e-7, project=lambda q: torch.maximum(torch.minimum(q, hi), lo))
        out = pk.unpack(res.x).detach()
        out[:, fsl] = y[:, fsl]
        return out

    @torch.no_grad()
    def fit_light(self, rgb: np.ndarray | Tensor, y: Tensor, prev_sh: Tensor | None = None,
                  max_samples: int = 400) -> Tensor:
        """Closed-form SH light of one frame: least squares ``colour = albedo * (Y(n) . sh)`` on the
        front-facing skin vertices inside the frame, ridge ``light_ridge`` towards ``prev_sh``
        (9, 3) (or the ambient light). ``rgb`` (H, W, 3) uint8 or float [0, 1]. Returns (1, D)."""
        img = torch.as_tensor(np.asarray(rgb) if not isinstance(rgb, Tensor) else rgb)
        img = (img.to(self.dt) / 255.0) if img.dtype == torch.uint8 else img.to(self.dt)
        code = self.dec.as_code(y)
        verts = self.dec.vertices(code)
        pix = self.dec.project(verts, code.focal, (self.H, self.W), self.pp)[0]
        n = vertex_normals(verts, self.dec.faces.to(verts.device))[0]
        view = -verts[0] / verts[0].norm(dim=-1, keepdim=True)
        facing = (n * view).sum(-1)
        skin = self.dec.skin_weight.to(verts) > 0.5
        u, v = pix[:, 0], pix[:, 1]
        use = skin & (facing > 0.35) & (u > 1) & (v > 1) & (u < self.W - 2) & (v < self.H - 2)
        idx = torch.nonzero(use).reshape(-1)
        sh_prev = prev_sh if prev_sh is not None else code.sh[0]
        if idx.numel() < 30:
            out = y.clone()
            out[:, self.sl["sh"]] = sh_prev.reshape(1, -1)
            return out
        if idx.numel() > max_samples:
            idx = idx[torch.linspace(0, idx.numel() - 1, max_samples).long()]
        # bilinear colour samples (pixel centres at +0.5)
        x, yy = (u[idx] - 0.5).clamp(0, self.W - 1.001), (v[idx] - 0.5).clamp(0, self.H - 1.001)
        x0, y0 = x.floor().long(), yy.floor().long()
        fx, fy = (x - x0)[:, None], (yy - y0)[:, None]
        im = img.to(self.dev)
        col = (im[y0, x0] * (1 - fx) * (1 - fy) + im[y0, x0 + 1] * fx * (1 - fy)
               + im[y0 + 1, x0] * (1 - fx) * fy + im[y0 + 1, x0 + 1] * fx * fy)
        alb = self.dec.model.albedo_mean.to(verts)[idx]
        Y = sh_basis(n[idx][None])[0]  # (n, 9)
        sh = torch.empty(9, 3, dtype=self.dt, device=self.dev)
        lam = self.light_ridge * idx.numel() * 1e-2
        for c in range(3):
            A = alb[:, c, None] * Y
            sh[:, c] = torch.linalg.solve(A.T @ A + lam * torch.eye(9, dtype=self.dt, device=self.dev),
                                          A.T @ col[:, c] + lam * sh_prev[:, c])
        out = y.clone()
        out[:, self.sl["sh"]] = sh.reshape(1, -1)
        return out

    def landmarks2d(self, y: Tensor) -> np.ndarray:
        """(468, 2) projected Face Mesh landmarks of a code, frame pixels."""
        with torch.no_grad():
            return self.dec.landmarks2d(y, (self.H, self.W), self.pp, kind="mediapipe468")[0].cpu().numpy()


def rotation_distance(a, b) -> float:
    """Angle in radians between two axis-angle rotations (3,)."""
    from scipy.spatial.transform import Rotation

    return float((Rotation.from_rotvec(np.asarray(a, float)).inv() * Rotation.from_rotvec(np.asarray(b, float))).magnitude())


