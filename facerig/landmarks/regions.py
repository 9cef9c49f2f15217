"""Pure-data landmark index sets: iBUG-68 regions and MediaPipe Face Mesh regions.

"Right" / "left" are the *subject's* sides (iBUG and MediaPipe agree): for a face looking at the
camera, the right eye (iBUG 36-41, Face Mesh 33 ... 133, iris 468-472) is on the image's left.
The 468 -> 68 map itself lives in :mod:`facerig.model.landmark_maps` (one copy for the detector
and the face model); this module re-exports it.
"""

from __future__ import annotations

import numpy as np

from facerig.model.landmark_maps import IBUG68_GROUPS, MEDIAPIPE468_TO_IBUG68

__all__ = [
    "MEDIAPIPE468_TO_IBUG68",
    "IBUG68_GROUPS",
    "IBUG68_CONTOUR",
    "IBUG68_INNER",
    "IBUG68_RIGHT_BROW",
    "IBUG68_LEFT_BROW",
    "IBUG68_NOSE",
    "IBUG68_RIGHT_EYE",
    "IBUG68_LEFT_EYE",
    "IBUG68_MOUTH",
    "IBUG68_FLIP",
    "MEDIAPIPE_FACE_OVAL",
    "MEDIAPIPE_JAW_CONTOUR",
    "MEDIAPIPE_RIGHT_IRIS",
    "MEDIAPIPE_LEFT_IRIS",
    "MEDIAPIPE_RIGHT_EYE_CORNERS",
    "MEDIAPIPE_LEFT_EYE_CORNERS",
    "to_ibug68",
]

#: Jaw-contour landmarks (subject's right ear -> chin -> left ear). On a 3D model these are not
#: fixed vertices: they slide along the silhouette as the head turns; fit them to the occluding
#: contour (or with low weight), not to fixed vertices.
IBUG68_CONTOUR = range(0, 17)
#: The 51 inner-face landmarks (brows, nose, eyes, mouth): fixed points of the face surface.
IBUG68_INNER = range(17, 68)
IBUG68_RIGHT_BROW = range(17, 22)
IBUG68_LEFT_BROW = range(22, 27)
IBUG68_NOSE = range(27, 36)
IBUG68_RIGHT_EYE = range(36, 42)
IBUG68_LEFT_EYE = range(42, 48)
IBUG68_MOUTH = range(48, 68)

#: Permutation for horizontal flips: after mirroring an image (x -> W - x), landmark
#: ``IBUG68_FLIP[i]`` of the mirrored face is landmark i of the original.
IBUG68_FLIP: tuple[int, ...] = (
    *range(16, -1, -1),  # jaw
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,  # brows
    27, 28, 29, 30,  # nose bridge
    35, 34, 33, 32, 31,  # nostrils
    45, 44, 43, 42, 47, 46,  # right eye <- left eye
    39, 38, 37, 36, 41, 40,  # left eye <- right eye
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,  # outer lips
    64, 63, 62, 61, 60, 67, 66, 65,  # inner lips
)

#: The 36 Face Mesh points of the face oval (silhouette of the mesh), as a closed loop starting
#: at the top of the forehead (10) and going to the subject's left first (image right).
#: Same set as mediapipe's ``FACEMESH_FACE_OVAL`` edges.
MEDIAPIPE_FACE_OVAL: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
#: The lower part of :data:`MEDIAPIPE_FACE_OVAL`, ordered like the iBUG jaw 0..16 and spanning
#: the same ends (subject's right temple 127 -> ear 234 -> chin 152 -> ear 454 -> left temple 356):
#: 23 dense silhouette points for a sliding-contour term. On ``astronaut()`` the iBUG jaw points
#: (from the 468 -> 68 map) lie 0-3 px inside this line (face ~100 px).
MEDIAPIPE_JAW_CONTOUR: tuple[int, ...] = (
    127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
    377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356,
)
#: Iris points of the 478-point model: centre first, then 4 rim points.
MEDIAPIPE_RIGHT_IRIS = range(468, 473)
MEDIAPIPE_LEFT_IRIS = range(473, 478)
#: (outer, inner) eye corners.
MEDIAPIPE_RIGHT_EYE_CORNERS = (33, 133)
MEDIAPIPE_LEFT_EYE_CORNERS = (263, 362)


def to_ibug68(points468):
    """Select the iBUG-68 subset of Face Mesh points.

    ``points468``: (..., 468 or 478, D) NumPy array or torch tensor (any D, e.g. 2 or 3; the 478
    variant's extra iris points are ignored). Returns (..., 68, D) of the same type, dtype and
    device, in iBUG order (see :mod:`facerig.model.landmark_maps`).
    """
    shape = tuple(points468.shape)
    if len(shape) < 2 or shape[-2] not in (468, 478):
        raise ValueError(f"points468 must have shape (..., 468 or 478, D), got {shape}")
    if type(points468).__module__.startswith("torch"):
        import torch

        idx = torch.as_tensor(MEDIAPIPE468_TO_IBUG68, dtype=torch.long, device=points468.device)
        return points468.index_select(-2, idx)
    return np.asarray(points468)[..., list(MEDIAPIPE468_TO_IBUG68), :]
