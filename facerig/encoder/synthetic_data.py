"""Training data generated on the fly: synthetic faces with known codes, and augmented crops of the
few real face photos that ship with installed packages.

Both datasets yield the encoder's item dict (default-collatable, channels-last):

=====================  =================================================================================
key                    value
=====================  =================================================================================
``image``              (S, S, 3) float32 in [0, 1], the face crop
``landmarks``          (468, 2) float32, Face Mesh landmarks in crop pixels (x, y); NaN when unknown
``focal``              (1,) float32, the crop camera's focal length, crop pixels
``principal_point``    (2,) float32, the crop camera's principal point, crop pixels
``code``               (D,) float32 target code (``GraphicCode.to_vector`` layout, crop camera); NaN if unknown
``source``             int64: 0 real photo, 1 synthetic (code = ground truth), 2 real with the fitter's code
=====================  =================================================================================

:class:`SyntheticFaceDataset` draws a face from :class:`facerig.face.synthetic.SyntheticFaces`
(the fitting benchmark's distribution: a virtual ``photo_size`` photo with focal ``2.5 x photo_size``)
and cuts a square crop around its true landmarks the way :func:`facerig.landmarks.square_crop`
would (random margin, shift and scale), rendering the face directly at the crop's resolution through
the crop camera over a random background photo. Colour jitter is a per-channel gain (folded into the
target's SH light, so the target stays exact) plus Gaussian pixel noise. Item ``i`` depends only on
``(seed, i)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from facerig.face.decoder import FaceDecoder, make_camera
from facerig.face.synthetic import SyntheticFaces, background_photos, random_crop
from facerig.landmarks import detect_landmarks, square_crop
from facerig.model import GraphicCode, load_model

__all__ = ["SyntheticFaceDataset", "SamplePhotoDataset", "sample_face_photos"]


class SyntheticFaceDataset(Dataset):
    """``length`` random synthetic faces as encoder items (see the module docstring).

    Args:
        length: number of items (item ``i`` is seeded by ``(seed, i)``).
        size: crop side S (pixels).
        seed: base seed (use different seeds for training and validation sets).
        photo_size: side of the virtual photo the face is placed in (bench_fit: 256).
        margin: (lo, hi) crop margin range (fraction of the landmark box's longer side per side).
        shift: std of the crop centre's offset, fraction of the box side.
        color_gain: std of the per-channel gain (colour jitter, folded into the SH target).
        noise: (lo, hi) range of the Gaussian pixel noise std.
        decoder: the :class:`~facerig.face.FaceDecoder` (default model).
        generator: keyword arguments of :class:`~facerig.face.synthetic.SyntheticFaces`
            (pose, distance, expression and albedo ranges).
        cache: keep the items in memory once made (images as uint8) - for training runs that
            revisit a fixed pool of faces over several epochs.
    """

    def __init__(self, length: int, size: int = 128, seed: int = 0, photo_size: int = 256, margin=(0.15, 0.35),
                 shift: float = 0.04, color_gain: float = 0.08, noise=(0.0, 0.02), decoder: FaceDecoder | None = None,
                 generator: dict | None = None, cache: bool = False):
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length: expected a positive int, got {length!r}")
        if not isinstance(size, int) or size < 16:
            raise ValueError(f"size: expected an int >= 16 pixels, got {size!r}")
        self.length, self.size, self.seed = length, size, int(seed)
        self.photo_size = int(photo_size)
        self.margin, self.shift, self.color_gain, self.noise = tuple(margin), float(shift), float(color_gain), tuple(noise)
        self.dec = decoder if decoder is not None else FaceDecoder("default")
        self.gen_kwargs = dict(generator or {})
        self._gen = None
        self.cache = {} if cache else None

    @property
    def gen(self) -> SyntheticFaces:
        if self._gen is None:
            self._gen = SyntheticFaces(self.dec, size=self.photo_size, photos=background_photos(self.size),
                                       **self.gen_kwargs)
        return self._gen

    def __len__(self) -> int:
        return self.length

    def __getstate__(self):  # spawn-safe: rebuild the generator in the worker
        d = dict(self.__dict__)
        d["_gen"] = None
        return d

    def sample(self, index: int) -> dict:
        """Item ``index`` plus extras: ``vertices`` (468, 3) camera frame cm, ``yaw``/``pitch``/``roll``
        degrees, ``box`` (x0, y0, side) in the virtual photo, ``photo_focal``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length}")
        rng = np.random.default_rng([self.seed, int(index)])
        gen, dec, S, P = self.gen, self.dec, self.size, self.photo_size
        code, yaw, pitch, roll = gen.random_code(rng)
        f_photo = float(code.focal[0, 0])
        with torch.no_grad():
            lm_photo = dec.landmarks2d(code, (P, P), kind="mediapipe468")[0].double().numpy()
        lo, hi = lm_photo.min(0), lm_photo.max(0)
        box_side = float((hi - lo).max())
        margin = rng.uniform(*self.margin)
        centre = (lo + hi) / 2 + rng.normal(0, self.shift, 2) * box_side
        side = box_side * (1 + 2 * margin)
        x0, y0 = centre - side / 2
        s = S / side
        focal = f_photo * s
        pp = np.array([(P / 2.0 - x0) * s, (P / 2.0 - y0) * s])
        crop_code = code.clone()
        crop_code.focal = torch.full_like(code.focal, focal)
        gain = np.clip(1 + rng.normal(0, self.color_gain, 3), 0.6, 1.4)
        crop_code.sh = crop_code.sh * torch.tensor(gain, dtype=code.sh.dtype)
        bg = torch.from_numpy(random_crop(rng, gen.photos, S, (1.0, 2.0)).astype(np.float32) / 255.0)[None]
        bg = bg * torch.tensor(gain, dtype=torch.float32)
        with torch.no_grad():
            verts = dec.vertices(crop_code)
            cols = dec.model.albedo(crop_code.albedo).clamp(0, 1)
            cam = make_camera(crop_code.focal, (S, S), torch.tensor(pp, dtype=verts.dtype))
            out = gen.renderer(verts.float(), cols.float(), cam, (S, S), crop_code.sh.float(), bg)
            img = out.image[0].float()
            sigma = rng.uniform(*self.noise)
            if sigma > 0:
                img = img + torch.from_numpy(rng.normal(0, sigma, img.shape).astype(np.float32))
            img = img.clamp(0, 1)
            # quantise like a photo
            img = torch.round(img * 255) / 255
        lm = ((lm_photo - np.array([x0, y0])) * s).astype(np.float32)
        return {
            "image": img.contiguous(),
            "landmarks": torch.from_numpy(lm),
            "focal": torch.tensor([focal], dtype=torch.float32),
            "principal_point": torch.from_numpy(pp.astype(np.float32)),
            "code": crop_code.to_vector()[0].float(),
            "source": torch.tensor(1, dtype=torch.int64),
            "vertices": verts[0].float(),
            "yaw": yaw, "pitch": pitch, "roll": roll,
            "box": np.array([x0, y0, side]), "photo_focal": f_photo,
        }

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if self.cache is not None and index in self.cache:
            d = dict(self.cache[index])
            d["image"] = d["image"].float() / 255.0
            return d
        d = self.sample(index)
        d = {k: d[k] for k in ("image", "landmarks", "focal", "principal_point", "code", "source")}
        if self.cache is not None:  # the image is already quantised to 1/255
            self.cache[index] = {**d, "image": torch.round(d["image"] * 255).to(torch.uint8)}
        return d


def sample_face_photos() -> list:
    """Real face photos that ship with installed packages, as ``(name, (H, W, 3) uint8 RGB)``:
    scikit-image's ``astronaut()`` (public domain) and, when matplotlib is installed, its
    ``grace_hopper.jpg`` sample (public domain). Missing ones are skipped."""
    out = []
    try:
        from skimage.data import astronaut
        out.append(("astronaut", np.ascontiguousarray(astronaut()[..., :3])))
    except Exception:  # noqa: BLE001 - optional data
        pass
    try:
        import importlib.util

        spec = importlib.util.find_spec("matplotlib")
        if spec is not None and spec.origin:
            p = Path(spec.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
            if p.is_file():
                import cv2
                im = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if im is not None:
                    out.append(("grace_hopper", np.ascontiguousarray(im[..., ::-1])))
    except Exception:  # noqa: BLE001
        pass
    return out


class SamplePhotoDataset(Dataset):
    """Augmented crops of a few real photos (unsupervised items, ``source`` 0, code NaN).

    The landmarks are detected once (MediaPipe, in the constructor: build the dataset in the main
    process); each item is a :func:`facerig.landmarks.square_crop` of a photo with a random margin,
    shift and in-plane scale, the detections mapped into the crop, and the crop camera (focal
    ``focal_factor x max(H, W)`` of the photo, principal point at the photo's centre).

    Args:
        length: items per epoch (item ``i`` seeded by ``(seed, i)``).
        size: crop side S.
        photos: list of ``(name, image)`` (default :func:`sample_face_photos`).
        margin, shift, color_gain, noise: augmentation (as :class:`SyntheticFaceDataset`).
        focal_factor: photo focal in units of its longer side (the fitter's default, 2.5).
    """

    def __init__(self, length: int, size: int = 128, seed: int = 0, photos=None, margin=(0.15, 0.35),
                 shift: float = 0.04, color_gain: float = 0.08, noise=(0.0, 0.02), focal_factor: float = 2.5):
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length: expected a positive int, got {length!r}")
        photos = sample_face_photos() if photos is None else photos
        self.items = []
        for name, im in photos:
            faces = detect_landmarks(im, max_faces=1, refine=False)
            if faces:
                self.items.append((name, im, np.asarray(faces[0].points[:468, :2], dtype=np.float64)))
        if not self.items:
            raise ValueError("photos: no face was detected in any of the photos")
        self.length, self.size, self.seed = length, size, int(seed)
        self.margin, self.shift, self.color_gain, self.noise = tuple(margin), float(shift), float(color_gain), tuple(noise)
        self.focal_factor = float(focal_factor)
        self.code_size = sum(GraphicCode.sizes_for(load_model("default")).values())

    @property
    def names(self) -> list:
        return [n for n, _, _ in self.items]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length}")
        rng = np.random.default_rng([self.seed, int(index), 7])
        name, im, pts = self.items[int(rng.integers(len(self.items)))]
        H, W = im.shape[:2]
        margin = rng.uniform(*self.margin)
        crop = square_crop(im, pts, size=self.size, margin=margin, border="replicate",
                           center_offset=tuple(rng.normal(0, self.shift, 2)))
        lm = crop.to_crop(pts).astype(np.float32)
        pp = crop.to_crop(np.array([[W / 2.0, H / 2.0]]))[0].astype(np.float32)
        focal = self.focal_factor * max(H, W) * crop.scale
        gain = np.clip(1 + rng.normal(0, self.color_gain, 3), 0.6, 1.4).astype(np.float32)
        img = crop.image.astype(np.float32) / 255.0 * gain
        sigma = rng.uniform(*self.noise)
        if sigma > 0:
            img = img + rng.normal(0, sigma, img.shape).astype(np.float32)
        img = np.round(np.clip(img, 0, 1) * 255) / 255
        return {
            "image": torch.from_numpy(img.astype(np.float32)),
            "landmarks": torch.from_numpy(lm),
            "focal": torch.tensor([focal], dtype=torch.float32),
            "principal_point": torch.from_numpy(pp),
            "code": torch.full((self.code_size,), float("nan")),
            "source": torch.tensor(0, dtype=torch.int64),
        }
