"""Settings of the fitter (:class:`FitOptions`) and its error (:class:`NoFaceError`)."""

from __future__ import annotations

from dataclasses import dataclass

from facerig.model import DEFAULT_FOCAL_FACTOR
from facerig.render.shading import check_shading

__all__ = ["FitOptions", "NoFaceError", "SUBDIVIDE_SCHEMES"]

SUBDIVIDE_SCHEMES = ("midpoint", "butterfly", "detail")
"""Names of ``FitOptions.photo_subdivide_scheme`` (see :func:`facerig.face.fit.subdivided_decoder`)."""


class NoFaceError(ValueError):
    """No face was found in the image (the message names the image when known)."""


@dataclass
class FitOptions:
    """Settings of the fitter (defaults tuned on ``tools/bench_fit.py``).

    Attributes:
        landmarks: "dense" (468 Face Mesh points; needs a Face Mesh topology model) or "sparse" (iBUG-68).
        crop_size: side of the working crop in pixels (landmark and photometric stages).
        margin: crop margin around the landmarks' box (fraction of its longer side).
        focal_factor: focal length = ``focal_factor x max(H, W)`` pixels when ``focal`` is not given.
        pose_iterations, shape_rounds, shape_iterations: LM iterations of stage 1, rounds x
            iterations of stage 2.
        photo_iterations: iterations of stage 3 (0 = landmark-only fit; None = the schedule's own
            counts, 9 Levenberg-Marquardt iterations, or 40 for Adam). An int is spread over the
            schedule's rounds in proportion (:meth:`photo_rounds`).
        photo_solver: "lm" (Levenberg-Marquardt, default) or "adam" (the core's Adam on the same
            energy; multi-frame fits always use Adam: their frames share identity and albedo).
        photo_schedule: LM rounds ``((render size px, iterations, landmark weight), ...)``,
            coarse to fine; the landmark weight replaces ``w_landmarks_photo`` in that round.
        photo_damping: initial LM damping.
        photo_clamp: compare the render clamped to [0, 1] with the photo (saturated pixels).
        w_identity_lm, w_expression_lm: prior weights of the LM photometric stage (the Adam
            variant uses w_identity_photo, w_expression_photo).
        photo_eps: Charbonnier scale of the LM photometric residual (colour units in [0, 1]:
            residuals much larger than it are weighted like L1, robust to occluders and to
            pixels the model cannot reproduce).
        photo_subdivide, photo_subdivide_min_size: subdivision levels (``photo_subdivide_scheme``)
            of the mesh the LM rounds render, with the same code (about 4x the vertices per level;
            slower), applied in the rounds whose render size is >= ``photo_subdivide_min_size`` px
            (default: 1 level from 120 px, i.e. the last two rounds).
        photo_exclude: face groups of the model (:attr:`FaceModel.face_groups`, e.g. "mouth_opening")
            whose pixels the LM photometric term leaves out (groups the model lacks are ignored).
        photo_subdivide_scheme: "detail" (default: the model's own finer surface,
            :meth:`facerig.model.FaceModel.detailed` - the default model's 1833 vertices on the
            ICT-FaceKit surface it was sampled from; models without a detail level are not
            subdivided), "midpoint" (the piecewise-linear surface) or "butterfly" (a smooth surface
            through the same vertices, still linear in the code; :func:`butterfly_model`).
            Measured on tools/bench_fit.py (30 faces): the cross-model error drops from 0.62x to
            0.45x the mean face's with the detail level from 120 px (+0.13 s per fit).
        photo_shading: how the LM photometric stage renders: "vertex" (default; Gouraud: SH
            irradiance x albedo at the vertices, colours interpolated) or "pixel" (Phong-style:
            normals and albedo interpolated with the perspective-correct barycentrics, SH per pixel;
            closed-form Jacobian in :meth:`PhotometricLM._pixel_jacobian`; the Adam / multi-frame stage
            renders per vertex).
        photo_erode: leave out of the LM photometric term the pixels within this many pixels of
            the rendered silhouette (partly background in the photo).
        photo_lr: Adam learning rate (whitened coefficients); photo_shape_lr: its factor for
            identity and expression (pose and light use fixed smaller factors).
        sigma: landmark noise in crop pixels; delta: Huber threshold (in sigmas).
        contour_weight: weight of the jaw / face-oval landmarks (the others have 1).
        w_identity, w_expression: prior weights of stage 2 (strong: detector landmarks carry
            biases of several pixels); w_identity_photo, w_expression_photo, w_albedo,
            w_landmarks_photo (Adam; LM rounds set their own), w_photometric: weights of stage 3
            (the photometric term decides);
        w_temporal: temporal smoothness weight (multi-frame).
        fit_identity_modes: number of leading identity modes left free (the rest stay 0).
    """

    landmarks: str = "dense"
    crop_size: int = 160
    margin: float = 0.2
    focal_factor: float = DEFAULT_FOCAL_FACTOR
    pose_iterations: int = 10
    shape_rounds: int = 3
    shape_iterations: int = 6
    photo_iterations: int | None = None
    photo_lr: float = 0.03
    photo_shape_lr: float = 1.0
    sigma: float = 2.0
    delta: float = 3.0
    contour_weight: float = 0.5
    w_identity: float = 20.0
    w_expression: float = 20.0
    w_albedo: float = 1.0
    w_photometric: float = 20000.0
    w_landmarks_photo: float = 0.2
    w_identity_photo: float = 1.0
    w_expression_photo: float = 2.0
    w_temporal: float = 10.0
    fit_identity_modes: int = 80
    photo_solver: str = "lm"
    photo_schedule: tuple = ((80, 4, 0.05), (120, 2, 0.0), (160, 3, 0.0))
    photo_damping: float = 1e-3
    photo_clamp: bool = True
    w_identity_lm: float = 3.0
    w_expression_lm: float = 5.0
    photo_subdivide: int = 1
    photo_subdivide_min_size: int = 120
    photo_eps: float = 0.005
    photo_erode: int = 1
    photo_subdivide_scheme: str = "detail"
    photo_exclude: tuple = ()
    photo_shading: str = "vertex"

    def __post_init__(self):
        if self.landmarks not in ("dense", "sparse"):
            raise ValueError(f"landmarks: expected 'dense' or 'sparse', got {self.landmarks!r}")
        if int(self.crop_size) < 32:
            raise ValueError(f"crop_size: expected >= 32 pixels, got {self.crop_size!r}")
        for name in ("pose_iterations", "shape_rounds", "shape_iterations", "photo_iterations"):
            v = getattr(self, name)
            if (v is not None or name != "photo_iterations") and (not isinstance(v, int) or v < 0):
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        if self.photo_solver not in ("lm", "adam"):
            raise ValueError(f"photo_solver: expected 'lm' or 'adam', got {self.photo_solver!r}")
        try:
            rounds = [(int(r[0]), int(r[1]), float(r[2])) for r in self.photo_schedule]
        except (TypeError, ValueError, IndexError):
            rounds = None
        if not rounds or any(r[0] < 8 or r[1] < 0 or r[2] < 0 for r in rounds):
            raise ValueError("photo_schedule: expected rounds (render size >= 8 px, LM iterations >= 0, landmark "
                             f"weight >= 0), e.g. ((80, 4, 0.05), (160, 3, 0.0)); got {self.photo_schedule!r}")
        self.photo_schedule = tuple(rounds)
        for name in ("photo_subdivide", "photo_subdivide_min_size", "photo_erode"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        if isinstance(self.photo_exclude, str) or not all(isinstance(g, str) for g in self.photo_exclude):
            raise ValueError(f"photo_exclude: expected a tuple of face-group names, e.g. ('mouth_opening',), "
                             f"got {self.photo_exclude!r}")
        self.photo_exclude = tuple(self.photo_exclude)
        if self.photo_subdivide_scheme not in SUBDIVIDE_SCHEMES:
            raise ValueError(f"photo_subdivide_scheme: expected one of {SUBDIVIDE_SCHEMES}, got "
                             f"{self.photo_subdivide_scheme!r}")
        check_shading(self.photo_shading, "photo_shading")
        if not float(self.photo_eps) > 0:
            raise ValueError(f"photo_eps: expected a positive colour difference (e.g. 0.01), got {self.photo_eps!r}")

    def photo_rounds(self) -> list:
        """The Levenberg-Marquardt rounds of stage 3, ``[(render size px, iterations, landmark weight)]``:
        ``photo_schedule``, its iteration counts rescaled to total ``photo_iterations`` when that is set."""
        rounds = list(self.photo_schedule)
        if self.photo_iterations is None:
            return rounds
        total = sum(r[1] for r in rounds) or 1
        out, done, acc = [], 0, 0.0
        for size, n, w in rounds:
            acc += n * self.photo_iterations / total
            k = int(round(acc)) - done
            done += k
            out.append((size, k, w))
        return out

    @property
    def adam_iterations(self) -> int:
        """Iterations of the Adam variant of stage 3 (``photo_solver="adam"`` and multi-frame fits):
        ``photo_iterations``, default 40."""
        return 40 if self.photo_iterations is None else self.photo_iterations
