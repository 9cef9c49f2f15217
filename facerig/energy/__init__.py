"""facerig.energy: the energy-minimisation core.

Every facerig problem is an energy ``E(x, y) = Loss(x, g(y)) + Prior(y)`` (``x`` the
observation, ``y`` the unknown) minimised over ``y`` either by an iterative solver or by a
network trained on the same energy. All pieces are batched over the leading axis, follow their
inputs' device and dtype (float32 by default, float64 for gradient checks):

* :mod:`~facerig.energy.terms`     data terms (squared L2, Huber, Charbonnier) with weights and
  masks; priors (Tikhonov with per-coordinate scales, L1, total variation, Gram matrix);
  :class:`WeightedSum` reports every term; Mahendran & Vedaldi's normalised feature loss (any
  feature map, with jitter), alpha-norm and TV^beta priors;
* :mod:`~facerig.energy.prox`      proximal operators (L1, TV) and projections (box, fixed values);
* :mod:`~facerig.energy.solvers`   ISTA / FISTA (backtracking, monotone), Adam, L-BFGS,
  Gauss-Newton / Levenberg-Marquardt, each returning a :class:`SolverResult`;
* :mod:`~facerig.energy.unroll`    unrolled solvers (one layer per iteration) and free-form CNNs;
* :mod:`~facerig.energy.training`  one ``train`` API for the supervised, self-supervised and
  unsupervised modes, with checkpoints;
* :mod:`~facerig.energy.image`     TV denoising (the ROF problem of scikit-image) and inpainting;
* :mod:`~facerig.energy.ops`       finite differences and divergence;
* :mod:`~facerig.energy.experiments` the denoising / inpainting experiment behind ``facerig demo``
  and ``tools/bench_energy.py``.
"""

from facerig.energy.image import psnr, rof_energy, tv_denoise, tv_inpaint
from facerig.energy.ops import divergence, finite_diff, pointwise_norm
from facerig.energy.prox import project_box, project_fixed, prox_l1, prox_tv, soft_threshold
from facerig.energy.solvers import (
    SolverResult,
    batched_jacobian,
    fista,
    fista_l1_quadratic,
    gauss_newton,
    ista,
    levenberg_marquardt,
    minimize_adam,
    minimize_lbfgs,
    power_iteration,
)
from facerig.energy.terms import (
    L1,
    AlphaNorm,
    FeatureLoss,
    TVBeta,
    CharbonnierData,
    GramTerm,
    HuberData,
    L2Data,
    Term,
    Tikhonov,
    TotalVariation,
    WeightedSum,
    charbonnier,
    gram_loss,
    gram_matrix,
    huber,
    l1,
    squared_l2,
    tikhonov,
    total_variation,
    alpha_norm,
    feature_loss,
    tv_beta,
)
from facerig.energy.training import Problem, TrainResult, load_checkpoint, lr_factor, save_checkpoint, train
from facerig.energy.unroll import DirectCNN, ProxGradLayer, TVPrimalDualLayer, Unrolled, tv_unrolled

__all__ = [
    "L1",
    "AlphaNorm",
    "FeatureLoss",
    "TVBeta",
    "alpha_norm",
    "feature_loss",
    "tv_beta",
    "CharbonnierData",
    "DirectCNN",
    "GramTerm",
    "HuberData",
    "L2Data",
    "Problem",
    "ProxGradLayer",
    "SolverResult",
    "TVPrimalDualLayer",
    "Term",
    "Tikhonov",
    "TotalVariation",
    "TrainResult",
    "Unrolled",
    "WeightedSum",
    "batched_jacobian",
    "charbonnier",
    "divergence",
    "finite_diff",
    "fista",
    "fista_l1_quadratic",
    "gauss_newton",
    "gram_loss",
    "gram_matrix",
    "huber",
    "ista",
    "l1",
    "levenberg_marquardt",
    "load_checkpoint",
    "minimize_adam",
    "minimize_lbfgs",
    "pointwise_norm",
    "power_iteration",
    "project_box",
    "project_fixed",
    "prox_l1",
    "prox_tv",
    "psnr",
    "rof_energy",
    "lr_factor",
    "save_checkpoint",
    "soft_threshold",
    "squared_l2",
    "tikhonov",
    "total_variation",
    "train",
    "tv_denoise",
    "tv_inpaint",
    "tv_unrolled",
]
