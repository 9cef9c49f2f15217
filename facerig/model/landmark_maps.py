"""Landmark index maps between MediaPipe Face Mesh (468 points) and iBUG / Multi-PIE 68 points.

``MEDIAPIPE468_TO_IBUG68[l]`` is the Face Mesh landmark (= vertex of the default model, whose
topology is the MediaPipe canonical mesh) used for iBUG landmark ``l``; the 68 entries are in
iBUG order: jaw 0-16 (subject's right ear -> chin -> left ear), brows 17-26, nose bridge 27-30,
nostrils 31-35, right eye 36-41, left eye 42-47, outer lips 48-59, inner lips 60-67.
"Right" and "left" are the subject's own, as in the iBUG annotation convention.

The detector subset (``facerig.landmarks`` takes ``mesh468[MEDIAPIPE468_TO_IBUG68]``) and the
model subset (``load_model("default").landmarks_ibug68``) use these same indices, so 68-point
landmark losses compare like with like.

How the map was derived (``tools/build_default_model.py``, reproducible, from permissively
licensed inputs only): the canonical mesh was aligned to the ICT-FaceKit neutral face (MIT) by a
similarity fitted to 27 facial feature points (eye and mouth corners, eyelid tops / bottoms, lip
midline points, brow ends and centres, nose tip, nose bridge top and nose base), each defined on the
canonical mesh by MediaPipe's own Face Mesh contour index sets (``mediapipe.solutions.face_mesh_connections``,
Apache-2.0) and on the ICT face by its iBUG landmark vertices (``idx_to_landmark_verts`` of ICT's
``vertex_indices.json``); then Laplacian-regularised non-rigid ICP registered the canonical mesh
onto the ICT surface (final residual 0.02 mm mean), and each ICT iBUG landmark vertex took the
nearest canonical vertex, distances summed over the neutral and the jawOpen shapes (in ICT's
neutral the inner lips touch; the open mouth separates upper from lower lip points).

Self-check against MediaPipe's contour sets (printed by the build tool): every inner point lands on
the Face Mesh contour of its feature: brows 17-26 on ``FACEMESH_RIGHT_EYEBROW`` /
``FACEMESH_LEFT_EYEBROW`` (10/10), nose 27-35 on ``FACEMESH_NOSE`` (9/9), eyes 36-47 on
``FACEMESH_RIGHT_EYE`` / ``FACEMESH_LEFT_EYE`` (12/12), outer lips 48-59 on the outer loop and
inner lips 60-67 on the inner loop of ``FACEMESH_LIPS`` (20/20). 19 of these 51 points are the
single-vertex feature points that guided the registration; the other 32 land on their contour by
the registration alone, not by construction. Mean distances from ICT's landmark vertices to the
chosen vertices: eyes 0.7 mm, nose 1.7 mm, lips 1.7 mm, brows 2.2 mm. The jaw is different (9/17
on ``FACEMESH_FACE_OVAL``; 7 mm mean): ICT's jaw points are fixed points of the 3D surface, and
Face Mesh's vertices are sparse there (the nearest vertex is 3-11 mm away, although the surface
passes within 1.2 mm). For fitting, weight the jaw points lower than the inner-face points, or use
the dense map below.

The dense map (:data:`IBUG68_JAW_BARYCENTRIC`, :func:`ibug68_dense`): the canonical mesh is coarse
along the jaw (nearest vertices 3-11 mm from ICT's jaw landmarks) but its surface passes within
1.2 mm of them, so the 17 jaw points are also given as barycentric points on Face Mesh
triangles (0.7 mm mean from ICT's jaw landmarks, against 7 mm for the nearest vertices); the inner
51 points stay vertices. The same weights apply to the detector's 468 points and to the model's
vertices (``load_model("default").landmark_maps["ibug68_dense"]``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MEDIAPIPE468_TO_IBUG68", "IBUG68_GROUPS", "IBUG68_JAW_BARYCENTRIC", "ibug68_dense"]

MEDIAPIPE468_TO_IBUG68: tuple[int, ...] = (
    # jaw 0-16
    127, 234, 137, 177, 138, 136, 149, 171, 152, 396, 378, 365, 367, 401, 366, 454, 356,
    # brows 17-21 (right), 22-26 (left)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30, nostrils 31-35
    168, 197, 195, 4, 98, 97, 2, 326, 327,
    # right eye 36-41, left eye 42-47
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lips 48-59
    61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67
    78, 81, 13, 311, 308, 402, 14, 178,
)

IBUG68_GROUPS: dict[str, tuple[int, int]] = {
    "jaw": (0, 17), "right_brow": (17, 22), "left_brow": (22, 27), "nose_bridge": (27, 31),
    "nostrils": (31, 36), "right_eye": (36, 42), "left_eye": (42, 48), "outer_lips": (48, 60),
    "inner_lips": (60, 68),
}
"""iBUG-68 groups as half-open index ranges [start, stop)."""

IBUG68_JAW_BARYCENTRIC: tuple[tuple[tuple[int, int, int], ...], tuple[tuple[float, float, float], ...]] = (
    (
        (127, 34, 162),
        (234, 227, 127),
        (137, 93, 177),
        (132, 58, 177),
        (138, 215, 172),
        (136, 150, 135),
        (170, 169, 149),
        (148, 171, 176),
        (175, 152, 396),
        (377, 400, 396),
        (395, 378, 394),
        (365, 364, 379),
        (367, 397, 435),
        (361, 401, 288),
        (366, 401, 323),
        (454, 356, 447),
        (356, 389, 264),
    ),
    (
        (0.62804, 0.005805, 0.366155),
        (0.584316, 0.349859, 0.065825),
        (0.377881, 0.445765, 0.176354),
        (0.001894, 0.308636, 0.68947),
        (0.470922, 0.151238, 0.377839),
        (0.419219, 0.420407, 0.160373),
        (0.176366, 0.087861, 0.735773),
        (0.010049, 0.699658, 0.290293),
        (0.474678, 0.525322, 0.0),
        (0.00543, 0.294978, 0.699592),
        (0.164233, 0.73978, 0.095987),
        (0.421513, 0.161528, 0.41696),
        (0.469278, 0.377703, 0.153019),
        (0.002606, 0.689366, 0.308027),
        (0.378134, 0.175989, 0.445877),
        (0.584287, 0.06588, 0.349833),
        (0.628048, 0.366093, 0.005859),
    ),
)
"""Jaw points 0-16 as (Face Mesh vertex ids (17, 3), barycentric weights (17, 3)) (see module doc)."""


def ibug68_dense(points: np.ndarray) -> np.ndarray:
    """The 68 iBUG points (..., 68, D) of Face Mesh points (..., 468, D) with the dense map: jaw
    points interpolated on Face Mesh triangles, inner points = :data:`MEDIAPIPE468_TO_IBUG68`.
    Works on NumPy arrays and torch tensors (2D image points or 3D vertices)."""
    ids = np.asarray(IBUG68_JAW_BARYCENTRIC[0])
    w = np.asarray(IBUG68_JAW_BARYCENTRIC[1])
    if points.shape[-2] != 468:
        raise ValueError(f"points: expected shape (..., 468, D), got {tuple(points.shape)}")
    inner = points[..., list(MEDIAPIPE468_TO_IBUG68[17:]), :]
    picked = points[..., ids.ravel().tolist(), :]
    picked = picked.reshape(tuple(points.shape[:-2]) + (17, 3, points.shape[-1]))
    if isinstance(points, np.ndarray):
        jaw = (picked * w[..., None]).sum(-2)
        return np.concatenate([jaw, inner], -2)
    import torch
    wt = torch.as_tensor(w, dtype=points.dtype, device=points.device)
    jaw = (picked * wt[..., None]).sum(-2)
    return torch.cat([jaw, inner], -2)
