"""SyntheticFaceDataset / SamplePhotoDataset: item layout, determinism, consistency with the decoder."""

import numpy as np
import pytest
import torch

from facerig.encoder.synthetic_data import SamplePhotoDataset, SyntheticFaceDataset
from facerig.face import FaceDecoder

S = 64


@pytest.fixture(scope="module")
def ds():
    return SyntheticFaceDataset(5, S, seed=2)


def test_item_layout_and_determinism(ds):
    it = ds[1]
    assert set(it) == {"image", "landmarks", "focal", "principal_point", "code", "source"}
    assert it["image"].shape == (S, S, 3) and it["image"].dtype == torch.float32
    assert 0 <= float(it["image"].min()) and float(it["image"].max()) <= 1
    assert it["landmarks"].shape == (468, 2) and it["focal"].shape == (1,) and it["principal_point"].shape == (2,)
    assert it["code"].shape == (sum(ds.dec.sizes.values()),) and int(it["source"]) == 1
    again = SyntheticFaceDataset(5, S, seed=2)[1]
    for k in it:
        assert torch.equal(it[k], again[k]), k
    assert not torch.equal(ds[2]["image"], it["image"])
    with pytest.raises(IndexError):
        ds[5]


def test_landmarks_and_focal_are_those_of_the_code_in_the_crop_camera(ds):
    dec = ds.dec
    for i in range(3):
        it = ds[i]
        code = dec.as_code(it["code"][None])
        assert float(code.focal) == float(it["focal"])
        lm = dec.landmarks2d(code, (S, S), it["principal_point"][None], kind="mediapipe468")[0]
        assert torch.allclose(lm, it["landmarks"], atol=1e-3)
        # the crop is cut around the face: landmarks inside, box side = crop / (1 + 2 margin)
        lo, hi = it["landmarks"].min(0).values, it["landmarks"].max(0).values
        side = float((hi - lo).max())
        assert S / (1 + 2 * 0.35) - 1 <= side <= S / (1 + 2 * 0.15) + 1
        assert bool((lo > -2).all() and (hi < S + 2).all())


def test_the_image_is_the_render_of_the_code(ds):
    """Without noise the face pixels match the decoder's render of the target code (colour gain included)."""
    clean = SyntheticFaceDataset(3, S, seed=4, noise=(0, 0))
    dec = FaceDecoder("default")
    it = clean[0]
    with torch.no_grad():
        out = dec(it["code"][None], (S, S), it["principal_point"][None])
    m = (out.skin[0, ..., 0] > 0.99) & (out.alpha[0, ..., 0] > 0)
    # erode: drop silhouette pixels
    m = m & torch.roll(m, 1, 0) & torch.roll(m, -1, 0) & torch.roll(m, 1, 1) & torch.roll(m, -1, 1)
    err = (out.image[0].clamp(0, 1) - it["image"]).abs().mean(-1)[m]
    assert m.sum() > 200 and float(err.median()) < 0.01


def test_cache_returns_the_same_items():
    a = SyntheticFaceDataset(3, S, seed=9, cache=True)
    first = a[0]
    second = a[0]
    assert 0 in a.cache
    for k in first:
        assert torch.allclose(first[k], second[k], atol=1e-6, equal_nan=True), k


def test_sample_photo_crops_have_landmarks_and_no_code():
    ph = SamplePhotoDataset(4, S, seed=0)
    assert "astronaut" in ph.names
    it = ph[0]
    assert int(it["source"]) == 0 and torch.isnan(it["code"]).all()
    lm = it["landmarks"].numpy()
    assert np.isfinite(lm).all() and (lm > 0).all() and (lm < S).all()
    assert float(it["focal"]) > 0
