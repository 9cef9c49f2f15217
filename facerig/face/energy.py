"""The face energy ``E(x, y) = landmarks + photometric + priors (+ temporal)`` on the core terms.

``x`` is a :class:`FaceObservation` (detected landmarks, the photo, the camera's principal point),
``y`` the graphic code as a (B, D) vector in :meth:`facerig.model.GraphicCode.to_vector` layout.
Every term is a :class:`facerig.energy.terms.Term` (``term(x, y) -> (B,)``) built on the core's
functional losses (:func:`~facerig.energy.terms.huber`, :func:`~facerig.energy.terms.charbonnier`,
:func:`~facerig.energy.terms.tikhonov`, :func:`~facerig.energy.terms.squared_l2`); the energy is
a :class:`facerig.energy.terms.WeightedSum`, so each term's value is reported
(``energy.breakdown(x, y)``) and any core solver minimises it.

Terms that are sums of squares also give residuals (``term.residuals(x, y) -> (B, M)`` with
``(r ** 2).sum(1) == term(x, y)``), so :func:`stacked_residuals` turns the landmark + prior part of
the energy into the residual function of :func:`facerig.energy.solvers.levenberg_marquardt`.

Landmark term and the jaw contour
---------------------------------
Inner landmarks (brows, eyes, nose, mouth) are fixed surface points: their residual is the 2D
vector between the projected model vertex and the detection (robust Huber per coordinate). Jaw /
face-oval landmarks are not fixed points of the face: a detector puts them on the *occluding
contour*, which slides over the surface as the head turns. For them (``contour`` indices) the
model point is re-chosen between solver rounds by :func:`contour_correspondence` (the projected
silhouette vertex nearest to the detection, or the landmark's own vertex when it is closer), and
the residual is split along the detected contour's local frame: full weight on the distance
*across* the contour (point-to-line), ``tangent_weight`` (default 0.1) along it, so the point
slides along the contour almost freely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.weak import WeakTensorKeyDictionary

from facerig.energy.terms import Term, WeightedSum, charbonnier, huber, squared_l2, tikhonov
from facerig.face.decoder import FaceDecoder
from facerig.model import GraphicCode

__all__ = [
    "FaceObservation",
    "LandmarkTerm",
    "PhotometricTerm",
    "CodePrior",
    "TemporalTerm",
    "face_energy",
    "stacked_residuals",
    "contour_normals",
    "contour_correspondence",
    "robust_residual",
]


@dataclass
class FaceObservation:
    """What the face energy compares the model with (batch B; working image H x W).

    Attributes:
        landmarks: (B, L, 2) detected landmarks, pixels of the working image.
        vertex_ids: (B, L) int64 model vertex of each landmark (updated for contour points by
            :func:`contour_correspondence`).
        image_size: (H, W) of the working image.
        principal_point: (B, 2) ``(cx, cy)`` pixels of the working image.
        weights: (L,) or (B, L) per-landmark weights >= 0.
        contour: (C,) int64 indices into L of the contour (sliding) landmarks; may be empty.
        normals: (B, C, 2) unit normals of the detected contour at those landmarks.
        image: optional (B, H, W, 3) photo in [0, 1] (photometric term).
        valid: optional (B, H, W, 1) bool, pixels that hold real photo content (crop borders False).
        face_ids: optional (B,) int64: which shared-parameter face each sample belongs to
            (multi-frame fits; informational).
    """

    landmarks: Tensor
    vertex_ids: Tensor
    image_size: tuple
    principal_point: Tensor
    weights: Tensor
    contour: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    normals: Tensor | None = None
    image: Tensor | None = None
    valid: Tensor | None = None
    face_ids: Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.landmarks, Tensor) or self.landmarks.ndim != 3 or self.landmarks.shape[-1] != 2:
            raise ValueError(f"landmarks: expected a (B, L, 2) tensor, got {getattr(self.landmarks, 'shape', None)}")
        B, L, _ = self.landmarks.shape
        if self.vertex_ids.shape != (B, L):
            raise ValueError(f"vertex_ids: expected shape ({B}, {L}), got {tuple(self.vertex_ids.shape)}")
        if self.principal_point.shape != (B, 2):
            raise ValueError(f"principal_point: expected shape ({B}, 2), got {tuple(self.principal_point.shape)}")
        if self.weights.shape not in ((L,), (B, L)):
            raise ValueError(f"weights: expected shape ({L},) or ({B}, {L}), got {tuple(self.weights.shape)}")
        C = self.contour.numel()
        if C and (self.normals is None or self.normals.shape != (B, C, 2)):
            raise ValueError(f"normals: expected shape ({B}, {C}, 2) for {C} contour landmarks")
        if self.image is not None and tuple(self.image.shape) != (B, *self.image_size, 3):
            raise ValueError(f"image: expected shape ({B}, {self.image_size[0]}, {self.image_size[1]}, 3), "
                             f"got {tuple(self.image.shape)}")

    @property
    def batch_size(self) -> int:
        return int(self.landmarks.shape[0])


def robust_residual(e: Tensor, delta: float | None) -> Tensor:
    """Signed residual whose square is the Huber loss: ``sign(e) sqrt(huber(e, delta))``.

    ``delta=None`` gives ``e / sqrt(2)`` (plain squared error / 2). Smooth at 0 (``e / sqrt(2)``
    for ``|e| <= delta``), so Gauss-Newton / LM can minimise a Huber energy.
    """
    if delta is None:
        return e / math.sqrt(2.0)
    a = e.abs()
    lin = torch.sign(e) * (delta * (a - 0.5 * delta)).clamp(min=0).sqrt()
    return torch.where(a <= delta, e / math.sqrt(2.0), lin)


def contour_normals(points: Tensor, closed: bool) -> Tensor:
    """Unit normals (B, C, 2) of a 2D polyline (B, C, 2) (central differences; one-sided at open ends)."""
    if closed:
        t = points.roll(-1, 1) - points.roll(1, 1)
    else:
        nxt = torch.cat([points[:, 1:], points[:, -1:]], 1)
        prv = torch.cat([points[:, :1], points[:, :-1]], 1)
        t = nxt - prv
    n = torch.stack([-t[..., 1], t[..., 0]], -1)
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-9)


_EDGE_TOPOLOGY = WeakTensorKeyDictionary()


def _edge_topology(faces: Tensor, device) -> tuple:
    """Unique undirected edges of ``faces`` (F, 3): ``(edges (E, 2), edge of each slot (3F,), faces per
    edge (E,))``; slot ``k * F + f`` is edge k (01, 12, 20) of face f. Cached per faces tensor and
    device (the topology is fixed while a fit or a video runs)."""
    per_device = _EDGE_TOPOLOGY.get(faces)
    if per_device is None:
        per_device = _EDGE_TOPOLOGY[faces] = {}
    key = str(device)
    if key not in per_device:
        f = faces.to(device)
        e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)  # (3F, 2)
        e_sorted, _ = e.sort(1)
        per_device[key] = torch.unique(e_sorted, dim=0, return_inverse=True, return_counts=True)
    return per_device[key]


@torch.no_grad()
def contour_correspondence(verts_pix: Tensor, verts_cam: Tensor, faces: Tensor, targets: Tensor,
                           own_ids: Tensor, max_dist: float | None = None) -> Tensor:
    """Model vertex for each contour landmark: the projected silhouette vertex nearest its detection.

    Silhouette vertices are those of edges between a front-facing and a back-facing triangle and
    of mesh-boundary edges of front-facing triangles (the occluding contour of an open face mesh).
    A landmark keeps its own vertex (``own_ids``) when that one projects closer to the detection.

    Args:
        verts_pix: (B, V, 3) pixel-space vertices; verts_cam: (B, V, 3) camera frame (facing test).
        faces: (F, 3) int64.
        targets: (B, C, 2) detected contour landmarks, pixels.
        own_ids: (C,) or (B, C) the landmarks' default vertices.
        max_dist: ignore silhouette vertices farther than this (pixels) from the detection.

    Returns:
        (B, C) int64 vertex ids.
    """
    B, V, _ = verts_pix.shape
    uniq, inv, counts = _edge_topology(faces, verts_pix.device)
    faces = faces.to(verts_pix.device)
    own = own_ids.expand(B, -1) if own_ids.ndim == 1 else own_ids
    tri = verts_cam[:, faces]  # (B, F, 3, 3)
    n = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    front = (n * tri.mean(2)).sum(-1) < 0  # (B, F): outward normal towards the camera (at the origin)
    out = own.clone()
    for b in range(B):
        fr = front[b].repeat(3).to(torch.int64)  # per (face, edge) slot
        n_front = torch.zeros(len(uniq), dtype=torch.int64, device=faces.device).index_add_(0, inv, fr)
        # silhouette: an edge between a front- and a back-facing triangle, or a front-facing boundary edge
        sil_edge = (n_front == 1) & (counts <= 2)
        sil = torch.unique(uniq[sil_edge].reshape(-1))
        if sil.numel() == 0:
            continue
        cand = verts_pix[b, sil, :2]  # (S, 2)
        d = (targets[b][:, None] - cand[None]).norm(dim=-1)  # (C, S)
        best, arg = d.min(1)
        own_d = (targets[b] - verts_pix[b, own[b], :2]).norm(dim=-1)
        use = best < own_d
        if max_dist is not None:
            use &= best <= max_dist
        out[b] = torch.where(use, sil[arg], own[b])
    return out


def _landmark_error(dec: FaceDecoder, x: FaceObservation, y: Tensor, tangent_weight: float) -> Tensor:
    """(B, L, 2) landmark residual vectors (contour rows in the (normal, sqrt(tw) tangent) frame)."""
    code = dec.as_code(y)
    verts = dec.model.shape(code.identity, code.expression)  # (B, V, 3)
    idx = x.vertex_ids.to(verts.device)
    pts = torch.gather(verts, 1, idx[..., None].expand(-1, -1, 3))
    cam = code.transform(pts)
    pred = dec.project(cam, code.focal, x.image_size, x.principal_point)[..., :2]
    e = pred - x.landmarks.to(pred.dtype)
    if x.contour.numel():
        c = x.contour.to(e.device)
        n = x.normals.to(e.dtype)
        t = torch.stack([n[..., 1], -n[..., 0]], -1)
        ec = e[:, c]
        en = (ec * n).sum(-1)
        et = (ec * t).sum(-1) * math.sqrt(tangent_weight)
        e = e.index_copy(1, c, torch.stack([en, et], -1))
    return e


class LandmarkTerm(Term):
    """Robust 2D landmark reprojection energy, ``sum_l w_l sum_xy huber(e_l / sigma)``.

    Args:
        decoder: the :class:`FaceDecoder`.
        sigma: landmark noise scale in pixels of the working image (residuals are divided by it).
        delta: Huber threshold on the normalised residual (None: squared error / 2).
        tangent_weight: weight of the along-contour component for contour landmarks.
    """

    def __init__(self, decoder: FaceDecoder, sigma: float = 1.0, delta: float | None = 3.0,
                 tangent_weight: float = 0.1):
        super().__init__()
        self.decoder, self.sigma, self.delta, self.tangent_weight = decoder, float(sigma), delta, float(tangent_weight)

    def _weights(self, x: FaceObservation, e: Tensor) -> Tensor:
        w = x.weights.to(e.dtype)
        return (w if w.ndim == 2 else w[None].expand(e.shape[0], -1))[..., None]

    def forward(self, x: FaceObservation, y: Tensor) -> Tensor:
        e = _landmark_error(self.decoder, x, y, self.tangent_weight) / self.sigma
        w = self._weights(x, e).expand_as(e)
        if self.delta is None:
            return 0.5 * squared_l2(e, weight=w)
        return huber(e, delta=self.delta, weight=w)

    def residuals(self, x: FaceObservation, y: Tensor) -> Tensor:
        """(B, 2L) residuals with ``(r**2).sum(1) == self(x, y)``."""
        e = _landmark_error(self.decoder, x, y, self.tangent_weight) / self.sigma
        r = robust_residual(e, self.delta) * self._weights(x, e).sqrt()
        return r.reshape(r.shape[0], -1)

    def pixel_errors(self, x: FaceObservation, y: Tensor) -> Tensor:
        """(B, L) Euclidean landmark errors in pixels (2D distance, contour points included as-is)."""
        return _landmark_error(self.decoder, x, y, 1.0).norm(dim=-1)


class PhotometricTerm(Term):
    """Robust photometric energy over the skin mask and the rendered coverage.

    ``mean over pixels p in M of sum_c charbonnier(I_render(p, c) - I_photo(p, c))`` where
    ``M`` = rendered coverage x the model's ``skin`` weight (x ``valid`` photo pixels). The
    Charbonnier (smooth L1) loss makes occluders (hair, glasses, hands) cost linearly, not
    quadratically. The mean is over the covered skin area, so the value does not depend on
    the resolution.

    Args:
        decoder: the :class:`FaceDecoder`.
        eps: Charbonnier smoothing (colour units in [0, 1]).
        antialias_edges: antialiased rendering (silhouette gradients; slower).
        clamp: compare ``clamp(I_render, 0, 1)`` with the photo, like a camera that saturates
            (over-exposed skin then costs nothing where the photo is white too; no gradient there).
    """

    def __init__(self, decoder: FaceDecoder, eps: float = 0.02, antialias_edges: bool = False, clamp: bool = False):
        super().__init__()
        self.decoder, self.eps, self.antialias_edges, self.clamp = decoder, float(eps), antialias_edges, bool(clamp)

    def render(self, x: FaceObservation, y: Tensor):
        return self.decoder(y, x.image_size, x.principal_point, antialias_edges=self.antialias_edges)

    def forward(self, x: FaceObservation, y: Tensor) -> Tensor:
        if x.image is None:
            raise ValueError("x.image: the photometric term needs the photo (FaceObservation.image)")
        out = self.render(x, y)
        # perspective-correct barycentrics can dip just below 0 at triangle edges: keep weights >= 0
        w = (out.skin * out.alpha).clamp(min=0)
        if x.valid is not None:
            w = w * x.valid.to(w.dtype)
        w = w.detach()
        area = w.reshape(w.shape[0], -1).sum(1).clamp(min=1.0)
        img = out.image.clamp(0.0, 1.0) if self.clamp else out.image
        return charbonnier(img, x.image.to(img.dtype), eps=self.eps, weight=w.expand_as(img)) / area


class CodePrior(Term):
    """Gaussian prior ``sum(((y[part] - mean) / scale)^2)`` on one part of the code vector (Tikhonov).

    Args:
        sizes: part sizes (:meth:`GraphicCode.sizes_for`).
        part: "identity", "expression", "albedo", "rotation", "translation", "focal" or "sh".
        scale: (K,) or float standard deviations (> 0).
        mean: optional (K,) / float / (B, K) prior mean.
    """

    def __init__(self, sizes: dict, part: str, scale, mean=None):
        super().__init__()
        sl = GraphicCode.slices(sizes)
        if part not in sl:
            raise ValueError(f"part: expected one of {list(sl)}, got {part!r}")
        self.slice, self.part, self.scale, self.mean = sl[part], part, scale, mean

    def _z(self, y: Tensor) -> Tensor:
        v = y[:, self.slice]
        if self.mean is not None:
            v = v - (self.mean.to(v) if isinstance(self.mean, Tensor) else self.mean)
        s = self.scale.to(v) if isinstance(self.scale, Tensor) else self.scale
        return v / s

    def forward(self, x, y: Tensor) -> Tensor:
        m = self.mean.to(y) if isinstance(self.mean, Tensor) else self.mean
        s = self.scale.to(y) if isinstance(self.scale, Tensor) else self.scale
        return tikhonov(y[:, self.slice], s, m)

    def residuals(self, x, y: Tensor) -> Tensor:
        """(B, K) residuals ``(y[part] - mean) / scale``."""
        return self._z(y)


class TemporalTerm(Term):
    """Temporal smoothness over consecutive frames (the batch is a sequence):
    ``E_t = sum(((y_t - y_{t-1})[parts] / scale)^2)`` for t >= 1 (0 for the first frame).

    Args:
        sizes: part sizes; parts: the code parts to smooth (e.g. expression, rotation, translation).
        scales: dict part -> float or (K,) tensor, the expected frame-to-frame change.
    """

    def __init__(self, sizes: dict, parts=("expression", "rotation", "translation"), scales: dict | None = None):
        super().__init__()
        sl = GraphicCode.slices(sizes)
        self.slices = [sl[p] for p in parts]
        scales = scales or {}
        self.scales = [scales.get(p, 1.0) for p in parts]

    def _diff(self, y: Tensor) -> Tensor:
        parts = []
        for sl, s in zip(self.slices, self.scales):
            d = y[1:, sl] - y[:-1, sl]
            parts.append(d / (s.to(d) if isinstance(s, Tensor) else s))
        d = torch.cat(parts, 1)
        return torch.cat([torch.zeros_like(d[:1]), d], 0)

    def forward(self, x, y: Tensor) -> Tensor:
        return squared_l2(self._diff(y))

    def residuals(self, x, y: Tensor) -> Tensor:
        """(B, K) residuals (first row zero)."""
        return self._diff(y)


def face_energy(decoder: FaceDecoder, *, landmarks: float = 1.0, photometric: float = 0.0,
                identity: float = 1.0, expression: float = 1.0, albedo: float = 1.0, temporal: float = 0.0,
                sigma: float = 1.0, delta: float | None = 3.0, tangent_weight: float = 0.1, photo_eps: float = 0.02,
                temporal_scales: dict | None = None, antialias_edges: bool = False,
                photo_clamp: bool = False) -> WeightedSum:
    """The face energy as a :class:`facerig.energy.terms.WeightedSum` of the terms above.

    Terms with weight 0 are left out. Priors use the model's standard deviations
    (``identity_std``, ``expression_std``, ``albedo_std``). ``photo_clamp``: the photometric
    term compares the render clamped to [0, 1] (see :class:`PhotometricTerm`).

    Returns:
        ``WeightedSum`` with terms named ``landmarks``, ``photometric``, ``identity``,
        ``expression``, ``albedo``, ``temporal``; ``energy(x, y) -> (B,)``,
        ``energy.breakdown(x, y)`` -> per-term values.
    """
    m = decoder.model
    sizes = decoder.sizes
    terms = {}
    if landmarks > 0:
        terms["landmarks"] = (landmarks, LandmarkTerm(decoder, sigma, delta, tangent_weight))
    if photometric > 0:
        terms["photometric"] = (photometric, PhotometricTerm(decoder, photo_eps, antialias_edges, photo_clamp))
    if identity > 0 and m.n_identity:
        terms["identity"] = (identity, CodePrior(sizes, "identity", m.identity_std))
    if expression > 0 and m.n_expression:
        terms["expression"] = (expression, CodePrior(sizes, "expression", m.expression_std))
    if albedo > 0 and m.n_albedo:
        terms["albedo"] = (albedo, CodePrior(sizes, "albedo", m.albedo_std))
    if temporal > 0:
        terms["temporal"] = (temporal, TemporalTerm(sizes, scales=temporal_scales))
    return WeightedSum(**terms)


def stacked_residuals(energy: WeightedSum, x, y: Tensor, skip=()) -> Tensor:
    """(B, M) residuals of a :class:`WeightedSum` whose terms all have ``residuals``:
    ``sqrt(w_k) * r_k`` concatenated, so ``(r ** 2).sum(1) == energy(x, y)``.

    ``skip``: term names to leave out (e.g. ``("photometric",)``).
    """
    out = []
    for name, term in energy.terms.items():
        if name in skip:
            continue
        if not hasattr(term, "residuals"):
            raise ValueError(f"energy: term {name!r} has no residual form; pass skip=({name!r},)")
        out.append(math.sqrt(energy.weights[name]) * term.residuals(x, y))
    return torch.cat(out, 1)
