"""``prepare_faces`` and ``PreparedFaces``: crops + landmarks of a synthetic video and a photo folder,
resumability (byte-identical after an interruption), the crop camera, fitter codes in the crop camera."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A folder: a 6-frame synthetic face video (mp4v), a faceless image, a corrupt file; + ground truth."""
    import cv2

    from facerig.face.synthetic import SyntheticFaces
    from facerig.video import VideoWriter

    d = tmp_path_factory.mktemp("src")
    gen = SyntheticFaces(size=256, yaw=20, pitch=10, roll=5)
    code, *_ = gen.random_code(np.random.default_rng(0))
    bg = gen.photos[0][:256, :256]
    gt = []
    with VideoWriter(d / "clip.mp4", 10, (256, 256)) as w:
        for k in range(6):
            c = code.clone()
            c.rotation = c.rotation + torch.tensor([[0.0, 0.03 * k, 0.0]])
            w.write(gen.render(c, bg)[0])
            with torch.no_grad():
                gt.append(gen.dec.landmarks2d(c, (256, 256), kind="mediapipe468")[0].double().numpy())
    cv2.imwrite(str(d / "blank.png"), np.full((200, 300, 3), 90, np.uint8))
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
    return d, np.stack(gt)


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory):
    from facerig.encoder.data import prepare_faces

    out = tmp_path_factory.mktemp("data") / "faces"
    summary = prepare_faces([sources[0]], out, shard_size=4, progress=False, log=None)
    return out, summary


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_counts_and_files(prepared, sources):
    from facerig.encoder.data import read_index

    out, s = prepared
    assert (s.photos, s.frames, s.crops, s.faceless, len(s.unreadable), s.skipped) == (2, 6, 6, 1, 1, 0)
    assert "corrupt.jpg" in s.unreadable[0][1] and "cannot decode" in s.unreadable[0][1]
    assert s.total_crops == 6
    idx = read_index(out)
    # sorted inputs: blank.png (photo shard), clip.mp4 (frames 0-3, 4-7), corrupt.jpg (photo shard)
    assert [r["kind"] for r in idx] == ["photos", "video", "video", "photos"]
    assert [r["crops"] for r in idx] == [0, 4, 2, 0]
    assert idx[0]["faceless"] == 1 and idx[2]["end"] and not idx[1]["end"]
    files = sorted(p.relative_to(out).as_posix() for p in (out / "crops").rglob("*.jpg"))
    assert files == [f"crops/000001/{i:05d}.jpg" for i in range(4)] + [f"crops/000002/{i:05d}.jpg" for i in range(2)]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    lines = s.lines(out)
    assert lines[0].startswith("summary: 6 crops from 2 photos and 6 video frames")
    assert "skipped 1 without a face, 1 unreadable, 0 already prepared" in lines[0]


def test_items_shapes_and_landmarks_on_the_face(prepared, sources):
    from facerig.encoder.data import PreparedFaces

    out, _ = prepared
    ds = PreparedFaces(out)
    assert len(ds) == 6
    gt = sources[1]
    for i in range(len(ds)):
        it = ds[i]
        assert set(it) == {"image", "landmarks", "focal", "principal_point", "code", "source"}
        assert it["image"].shape == (224, 224, 3) and it["image"].dtype == torch.float32
        assert 0.0 <= float(it["image"].min()) and float(it["image"].max()) <= 1.0
        assert it["landmarks"].shape == (468, 2) and it["landmarks"].dtype == torch.float32
        assert it["focal"].shape == (1,) and it["principal_point"].shape == (2,)
        assert it["code"].shape == (208,) and torch.isnan(it["code"]).all()
        assert it["source"].dtype == torch.int64 and it["source"].ndim == 0 and int(it["source"]) == 0
        info = ds.info(i)
        assert info["source"].endswith("clip.mp4") and info["frame"] == i
        box = np.asarray(info["box"])
        s = 224 / (box[2] - box[0])
        truth = gt[i] * s - box[:2] * s  # the generator's projected landmarks, in crop pixels
        err_src = np.linalg.norm(it["landmarks"].numpy() - truth, axis=1).mean() / s
        assert err_src < 6.0, err_src  # MediaPipe on these renders: ~4 px
        # the crop camera: the source camera (f = 2.5 x 256, centre (128, 128)) mapped into the crop
        assert float(it["focal"][0]) == pytest.approx(2.5 * 256 * s, rel=1e-5)
        np.testing.assert_allclose(it["principal_point"].numpy(), (128.0 - box[:2]) * s, atol=1e-3)
        # the face is in the middle of its crop
        assert 60 < float(it["landmarks"][:, 0].mean()) < 164 and 60 < float(it["landmarks"][:, 1].mean()) < 164


def _colours_at(image, points):
    """Bilinear colours (N, 3) of an (S, S, 3) tensor at pixel points (N, 2) (centres at +0.5)."""
    import cv2

    p = points.numpy().astype(np.float32) - 0.5
    return cv2.remap(image.numpy(), p[:, 0][None], p[:, 1][None], cv2.INTER_LINEAR)[0]


def test_resize_and_augment_keep_the_camera_consistent(prepared, monkeypatch):
    from facerig.encoder import data
    from facerig.encoder.data import PreparedFaces

    out, _ = prepared
    full, small = PreparedFaces(out)[2], PreparedFaces(out, size=112)[2]
    assert small["image"].shape == (112, 112, 3)
    np.testing.assert_allclose(small["landmarks"].numpy(), full["landmarks"].numpy() / 2, atol=1e-4)
    np.testing.assert_allclose(small["focal"].numpy(), full["focal"].numpy() / 2, rtol=1e-6)
    np.testing.assert_allclose(small["principal_point"].numpy(), full["principal_point"].numpy() / 2, atol=1e-4)
    torch.manual_seed(3)
    aug = PreparedFaces(out, augment=True)
    a, b = aug[2], aug[2]
    assert not torch.equal(a["landmarks"], b["landmarks"])  # random re-crops
    for it in (a, b):
        # a similarity re-crop keeps the normalised image coordinates (u - c) / f of every landmark
        ref = (full["landmarks"] - full["principal_point"]) / full["focal"]
        np.testing.assert_allclose(((it["landmarks"] - it["principal_point"]) / it["focal"]).numpy(), ref.numpy(),
                                   atol=1e-5)
        assert it["image"].shape == (224, 224, 3) and 0 <= float(it["image"].min()) <= float(it["image"].max()) <= 1
    # without the colour jitter, the warped image shows at each moved landmark what the original showed
    monkeypatch.setattr(data, "_color_jitter", lambda im: im)
    c = aug[2]
    ref = _colours_at(full["image"], full["landmarks"])
    diff = np.abs(_colours_at(c["image"], c["landmarks"]) - ref).mean()
    wrong = np.abs(_colours_at(c["image"], full["landmarks"] + 15.0) - ref).mean()
    assert diff < 0.02 and wrong > 2 * diff, (diff, wrong)


def test_degrade_keeps_the_pixel_grid_and_the_camera(prepared, monkeypatch):
    from facerig.encoder import data
    from facerig.encoder.augment import DegradeOptions
    from facerig.encoder.data import PreparedFaces

    out, _ = prepared
    with pytest.raises(ValueError, match="degrade"):
        PreparedFaces(out, degrade=True)
    monkeypatch.setattr(data, "_color_jitter", lambda im: im)
    full = PreparedFaces(out)[2]
    opts = DegradeOptions(low_res=1.0, low_res_side=(60.0, 80.0), blur=1.0, noise=1.0, jpeg=1.0, cast=0.0)
    torch.manual_seed(4)
    it = PreparedFaces(out, augment=True, degrade=opts)[2]
    assert it["image"].shape == full["image"].shape and it["image"].dtype == torch.float32
    ref = (full["landmarks"] - full["principal_point"]) / full["focal"]
    np.testing.assert_allclose(((it["landmarks"] - it["principal_point"]) / it["focal"]).numpy(), ref.numpy(), atol=1e-5)
    # the degraded image still shows at each landmark what the original showed there (a 3x smaller
    # face, blurred and compressed: colours within a few percent), and not what it showed 15 px away
    ref_c = _colours_at(full["image"], full["landmarks"])
    diff = np.abs(_colours_at(it["image"], it["landmarks"]) - ref_c).mean()
    wrong = np.abs(_colours_at(it["image"], full["landmarks"] + 15.0) - ref_c).mean()
    assert diff < 0.05 and wrong > 1.5 * diff, (diff, wrong)


def test_resume_after_interruption_is_identical(prepared, sources, tmp_path, monkeypatch):
    from facerig.encoder import data

    out, _ = prepared
    again = data.prepare_faces([sources[0]], out, shard_size=4, progress=False, log=None)
    assert (again.skipped, again.crops, again.shards, again.total_crops) == (3, 0, 0, 6)

    other = tmp_path / "faces"
    calls = {"n": 0}
    real = data._Writer.commit

    def flaky(self, index, code_sizes):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # stopped while the second video shard was being written
        return real(self, index, code_sizes)

    monkeypatch.setattr(data._Writer, "commit", flaky)
    with pytest.raises(KeyboardInterrupt):
        data.prepare_faces([sources[0]], other, shard_size=4, progress=False, log=None)
    monkeypatch.setattr(data._Writer, "commit", real)
    assert len(data.read_index(other)) == 2
    resumed = data.prepare_faces([sources[0]], other, shard_size=4, progress=False, log=None)
    assert resumed.skipped == 1 and resumed.frames == 2 and resumed.total_crops == 6
    assert _tree(other) == _tree(out)
    with pytest.raises(ValueError, match="other settings"):
        data.prepare_faces([sources[0]], other, size=128, shard_size=4, progress=False, log=None)


def test_stride_and_max_frames(sources, tmp_path):
    from facerig.encoder.data import PreparedFaces, prepare_faces

    clip = sources[0] / "clip.mp4"
    s = prepare_faces(clip, tmp_path / "a", stride=2, size=96, image_format="png", progress=False, log=None)
    assert s.frames == 3 and s.crops == 3
    ds = PreparedFaces(tmp_path / "a")
    assert [ds.info(i)["frame"] for i in range(3)] == [0, 2, 4] and ds[0]["image"].shape == (96, 96, 3)
    assert ds.info(0)["file"].endswith(".png")
    s = prepare_faces(clip, tmp_path / "b", max_frames=4, shard_size=3, progress=False, log=None)
    assert s.frames == 4
    again = prepare_faces(clip, tmp_path / "b", max_frames=4, shard_size=3, progress=False, log=None)
    assert again.skipped == 1 and again.frames == 0


def test_crop_camera_round_trip():
    """A code in the crop camera maps to the full-image camera and projects the same landmarks."""
    from facerig.encoder.data import code_from_crop, code_to_crop, crop_camera
    from facerig.face import FaceDecoder
    from facerig.landmarks import square_crop
    from facerig.model import GraphicCode

    dec = FaceDecoder("default", dtype=torch.float64)
    H, W = 300, 420
    code = dec.zero_code(1, image_size=max(H, W), dtype=torch.float64)
    code.rotation = torch.tensor([[0.1, -0.4, 0.05]], dtype=torch.float64)
    code.translation = code.translation + torch.tensor([[4.0, -2.0, 30.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    code.identity = torch.randn(1, code.identity.shape[1], generator=g, dtype=torch.float64) * dec.model.identity_std
    full = dec.landmarks2d(code, (H, W), kind="mediapipe468")[0].numpy()  # principal point = image centre
    crop = square_crop(np.zeros((H, W, 3), np.uint8), full, size=128, margin=0.3)
    f_crop, pp, f_src = crop_camera(crop)
    assert f_src == pytest.approx(2.5 * W) and f_crop == pytest.approx(2.5 * W * crop.scale)
    code.focal = torch.full_like(code.focal, f_src)
    c_crop = code_to_crop(code, crop)
    in_crop = dec.landmarks2d(c_crop, (128, 128), torch.from_numpy(pp[None]), kind="mediapipe468")[0].numpy()
    np.testing.assert_allclose(in_crop, crop.to_crop(full), atol=1e-3)
    back = code_from_crop(c_crop, crop)
    proj = dec.landmarks2d(back, (H, W), kind="mediapipe468")[0].numpy()
    np.testing.assert_allclose(proj, full, atol=1e-3)
    np.testing.assert_allclose(back.to_vector().numpy(), code.to_vector().numpy(), rtol=1e-12)
    assert isinstance(back, GraphicCode)


def test_fit_mode_stores_the_fitters_code_in_the_crop_camera(sources, tmp_path):
    from facerig.encoder.data import SOURCE_FITTED, PreparedFaces, prepare_faces
    from facerig.face import FaceDecoder, FitOptions

    dec = FaceDecoder("default")
    s = prepare_faces(sources[0] / "clip.mp4", tmp_path / "fit", max_frames=1, fit=True, model=dec,
                      fit_options=FitOptions(photo_iterations=0), progress=False, log=None)
    assert s.fitted == 1
    ds = PreparedFaces(tmp_path / "fit", size=112)
    it = ds[0]
    assert int(it["source"]) == SOURCE_FITTED and torch.isfinite(it["code"]).all()
    code = dec.as_code(it["code"][None])
    assert float(code.focal) == pytest.approx(float(it["focal"]), rel=1e-5)
    lm = dec.landmarks2d(code, (112, 112), it["principal_point"][None], kind="mediapipe468")[0]
    err = (lm - it["landmarks"]).norm(dim=-1).mean()
    assert float(err) < 2.0, float(err)  # the landmark fit, seen in the (resized) crop


def test_corrupt_video_is_reported_once(tmp_path):
    from facerig.encoder.data import prepare_faces

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video" * 50)
    s = prepare_faces(bad, tmp_path / "d", progress=True, log=None)
    assert s.crops == 0 and len(s.unreadable) == 1 and "cannot read video" in s.unreadable[0][1]
    again = prepare_faces(bad, tmp_path / "d", progress=False, log=None)
    assert again.skipped == 1 and not again.unreadable
