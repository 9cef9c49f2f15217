"""Reading binary glTF (``.glb``) meshes and swapping their texture, without a glTF library.

Enough of glTF 2.0 for facerig's own rigs (:func:`facerig.model.export_rig_glb`): the first
primitive's positions, UVs, triangles, morph targets (blendshapes) and their names, and the
embedded base-colour image. Units and frames are glTF's: metres, y up, UV origin top-left (v down).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["read_glb", "glb_mesh", "replace_glb_texture"]

_GLB_MAGIC = 0x46546C67
_CHUNK_JSON, _CHUNK_BIN = 0x4E4F534A, 0x004E4942
_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def read_glb(path: str | os.PathLike) -> tuple[dict, bytes]:
    """``(gltf JSON dict, BIN chunk bytes)`` of a ``.glb`` file.

    Raises:
        ValueError: not a binary glTF 2.0 file (the message names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"glb: {p} does not exist")
    b = p.read_bytes()
    if len(b) < 20 or struct.unpack_from("<I", b, 0)[0] != _GLB_MAGIC:
        raise ValueError(f"glb: {p} is not a binary glTF (.glb) file")
    pos, doc, binary = 12, None, b""
    while pos + 8 <= len(b):
        n, kind = struct.unpack_from("<II", b, pos)
        data = b[pos + 8:pos + 8 + n]
        if kind == _CHUNK_JSON:
            doc = json.loads(data.decode("utf-8"))
        elif kind == _CHUNK_BIN:
            binary = data
        pos += 8 + n
    if doc is None:
        raise ValueError(f"glb: {p} has no JSON chunk")
    return doc, binary


def _accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = np.dtype(_COMPONENTS[acc["componentType"]])
    k = _SIZES[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride", 0)
    if stride and stride != k * dtype.itemsize:
        raw = np.frombuffer(binary, np.uint8, count=stride * acc["count"], offset=start).reshape(acc["count"], stride)
        return raw[:, :k * dtype.itemsize].copy().view(dtype).reshape(acc["count"], k)
    arr = np.frombuffer(binary, dtype, count=acc["count"] * k, offset=start)
    return arr.reshape(acc["count"], k) if k > 1 else arr.copy()


def glb_mesh(path: str | os.PathLike) -> dict:
    """The first mesh primitive of a ``.glb``.

    Returns:
        ``{"positions": (V, 3) float64 m, "uvs": (V, 2) or None (v down), "faces": (F, 3) int64,
        "targets": (K, V, 3) position deltas (m) or None, "target_names": list, "texture": PNG/JPEG
        bytes or None}``.
    """
    doc, binary = read_glb(path)
    try:
        prim = doc["meshes"][0]["primitives"][0]
    except (KeyError, IndexError) as err:
        raise ValueError(f"glb: {path} has no mesh") from err
    att = prim["attributes"]
    pos = _accessor(doc, binary, att["POSITION"]).astype(np.float64)
    uvs = _accessor(doc, binary, att["TEXCOORD_0"]).astype(np.float64) if "TEXCOORD_0" in att else None
    if "indices" in prim:
        faces = _accessor(doc, binary, prim["indices"]).astype(np.int64).reshape(-1, 3)
    else:
        faces = np.arange(len(pos), dtype=np.int64).reshape(-1, 3)
    targets = None
    if prim.get("targets"):
        targets = np.stack([_accessor(doc, binary, t["POSITION"]).astype(np.float64) for t in prim["targets"]])
    mesh = doc["meshes"][0]
    names = list((mesh.get("extras") or {}).get("targetNames", []))
    tex = None
    if doc.get("images"):
        img = doc["images"][0]
        if "bufferView" in img:
            v = doc["bufferViews"][img["bufferView"]]
            tex = binary[v.get("byteOffset", 0):v.get("byteOffset", 0) + v["byteLength"]]
    return {"positions": pos, "uvs": uvs, "faces": faces, "targets": targets, "target_names": names, "texture": tex}


def replace_glb_texture(src: str | os.PathLike, dst: str | os.PathLike, image: bytes, mime: str = "image/png") -> Path:
    """Copy ``src`` to ``dst`` (atomically) with its first embedded image replaced by ``image``.

    The BIN chunk is rebuilt with every buffer view at a 4-byte aligned offset, so geometry,
    morph targets and animations are kept byte for byte.

    Raises:
        ValueError: ``src`` is not a ``.glb`` or has no embedded image.
    """
    from facerig.io import atomic_write

    doc, binary = read_glb(src)
    if not doc.get("images") or "bufferView" not in doc["images"][0]:
        raise ValueError(f"glb: {src} has no embedded image to replace")
    target = doc["images"][0]["bufferView"]
    doc["images"][0]["mimeType"] = mime
    out = bytearray()
    for i, v in enumerate(doc["bufferViews"]):
        data = image if i == target else binary[v.get("byteOffset", 0):v.get("byteOffset", 0) + v["byteLength"]]
        out += b"\0" * (-len(out) % 4)
        v["byteOffset"] = len(out)
        v["byteLength"] = len(data)
        out += data
    out += b"\0" * (-len(out) % 4)
    doc["buffers"][0]["byteLength"] = len(out)
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(out)
    blob = struct.pack("<III", _GLB_MAGIC, 2, total) + struct.pack("<II", len(js), _CHUNK_JSON) + js \
        + struct.pack("<II", len(out), _CHUNK_BIN) + bytes(out)
    return atomic_write(dst, blob)
