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
   (:func:`vertex_jacobian`: linear shape model, rotation, projection, vertex normals, SH
   irradiance; then perspective-correct barycentric interpolation with the visible triangle of
   each pixel frozen, as one sparse product), with no autograd in the loop.

:func:`fit_frames` does the same for N frames of one person: one identity and one albedo shared by
all frames, per-frame expression, pose and light, and temporal smoothness terms (its photometric
stage couples the frames and runs the core's Adam, ``FitOptions.adam_iterations``).

Modules, by concept:

* :mod:`~facerig.face.fit.options` - :class:`FitOptions`, :class:`NoFaceError`.
* :mod:`~facerig.face.fit.results` - :class:`FaceFit`, :class:`MultiFrameFit`.
* :mod:`~facerig.face.fit.params` - :class:`ParameterPacker` (whitened parameters <-> code vectors),
  :func:`parameter_scales`.
* :mod:`~facerig.face.fit.landmark` - stages 1 and 2 (PnP, sliding contour, landmark LM).
* :mod:`~facerig.face.fit.jacobians` - closed-form Jacobians (:func:`vertex_jacobian`,
  :func:`stacked_jacobian`).
* :mod:`~facerig.face.fit.photometric` - stage 3 (:class:`PhotometricLM`, :func:`photometric_refine`,
  :func:`photometric_refine_adam`, :func:`init_light_albedo`).
* :mod:`~facerig.face.fit.subdivision` - finer render meshes (:func:`subdivided_decoder`).
* :mod:`~facerig.face.fit.pipeline` - :func:`fit_observations`, :func:`fit_image`, :func:`fit_faces`,
  :func:`fit_frames`.
"""

from facerig.face.fit.jacobians import normal_tangent_matrix, pixel_rows_product, stacked_jacobian, vertex_jacobian
from facerig.face.fit.landmark import JACOBIAN_MODE, landmark_lm, landmark_setup, pnp_pose, update_contour
from facerig.face.fit.options import SUBDIVIDE_SCHEMES, FitOptions, NoFaceError
from facerig.face.fit.params import CODE_PARTS, ParameterPacker, parameter_scales, temporal_scales
from facerig.face.fit.photometric import (PhotometricLM, init_light_albedo, photometric_refine, photometric_refine_adam,
                                          robust_rho, robust_rho_grad)
from facerig.face.fit.pipeline import fit_faces, fit_frames, fit_image, fit_observations
from facerig.face.fit.results import FaceFit, MultiFrameFit
from facerig.face.fit.subdivision import butterfly_model, butterfly_stencil, excluded_faces, subdivided_decoder

__all__ = [
    "FitOptions", "NoFaceError", "FaceFit", "MultiFrameFit", "SUBDIVIDE_SCHEMES",
    "fit_image", "fit_faces", "fit_frames", "fit_observations",
    "init_light_albedo", "photometric_refine", "photometric_refine_adam", "PhotometricLM",
    "ParameterPacker", "parameter_scales", "temporal_scales", "CODE_PARTS",
    "vertex_jacobian", "stacked_jacobian", "normal_tangent_matrix", "pixel_rows_product",
    "robust_rho", "robust_rho_grad",
    "landmark_lm", "landmark_setup", "pnp_pose", "update_contour", "JACOBIAN_MODE",
    "subdivided_decoder", "excluded_faces", "butterfly_model", "butterfly_stencil",
]
