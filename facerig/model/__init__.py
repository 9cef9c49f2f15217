"""Face models (3DMMs), the graphic code, loaders and mesh / rig export.

Quick start::

    from facerig.model import load_model, GraphicCode
    model = load_model("default")              # 468-vertex Face Mesh topology, cm
    s = model.sample(4, torch.Generator().manual_seed(0))
    verts = model.shape(s["identity"], s["expression"])   # (4, 468, 3) cm, model frame
    lm68 = model.landmarks(verts, "ibug68")               # (4, 68, 3)
    code = GraphicCode.zeros(4, model)                     # frontal face, 50 cm from the camera
    cam_verts = code.transform(verts)                      # (4, 468, 3) cm, OpenCV camera frame

Conventions fixed here for all of facerig
-----------------------------------------
* **Unit**: centimetres for every model (loaders convert: BFM mm, FLAME m; ICT-FaceKit and the
  MediaPipe canonical mesh are already in cm). Errors are reported in mm.
* **Model frame** (the MediaPipe canonical mesh's frame, used by the default model and kept by the
  ICT / BFM / FLAME loaders, which share it): right-handed, **x toward the subject's left** (image
  right when the face looks at the camera), **y up**, **z out of the face toward the viewer**.
  The default model's origin is the canonical mesh's origin (inside the head, about 7 cm behind
  the nose tip). This is also glTF's frame (y up, +z front), so exports need no rotation.
* **Cameras** use OpenCV (x right, y down, z forward). :data:`MODEL_TO_OPENCV` = diag(1, -1, -1)
  rotates a model-frame face into a camera looking along +z so that it is frontal and upright;
  the graphic code's pose is ``X_cam = R(rotation) @ MODEL_TO_OPENCV @ X_model + translation``
  (rotation = axis-angle in the camera frame), so a zero rotation renders a frontal upright face.
* **Coefficients**: ``shape = mean + sum_k a_k identity_basis[k] + sum_e w_e expression_basis[e]``,
  ``a_k ~ N(0, identity_std[k]^2)``; the default model's identity basis is orthonormal (PCA);
  expression modes are named blendshape deltas (ARKit names) with weights in [0, 1]
  (``expression_std`` = 0.5 is their prior scale); albedo alike (``albedo_mean`` in [0, 1]).
* **Triangles** (F, 3) int64, counter-clockwise seen from outside (normals point out of the face).
* **UVs** use the texture image's top-left origin with v pointing down (glTF convention).
* **Landmarks**: ``model.landmark_maps["ibug68"]`` (all models; a :class:`LandmarkMap`: vertex
  ids (L, 3) + weights (L, 3), i.e. a vertex index map or a barycentric embedding on triangles;
  ``.indices`` gives the (L,) vertex ids of index maps) and ``["mediapipe468"]`` on the Face
  Mesh topology (vertex i = Face Mesh landmark i). The 468 -> 68 subset is :data:`MEDIAPIPE468_TO_IBUG68` (shared with
  ``facerig.landmarks``); ``["ibug68_dense"]`` has the jaw points as barycentric points on the
  surface (:func:`ibug68_dense` applies the same map to the detector's 468 points).
* **Regions**: ``model.masks`` - per-vertex weights in [0, 1]: ``skin`` (photometric loss;
  excludes eyes and brows), ``eyes``, ``lips``, ``brows``; ``model.face_groups`` - triangle
  sets (default model: ``mouth_opening``, ``eye_openings``, the triangles that close the mouth
  and cover the eyes; drop them when rendering an open mouth).

The default model
-----------------
Built by ``tools/build_default_model.py`` from ICT-FaceKit Light (MIT; 100 identity modes
re-orthogonalised by SVD -> 100 PCA modes with standard deviations, 53 ARKit-named expression
blendshapes) transferred onto the MediaPipe canonical face mesh (Apache-2.0; 468 vertices, 898
triangles, UVs). The albedo model is hand-designed (a skin-tone mean with redder lips and darker
brows; 21 smooth modes: 3 colour directions x constant / 4 low-frequency UV cosines, plus lips
and brows colour modes), not learnt from photographs. The canonical mesh has no eyeballs or
mouth interior, and its mouth is closed by triangles spanning the lips. ICT's four extra modes
(cheekRaiser_L/R, PupilDilate_L/R) are left out of the default model (no pupils on this mesh);
``load_model(ict_folder)`` keeps all 57.
"""

from facerig.model.code import (DEFAULT_DISTANCE_CM, DEFAULT_FOCAL_FACTOR, MODEL_TO_OPENCV, SH_UNIT_AMBIENT,
                                GraphicCode, model_to_opencv)
from facerig.model.export import (camera_pose_to_model, export_blendshapes_obj, export_mesh, export_model_rig,
                                  export_rig_glb)
from facerig.model.face_model import FaceModel, LandmarkMap, LinearBlendSkinning
from facerig.model.landmark_maps import IBUG68_GROUPS, IBUG68_JAW_BARYCENTRIC, MEDIAPIPE468_TO_IBUG68, ibug68_dense
from facerig.model.loaders import (ModelFileError, default_model_path, load_bfm2009, load_bfm2017, load_flame,
                                   load_ict, load_model, load_npz, save_npz)

__all__ = [
    "FaceModel", "LandmarkMap", "LinearBlendSkinning", "GraphicCode", "MODEL_TO_OPENCV", "model_to_opencv",
    "SH_UNIT_AMBIENT", "DEFAULT_DISTANCE_CM", "DEFAULT_FOCAL_FACTOR", "MEDIAPIPE468_TO_IBUG68", "IBUG68_GROUPS",
    "IBUG68_JAW_BARYCENTRIC", "ibug68_dense",
    "load_model", "load_ict", "load_bfm2009", "load_bfm2017", "load_flame", "load_npz", "save_npz",
    "default_model_path", "ModelFileError", "export_mesh", "export_rig_glb", "export_blendshapes_obj",
    "export_model_rig", "camera_pose_to_model",
]
