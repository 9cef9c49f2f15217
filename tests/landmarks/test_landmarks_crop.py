"""Square crops: exact transforms with the pixel-centre convention, resampling, borders."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.landmarks import Crop, box_of, detect_landmarks, square_crop


def _ramp(h=120, w=110):
    """R = 2 j + 10, G = 2 i + 6, B = 50: pixel (i, j) has its centre at (j + .5, i + .5)."""
    i, j = np.mgrid[0:h, 0:w]
    return np.stack([2 * j + 10, 2 * i + 6, np.full_like(i, 50)], axis=2).astype(np.uint8)


def _ramp_value(u, v):
    """Continuous ramp value at (u, v) (pixel-centre convention)."""
    return np.stack([2 * (u - 0.5) + 10, 2 * (v - 0.5) + 6], axis=-1)


def test_round_trip_is_identity():
    rng = np.random.default_rng(1)
    img = np.zeros((50, 60, 3), np.uint8)
    for size, box in ((224, [3.2, 4.7, 40.1, 30.0]), (17, [-5.0, -2.0, 70.0, 80.0]), (64, [10, 10, 10.5, 12])):
        crop = square_crop(img, np.array(box), size=size, margin=0.3)
        p = rng.uniform(-20, 80, (7, 5, 3))
        np.testing.assert_allclose(crop.to_original(crop.to_crop(p)), p, atol=1e-9)
        np.testing.assert_allclose(crop.to_crop(crop.to_original(p)), p, atol=1e-9)
        # the window's corners map to the crop's corners; the window is square
        b = crop.box
        assert b[2] - b[0] == pytest.approx(b[3] - b[1])
        np.testing.assert_allclose(crop.to_crop(np.array([b[:2], b[2:]])), [[0, 0], [size, size]], atol=1e-9)
        np.testing.assert_allclose(crop.inverse @ crop.matrix, np.eye(3), atol=1e-12)
        assert crop.image.shape == (size, size, 3) and crop.image.dtype == np.uint8
        assert crop.to_crop(p)[..., 2] == pytest.approx(p[..., 2] * crop.scale)


def test_integer_window_at_scale_one_is_an_exact_subarray():
    img = np.random.default_rng(0).integers(0, 256, (90, 100, 3), dtype=np.uint8)
    crop = square_crop(img, np.array([17.0, 23.0, 57.0, 63.0]), size=40, margin=0.0)
    assert crop.scale == pytest.approx(1.0)
    np.testing.assert_array_equal(crop.image, img[23:63, 17:57])
    assert crop.valid.all()


@pytest.mark.parametrize("size", [96, 61, 30, 11])  # upscale (cubic), mild and strong downscale (box)
def test_crop_pixels_sample_the_original_at_the_mapped_points(size):
    img = _ramp()
    crop = square_crop(img, np.array([30.3, 35.9, 70.3, 75.9]), size=size, margin=0.1)
    jj, ii = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    centres = np.stack([jj, ii], axis=-1)  # crop pixel centres
    orig = crop.to_original(centres)
    expected = _ramp_value(orig[..., 0], orig[..., 1])
    # linear ramps are reproduced exactly by bilinear, bicubic and box resampling (up to rounding)
    assert np.abs(crop.image[..., :2].astype(float) - expected).max() <= 1.0
    assert (crop.image[..., 2] == 50).all()


def test_border_fill_and_valid_mask():
    img = np.full((40, 50, 3), 200, np.uint8)
    crop = square_crop(img, np.array([-20.0, -10.0, 20.0, 30.0]), size=40, margin=0.0, border_value=7)
    # window [-20, 20] x [-10, 30] at scale 1: columns 0..19 and rows 0..9 fall outside the image
    assert crop.valid[:, :20].sum() == 0 and crop.valid[10:, 20:].all() and not crop.valid[:10].any()
    assert (crop.image[~crop.valid] == 7).all() and (crop.image[crop.valid] == 200).all()
    rep = square_crop(img, np.array([-20.0, -10.0, 20.0, 30.0]), size=40, margin=0.0, border="replicate")
    assert (rep.image == 200).all()


def test_box_of_accepts_landmarks_detections_boxes_points(astronaut_face):
    f = astronaut_face
    np.testing.assert_array_equal(box_of(f), f.box)
    np.testing.assert_array_equal(box_of(f.detection), f.detection.box)
    np.testing.assert_array_equal(box_of(f.points), f.box)
    np.testing.assert_array_equal(box_of(f.xy), f.box)
    with pytest.raises(ValueError, match="landmarks_or_box"):
        box_of(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="invalid box"):
        box_of(np.array([5.0, 0, 1, 1]))
    with pytest.raises(ValueError, match="size"):
        square_crop(np.zeros((9, 9, 3), np.uint8), np.array([0, 0, 4, 4.0]), size=0)
    with pytest.raises(ValueError, match="border"):
        square_crop(np.zeros((9, 9, 3), np.uint8), np.array([0, 0, 4, 4.0]), border="wrap")


def test_landmarks_detected_in_a_crop_map_back_onto_the_original(astronaut, astronaut_face):
    crop = square_crop(astronaut, astronaut_face, size=256, margin=0.3)
    assert isinstance(crop, Crop) and 1.3 < crop.scale < 1.8
    again = detect_landmarks(crop.image)
    assert len(again) == 1
    back = crop.to_original(again[0].points)
    err = np.linalg.norm(back[:, :2] - astronaut_face.xy, axis=1)
    assert np.median(err) < 1.5  # original pixels; the model's own jitter is about 1 px
    # a half-pixel convention error would shift the mean residual by 0.5 * (1 - 1 / scale) px
    assert np.abs((back[:, :2] - astronaut_face.xy).mean(axis=0)).max() < 0.6
    # z (relative depth in pixels) scales with the crop: mapped back it matches the original's
    assert np.median(np.abs(back[:, 2] - astronaut_face.points[:, 2])) < 1.5
    assert np.ptp(back[:, 2]) == pytest.approx(np.ptp(astronaut_face.points[:, 2]), rel=0.05)


def test_pixel_convention_is_consistent_across_scales(astronaut, astronaut_face):
    """Face Mesh on crops at 0.6x and 3x, mapped back, lands at the same place on average.

    A half-pixel error in the conversion of mediapipe's coordinates would show up as a shift of
    0.5 * (1 / 0.6 - 1 / 3) = 0.67 px between the two scales (in original pixels).
    """
    margin = 0.6
    side = astronaut_face.size * (1 + 2 * margin)
    mean_residual = {}
    for scale in (0.6, 3.0):
        res = []
        for off in ((0.0, 0.0), (0.05, -0.04), (-0.06, 0.03)):
            crop = square_crop(astronaut, astronaut_face, size=int(round(side * scale)), margin=margin, center_offset=off)
            faces = detect_landmarks(crop.image, refine=False, small_faces=False)
            assert len(faces) == 1
            res.append((crop.to_original(faces[0].points)[:, :2] - astronaut_face.xy[:468]).mean(axis=0))
        mean_residual[scale] = np.mean(res, axis=0)
    assert np.abs(mean_residual[3.0] - mean_residual[0.6]).max() < 0.35


def test_to_original_image_inverts_the_crop():
    img = _ramp(120, 110)
    # scale 1, integer window: pasting the crop back reproduces the window exactly
    crop = square_crop(img, np.array([20.0, 30.0, 60.0, 70.0]), size=40, margin=0.0)
    back, mask = crop.to_original_image(crop.image)
    assert back.shape == img.shape and back.dtype == np.uint8 and mask.shape == img.shape[:2]
    assert mask.sum() == 40 * 40 and mask[30:70, 20:60].all()
    np.testing.assert_array_equal(back[mask], img[mask])
    assert (back[~mask] == 0).all()
    # scale 2.5 and a float, 5-channel image: values at original pixel centres follow the ramp
    crop = square_crop(img, np.array([30.3, 35.9, 70.3, 75.9]), size=100, margin=0.0)
    jj, ii = np.meshgrid(np.arange(100) + 0.5, np.arange(100) + 0.5)
    cu = crop.to_original(np.stack([jj, ii], axis=-1))
    five = np.concatenate([_ramp_value(cu[..., 0], cu[..., 1])] * 2 + [np.ones((100, 100, 1))], axis=-1)
    back, mask = crop.to_original_image(five.astype(np.float32))
    assert back.shape == (120, 110, 5)
    i, j = np.nonzero(mask)
    inner = (i > 37) & (i < 74) & (j > 32) & (j < 69)  # away from the window's edge
    expected = _ramp_value(j[inner] + 0.5, i[inner] + 0.5)
    np.testing.assert_allclose(back[i[inner], j[inner], :2], expected, atol=1e-3)
    np.testing.assert_allclose(back[i[inner], j[inner], 4], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="crop_image"):
        crop.to_original_image(np.zeros((5, 5)))


@pytest.mark.parametrize("border", ["constant", "replicate"])
def test_strong_downscale_of_a_large_image(border):
    # a 2400 x 2000 ramp (0.1 grey level per pixel), window of 1500 px -> 40 px crop (s = 0.027)
    h, w = 2000, 2400
    i, j = np.mgrid[0:h, 0:w]
    img = np.stack([0.1 * j, 0.1 * i, np.full_like(i, 50.0)], axis=2).round().astype(np.uint8)
    crop = square_crop(img, np.array([500.3, 300.7, 2000.3, 1800.7]), size=40, margin=0.0, border=border)
    assert crop.scale == pytest.approx(40 / 1500)
    jj, ii = np.meshgrid(np.arange(40) + 0.5, np.arange(40) + 0.5)
    orig = crop.to_original(np.stack([jj, ii], axis=-1))
    expected = np.stack([0.1 * (orig[..., 0] - 0.5), 0.1 * (orig[..., 1] - 0.5)], axis=-1)
    # box filtering a quantised linear ramp: within rounding of the value at the pixel centre
    assert np.abs(crop.image[..., :2] - expected).max() <= 1.5
    # a window reaching past the image: outside pixels are border, inside ones still exact
    crop = square_crop(img, np.array([-700.0, -500.0, 800.0, 1000.0]), size=40, margin=0.0, border=border)
    orig = crop.to_original(np.stack([jj, ii], axis=-1))
    inside = crop.valid.copy()
    inside[crop.valid] &= (orig[crop.valid] > 40).all(axis=1)  # away from the image edge
    expected = np.stack([0.1 * (orig[..., 0] - 0.5), 0.1 * (orig[..., 1] - 0.5)], axis=-1)
    assert np.abs(crop.image[inside][:, :2] - expected[inside]).max() <= 1.5
    if border == "constant":
        # crop pixels whose centre is outside the image, away from its edge, are pure border
        far = ~crop.valid
        far[:, -2:] = far[-2:, :] = False
        far[:-2] &= ~crop.valid[2:]
        far[:, :-2] &= ~crop.valid[:, 2:]
        assert far.sum() > 100 and (crop.image[far] == 0).all()
