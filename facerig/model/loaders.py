"""Loaders: the shipped default model, ICT-FaceKit folders, BFM 2009 / 2017, FLAME 2020 / 2023 and
facerig's own ``.npz`` format. Every loader returns a :class:`FaceModel` in centimetres.

Research models cannot be shipped; when a file is missing, the error says where to obtain it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from facerig.assets import asset_dirs, asset_path
from facerig.io import atomic_open

from facerig.model.face_model import FaceModel, LandmarkMap, LinearBlendSkinning
from facerig.model.geometry import SurfaceQuery, barycentric_coordinates, umeyama

__all__ = ["load_model", "load_default", "load_ict", "load_bfm2009", "load_bfm2017", "load_flame",
           "load_npz", "save_npz", "default_model_path", "read_obj", "ModelFileError", "WHERE_TO_GET",
           "triangulate_polygons", "orient_outward"]

WHERE_TO_GET = {
    "ict": "ICT-FaceKit (MIT): https://github.com/ICT-VGL/ICT-FaceKit - pass the FaceXModel folder "
           "(generic_neutral_mesh.obj, identityNNN.obj, <expression>.obj, vertex_indices.json)",
    "bfm2009": "Basel Face Model 2009: register at https://faces.dmi.unibas.ch/bfm/ and pass 01_MorphableModel.mat",
    "bfm2017": "Basel Face Model 2017: register at https://faces.dmi.unibas.ch/bfm/bfm2017.html and pass "
               "model2017-1_bfm_nomouth.h5 (or model2017-1_face12_nomouth.h5)",
    "flame": "FLAME 2020 / 2023: register at https://flame.is.tue.mpg.de/ and pass generic_model.pkl "
             "(FLAME2020) or flame2023.pkl",
    "default": "the default model ships with facerig in assets/default_model.npz; rebuild it with "
               "tools/build_default_model.py",
}

FACE_AREA_ICT = 9409
NARROW_FACE_ICT = 6706


class ModelFileError(ValueError):
    """A model file is missing, truncated or not in the expected layout."""


# ------------------------------------------------------------------------------------------ helpers
def default_model_path() -> Path:
    """Where the default model is read from (``default_model.npz`` in the folders of
    :func:`facerig.assets.asset_dirs`); the first candidate when it is nowhere."""
    try:
        return asset_path("default_model.npz")
    except FileNotFoundError:
        return asset_dirs()[0] / "default_model.npz"


def _missing(path: Path, kind: str) -> ModelFileError:
    return ModelFileError(f"model file {path} not found. {WHERE_TO_GET[kind]}")


def read_obj(path: Path, *, max_vertices: int | None = None, polygons: bool = False):
    """Read an OBJ: vertices (N, 3) float64; with ``polygons=True`` also polygon vertex ids,
    texture coordinates (T, 2) and polygon texture ids (lists, 0-based)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise ModelFileError(f"{path}: not a text OBJ file") from None
    lines = text.splitlines()
    vlines = [ln[2:] for ln in lines if ln.startswith("v ")]
    if max_vertices is not None:
        vlines = vlines[:max_vertices]
    try:
        verts = np.array(" ".join(vlines).split(), dtype=np.float64)
        verts = verts.reshape(len(vlines), -1)[:, :3]
    except ValueError:
        raise ModelFileError(f"{path}: malformed 'v' lines (truncated or not an OBJ file)") from None
    if not polygons:
        return verts
    vts = [ln.split()[1:3] for ln in lines if ln.startswith("vt ")]
    polys, tpolys = [], []
    for ln in lines:
        if ln.startswith("f "):
            toks = ln.split()[1:]
            polys.append([int(t.split("/")[0]) - 1 for t in toks])
            tpolys.append([int(t.split("/")[1]) - 1 if "/" in t and t.split("/")[1] else -1 for t in toks])
    return verts, polys, np.asarray(vts, dtype=np.float64).reshape(-1, 2), tpolys


def triangulate_polygons(polys, tpolys, n_max):
    """Fan-triangulate OBJ polygons (lists of vertex indices ``polys`` and of texture-coordinate indices
    ``tpolys``), skipping polygons with fewer than 3 corners or a vertex index >= ``n_max``.
    Returns ``(faces (F, 3) int64, uv_faces (F, 3) int64)``."""
    tris, ttris = [], []
    for p, tp in zip(polys, tpolys):
        if len(p) < 3 or max(p) >= n_max:
            continue
        for k in range(1, len(p) - 1):
            tris.append([p[0], p[k], p[k + 1]])
            ttris.append([tp[0], tp[k], tp[k + 1]])
    return np.asarray(tris, np.int64).reshape(-1, 3), np.asarray(ttris, np.int64).reshape(-1, 3)


def orient_outward(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``faces`` (F, 3) of the face mesh ``verts`` (V, 3), wound so the normals point out of the face.

    Flip the winding when the normals around the nose tip (the vertex with the largest z,
    y up / z toward the viewer) point away from the viewer. (A sum over the whole mesh is not
    reliable: for a head with eye and mouth openings it can have either sign.)"""
    v = verts[faces]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    tip = verts[np.argmax(verts[:, 2])]
    d = np.linalg.norm(v.mean(1) - tip, axis=1)
    near = d <= np.partition(d, min(len(d) - 1, 50))[min(len(d) - 1, 50)]
    return faces[:, [0, 2, 1]] if n[near, 2].sum() < 0 else faces


def _t(x, dtype=torch.float32):
    return None if x is None else torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)


def masks_from_ibug68(verts: np.ndarray, lm: np.ndarray, region: np.ndarray | None = None) -> dict:
    """Approximate region masks for any face mesh from its 68 iBUG landmark positions.

    In the model frame (y up, z toward the viewer): lips = vertices whose (x, y) lie inside the
    outer-lip polygon (48-59) and that are not more than 1.5 cm behind the lip corners; eyes =
    inside the eye polygons (36-41, 42-47) grown by 3 mm; brows = within 6 mm of the brow
    polylines (17-21, 22-26) in (x, y) and in front of the eye corners; skin = region minus eyes
    and brows (``region`` (V,) bool restricts the face area, default all).
    """
    from matplotlib.path import Path as MplPath

    xy = verts[:, :2]
    front_lips = verts[:, 2] > lm[[48, 54], 2].min() - 1.5
    front_eyes = verts[:, 2] > lm[[36, 45], 2].min() - 1.5
    lips = MplPath(lm[48:60, :2]).contains_points(xy) & front_lips
    eyes = np.zeros(len(verts), bool)
    for a, b in ((36, 42), (42, 48)):
        poly = MplPath(lm[a:b, :2])
        # the sign of ``radius`` that grows the polygon depends on its orientation: try both
        eyes |= poly.contains_points(xy, radius=0.3) | poly.contains_points(xy, radius=-0.3)
    eyes &= front_eyes
    brows = np.zeros(len(verts), bool)
    for a, b in ((17, 22), (22, 27)):
        pts = lm[a:b, :2]
        for p, q in zip(pts[:-1], pts[1:]):
            d = q - p
            t = np.clip(((xy - p) @ d) / (d @ d), 0, 1)
            brows |= np.linalg.norm(xy - (p + t[:, None] * d), axis=1) < 0.6
    brows &= front_eyes
    region = np.ones(len(verts), bool) if region is None else region
    skin = region & ~eyes & ~brows
    return {k: v.astype(np.float32) for k, v in
            {"skin": skin, "eyes": eyes & region, "lips": lips & region, "brows": brows & region}.items()}


def transfer_ibug68(verts: np.ndarray, faces: np.ndarray) -> LandmarkMap:
    """iBUG-68 landmarks for a face mesh without its own map, as a barycentric embedding.

    The default model's mean face (which carries the map) is aligned to ``verts`` (cm, y up,
    z toward the viewer): translation from the nose tips (largest z), then rigid ICP with scale
    of the default face onto the target surface; each default landmark is then embedded at its
    closest point on the target surface. Accuracy is a few millimetres; pass your own map
    (``LandmarkMap``) when the model ships one (e.g. FLAME's landmark embedding).
    """
    src_model = load_default()
    src = src_model.mean.double().numpy()
    lm = src_model.landmarks_ibug68.apply(src_model.mean[None].double())[0].numpy()
    query = SurfaceQuery(verts, faces)
    s, R, t = 1.0, np.eye(3), verts[np.argmax(verts[:, 2])] - src[np.argmax(src[:, 2])]
    for _ in range(30):
        cur = s * src @ R.T + t
        q, d, _ = query(cur)
        keep = d < max(np.median(d) * 3, 0.5)
        s, R, t = umeyama(src[keep], q[keep])
    q, _, tri = query(s * lm @ R.T + t)
    bary = barycentric_coordinates(q, verts[faces[tri]])
    return LandmarkMap(torch.as_tensor(faces[tri]), torch.as_tensor(bary, dtype=torch.float32))


# ------------------------------------------------------------------------------------------ npz (default)
_NPZ_REQUIRED = ("mean", "faces", "identity_basis", "identity_std", "expression_basis", "expression_std",
                 "expression_names", "albedo_mean", "albedo_basis", "albedo_std", "landmarks_ibug68")


def load_npz(path, dtype=torch.float32) -> FaceModel:
    """facerig's own model format (the layout written by ``tools/build_default_model.py`` and
    :func:`save_npz`)."""
    path = Path(path)
    if not path.exists():
        raise _missing(path, "default")
    try:
        z = np.load(path, allow_pickle=False)
        data = {k: z[k] for k in z.files}
    except Exception as err:  # zipfile / pickle errors of truncated files
        raise ModelFileError(f"{path}: cannot read the model file ({err.__class__.__name__}: {err}); "
                             f"the file is truncated or not a facerig .npz model") from None
    missing = [k for k in _NPZ_REQUIRED if k not in data]
    if missing:
        raise ModelFileError(f"{path}: not a facerig model file, missing arrays {missing}")
    lms = {}
    if data["landmarks_ibug68"].ndim == 1:
        lms["ibug68"] = LandmarkMap.from_indices(data["landmarks_ibug68"])
    else:
        lms["ibug68"] = LandmarkMap(torch.as_tensor(data["landmarks_ibug68"]).long(),
                                    torch.as_tensor(data["landmarks_ibug68_weights"], dtype=torch.float32))
    if "landmarks_ibug68_dense" in data:
        lms["ibug68_dense"] = LandmarkMap(torch.as_tensor(data["landmarks_ibug68_dense"]).long(),
                                          torch.as_tensor(data["landmarks_ibug68_dense_weights"], dtype=torch.float32))
    if bool(data.get("is_mediapipe468", np.array(data["mean"].shape[0] == 468))):
        lms["mediapipe468"] = LandmarkMap.from_indices(np.arange(468))
    masks = {k[5:]: data[k] for k in data if k.startswith("mask_")}
    groups = {k[10:]: data[k] for k in data if k.startswith("facegroup_")}
    return FaceModel(
        mean=_t(data["mean"], dtype), faces=_t(data["faces"], torch.long),
        identity_basis=_t(data["identity_basis"], dtype), identity_std=_t(data["identity_std"], dtype),
        expression_basis=_t(data["expression_basis"], dtype), expression_std=_t(data["expression_std"], dtype),
        expression_names=[str(n) for n in data["expression_names"]],
        albedo_mean=_t(data["albedo_mean"], dtype), albedo_basis=_t(data["albedo_basis"], dtype),
        albedo_std=_t(data["albedo_std"], dtype), uvs=_t(data.get("uvs"), dtype),
        uv_faces=_t(data.get("uv_faces"), torch.long), landmark_maps=lms,
        masks={k: _t(v, dtype) for k, v in masks.items()},
        face_groups={k: _t(v, torch.bool) for k, v in groups.items()},
        name=str(data.get("name", path.stem)), unit=str(data.get("unit", "cm")),
        license=str(data.get("license", "")), source=str(data.get("source", str(path))),
        detail={k: _t(data[f"detail_{k}"], dtype) for k in ("mean", "identity", "expression")}
        if "detail_mean" in data else None)


def save_npz(model: FaceModel, path) -> Path:
    """Write ``model`` (without skinning) in facerig's ``.npz`` format, atomically."""
    if model.lbs is not None:
        raise ValueError("model: skinned models (FLAME) cannot be saved as .npz; save the source file instead")
    path = Path(path)
    lm = model.landmarks_ibug68
    arrays = {
        "format_version": np.array(1), "name": np.array(model.name), "unit": np.array(model.unit),
        "license": np.array(model.license), "source": np.array(model.source),
        "mean": model.mean.cpu().numpy(), "faces": model.faces.cpu().numpy().astype(np.int32),
        "identity_basis": model.identity_basis.cpu().numpy(), "identity_std": model.identity_std.cpu().numpy(),
        "expression_basis": model.expression_basis.cpu().numpy(), "expression_std": model.expression_std.cpu().numpy(),
        "expression_names": np.array(model.expression_names), "albedo_mean": model.albedo_mean.cpu().numpy(),
        "albedo_basis": model.albedo_basis.cpu().numpy(), "albedo_std": model.albedo_std.cpu().numpy(),
        "is_mediapipe468": np.array("mediapipe468" in model.landmark_maps),
    }
    if lm.is_index:
        arrays["landmarks_ibug68"] = lm.indices.cpu().numpy().astype(np.int32)
    else:
        arrays["landmarks_ibug68"] = lm.vertex_ids.cpu().numpy().astype(np.int32)
        arrays["landmarks_ibug68_weights"] = lm.weights.cpu().numpy()
    if "ibug68_dense" in model.landmark_maps:
        arrays["landmarks_ibug68_dense"] = model.landmark_maps["ibug68_dense"].vertex_ids.cpu().numpy().astype(np.int32)
        arrays["landmarks_ibug68_dense_weights"] = model.landmark_maps["ibug68_dense"].weights.cpu().numpy()
    if model.uvs is not None:
        arrays["uvs"] = model.uvs.cpu().numpy()
    if model.uv_faces is not None:
        arrays["uv_faces"] = model.uv_faces.cpu().numpy().astype(np.int32)
    for k, v in model.masks.items():
        arrays[f"mask_{k}"] = v.cpu().numpy()
    for k, v in model.face_groups.items():
        arrays[f"facegroup_{k}"] = v.cpu().numpy()
    for k, v in (model.detail or {}).items():
        arrays[f"detail_{k}"] = v.cpu().numpy()
    with atomic_open(path) as fh:
        np.savez_compressed(fh, **arrays)
    return path


_DEFAULT_CACHE: dict = {}


def load_default(dtype=torch.float32) -> FaceModel:
    """The default model shipped with facerig (MediaPipe Face Mesh topology, 468 vertices)."""
    path = default_model_path()
    key = (str(path), path.stat().st_mtime if path.exists() else 0.0, dtype)
    if key not in _DEFAULT_CACHE:
        _DEFAULT_CACHE.clear()
        _DEFAULT_CACHE[key] = load_npz(path, dtype)
    return _DEFAULT_CACHE[key].to(dtype=dtype, copy=True)  # a fresh copy: callers may modify it


# ------------------------------------------------------------------------------------------ ICT-FaceKit
def _ict_folder(path: Path) -> Path:
    path = Path(path)
    if path.is_file():
        path = path.parent
    if (path / "FaceXModel").is_dir():
        path = path / "FaceXModel"
    if not path.is_dir():
        raise _missing(path, "ict")
    if not (path / "generic_neutral_mesh.obj").exists():
        raise ModelFileError(f"{path}: no generic_neutral_mesh.obj; this is not an ICT-FaceKit FaceXModel folder. "
                             + WHERE_TO_GET["ict"])
    return path


def load_ict(path, region: str = "face", dtype=torch.float32, max_identities: int | None = None,
             expressions: str = "all") -> FaceModel:
    """An ICT-FaceKit ``FaceXModel`` folder (or its parent).

    Args:
        path: folder with ``generic_neutral_mesh.obj``, ``identity000.obj`` ..., one OBJ per
            expression (``browDown_L.obj`` ...) and ``vertex_indices.json``.
        region: "face" (vertices 0..9408, default), "narrow_face" (0..6705) or "head" (all).
        max_identities: keep the first N identity modes (default: all found, 100 for ICT).
        expressions: "all" (every expression OBJ: 53 ARKit names first, in the json's order,
            then the extras) or "arkit" (the 53 named in ``vertex_indices.json``).
    Identity modes are ``identityNNN - neutral`` with std 1 (ICT samples them with N(0, 1)
    coefficients; they are not orthonormal). Expressions are blendshape deltas (std 0.5).
    UVs come from the OBJ (separate UV topology; stored with v pointing down).
    """
    folder = _ict_folder(path)
    if region not in ("face", "narrow_face", "head"):
        raise ValueError(f"region: expected 'face', 'narrow_face' or 'head', got {region!r}")
    idx_path = folder / "vertex_indices.json"
    if not idx_path.exists() and (folder.parent / "vertex_indices.json").exists():
        idx_path = folder.parent / "vertex_indices.json"
    if not idx_path.exists():
        raise ModelFileError(f"{folder}: vertex_indices.json is missing. " + WHERE_TO_GET["ict"])
    try:
        idx = json.loads(idx_path.read_text())
        lm_idx = np.asarray(idx["idx_to_landmark_verts"], np.int64)
        arkit = list(idx["expressions"])
    except (json.JSONDecodeError, KeyError) as err:
        raise ModelFileError(f"{idx_path}: not a valid ICT vertex_indices.json ({err})") from None
    verts, polys, vts, tpolys = read_obj(folder / "generic_neutral_mesh.obj", polygons=True)
    n = {"face": FACE_AREA_ICT, "narrow_face": NARROW_FACE_ICT, "head": len(verts)}[region]
    if len(verts) < n:
        raise ModelFileError(f"{folder / 'generic_neutral_mesh.obj'}: {len(verts)} vertices, "
                             f"the {region} region needs {n}")
    neutral = verts[:n]
    faces, uv_faces = triangulate_polygons(polys, tpolys, n)
    has_uv = len(vts) > 0 and (uv_faces >= 0).all()
    flip = orient_outward(neutral, faces) is not faces
    if flip:
        faces, uv_faces = faces[:, [0, 2, 1]], uv_faces[:, [0, 2, 1]]

    def morph(p):
        v = read_obj(p, max_vertices=n)
        if len(v) < n:
            raise ModelFileError(f"{p}: {len(v)} vertices, the {region} region needs {n} (truncated file?)")
        return v - neutral

    id_files = sorted(folder.glob("identity[0-9][0-9][0-9].obj"))
    if max_identities is not None:
        id_files = id_files[:max_identities]
    ident = np.stack([morph(p) for p in id_files]) if id_files else None
    exp_files = {p.stem: p for p in folder.glob("*.obj")
                 if p.stem != "generic_neutral_mesh" and not re.fullmatch(r"identity\d+", p.stem)}
    names = [e for e in arkit if e in exp_files]
    missing = [e for e in arkit if e not in exp_files]
    if missing:
        raise ModelFileError(f"{folder}: expression OBJs missing for {missing[:5]}{'...' if len(missing) > 5 else ''}")
    if expressions == "all":
        names += sorted(set(exp_files) - set(arkit))
    elif expressions != "arkit":
        raise ValueError(f"expressions: expected 'all' or 'arkit', got {expressions!r}")
    expr = np.stack([morph(exp_files[e]) for e in names]) if names else None
    region_mask = np.ones(n, bool)
    if region == "head":
        region_mask[FACE_AREA_ICT:] = False
    masks = masks_from_ibug68(neutral, neutral[lm_idx], region_mask)
    lic = (folder / "LICENSE") if (folder / "LICENSE").exists() else folder.parent / "LICENSE"
    return FaceModel(
        mean=_t(neutral, dtype), faces=_t(faces, torch.long),
        identity_basis=_t(ident, dtype), identity_std=None if ident is None else torch.ones(len(ident), dtype=dtype),
        expression_basis=_t(expr, dtype),
        expression_std=None if expr is None else torch.full((len(expr),), 0.5, dtype=dtype),
        expression_names=names,
        uvs=_t(np.stack([vts[:, 0], 1 - vts[:, 1]], 1), dtype) if has_uv else None,
        uv_faces=_t(uv_faces, torch.long) if has_uv else None,
        landmark_maps={"ibug68": LandmarkMap.from_indices(lm_idx)}, masks={k: _t(v, dtype) for k, v in masks.items()},
        name=f"ICT-FaceKit ({region})", unit="cm",
        license=lic.read_text() if lic.exists()
        else "ICT-FaceKit: MIT License, Copyright (c) 2020 USC Institute for Creative Technologies",
        source=str(folder))


# ------------------------------------------------------------------------------------------ BFM
def _bfm_common(mean_mm, faces, shape_pc, shape_std_mm, tex_mu, tex_pc, tex_std, exp_pc, exp_std_mm,
                name, source, dtype, landmarks):
    V = mean_mm.size // 3
    mean = mean_mm.reshape(V, 3) / 10.0
    faces = orient_outward(mean, faces)

    def modes(pc):
        return None if pc is None else pc.T.reshape(-1, V, 3)

    tex_scale = 255.0 if tex_mu is not None and tex_mu.max() > 1.5 else 1.0
    lm = landmarks if landmarks is not None else transfer_ibug68(mean, faces)
    lm_pos = lm.apply(torch.as_tensor(mean)[None])[0].numpy()
    masks = masks_from_ibug68(mean, lm_pos)
    return FaceModel(
        mean=_t(mean, dtype), faces=_t(faces, torch.long),
        identity_basis=_t(modes(shape_pc), dtype), identity_std=_t(shape_std_mm / 10.0, dtype),
        expression_basis=_t(modes(exp_pc), dtype),
        expression_std=_t(None if exp_std_mm is None else exp_std_mm / 10.0, dtype),
        albedo_mean=_t(None if tex_mu is None else tex_mu.reshape(V, 3) / tex_scale, dtype),
        albedo_basis=_t(modes(tex_pc), dtype), albedo_std=_t(None if tex_std is None else tex_std / tex_scale, dtype),
        landmark_maps={"ibug68": lm}, masks={k: _t(v, dtype) for k, v in masks.items()},
        name=name, unit="cm", license="Basel Face Model: non-commercial research licence of the University of Basel; "
        "not redistributable (https://faces.dmi.unibas.ch/bfm/)", source=source)


def load_bfm2009(path, dtype=torch.float32, landmarks: LandmarkMap | None = None) -> FaceModel:
    """Basel Face Model 2009 ``01_MorphableModel.mat`` (``shapeMU`` (3V, 1) mm, ``shapePC``
    (3V, K) orthonormal, ``shapeEV`` (K, 1) standard deviations in mm, ``texMU``/``texPC``/``texEV``
    in 0..255, ``tl`` (F, 3) 1-based). Converted to cm and albedo in [0, 1]; no expressions."""
    path = Path(path)
    if not path.exists():
        raise _missing(path, "bfm2009")
    import h5py
    import scipy.io
    try:
        if h5py.is_hdf5(path):  # MATLAB v7.3 files are HDF5 (arrays stored transposed)
            with h5py.File(path, "r") as f:
                d = {k: np.asarray(f[k]).T for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        else:
            d = scipy.io.loadmat(str(path))
    except Exception as err:
        raise ModelFileError(f"{path}: cannot read the BFM 2009 .mat file ({err}); truncated or corrupt?") from None
    need = ["shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl"]
    missing = [k for k in need if k not in d]
    if missing:
        raise ModelFileError(f"{path}: not a BFM 2009 model, missing variables {missing}")
    mu = np.asarray(d["shapeMU"], np.float64).ravel()
    pc = np.asarray(d["shapePC"], np.float64)
    if pc.shape[0] != mu.size:
        raise ModelFileError(f"{path}: shapePC has {pc.shape[0]} rows, shapeMU {mu.size}")
    faces = np.asarray(d["tl"], np.int64) - 1
    return _bfm_common(mu, faces, pc, np.asarray(d["shapeEV"], np.float64).ravel(),
                       np.asarray(d["texMU"], np.float64).ravel(), np.asarray(d["texPC"], np.float64),
                       np.asarray(d["texEV"], np.float64).ravel(), None, None, "BFM 2009", str(path), dtype, landmarks)


def load_bfm2017(path, dtype=torch.float32, landmarks: LandmarkMap | None = None) -> FaceModel:
    """Basel Face Model 2017 ``.h5`` (``shape/model/{mean,pcaBasis,pcaVariance}``,
    ``color/model/...``, ``expression/model/...``, ``shape/representer/cells`` (3, F)); mm -> cm,
    variances -> standard deviations."""
    path = Path(path)
    if not path.exists():
        raise _missing(path, "bfm2017")
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ModelFileError(f"{path}: cannot open the BFM 2017 .h5 file ({err}); truncated or corrupt?") from None
    with f:
        try:
            def part(name):
                if name not in f:
                    return None, None, None
                g = f[name]["model"]
                return (np.asarray(g["mean"], np.float64), np.asarray(g["pcaBasis"], np.float64),
                        np.sqrt(np.clip(np.asarray(g["pcaVariance"], np.float64), 0, None)))
            smu, spc, sstd = part("shape")
            if smu is None:
                raise KeyError("shape")
            cmu, cpc, cstd = part("color")
            emu, epc, estd = part("expression")
            faces = np.asarray(f["shape/representer/cells"], np.int64).T
        except KeyError as err:
            raise ModelFileError(f"{path}: not a BFM 2017 model, missing group {err}") from None
    if emu is not None:
        smu = smu + emu  # the expression model's mean is a delta (zero in the released files)
    return _bfm_common(smu, faces, spc, sstd, cmu, cpc, cstd, epc, estd, "BFM 2017", str(path), dtype, landmarks)


# ------------------------------------------------------------------------------------------ FLAME
class _ChumpyStub:
    """Stands in for chumpy objects while unpickling FLAME files without chumpy installed."""

    def __init__(self, *args, **kwargs):
        self.__dict__["_args"] = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], (dict, type(None))):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict, slots) state
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def array(self):
        """The NumPy array this chumpy object holds (its ``x`` / ``a`` state)."""
        for key in ("x", "a", "_state"):
            if key in self.__dict__:
                v = self.__dict__[key]
                return v.array() if isinstance(v, _ChumpyStub) else np.asarray(v)
        raise ModelFileError("a chumpy object in the FLAME file holds no array")


class _FlameUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split(".")[0] == "chumpy":
            return _ChumpyStub
        return super().find_class(module, name)


def _arr(x):
    if isinstance(x, _ChumpyStub):
        return x.array()
    if hasattr(x, "toarray"):
        return x.toarray()
    return np.asarray(x)


def load_flame(path, dtype=torch.float32, n_shape: int = 300, n_expression: int = 100,
               landmarks: LandmarkMap | None = None) -> FaceModel:
    """FLAME 2020 / 2023 ``generic_model.pkl`` (latin-1 pickle; chumpy is not needed).

    ``v_template`` (5023, 3) m, ``f``, ``shapedirs`` (5023, 3, 300 + 100) (shape then
    expression, coefficients ~ N(0, 1)), ``posedirs`` (5023, 3, 36), ``J_regressor`` (5, 5023),
    ``weights`` (5023, 5), ``kintree_table`` (2, 5). Converted to cm; joints (global, neck, jaw,
    eye_left, eye_right) are posed through :class:`LinearBlendSkinning` by
    ``model.shape(identity, expression, pose)`` with ``pose`` (B, 15) axis-angle.
    """
    path = Path(path)
    if not path.exists():
        raise _missing(path, "flame")
    try:
        with open(path, "rb") as fh:
            d = _FlameUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as err:
        raise ModelFileError(f"{path}: cannot read the FLAME pickle ({err.__class__.__name__}: {err}); "
                             "truncated or not a FLAME generic_model.pkl") from None
    need = ["v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table"]
    if not isinstance(d, dict) or any(k not in d for k in need):
        raise ModelFileError(f"{path}: not a FLAME model, expected keys {need}")
    v = _arr(d["v_template"]).astype(np.float64) * 100.0
    V = len(v)
    sd = _arr(d["shapedirs"]).astype(np.float64) * 100.0
    if sd.shape[:2] != (V, 3):
        raise ModelFileError(f"{path}: shapedirs has shape {sd.shape}, expected ({V}, 3, K)")
    n_total = sd.shape[2]
    n_exp_file = 100 if n_total > 100 else 0
    n_shape = min(n_shape, n_total - n_exp_file)
    n_expression = min(n_expression, n_exp_file)
    shape_dirs = np.moveaxis(sd[:, :, :n_shape], 2, 0)
    exp_dirs = np.moveaxis(sd[:, :, n_total - n_exp_file:n_total - n_exp_file + n_expression], 2, 0)
    pd = _arr(d["posedirs"]).astype(np.float64) * 100.0
    pd = np.moveaxis(pd.reshape(V, 3, -1), 2, 0)
    kt = _arr(d["kintree_table"]).astype(np.int64)
    J = kt.shape[1]
    id_to_col = {int(kt[1, i]): i for i in range(J)}
    parents = np.array([-1 if i == 0 or int(kt[0, i]) not in id_to_col else id_to_col[int(kt[0, i])] for i in range(J)])
    names = ["global", "neck", "jaw", "eye_left", "eye_right"][:J] + [f"joint{k}" for k in range(5, J)]
    lbs = LinearBlendSkinning(names, torch.as_tensor(parents), _t(_arr(d["J_regressor"]), dtype),
                              _t(_arr(d["weights"]), dtype), _t(pd, dtype))
    faces = orient_outward(v, _arr(d["f"]).astype(np.int64))
    lm = landmarks if landmarks is not None else transfer_ibug68(v, faces)
    lm_pos = lm.apply(torch.as_tensor(v)[None])[0].numpy()
    masks = masks_from_ibug68(v, lm_pos)
    return FaceModel(
        mean=_t(v, dtype), faces=_t(faces, torch.long), identity_basis=_t(shape_dirs, dtype),
        identity_std=torch.ones(n_shape, dtype=dtype), expression_basis=_t(exp_dirs, dtype),
        expression_std=torch.ones(n_expression, dtype=dtype), landmark_maps={"ibug68": lm},
        masks={k: _t(m, dtype) for k, m in masks.items()}, lbs=lbs, name="FLAME", unit="cm",
        license="FLAME: non-commercial scientific research licence of the Max Planck Institute for Intelligent "
                "Systems; not redistributable (https://flame.is.tue.mpg.de/)", source=str(path))


# ------------------------------------------------------------------------------------------ dispatch
def load_model(name_or_path="default", *, dtype=torch.float32, device=None, **options) -> FaceModel:
    """Load a face model by name or path.

    ``"default"``: the shipped model; ``"ict"`` needs ``path=`` (or ``$FACERIG_ICT``) or use the
    folder path directly; paths: an ICT ``FaceXModel`` folder, ``*.mat`` (BFM 2009), ``*.h5``
    (BFM 2017), ``*.pkl`` (FLAME), ``*.npz`` (facerig format). ``options`` go to the specific
    loader (e.g. ``region="head"`` for ICT). The model is moved to ``device`` / ``dtype``.
    """
    if isinstance(name_or_path, FaceModel):
        model = name_or_path
    else:
        key = str(name_or_path)
        low = key.lower()
        if low == "default":
            model = load_default(dtype)
        elif low in ("ict", "ict-facekit"):
            p = options.pop("path", None) or os.environ.get("FACERIG_ICT")
            if not p:
                raise ModelFileError("the ICT-FaceKit model is not shipped: pass the path of your FaceXModel folder "
                                     "(or set $FACERIG_ICT). " + WHERE_TO_GET["ict"])
            model = load_ict(p, dtype=dtype, **options)
        elif low in ("bfm", "bfm2009", "bfm2017", "flame"):
            kind = "bfm2009" if low == "bfm" else low
            raise ModelFileError(f"{name_or_path} cannot be shipped with facerig: pass the path of the model file. "
                                 + WHERE_TO_GET[kind])
        else:
            path = Path(key).expanduser()
            suffix = path.suffix.lower()
            if path.is_dir() or suffix == ".json":
                model = load_ict(path, dtype=dtype, **options)
            elif suffix == ".mat":
                model = load_bfm2009(path, dtype=dtype, **options)
            elif suffix in (".h5", ".hdf5"):
                model = load_bfm2017(path, dtype=dtype, **options)
            elif suffix == ".pkl":
                model = load_flame(path, dtype=dtype, **options)
            elif suffix == ".npz":
                model = load_npz(path, dtype=dtype)
            elif not path.exists():
                raise ModelFileError(f"no model named {key!r} and no such file; use 'default', an ICT-FaceKit folder, "
                                     "a BFM .mat/.h5, a FLAME .pkl or a facerig .npz")
            else:
                raise ModelFileError(f"{path}: unknown model format {suffix!r}; "
                                     "expected a folder, .mat, .h5, .pkl or .npz")
    if device is not None or model.dtype != dtype:
        model = model.to(device=device, dtype=dtype)
    return model

