"""facerig.inversion: what does a network see? Feature inversion on the energy core.

Mahendran & Vedaldi (CVPR 2015): find the image whose features match given ones,
``argmin_y ||phi(y) - phi_0||^2 / ||phi_0||^2 + lam_alpha R_alpha(y) + lam_tv R_TV^beta(y)``,
for any feature map ``phi`` (:class:`facerig.features.VGG16Features`, a random network, facerig's
encoder). Built from the core's terms and solved by its solvers; the learned inverse
(Dosovitskiy & Brox 2016: an up-convolutional decoder per layer) is trained with the core's
``train`` in its self-supervised mode.

Images are channels-last ``(B, H, W, 3)`` RGB float in [0, 1]; features as the feature map
returns them (a tensor or a dict ``name -> tensor``).

* :func:`invert` (optimisation), :func:`invert_learned`, :func:`invert_hybrid` -> :class:`Inversion`;
* :func:`inversion_energy` the energy as a :class:`facerig.energy.WeightedSum`; :func:`feature_error`;
* :class:`LearnedInverse`, :func:`train_learned_inverse`, :func:`load_learned_inverse` (shipped:
  ``assets/inversion_vgg16.pt``, decoders of conv1_2, conv2_2, conv3_3, conv4_3, conv5_3 at 64 px);
* :func:`invert_encoder`: the image whose facerig-encoder code is a given face code.
"""

from facerig.inversion.encoder import encoder_feature_map, invert_encoder, raw_from_code
from facerig.inversion.learned import (DEFAULT_INVERSE, LearnedInverse, UpconvDecoder, load_learned_inverse,
                                       train_learned_inverse)
from facerig.inversion.optim import (MEAN_PIXEL, PIXEL_NORM, PRIORS, Inversion, feature_error, inversion_energy,
                                     invert, invert_hybrid, invert_learned)

__all__ = [
    "DEFAULT_INVERSE",
    "MEAN_PIXEL",
    "PIXEL_NORM",
    "PRIORS",
    "Inversion",
    "LearnedInverse",
    "UpconvDecoder",
    "encoder_feature_map",
    "feature_error",
    "inversion_energy",
    "invert",
    "invert_encoder",
    "invert_hybrid",
    "invert_learned",
    "load_learned_inverse",
    "raw_from_code",
    "train_learned_inverse",
]
