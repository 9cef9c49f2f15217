"""The viewer's local HTTP server: the page (package data), the rig, and the source video's frames.

Routes (GET/HEAD only; anything else is 404/405):

``/``                 the page (``static/index.html``)
``/static/<file>``    the page's scripts, styles and the vendored three.js (only files inside
                      ``facerig/view/static``; ``..``, encoded or not, never leaves it)
``/rig.glb``          the rig (``?download=1``: as an attachment named after the rig)
``/info.json``        what the page needs: names, frames, fps, the video, the WebSocket URL
``/video/<t>.jpg``    rig frame ``t`` of the video shown beside the animation, JPEG (decoded here
                      with OpenCV, because browsers cannot play the mp4v files OpenCV writes)

Requests whose ``Host`` header is not this server's host (or localhost) are refused, which stops
DNS-rebinding pages from reading the rig through a browser.
"""

from __future__ import annotations

import json
import mimetypes
import re
import struct
import threading
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
_LOCAL_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}


class RigFileError(ValueError):
    """The rig path is not a readable facerig rig (the message names the path and the fix)."""


@dataclass
class RigInfo:
    """What the viewer knows about a rig, read from its files (no heavy imports).

    Attributes:
        glb: path of the ``.glb``; folder: the rig folder (the glb's folder).
        name: display name (the folder's name for ``rig.glb``, else the file's stem).
        names: K morph-target (expression) names, ``meshes[0].extras.targetNames``.
        frames: T animation frames (0 when the glb has no animation); fps: frames per second.
        video: path of the video shown beside the animation (None when there is none);
            video_crop: keep the left ``video_crop`` pixels of each frame (None: all);
            video_frames: (T,) source frame index of each rig frame (None: rig frame t = video frame t).
    """

    glb: Path
    folder: Path
    name: str
    names: list[str]
    frames: int
    fps: float
    video: Path | None = None
    video_crop: int | None = None
    video_frames: list[int] | None = None
    metrics: dict = field(default_factory=dict)


def read_glb_json(path) -> dict:
    """The JSON chunk of a glTF binary file as a dict (raises :class:`RigFileError`)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
            if len(head) < 20:
                raise RigFileError(f"{path}: not a glTF binary (.glb) file: too short")
            magic, version, _total, n, kind = struct.unpack("<4sIIII", head)
            if magic != b"glTF" or kind != 0x4E4F534A:
                raise RigFileError(f"{path}: not a glTF binary (.glb) file")
            return json.loads(fh.read(n))
    except OSError as err:
        raise RigFileError(f"{path}: cannot read: {err.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RigFileError(f"{path}: corrupt glTF JSON chunk") from None


def load_rig_info(rig, video=None) -> RigInfo:
    """Resolve ``rig`` (a ``.glb`` file or a ``facerig rig`` output folder holding ``rig.glb``) and
    read its names, frame count and rate; pick the video to show: ``video`` if given (any file
    :class:`facerig.video.VideoReader` reads; rig frame t shows the source frame of tracking.csv's
    row t when the folder has one), else the folder's ``preview.mp4`` cropped to its first two panels
    (the source and the fit over it). Raises :class:`RigFileError` with the fix."""
    p = Path(rig)
    if p.is_dir():
        glb = p / "rig.glb"
        if not glb.is_file():
            raise RigFileError(f"{p}: no rig.glb in this folder: pass a .glb file or a `facerig rig -o` folder")
    elif p.is_file():
        if p.suffix.lower() != ".glb":
            raise RigFileError(f"{p}: expected a .glb file or a `facerig rig -o` output folder")
        glb = p
    else:
        raise RigFileError(f"{p}: no such file or folder (make a rig with `facerig rig -o out/rig`)")
    gltf = read_glb_json(glb)
    meshes = [m for m in gltf.get("meshes", []) if m.get("primitives")]
    if not meshes:
        raise RigFileError(f"{glb}: the glTF file has no mesh")
    m = meshes[0]
    names = (m.get("extras") or {}).get("targetNames") or \
        (m["primitives"][0].get("extras") or {}).get("targetNames") or \
        [f"shape{k}" for k in range(len(m["primitives"][0].get("targets", [])))]
    frames, fps = 0, 30.0
    anims = gltf.get("animations") or []
    if anims and anims[0].get("samplers"):
        acc = gltf["accessors"][anims[0]["samplers"][0]["input"]]
        frames = int(acc["count"])
        dur = float((acc.get("max") or [0.0])[0])
        if frames > 1 and dur > 0:
            fps = (frames - 1) / dur
    folder = glb.parent
    meta = {}
    if (folder / "rig.json").is_file() and glb.name == "rig.glb":
        try:
            meta = json.loads((folder / "rig.json").read_text())
            fps = float(meta.get("fps", fps))
        except (OSError, ValueError, TypeError):
            meta = {}
    name = folder.resolve().name if glb.name == "rig.glb" else glb.stem
    info = RigInfo(glb=glb, folder=folder, name=name, names=[str(n) for n in names], frames=frames, fps=fps,
                   metrics=meta.get("metrics") or {})
    if video is not None:
        info.video = Path(video)
        if not info.video.exists():
            raise RigFileError(f"--video {info.video}: no such file or folder")
        info.video_frames = _source_frames(folder / "tracking.csv") if glb.name == "rig.glb" else None
    elif glb.name == "rig.glb" and (folder / "preview.mp4").is_file():
        info.video = folder / "preview.mp4"
        info.video_crop = -1  # decided from the first frame: the left two of three panels
    return info


def _source_frames(csv_path: Path) -> list[int] | None:
    import csv

    if not csv_path.is_file():
        return None
    with open(csv_path, newline="") as fh:
        return [int(row["source_frame"]) for row in csv.DictReader(fh)]


class _Frames:
    """Decodes the video sequentially (seeking in mp4v is unreliable) and keeps JPEGs of the
    frames it has decoded (the most recent ``cache`` of them)."""

    def __init__(self, info: RigInfo, quality: int = 85, cache: int = 3000):
        from facerig.video import VideoReader

        self.info = info
        self.reader = VideoReader(info.video)
        self.quality = int(quality)
        self.cache: OrderedDict[int, bytes] = OrderedDict()
        self.size = cache
        self._it = None
        self._next = 0
        self.lock = threading.Lock()
        self.count = self.reader.frame_count
        w, h = self.reader.size
        self.crop = None
        if info.video_crop == -1:  # preview.mp4 = source | fit over it | rig, panels h high, 2 w + h wide
            self.crop = 2 * ((w - h) // 2) if w > 2 * h else None
        self.width = self.crop or w
        self.height = h

    def jpeg(self, t: int) -> bytes | None:
        """JPEG bytes of rig frame ``t`` (None when the video has no such frame)."""
        vf = self.info.video_frames
        if vf is not None:
            if not 0 <= t < len(vf):
                return None
            t = vf[t]
        with self.lock:
            if t in self.cache:
                self.cache.move_to_end(t)
                return self.cache[t]
            if self._it is None or t < self._next:
                self.reader.close()
                self._it, self._next = iter(self.reader), 0
            for i, rgb in self._it:
                self._next = i + 1
                self._store(i, rgb)
                if i >= t:
                    break
            return self.cache.get(t)

    def _store(self, i: int, rgb) -> None:
        import cv2

        if self.crop:
            rgb = rgb[:, :self.crop]
        ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self.cache[i] = buf.tobytes()
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)

    def close(self) -> None:
        self.reader.close()


class _Handler(BaseHTTPRequestHandler):
    server_version = "facerig-view"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the CLI prints the URL, not every request
        pass

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head: bool = False):
        app: ViewServer = self.server.app
        if not app._host_allowed(self.headers.get("Host", "")):
            return self._send(HTTPStatus.FORBIDDEN, b"forbidden host\n", "text/plain", head)
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = urllib.parse.parse_qs(url.query)
        if path in ("/", "/index.html"):
            return self._file(STATIC / "index.html", head)
        if path.startswith("/static/"):
            target = _safe_join(STATIC, path[len("/static/"):])
            return self._file(target, head) if target else self._not_found(head)
        if path == "/rig.glb":
            extra = {}
            if query.get("download", ["0"])[0] not in ("", "0"):
                extra["Content-Disposition"] = f'attachment; filename="{app.download_name}"'
            return self._file(app.info.glb, head, "model/gltf-binary", extra)
        if path == "/info.json":
            return self._send(HTTPStatus.OK, json.dumps(app.page_info()).encode(), "application/json", head)
        m = re.fullmatch(r"/video/(\d{1,7})\.jpg", path)
        if m and app._frames is not None:
            data = app._frames.jpeg(int(m.group(1)))
            if data is not None:
                return self._send(HTTPStatus.OK, data, "image/jpeg", head, {"Cache-Control": "max-age=3600"})
        return self._not_found(head)

    def do_POST(self):
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only\n", "text/plain", False, {"Allow": "GET, HEAD"})

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _not_found(self, head):
        self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head)

    def _file(self, path: Path, head: bool, ctype: str | None = None, extra: dict | None = None):
        try:
            data = path.read_bytes()
        except OSError:
            return self._not_found(head)
        if ctype is None:
            ctype = {".js": "text/javascript", ".css": "text/css", ".html": "text/html; charset=utf-8"}.get(
                path.suffix, mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        self._send(HTTPStatus.OK, data, ctype, head, extra)

    def _send(self, status, data: bytes, ctype: str, head: bool, extra: dict | None = None):
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


def _safe_join(root: Path, rel: str) -> Path | None:
    """``root / rel`` when that names a file inside ``root`` (after URL-decoding and resolving
    links and ``..``), else None."""
    rel = urllib.parse.unquote(rel)
    if "\0" in rel or "\\" in rel or rel.startswith("/"):
        return None
    target = (root / rel).resolve()
    try:
        target.relative_to(root.resolve())
    except ValueError:
        return None
    return target if target.is_file() else None


class ViewServer:
    """A running viewer server (see :func:`serve`). Attributes: ``url`` (the page, with the
    WebSocket URL in its query when one was given), ``port``, ``host``, ``info`` (:class:`RigInfo`).
    ``close()`` stops it; it is also a context manager."""

    def __init__(self, info: RigInfo, host: str = "127.0.0.1", port: int = 0, ws_url: str | None = None):
        self.info = info
        self.ws_url = ws_url
        self.host = host
        self._frames = _Frames(info) if info.video is not None else None
        self._http = ThreadingHTTPServer((host, int(port)), _Handler)
        self._http.daemon_threads = True
        self._http.app = self
        self.port = int(self._http.server_address[1])
        shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
        self.base_url = f"http://{shown}:{self.port}/"
        self._thread = threading.Thread(target=self._http.serve_forever, name="facerig-view", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return self.page_url()

    def page_url(self, frame: int | None = None, weights: dict | None = None, ws_url: str | None = None,
                 play: bool | None = None) -> str:
        """The page's URL with a start state: ``frame`` (show that animation frame, paused),
        ``weights`` ({name: value} set on top, paused), ``ws_url`` (animate from that WebSocket)."""
        q = {}
        ws = ws_url or self.ws_url
        if ws:
            q["ws"] = ws
        if frame is not None:
            q["frame"] = str(int(frame))
        if weights:
            q["weights"] = ",".join(f"{k}={float(v):g}" for k, v in weights.items())
        if play is not None:
            q["play"] = "1" if play else "0"
        return self.base_url + ("?" + urllib.parse.urlencode(q, safe=":/,=") if q else "")

    @property
    def download_name(self) -> str:
        """File name offered by the download button: the rig's name (ASCII-safe) + .glb."""
        return (re.sub(r"[^A-Za-z0-9._-]+", "_", self.info.name) or "rig") + ".glb"

    def page_info(self) -> dict:
        i = self.info
        video = None
        if self._frames is not None:
            video = {"width": self._frames.width, "height": self._frames.height,
                     "frames": len(i.video_frames) if i.video_frames is not None else self._frames.count,
                     "label": ("source | fit (preview.mp4)" if self._frames.crop else i.video.name)}
        return {"name": i.name, "names": i.names, "frames": i.frames, "fps": i.fps, "video": video,
                "ws_url": self.ws_url, "glb": "rig.glb", "glb_bytes": i.glb.stat().st_size,
                "download_name": self.download_name, "metrics": i.metrics}

    def _host_allowed(self, header: str) -> bool:
        if self.host in ("", "0.0.0.0", "::"):
            return True  # the user chose to serve every interface
        h = header.strip().lower()
        if h.startswith("["):
            h = h[: h.find("]") + 1]
        elif h.count(":") == 1:
            h = h.split(":")[0]
        return h in _LOCAL_NAMES or h == self.host.lower()

    def serve_forever(self) -> None:
        """Block until Ctrl-C (KeyboardInterrupt), then close."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving and release the port and the video decoder."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
            if self._frames is not None:
                self._frames.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"ViewServer({self.base_url!r}, rig={str(self.info.glb)!r})"


def serve(rig, host: str = "127.0.0.1", port: int = 0, ws_url: str | None = None, video=None) -> ViewServer:
    """Serve the viewer page for ``rig`` (a ``.glb`` or a ``facerig rig`` output folder) in a
    background thread and return the :class:`ViewServer` (``.url``, ``.close()``).

    Args:
        host: interface to bind; the default serves this machine only. ``"0.0.0.0"`` exposes the
            rig to the network: only do that on purpose.
        port: TCP port; 0 picks a free one (see ``server.port``).
        ws_url: a WebSocket (``ws://host:port/``) sending per-frame messages in facerig's live
            format (``type`` "hello" / "frame" / "end", ``weights`` by expression name, ``rotation``
            axis-angle rad and ``translation`` cm in the OpenCV camera frame); the page then
            animates the rig from it and shows "no live data" after 2 s without a frame.
        video: a video (file or folder of frames) to show beside the animation instead of the
            folder's preview.mp4.
    Raises :class:`RigFileError` for a path that is not a rig, OSError when the port is taken.
    """
    if ws_url is not None and not re.fullmatch(r"wss?://[^\s\"'<>]+", str(ws_url)):
        raise ValueError(f"ws_url: expected a ws:// or wss:// URL, got {ws_url!r}")
    return ViewServer(load_rig_info(rig, video=video), host=host, port=port, ws_url=ws_url)
