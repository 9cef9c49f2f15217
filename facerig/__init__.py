"""facerig: differentiable 3D face inverse rendering on one energy-minimisation core.

Sub-packages
------------
energy     the core: energy terms, priors, proximal operators, solvers, unrolling, training modes
render     cameras, rasteriser, interpolation, textures, spherical-harmonics shading
model      face models (3DMMs), the graphic code, loaders and mesh / rig export
landmarks  face detection and Face Mesh landmarks (MediaPipe)
face       the face decoder, the face energy, analysis-by-synthesis fitting, synthetic faces
encoder    the MoFA encoder: CNN -> graphic code, training, reconstruction
rig        video -> personalised blendshape rig (multi-frame fitting, tracking, glTF)
video      streaming video / frame-folder reading and atomic video writing
io         atomic file writes and image decoding (every accepted image form -> uint8 RGB)
sparse     sparse coding (ISTA / FISTA / LISTA) on the core

Conventions used everywhere
---------------------------
* Images are channels-last ``(B, H, W, C)`` float tensors in [0, 1] (NumPy entry points take
  ``(H, W, 3)`` uint8 RGB as well).
* Lengths are in centimetres; cameras follow OpenCV (x right, y down, z forward; pixel row i,
  column j has its centre at (j + 0.5, i + 0.5)).
* Functions follow the device and dtype of their inputs; float32 by default, float64 works.
* Settings are ``*Options`` dataclasses passed as ``options=`` (:class:`FitOptions` to
  :func:`fit_image` / :func:`fit_frames`, :class:`RigOptions` to :func:`build_rig`,
  :class:`TrainOptions` to :func:`train_encoder`); their fields are typed and checked when created.
"""

__version__ = "0.1.0"

_LAZY = {
    "fit_image": "facerig.face",
    "fit_frames": "facerig.face",
    "FitOptions": "facerig.face",
    "RigOptions": "facerig.rig",
    "TrainOptions": "facerig.encoder",
    "train_encoder": "facerig.encoder",
    "load_model": "facerig.model",
    "reconstruct": "facerig.encoder.reconstruct",
    "reconstruct_video": "facerig.encoder.reconstruct",
    "load_encoder": "facerig.encoder",
    "build_rig": "facerig.rig",
}


def __getattr__(name):  # lazy re-exports keep ``import facerig`` fast
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facerig' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
