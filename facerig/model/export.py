"""Export meshes and blendshape rigs.

* :func:`export_mesh`: one mesh with vertex colours or a texture to ``.obj`` / ``.ply`` / ``.glb``
  (trimesh).
* :func:`export_rig_glb`: neutral mesh + named morph targets (+ optional per-frame weights and
  head-pose animation) to a glTF 2.0 binary ``.glb``, written directly (trimesh cannot write morph
  targets). Target names are in ``meshes[0].extras.targetNames`` (read by Blender and three.js).
* :func:`export_blendshapes_obj`: a folder of OBJ blendshapes (``neutral.obj``, ``<name>.obj``,
  optional ``weights.csv`` / ``pose.csv``).
* :func:`export_model_rig`: a :class:`FaceModel` (optionally with identity coefficients) as a rig.

Frames and units: facerig's model frame (x to the subject's left, y up, z toward the viewer) is
glTF's frame (+y up, +z front), so vertices are only scaled: centimetres -> metres for glTF
(``unit_scale=0.01``); OBJ / PLY keep centimetres unless told otherwise. Head poses given in the
camera frame (a :class:`~facerig.model.code.GraphicCode`) convert with
:func:`camera_pose_to_model`. Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import torch

from facerig.io import atomic_open
from facerig.model.code import MODEL_TO_OPENCV

__all__ = ["export_mesh", "export_rig_glb", "export_blendshapes_obj", "export_model_rig",
           "camera_pose_to_model", "axis_angle_to_quaternion", "write_obj"]


def _np(x, dtype=np.float64):
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_mesh(verts, faces):
    v = _np(verts)
    f = _np(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"verts: expected shape (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces: expected shape (F, 3), got {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces: indices must lie in [0, {len(v)})")
    return v, f


def write_obj(path, verts, faces, uvs=None, uv_faces=None, colors=None, mtl: str | None = None):
    """Write a Wavefront OBJ (atomically). ``uvs`` (T, 2) use facerig's top-left origin and are
    written with OBJ's bottom-left origin (v -> 1 - v); ``colors`` (V, 3) in [0, 1] become the
    common ``v x y z r g b`` extension."""
    v, f = _check_mesh(verts, faces)
    lines = []
    if mtl:
        lines.append(f"mtllib {mtl}\nusemtl material0")
    c = _np(colors)
    if c is not None:
        lines += [f"v {a:.6f} {b:.6f} {z:.6f} {r:.4f} {g:.4f} {bb:.4f}" for (a, b, z), (r, g, bb) in zip(v, c)]
    else:
        lines += [f"v {a:.6f} {b:.6f} {z:.6f}" for a, b, z in v]
    if uvs is not None:
        t = _np(uvs)
        lines += [f"vt {u:.6f} {1.0 - w:.6f}" for u, w in t]
        tf = f if uv_faces is None else _np(uv_faces, np.int64)
        lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c_ + 1}/{tc + 1}" for (a, b, c_), (ta, tb, tc) in zip(f, tf)]
    else:
        lines += [f"f {a + 1} {b + 1} {c_ + 1}" for a, b, c_ in f]
    with atomic_open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _split_uv_seams(verts, faces, uvs, uv_faces):
    """One vertex per distinct (vertex, uv) corner pair: returns verts', faces', uvs' and the
    original vertex index of each new vertex."""
    corners = np.stack([faces.ravel(), uv_faces.ravel()], 1)
    uniq, inv = np.unique(corners, axis=0, return_inverse=True)
    return verts[uniq[:, 0]], inv.reshape(-1, 3), uvs[uniq[:, 1]], uniq[:, 0]


def export_mesh(path, verts, faces, *, colors=None, uvs=None, uv_faces=None, texture=None,
                unit_scale: float | None = None) -> Path:
    """Write a mesh to ``.obj``, ``.ply`` or ``.glb`` (by extension).

    Args:
        verts: (V, 3) model-frame vertices (cm); faces: (F, 3) int.
        colors: optional (V, 3) vertex colours in [0, 1].
        uvs, texture: optional per-vertex (V, 2) (or (T, 2) with ``uv_faces`` (F, 3)) texture
            coordinates, top-left origin, and an (H, W, 3) image (uint8 or float in [0, 1]).
        unit_scale: factor applied to the vertices (default 1 for OBJ / PLY, 0.01 = metres for GLB).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".obj", ".ply", ".glb"):
        raise ValueError(f"path: expected a .obj, .ply or .glb file name, got {path.name!r}")
    v, f = _check_mesh(verts, faces)
    v = v * (unit_scale if unit_scale is not None else (0.01 if ext == ".glb" else 1.0))
    import trimesh
    c = _np(colors)
    if c is not None and c.shape != v.shape:
        raise ValueError(f"colors: expected shape {v.shape}, got {c.shape}")
    if texture is not None:
        if uvs is None:
            raise ValueError("texture: needs uvs")
        t = _np(uvs)
        if uv_faces is not None:
            v, f, t, _ = _split_uv_seams(v, f, t, _np(uv_faces, np.int64))
        img = _np(texture)
        if img.max() <= 1.0:
            img = img * 255.0
        from PIL import Image
        image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        visual = trimesh.visual.TextureVisuals(uv=np.stack([t[:, 0], 1 - t[:, 1]], 1), image=image)
        mesh = trimesh.Trimesh(v, f, visual=visual, process=False)
    else:
        mesh = trimesh.Trimesh(v, f, vertex_colors=None if c is None else (np.clip(c, 0, 1) * 255).astype(np.uint8),
                               process=False)
    if ext == ".obj" and texture is not None:
        # OBJ + MTL + PNG: trimesh returns the files as a dict
        from trimesh.exchange.obj import export_obj
        text, files = export_obj(mesh, include_texture=True, return_texture=True, mtl_name=path.stem + ".mtl")
        for name, data in files.items():
            with atomic_open(path.parent / name) as fh:
                fh.write(data)
        with atomic_open(path, "w") as fh:
            fh.write(text)
        return path
    data = mesh.export(file_type=ext[1:])
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)
    return path


# ----------------------------------------------------------------------------------------- rigs
def axis_angle_to_quaternion(aa) -> np.ndarray:
    """Unit quaternions (N, 4) in glTF order (x, y, z, w) from axis-angle vectors (N, 3)."""
    aa = _np(aa).reshape(-1, 3)
    theta = np.linalg.norm(aa, axis=1, keepdims=True)
    half = theta / 2
    k = np.where(theta > 1e-12, np.sin(half) / np.maximum(theta, 1e-12), 0.5)
    q = np.concatenate([aa * k, np.cos(half)], 1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def camera_pose_to_model(rotation, translation):
    """Convert camera-frame head poses (GraphicCode ``rotation`` (T, 3) axis-angle, ``translation``
    (T, 3) cm, ``X_cam = R(rot) M X + t`` with M = MODEL_TO_OPENCV) into rotations / translations
    of the head in the model (= glTF) frame: ``M^T X_cam = (M^T R M) X + M^T t``.
    Returns (axis-angle (T, 3), translation (T, 3) cm) as NumPy arrays."""
    from scipy.spatial.transform import Rotation

    M = MODEL_TO_OPENCV.numpy().astype(np.float64)
    r = Rotation.from_rotvec(_np(rotation).reshape(-1, 3)).as_matrix()
    rm = np.einsum("ij,tjk,kl->til", M.T, r, M)
    return Rotation.from_matrix(rm).as_rotvec(), _np(translation).reshape(-1, 3) @ M  # t @ M == M^T t


class _GlbBuilder:
    def __init__(self):
        self.bin = bytearray()
        self.views, self.accessors = [], []

    def add(self, array: np.ndarray, gltf_type: str, component: int, target: int | None = None,
            minmax: bool = False) -> int:
        data = np.ascontiguousarray(array)
        while len(self.bin) % 4:
            self.bin += b"\0"
        view = {"buffer": 0, "byteOffset": len(self.bin), "byteLength": data.nbytes}
        if target is not None:
            view["target"] = target
        self.bin += data.tobytes()
        self.views.append(view)
        ncomp = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[gltf_type]
        acc = {"bufferView": len(self.views) - 1, "componentType": component,
               "count": int(data.size // ncomp), "type": gltf_type}
        if minmax:
            flat = data.reshape(-1, ncomp)
            acc["min"] = [float(x) for x in flat.min(0)]
            acc["max"] = [float(x) for x in flat.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def export_rig_glb(path, neutral, faces, blendshapes=None, names=None, *, weights=None, rotations=None,
                   translations=None, fps: float = 30.0, colors=None, uvs=None, uv_faces=None, texture=None,
                   unit_scale: float = 0.01, name: str = "face") -> Path:
    """Write a blendshape rig as glTF 2.0 binary (``.glb``).

    Args:
        neutral: (V, 3) rest vertices, model frame (= glTF frame: y up, z toward the viewer), cm.
        faces: (F, 3) int triangles (counter-clockwise seen from outside).
        blendshapes: (K, V, 3) deltas (cm) -> morph targets; names: K target names (stored in
            ``meshes[0].extras.targetNames`` and ``meshes[0].primitives[0].extras.targetNames``).
        weights: optional (T, K) per-frame weights -> an animation channel on ``weights``.
        rotations: optional (T, 3) axis-angle (model frame, about the node origin = the model
            origin) or (T, 4) quaternions (x, y, z, w) -> a ``rotation`` channel.
        translations: optional (T, 3) cm, model frame -> a ``translation`` channel.
        fps: frame rate of the animation (frame t at time t / fps seconds).
        colors: optional (V, 3) vertex colours in [0, 1] (COLOR_0, linear).
        uvs, uv_faces, texture: optional texture coordinates (per vertex (V, 2), or (T, 2) with
            ``uv_faces`` (F, 3); top-left origin) and an (H, W, 3) image (uint8 or float in [0, 1])
            -> TEXCOORD_0 and a material with a PNG base-colour texture. Vertices are split along
            UV seams (morph targets follow).
        unit_scale: cm -> file units (0.01: metres, glTF's unit).
    """
    v, f = _check_mesh(neutral, faces)
    V = len(v)
    D = np.zeros((0, V, 3)) if blendshapes is None else _np(blendshapes)
    if D.ndim != 3 or D.shape[1:] != (V, 3):
        raise ValueError(f"blendshapes: expected shape (K, {V}, 3), got {D.shape}")
    t = None
    if texture is not None and uvs is None:
        raise ValueError("texture: needs uvs")
    if uvs is not None:
        t = _np(uvs)
        if uv_faces is not None:
            v, f, t, orig = _split_uv_seams(v, f, t, _np(uv_faces, np.int64))
            D = D[:, orig]
            colors = None if colors is None else _np(colors)[orig]
            V = len(v)
        elif t.shape != (V, 2):
            raise ValueError(f"uvs: expected shape ({V}, 2) (or pass uv_faces), got {t.shape}")
    K = D.shape[0]
    names = [f"shape{k}" for k in range(K)] if names is None else [str(n) for n in names]
    if len(names) != K:
        raise ValueError(f"names: {len(names)} names for {K} blendshapes")
    if not (fps > 0):
        raise ValueError(f"fps: expected a positive frame rate, got {fps}")
    T = None
    for arr, label in ((weights, "weights"), (rotations, "rotations"), (translations, "translations")):
        if arr is not None:
            n = _np(arr).shape[0]
            if T is not None and n != T:
                raise ValueError(f"{label}: {n} frames, but another track has {T}")
            T = n
    b = _GlbBuilder()
    pos = (v * unit_scale).astype(np.float32)
    attrs = {"POSITION": b.add(pos, "VEC3", 5126, 34962, minmax=True)}
    # area-weighted unit normals (validators check unit length)
    tri = pos[f]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(pos)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    ln = np.linalg.norm(vn, axis=1, keepdims=True)
    vn = np.where(ln > 1e-20, vn / np.maximum(ln, 1e-20), np.array([0, 0, 1], np.float32)).astype(np.float32)
    vn /= np.linalg.norm(vn, axis=1, keepdims=True)
    attrs["NORMAL"] = b.add(vn.astype(np.float32), "VEC3", 5126, 34962)
    if colors is not None:
        c = _np(colors)
        if c.shape != (V, 3):
            raise ValueError(f"colors: expected shape ({V}, 3), got {c.shape}")
        attrs["COLOR_0"] = b.add(np.clip(c, 0, 1).astype(np.float32), "VEC3", 5126, 34962)
    if t is not None:
        attrs["TEXCOORD_0"] = b.add(t.astype(np.float32), "VEC2", 5126, 34962)
    targets = [{"POSITION": b.add((D[k] * unit_scale).astype(np.float32), "VEC3", 5126, 34962, minmax=True)}
               for k in range(K)]
    idx = b.add(f.astype(np.uint32).ravel(), "SCALAR", 5125, 34963)
    prim = {"attributes": attrs, "indices": idx, "mode": 4}
    extra = {}
    if texture is not None:
        from PIL import Image
        img = _np(texture)
        if img.ndim != 3 or img.shape[2] not in (3, 4):
            raise ValueError(f"texture: expected an (H, W, 3) image, got {img.shape}")
        if img.max() <= 1.0:
            img = img * 255.0
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
        png = np.frombuffer(buf.getvalue(), np.uint8)
        while len(b.bin) % 4:
            b.bin += b"\0"
        b.views.append({"buffer": 0, "byteOffset": len(b.bin), "byteLength": int(png.size)})
        b.bin += png.tobytes()
        extra = {"images": [{"bufferView": len(b.views) - 1, "mimeType": "image/png"}],
                 "samplers": [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}],
                 "textures": [{"sampler": 0, "source": 0}],
                 "materials": [{"name": "skin", "pbrMetallicRoughness": {
                     "baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 0.8}}]}
        prim["material"] = 0
    if K:
        prim["targets"] = targets
        prim["extras"] = {"targetNames": names}
    mesh = {"name": name, "primitives": [prim]}
    if K:
        mesh["weights"] = [0.0] * K
        mesh["extras"] = {"targetNames": names}
    gltf = {"asset": {"version": "2.0", "generator": "facerig"}, "scene": 0, "scenes": [{"nodes": [0]}],
            "nodes": [{"name": name, "mesh": 0}], "meshes": [mesh], **extra}
    if T:
        times = (np.arange(T, dtype=np.float64) / fps).astype(np.float32)
        t_acc = b.add(times, "SCALAR", 5126, minmax=True)
        samplers, channels = [], []

        def track(values, path_name, gltf_type):
            samplers.append({"input": t_acc, "output": b.add(values, gltf_type, 5126), "interpolation": "LINEAR"})
            channels.append({"sampler": len(samplers) - 1, "target": {"node": 0, "path": path_name}})

        if weights is not None:
            if K == 0:
                raise ValueError("weights: the rig has no blendshapes")
            w = _np(weights)
            if w.shape != (T, K):
                raise ValueError(f"weights: expected shape ({T}, {K}), got {w.shape}")
            track(w.astype(np.float32).ravel(), "weights", "SCALAR")
        if rotations is not None:
            r = _np(rotations)
            if r.ndim != 2 or r.shape[1] not in (3, 4):
                raise ValueError(f"rotations: expected (T, 3) axis-angle or (T, 4) quaternions, got {r.shape}")
            q = axis_angle_to_quaternion(r) if r.shape[1] == 3 else r / np.linalg.norm(r, axis=1, keepdims=True)
            # keep consecutive quaternions in the same hemisphere for LINEAR (slerp) playback
            for i in range(1, len(q)):
                if np.dot(q[i], q[i - 1]) < 0:
                    q[i] = -q[i]
            track(q.astype(np.float32), "rotation", "VEC4")
        if translations is not None:
            tr = _np(translations)
            if tr.shape != (T, 3):
                raise ValueError(f"translations: expected shape ({T}, 3), got {tr.shape}")
            track((tr * unit_scale).astype(np.float32), "translation", "VEC3")
        gltf["animations"] = [{"name": "performance", "samplers": samplers, "channels": channels}]
    while len(b.bin) % 4:
        b.bin += b"\0"
    gltf["buffers"] = [{"byteLength": len(b.bin)}]
    gltf["bufferViews"] = b.views
    gltf["accessors"] = b.accessors
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(b.bin)
    with atomic_open(path) as fh:
        fh.write(struct.pack("<4sII", b"glTF", 2, total))
        fh.write(struct.pack("<I4s", len(js), b"JSON") + js)
        fh.write(struct.pack("<I4s", len(b.bin), b"BIN\0") + bytes(b.bin))
    return Path(path)


def export_blendshapes_obj(folder, neutral, faces, blendshapes, names, *, uvs=None, uv_faces=None,
                           weights=None, rotations=None, translations=None, fps: float = 30.0) -> Path:
    """Write ``neutral.obj`` and one ``<name>.obj`` per blendshape (absolute positions, cm) into
    ``folder``; optional ``weights.csv`` (frame, time, one column per name) and ``pose.csv``
    (frame, time, rx, ry, rz axis-angle, tx, ty, tz cm; model frame)."""
    folder = Path(folder)
    v, f = _check_mesh(neutral, faces)
    D = _np(blendshapes)
    names = [str(n) for n in names]
    if D.shape != (len(names), len(v), 3):
        raise ValueError(f"blendshapes: expected shape ({len(names)}, {len(v)}, 3), got {D.shape}")
    bad = [n for n in names if not n or any(ch in n for ch in '/\\:*?"<>|') or n == "neutral"]
    if bad:
        raise ValueError(f"names: not usable as file names: {bad}")
    folder.mkdir(parents=True, exist_ok=True)
    write_obj(folder / "neutral.obj", v, f, uvs=uvs, uv_faces=uv_faces)
    for n, d in zip(names, D):
        write_obj(folder / f"{n}.obj", v + d, f, uvs=uvs, uv_faces=uv_faces)
    if weights is not None:
        w = _np(weights)
        if w.ndim != 2 or w.shape[1] != len(names):
            raise ValueError(f"weights: expected shape (T, {len(names)}), got {w.shape}")
        with atomic_open(folder / "weights.csv", "w") as fh:
            fh.write("frame,time," + ",".join(names) + "\n")
            for i, row in enumerate(w):
                fh.write(f"{i},{i / fps:.6f}," + ",".join(f"{x:.6f}" for x in row) + "\n")
    if rotations is not None or translations is not None:
        T = len(_np(rotations if rotations is not None else translations))
        r = np.zeros((T, 3)) if rotations is None else _np(rotations).reshape(T, 3)
        t = np.zeros((T, 3)) if translations is None else _np(translations).reshape(T, 3)
        with atomic_open(folder / "pose.csv", "w") as fh:
            fh.write("frame,time,rx,ry,rz,tx,ty,tz\n")
            for i in range(T):
                fh.write(f"{i},{i / fps:.6f}," + ",".join(f"{x:.6f}" for x in (*r[i], *t[i])) + "\n")
    return folder


def export_model_rig(model, path, identity=None, *, albedo=None, weights=None, rotations=None,
                     translations=None, fps: float = 30.0, texture=None) -> Path:
    """Export a :class:`~facerig.model.FaceModel` as a rig: the neutral of ``identity`` (1, K_id)
    (default: the mean) with the model's named expression blendshapes, coloured by the albedo of
    ``albedo`` (1, K_alb) (default: the mean), or textured with ``texture`` (H, W, 3) over the
    model's UVs (.glb / .obj / .ply). ``.glb`` -> :func:`export_rig_glb`; a path without
    suffix or an existing folder -> :func:`export_blendshapes_obj`; ``.obj`` / ``.ply`` -> the
    neutral mesh only (:func:`export_mesh`). Skinned models are exported in their rest pose."""
    path = Path(path)
    with torch.no_grad():
        neutral = model.shape(identity)[0]
        colors = model.albedo(albedo)[0].clamp(0, 1)
    ext = path.suffix.lower()
    if ext == ".glb":
        tex = {} if texture is None else {"uvs": model.uvs, "uv_faces": model.uv_faces, "texture": texture}
        return export_rig_glb(path, neutral, model.faces, model.expression_basis, model.expression_names,
                              weights=weights, rotations=rotations, translations=translations, fps=fps,
                              colors=colors if texture is None else None,  # glTF multiplies COLOR_0 in
                              name=model.name.replace(" ", "_"), **tex)
    if ext in (".obj", ".ply"):
        if texture is not None:
            return export_mesh(path, neutral, model.faces, uvs=model.uvs, uv_faces=model.uv_faces, texture=texture)
        return export_mesh(path, neutral, model.faces, colors=colors)
    if texture is not None and model.uvs is None:
        raise ValueError(f"texture: model {model.name!r} has no UVs")
    if ext == "" or path.is_dir():
        return export_blendshapes_obj(path, neutral, model.faces, model.expression_basis, model.expression_names,
                                      uvs=model.uvs, uv_faces=model.uv_faces, weights=weights, rotations=rotations,
                                      translations=translations, fps=fps)
    raise ValueError(f"path: expected .glb, .obj, .ply or a folder, got {path.name!r}")
