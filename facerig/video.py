"""Video input and output: stream frames from a video file or a folder of frames, write videos atomically.

Reading uses OpenCV (``cv2.VideoCapture``); what it decodes depends on the OpenCV build. The
pip wheel used here reads and writes **mp4v** (MPEG-4 Part 2) in ``.mp4`` and **MJPG** (Motion
JPEG) in ``.avi``; it reads most other codecs (H.264 included) through its bundled FFmpeg but
cannot *write* H.264. Frames are always ``(H, W, 3)`` uint8 **RGB** (OpenCV's BGR is converted).

    from facerig.video import VideoReader, VideoWriter

    with VideoReader("clip.mp4", stride=2) as video:       # or a folder of frames (sorted by name)
        print(video.fps, video.frame_count, video.size)    # fps after stride; (W, H)
        with VideoWriter("out.mp4", video.fps, video.size) as out:
            for index, rgb in video:                       # index = source frame number
                out.write(rgb)

Nothing holds more than one decoded frame: long videos stream in bounded memory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from facerig.io import ImageReadError, as_rgb_uint8, atomic_path, load_image

__all__ = ["VideoError", "VideoReader", "VideoWriter", "is_video", "VIDEO_EXTENSIONS", "FRAME_EXTENSIONS",
           "WORKING_CODECS"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
WRITE_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
WORKING_CODECS = "mp4v in .mp4 and MJPG in .avi"


class VideoError(ImageReadError):
    """A video (or frame folder) is missing, unreadable, corrupt or in a codec this OpenCV cannot
    decode. A ``ValueError`` (via :class:`facerig.landmarks.ImageReadError`)."""


def is_video(path: str | os.PathLike) -> bool:
    """True when ``path`` has a video extension (.mp4 .avi .mov .mkv .m4v .webm, any case).
    Only the name is looked at; the file need not exist."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _check_int(name: str, value, minimum: int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an int >= {minimum}{extra}, got {value!r}")
    return int(value)


def _unreadable(path: Path, why: str) -> VideoError:
    return VideoError(
        f"cannot read video {str(path)!r}: {why}. Codecs that work here: {WORKING_CODECS} "
        "(re-encode with e.g. `ffmpeg -i IN -c:v mpeg4 -q:v 3 OUT.mp4`), or pass a folder of frames"
    )


class VideoReader:
    """Stream the frames of a video file or of a folder of images (sorted by file name).

    Parameters
    ----------
    path : str | PathLike
        A video file (anything this OpenCV decodes; see the module docstring) or a folder of
        frames (``.png``, ``.jpg``, ...; all the same size).
    start, stop, stride : int
        Source frames ``start, start + stride, ...`` below ``stop`` (None = to the end).
    fps : float | None
        The *source* frame rate; default: the file's rate (30 when it has none), 30 for a folder.

    Attributes
    ----------
    fps : float
        Frame rate of the yielded frames (source rate / stride), frames per second.
    frame_count : int
        Number of frames iteration yields (for files: from the container's frame count, an
        estimate that some containers get slightly wrong; the iteration stops at the real end).
    size : (int, int)
        (W, H) in pixels.
    source_fps : float
        The source frame rate before the stride.

    Iterating yields ``(index, rgb)``: the source frame number and an ``(H, W, 3)`` uint8 RGB
    array. Each iteration starts from ``start`` again. Raises :class:`VideoError` when the file
    or folder cannot be read (at construction, or when a folder frame is unreadable).
    """

    def __init__(self, path, start: int = 0, stop: int | None = None, stride: int = 1, fps: float | None = None):
        self.path = Path(path)
        self.start = _check_int("start", start, 0)
        self.stop = _check_int("stop", stop, 0, allow_none=True)
        self.stride = _check_int("stride", stride, 1)
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number or None, got {fps!r}")
        self._cap = None
        self._files: list[Path] | None = None
        if not self.path.exists():
            raise VideoError(f"video {str(self.path)!r} does not exist")
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS)
            if not files:
                raise VideoError(f"folder {str(self.path)!r} has no image frames ({', '.join(FRAME_EXTENSIONS)})")
            self._files = files
            total = len(files)
            self.source_fps = float(fps) if fps is not None else 30.0
            first = load_image(files[min(self.start, total - 1)])
            self.size = (int(first.shape[1]), int(first.shape[0]))
        else:
            import cv2

            cap = cv2.VideoCapture(str(self.path))
            try:
                if not cap.isOpened():
                    raise _unreadable(self.path, "OpenCV cannot open it (corrupt, not a video, or an unsupported codec)")
                ok, bgr = cap.read()
                if not ok or bgr is None or bgr.size == 0:
                    raise _unreadable(self.path, "no frame could be decoded (corrupt, empty, or an unsupported codec)")
                self.size = (int(bgr.shape[1]), int(bgr.shape[0]))
                file_fps = cap.get(cv2.CAP_PROP_FPS)
                n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            finally:
                cap.release()
            self.source_fps = float(fps) if fps is not None else (
                float(file_fps) if np.isfinite(file_fps) and 0 < file_fps < 1000 else 30.0)
            total = int(n) if np.isfinite(n) and n > 0 else 0
        self._total = total
        end = total if self.stop is None else min(self.stop, total)
        self.frame_count = len(range(self.start, end, self.stride))
        self.fps = self.source_fps / self.stride

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}, frames={self.frame_count}, size={self.size}, "
                f"fps={self.fps:.3g})")

    def __len__(self) -> int:
        return self.frame_count

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._files is not None:

            end = len(self._files) if self.stop is None else min(self.stop, len(self._files))
            for i in range(self.start, end, self.stride):
                try:
                    rgb = load_image(self._files[i])
                except ImageReadError as err:
                    raise VideoError(f"frame {i} of folder {str(self.path)!r}: {err}") from None
                if (rgb.shape[1], rgb.shape[0]) != self.size:
                    raise VideoError(f"frame {self._files[i].name} is {rgb.shape[1]}x{rgb.shape[0]}, the folder's "
                                     f"first frame {self.size[0]}x{self.size[1]}: all frames must have one size")
                yield i, rgb
            return
        import cv2

        self.close()
        cap = self._cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise _unreadable(self.path, "OpenCV cannot open it")
        try:
            i = 0
            while self.stop is None or i < self.stop:
                if i >= self.start and (i - self.start) % self.stride == 0:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    yield i, np.ascontiguousarray(bgr[:, :, ::-1])
                elif not cap.grab():
                    break
                i += 1
        finally:
            cap.release()
            if self._cap is cap:
                self._cap = None

    def close(self) -> None:
        """Release the decoder (iteration reopens it)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VideoWriter:
    """Write RGB frames to a video file atomically.

    The codec follows the extension: ``.mp4`` / ``.m4v`` / ``.mov`` -> mp4v, ``.avi`` -> MJPG
    (the two this OpenCV writes). Frames go to a temporary file in the destination folder, renamed
    to ``path`` by a clean :meth:`close` (or the end of a ``with`` block without an exception);
    on an error nothing is left behind and an older ``path`` is kept.

    Parameters: ``path``; ``fps`` frames per second (> 0); ``size`` (W, H) in pixels (even sizes
    are safest for mp4v). :meth:`write` takes ``(H, W, 3)`` uint8 RGB (or float in [0, 1]).
    """

    def __init__(self, path, fps: float, size: tuple[int, int]):
        import cv2


        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in WRITE_CODECS:
            raise ValueError(f"path: cannot write {ext or 'extension-less'} videos; use .mp4 (mp4v) or .avi (MJPG)")
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        if len(size) != 2 or min(int(size[0]), int(size[1])) < 1:
            raise ValueError(f"size must be (W, H) with positive ints, got {size!r}")
        self.fps = float(fps)
        self.size = (int(size[0]), int(size[1]))
        self.frames = 0
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*WRITE_CODECS[ext]), self.fps, self.size)
        if not self._writer.isOpened():
            self._abort()
            raise VideoError(f"OpenCV cannot write {WRITE_CODECS[ext]} video to {str(self.path)!r}")

    def write(self, rgb) -> None:
        """Append one frame: ``(H, W, 3)`` uint8 RGB, or float in [0, 1] (NumPy or torch)."""

        if self._writer is None:
            raise ValueError("write() after close()")
        if isinstance(rgb, (str, os.PathLike)):
            raise TypeError("rgb: expected an image array, got a path")
        arr = as_rgb_uint8(rgb, "rgb")
        if (arr.shape[1], arr.shape[0]) != self.size:
            self._abort()
            raise ValueError(f"rgb: frame is {arr.shape[1]}x{arr.shape[0]}, the writer's size is "
                             f"{self.size[0]}x{self.size[1]}")
        self._writer.write(np.ascontiguousarray(arr[:, :, ::-1]))
        self.frames += 1

    def _abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        try:
            raise RuntimeError("video writing aborted")
        except RuntimeError as err:
            self._stack.__exit__(type(err), err, err.__traceback__)

    def close(self) -> None:
        """Finish the file and move it into place (no-op when already closed)."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._abort()

    def __del__(self):  # never leave a temporary file behind
        try:
            if getattr(self, "_writer", None) is not None:
                self._abort()
        except Exception:
            pass
