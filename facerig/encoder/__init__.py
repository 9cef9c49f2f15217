"""facerig.encoder: the MoFA encoder - a CNN regressing the graphic code from a face crop, trained
end to end through the face model and the differentiable renderer (Tewari et al., ICCV 2017).

* :class:`FaceEncoder` / :func:`load_encoder` - crop (B, S, S, 3) + crop camera -> code vector (B, D)
  (:mod:`facerig.encoder.model`, backbones in :mod:`facerig.encoder.networks`);
* :class:`MoFALoss` - unsupervised face energy + code losses per sample source (:mod:`facerig.encoder.losses`);
* :func:`train_encoder` - the training loop on the core's :func:`facerig.energy.train`
  (:mod:`facerig.encoder.training`);
* :class:`SyntheticFaceDataset`, :class:`SamplePhotoDataset` - on-the-fly training data
  (:mod:`facerig.encoder.synthetic_data`); :class:`PreparedFaces` - crops written by ``facerig prepare``
  (:mod:`facerig.encoder.data`); :func:`degrade_photo` (real-photo augmentation) and
  :func:`split_by_video` (hold data out by video) in :mod:`facerig.encoder.augment`;
* :func:`reconstruct` - photo -> :class:`facerig.face.FaceFit` with the encoder (:mod:`facerig.encoder.reconstruct`).

Attributes are imported lazily (``import facerig.encoder`` is cheap).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FaceEncoder": "facerig.encoder.model",
    "load_encoder": "facerig.encoder.model",
    "DEFAULT_ENCODER": "facerig.encoder.model",
    "MobileBackbone": "facerig.encoder.networks",
    "ResNetBackbone": "facerig.encoder.networks",
    "MoFALoss": "facerig.encoder.losses",
    "code_loss": "facerig.encoder.losses",
    "train_encoder": "facerig.encoder.training",
    "TrainOptions": "facerig.encoder.training",
    "TrainConfig": "facerig.encoder.training",
    "evaluate": "facerig.encoder.training",
    "BatchStream": "facerig.encoder.training",
    "SyntheticFaceDataset": "facerig.encoder.synthetic_data",
    "SamplePhotoDataset": "facerig.encoder.synthetic_data",
    "sample_face_photos": "facerig.encoder.synthetic_data",
    "PreparedFaces": "facerig.encoder.data",
    "reconstruct": "facerig.encoder.reconstruct",
    "DegradeOptions": "facerig.encoder.augment",
    "degrade_photo": "facerig.encoder.augment",
    "split_by_video": "facerig.encoder.augment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'facerig.encoder' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)


def __dir__():
    return __all__
