"""MoFA training losses, built from the face energy's terms (:mod:`facerig.face.energy`).

A batch is a dict of the dataset items (see :mod:`facerig.encoder.synthetic_data` and
:mod:`facerig.encoder.data`), each sample tagged by ``source``:

* 0 - real photo: only the **unsupervised** loss (MoFA);
* 1 - synthetic face with its true code: the unsupervised loss and the **self-supervised** code loss;
* 2 - real photo with the fitter's code as target: the unsupervised loss and the **supervised** code loss.

Unsupervised loss (per sample): the face energy ``E(x, y)`` of :func:`facerig.face.energy.face_energy`
- robust photometric term over the skin mask (:class:`~facerig.face.energy.PhotometricTerm`), robust
landmark term on the 468 Face Mesh points with the face oval as a sliding contour
(:class:`~facerig.face.energy.LandmarkTerm`), Gaussian priors on identity, expression and albedo
(:class:`~facerig.face.energy.CodePrior`) - times ``energy_scale``. Samples without landmarks (NaN)
get landmark weight 0.

Code loss (per sample with a target, :func:`code_loss`): what the benchmark measures plus what
the renderer needs - squared per-vertex shape error after similarity alignment (in mm^2,
identity + expression: the part of the shape an image shows; the face's overall size trades
off against its distance), a weak squared shape error in the model frame, squared reprojection
error of the 468 landmark vertices (in % of the crop side), squared log-depth error, whitened
albedo error and SH error.

:class:`MoFALoss` returns ``{"unsupervised", "self_supervised", "supervised"}`` batch losses (each
a mean over the samples it applies to; 0 when none does) so that :func:`facerig.energy.train`
weighs them by its per-mode weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from facerig.encoder.data import SOURCE_FITTED, SOURCE_SYNTHETIC
from facerig.face.decoder import SH_AMBIENT, FaceDecoder
from facerig.face.energy import FaceObservation, contour_normals, face_energy
from facerig.landmarks import MEDIAPIPE_FACE_OVAL
from facerig.model.geometry import similarity_aligned

__all__ = ["MoFALoss", "code_loss", "observation_from_batch", "DEFAULT_TERMS", "CODE_WEIGHTS"]

DEFAULT_TERMS = {"photometric": 20000.0, "landmarks": 0.2, "identity": 1.0, "expression": 2.0, "albedo": 1.0,
                 "sigma": 2.0, "delta": 3.0, "contour_weight": 0.5}
"""Weights of the unsupervised face energy: those of the fitter's photometric stage
(:class:`facerig.face.FitOptions`; ``sigma`` in crop pixels at the fitter's 160 px crop,
rescaled to the training crop size)."""


def observation_from_batch(decoder: FaceDecoder, batch: dict, contour_weight: float = 0.5,
                           sigma_size: int | None = None) -> FaceObservation:
    """The :class:`~facerig.face.energy.FaceObservation` of a batch dict (468 Face Mesh landmarks).

    Args:
        decoder: the face decoder (its model must have the ``mediapipe468`` landmark map).
        batch: ``image`` (B, S, S, 3), ``landmarks`` (B, 468, 2) crop px (NaN = unknown),
            ``principal_point`` (B, 2).
        contour_weight: weight of the face-oval landmarks (sliding, point-to-line).
    """
    m = decoder.model
    if m.landmarks_mediapipe468 is None:
        raise ValueError("decoder: the encoder losses need a model with the mediapipe468 landmark map")
    img = batch["image"]
    B, H, W, _ = img.shape
    dt, dev = img.dtype, img.device
    lm = batch["landmarks"].to(dev, dt)
    known = torch.isfinite(lm).all(-1)  # (B, L)
    lm = torch.where(known[..., None], lm, torch.zeros_like(lm))
    ids = m.landmarks_mediapipe468.indices.to(dev)
    contour = torch.as_tensor(MEDIAPIPE_FACE_OVAL, dtype=torch.long, device=dev)
    w = torch.ones(ids.numel(), dtype=dt, device=dev)
    w[contour] = contour_weight
    weights = w[None] * known.to(dt)
    normals = contour_normals(lm[:, contour], closed=True)
    return FaceObservation(landmarks=lm, vertex_ids=ids[None].expand(B, -1), image_size=(H, W),
                           principal_point=batch["principal_point"].to(dev, dt).reshape(B, 2), weights=weights,
                           contour=contour, normals=normals, image=img)


CODE_WEIGHTS = {"aligned": 4.0, "shape": 0.25, "reprojection": 1.0, "depth": 1.0, "albedo": 0.3, "sh": 0.3}
"""Default weights of :func:`code_loss`'s parts (before: ``shape`` 1 and no ``aligned`` term)."""


def code_loss(decoder: FaceDecoder, y_pred: Tensor, y_true: Tensor, image_size: int, principal_point: Tensor,
              weights: dict | None = None) -> Tensor:
    """(B,) per-sample distance between predicted and target code vectors (both in the crop camera).

    ``aligned``: mean squared vertex error (identity + expression) in mm^2 after the similarity
    (scale, rotation, translation) that best aligns the predicted shape onto the target - the
    error :func:`facerig.model.geometry.umeyama`-based benchmarks report
    (:func:`facerig.model.geometry.similarity_aligned`: exact gradient);
    ``shape``: mean squared model-frame vertex error (identity + expression) in mm^2 (includes
    the overall size, which a photo hardly shows: the first identity mode is mostly size);
    ``reprojection``: mean squared 2D error of the 468 landmark vertices in % of the crop side;
    ``depth``: squared log-ratio of the translations' z, x 100; ``albedo``: mean squared whitened
    albedo error; ``sh``: mean squared SH error in units of the ambient level / 5.
    """
    w = {**CODE_WEIGHTS, **(weights or {})}
    unknown = set(w) - set(CODE_WEIGHTS)
    if unknown:
        raise ValueError(f"weights: unknown names {sorted(unknown)}; expected some of {sorted(CODE_WEIGHTS)}")
    m = decoder.model
    cp, ct = decoder.as_code(y_pred), decoder.as_code(y_true.to(y_pred))
    vp = m.shape(cp.identity, cp.expression)
    vt = m.shape(ct.identity, ct.expression)
    shape = ((vp - vt) * 10.0).square().sum(-1).mean(1)
    aligned = ((similarity_aligned(vp, vt) - vt) * 10.0).square().sum(-1).mean(1) if w["aligned"] else shape * 0.0
    S = (image_size, image_size)
    pp = principal_point.to(y_pred)
    lp = decoder.landmarks2d(cp, S, pp, kind="mediapipe468")
    lt = decoder.landmarks2d(ct, S, pp, kind="mediapipe468")
    reproj = ((lp - lt) * (100.0 / image_size)).square().sum(-1).mean(1)
    depth = 100.0 * torch.log(cp.translation[:, 2].clamp(min=1.0) / ct.translation[:, 2].clamp(min=1.0)).square()
    std = m.albedo_std.to(y_pred)
    alb = ((cp.albedo - ct.albedo) / std).square().mean(1)
    sh = ((cp.sh - ct.sh) / (0.2 * SH_AMBIENT)).square().mean((1, 2))
    return w["aligned"] * aligned + w["shape"] * shape + w["reprojection"] * reproj + w["depth"] * depth + w["albedo"] * alb + w["sh"] * sh


class _NonNegativeSkin(nn.Module):
    """Delegates to a :class:`FaceDecoder`, clamping the rendered skin weight at 0: perspective-correct
    barycentrics can be a hair below 0 at triangle edges, which the photometric term's weight check
    rejects (seen once in 110k training renders)."""

    def __init__(self, decoder: FaceDecoder):
        super().__init__()
        self.inner = decoder

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        out.skin = out.skin.clamp(min=0.0)
        return out


class MoFALoss(nn.Module):
    """Per-mode losses of a batch (see the module docstring).

    Args:
        decoder: the :class:`~facerig.face.FaceDecoder` (the same one the fitter uses).
        terms: weights of the unsupervised face energy (default :data:`DEFAULT_TERMS`).
        energy_scale: factor on the face energy (brings it to the code loss's order of magnitude).
        code_weights: weights of :func:`code_loss`'s parts.
        render_size: render the photometric term at this resolution (the crop is area-averaged by
            an integer factor; landmarks, principal point and focal are scaled to match) - a speed
            knob for CPU training; None renders at the crop size.

    ``forward(y (B, D), batch) -> {"unsupervised": scalar, "self_supervised": scalar, "supervised": scalar}``;
    :meth:`breakdown` reports the unsupervised terms' batch means.
    """

    def __init__(self, decoder: FaceDecoder, terms: dict | None = None, energy_scale: float = 1e-3,
                 code_weights: dict | None = None, render_size: int | None = None):
        super().__init__()
        t = {**DEFAULT_TERMS, **(terms or {})}
        unknown = set(t) - set(DEFAULT_TERMS)
        if unknown:
            raise ValueError(f"terms: unknown names {sorted(unknown)}; expected some of {sorted(DEFAULT_TERMS)}")
        self.decoder, self.terms, self.energy_scale = decoder, t, float(energy_scale)
        self.code_weights = code_weights
        self.render_size = render_size
        self._energies: dict = {}

    def energy(self, image_size: int):
        """The :class:`~facerig.energy.terms.WeightedSum` face energy for crops of side ``image_size``
        (``sigma`` scaled from the fitter's 160 px crop)."""
        if image_size not in self._energies:
            t = self.terms
            self._energies[image_size] = face_energy(
                self.decoder, landmarks=t["landmarks"], photometric=t["photometric"], identity=t["identity"],
                expression=t["expression"], albedo=t["albedo"], sigma=t["sigma"] * image_size / 160.0,
                delta=t["delta"])
            photo = self._energies[image_size].terms.get("photometric")
            if photo is not None:
                photo.decoder = _NonNegativeSkin(self.decoder)
        return self._energies[image_size]

    def _reduced(self, y: Tensor, batch: dict):
        """The batch and codes at :attr:`render_size` (unchanged when None or not smaller)."""
        S = batch["image"].shape[1]
        k = S // self.render_size if self.render_size else 1
        if k <= 1:
            return y, batch
        img = torch.nn.functional.avg_pool2d(batch["image"].permute(0, 3, 1, 2), k).permute(0, 2, 3, 1)
        sl = self.decoder.sizes
        f0 = sl["identity"] + sl["expression"] + sl["albedo"] + 6
        y = torch.cat([y[:, :f0], y[:, f0:f0 + 1] / k, y[:, f0 + 1:]], 1)
        return y, {**batch, "image": img, "landmarks": batch["landmarks"] / k,
                   "principal_point": batch["principal_point"] / k}

    def unsupervised(self, y: Tensor, batch: dict) -> Tensor:
        """(B,) scaled face energy of every sample."""
        y, batch = self._reduced(y, batch)
        obs = observation_from_batch(self.decoder, batch, self.terms["contour_weight"])
        return self.energy(obs.image_size[0])(obs, y) * self.energy_scale

    def breakdown(self, y: Tensor, batch: dict) -> dict:
        """Batch means of the scaled unsupervised terms (``{"landmarks": ..., "photometric": ..., ...}``)."""
        y, batch = self._reduced(y, batch)
        obs = observation_from_batch(self.decoder, batch, self.terms["contour_weight"])
        parts = self.energy(obs.image_size[0]).breakdown(obs, y)
        return {k: float(v.detach().mean()) * self.energy_scale for k, v in parts.items()}

    def forward(self, y: Tensor, batch: dict, modes=("unsupervised", "self_supervised", "supervised")) -> dict:
        out = {}
        zero = y.sum() * 0.0
        if "unsupervised" in modes:
            out["unsupervised"] = self.unsupervised(y, batch).mean()
        src = batch["source"].to(y.device).reshape(-1)
        target = batch["code"].to(y)
        has = torch.isfinite(target).all(1)
        for mode, s in (("self_supervised", SOURCE_SYNTHETIC), ("supervised", SOURCE_FITTED)):
            if mode not in modes:
                continue
            sel = (src == s) & has
            if not bool(sel.any()):
                out[mode] = zero
                continue
            S = batch["image"].shape[1]
            out[mode] = code_loss(self.decoder, y[sel], target[sel], S, batch["principal_point"][sel],
                                  self.code_weights).mean()
        return out
