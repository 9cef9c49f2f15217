"""facerig.style: neural style transfer on the energy core, solved three ways.

One energy (:class:`~facerig.style.energy.StyleEnergy`: a content term, Gram-matrix style terms and
a smoothness term on VGG16 features from :mod:`facerig.features`) solved

* by iterative optimisation - Gatys et al. (2016), L-BFGS from the core (:func:`gatys`);
* by a network per style trained on the energy without labels - Johnson et al. (2016), Ulyanov et
  al. (2016) (:class:`TransformNet`, :func:`train_fast`: the core's ``train``, unsupervised);
* by a learned unrolled solver that takes the style as an input at run time - Puy & Pérez (2019)
  (:class:`FlexibleSolver`, :func:`train_flexible`): any style, mixes of styles, intensity and
  per-layer weights chosen after training.

:func:`stylize` is the entry point; :mod:`facerig.style.post` has colour preservation and the
photorealism step; :mod:`facerig.style.video` temporal consistency; :mod:`facerig.style.face`
stylises a rig's UV texture. Images are channels-last ``(B, H, W, 3)`` float RGB in [0, 1].
"""

from facerig.style.core import METHODS, StyleResult, default_flexible_path, get_energy, stylize
from facerig.style.energy import CONTENT_LAYERS, DEFAULT_WEIGHTS, STYLE_LAYERS, StyleEnergy, StyleTargets
from facerig.style.fast import TransformNet, load_fast, save_fast, train_fast
from facerig.style.flexible import FlexibleSolver, load_flexible, save_flexible, train_flexible
from facerig.style.gatys import gatys
from facerig.style.images import load_image, procedural_style, resize_image
from facerig.style.post import guided_filter, photorealistic, preserve_color

__all__ = [
    "METHODS", "StyleResult", "stylize", "default_flexible_path", "get_energy",
    "StyleEnergy", "StyleTargets", "STYLE_LAYERS", "CONTENT_LAYERS", "DEFAULT_WEIGHTS",
    "TransformNet", "train_fast", "save_fast", "load_fast",
    "FlexibleSolver", "train_flexible", "save_flexible", "load_flexible",
    "gatys", "load_image", "resize_image", "procedural_style",
    "preserve_color", "photorealistic", "guided_filter",
]
