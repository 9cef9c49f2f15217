"""facerig.face: the face decoder, the face energy and analysis-by-synthesis fitting.

* :class:`FaceDecoder` - ``g(y)``: graphic code -> camera-space mesh, landmarks, rendered image
  (shared by the fitter and the encoder training).
* :mod:`facerig.face.energy` - the face energy on the core terms: robust landmarks (with sliding
  jaw contour), robust photometric over the skin mask, Gaussian priors, temporal smoothness.
* :func:`fit_image` / :func:`fit_faces` / :func:`fit_frames` - coarse-to-fine fitting of a photo
  (pose by PnP + Gauss-Newton, identity and expression by Levenberg-Marquardt on the landmarks,
  photometric refinement of everything by coarse-to-fine Levenberg-Marquardt with closed-form
  Jacobians), or of N frames with one shared identity.

Quick start::

    from skimage.data import astronaut
    from facerig.face import fit_image
    fit = fit_image(astronaut())
    fit.landmark_error_px, fit.landmarks68.shape      # mean px error, (68, 2) input pixels
    overlay = fit.render(astronaut(), alpha=0.7)       # (H, W, 3) uint8
"""

from facerig.face.decoder import SH_AMBIENT, DecoderOutput, FaceDecoder, ambient_sh, make_camera
from facerig.face.energy import (CodePrior, FaceObservation, LandmarkTerm, PhotometricTerm, TemporalTerm,
                                 contour_correspondence, contour_normals, face_energy, robust_residual,
                                 stacked_residuals)
from facerig.face.fit import (FaceFit, FitOptions, MultiFrameFit, NoFaceError, PhotometricLM, fit_faces, fit_frames,
                              fit_image, fit_observations, init_light_albedo, photometric_refine,
                              photometric_refine_adam)

__all__ = [
    "FaceDecoder", "DecoderOutput", "SH_AMBIENT", "ambient_sh", "make_camera",
    "FaceObservation", "LandmarkTerm", "PhotometricTerm", "CodePrior", "TemporalTerm", "face_energy",
    "stacked_residuals", "contour_correspondence", "contour_normals", "robust_residual",
    "FaceFit", "FitOptions", "MultiFrameFit", "NoFaceError", "fit_image", "fit_faces", "fit_frames",
    "fit_observations", "init_light_albedo", "photometric_refine", "photometric_refine_adam", "PhotometricLM",
]
