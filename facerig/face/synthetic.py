"""Synthetic faces with known ground truth: random graphic codes rendered over real-photo backgrounds.

Used by the fitting benchmark, the encoder's self-supervised training data and the sample video of
the rig demo. Everything is seeded (a ``numpy.random.Generator``), so a seed reproduces a sample.

Rendering detail: the MediaPipe Face Mesh topology of the default model covers the eyes with skin
triangles (its ``eye_openings`` face group). A face rendered like that shows no eyes and misleads
the landmark detector, so :class:`FaceRenderer` drops that group and closes every inner boundary
loop (the eye holes) with a fan around a new centre vertex set 0.3 cm back: a sclera-white rim and a
dark iris centre. The ground-truth geometry (``SyntheticSample.vertices``) is the model's own mesh.

Opt-in (``FaceRenderer(..., styled=True, rest_vertices=...)``, ``FaceRenderer.for_model(model,
styled=True, open_mouth=True)``, ``SyntheticFaces(..., styled=True)``): each inner loop is styled by
its kind (:func:`classify_loops`). Eye loops get a sharp eyelid margin (the fan uses copies of the
loop vertices, so the skin around keeps its own albedo), a sclera band, a round iris clipped by the
lids and a dark pupil; their colours fade to the neighbouring skin as the loop's area shrinks (a
closed eye shows skin, not a white rim). Mouth loops get a dark mouth interior (deep red to black,
set back 1 cm) and no white rim. ``open_mouth`` also drops the default model's ``mouth_opening``
face group so an open jaw shows the mouth interior. The defaults keep the original look.

Frames and units follow :mod:`facerig.face.decoder`: model frame in cm, OpenCV camera frame, pixel
centres at +0.5, images (H, W, 3).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from facerig.face.decoder import SH_AMBIENT, FaceDecoder, make_camera
from facerig.model import FaceModel, GraphicCode
from facerig.model.geometry import SurfaceQuery, barycentric_coordinates, umeyama
from facerig.model.loaders import orient_outward, read_obj, triangulate_polygons
from facerig.render import axis_angle_to_matrix, matrix_to_axis_angle, render_mesh, vertex_normals
from facerig.render.shading import check_shading

__all__ = ["IctTruth", "BACKGROUND_PHOTOS", "background_photos", "random_crop", "head_rotation", "random_rotation", "random_sh",
           "open_eye_faces", "close_holes", "classify_loops", "smooth_subdivide", "FaceRenderer", "SyntheticFaces",
           "SyntheticSample"]

BACKGROUND_PHOTOS = ("coffee", "rocket", "brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry",
                     "moon", "coins", "retina")
"""scikit-image sample photos used as backgrounds (none shows a human face)."""

_PHOTO_CACHE: dict = {}


def background_photos(min_side: int = 256, names=BACKGROUND_PHOTOS) -> list:
    """scikit-image sample photos as (H, W, 3) uint8 RGB arrays whose shorter side is >= ``min_side``.

    Photos that are missing (optional data files) are skipped; grayscale ones are replicated to RGB.
    Raises RuntimeError if none is available.
    """
    import skimage.data as d

    out = []
    for name in dict.fromkeys(names):
        if name not in _PHOTO_CACHE:
            try:
                im = np.asarray(getattr(d, name)())
            except Exception:  # noqa: BLE001 - optional data files of scikit-image
                _PHOTO_CACHE[name] = None
                continue
            if im.dtype != np.uint8:
                im = (np.clip(im, 0, 1) * 255 + 0.5).astype(np.uint8) if im.max() <= 1 else im.astype(np.uint8)
            if im.ndim == 2:
                im = np.repeat(im[..., None], 3, axis=2)
            _PHOTO_CACHE[name] = np.ascontiguousarray(im[..., :3])
        im = _PHOTO_CACHE[name]
        if im is not None and min(im.shape[:2]) >= min_side:
            out.append(im)
    if not out:
        raise RuntimeError(f"no scikit-image background photo with a side >= {min_side} px is available")
    return out


def random_crop(rng: np.random.Generator, photos: list, size: int, scale_range=(1.0, 1.0)) -> np.ndarray:
    """A random (size, size, 3) uint8 crop of a random photo of ``photos``.

    ``scale_range`` (lo, hi): the crop covers ``size * s`` source pixels (s uniform in the range),
    resized to ``size``; s > 1 needs photos larger than the crop.
    """
    im = photos[rng.integers(len(photos))]
    h, w = im.shape[:2]
    s = rng.uniform(*scale_range)
    side = int(min(h, w, max(8, round(size * s))))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = im[y:y + side, x:x + side]
    if side != size:
        import cv2
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def head_rotation(yaw, pitch, roll) -> Tensor:
    """Axis-angle (..., 3) float32 of the head rotation ``R_yaw @ R_pitch @ R_roll`` (angles in degrees,
    scalars or arrays of one shape): yaw about y, pitch about x, roll about z, applied after
    ``MODEL_TO_OPENCV`` as the :class:`~facerig.model.GraphicCode` ``rotation``."""
    y, p, r = (torch.as_tensor(np.radians(np.asarray(a, np.float64))) for a in (yaw, pitch, roll))
    y, p, r = torch.broadcast_tensors(y, p, r)
    z = torch.zeros_like(y)
    R = (axis_angle_to_matrix(torch.stack([z, y, z], -1)) @ axis_angle_to_matrix(torch.stack([p, z, z], -1))
         @ axis_angle_to_matrix(torch.stack([z, z, r], -1)))
    return matrix_to_axis_angle(R).float()


def random_rotation(rng: np.random.Generator, yaw: float = 60.0, pitch: float = 30.0, roll: float = 10.0):
    """A head rotation (:func:`head_rotation`) with angles uniform in +-``yaw``/``pitch``/``roll`` degrees.

    Returns ``(axis_angle (3,) float32 tensor, yaw_deg, pitch_deg, roll_deg)``.
    """
    y, p, r = (float(rng.uniform(-a, a)) for a in (yaw, pitch, roll))
    return head_rotation(y, p, r), y, p, r


def random_sh(rng: np.random.Generator, ambient=(0.8, 1.2), band1: float = 0.2, band2: float = 0.05,
              tint: float = 0.05) -> Tensor:
    """(1, 9, 3) random SH light in the renderer's basis: ambient level uniform in ``ambient`` with a
    colour tint (relative std ``tint``), first-band terms of relative std ``band1`` and second-band of
    ``band2`` (grey). Irradiance 1 corresponds to ``sh[0, 0] = SH_AMBIENT``."""
    sh = torch.zeros(1, 9, 3)
    amb = rng.uniform(*ambient)
    sh[0, 0] = torch.tensor(SH_AMBIENT * amb * (1 + rng.normal(0, tint, 3)), dtype=torch.float32)
    sh[0, 1:4] = torch.tensor(rng.normal(0, band1, (3, 1)) * SH_AMBIENT * amb * np.ones((1, 3)), dtype=torch.float32)
    sh[0, 4:] = torch.tensor(rng.normal(0, band2, (5, 1)) * SH_AMBIENT * amb * np.ones((1, 3)), dtype=torch.float32)
    return sh


def open_eye_faces(model, open_mouth: bool = False) -> np.ndarray:
    """The model's faces (F', 3) int64 without its ``eye_openings`` face group (if it has one) and,
    with ``open_mouth``, without its ``mouth_opening`` group."""
    faces = model.faces.cpu().numpy()
    drop = np.zeros(len(faces), bool)
    for name in ("eye_openings", "mouth_opening") if open_mouth else ("eye_openings",):
        group = model.face_groups.get(name)
        if group is None:
            continue
        group = group.cpu().numpy()
        drop |= group if group.dtype == bool else np.isin(np.arange(len(faces)), group)
    return faces[~drop]


def classify_loops(loops, rest_vertices, mouth_drop: float = 3.0) -> list:
    """Kind of each boundary loop of a face mesh: ``"mouth"`` for loops whose centroid lies more
    than ``mouth_drop`` cm below the highest loop centroid, else ``"eye"``.

    Args:
        loops: vertex index lists (:func:`close_holes`).
        rest_vertices: (V, 3) the mesh at rest in a model frame with y up, cm.
    """
    X = np.asarray(rest_vertices, np.float64)
    if X.ndim != 2 or X.shape[1] != 3:
        raise ValueError(f"rest_vertices: expected (V, 3) model-frame vertices (y up, cm), got {X.shape}")
    ys = [X[np.asarray(lp)].mean(0)[1] for lp in loops]
    top = max(ys) if ys else 0.0
    return ["mouth" if y < top - mouth_drop else "eye" for y in ys]


def _loop_area(P: Tensor) -> Tensor:
    """(B, n, 3) closed polygon -> (B,) area of its (vector) area, same unit squared."""
    c = P.mean(1, keepdim=True)
    a, b = P - c, P.roll(-1, 1) - c
    return 0.5 * torch.linalg.cross(a, b, dim=-1).sum(1).norm(dim=-1)


def close_holes(faces: np.ndarray, n_verts: int):
    """Close a mesh's inner boundary loops (all but the longest, the outer rim) with triangle fans.

    Returns ``(loops, faces')``: the list of loops (vertex index lists, boundary order) and the faces
    (F', 3) with the fans appended; the fan centre of loop k is the new vertex ``n_verts + k``.
    """
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    count = defaultdict(int)
    for a, b in e:
        count[(min(a, b), max(a, b))] += 1
    nxt = {a: b for a, b in e if count[(min(a, b), max(a, b))] == 1}  # boundary edges keep the winding
    loops, seen = [], set()
    for start in list(nxt):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen and v in nxt:
            seen.add(v)
            loop.append(int(v))
            v = nxt[v]
        loops.append(loop)
    loops.sort(key=len)
    inner = loops[:-1]
    new = [faces]
    for k, loop in enumerate(inner):
        c = n_verts + k
        new.append(np.array([[loop[(i + 1) % len(loop)], loop[i], c] for i in range(len(loop))], dtype=faces.dtype))
    return inner, np.concatenate(new)


_TOPOLOGY_CACHE: dict = {}


def smooth_subdivide(verts: Tensor, faces: Tensor, colors: Tensor | None = None, levels: int = 1):
    """Curved subdivision of triangle meshes by Phong tessellation (Boubekeur & Alexa 2008), ``levels`` times.

    Each level splits every triangle into 4 (midpoint topology, as
    :meth:`facerig.model.FaceModel.subdivide`); the original vertices keep their positions (and
    indices, first), and the new vertex of edge (a, b) is its midpoint ``m`` moved toward the
    surface that the vertex normals imply: ``(1 - alpha) m + alpha (pi_a(m) + pi_b(m)) / 2`` with
    ``pi_i(m) = m - ((m - x_i) . n_i) n_i`` the projection onto vertex i's tangent plane and
    ``alpha = 3/4``. The result interpolates the coarse vertices and is visibly smoother (no
    facets, rounded silhouettes). Per-vertex ``colors`` of new vertices are the edge averages.

    Args:
        verts: (B, V, 3) vertices (any frame, any unit).
        faces: (F, 3) int64 triangles (counter-clockwise = outward, as the renderer's normals).
        colors: optional (B, V, C) per-vertex attributes.
        levels: number of subdivisions (>= 0).
    Returns:
        ``(verts (B, V', 3), colors (B, V', C) or None, faces (F * 4**levels, 3))``.
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts: expected (B, V, 3), got {tuple(verts.shape)}")
    if not isinstance(levels, (int, np.integer)) or levels < 0:
        raise ValueError(f"levels: expected an int >= 0, got {levels!r}")
    alpha = 0.75
    for _ in range(int(levels)):
        V = verts.shape[1]
        key = (faces.data_ptr(), tuple(faces.shape), str(faces.device), V)
        if key not in _TOPOLOGY_CACHE:
            if len(_TOPOLOGY_CACHE) > 32:
                _TOPOLOGY_CACHE.clear()
            _TOPOLOGY_CACHE[key] = (faces,) + FaceModel.midpoint_topology(faces, V)
        _, edges, new_faces = _TOPOLOGY_CACHE[key]
        n = vertex_normals(verts, faces)
        a, b = edges[:, 0], edges[:, 1]
        xa, xb, na, nb = verts[:, a], verts[:, b], n[:, a], n[:, b]
        m = 0.5 * (xa + xb)
        pa = m - ((m - xa) * na).sum(-1, keepdim=True) * na
        pb = m - ((m - xb) * nb).sum(-1, keepdim=True) * nb
        verts = torch.cat([verts, (1 - alpha) * m + alpha * 0.5 * (pa + pb)], 1)
        if colors is not None:
            colors = torch.cat([colors, 0.5 * (colors[:, a] + colors[:, b])], 1)
        faces = new_faces
    return verts, colors, faces


class FaceRenderer:
    """Photo-like renders of a mesh with open eyes (see the module docstring).

    Args:
        faces: (F, 3) triangles of the mesh to render (e.g. :func:`open_eye_faces`), numpy or tensor.
        n_vertices: its vertex count.
        iris_color, sclera_color: RGB in [0, 1].
        styled: opt-in per-loop styling (eyes: lid margin, sclera, round iris, pupil, fading to skin
            as the eye closes; mouth: dark interior). False (default): every inner loop is closed
            by one fan with a sclera rim and an iris centre.
        rest_vertices: (V, 3) the mesh at rest (model frame, y up, cm): needed with ``styled`` to
            tell mouth loops from eye loops (:func:`classify_loops`) and to measure how open a
            loop is (its area relative to the rest area).
        loop_kinds: optional explicit list of "eye" / "mouth" per inner loop (overrides the
            classification).
        iris_radius: iris radius, cm (styled eyes).
        mouth_color: RGB of the mouth interior near the lips (styled mouths); the centre is darker.
        smooth: levels of curved (Phong-tessellation) subdivision applied to the whole rendered mesh
            before shading (:func:`smooth_subdivide`: the original vertices stay where they are, each
            edge gets a new vertex bulged along the vertex normals, each level 4x the triangles):
            a smooth surface instead of the coarse mesh's flat facets. 0 (default): the mesh as given.
        shading: "vertex" (default; Gouraud, as :class:`~facerig.face.FaceDecoder` by default) or
            "pixel" (normals interpolated, SH light per pixel; :func:`facerig.render.render_mesh`).
    """

    def __init__(self, faces, n_vertices: int, iris_color=(0.12, 0.08, 0.06), sclera_color=(0.85, 0.82, 0.78), *,
                 styled: bool = False, rest_vertices=None, loop_kinds=None, iris_radius: float = 0.55,
                 mouth_color=(0.32, 0.10, 0.09), smooth: int = 0, shading: str = "vertex"):
        self.shading = check_shading(shading)
        if not isinstance(smooth, (int, np.integer)) or isinstance(smooth, bool) or smooth < 0:
            raise ValueError(f"smooth: expected an int >= 0 (subdivision levels), got {smooth!r}")
        self.smooth = int(smooth)
        faces = faces.cpu().numpy() if isinstance(faces, Tensor) else np.asarray(faces)
        faces = faces.astype(np.int64)
        self.loops, filled = close_holes(faces, n_vertices)
        self.faces = torch.from_numpy(filled)
        self.iris = torch.tensor(iris_color)
        self.sclera = torch.tensor(sclera_color)
        self.styled = bool(styled)
        if not self.styled:
            return
        if rest_vertices is None:
            raise ValueError("rest_vertices: styled=True needs the (V, 3) rest mesh (model frame, y up, cm)")
        rest = rest_vertices.detach().cpu().double().numpy() if isinstance(rest_vertices, Tensor) \
            else np.asarray(rest_vertices, np.float64)
        if rest.shape != (n_vertices, 3):
            raise ValueError(f"rest_vertices: expected ({n_vertices}, 3), got {rest.shape}")
        self.kinds = list(loop_kinds) if loop_kinds is not None else classify_loops(self.loops, rest)
        if len(self.kinds) != len(self.loops) or any(k not in ("eye", "mouth") for k in self.kinds):
            raise ValueError(f"loop_kinds: expected {len(self.loops)} entries of 'eye' / 'mouth', got {self.kinds}")
        self.iris_radius = float(iris_radius)
        self.mouth = torch.tensor(mouth_color)
        self.rest_area = [float(_loop_area(torch.from_numpy(rest[lp])[None])[0]) for lp in self.loops]
        # per loop k with n vertices: n copies of the loop (the fan's rim), n inner-ring vertices, a centre
        new, nv = [faces], n_vertices
        for lp in self.loops:
            n = len(lp)
            a = nv + np.arange(n)          # rim copies
            b = nv + n + np.arange(n)      # inner ring
            c = nv + 2 * n                 # centre
            a1, b1 = np.roll(a, -1), np.roll(b, -1)
            new += [np.stack([a1, a, b], 1), np.stack([a1, b, b1], 1), np.stack([b1, b, np.full(n, c)], 1)]
            nv += 2 * n + 1
        self.faces = torch.from_numpy(np.concatenate(new).astype(np.int64))

    @classmethod
    def for_model(cls, model, styled: bool = False, open_mouth: bool = False, smooth: int = 0,
                  shading: str = "vertex") -> "FaceRenderer":
        """The renderer of a :class:`~facerig.model.FaceModel` with its eye openings removed and closed
        (``open_mouth``: its mouth opening too; ``styled``: per-loop styling; ``smooth``: curved
        subdivision levels; ``shading``: "vertex" or "pixel"; see the class)."""
        if open_mouth and not styled:
            raise ValueError("open_mouth: needs styled=True (an unstyled mouth would get the eyes' white rim)")
        rest = model.mean.detach().cpu().double().numpy() if styled else None
        return cls(open_eye_faces(model, open_mouth), model.n_vertices, styled=styled, rest_vertices=rest,
                   smooth=smooth, shading=shading)

    def _draw(self, verts: Tensor, faces: Tensor, camera, image_size, colors: Tensor, sh: Tensor, background):
        if self.smooth:
            verts, colors, faces = smooth_subdivide(verts, faces, colors, self.smooth)
        return render_mesh(verts, faces, camera, tuple(image_size), colors=colors, sh_coeffs=sh, background=background,
                           shading=self.shading)

    def _styled_geometry(self, verts_cam: Tensor, colors: Tensor):
        B = verts_cam.shape[0]
        dev, dt = verts_cam.device, verts_cam.dtype
        v, c = [verts_cam], [colors]
        for lp, kind, rest_area in zip(self.loops, self.kinds, self.rest_area):
            P = verts_cam[:, lp]                                            # (B, n, 3)
            skin = colors[:, lp].mean(1, keepdim=True)                      # (B, 1, 3)
            centre = P.mean(1, keepdim=True)
            if kind == "eye":
                back = torch.tensor([0.0, 0.0, 0.3], device=dev, dtype=dt)
                d = P - centre
                r = d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
                inner = centre + d * (self.iris_radius / r).clamp(max=0.8) + 0.5 * back
                # how open the eye is: 0 closed .. 1 as at rest; colours fade to the skin when closed
                s = ((_loop_area(P) / max(rest_area, 1e-9) - 0.12) / 0.33).clamp(0, 1)
                s = (s * s * (3 - 2 * s))[:, None, None]
                rim_c, ring_c = self.sclera.to(dev, dt), self.iris.to(dev, dt)
                mid_c = 0.35 * ring_c
                ctr = centre + back
            else:
                back = torch.tensor([0.0, 0.0, 1.0], device=dev, dtype=dt)
                inner = centre + 0.6 * (P - centre) + 0.5 * back
                s = torch.ones(B, 1, 1, device=dev, dtype=dt)
                rim_c = self.mouth.to(dev, dt)
                ring_c = 0.45 * rim_c
                mid_c = 0.12 * rim_c
                ctr = centre + back
            n = P.shape[1]
            v += [P, inner, ctr]
            mix = lambda col: skin + s * (col - skin)  # noqa: E731
            c += [mix(rim_c).expand(B, n, 3), mix(ring_c).expand(B, n, 3), mix(mid_c).expand(B, 1, 3)]
        return torch.cat(v, 1), torch.cat(c, 1)

    def __call__(self, verts_cam: Tensor, colors: Tensor, camera, image_size, sh: Tensor, background=None):
        """Render (no gradients needed, but they flow).

        Args:
            verts_cam: (B, V, 3) camera-frame vertices, cm.
            colors: (B, V, 3) per-vertex albedo in [0, 1].
            camera: a :class:`~facerig.render.PerspectiveCamera` (pixels).
            image_size: (H, W).
            sh: (B, 9, 3) SH light.
            background: optional (B, H, W, 3) float in [0, 1].
        Returns:
            the :func:`facerig.render.render_mesh` output (``.image`` (B, H, W, 3), ``.alpha``).
        """
        B = verts_cam.shape[0]
        dev, dt = verts_cam.device, verts_cam.dtype
        if self.styled:
            V, C = self._styled_geometry(verts_cam, colors.expand(B, -1, -1).to(dt))
            return self._draw(V, self.faces.to(dev), camera, image_size, C, sh, background)
        v, c = [verts_cam], [colors.clone()]
        for loop in self.loops:
            centre = verts_cam[:, loop].mean(1) + torch.tensor([0.0, 0.0, 0.3], device=dev, dtype=dt)
            v.append(centre[:, None])
            c.append(self.iris.to(dev, dt).expand(B, 1, 3))
            c[0][:, loop] = self.sclera.to(dev, dt)
        return self._draw(torch.cat(v, 1), self.faces.to(dev), camera, image_size, torch.cat(c, 1), sh, background)


@dataclass
class SyntheticSample:
    """One synthetic face.

    Attributes:
        image: (H, W, 3) uint8 RGB render over a photo background.
        code: the :class:`~facerig.model.GraphicCode` (batch 1) that generated it (default model).
        vertices: (V, 3) float64 camera-frame ground-truth vertices, cm.
        landmarks68: (68, 2) projected iBUG-68 landmarks, pixels (x, y).
        landmarks468: (468, 2) projected MediaPipe-468 landmarks, pixels, or None if the model has no map.
        yaw, pitch, roll: head rotation, degrees.
        focal: focal length, pixels; the principal point is the image centre.
    """

    image: np.ndarray
    code: GraphicCode
    vertices: np.ndarray
    landmarks68: np.ndarray
    landmarks468: np.ndarray | None
    yaw: float
    pitch: float
    roll: float
    focal: float


class SyntheticFaces:
    """Random faces of a face model rendered over random photo crops, with known codes.

    The defaults are the fitting benchmark's distribution: identity and expression from the model's
    priors (expression ``|N(0, 0.5^2)|`` x ``expression_scale``), albedo from its prior at
    ``albedo_scale`` x its std, yaw +-60, pitch +-30, roll +-10 degrees, 60-80 cm away, +-1.5 cm
    off-centre, :func:`random_sh` light, focal ``2.5 * size``. ``styled`` / ``open_mouth``: the opt-in
    eye and mouth styling of :class:`FaceRenderer` (default off); ``smooth``: its curved subdivision
    levels (default 0; the ground-truth ``vertices`` are the model's own, which the smooth surface
    interpolates); ``shading``: its "vertex" (default) or "pixel" SH shading.

    Example::

        gen = SyntheticFaces(size=256)
        s = gen.sample(np.random.default_rng(0))   # SyntheticSample
        s.image.shape, s.vertices.shape            # (256, 256, 3), (468, 3)
    """

    def __init__(self, decoder: FaceDecoder | str = "default", size: int = 256, focal: float | None = None,
                 yaw: float = 60.0, pitch: float = 30.0, roll: float = 10.0, distance=(60.0, 80.0),
                 offset: float = 1.5, expression_scale: float = 0.5, albedo_scale: float = 0.5, photos=None,
                 styled: bool = False, open_mouth: bool = False, smooth: int = 0, shading: str = "vertex"):
        self.dec = decoder if isinstance(decoder, FaceDecoder) else FaceDecoder(decoder)
        self.size = int(size)
        self.focal = float(focal) if focal is not None else 2.5 * self.size
        self.yaw, self.pitch, self.roll = yaw, pitch, roll
        self.distance, self.offset = distance, offset
        self.expression_scale, self.albedo_scale = expression_scale, albedo_scale
        self.photos = photos if photos is not None else background_photos(self.size)
        self.renderer = FaceRenderer.for_model(self.dec.model, styled=styled, open_mouth=open_mouth, smooth=smooth,
                                               shading=shading)

    def random_code(self, rng: np.random.Generator) -> tuple:
        """A random code (batch 1, float32) and its (yaw, pitch, roll) in degrees."""
        m = self.dec.model
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        s = m.sample(1, g, expression_scale=self.expression_scale)
        code = self.dec.zero_code(1, image_size=self.size)
        rot, yaw, pitch, roll = random_rotation(rng, self.yaw, self.pitch, self.roll)
        code.rotation = rot[None].to(code.rotation.dtype)
        # the zero code puts the mean face's centroid on the optical axis: offset it from there
        dx, dy, z = rng.uniform(-self.offset, self.offset), rng.uniform(-self.offset, self.offset), rng.uniform(*self.distance)
        base = code.translation[0]
        code.translation = code.translation + torch.tensor([[dx, dy, z - float(base[2])]], dtype=code.translation.dtype)
        code.focal = torch.full_like(code.focal, self.focal)
        code.sh = random_sh(rng).to(code.sh.dtype)
        code.identity, code.expression = s["identity"], s["expression"]
        code.albedo = s["albedo"] * self.albedo_scale
        return code, yaw, pitch, roll

    def render(self, code: GraphicCode, background: np.ndarray | Tensor | None = None) -> np.ndarray:
        """Render a code of the model (batch B) over ``background`` ((B,) H, W, 3 uint8 or float; None =
        black) at this generator's size and focal. Returns (B, H, W, 3) uint8."""
        S = self.size
        if background is not None:
            bg = torch.as_tensor(np.asarray(background) if not isinstance(background, Tensor) else background)
            bg = bg.float() / 255.0 if bg.dtype == torch.uint8 else bg.float()
            if bg.ndim == 3:
                bg = bg[None]
            bg = bg.expand(code.batch_size, S, S, 3)
        else:
            bg = None
        with torch.no_grad():
            verts = self.dec.vertices(code).float()
            cols = self.dec.model.albedo(code.albedo).clamp(0, 1).float()
            cam = make_camera(code.focal.float(), (S, S))
            out = self.renderer(verts, cols, cam, (S, S), code.sh.float(), bg)
        return (out.image.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)

    def sample(self, rng: np.random.Generator) -> SyntheticSample:
        """One random face (see the class docstring)."""
        code, yaw, pitch, roll = self.random_code(rng)
        bg = random_crop(rng, self.photos, self.size)
        img = self.render(code, bg)[0]
        S = (self.size, self.size)
        with torch.no_grad():
            verts = self.dec.vertices(code)[0].double().numpy()
            lm68 = self.dec.landmarks2d(code, S, kind="ibug68")[0].double().numpy()
            lm468 = (self.dec.landmarks2d(code, S, kind="mediapipe468")[0].double().numpy()
                     if "mediapipe468" in self.dec.model.landmark_maps else None)
        return SyntheticSample(img, code, verts, lm68, lm468, yaw, pitch, roll, self.focal)


class IctTruth:
    """ICT-FaceKit Light faces (a different face model: the cross-model ground truth of the benchmarks)
    and the points of the ICT surface that correspond to a face model's vertices.

    Args:
        dec: the decoder of the face model whose vertices get ICT points (its mean is aligned rigidly
            to ICT's neutral by the inner iBUG-68 landmarks, refined by closest-point ICP).
        folder: ICT-FaceKit's FaceXModel folder (``ict_face_area_morphs.npz``, ``vertex_indices.json``,
            ``generic_neutral_mesh.obj``).
        albedo: "nearest" (each ICT vertex takes the nearest model vertex's albedo) or "barycentric".

    Attributes:
        neutral (N, 3), id_deltas (100, N, 3), exp_deltas (53, N, 3): ICT's shapes (cm, ICT frame),
        faces (F, 3); tri (V, 3), bary (V, 3): the ICT triangle and barycentrics of each model vertex;
        R, t: model frame -> ICT frame; renderer: a :class:`FaceRenderer` of the ICT mesh.
    """

    def __init__(self, dec: FaceDecoder, folder: Path, albedo: str = "nearest"):
        z = np.load(folder / "ict_face_area_morphs.npz")
        self.neutral = z["neutral"].astype(np.float64)
        self.id_deltas = z["identity"].astype(np.float64) - self.neutral
        names = list(z["expression_names"])
        idx = json.loads((folder / "vertex_indices.json").read_text())
        order = [names.index(n) for n in idx["expressions"]]
        self.exp_deltas = z["expression"][order].astype(np.float64) - self.neutral
        n = len(self.neutral)
        _, polys, _, tpolys = read_obj(folder / "generic_neutral_mesh.obj", polygons=True)
        faces, _ = triangulate_polygons(polys, tpolys, n)
        self.faces = orient_outward(self.neutral, faces)
        m = dec.model
        mean = m.mean.double().numpy()
        lm_ict = np.asarray(idx["idx_to_landmark_verts"])[17:]
        lm_def = m.landmarks_ibug68.indices.numpy()[17:]
        # rigid default-model frame -> ICT frame, refined by closest-point ICP
        _, R, t = umeyama(mean[lm_def], self.neutral[lm_ict], scale=False)
        surf = SurfaceQuery(self.neutral, self.faces)
        for _ in range(10):
            cp, d, _ = surf(mean @ R.T + t)
            _, R, t = umeyama(mean, cp, scale=False)
        cp, d, tri = surf(mean @ R.T + t)
        self.icp_residual_mm = float(d.mean() * 10)
        self.tri = self.faces[tri]
        self.bary = barycentric_coordinates(cp, self.neutral[self.tri])
        self.R, self.t = R, t  # default model frame -> ICT frame
        # albedo transfer: nearest default vertex of every ICT vertex (in the ICT frame)
        _, self.nearest = cKDTree(mean @ R.T + t).query(self.neutral)
        self.albedo_mode = albedo
        if albedo == "barycentric":  # the default model's (interpolated) albedo at each ICT vertex's closest point
            cp2, _, tri2 = SurfaceQuery(mean @ R.T + t, m.faces.numpy())(self.neutral)
            fd = m.faces.numpy()[tri2]
            self.alb_tri = torch.from_numpy(fd)
            self.alb_bary = torch.from_numpy(barycentric_coordinates(cp2, (mean @ R.T + t)[fd])).float()
        self.renderer = FaceRenderer(self.faces, n)  # eye holes closed for the renders only

    def sample(self, rng, expr_scale=0.5):
        """A random ICT face (identity ~ N(0, 1) coefficients, expression weights |N(0, 0.5)| x
        ``expr_scale``): (N, 3) vertices in the face model's frame, cm."""
        c = rng.standard_normal(len(self.id_deltas))
        w = np.abs(rng.normal(0, 0.5, len(self.exp_deltas))) * expr_scale
        shape = self.neutral + np.tensordot(c, self.id_deltas, 1) + np.tensordot(w, self.exp_deltas, 1)
        # into the default model's frame (x subject's left, y up, z out of the face)
        return (shape - self.t) @ self.R

    def points468(self, shape_model_frame):
        """(V, 3) the points of an ICT shape (N, 3) that correspond to the model's V vertices."""
        return (shape_model_frame[self.tri] * self.bary[..., None]).sum(1)
