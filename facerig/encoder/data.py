"""Prepared real-face data for the encoder: ``facerig prepare`` and the :class:`PreparedFaces` dataset.

:func:`prepare_faces` turns photos and videos into cached square face crops with their MediaPipe
Face Mesh landmarks and the crop's camera, so training never runs the detector.

Layout of a prepared folder ``DATA``::

    DATA/meta.json              settings (size, margin, image format, stride, focal rule, fit)
    DATA/index.jsonl            one JSON line per finished shard (the commit record, see below)
    DATA/shards/000000.npz      per-crop arrays of shard 0 (see below)
    DATA/crops/000000/00000.jpg the crops of shard 0 (size x size RGB, JPEG or PNG)

A **shard** is a run of up to ``shard_size`` consecutive photos, or ``shard_size`` sampled frames
of one video (frames ``start, start + stride, ... < stop``). Its crop files and its ``.npz`` are
written first (atomically, :mod:`facerig.io`); its ``index.jsonl`` line is written last, by an
atomic rewrite of the index, so a shard counts only once all its files exist. An interrupted run
loses at most the shard in progress; the next run with the same arguments skips every input (and
video frame range) already in the index and redoes the rest in the same order, which gives the
same shards, byte for byte. Photos are identified by their resolved path.

Shard arrays (``N`` crops, ``S = size``): ``landmarks`` (N, 468, 3) float32 Face Mesh points in
crop pixels (x, y; z = MediaPipe's relative depth times the crop scale); ``focal`` (N,) and
``principal_point`` (N, 2) float32, the crop camera in crop pixels; ``box`` (N, 4) float64 the
crop window ``(x0, y0, x1, y1)`` in source pixels; ``source_size`` (N, 2) int64 ``(H, W)``;
``frame`` (N,) int64 video frame number (-1 for photos); ``source`` (N,) int64 index into the
shard's ``sources`` (its JSON list of source paths); ``score`` (N,) float32 detection score;
``files`` (N,) crop file names; with ``fit=True`` also ``code`` (N, D) float32 the optimisation
fitter's graphic code vector in the crop camera (NaN rows where the fit failed), ``fit_error``
(N,) its 68-point landmark error in source pixels and ``code_sizes`` (JSON).

The crop camera
---------------
A crop is a square window of the source image resampled to ``S x S``: ``u_crop = s * u + t``
(:class:`facerig.landmarks.Crop`). The source camera is an OpenCV pinhole with focal ``f`` and
its principal point at the image centre; for photos and videos of unknown focal, ``f`` follows
the fitter's default rule (:func:`facerig.face.fit_image`): ``f = focal_factor * max(H, W)``
with ``focal_factor = DEFAULT_FOCAL_FACTOR = 2.5`` (about 23 degrees of field of view). The crop
camera is then exactly ``f_crop = s * f`` and ``principal_point = s * (W/2, H/2) + t`` (usually
not the crop centre), so a graphic code's pose and shape are the same in both cameras and only
its ``focal`` changes: see :func:`code_to_crop` / :func:`code_from_crop`.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facerig.face import FaceDecoder, FitOptions, fit_image
from facerig.io import ImageReadError, atomic_path, atomic_write, load_image
from facerig.landmarks import detect_landmarks, square_crop
from facerig.model import DEFAULT_FOCAL_FACTOR, GraphicCode, load_model
from facerig.video import FRAME_EXTENSIONS, VIDEO_EXTENSIONS, VideoError, VideoReader, is_video

__all__ = ["DEFAULT_SIZE", "DEFAULT_MARGIN", "SOURCE_REAL", "SOURCE_SYNTHETIC", "SOURCE_FITTED",
           "crop_camera", "code_to_crop", "code_from_crop", "prepare_faces", "PrepareSummary", "PreparedFaces",
           "list_inputs", "read_index"]

DEFAULT_SIZE = 224
"""Default crop side in pixels (``facerig prepare --size``)."""
DEFAULT_MARGIN = 0.25
"""Default crop margin: the window side is ``(1 + 2 * margin)`` x the longer side of the landmarks' box
(:func:`facerig.landmarks.square_crop`). Inference (:mod:`facerig.encoder.reconstruct`) crops the same way."""
SOURCE_REAL, SOURCE_SYNTHETIC, SOURCE_FITTED = 0, 1, 2
"""``item["source"]`` values: real photo (unsupervised), synthetic (known code), real with the fitter's code."""

INDEX_NAME = "index.jsonl"
META_NAME = "meta.json"
_FORMATS = ("jpg", "png")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------------------- cameras
def crop_camera(crop, focal: float | None = None, focal_factor: float = DEFAULT_FOCAL_FACTOR):
    """The camera of a square crop of a photo whose camera has focal ``focal`` (source pixels;
    default ``focal_factor * max(H, W)``) and its principal point at the photo's centre.

    Args:
        crop: a :class:`facerig.landmarks.Crop` (its ``original_size`` is the photo's (H, W)).

    Returns:
        ``(focal_crop, principal_point_crop, focal_source)``: floats in crop pixels, (2,) float64
        ``(cx, cy)`` in crop pixels, and the source focal in source pixels.
    """
    H, W = crop.original_size
    f = float(focal) if focal is not None else float(focal_factor) * max(H, W)
    if not np.isfinite(f) or f <= 0:
        raise ValueError(f"focal: expected a positive number of pixels, got {focal!r}")
    pp = crop.to_crop(np.array([[W / 2.0, H / 2.0]]))[0]
    return f * crop.scale, pp, f


def code_to_crop(code: GraphicCode, crop) -> GraphicCode:
    """A code in the source image's camera (principal point at the image centre) -> the same face
    in the crop's camera (:func:`crop_camera`): identical pose and shape, ``focal * crop.scale``.
    Returns a new code (``crop``: :class:`facerig.landmarks.Crop`, or a float scale)."""
    s = crop if isinstance(crop, (int, float)) else crop.scale
    out = code.clone()
    out.focal = out.focal * float(s)
    return out


def code_from_crop(code: GraphicCode, crop) -> GraphicCode:
    """Inverse of :func:`code_to_crop`: a code in the crop camera -> the source image's camera."""
    s = crop if isinstance(crop, (int, float)) else crop.scale
    out = code.clone()
    out.focal = out.focal / float(s)
    return out


# --------------------------------------------------------------------------------------- inputs
def list_inputs(sources) -> list[Path]:
    """Expand files and folders (not recursive; sorted by name) into image and video files.

    Files given explicitly are kept whatever their extension; folders contribute files with an
    image (:data:`facerig.video.FRAME_EXTENSIONS`) or video (:data:`facerig.video.VIDEO_EXTENSIONS`)
    extension. Raises FileNotFoundError for a missing path.
    """
    exts = set(FRAME_EXTENSIONS) | set(VIDEO_EXTENSIONS)
    out = []
    for s in [sources] if isinstance(sources, (str, os.PathLike)) else sources:
        p = Path(s)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in exts)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"sources: {str(p)!r}: no such file or folder")
    return out


def read_index(root) -> list[dict]:
    """The shard records of a prepared folder (``index.jsonl``), in order; [] when there is none."""
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _save_npz(path: Path, arrays: dict) -> None:
    """np.savez with fixed zip timestamps (identical inputs give identical bytes), atomically."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
                zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE), buf.getvalue())


@dataclass
class PrepareSummary:
    """What :func:`prepare_faces` did (this run) and what the folder now holds.

    Attributes:
        photos, frames: photos and sampled video frames examined in this run.
        crops: crops written in this run; faceless: photos / frames without a face (skipped).
        unreadable: (path, message) of inputs that could not be read (corrupt files, bad videos).
        skipped: inputs already prepared by an earlier run (not redone).
        shards: shards written in this run; seconds: wall time.
        total_crops, total_shards: what the folder holds now.
        fitted: crops with a fitter code (``fit=True``) in this run.
    """

    photos: int = 0
    frames: int = 0
    crops: int = 0
    faceless: int = 0
    unreadable: list = field(default_factory=list)
    skipped: int = 0
    shards: int = 0
    fitted: int = 0
    seconds: float = 0.0
    total_crops: int = 0
    total_shards: int = 0

    def lines(self, root) -> list[str]:
        """Human-readable summary lines (what the CLI prints)."""
        out = [f"summary: {self.crops} crops from {self.photos} photos and {self.frames} video frames in "
               f"{self.seconds:.1f} s; skipped {self.faceless} without a face, {len(self.unreadable)} unreadable, "
               f"{self.skipped} already prepared" + (f"; {self.fitted} fitted" if self.fitted else ""),
               f"{root} holds {self.total_crops} crops in {self.total_shards} shards"]
        out += [f"  unreadable: {msg}" for _, msg in self.unreadable]
        return out


class _Writer:
    """Accumulates the crops of one shard and commits it (files, npz, index line)."""

    def __init__(self, root: Path, shard: int, record: dict, image_format: str, quality: int):
        self.root, self.name, self.record = root, f"{shard:06d}", record
        self.fmt, self.quality = image_format, quality
        self.rows: list[dict] = []
        self.sources: list[str] = []
        self.src_index: dict[str, int] = {}

    def add(self, source: str, frame: int, crop, landmarks: np.ndarray, focal: float, pp, score: float,
            code=None, fit_error=float("nan")) -> None:
        import cv2

        if source not in self.src_index:
            self.src_index[source] = len(self.sources)
            self.sources.append(source)
        fname = f"{len(self.rows):05d}.{self.fmt}"
        path = self.root / "crops" / self.name / fname

        bgr = np.ascontiguousarray(crop.image[:, :, ::-1])
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality] if self.fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
        ok, buf = cv2.imencode(f".{self.fmt}", bgr, params)
        if not ok:
            raise RuntimeError(f"OpenCV could not encode a .{self.fmt} crop")
        atomic_write(path, buf.tobytes())
        self.rows.append(dict(landmarks=landmarks.astype(np.float32), focal=np.float32(focal),
                              principal_point=np.asarray(pp, np.float32), box=np.asarray(crop.box, np.float64),
                              source_size=np.asarray(crop.original_size, np.int64), frame=np.int64(frame),
                              source=np.int64(self.src_index[source]), score=np.float32(score), files=fname,
                              code=code, fit_error=np.float64(fit_error)))

    def commit(self, index: list[dict], code_sizes: dict | None) -> dict:
        rec = dict(self.record)
        rec.update(shard=self.name, crops=len(self.rows), sources=self.sources)
        if self.rows:
            arrays = {k: np.stack([r[k] for r in self.rows]) for k in
                      ("landmarks", "focal", "principal_point", "box", "source_size", "frame", "source", "score")}
            arrays["files"] = np.array([r["files"] for r in self.rows])
            arrays["sources"] = np.array(json.dumps(self.sources))
            if code_sizes is not None:
                D = sum(code_sizes.values())
                arrays["code"] = np.stack([np.full(D, np.nan, np.float32) if r["code"] is None
                                           else np.asarray(r["code"], np.float32) for r in self.rows])
                arrays["fit_error"] = np.array([r["fit_error"] for r in self.rows])
                arrays["code_sizes"] = np.array(json.dumps(code_sizes))
            _save_npz(self.root / "shards" / f"{self.name}.npz", arrays)
        index.append(rec)
        atomic_write(self.root / INDEX_NAME, "".join(json.dumps(r) + "\n" for r in index))
        return rec


def prepare_faces(sources, out, *, size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN,
                  image_format: str = "jpg", quality: int = 95, stride: int = 1, max_frames: int | None = None,
                  focal_factor: float = DEFAULT_FOCAL_FACTOR, fit: bool = False, model="default",
                  fit_options=None, shard_size: int = 256, progress: bool = True, log=print) -> PrepareSummary:
    """Cache square face crops, their Face Mesh landmarks and crop cameras for encoder training.

    Args:
        sources: a path or paths: image files, video files (:func:`facerig.video.is_video`) and
            folders of them (see :func:`list_inputs`).
        out: the prepared folder (created; an existing one is resumed, see the module docstring).
        size: crop side in pixels; margin: crop margin (see :data:`DEFAULT_MARGIN`).
        image_format: "jpg" (``quality`` 1-100) or "png" (lossless) crop files.
        stride: keep every ``stride``-th video frame; max_frames: at most this many sampled frames
            per video (None: all).
        focal_factor: focal of the source camera = ``focal_factor * max(H, W)`` pixels.
        fit: also run :func:`facerig.face.fit_image` on every crop's photo and store its code in
            the crop camera (targets for supervised training; about 1 s per crop).
        model, fit_options: face model and :class:`facerig.face.FitOptions` of the fits.
        shard_size: photos (or sampled frames) per shard.
        progress: show a tqdm progress bar; log: where messages go (None: nowhere).

    Returns:
        :class:`PrepareSummary`. The largest face of each photo / frame is kept; photos and
        frames without a face are skipped and counted; unreadable files are reported and skipped.

    Raises:
        ValueError: bad settings, or ``out`` was prepared with different settings.
    """
    t_start = time.perf_counter()
    log = log or (lambda *a, **k: None)
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size: expected an int >= 16 pixels, got {size!r}")
    if image_format not in _FORMATS:
        raise ValueError(f"image_format: expected one of {_FORMATS}, got {image_format!r}")
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride: expected an int >= 1, got {stride!r}")
    if not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise ValueError(f"shard_size: expected an int >= 1, got {shard_size!r}")
    if max_frames is not None and (not isinstance(max_frames, (int, np.integer)) or max_frames < 1):
        raise ValueError(f"max_frames: expected an int >= 1 or None, got {max_frames!r}")
    if not (np.isfinite(margin) and margin > -0.5):
        raise ValueError(f"margin: expected a number > -0.5, got {margin!r}")
    if not (np.isfinite(focal_factor) and focal_factor > 0):
        raise ValueError(f"focal_factor: expected a positive number, got {focal_factor!r}")
    root = Path(out)
    inputs = list_inputs(sources)
    meta = {"format": "facerig-prepared-faces", "version": 1, "size": int(size), "margin": float(margin),
            "image_format": image_format, "quality": int(quality), "stride": int(stride),
            "max_frames": max_frames, "shard_size": int(shard_size), "focal_factor": float(focal_factor),
            "fit": bool(fit), "landmarks": "mediapipe468"}
    meta_path = root / META_NAME
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise ValueError(f"out: {root} was prepared with other settings ({what}); "
                             "use the same settings to resume, or another folder")
    else:
        atomic_write(meta_path, json.dumps(meta, indent=1))
    index = read_index(root)
    done_photos = {s for r in index if r["kind"] == "photos" for s in r["inputs"]}
    video_state: dict[str, dict] = {}
    for r in index:
        if r["kind"] == "video":
            st = video_state.setdefault(r["input"], {"stop": 0, "end": False, "frames": 0})
            st["stop"] = max(st["stop"], r["stop"])
            st["end"] = st["end"] or r["end"]
            st["frames"] += r["frames"]

    summary = PrepareSummary()
    dec = fit_opts = code_sizes = None
    if fit:
        dec = model if isinstance(model, FaceDecoder) else FaceDecoder(model)
        fit_opts = fit_options or FitOptions()
        code_sizes = dict(dec.sizes)

    # ---- the work plan: runs of pending photos (chunks of shard_size) and videos, in input order
    plan, run = [], []
    for p in inputs:
        key = str(p.resolve())
        if is_video(p):
            if run:
                plan.append(("photos", run))
                run = []
            st = video_state.get(key)
            if st is not None and (st["end"] or (max_frames is not None and st["frames"] >= max_frames)):
                summary.skipped += 1
                continue
            plan.append(("video", (p, key)))
        elif key in done_photos:
            summary.skipped += 1
        else:
            run.append((p, key))
            if len(run) == shard_size:
                plan.append(("photos", run))
                run = []
    if run:
        plan.append(("photos", run))

    def total_work():
        n = 0
        for kind, item in plan:
            if kind == "photos":
                n += len(item)
            else:
                st = video_state.get(item[1], {"stop": 0, "frames": 0})
                try:
                    with VideoReader(item[0], start=st["stop"], stride=stride) as v:
                        k = v.frame_count
                except VideoError:
                    k = 1
                n += k if max_frames is None else min(k, max_frames - st["frames"])
        return n

    bar = None
    if progress and plan:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_work(), desc="facerig prepare", unit="img")

    def add_face(writer, rgb, source, frame):
        faces = detect_landmarks(rgb, max_faces=1, refine=False)
        if not faces:
            summary.faceless += 1
            return
        face = faces[0]
        pts = face.points
        crop = square_crop(rgb, pts[:, :2], size=int(size), margin=margin, border="replicate")
        f_crop, pp, f_src = crop_camera(crop, focal_factor=focal_factor)
        code, err = None, float("nan")
        if fit:
            try:
                res = fit_image(rgb, dec, landmarks=pts, focal=f_src, options=fit_opts)
                code = code_to_crop(res.code, crop).to_vector()[0].detach().cpu().numpy()
                err = res.landmark_error_px
                summary.fitted += 1
            except (ValueError, RuntimeError) as e:  # a failed fit leaves the crop unsupervised
                log(f"fit failed on {source} frame {frame}: {e}")
        writer.add(source, frame, crop, crop.to_crop(pts[:468]), f_crop, pp, face.score, code, err)
        summary.crops += 1

    try:
        for kind, item in plan:
            if kind == "photos":
                w = _Writer(root, len(index), {"kind": "photos", "inputs": [k for _, k in item]}, image_format, quality)
                faceless0 = summary.faceless
                unread = []
                for p, key in item:
                    try:
                        rgb = load_image(p)
                    except ImageReadError as err:
                        unread.append((key, str(err)))
                        summary.unreadable.append((key, str(err)))
                        log(f"skipped: {err}")
                    else:
                        add_face(w, rgb, key, -1)
                    summary.photos += 1
                    if bar is not None:
                        bar.update(1)
                w.record.update(faceless=summary.faceless - faceless0, unreadable=unread)
                w.commit(index, code_sizes)
                summary.shards += 1
                continue
            path, key = item
            st = video_state.get(key, {"stop": 0, "frames": 0})
            span = shard_size * stride
            start = st["stop"]
            left = None if max_frames is None else max_frames - st["frames"]
            try:
                reader = VideoReader(path, start=start, stride=stride)
            except VideoError as err:
                summary.unreadable.append((key, str(err)))
                log(f"skipped: {err}")
                w = _Writer(root, len(index), {"kind": "video", "input": key, "start": start, "stop": start,
                                               "end": True, "frames": 0, "faceless": 0,
                                               "unreadable": [(key, str(err))]}, image_format, quality)
                w.commit(index, code_sizes)
                summary.shards += 1
                if bar is not None:
                    bar.update(1)
                continue
            chunk_start = start
            w = None
            n_frames = faceless0 = 0

            def new_writer(s):
                return _Writer(root, len(index), {"kind": "video", "input": key, "start": s, "stop": s + span,
                                                  "end": False}, image_format, quality)

            with reader:
                for idx, rgb in reader:
                    while idx >= chunk_start + span:  # close the finished chunk
                        if w is not None:
                            w.record.update(frames=n_frames, faceless=summary.faceless - faceless0, unreadable=[])
                            w.commit(index, code_sizes)
                            summary.shards += 1
                            w = None
                        chunk_start += span
                    if w is None:
                        w = new_writer(chunk_start)
                        n_frames, faceless0 = 0, summary.faceless
                    add_face(w, rgb, key, idx)
                    n_frames += 1
                    summary.frames += 1
                    if bar is not None:
                        bar.update(1)
                    if left is not None:
                        left -= 1
                        if left <= 0:  # max_frames reached: the video is done
                            break
            if w is None:
                w = new_writer(chunk_start)
                n_frames, faceless0 = 0, summary.faceless
            w.record.update(frames=n_frames, faceless=summary.faceless - faceless0, unreadable=[], end=True)
            w.commit(index, code_sizes)
            summary.shards += 1
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - t_start
    summary.total_shards = len(index)
    summary.total_crops = sum(r["crops"] for r in index)
    return summary


# --------------------------------------------------------------------------------------- dataset
class PreparedFaces(torch.utils.data.Dataset):
    """The crops of a folder written by :func:`prepare_faces` (``facerig prepare``), for training.

    Item ``i`` is a dict:

    * ``"image"``: (S, S, 3) float32 RGB in [0, 1];
    * ``"landmarks"``: (468, 2) float32 Face Mesh points (x, y) in crop pixels (pixel centres at
      +0.5);
    * ``"focal"``: (1,) float32 and ``"principal_point"``: (2,) float32, the crop camera in crop
      pixels (see the module docstring);
    * ``"code"``: (D,) float32 the fitter's graphic code vector (``GraphicCode.to_vector`` layout)
      in that crop camera, all-NaN when unknown (folders prepared without ``fit``);
    * ``"source"``: int64 scalar, :data:`SOURCE_FITTED` (2) when the code is known, else
      :data:`SOURCE_REAL` (0).

    Args:
        root: the prepared folder.
        size: output side S (default: the prepared size). Resizing scales the landmarks, focal,
            principal point and the code's focal by ``S / prepared size`` (exact for the pixel
            convention).
        augment: random colour jitter (brightness, contrast, saturation, per-channel gain) and a
            small random zoom (0.9-1.1) and shift (+-5 %) of the crop; landmarks, camera and the
            code's focal follow the geometric change exactly. Uses torch's global RNG (seed it, or
            the DataLoader's per-worker seeds).
        degrade: also degrade the crops like real photos (small faces brought up to size, blur,
            noise, JPEG, colour casts: :func:`facerig.encoder.augment.degrade_photo`): ``True`` for
            the default :class:`~facerig.encoder.augment.DegradeOptions`, or options; only with
            ``augment``. The pixel grid is unchanged, so landmarks and camera stay exact.
        code_dim: D of the all-NaN code when the folder has no codes (default: the default
            model's code length).

    Attributes: ``prepared_size``, ``size``, ``code_sizes`` (dict or None), ``meta``.
    ``info(i)`` gives the crop's file, source path, frame number and crop window.
    """

    def __init__(self, root, size: int | None = None, augment: bool = False, code_dim: int | None = None,
                 degrade=None):
        from facerig.encoder.augment import DegradeOptions

        self.root = Path(root)
        if not (self.root / META_NAME).is_file():
            raise ValueError(f"root: {str(self.root)!r} is not a prepared folder (no {META_NAME}); "
                             "make one with `facerig prepare SRC -o DATA`")
        self.meta = json.loads((self.root / META_NAME).read_text())
        self.prepared_size = int(self.meta["size"])
        if size is not None and (not isinstance(size, (int, np.integer)) or size < 8):
            raise ValueError(f"size: expected an int >= 8 pixels or None, got {size!r}")
        self.size = int(size) if size is not None else self.prepared_size
        self.augment = bool(augment)
        if degrade is True:
            degrade = DegradeOptions()
        if degrade not in (None, False) and not isinstance(degrade, DegradeOptions):
            raise ValueError(f"degrade: expected None, True or a DegradeOptions, got {degrade!r}")
        if degrade and not self.augment:
            raise ValueError("degrade: only applies with augment=True")
        self.degrade = degrade or None
        cols: dict[str, list] = {k: [] for k in ("landmarks", "focal", "principal_point", "box", "frame", "code",
                                                 "fit_error", "score")}
        self._files, self._sources = [], []
        self.code_sizes = None
        for rec in read_index(self.root):
            if not rec["crops"]:
                continue
            with np.load(self.root / "shards" / f"{rec['shard']}.npz") as z:
                n = len(z["files"])
                for k in ("landmarks", "focal", "principal_point", "box", "frame", "score"):
                    cols[k].append(z[k])
                if "code" in z.files:
                    cols["code"].append(z["code"])
                    cols["fit_error"].append(z["fit_error"])
                    self.code_sizes = json.loads(str(z["code_sizes"]))
                else:
                    cols["code"].append(None)
                    cols["fit_error"].append(np.full(n, np.nan))
                srcs = json.loads(str(z["sources"]))
                self._sources += [srcs[j] for j in z["source"]]
                self._files += [f"crops/{rec['shard']}/{f}" for f in z["files"]]
        if code_dim is None:
            code_dim = (sum(self.code_sizes.values()) if self.code_sizes is not None else
                        _default_code_dim())
        self.code_dim = int(code_dim)
        codes = [c if c is not None else np.full((len(f), self.code_dim), np.nan, np.float32)
                 for c, f in zip(cols["code"], cols["focal"])]
        cat = (lambda v, shape, dt: np.concatenate(v) if v else np.zeros(shape, dt))
        self.landmarks = cat(cols["landmarks"], (0, 468, 3), np.float32)[:, :, :2]
        self.focal = cat(cols["focal"], (0,), np.float32)
        self.principal_point = cat(cols["principal_point"], (0, 2), np.float32)
        self.box = cat(cols["box"], (0, 4), np.float64)
        self.frame = cat(cols["frame"], (0,), np.int64)
        self.codes = cat(codes, (0, self.code_dim), np.float32)
        self.fit_error = cat(cols["fit_error"], (0,), np.float64)
        self._focal_slot = None
        if self.code_sizes is not None:
            self._focal_slot = GraphicCode.slices(self.code_sizes)["focal"].start
        elif self.code_dim == _default_code_dim():
            self._focal_slot = GraphicCode.slices(GraphicCode.sizes_for(load_model("default")))["focal"].start

    def __len__(self) -> int:
        return len(self._files)

    def info(self, i: int) -> dict:
        """``{"file", "source", "frame", "box"}`` of crop ``i`` (frame -1 for photos; box in source pixels)."""
        return {"file": str(self.root / self._files[i]), "source": self._sources[i], "frame": int(self.frame[i]),
                "box": self.box[i].tolist()}

    def __getitem__(self, i: int) -> dict:
        import cv2

        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} crops")
        i = i % len(self)
        bgr = cv2.imread(str(self.root / self._files[i]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read crop {self._files[i]!r} of {self.root}; re-run `facerig prepare`")
        img = bgr[:, :, ::-1]
        S0, S = img.shape[0], self.size
        lm = self.landmarks[i].astype(np.float64)
        pp = self.principal_point[i].astype(np.float64)
        f = float(self.focal[i])
        code = self.codes[i].copy()
        # output pixel u' = a * u + b (per axis; the same a for x and y)
        a, b = S / S0, np.zeros(2)
        if self.augment:
            z = float(torch.empty(()).uniform_(0.9, 1.1))
            shift = torch.empty(2).uniform_(-0.05, 0.05).numpy() * S
            # zoom about the crop centre, then shift
            a = a * z
            b = (S / 2.0) * (1 - z) + shift
        if self.augment or S != S0:
            m = np.array([[a, 0.0, b[0] + 0.5 * a - 0.5], [0.0, a, b[1] + 0.5 * a - 0.5]])
            if not self.augment:
                interp = cv2.INTER_AREA if S < S0 else cv2.INTER_LINEAR
                img = cv2.resize(np.ascontiguousarray(img), (S, S), interpolation=interp)
            else:
                src = np.ascontiguousarray(img)
                if a < 0.75:  # shrink first to limit aliasing
                    k = S / S0
                    src = cv2.resize(src, (S, S), interpolation=cv2.INTER_AREA)
                    a2 = a / k
                    m = np.array([[a2, 0.0, b[0] + 0.5 * a2 - 0.5], [0.0, a2, b[1] + 0.5 * a2 - 0.5]])
                img = cv2.warpAffine(src, m, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            lm = lm * a + b
            pp = pp * a + b
            f = f * a
            if self._focal_slot is not None and np.isfinite(code[self._focal_slot]):
                code[self._focal_slot] *= a
        if self.degrade is not None:
            from facerig.encoder.augment import degrade_photo

            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
            img = degrade_photo(np.ascontiguousarray(img), rng, self.degrade)
        image = torch.from_numpy(np.ascontiguousarray(img)).float() / 255.0
        if self.augment:
            image = _color_jitter(image)
        known = bool(np.all(np.isfinite(code)))
        return {"image": image, "landmarks": torch.from_numpy(lm.astype(np.float32)),
                "focal": torch.tensor([f], dtype=torch.float32),
                "principal_point": torch.from_numpy(pp.astype(np.float32)),
                "code": torch.from_numpy(code.astype(np.float32)),
                "source": torch.tensor(SOURCE_FITTED if known else SOURCE_REAL, dtype=torch.int64)}


def _color_jitter(image: torch.Tensor) -> torch.Tensor:
    """Random brightness (x0.8-1.2), contrast (x0.8-1.2), saturation (x0.7-1.3) and per-channel gain
    (x0.95-1.05) of an (H, W, 3) image in [0, 1]."""
    u = torch.empty(6).uniform_(0.0, 1.0)
    gray = image.mean(-1, keepdim=True)
    image = gray + (image - gray) * (0.7 + 0.6 * u[0])
    mean = image.mean()
    image = mean + (image - mean) * (0.8 + 0.4 * u[1])
    image = image * (0.8 + 0.4 * u[2]) * (0.95 + 0.1 * u[3:6])
    return image.clamp(0.0, 1.0)


def _default_code_dim() -> int:
    return sum(GraphicCode.sizes_for(load_model("default")).values())
