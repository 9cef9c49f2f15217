"""Frame sources for live tracking: a capture thread that always hands over the newest frame.

:func:`open_source` opens a camera index, a video file, a folder of frames or a URL OpenCV opens
(RTSP / HTTP) and returns a :class:`FrameSource`. Its capture thread decodes frames as they come
(a camera's or stream's own rate; a file at its frame rate when ``realtime``, simulating a camera)
and keeps only the newest one: a frame the consumer did not take before the next one arrived is
*dropped* and counted, never queued, so the consumer's latency cannot grow. With ``realtime=False``
(files and folders only) the thread waits for the consumer instead: every frame is processed, as
fast as the consumer goes.

Frames are ``(H, W, 3)`` uint8 RGB. Times are seconds: ``Frame.t`` is the frame's time since the
source started (media time ``index / fps`` for files and folders, wall-clock time since the first
frame for cameras and streams), ``Frame.captured`` the ``time.perf_counter()`` at which the frame
was decoded (latency is measured from it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Frame", "FrameSource", "SourceError", "open_source"]


class SourceError(ValueError):
    """A live source cannot be opened or read (names the source and what to try)."""


@dataclass
class Frame:
    """One captured frame.

    Attributes:
        index: frame number in the source (files: the source frame; cameras: frames decoded so far).
        t: seconds since the source started (files: ``index / fps``).
        captured: ``time.perf_counter()`` when the frame was decoded (seconds).
        rgb: (H, W, 3) uint8 RGB.
    """

    index: int
    t: float
    captured: float
    rgb: np.ndarray


def _camera_index(source) -> int | None:
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return int(source)
    if isinstance(source, str) and source.strip().isdigit():
        return int(source.strip())
    return None


class FrameSource:
    """A capture thread over one source (made by :func:`open_source`; use as a context manager).

    Attributes:
        kind: "camera", "file", "folder" or "url".
        name: the source as given (str).
        fps: the source's frame rate (frames/s; cameras and streams: what OpenCV reports, 30 when
            it reports nothing).
        size: (W, H) pixels.
        realtime: frames are paced at ``fps`` and the newest is kept (False: lossless, files only).
        frames_read: frames decoded so far; dropped: frames replaced before the consumer took them.
        error: an exception the capture thread stopped on (re-raised by :meth:`get`), else None.

    :meth:`get` returns the newest untaken :class:`Frame`, waiting for one; ``None`` once the
    source has ended (end of file, camera gone) or :meth:`close` was called.
    """

    def __init__(self, kind: str, name: str, fps: float, size: tuple[int, int], realtime: bool, reader):
        self.kind, self.name, self.fps, self.size = kind, name, float(fps), (int(size[0]), int(size[1]))
        self.realtime = bool(realtime)
        self.frames_read = 0
        self.dropped = 0
        self.error: BaseException | None = None
        self._reader = reader  # a callable returning an iterator of (index, rgb)
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0: float | None = None

    # ---------------------------------------------------------------- thread
    def start(self) -> "FrameSource":
        """Start the capture thread (idempotent). The source's clock starts now."""
        if self._thread is None:
            self.t0 = time.perf_counter()
            self._thread = threading.Thread(target=self._run, name=f"facerig-capture-{self.kind}", daemon=True)
            self._thread.start()
        return self

    def _run(self):
        try:
            paced = self.realtime and self.kind in ("file", "folder")
            for k, (index, rgb) in enumerate(self._reader()):
                if self._stop.is_set():
                    break
                if paced:  # play the file at its own rate, like a camera would deliver it
                    due = self.t0 + k / self.fps
                    wait = due - time.perf_counter()
                    if wait > 0 and self._stop.wait(wait):
                        break
                now = time.perf_counter()
                t = k / self.fps if self.kind in ("file", "folder") else now - self.t0
                frame = Frame(int(index), float(t), now, rgb)
                with self._cond:
                    if not self.realtime:
                        while self._slot is not None and not self._stop.is_set():
                            self._cond.wait(0.1)
                    elif self._slot is not None:
                        self.dropped += 1
                    self._slot = frame
                    self.frames_read += 1
                    self._cond.notify_all()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self.error = err
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken (waits for one). ``None``: the source ended or was closed,
        or ``timeout`` seconds passed without a frame (then :attr:`ended` is False)."""
        if self._thread is None:
            self.start()
        deadline = None if timeout is None else time.perf_counter() + timeout
        with self._cond:
            while self._slot is None and not self._ended:
                left = None if deadline is None else deadline - time.perf_counter()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else 0.5)
            frame, self._slot = self._slot, None
            self._cond.notify_all()
        if frame is None and self.error is not None:
            err, self.error = self.error, None
            if isinstance(err, Exception):
                raise SourceError(f"source {self.name!r} stopped: {err}") from err
            raise err
        return frame

    @property
    def ended(self) -> bool:
        """True once the capture thread has stopped and its last frame was taken."""
        with self._cond:
            return self._ended and self._slot is None

    def close(self) -> None:
        """Stop the capture thread and release the device or file."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        """Frames until the source ends (``get()`` in a loop)."""
        while True:
            f = self.get()
            if f is None:
                return
            yield f


def _capture_reader(cap, stop_check=None):
    """An iterator factory over an opened cv2.VideoCapture (camera / stream)."""

    def frames():
        try:
            i = 0
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    return
                yield i, np.ascontiguousarray(bgr[:, :, ::-1])
                i += 1
        finally:
            cap.release()

    return frames


def open_source(source=0, *, realtime: bool | None = None, fps: float | None = None) -> FrameSource:
    """Open a live source; the capture thread starts on :meth:`FrameSource.start` (or the first
    :meth:`FrameSource.get`).

    Args:
        source: a camera index (int or a string of digits; default 0), a video file (whatever
            :class:`facerig.video.VideoReader` reads), a folder of frames (sorted by name), or a
            URL OpenCV opens (``rtsp://``, ``http://``, ...).
        realtime: files and folders only: True (default) plays them at ``fps``, keeping the
            newest frame (drops counted, as with a camera); False hands every frame over, as fast
            as the consumer takes them. Cameras and URLs are always real time.
        fps: frame rate override (folders default to 30; files to their own rate).

    Raises:
        SourceError: the source does not exist, cannot be opened, or has no readable frame.
    """
    cam = _camera_index(source)
    name = str(source)
    if cam is None and not (isinstance(source, (str, Path))):
        raise SourceError(f"source: expected a camera index, a video file, a folder or a URL, got {source!r}")
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise SourceError(f"fps: expected a positive frame rate, got {fps!r}")
    is_url = cam is None and "://" in name
    if cam is not None or is_url:
        import cv2

        if realtime is False:
            raise SourceError(f"source {name!r}: a camera or stream is always real time (realtime=False is for files)")
        cap = cv2.VideoCapture(cam if cam is not None else name)
        ok, bgr = (cap.read() if cap.isOpened() else (False, None))
        if not ok or bgr is None:
            cap.release()
            what = f"camera {cam}" if cam is not None else f"stream {name!r}"
            raise SourceError(f"cannot open {what}: OpenCV got no frame from it (is it connected / reachable? "
                              "pass a video file or a folder of frames instead)")
        rate = cap.get(cv2.CAP_PROP_FPS)
        rate = float(fps) if fps is not None else (float(rate) if np.isfinite(rate) and 0 < rate < 1000 else 30.0)
        first = np.ascontiguousarray(bgr[:, :, ::-1])
        inner = _capture_reader(cap)

        def frames():
            yield 0, first
            for i, rgb in inner():
                yield i + 1, rgb

        return FrameSource("camera" if cam is not None else "url", name, rate, (first.shape[1], first.shape[0]),
                           True, frames)
    from facerig.video import VideoError, VideoReader

    path = Path(source)
    if not path.exists():
        raise SourceError(f"source {name!r}: no such file or folder (a camera is an index: 0, 1, ...)")
    try:
        reader = VideoReader(path, fps=fps)
    except (VideoError, ValueError) as err:
        raise SourceError(str(err)) from None
    kind = "folder" if path.is_dir() else "file"
    return FrameSource(kind, name, reader.fps, reader.size, True if realtime is None else bool(realtime),
                       lambda: iter(reader))
