"""facerig.video: round trips through the two codecs that work here, folders, bad files, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.io import write_image
from facerig.video import VideoError, VideoReader, VideoWriter, is_video


def _frames(n=12, W=64, H=48):
    """Smooth, distinct frames (a moving gradient + a block whose position encodes the index)."""
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for i in range(n):
        f = np.stack([(xx * 4 + i * 10) % 256, (yy * 5) % 256, np.full_like(xx, 128)], -1).astype(np.uint8)
        f[8:24, 4 * i % (W - 16): 4 * i % (W - 16) + 16] = (255, 0, 0)
        out.append(f)
    return out


@pytest.mark.parametrize("ext,tol", [(".avi", 8.0), (".mp4", 12.0)])
def test_round_trip(tmp_path, ext, tol):
    frames = _frames()
    path = tmp_path / f"clip{ext}"
    with VideoWriter(path, 15, (64, 48)) as w:
        for f in frames:
            w.write(f)
    assert w.frames == len(frames)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    with VideoReader(path) as r:
        assert r.frame_count == len(frames) and r.size == (64, 48) and r.fps == pytest.approx(15)
        got = list(r)
    assert [i for i, _ in got] == list(range(len(frames)))
    err = np.mean([np.abs(g.astype(float) - f).mean() for (_, g), f in zip(got, frames)])
    assert err < tol, err
    assert got[0][1].shape == (48, 64, 3) and got[0][1].dtype == np.uint8
    # red stays red (RGB order, not BGR)
    assert got[0][1][16, 8, 0] > 200 and got[0][1][16, 8, 2] < 60
    # range and stride
    r = VideoReader(path, start=2, stop=11, stride=3)
    assert r.frame_count == 3 and r.fps == pytest.approx(5)
    sub = list(r)
    assert [i for i, _ in sub] == [2, 5, 8]
    assert np.abs(sub[1][1].astype(float) - got[5][1]).max() == 0  # the same decoded frame
    assert len(list(r)) == 3  # iterates again from the start


def test_folder_of_frames(tmp_path):
    frames = _frames(5)
    for i, f in enumerate(frames):
        write_image(tmp_path / f"f{i:03d}.png", f)
    (tmp_path / "notes.txt").write_text("not a frame")
    r = VideoReader(tmp_path, stride=2, fps=24)
    assert r.frame_count == 3 and r.size == (64, 48) and r.fps == pytest.approx(12)
    got = list(r)
    assert [i for i, _ in got] == [0, 2, 4]
    assert all(np.array_equal(g, frames[i]) for i, g in got)  # PNG is lossless
    assert VideoReader(tmp_path).fps == 30.0


def test_bad_inputs(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(VideoError, match="mp4v") as info:
        VideoReader(bad)
    assert isinstance(info.value, ValueError) and "MJPG" in str(info.value)
    with pytest.raises(VideoError, match="does not exist"):
        VideoReader(tmp_path / "missing.avi")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="no image frames"):
        VideoReader(empty)
    with pytest.raises(ValueError, match="stride"):
        VideoReader(empty, stride=0)
    with pytest.raises(ValueError, match=".mp4"):
        VideoWriter(tmp_path / "x.gif", 10, (64, 48))
    assert is_video("a/B.MP4") and is_video("x.webm") and not is_video("x.png")


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "clip.avi"
    with pytest.raises(RuntimeError):
        with VideoWriter(path, 10, (64, 48)) as w:
            w.write(_frames(1)[0])
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    w = VideoWriter(path, 10, (64, 48))
    with pytest.raises(ValueError, match="64x48"):
        w.write(np.zeros((10, 10, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_shipped_sample_clip():
    """The README's main command runs on assets/sample_face.mp4 (tools/make_sample_video.py)."""
    from facerig.assets import asset_path

    path = asset_path("sample_face.mp4")
    assert path.stat().st_size <= 2_000_000
    with VideoReader(path) as r:
        assert r.frame_count >= 36 and r.fps == pytest.approx(12) and r.size == (288, 288)
        first = next(iter(r))[1]
    assert first.std() > 20  # a real picture, not a blank frame
