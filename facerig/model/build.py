"""Building facerig's default face model (``assets/default_model.npz``) from permissively licensed
data: :func:`build_default_model` (run by ``tools/build_default_model.py``, which documents the steps).

Inputs (:data:`INPUTS`, under a data folder such as the shared ``../shared/data``; never copied
into the repository): MediaPipe's canonical face mesh (Apache-2.0) and ICT-FaceKit Light (MIT).

Pieces: :func:`feature_correspondences` (27 facial feature points on the canonical mesh and their
ICT iBUG-68 counterparts), :func:`register_nonrigid` (Laplacian-regularised closest-point ICP),
:func:`region_masks` and :func:`build_albedo`, :func:`build_detail` (the detail level: the ICT
surface at the registered mesh's edge midpoints), :func:`contour_self_check` (the iBUG-68 map
against MediaPipe's contour sets). Lengths in cm; the model frame is x to the subject's left, y up,
z out of the face.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import trimesh

from facerig.model.face_model import FaceModel
from facerig.model.geometry import SurfaceQuery, barycentric_coordinates, umeyama
from facerig.model.loaders import read_obj, triangulate_polygons

__all__ = ["build_default_model", "missing_inputs", "INPUTS", "feature_correspondences", "contour_loops",
           "contour_self_check", "register_nonrigid", "uniform_laplacian", "region_masks", "build_albedo",
           "build_detail", "obj_v_up", "FACE_AREA", "DETAIL_MAX_STRAY", "SCHEDULE"]

INPUTS = ("ict-facekit/ict_face_area_morphs.npz", "ict-facekit/generic_neutral_mesh.obj",
          "ict-facekit/vertex_indices.json", "mediapipe/canonical_face_model.obj")
"""The input files, relative to the data folder."""

FACE_AREA = 9409
# Non-rigid registration stages: (Laplacian regulariser weight alpha, feature-point weight beta per
# feature), 6 closest-point iterations each. (Earlier builds guided the registration by 51 points at
# half these betas; the 27 feature points get twice the weight each, about the same total.)
DETAIL_MAX_STRAY = 0.3  # cm: see step 7
SCHEDULE = [(50.0, 10.0), (20.0, 4.0), (8.0, 2.0), (3.0, 0.6), (1.0, 0.2), (0.3, 0.0), (0.1, 0.0)]


def contour_loops(conns):
    """Order a set of edges (pairs of vertex ids, e.g. a MediaPipe ``FACEMESH_*`` set) into chains:
    open chains first, each walked from one of its ends, then closed loops. Returns a list of vertex-id
    lists. Deterministic (does not depend on the iteration order of the input set)."""
    adj = {}
    for a, b in sorted(conns):
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    loops, seen = [], set()
    # open chains first, from one of their ends (vertices with one neighbour), then closed loops
    for start in sorted(adj, key=lambda v: (len(adj[v]) != 1, v)):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [v for v in adj[cur] if v != prev and v not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    return loops


def feature_correspondences(cv: np.ndarray):
    """Facial feature points on the MediaPipe canonical mesh and on the ICT face, from permissive sources only.

    The canonical side of each feature is derived from MediaPipe's Face Mesh contour index sets
    (``mediapipe.python.solutions.face_mesh_connections``, Apache-2.0, shipped in the wheel) and the
    canonical vertex positions ``cv`` (468, 3) (cm; x toward the subject's left, y up, z out of the
    face): eye / mouth corners are the extreme-x vertices of an eye contour / lip loop, eyelid top and
    bottom its extreme-y vertices, lip midline points the loop vertices nearest x = 0 above / below
    the loop's centre, brow ends and centre from the upper chain of a brow contour, the nose tip the
    most forward vertex, the nose bridge top / nose base the highest / lowest vertex of the nose
    contour. MediaPipe's ``LEFT`` / ``RIGHT`` sets are the subject's left / right, like iBUG's
    (36-41 = subject's right eye, 17-21 = subject's right brow).

    The ICT side is a set of iBUG-68 landmark indices (into ICT's ``idx_to_landmark_verts``) that
    mark the same feature. Returns a list of ``(name, canonical vertex ids, iBUG ids)``; each side's
    point is the mean of its listed points.
    """
    from mediapipe.python.solutions import face_mesh_connections as fmc

    def verts(conns):
        return np.array(sorted({v for e in conns for v in e}))

    def ext(ids, axis, sign):
        return [int(ids[np.argmax(sign * cv[ids, axis])])]

    def midline(ids, sign):
        half = ids[sign * (cv[ids, 1] - cv[ids, 1].mean()) > 0]
        return [int(half[np.argmin(np.abs(cv[half, 0]))])]

    out = []
    for side, conns, (outer, inner, up, low) in (
            ("right", fmc.FACEMESH_RIGHT_EYE, (36, 39, (37, 38), (40, 41))),
            ("left", fmc.FACEMESH_LEFT_EYE, (45, 42, (43, 44), (46, 47)))):
        ids = verts(conns)
        s = -1 if side == "right" else 1  # x points to the subject's left
        out += [(f"{side} eye outer corner", ext(ids, 0, s), [outer]),
                (f"{side} eye inner corner", ext(ids, 0, -s), [inner]),
                (f"{side} upper eyelid top", ext(ids, 1, 1), list(up)),
                (f"{side} lower eyelid bottom", ext(ids, 1, -1), list(low)),
                (f"{side} eye centre", ids.tolist(), list(range(min(outer, inner), min(outer, inner) + 6)))]
    for side, conns, (outer, inner) in (("right", fmc.FACEMESH_RIGHT_EYEBROW, (17, 21)),
                                        ("left", fmc.FACEMESH_LEFT_EYEBROW, (26, 22))):
        # the brow contour is two open chains: the upper one is the edge iBUG's brow points follow
        ids = np.array(max(contour_loops(conns), key=lambda lp: cv[lp, 1].mean()))
        s = -1 if side == "right" else 1
        out += [(f"{side} brow outer end", ext(ids, 0, s), [outer]),
                (f"{side} brow inner end", ext(ids, 0, -s), [inner]),
                (f"{side} brow centre", ids.tolist(), list(range(min(outer, inner), min(outer, inner) + 5)))]
    loops = [np.array(lp) for lp in contour_loops(fmc.FACEMESH_LIPS)]
    lo, li = sorted(loops, key=lambda lp: np.ptp(cv[lp, 0]), reverse=True)
    out += [("right mouth corner", ext(lo, 0, -1), [48]), ("left mouth corner", ext(lo, 0, 1), [54]),
            ("upper lip top (midline)", midline(lo, 1), [51]), ("lower lip bottom (midline)", midline(lo, -1), [57]),
            ("right inner mouth corner", ext(li, 0, -1), [60]), ("left inner mouth corner", ext(li, 0, 1), [64]),
            ("upper lip inner (midline)", midline(li, 1), [62]), ("lower lip inner (midline)", midline(li, -1), [66])]
    out += [("nose tip", [int(np.argmax(cv[:, 2]))], [30])]
    if hasattr(fmc, "FACEMESH_NOSE"):  # mediapipe >= 0.10
        nose = verts(fmc.FACEMESH_NOSE)
        out += [("nose bridge top", ext(nose, 1, 1), [27]), ("nose base (midline)", ext(nose, 1, -1), [33])]
    return out


def contour_self_check(derived: np.ndarray, cv: np.ndarray):
    """For each iBUG-68 group, which derived vertices lie on the MediaPipe contour of the same feature.

    Returns rows ``(group, start, stop, contour name, on (stop - start,) bool)``. A sound check of the
    registration: the eye / lip / brow / nose landmarks of ICT should land on Face Mesh's own contours
    of the same features (Apache-2.0 index sets). The contours define the 27 feature points that guide
    the registration (19 of the 51 inner iBUG points are such single-vertex features), but they play
    no part in the nearest-vertex choice: the other 32 inner points land on their contour or not by
    the registration alone.
    """
    from mediapipe.python.solutions import face_mesh_connections as fmc

    def verts(conns):
        return {v for e in conns for v in e}

    lips = sorted(contour_loops(fmc.FACEMESH_LIPS), key=lambda lp: np.ptp(cv[lp, 0]), reverse=True)
    rows = [("jaw", 0, 17, "FACE_OVAL", verts(fmc.FACEMESH_FACE_OVAL)),
            ("right brow", 17, 22, "RIGHT_EYEBROW", verts(fmc.FACEMESH_RIGHT_EYEBROW)),
            ("left brow", 22, 27, "LEFT_EYEBROW", verts(fmc.FACEMESH_LEFT_EYEBROW))]
    if hasattr(fmc, "FACEMESH_NOSE"):
        rows.append(("nose", 27, 36, "NOSE", verts(fmc.FACEMESH_NOSE)))
    rows += [("right eye", 36, 42, "RIGHT_EYE", verts(fmc.FACEMESH_RIGHT_EYE)),
             ("left eye", 42, 48, "LEFT_EYE", verts(fmc.FACEMESH_LEFT_EYE)),
             ("outer lips", 48, 60, "LIPS (outer loop)", set(lips[0])),
             ("inner lips", 60, 68, "LIPS (inner loop)", set(lips[1]))]
    return [(g, a, b, name, np.isin(derived[a:b], sorted(vs))) for g, a, b, name, vs in rows]


def uniform_laplacian(faces: np.ndarray, n: int) -> sp.csr_matrix:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.unique(np.sort(e, 1), axis=0)
    A = sp.coo_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n)).tocsr()
    deg = np.asarray(A.sum(1)).ravel()
    return (sp.eye(n) - sp.diags(1 / deg) @ A).tocsr()


def register_nonrigid(canon_v, canon_f, ict_mesh, ict_lm_pos, features, log):
    """Non-rigid ICP of the (similarity-aligned) canonical mesh onto the ICT surface.

    ``features``: ``feature_correspondences`` output; feature k pulls the mean of its canonical
    vertices toward the mean of its ICT landmark points (``ict_lm_pos`` (68, 3)) in the first stages.
    """
    n = len(canon_v)
    L = uniform_laplacian(canon_f, n)
    LtL = (L.T @ L).tocsr()
    x0 = canon_v.copy()
    x = canon_v.copy()
    # feature selection matrix (row k averages feature k's canonical vertices) and targets
    rows, cols, vals = [], [], []
    for r, (_name, canon_ids, _ibug_ids) in enumerate(features):
        for j in canon_ids:
            rows.append(r)
            cols.append(j)
            vals.append(1.0 / len(canon_ids))
    S = sp.coo_matrix((vals, (rows, cols)), shape=(len(features), n)).tocsr()
    T = np.stack([ict_lm_pos[ibug_ids].mean(0) for _name, _canon_ids, ibug_ids in features])
    for alpha, beta in SCHEDULE:
        for _ in range(6):
            closest, dist, _tri = ict_mesh(x)
            w = (dist < 2.0).astype(float)
            W = sp.diags(w)
            A = W + alpha * LtL + beta * (S.T @ S)
            rhs = W @ closest + alpha * (LtL @ x0) + beta * (S.T @ T)
            solve = spla.factorized(A.tocsc())
            x = np.stack([solve(rhs[:, c]) for c in range(3)], 1)
        closest, dist, _ = ict_mesh(x)
        log(f"  stage alpha={alpha:5.1f} beta={beta:4.1f}: distance to ICT surface mean {10 * dist.mean():.3f} mm, "
            f"max {10 * dist.max():.3f} mm")
    return x


def region_masks(uvs: np.ndarray, n: int):
    """Per-vertex region weights from MediaPipe's contour index sets (Face Mesh topology)."""
    from matplotlib.path import Path as MplPath
    from mediapipe.python.solutions import face_mesh_connections as fmc

    def inside(loop_vertices):
        poly = MplPath(uvs[loop_vertices])
        m = poly.contains_points(uvs, radius=1e-9)
        m[loop_vertices] = True
        return m

    lips_v = sorted({v for e in fmc.FACEMESH_LIPS for v in e})
    lips_loops = contour_loops(fmc.FACEMESH_LIPS)
    outer = max(lips_loops, key=lambda lp: MplPath(uvs[lp]).get_extents().width)
    lips = inside(outer) | np.isin(np.arange(n), lips_v)
    eyes = np.zeros(n, bool)
    for conns in (fmc.FACEMESH_LEFT_EYE, fmc.FACEMESH_RIGHT_EYE):
        for loop in contour_loops(conns):
            eyes |= inside(loop)
    brows = np.zeros(n, bool)
    for conns in (fmc.FACEMESH_LEFT_EYEBROW, fmc.FACEMESH_RIGHT_EYEBROW):
        vs = sorted({v for e in conns for v in e})
        brows[vs] = True
    skin = ~(eyes | brows)
    masks = {"skin": skin.astype(np.float32), "eyes": eyes.astype(np.float32),
             "lips": lips.astype(np.float32), "brows": brows.astype(np.float32)}
    def uv_area(loop):
        x, y = uvs[loop, 0], uvs[loop, 1]
        return abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2

    inner_lips = min(lips_loops, key=uv_area)  # the inner lip contour encloses the smaller area
    eye_contours = sorted({v for c in (fmc.FACEMESH_LEFT_EYE, fmc.FACEMESH_RIGHT_EYE) for e in c for v in e})
    return masks, inner_lips, eye_contours


def build_albedo(uvs: np.ndarray, masks: dict):
    """A hand-designed, smooth per-vertex albedo model (NOT learnt from photographs).

    mean: a medium skin tone (sRGB-like reflectance 0.78, 0.57, 0.47), lips redder, brows darker.
    basis: orthonormal (over V*3) products of a colour direction (skin-tone brightness, red vs
    yellow, the remaining direction) and a spatial function (constant, four low-frequency
    cosines over the UV square, lips indicator, brows indicator); the standard deviations are
    chosen so that sampled faces cover light to dark skin with mild, smooth variation.
    """
    V = len(uvs)
    skin = np.array([0.78, 0.57, 0.47])
    mean = np.tile(skin, (V, 1))
    mean[masks["lips"] > 0] = [0.70, 0.42, 0.40]
    mean[masks["brows"] > 0] = 0.5 * skin + 0.5 * np.array([0.30, 0.22, 0.18])
    c1 = skin / np.linalg.norm(skin)
    c2 = np.array([1.0, -0.5, -0.5])
    c2 -= c2 @ c1 * c1
    c2 /= np.linalg.norm(c2)
    c3 = np.cross(c1, c2)
    u, v = uvs[:, 0], uvs[:, 1]
    spatial = {"const": np.ones(V), "cos_u": np.cos(np.pi * u), "cos_v": np.cos(np.pi * v),
               "cos_uv": np.cos(np.pi * u) * np.cos(np.pi * v), "cos_2v": np.cos(2 * np.pi * v)}
    per_vertex_std = {"const": (0.12, 0.04, 0.02), "cos_u": (0.02, 0.01, 0.005), "cos_v": (0.03, 0.015, 0.005),
                      "cos_uv": (0.015, 0.008, 0.004), "cos_2v": (0.015, 0.008, 0.004),
                      "lips": (0.06, 0.05, 0.01), "brows": (0.12, 0.02, 0.01)}
    spatial["lips"] = masks["lips"].astype(float)
    spatial["brows"] = masks["brows"].astype(float)
    basis, std, names = [], [], []
    for key, phi in spatial.items():
        for ci, (c, s) in enumerate(zip((c1, c2, c3), per_vertex_std[key])):
            b = phi[:, None] * c[None]
            rms = np.sqrt((b ** 2).sum(1).mean())  # per-vertex RMS of the unnormalised mode
            norm = np.linalg.norm(b)
            basis.append(b / norm)
            std.append(s * norm / rms)  # a 1-sigma coefficient changes colours by ~s (RMS)
            names.append(f"{key}_c{ci + 1}")
    # orthonormalise (Gram-Schmidt keeps each mode's leading meaning; stds are kept)
    B = np.stack([b.ravel() for b in basis], 1)
    Q, _ = np.linalg.qr(B)
    Q *= np.sign(np.sum(Q * B, 0))[None]
    return mean.astype(np.float32), Q.T.reshape(-1, V, 3).astype(np.float32), np.asarray(std, np.float32), names


def build_detail(surf_v, cf, ict_mesh, ict_f, neutral, id_raw, exp_raw, R, id_pinv, id_basis, exp_deltas, face_groups, log):
    """Step 7: offsets of the detail level's new vertices (one per edge, in
    ``FaceModel.midpoint_topology`` order) from their edge midpoints, in the model frame (cm):
    ``{"mean": (E, 3), "identity": (K, E, 3), "expression": (53, E, 3)}``.

    ``surf_v``: the coarse vertices embedded on the ICT surface (ICT frame); ``id_raw`` / ``exp_raw``: ICT's identity
    / expression deltas (N, 9409+, 3); ``id_pinv``: pseudo-inverse of the 468-vertex identity
    deltas (as columns), so ``id_basis = (id_pinv-rotation of the deltas)``: the same linear map is
    applied to the samples at the new vertices."""
    V = len(surf_v)
    edges = FaceModel.midpoint_topology(torch.as_tensor(cf), V)[0].numpy()  # (E, 2)
    a, b = edges[:, 0], edges[:, 1]
    mid = 0.5 * (surf_v[a] + surf_v[b])
    closest, _dist, tri = ict_mesh(mid)
    bary = barycentric_coordinates(closest, neutral[ict_f[tri]])
    bary = np.clip(bary, 0, None)
    bary /= bary.sum(1, keepdims=True)
    emb = ict_f[tri]

    def samp(x):  # (..., N, 3) -> (..., E, 3), into the model frame's axes (R: model -> ICT rotation)
        return (x[..., emb, :] * bary[..., None]).sum(-2) @ R

    mean_c = (neutral[emb] * bary[..., None]).sum(1)  # ICT frame; offsets are frame-free up to R
    mean_off = (mean_c - mid) @ R
    # identity: the coarse basis is id_basis = T @ deltas(468) with T = id_basis_flat @ pinv(deltas)
    T = id_basis.reshape(len(id_basis), -1) @ id_pinv.T  # (K, 100)
    id_fine = np.tensordot(T, samp(id_raw), 1)  # (K, E, 3)
    id_off = id_fine - 0.5 * (id_basis[:, a] + id_basis[:, b])
    exp_fine = samp(exp_raw)
    exp_off = exp_fine - 0.5 * (exp_deltas[:, a] + exp_deltas[:, b])
    # keep the midpoint where there is no ICT surface (mouth / eye closing triangles) or where the
    # embedding jumped across touching lips / eyelids (expression deltas unlike the endpoints')
    closing = face_groups["mouth_opening"] | face_groups["eye_openings"]
    open_edges = {tuple(sorted(e)) for f in cf[~closing] for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    inside = np.array([(int(x), int(y)) not in open_edges for x, y in edges])
    stray = np.abs(exp_off).max(axis=(0, 2)) > DETAIL_MAX_STRAY
    keep = inside | stray
    for off in (mean_off, id_off.transpose(1, 0, 2), exp_off.transpose(1, 0, 2)):
        off[keep] = 0.0
    d = np.linalg.norm(mean_off, axis=1) * 10
    log(f"detail level: {len(edges)} new vertices (468 -> {V + len(edges)}); offset from the edge midpoint "
        f"mean {d.mean():.3f} mm, max {d.max():.2f} mm; kept at the midpoint: {int(inside.sum())} edges of the "
        f"mouth / eye closing triangles, {int((stray & ~inside).sum())} whose embedding strays (> {DETAIL_MAX_STRAY * 10:g} mm)")
    return {"mean": mean_off, "identity": id_off, "expression": exp_off}


def missing_inputs(data) -> list:
    """The :data:`INPUTS` absent from the data folder ``data`` (paths), in order."""
    return [Path(data) / p for p in INPUTS if not (Path(data) / p).exists()]


def build_default_model(data, identity_modes: int = 100, samples: int = 20, log=print) -> dict:
    """Build the default face model from the data folder ``data`` (see :data:`INPUTS`).

    Prints (through ``log``) the registration residuals, the landmark-map self-check and the
    transfer-error tables (mm; ``samples`` random identities). Deterministic.

    Returns:
        the arrays of the model file (:func:`facerig.model.load_npz` reads them; save with
        ``np.savez_compressed``).
    Raises:
        FileNotFoundError: an input is missing (:func:`missing_inputs`).
    """
    missing = missing_inputs(data)
    if missing:
        raise FileNotFoundError(f"data: missing input {missing[0]} (see facerig.model.build.INPUTS)")
    ict_dir, mp_dir = Path(data) / "ict-facekit", Path(data) / "mediapipe"

    canon = trimesh.load(mp_dir / "canonical_face_model.obj", process=False)
    cv, cf = np.asarray(canon.vertices, float), np.asarray(canon.faces, np.int64)
    cuv = np.asarray(canon.visual.uv, float)
    # the OBJ stores v pointing up (OBJ convention); facerig uses glTF's top-left origin
    uvs = np.stack([cuv[:, 0], 1.0 - cuv[:, 1]], 1) if obj_v_up(mp_dir / "canonical_face_model.obj") else cuv
    z = np.load(ict_dir / "ict_face_area_morphs.npz")
    neutral = z["neutral"].astype(float)
    idx_json = json.loads((ict_dir / "vertex_indices.json").read_text())
    ict_lm = np.asarray(idx_json["idx_to_landmark_verts"])
    arkit = list(idx_json["expressions"])
    _, polys, _, _ = read_obj(ict_dir / "generic_neutral_mesh.obj", polygons=True)
    ict_f, _ = triangulate_polygons(polys, polys, FACE_AREA)
    ict_mesh = SurfaceQuery(neutral, ict_f)
    log(f"canonical mesh: {len(cv)} vertices, {len(cf)} triangles; ICT face area: {len(neutral)} vertices, "
        f"{len(ict_f)} triangles")

    # 1. similarity from facial feature points (MediaPipe contour sets <-> ICT iBUG landmark vertices)
    features = feature_correspondences(cv)
    feat_src = np.stack([cv[c].mean(0) for _n, c, _l in features])
    feat_dst = np.stack([neutral[ict_lm[ls]].mean(0) for _n, _c, ls in features])
    s, R, t = umeyama(feat_src, feat_dst)
    log(f"similarity canonical -> ICT from {len(features)} feature points: scale {s:.4f}, rotation angle "
        f"{np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))):.2f} deg, translation {np.round(t, 3)} cm")
    aligned = cv @ (s * R).T + t
    res0 = np.linalg.norm(feat_src @ (s * R).T + t - feat_dst, axis=1)
    log(f"  residual after similarity (mm): RMS {10 * np.sqrt((res0 ** 2).mean()):.2f}, max {10 * res0.max():.2f}")
    log(f"  {'feature':28s} {'canonical vertices':>22s} {'ICT iBUG-68 points':>22s} {'residual':>9s}")
    for (name, c, ls), r in zip(features, res0):
        cs = str(c) if len(c) <= 3 else f"{len(c)}-vertex contour"
        log(f"  {name:28s} {cs:>22s} {str(ls) if len(ls) <= 3 else f'{ls[0]}-{ls[-1]}':>22s} {10 * r:9.2f}")

    # 2. non-rigid registration
    log("non-rigid registration (Laplacian-regularised closest-point ICP):")
    reg = register_nonrigid(aligned, cf, ict_mesh, neutral[ict_lm], features, log)

    # 3. embedding on the ICT surface
    closest, dist, tri = ict_mesh(reg)
    bary = barycentric_coordinates(closest, neutral[ict_f[tri]])
    emb_f = ict_f[tri]

    def transfer(shapes):  # (..., 9409, 3) -> (..., 468, 3)
        return (shapes[..., emb_f, :] * bary[..., None]).sum(-2)

    # 4. the model frame: inverse rigid part of the similarity (no scaling: keep ICT's size)
    def to_model(points):
        return (points - t) @ R

    def vec_to_model(vecs):
        return vecs @ R

    mean = to_model(transfer(neutral))
    id_deltas = vec_to_model(transfer(z["identity"].astype(float) - neutral))  # (100, 468, 3)
    exp_names_all = list(z["expression_names"])
    order = [exp_names_all.index(n) for n in arkit]
    exp_deltas = vec_to_model(transfer(z["expression"][order].astype(float) - neutral))
    A = id_deltas.reshape(len(id_deltas), -1).T
    U, S, _ = np.linalg.svd(A, full_matrices=False)
    K = min(identity_modes, len(S))
    id_basis = U[:, :K].T.reshape(K, -1, 3)
    id_std = S[:K]
    var = S ** 2 / (S ** 2).sum()
    log(f"identity PCA: kept {K} modes; variance explained by 50/80/{K}: "
        f"{100 * var[:50].sum():.2f}% / {100 * var[:80].sum():.2f}% / {100 * var[:K].sum():.2f}%")

    # 5. iBUG-68 map: nearest canonical vertex (embedded positions) to each ICT landmark vertex
    # The distance is measured in the neutral AND in the jawOpen shape: in ICT's neutral the
    # upper and lower inner lips touch, so the neutral alone cannot tell them apart.
    emb_pos = transfer(neutral)
    jaw_open = z["expression"][exp_names_all.index("jawOpen")].astype(float)
    emb_open = transfer(jaw_open)
    d_all = np.linalg.norm(emb_pos[None] - neutral[ict_lm][:, None], axis=-1)  # (68, 468)
    d_sel = d_all + np.linalg.norm(emb_open[None] - jaw_open[ict_lm][:, None], axis=-1)
    derived = d_sel.argmin(1)
    log("iBUG-68 map: nearest canonical vertex to each ICT landmark vertex; self-check against MediaPipe's contour "
        "sets\n  (is the derived vertex on the Face Mesh contour that outlines the same feature?)")
    gaps = d_all[np.arange(68), derived]
    log(f"  {'iBUG points':18s} {'ICT lm -> vertex (mm) mean/max':>31s}  {'on MediaPipe contour':26s}")
    for g, a, b, contour_name, on in contour_self_check(derived, cv):
        log(f"  {g + f' {a}-{b - 1}':18s} {10 * gaps[a:b].mean():>20.2f} / {10 * gaps[a:b].max():6.2f}  "
            f"{int(on.sum()):2d} / {b - a:<2d} {contour_name}")
    single = [(name, c[0], ls[0]) for name, c, ls in features if len(c) == 1 and len(ls) == 1]
    same = [name for name, c, l in single if derived[l] == c]
    differ = [name for name, _c, _l in single if name not in same]
    log(f"  single-vertex feature points that the derived map reproduces: {len(same)} / {len(single)}"
        + (f" (differ: {', '.join(differ)})" if differ else ""))
    if len(set(derived.tolist())) != 68:
        log("  WARNING: the derived map has duplicate vertices")
    log("  MEDIAPIPE468_TO_IBUG68 = " + repr(derived.tolist()))

    # 6. masks, albedo
    masks, inner_lips, eye_contours = region_masks(uvs, len(cv))
    face_groups = {"mouth_opening": np.isin(cf, inner_lips).all(1), "eye_openings": np.isin(cf, eye_contours).all(1)}
    log(f"triangles closing the mouth: {face_groups['mouth_opening'].sum()}, over the eyes: {face_groups['eye_openings'].sum()}")
    alb_mean, alb_basis, alb_std, alb_names = build_albedo(uvs, masks)

    # 7. detail level: the ICT surface at the registered mesh's edge midpoints
    detail = build_detail(emb_pos, cf, ict_mesh, ict_f, neutral, z["identity"].astype(float) - neutral,
                          z["expression"][order].astype(float) - neutral, R,
                          np.linalg.pinv(id_deltas.reshape(len(id_deltas), -1).T), id_basis, exp_deltas, face_groups, log)

    # ---------------------------------------------------------------- transfer-error tables
    # (a) at the canonical vertices: ICT shape sampled at the embedding vs the model's shape
    # (b) at ICT vertices covered by the canonical mesh: ICT vertex vs the model surface point
    #     embedded at the same place in the neutral (surface approximation by 898 triangles)
    model_mesh = trimesh.Trimesh(to_model(emb_pos), cf, process=False)
    ict_model_frame = to_model(neutral)
    cp, cd, ctri = SurfaceQuery(model_mesh.vertices, cf)(ict_model_frame)
    # within 1 mm of the canonical surface in the neutral, not on the triangles that close the
    # mouth / cover the eyes (they stand for lips and eyelids that part: no ICT surface there)
    covered = (cd < 0.1) & ~face_groups["mouth_opening"][ctri] & ~face_groups["eye_openings"][ctri]
    cbary = barycentric_coordinates(cp[covered], model_mesh.vertices[cf[ctri[covered]]])
    cfaces = cf[ctri[covered]]
    cov_idx = np.nonzero(covered)[0]
    lm_in_ict = ict_lm

    def surf_err(model_shape, ict_shape_model_frame):
        p = (model_shape[cfaces] * cbary[..., None]).sum(1)
        return np.linalg.norm(p - ict_shape_model_frame[cov_idx], axis=1)

    # dense iBUG-68 map: jaw points (0-16) as barycentric points on the model surface (the canonical
    # mesh is coarse along the jaw: nearest vertices are 3-11 mm away, the surface < 1.2 mm)
    mean_q = SurfaceQuery(mean, cf)
    jp, jd, jtri = mean_q(to_model(neutral[ict_lm[:17]]))
    jbary = barycentric_coordinates(jp, mean[cf[jtri]])
    dense_ids = np.repeat(derived[:, None], 3, 1)
    dense_w = np.zeros((68, 3))
    dense_w[:, 0] = 1
    dense_ids[:17] = cf[jtri]
    dense_w[:17] = jbary
    log(f"dense iBUG-68 map: jaw points embedded on the surface, {10 * jd.mean():.2f} mm mean / {10 * jd.max():.2f} mm max "
        "from ICT's jaw landmark vertices")
    log("  IBUG68_JAW_BARYCENTRIC ids = " + repr(cf[jtri].tolist()))
    log("  IBUG68_JAW_BARYCENTRIC weights = " + repr(np.round(jbary, 6).tolist()))

    def lm_errors(model_shape, ict_m):
        e = np.linalg.norm(model_shape[derived] - ict_m[lm_in_ict], axis=1) * 10
        dense = (model_shape[dense_ids[:17]] * dense_w[:17, :, None]).sum(1)
        ej = np.linalg.norm(dense - ict_m[lm_in_ict[:17]], axis=1) * 10
        return [e[17:].mean(), e[17:].max(), e[:17].mean(), ej.mean(), ej.max()]

    rng = np.random.default_rng(0)
    log(f"\nTRANSFER ERROR (mm).\n(a) at the 468 model vertices: ICT shape at the embedded point vs the model's shape (PCA"
        f" truncation, storage);\n(b) at the {covered.sum()} ICT vertices within 1 mm of the model surface (neutral; not on the"
        f" triangles closing the mouth / eyes): ICT\n    vertex vs the model surface point embedded there (the"
        f" 898-triangle surface approximation);"
        f"\n(c) at the 68 iBUG landmarks: ICT landmark vertex vs model vertex MEDIAPIPE468_TO_IBUG68[l]: inner points 17-67"
        f" (mean, max),\n    jaw points 0-16 (mean), and jaw points of the dense (barycentric) map (mean, max).")
    hdr = (f"{'(a) max':>8s} {'(b) mean':>9s} {'(b) max':>8s} {'(c) inner':>9s} {'max':>6s} {'jaw':>6s} "
           f"{'dense jaw':>9s} {'max':>6s}")

    def fmt(r):
        return (f"{r[0]:8.4f} {r[1]:9.3f} {r[2]:8.3f} {r[3]:9.3f} {r[4]:6.2f} {r[5]:6.2f} {r[6]:9.3f} {r[7]:6.2f}")

    log(f"\nrandom identities (ICT coefficients ~ N(0, 1), neutral expression), {samples} samples:")
    log(f"  {'sample':>16s} " + hdr)
    rows = []
    for k in range(samples):
        c = rng.standard_normal(len(z["identity"]))
        ict_shape = neutral + np.tensordot(c, z["identity"].astype(float) - neutral, 1)
        ict_m = to_model(ict_shape)
        target = to_model(transfer(ict_shape))
        coeff = id_basis.reshape(K, -1) @ (target - mean).ravel()
        model_shape = mean + np.tensordot(coeff, id_basis, 1)
        ea = np.linalg.norm(model_shape - target, axis=1) * 10
        eb = surf_err(model_shape, ict_m) * 10
        rows.append([ea.max(), eb.mean(), eb.max()] + lm_errors(model_shape, ict_m))
        if k < 5:
            log(f"  {k:>16d} " + fmt(rows[-1]))
    log(f"  {'mean of ' + str(samples):>16s} " + fmt(np.mean(rows, 0)))
    # truncation: how many identity modes a user needs (same random identities, at the 468 vertices)
    trunc = {k: [] for k in (20, 50, 80, K)}
    rng_t = np.random.default_rng(0)
    for _ in range(samples):
        c = rng_t.standard_normal(len(z["identity"]))
        target = to_model(transfer(neutral + np.tensordot(c, z["identity"].astype(float) - neutral, 1)))
        coeff = id_basis.reshape(K, -1) @ (target - mean).ravel()
        for k in trunc:
            approx = mean + np.tensordot(coeff[:k], id_basis[:k], 1)
            trunc[k].append(np.linalg.norm(approx - target, axis=1) * 10)
    log("  identity modes kept -> error at the 468 vertices (mm), mean / max over the samples: " + ", ".join(
        f"{k}: {np.mean(v):.3f} / {np.max(v):.2f}" for k, v in trunc.items()))
    log("\nexpressions (each blendshape at weight 1 on the ICT neutral identity; 'disp' = largest displacement):")
    log(f"  {'expression':16s} {'disp':>6s} " + hdr)
    exp_rows = []
    for e, name in enumerate(arkit):
        ict_shape = z["expression"][order[e]].astype(float)
        ict_m = to_model(ict_shape)
        model_shape = mean + exp_deltas[e]
        target = to_model(transfer(ict_shape))
        ea = np.linalg.norm(model_shape - target, axis=1) * 10
        eb = surf_err(model_shape, ict_m) * 10
        disp = np.linalg.norm(exp_deltas[e], axis=1).max() * 10
        exp_rows.append([disp, ea.max(), eb.mean(), eb.max()] + lm_errors(model_shape, ict_m))
        log(f"  {name:16s} {disp:6.2f} " + fmt(exp_rows[-1][1:]))
    r = np.mean(exp_rows, 0)
    log(f"  {'mean':16s} {r[0]:6.2f} " + fmt(r[1:]))

    license_text = (
        "MIT (ICT-FaceKit geometry) + Apache-2.0 (MediaPipe canonical mesh topology and UVs)\n"
        "Geometry derived from ICT-FaceKit Light (Copyright (c) 2020 USC Institute for Creative Technologies,\n"
        "MIT License, reproduced below) on the MediaPipe canonical face mesh (Copyright Google LLC,\n"
        "Apache License 2.0). The albedo model is hand-designed by facerig (MIT). See facerig's NOTICE file.\n\n"
        + (ict_dir / "LICENSE").read_text())
    return dict(
        format_version=np.array(1), name=np.array("default"), unit=np.array("cm"),
        license=np.array(license_text),
        source=np.array("ICT-FaceKit Light identity/expression modes transferred onto the MediaPipe canonical "
                        "face mesh by tools/build_default_model.py"),
        mean=mean.astype(np.float32), faces=cf.astype(np.int32), uvs=uvs.astype(np.float32),
        identity_basis=id_basis.astype(np.float32), identity_std=id_std.astype(np.float32),
        expression_basis=exp_deltas.astype(np.float32), expression_std=np.full(len(arkit), 0.5, np.float32),
        expression_names=np.array(arkit), albedo_mean=alb_mean, albedo_basis=alb_basis, albedo_std=alb_std,
        albedo_names=np.array(alb_names), landmarks_ibug68=derived.astype(np.int32),
        landmarks_ibug68_dense=dense_ids.astype(np.int32), landmarks_ibug68_dense_weights=dense_w.astype(np.float32),
        **{f"mask_{k}": v for k, v in masks.items()},
        **{f"facegroup_{k}": v for k, v in face_groups.items()},
        **{f"detail_{k}": v.astype(np.float16) for k, v in detail.items()},
    )


def obj_v_up(path: Path) -> bool:
    """True: the OBJ's texture v axis points up (the chin has a smaller v than the forehead)."""
    canon = trimesh.load(path, process=False)
    uv = np.asarray(canon.visual.uv)
    return bool(uv[152, 1] < uv[10, 1])  # vertex 152 = chin, 10 = forehead top
