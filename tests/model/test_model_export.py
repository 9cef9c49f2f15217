"""Mesh / rig export: trimesh round trips, the glTF structure, and the Khronos glTF validator."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from facerig.cli import main
from facerig.model import camera_pose_to_model, export_blendshapes_obj, export_mesh, export_rig_glb, load_model
from facerig.model.code import GraphicCode

HERE = Path(__file__).resolve().parent
NODE_PREFIX = HERE / ".node"


@pytest.fixture(scope="module")
def model():
    return load_model("default")


def read_glb(path):
    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and length == len(data)
    jlen, jtype = struct.unpack_from("<I4s", data, 12)
    assert jtype == b"JSON" and jlen % 4 == 0
    gltf = json.loads(data[20:20 + jlen])
    blen, btype = struct.unpack_from("<I4s", data, 20 + jlen)
    assert btype == b"BIN\0"
    binary = data[28 + jlen:28 + jlen + blen]

    def accessor(i):
        a = gltf["accessors"][i]
        v = gltf["bufferViews"][a["bufferView"]]
        dt = {5126: np.float32, 5125: np.uint32}[a["componentType"]]
        n = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[a["type"]]
        arr = np.frombuffer(binary, dt, a["count"] * n, v["byteOffset"] + a.get("byteOffset", 0))
        return arr.reshape(a["count"], n) if n > 1 else arr

    return gltf, accessor


@pytest.fixture(scope="session")
def gltf_validator():
    """Run the Khronos glTF-Validator (npm 'gltf-validator') under Node.js; skip when unavailable."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node / npm not installed")
    if not (NODE_PREFIX / "node_modules" / "gltf-validator").is_dir():
        try:
            r = subprocess.run([npm, "install", "--prefix", str(NODE_PREFIX), "gltf-validator@2.0.0-dev.3.10", "--no-audit",
                                "--no-fund", "--loglevel=error"], capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install gltf-validator timed out")
        if r.returncode != 0:
            pytest.skip(f"npm install gltf-validator failed: {r.stderr[-300:]}")

    def validate(path):
        r = subprocess.run([node, str(HERE / "gltf_validate.mjs"), str(path), str(NODE_PREFIX)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 2:
            pytest.skip(f"validator could not run: {r.stderr[-300:]}")
        return json.loads(r.stdout)

    return validate


@pytest.mark.parametrize("ext", [".obj", ".ply", ".glb"])
def test_mesh_round_trip(tmp_path, model, ext):
    s = model.sample(1, torch.Generator().manual_seed(0))
    v, c = s["vertices"][0], s["colors"][0]
    p = export_mesh(tmp_path / f"face{ext}", v, model.faces, colors=c)
    m = trimesh.load(p, process=False, force="mesh")
    scale = 100.0 if ext == ".glb" else 1.0  # glb in metres
    assert np.allclose(np.asarray(m.vertices) * scale, v.numpy(), atol=1e-4)
    assert np.array_equal(np.asarray(m.faces), model.faces.numpy())
    cols = np.asarray(m.visual.vertex_colors)[:, :3] / 255.0
    assert np.abs(cols - c.numpy()).max() < 1.5 / 255


def test_textured_mesh(tmp_path, model):
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[:32] = (255, 0, 0)  # top half red, bottom half blue (top-left origin)
    tex[32:] = (0, 0, 255)
    for ext in (".obj", ".glb"):
        p = export_mesh(tmp_path / f"tex{ext}", model.mean, model.faces, uvs=model.uvs, texture=tex)
        m = trimesh.load(p, process=False, force="mesh")
        assert len(m.vertices) == model.n_vertices and np.array_equal(np.asarray(m.faces), model.faces.numpy())
        # the forehead (Face Mesh 10) samples the top of the texture, the chin (152) the bottom
        col = m.visual.to_color().vertex_colors[:, :3].astype(int)
        assert col[10, 0] > 200 and col[10, 2] < 50, ext
        assert col[152, 2] > 200 and col[152, 0] < 50, ext


def test_rig_glb_structure(tmp_path, model, gltf_validator):
    T, K = 12, model.n_expression
    rng = np.random.default_rng(0)
    w = rng.uniform(0, 1, (T, K))
    rot = rng.normal(0, 0.2, (T, 3))
    tr = rng.normal(0, 1, (T, 3))
    p = export_rig_glb(tmp_path / "rig.glb", model.mean, model.faces, model.expression_basis, model.expression_names,
                       weights=w, rotations=rot, translations=tr, fps=25, colors=model.albedo_mean)
    gltf, acc = read_glb(p)
    prim = gltf["meshes"][0]["primitives"][0]
    assert len(prim["targets"]) == K
    assert gltf["meshes"][0]["extras"]["targetNames"] == model.expression_names
    assert np.allclose(acc(prim["attributes"]["POSITION"]) * 100, model.mean.numpy(), atol=1e-4)
    assert np.array_equal(acc(prim["indices"]).reshape(-1, 3), model.faces.numpy())
    k = model.expression_names.index("jawOpen")
    assert np.allclose(acc(prim["targets"][k]["POSITION"]) * 100, model.expression_basis[k].numpy(), atol=1e-4)
    anim = gltf["animations"][0]
    paths = {ch["target"]["path"]: anim["samplers"][ch["sampler"]] for ch in anim["channels"]}
    assert set(paths) == {"weights", "rotation", "translation"}
    times = acc(paths["weights"]["input"])
    assert len(times) == T and np.allclose(times, np.arange(T) / 25)
    assert len(acc(paths["weights"]["output"])) == T * K
    assert np.allclose(acc(paths["weights"]["output"]).reshape(T, K), w, atol=1e-6)
    q = acc(paths["rotation"]["output"])
    assert q.shape == (T, 4) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-6)
    from scipy.spatial.transform import Rotation
    assert np.allclose(np.abs((Rotation.from_quat(q) * Rotation.from_rotvec(rot).inv()).magnitude()), 0, atol=1e-5)
    assert np.allclose(acc(paths["translation"]["output"]) * 100, tr, atol=1e-5)
    # trimesh re-import keeps the geometry
    m = trimesh.load(p, process=False, force="mesh")
    assert np.allclose(np.asarray(m.vertices) * 100, model.mean.numpy(), atol=1e-4)
    report = gltf_validator(p)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    assert report["info"]["hasMorphTargets"] and report["info"]["animationCount"] == 1


def test_validator_catches_errors(tmp_path, gltf_validator):
    """The validator is really run: a corrupted index buffer is reported."""
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    p = export_rig_glb(tmp_path / "tri.glb", v, np.array([[0, 1, 2]]))
    assert gltf_validator(p)["issues"]["numErrors"] == 0
    data = bytearray(p.read_bytes())
    gltf, _ = read_glb(p)
    jlen = struct.unpack_from("<I", data, 12)[0]
    idx_view = gltf["bufferViews"][gltf["accessors"][gltf["meshes"][0]["primitives"][0]["indices"]]["bufferView"]]
    struct.pack_into("<I", data, 28 + jlen + idx_view["byteOffset"], 7)  # index 7 of 3 vertices
    bad = tmp_path / "bad.glb"
    bad.write_bytes(bytes(data))
    assert gltf_validator(bad)["issues"]["numErrors"] > 0


def test_cli_export_default_glb_validates(tmp_path, gltf_validator, capsys):
    out = tmp_path / "rig.glb"
    assert main(["model", "export", "default", str(out)]) == 0
    assert "53 morph targets" in capsys.readouterr().out
    report = gltf_validator(out)
    assert report["issues"]["numErrors"] == 0
    gltf, _ = read_glb(out)
    assert len(gltf["meshes"][0]["extras"]["targetNames"]) == 53


def test_blendshape_folder(tmp_path, model):
    w = np.random.default_rng(0).uniform(0, 1, (5, model.n_expression))
    d = export_blendshapes_obj(tmp_path / "bs", model.mean, model.faces, model.expression_basis,
                               model.expression_names, uvs=model.uvs, weights=w, rotations=np.zeros((5, 3)))
    assert len(list(d.glob("*.obj"))) == model.n_expression + 1
    m = trimesh.load(d / "jawOpen.obj", process=False)
    k = model.expression_names.index("jawOpen")
    assert np.allclose(np.asarray(m.vertices), (model.mean + model.expression_basis[k]).numpy(), atol=1e-5)
    assert np.array_equal(np.asarray(m.faces), model.faces.numpy())
    header = (d / "weights.csv").read_text().splitlines()
    assert header[0].split(",")[2:] == model.expression_names and len(header) == 6
    assert (d / "pose.csv").exists()


def test_cli_export_formats_and_errors(tmp_path, capsys):
    assert main(["model", "export", "default", str(tmp_path / "m.ply")]) == 0
    assert len(trimesh.load(tmp_path / "m.ply", process=False).vertices) == 468
    assert main(["model", "export", "default", str(tmp_path / "bs")]) == 0
    assert (tmp_path / "bs" / "neutral.obj").exists()
    assert main(["model", "export", "default", str(tmp_path / "r.glb"), "--blendshapes", str(tmp_path / "bs2")]) == 0
    assert (tmp_path / "r.glb").exists() and len(list((tmp_path / "bs2").glob("*.obj"))) == 54
    assert main(["model", "export", "default", str(tmp_path / "r.glb"), "--blendshapes", str(tmp_path / "x.obj")]) == 2
    assert main(["model", "export", "default", str(tmp_path / "m.fbx")]) == 2
    assert main(["model", "info", str(tmp_path / "missing.pkl")]) == 2
    assert "flame.is.tue.mpg.de" in capsys.readouterr().err
    assert main(["model", "info", "default"]) == 0
    out = capsys.readouterr().out
    assert "vertices:     468" in out and "ibug68" in out and "MIT" in out
    assert main(["model", "info", "default", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["expression_modes"] == 53


def test_camera_pose_to_model(model):
    """A camera-frame pose and the converted model-frame pose place the head identically."""
    from scipy.spatial.transform import Rotation
    code = GraphicCode.zeros(1, model)
    code.rotation[0] = torch.tensor([0.1, -0.4, 0.2])
    code.translation[0] = torch.tensor([1.0, 2.0, 45.0])
    cam = code.transform(model.mean[None])[0].numpy()
    r, t = camera_pose_to_model(code.rotation, code.translation)
    world = model.mean.numpy() @ Rotation.from_rotvec(r[0]).as_matrix().T + t[0]
    M = np.diag([1.0, -1.0, -1.0])
    assert np.allclose(world, cam @ M, atol=1e-4)  # M^T X_cam


def test_export_bad_input(tmp_path, model):
    with pytest.raises(ValueError, match="blendshapes"):
        export_rig_glb(tmp_path / "x.glb", model.mean, model.faces, torch.zeros(2, 5, 3), ["a", "b"])
    with pytest.raises(ValueError, match="weights"):
        export_rig_glb(tmp_path / "x.glb", model.mean, model.faces, model.expression_basis[:2], ["a", "b"],
                       weights=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="frames"):
        export_rig_glb(tmp_path / "x.glb", model.mean, model.faces, model.expression_basis[:2], ["a", "b"],
                       weights=np.zeros((4, 2)), rotations=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="path"):
        export_mesh(tmp_path / "x.stl", model.mean, model.faces)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_textured_export_splits_uv_seams(tmp_path):
    """A separate UV topology (ICT-style) is exported by splitting vertices along UV seams."""
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    f = np.array([[0, 1, 2], [1, 3, 2]])
    uvs = np.array([[0, 0], [0.4, 0], [0, 0.4], [0.6, 0.6], [1, 0.6], [0.6, 1], [1, 1]])
    uv_faces = np.array([[0, 1, 2], [4, 6, 5]])  # the shared edge 1-2 has different UVs on each side
    tex = np.full((8, 8, 3), 128, np.uint8)
    p = export_mesh(tmp_path / "seam.glb", v, f, uvs=uvs, uv_faces=uv_faces, texture=tex)
    m = trimesh.load(p, process=False, force="mesh")
    assert len(m.vertices) == 6 and len(m.faces) == 2
    tri = np.asarray(m.vertices)[np.asarray(m.faces)] * 100
    assert np.allclose(tri, v[f], atol=1e-5)  # same triangles, positions preserved
    uv = np.asarray(m.visual.uv)[np.asarray(m.faces)]
    assert np.allclose(uv[:, :, 0], uvs[uv_faces][:, :, 0], atol=1e-6)  # u preserved (v is flipped by trimesh)


def test_textured_rig_glb(tmp_path, gltf_validator):
    """A rig with a texture and a separate UV topology: seams split, morph targets follow, valid."""
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    f = np.array([[0, 1, 2], [1, 3, 2]])
    uvs = np.array([[0, 0], [0.4, 0], [0, 0.4], [0.6, 0.6], [1, 0.6], [0.6, 1], [1, 1]])
    uv_faces = np.array([[0, 1, 2], [4, 6, 5]])
    D = np.random.default_rng(0).normal(size=(2, 4, 3))
    tex = np.random.default_rng(1).uniform(0, 1, (16, 16, 3))
    p = export_rig_glb(tmp_path / "tex_rig.glb", v, f, D, ["a", "b"], uvs=uvs, uv_faces=uv_faces, texture=tex,
                       weights=np.zeros((3, 2)))
    gltf, acc = read_glb(p)
    prim = gltf["meshes"][0]["primitives"][0]
    pos = acc(prim["attributes"]["POSITION"]) * 100
    tris = pos[acc(prim["indices"]).reshape(-1, 3)]
    assert len(pos) == 6 and np.allclose(tris, v[f], atol=1e-5)
    tgt = acc(prim["targets"][1]["POSITION"]) * 100
    assert np.allclose(tgt[acc(prim["indices"]).reshape(-1, 3)], D[1][f], atol=1e-5)
    assert np.allclose(acc(prim["attributes"]["TEXCOORD_0"])[acc(prim["indices"]).reshape(-1, 3)], uvs[uv_faces])
    assert gltf["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"] == 0
    report = gltf_validator(p)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    assert report["info"]["hasTextures"]
