"""facerig.live: live face tracking from a camera, a video file, a folder of frames or a stream.

* :func:`track` - a generator of :class:`LiveFrame` (53 ARKit-style weights in [0, 1], head pose,
  light, latency) for library users who build their own loop; :class:`LiveTracker` the same
  with its state (names, stats, overlays).
* :func:`open_source` / :class:`FrameSource` - the capture thread that always hands over the
  newest frame (stale frames dropped and counted, never queued).
* :class:`CodeFilter` - causal One-Euro smoothing of the weights and head pose.
* :class:`UdpSender`, :class:`WebSocketServer` - streaming per-frame JSON (STREAM_FORMAT) on localhost.
* :class:`Recorder` - tracking.csv (the rig's columns), overlay.mp4, live.json and a Live Link Face CSV.
* :func:`draw_overlay` - shaded / textured / wireframe / landmark overlay pictures with a HUD.

The command: ``facerig live [SOURCE] [--headless] [-o OUT] [--udp PORT] [--ws PORT] [--live-link-csv FILE]``.
"""

from facerig.live.loop import CodeFilter, LiveFrame, LiveOptions, LiveTracker, load_rig_identity, track
from facerig.live.overlay import OVERLAY_MODES, draw_overlay
from facerig.live.record import LIVE_LINK_BLENDSHAPES, LIVE_LINK_HEADER, Recorder, live_link_timecode, live_link_values
from facerig.live.source import Frame, FrameSource, SourceError, open_source
from facerig.live.stream import UdpSender, WebSocketServer

__all__ = ["track", "LiveTracker", "LiveOptions", "LiveFrame", "CodeFilter", "load_rig_identity", "open_source",
           "FrameSource", "Frame", "SourceError", "UdpSender", "WebSocketServer", "Recorder", "LIVE_LINK_HEADER",
           "LIVE_LINK_BLENDSHAPES", "live_link_values", "live_link_timecode", "draw_overlay", "OVERLAY_MODES",
           "summarise"]


def summarise(frames_latency_ms, stages, wall_s: float, stats: dict) -> dict:
    """Summary numbers of a run: ``frames_latency_ms`` (N,) latencies, ``stages`` a list of per-frame
    ``stages_ms`` dicts, ``wall_s`` seconds from the first frame's capture to the last output,
    ``stats`` the tracker's counters. Returns frames, faces, processed_fps, dropped,
    latency_ms_p50 / p95 / max, stage_ms (median CPU ms per stage) and photometric_frames."""
    import numpy as np

    lat = np.asarray(frames_latency_ms, np.float64)
    n = int(stats.get("frames", len(lat)))
    keys = sorted({k for s in stages for k in s})
    return {
        "frames": n, "faces": int(stats.get("faces", 0)), "dropped": int(stats.get("dropped", 0)),
        "processed_fps": (n / wall_s) if wall_s > 0 else None,
        "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
        "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None,
        "latency_ms_max": float(lat.max()) if lat.size else None,
        "stage_ms": {k: float(np.median([s[k] for s in stages if k in s])) for k in keys},
        "photometric_frames": int(stats.get("photometric", 0)),
    }
