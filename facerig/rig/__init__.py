"""facerig.rig: video -> personalised, animated face rig (``facerig rig VIDEO``).

* :func:`build_rig` - the pipeline (landmark tracking, keyframes, identity + albedo on the
  keyframes, deformation-transferred ARKit blendshapes, per-frame tracking with temporal terms,
  de-lit UV texture, rig.glb / OBJ / texture / tracking.csv / preview.mp4 / report.png).
* :class:`Rig`, :class:`RigOptions` - its result and settings.
* :func:`deformation_transfer` - Sumner & Popovic's deformation transfer of blendshapes.
* :func:`corrective_shapes` - optional low-rank corrective shapes from the landmark residuals.
* :class:`FrameTracker`, :func:`select_keyframes`, :func:`jitter` - the per-frame pieces.
* :func:`render_talking_head` - synthetic talking-head clips with ground truth.
"""

from facerig.rig.correctives import corrective_shapes
from facerig.rig.pipeline import (SAMPLE_VIDEO, TRACKING_COLUMNS, Rig, RigOptions, build_rig, make_tracker,
                                   personalise, tracking_csv_header, tracking_csv_row)
from facerig.rig.synthetic import performance_curves, render_talking_head
from facerig.rig.track import FrameTracker, jitter, select_keyframes
from facerig.rig.transfer import deformation_transfer

__all__ = ["build_rig", "Rig", "RigOptions", "SAMPLE_VIDEO", "TRACKING_COLUMNS", "tracking_csv_header", "tracking_csv_row",
           "personalise", "make_tracker", "deformation_transfer", "corrective_shapes",
           "FrameTracker", "jitter",
           "select_keyframes", "performance_curves", "render_talking_head"]
