"""Loaders on synthetic files with the exact research-model layouts, on the real ICT data when
present, and on bad / truncated files."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch

from facerig.model import ModelFileError, load_model, save_npz
from facerig.model.export import write_obj
from facerig.model.loaders import load_ict

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default():
    return load_model("default", dtype=torch.float64)


def _orthonormal(rows, k, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((rows, k)))
    return q


# ----------------------------------------------------------------------------- BFM 2009
def write_bfm2009(path, default, K=6):
    V = default.n_vertices
    mu = default.mean.numpy().reshape(-1, 1) * 10.0  # mm
    pc = _orthonormal(3 * V, K, 0)
    ev = np.linspace(30, 5, K).reshape(-1, 1)  # mm (standard deviations)
    tex_mu = np.full((3 * V, 1), 150.0)
    tex_pc = _orthonormal(3 * V, 4, 1)
    tex_ev = np.array([[40.0], [20], [10], [5]])
    tl = default.faces.numpy()[:, [0, 2, 1]] + 1  # BFM's winding is clockwise seen from outside
    scipy.io.savemat(path, {"shapeMU": mu, "shapePC": pc, "shapeEV": ev, "texMU": tex_mu, "texPC": tex_pc,
                            "texEV": tex_ev, "tl": tl.astype(np.float64)})
    return mu, pc, ev, tex_pc


def test_bfm2009(tmp_path, default):
    p = tmp_path / "01_MorphableModel.mat"
    mu, pc, ev, tex_pc = write_bfm2009(p, default)
    m = load_model(p, dtype=torch.float64)
    assert m.n_vertices == default.n_vertices and m.n_identity == 6 and m.n_expression == 0 and m.n_albedo == 4
    assert torch.allclose(m.mean, default.mean, atol=1e-9)  # mm -> cm
    assert torch.allclose(m.identity_std, torch.as_tensor(ev.ravel()) / 10)
    a = torch.randn(2, 6, dtype=torch.float64)
    # orthonormal modes kept; coefficients in cm: shape = mu / 10 + PC a, a ~ N(0, (EV / 10)^2)
    expect = (mu.ravel()[None] / 10 + a.numpy() @ pc.T).reshape(2, -1, 3)
    assert np.allclose(m.shape(a).numpy(), expect)
    assert torch.allclose(m.albedo_mean, torch.full_like(m.albedo_mean, 150 / 255))
    assert torch.allclose(m.albedo_std, torch.tensor([40.0, 20, 10, 5], dtype=torch.float64) / 255)
    # 1-based tl -> 0-based and oriented outward again
    assert torch.equal(m.faces, default.faces)
    # iBUG-68 transferred by surface alignment: the mean is the default face, so it lands on the
    # default model's own landmarks
    lm = m.landmarks(m.mean[None])[0]
    ref = default.landmarks(default.mean[None])[0]
    assert (lm - ref).norm(dim=1).max() < 0.05  # < 0.5 mm
    assert m.masks["lips"].sum() > 10


def test_bfm2009_bad_files(tmp_path):
    p = tmp_path / "model.mat"
    scipy.io.savemat(p, {"shapeMU": np.zeros((9, 1))})
    with pytest.raises(ModelFileError, match="missing variables"):
        load_model(p)
    p.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 20)
    with pytest.raises(ModelFileError, match="BFM 2009"):
        load_model(p)
    with pytest.raises(ModelFileError, match="faces.dmi.unibas.ch"):
        load_model(tmp_path / "missing" / "01_MorphableModel.mat")
    with pytest.raises(ModelFileError, match="faces.dmi.unibas.ch"):
        load_model("bfm2009")


# ----------------------------------------------------------------------------- BFM 2017
def write_bfm2017(path, default, K=5, E=3):
    import h5py
    V = default.n_vertices
    with h5py.File(path, "w") as f:
        for name, k, scale in (("shape", K, 10.0), ("color", 4, None), ("expression", E, None)):
            g = f.create_group(f"{name}/model")
            if name == "shape":
                g["mean"] = (default.mean.numpy() * 10).ravel().astype(np.float32)
            elif name == "color":
                g["mean"] = np.full(3 * V, 0.5, np.float32)
            else:
                g["mean"] = np.zeros(3 * V, np.float32)
            g["pcaBasis"] = _orthonormal(3 * V, k, k).astype(np.float32)
            g["pcaVariance"] = (np.arange(k, 0, -1) * 4.0).astype(np.float32)  # variances
        f["shape/representer/cells"] = default.faces.numpy().T.astype(np.uint32)
        f["shape/representer/points"] = (default.mean.numpy() * 10).T.astype(np.float32)


def test_bfm2017(tmp_path, default):
    p = tmp_path / "model2017-1_bfm_nomouth.h5"
    write_bfm2017(p, default)
    m = load_model(p, dtype=torch.float64)
    assert (m.n_identity, m.n_expression, m.n_albedo) == (5, 3, 4)
    assert torch.allclose(m.mean, default.mean, atol=1e-5)
    assert torch.allclose(m.identity_std, torch.sqrt(torch.arange(5, 0, -1) * 4.0).double() / 10)  # variance -> std, mm -> cm
    assert torch.allclose(m.albedo_std, torch.sqrt(torch.arange(4, 0, -1) * 4.0).double())  # colour in [0, 1]
    assert torch.allclose(m.albedo_mean, torch.full_like(m.albedo_mean, 0.5))
    assert torch.equal(m.faces, default.faces)
    import h5py
    with h5py.File(p, "r") as f:
        pc = np.asarray(f["expression/model/pcaBasis"], np.float64)
    w = torch.randn(1, 3, dtype=torch.float64)
    assert np.allclose((m.shape(None, w) - m.mean).numpy().ravel(), pc @ w.numpy()[0], atol=1e-6)


def test_bfm2017_bad_files(tmp_path, default):
    import h5py
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f["color/model/mean"] = np.zeros(3)
    with pytest.raises(ModelFileError, match="missing group"):
        load_model(p)
    good = tmp_path / "good.h5"
    write_bfm2017(good, default)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(trunc)


# ----------------------------------------------------------------------------- FLAME
def _install_fake_chumpy():
    """A stand-in 'chumpy.ch.Ch' class so the test can write chumpy-containing pickles."""
    ch = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch.Ch = Ch
    pkg = types.ModuleType("chumpy")
    pkg.ch = ch
    return {"chumpy": pkg, "chumpy.ch": ch}, Ch


def write_flame(path, default):
    """A FLAME-layout pickle built on the default mesh: jaw joint drives the lower face."""
    v = default.mean.numpy() / 100.0  # metres
    V = len(v)
    rng = np.random.default_rng(0)
    shapedirs = rng.standard_normal((V, 3, 400)) * 1e-3
    posedirs = np.zeros((V, 3, 36))
    lower = v[:, 1] < v[61, 1] / 1.0  # below the mouth corners
    weights = np.zeros((V, 5))
    weights[lower, 2] = 1.0  # jaw
    weights[~lower, 1] = 1.0  # neck
    J = np.zeros((5, V))
    J[0, 152] = 1  # global at the chin (arbitrary)
    J[1, 10] = 1  # neck at the forehead top (arbitrary)
    J[2, [234, 454]] = 0.5  # jaw axis through the "ears"
    J[3, 33] = 1
    J[4, 263] = 1
    kintree = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]])
    mods, Ch = _install_fake_chumpy()
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        d = {"v_template": Ch(v), "f": default.faces.numpy().astype(np.uint32), "shapedirs": Ch(shapedirs),
             "posedirs": posedirs, "J_regressor": scipy.sparse.csc_matrix(J), "weights": Ch(weights),
             "kintree_table": kintree, "bs_style": "lbs", "bs_type": "lrotmin"}
        with open(path, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
    finally:
        for k, old in saved.items():
            if old is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = old
    return v, shapedirs, J, lower


def test_flame_without_chumpy(tmp_path, default):
    p = tmp_path / "generic_model.pkl"
    v, shapedirs, J, lower = write_flame(p, default)
    assert "chumpy" not in sys.modules
    m = load_model(p, dtype=torch.float64)
    assert (m.n_identity, m.n_expression, m.pose_dim) == (300, 100, 15)
    assert m.lbs.joint_names == ["global", "neck", "jaw", "eye_left", "eye_right"]
    assert m.lbs.parents.tolist() == [-1, 0, 1, 1, 1]
    assert torch.allclose(m.mean, torch.as_tensor(v) * 100)  # m -> cm
    a = torch.randn(1, 300, dtype=torch.float64)
    e = torch.randn(1, 100, dtype=torch.float64)
    expect = (v + shapedirs[:, :, :300] @ a.numpy()[0] + shapedirs[:, :, 300:] @ e.numpy()[0]) * 100
    rest = m.shape(a, e)
    assert np.allclose(rest[0].numpy(), expect)
    assert torch.allclose(m.shape(a, e, torch.zeros(1, 15, dtype=torch.float64)), rest)
    # jaw rotation: lower vertices rotate about the jaw joint, the rest stay
    from scipy.spatial.transform import Rotation
    pose = torch.zeros(1, 15, dtype=torch.float64)
    pose[0, 6] = 0.3  # jaw about x
    posed = m.shape(a, e, pose)[0].numpy()
    j = J[2] @ rest[0].numpy()
    R = Rotation.from_rotvec([0.3, 0, 0]).as_matrix()
    r0 = rest[0].numpy()
    assert np.allclose(posed[lower], (r0[lower] - j) @ R.T + j, atol=1e-9)
    assert np.allclose(posed[~lower], r0[~lower])
    # neck rotation moves the whole face (the jaw is its child) about the neck joint
    pose = torch.zeros(1, 15, dtype=torch.float64)
    pose[0, 3:6] = torch.tensor([0.0, 0.2, 0.1])
    posed = m.shape(a, e, pose)[0].numpy()
    jn = J[1] @ r0
    R = Rotation.from_rotvec([0.0, 0.2, 0.1]).as_matrix()
    assert np.allclose(posed, (r0 - jn) @ R.T + jn, atol=1e-9)
    assert m.landmarks(rest).shape == (1, 68, 3)
    # subdivision carries the skinning
    s = m.subdivide(1)
    assert torch.allclose(s.shape(a, e, pose)[:, : m.n_vertices], m.shape(a, e, pose), atol=1e-9)


def test_flame_bad_files(tmp_path, default):
    p = tmp_path / "generic_model.pkl"
    write_flame(p, default)
    data = p.read_bytes()
    t = tmp_path / "trunc.pkl"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(t)
    q = tmp_path / "other.pkl"
    q.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="not a FLAME model"):
        load_model(q)
    with pytest.raises(ModelFileError, match="flame.is.tue.mpg.de"):
        load_model(tmp_path / "nope" / "generic_model.pkl")


# ----------------------------------------------------------------------------- ICT (synthetic)
def write_tiny_ict(folder: Path, names=("browDown_L", "jawOpen", "mouthClose"), extra=("PupilDilate_L",)):
    """A 6x6-vertex grid of quads in the ICT FaceXModel layout."""
    folder.mkdir(parents=True)
    n = 6
    xs, ys = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float))
    verts = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * n)], 1)
    lines = [f"v {x} {y} {z}" for x, y, z in verts]
    lines += [f"vt {x / (n - 1)} {y / (n - 1)}" for x, y, _ in verts]
    quads = []
    for i in range(n - 1):
        for j in range(n - 1):
            a = i * n + j
            quads.append([a, a + 1, a + n + 1, a + n])  # counter-clockwise seen from +z
    lines += ["f " + " ".join(f"{q + 1}/{q + 1}/{q + 1}" for q in quad) for quad in quads]
    (folder / "generic_neutral_mesh.obj").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    deltas = {}
    for k in range(3):
        d = rng.standard_normal(verts.shape)
        deltas[f"identity{k:03d}"] = d
    for nm in list(names) + list(extra):
        deltas[nm] = rng.standard_normal(verts.shape)
    for nm, d in deltas.items():
        (folder / f"{nm}.obj").write_text("\n".join(f"v {x} {y} {z}" for x, y, z in verts + d) + "\n")
    lm = [int(i) for i in rng.integers(0, n * n, 68)]
    (folder / "vertex_indices.json").write_text(json.dumps({"expressions": list(names), "idx_to_landmark_verts": lm}))
    return verts, deltas, lm, len(quads)


def test_ict_synthetic(tmp_path):
    verts, deltas, lm, nquads = write_tiny_ict(tmp_path / "FaceXModel")
    m = load_model(tmp_path, region="head", dtype=torch.float64)  # parent folder works too
    assert m.n_vertices == 36 and m.n_faces == 2 * nquads
    assert m.n_identity == 3 and torch.equal(m.identity_std, torch.ones(3, dtype=torch.float64))
    assert m.expression_names == ["browDown_L", "jawOpen", "mouthClose", "PupilDilate_L"]
    assert np.allclose(m.identity_basis[1].numpy(), deltas["identity001"], atol=1e-9)
    assert np.allclose(m.expression_basis[1].numpy(), deltas["jawOpen"], atol=1e-9)
    assert m.landmarks_ibug68.indices.tolist() == lm
    assert torch.allclose(m.uvs[0], torch.tensor([0.0, 1.0], dtype=torch.float64))  # v flipped to top-left origin
    assert m.uv_faces.shape == m.faces.shape
    n = m.vertex_normals(m.mean[None])[0]
    assert (n[:, 2] > 0.99).all()
    arkit = load_ict(tmp_path / "FaceXModel", region="head", expressions="arkit")
    assert arkit.n_expression == 3
    a = torch.randn(1, 3, dtype=torch.float64)
    assert torch.allclose(m.shape(a)[0], m.mean + torch.einsum("k,kvc->vc", a[0], m.identity_basis))


def test_ict_bad_folders(tmp_path):
    verts, *_ = write_tiny_ict(tmp_path / "ict")
    with pytest.raises(ModelFileError, match="needs 9409"):
        load_model(tmp_path / "ict")  # region "face" on a tiny mesh
    (tmp_path / "ict" / "jawOpen.obj").write_text("v 1 2 3\nv 1 2")
    with pytest.raises(ModelFileError, match="jawOpen.obj"):
        load_model(tmp_path / "ict", region="head")
    (tmp_path / "ict" / "jawOpen.obj").unlink()
    with pytest.raises(ModelFileError, match="missing for"):
        load_model(tmp_path / "ict", region="head")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFileError, match="ICT-FaceKit"):
        load_model(empty)
    with pytest.raises(ModelFileError, match="github.com/ICT-VGL"):
        load_model("ict")


def test_npz_round_trip_and_truncation(tmp_path, default):
    p = tmp_path / "m.npz"
    save_npz(default.to(torch.float32), p)
    m = load_model(p)
    assert torch.equal(m.identity_basis, default.identity_basis.float())
    assert m.expression_names == default.expression_names
    assert torch.equal(m.landmarks_ibug68.indices, default.landmarks_ibug68.indices)
    assert torch.equal(m.face_groups["mouth_opening"], default.face_groups["mouth_opening"])
    data = p.read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(tmp_path / "t.npz")
    with pytest.raises(ModelFileError, match="unknown model format"):
        (tmp_path / "x.txt").write_text("hi")
        load_model(tmp_path / "x.txt")


# ----------------------------------------------------------------------------- ICT (real data)
def write_ict_folder_from_shared(shared: Path, out: Path, n_identities: int | None = None) -> Path:
    """An ICT-FaceKit FaceXModel folder (face-area OBJs) written from the shared npz."""
    src = shared / "ict-facekit"
    z = np.load(src / "ict_face_area_morphs.npz")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("generic_neutral_mesh.obj", "vertex_indices.json", "LICENSE"):
        (out / name).symlink_to(src / name)
    ids = z["identity"] if n_identities is None else z["identity"][:n_identities]
    faces = np.zeros((0, 3), np.int64)
    for k, v in enumerate(ids):
        write_obj(out / f"identity{k:03d}.obj", v, faces)
    for name, v in zip(z["expression_names"], z["expression"]):
        write_obj(out / f"{name}.obj", v, faces)
    return out


def test_ict_real_data(shared_data, tmp_path):
    if not (shared_data / "ict-facekit" / "ict_face_area_morphs.npz").exists():
        pytest.skip("ICT-FaceKit data absent")
    folder = write_ict_folder_from_shared(shared_data, tmp_path / "FaceXModel", n_identities=4)
    m = load_model(folder)
    z = np.load(shared_data / "ict-facekit" / "ict_face_area_morphs.npz")
    idx = json.loads((shared_data / "ict-facekit" / "vertex_indices.json").read_text())
    assert m.n_vertices == 9409 and m.n_identity == 4 and m.n_expression == 57
    assert m.expression_names[:53] == idx["expressions"]
    assert np.allclose(m.mean.numpy(), z["neutral"], atol=1e-5)
    assert np.allclose(m.identity_basis[2].numpy(), z["identity"][2] - z["neutral"], atol=2e-5)
    names = list(z["expression_names"])
    k = m.expression_names.index("jawOpen")
    assert np.allclose(m.expression_basis[k].numpy(), z["expression"][names.index("jawOpen")] - z["neutral"], atol=2e-5)
    lm = m.landmarks(m.mean[None])[0]
    assert np.allclose(lm.numpy(), z["neutral"][idx["idx_to_landmark_verts"]], atol=1e-5)
    assert m.uvs is not None and m.uv_faces.shape == m.faces.shape and m.n_faces > 18000
    assert (m.vertex_normals(m.mean[None])[0][idx["idx_to_landmark_verts"][30], 2] > 0.5)  # nose tip normal toward +z
    assert "MIT License" in m.license
    assert m.masks["lips"].sum() > 50 and m.masks["eyes"].sum() > 20
    # the CLI's info works on the folder
    from facerig.cli import main
    assert main(["model", "info", str(folder)]) == 0


def test_default_asset_rebuilds_identically(shared_data, tmp_path):
    """The model build (facerig.model.build, run by tools/build_default_model.py) is deterministic and
    the shipped asset is its output."""
    if not (shared_data / "ict-facekit" / "ict_face_area_morphs.npz").exists():
        pytest.skip("ICT-FaceKit data absent")
    from facerig.model.build import build_default_model

    out = tmp_path / "default_model.npz"
    np.savez_compressed(out, **build_default_model(shared_data, samples=2, log=lambda s: None))
    a, b = np.load(out), np.load(REPO / "assets" / "default_model.npz")
    assert set(a.files) == set(b.files)
    for k in a.files:
        if a[k].dtype.kind == "f":
            assert np.allclose(a[k], b[k], atol=1e-5), k
        else:
            assert np.array_equal(a[k], b[k]), k


def test_transfer_ibug68_recovers_similarity(default):
    """Landmarks transferred onto a rotated, scaled, shifted copy of the default face land on the
    transformed default landmarks (the alignment undoes the similarity)."""
    from scipy.spatial.transform import Rotation

    from facerig.model.loaders import transfer_ibug68
    R = Rotation.from_rotvec([0.08, -0.12, 0.05]).as_matrix()
    v = 1.1 * default.mean.numpy() @ R.T + np.array([1.0, -2.0, 3.0])
    f = default.faces.numpy()
    lm = transfer_ibug68(v, f).apply(torch.as_tensor(v)[None])[0].numpy()
    ref = 1.1 * default.landmarks(default.mean[None])[0].numpy() @ R.T + np.array([1.0, -2.0, 3.0])
    assert np.linalg.norm(lm - ref, axis=1).max() < 0.1  # < 1 mm


def test_bfm2009_matlab73_hdf5(tmp_path, default):
    """MATLAB v7.3 .mat files are HDF5 with transposed arrays."""
    import h5py
    v5 = tmp_path / "v5.mat"
    write_bfm2009(v5, default)
    d = scipy.io.loadmat(v5)
    p = tmp_path / "01_MorphableModel.mat"
    with h5py.File(p, "w") as f:
        for k in ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl"):
            f[k] = np.asarray(d[k]).T
    a, b = load_model(p, dtype=torch.float64), load_model(v5, dtype=torch.float64)
    assert torch.equal(a.identity_basis, b.identity_basis) and torch.equal(a.faces, b.faces)


def test_orientation_fix_on_closed_head():
    """Winding is fixed from the nose region, which also works for closed / holed heads."""
    import trimesh

    from facerig.model.loaders import orient_outward
    sphere = trimesh.creation.icosphere(3, radius=9.0)
    v = np.asarray(sphere.vertices).copy()
    v[np.argmax(v[:, 2])] += [0, 0, 2.0]  # a nose
    f = np.asarray(sphere.faces)
    front = v[f].mean(1)[:, 2] > 3  # cut a "mouth / eye" opening in the front
    f_open = f[~(front & (np.abs(v[f].mean(1)[:, 1]) < 1.5) & (np.abs(v[f].mean(1)[:, 0]) > 2))]
    for faces in (f, f_open):
        assert np.array_equal(orient_outward(v, faces), faces)  # trimesh spheres are outward
        assert np.array_equal(orient_outward(v, faces[:, [0, 2, 1]]), faces)
