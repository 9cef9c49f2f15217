"""LandmarkTracker on short sequences made from astronaut()."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.landmarks import LandmarkTracker, detect_landmarks

STEP = 3  # pixels per frame


def _frames(astronaut, n=10, step=STEP):
    return [np.ascontiguousarray(astronaut[40:360, 60 + step * k: 380 + step * k]) for k in range(n)]


@pytest.mark.parametrize("smoothing", [False, True])
def test_tracker_follows_a_shifting_face(astronaut, smoothing):
    frames = _frames(astronaut)
    ref = detect_landmarks(frames[0])[0].xy
    with LandmarkTracker(smoothing=smoothing) as tr:
        out = tr.track(frames)
    assert all(o is not None for o in out)
    assert {o.track_id for o in out} == {0}
    for k, o in enumerate(out):
        assert o.points.shape == (478, 3) and o.smoothed == smoothing
        shift = (o.xy - ref).mean(axis=0)
        # the content moves left by STEP px per frame; smoothing may lag by a bounded amount
        tol = 1.0 if not smoothing else 2.5
        assert shift[0] == pytest.approx(-STEP * k, abs=tol)
        assert abs(shift[1]) < tol
        assert o.score == pytest.approx(out[0].score)  # confidence of the seeding detection


def test_lost_frame_gives_none_then_redetects(astronaut):
    frames = _frames(astronaut, n=6)
    frames.insert(3, np.zeros_like(frames[0]))
    with LandmarkTracker() as tr:
        out = [tr.process(f) for f in frames]
    assert out[3] is None
    assert all(o is not None for i, o in enumerate(out) if i != 3)
    assert [o.track_id for o in out if o is not None] == [0, 0, 0, 1, 1, 1]
    assert np.isfinite(out[4].score)


def test_smoothing_reduces_jitter_on_a_still_face(astronaut):
    rng = np.random.default_rng(0)
    base = astronaut[40:360, 60:380].astype(np.int16)
    frames = [np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8) for _ in range(24)]
    jitter = {}
    for smoothing in (False, True):
        with LandmarkTracker(smoothing=smoothing) as tr:
            pts = np.array([o.xy for o in tr.track(frames)])
        jitter[smoothing] = np.linalg.norm(np.diff(pts[4:], axis=0), axis=2).mean()
    assert jitter[False] > 0.02  # the noise does make the raw landmarks move
    assert jitter[True] < 0.6 * jitter[False]


def test_tracker_input_checks(astronaut):
    frames = _frames(astronaut, n=2)
    with LandmarkTracker(smoothing=False, refine=False) as tr:
        assert tr.process(frames[0], timestamp=1.0).points.shape == (468, 3)
        with pytest.raises(ValueError, match="timestamp"):
            tr.process(frames[1], timestamp=1.0)
        with pytest.raises(ValueError, match="size changed"):
            tr.process(frames[1][:300], timestamp=2.0)
        tr.reset()
        assert tr.process(frames[1][:300]) is not None
    with pytest.raises(ValueError, match="fps"):
        LandmarkTracker(fps=0)
    with pytest.raises(ValueError, match="min_cutoff"):
        LandmarkTracker(min_cutoff=-1)


def test_track_video_file(astronaut, tmp_path):
    import cv2

    frames = _frames(astronaut, n=8)
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 320))
    assert writer.isOpened()
    for f in frames:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()
    ref = detect_landmarks(frames[0])[0].xy
    with LandmarkTracker(smoothing=False) as tr:
        faces, times = tr.track_video(path)
        assert len(faces) == 8 and times.shape == (8,) and np.all(np.diff(times) > 0)
        np.testing.assert_allclose(np.diff(times), 1 / 25.0, rtol=0.05)
        for k, f in enumerate(faces):
            assert abs((f.xy - ref).mean(axis=0)[0] + STEP * k) < 1.5  # JPEG-compressed frames
        sub, t2 = tr.track_video(path, max_frames=3, stride=2)
        assert len(sub) == 3 and np.allclose(t2, times[[0, 2, 4]])
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video" * 50)
    from facerig.io import ImageReadError

    with pytest.raises(ImageReadError, match="bad.avi"):
        LandmarkTracker().track_video(bad)


def test_two_faces_keep_their_track_ids(astronaut):
    face = astronaut[20:300, 90:370]
    frames = []
    for k in range(6):
        img = np.full((300, 600, 3), 90, np.uint8)
        img[10:290, 2 * k: 280 + 2 * k] = face
        img[10:290, 318 - 2 * k: 598 - 2 * k] = face[:, ::-1]
        frames.append(img)
    with LandmarkTracker(max_faces=2) as tr:
        outs = [tr.process_all(f) for f in frames]
    left_id = min(outs[0], key=lambda f: f.box[0]).track_id
    for faces in outs:
        assert sorted(f.track_id for f in faces) == [0, 1]
        left = min(faces, key=lambda f: f.box[0])
        right = max(faces, key=lambda f: f.box[0])
        assert left.track_id == left_id  # each track stays on its own face
        assert right.box[0] > 300 > left.box[2]
    l0 = min(outs[0], key=lambda f: f.box[0])
    l5 = min(outs[5], key=lambda f: f.box[0])
    r0 = max(outs[0], key=lambda f: f.box[0])
    r5 = max(outs[5], key=lambda f: f.box[0])
    # the left face moves right by 2 px per frame, the right face moves left
    assert (l5.xy - l0.xy).mean(axis=0)[0] == pytest.approx(10.0, abs=2.5)
    assert (r5.xy - r0.xy).mean(axis=0)[0] == pytest.approx(-10.0, abs=2.5)
