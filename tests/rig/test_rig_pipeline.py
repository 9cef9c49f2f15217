"""facerig.rig end to end on a tiny synthetic clip: outputs, glTF validity, resume, bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from facerig.cli import main
from facerig.face import FitOptions
from facerig.rig import RigOptions, build_rig
from facerig.video import VideoReader, VideoWriter

FAST = RigOptions(keyframes=3, key_photo_iterations=5, key_fit=FitOptions(photo_iterations=3), texture_size=64, chunk=3,
                  preview_height=96)


@pytest.fixture(scope="module")
def built(tiny_clip, tmp_path_factory):
    path, gt = tiny_clip
    out = tmp_path_factory.mktemp("rig")
    return build_rig(path, out, options=FAST), out, gt


def test_outputs(built, gltf_validator):
    from test_model_export import read_glb  # tests/model's reader (on sys.path via conftest)

    rig, out, gt = built
    T = 10
    for name in ("rig.glb", "texture.png", "tracking.csv", "preview.mp4", "preview.jpg", "report.png", "rig.json",
                 "blendshapes/neutral.obj", "blendshapes/jawOpen.obj", "blendshapes/eyeBlink_L.obj"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert len(list((out / "blendshapes").glob("*.obj"))) == 54
    assert rig.weights.shape == (T, 53) and rig.found.all() and rig.fps == pytest.approx(10)
    assert np.all(rig.weights >= 0) and np.all(rig.weights <= 1)
    assert rig.metrics["landmark_error_px"] < 5.0
    # rows: one per frame, with the face flag and the named weights
    rows = list(csv.DictReader(open(out / "tracking.csv")))
    assert len(rows) == T and rows[0]["face_found"] == "1" and "jawOpen" in rows[0]
    assert float(rows[4]["jawOpen"]) == pytest.approx(rig.weights[4, rig.names.index("jawOpen")], abs=1e-4)
    # preview: three panels side by side, one frame per video frame
    with VideoReader(out / "preview.mp4") as pv:
        assert pv.frame_count == T and pv.size == (3 * 96, 96)
    gltf, acc = read_glb(out / "rig.glb")
    assert gltf["meshes"][0]["extras"]["targetNames"] == rig.names
    anim = gltf["animations"][0]
    assert {c["target"]["path"] for c in anim["channels"]} == {"weights", "rotation", "translation"}
    for smp in anim["samplers"]:
        times = acc(smp["input"])
        assert len(times) == T and np.allclose(np.diff(times), 0.1, atol=1e-6)
    w = acc(anim["samplers"][0]["output"]).reshape(T, 53)
    assert np.allclose(w, rig.weights, atol=1e-6)
    assert gltf["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"] == 0
    report = gltf_validator(out / "rig.glb")
    assert report["issues"]["numErrors"] == 0, report["issues"]


def test_personalised_shapes(built):
    rig, _, gt = built
    # the neutral is the person's (not the generic mean) and the transferred shapes stay close to
    # the generic ones (deformation transfer changes them by a fraction of their size)
    m = rig.model()
    from facerig.model import load_model
    base = load_model("default")
    assert np.abs(rig.neutral - base.mean.numpy()).max() > 0.05
    d = np.linalg.norm(rig.blendshapes - base.expression_basis.numpy(), axis=-1).mean()
    assert d < 0.2 * np.linalg.norm(base.expression_basis.numpy(), axis=-1).mean()
    assert m.n_expression == 53 and m.n_identity == 0


def test_resume_gives_the_same_result(built, tiny_clip, tmp_path, monkeypatch):
    rig, _, _ = built
    path, _ = tiny_clip
    from facerig.rig.track import FrameTracker

    calls = {"n": 0}
    orig = FrameTracker.fit_landmarks

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    monkeypatch.setattr(FrameTracker, "fit_landmarks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_rig(path, tmp_path, options=FAST)
    assert not (tmp_path / "rig.glb").exists()
    chunks = sorted(p.name.split("_")[-1] for p in (tmp_path / "cache").glob("track_*.npz"))
    assert chunks == ["0000000.npz", "0000003.npz"]  # frames 0-5 are kept
    monkeypatch.setattr(FrameTracker, "fit_landmarks", orig)
    again = build_rig(path, tmp_path, options=FAST)
    assert again.metrics["tracking_fps"] is not None
    np.testing.assert_array_equal(again.weights, rig.weights)
    np.testing.assert_array_equal(again.rotations, rig.rotations)
    np.testing.assert_array_equal(again.identity, rig.identity)
    assert (tmp_path / "tracking.csv").read_text() == (built[1] / "tracking.csv").read_text()


def test_faceless_video_exits_2(tmp_path, capsys):
    path = tmp_path / "wall.avi"
    rng = np.random.default_rng(0)
    with VideoWriter(path, 10, (96, 96)) as vw:
        for _ in range(4):
            vw.write(np.clip(rng.normal(120, 20, (96, 96, 3)), 0, 255).astype(np.uint8))
    assert main(["rig", str(path), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no face found in" in err and "wall.avi" in err and "4 frames" in err
    assert not (tmp_path / "out" / "rig.glb").exists()


def test_corrupt_and_missing_video(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    assert main(["rig", str(bad), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "mp4v" in err and "MJPG" in err
    assert main(["rig", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_folder_with_a_lost_face(tiny_clip, tmp_path):
    """A folder of frames where one frame shows no face: marked in tracking.csv, interpolated."""
    from facerig.io import write_image

    path, _ = tiny_clip
    frames = tmp_path / "frames"
    for i, rgb in VideoReader(path, stop=6):
        write_image(frames / f"{i:04d}.png", np.full_like(rgb, 128) if i == 3 else rgb)
    opts = RigOptions(keyframes=2, key_photo_iterations=0, key_fit=FitOptions(photo_iterations=0), texture_size=0, preview=False)
    rig = build_rig(frames, tmp_path / "out", fps=10, options=opts)
    assert rig.found.tolist() == [True, True, True, False, True, True]
    rows = list(csv.DictReader(open(tmp_path / "out" / "tracking.csv")))
    assert rows[3]["face_found"] == "0" and rows[3]["landmark_error_px"] == ""
    j = rig.names.index("jawOpen")
    assert rig.weights[3, j] == pytest.approx(0.5 * (rig.weights[2, j] + rig.weights[4, j]))
    assert not (tmp_path / "out" / "texture.png").exists() and rig.texture is None


def test_corrective_shapes(built, tiny_clip):
    """Low-rank correctives fitted to the landmark residuals lower the landmark error; the rig
    gets them as extra named morph targets (tracking reuses the cached landmarks and identity)."""
    rig, out, _ = built
    path, _ = tiny_clip
    opts = RigOptions(**{**FAST.__dict__, "correctives": 2})
    rc = build_rig(path, None, options=opts, cache_dir=out / "cache")
    assert rc.names[-2:] == ["corrective_1", "corrective_2"] and rc.blendshapes.shape[0] == 55
    assert rc.weights.shape == (10, 55)
    np.testing.assert_array_equal(rc.weights[:, :53], rig.weights)
    m = rc.metrics
    assert m["landmark_error_correctives_px"] < m["landmark_error_rig_px"]
    assert rc.model().n_expression == 55
