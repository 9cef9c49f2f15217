"""``facerig live``: live face tracking -> streaming ARKit weights, head pose, overlays, recordings.

    facerig live                                   # camera 0, a window when a display exists
    facerig live clip.mp4 --headless -o out/live   # a file played at its own rate, recorded
    facerig live clip.mp4 --fast -o out/live       # every frame, as fast as possible
    facerig live 1 --udp 9000 --ws 9001            # camera 1, streamed to localhost
    facerig live rtsp://cam/stream --rig out/rig --live-link-csv take.csv

SOURCE: a camera index (default 0), a video file, a folder of frames or a URL OpenCV opens.
``-o OUT`` writes ``tracking.csv`` (the columns of ``facerig rig``'s), ``overlay.mp4`` and
``live.json`` (the run's summary); ``--live-link-csv FILE`` the CSV layout of Epic's Live Link Face
app (52 ARKit columns + head yaw / pitch / roll) for Unreal / MetaHuman tools. ``--udp PORT`` and
``--ws PORT`` stream one JSON object per frame to 127.0.0.1 (STREAM_FORMAT).

Window keys: q quit, m next overlay mode, r reset the tracker (and re-estimate the identity with
``--identity online``), s save a snapshot PNG.
Ctrl-C (or the end of a file) closes the recordings (complete, playable), prints a summary and
exits 0. Exit 2: the source cannot be opened, or no face was found (nothing is written then).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "live", help="live tracking from a camera / video / stream: ARKit weights + head pose, streamed and recorded",
        description="Track a face live: MediaPipe landmarks, the rig tracker's landmark solve (53 ARKit-style "
                    "weights in [0, 1], head pose, light) and its photometric step when the latency budget "
                    "allows, causal One-Euro smoothing. Shows a window when a display exists; streams per-frame "
                    "JSON over UDP / WebSocket; records tracking.csv, overlay.mp4, live.json and a Live Link "
                    "Face CSV.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Keys (window): q quit, m overlay mode, r reset the tracker, s snapshot. Exit status: 0 done "
               "(end of source, q or Ctrl-C); 2 bad input (source cannot be opened, no face).")
    p.add_argument("source", nargs="?", default="0", metavar="SOURCE",
                   help="camera index (default 0), video file, folder of frames, or URL (rtsp://, http://)")
    p.add_argument("-o", "--out", default=None, help="record tracking.csv, overlay.mp4 and live.json into this folder")
    p.add_argument("--rig", default=None, metavar="DIR",
                   help="a `facerig rig` output folder: track with that person's personalised blendshapes")
    p.add_argument("--identity", choices=("default", "online"), default="default",
                   help="without --rig: the default face (default), or the person's identity estimated from the "
                        "first seconds with a face and then frozen (key r re-estimates)")
    p.add_argument("--identity-seconds", type=float, default=2.0, metavar="S",
                   help="--identity online: seconds of frames it is estimated from (default 2)")
    p.add_argument("--headless", action="store_true", help="no window (default when there is no display)")
    p.add_argument("--udp", type=int, default=None, metavar="PORT", help="send per-frame JSON to 127.0.0.1:PORT")
    p.add_argument("--ws", type=int, default=None, metavar="PORT",
                   help="serve per-frame JSON over WebSocket on 127.0.0.1:PORT")
    p.add_argument("--live-link-csv", default=None, metavar="FILE",
                   help="write a Live Link Face CSV (52 ARKit columns + head yaw/pitch/roll) for Unreal / MetaHuman")
    rt = p.add_mutually_exclusive_group()
    rt.add_argument("--realtime", dest="realtime", action="store_true", default=None,
                    help="files: play at their own frame rate, dropping frames the tracker misses (default)")
    rt.add_argument("--fast", dest="realtime", action="store_false",
                    help="files: process every frame, as fast as possible")
    p.add_argument("--fps", type=float, default=None, help="source frame rate override (folders: 30)")
    p.add_argument("--photometric", choices=("auto", "always", "off"), default="auto",
                   help="the photometric step: when the latency budget allows (default), every frame, or never")
    p.add_argument("--budget", type=float, default=50.0, metavar="MS",
                   help="latency budget of --photometric auto, capture to output (default 50 ms)")
    p.add_argument("--overlay", choices=("shaded", "textured", "wireframe", "landmarks"), default="shaded",
                   help="overlay mode of the window and overlay.mp4 (default shaded)")
    p.add_argument("--no-overlay-video", action="store_true", help="with -o: skip overlay.mp4")
    p.add_argument("--no-smoothing", action="store_true", help="no One-Euro smoothing of the output")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many processed frames")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of the solver (default 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-second status line")
    p.set_defaults(func=run)


def _has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class _Stop:
    """SIGINT / SIGTERM set a flag; the loop stops after the frame in hand (a second Ctrl-C aborts)."""

    def __init__(self):
        self.flag = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run(args) -> int:
    from facerig.cli import UserError
    from facerig.face import NoFaceError
    from facerig.live import (OVERLAY_MODES, LiveOptions, LiveTracker, Recorder, SourceError, UdpSender,
                              WebSocketServer, summarise)

    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames: expected >= 1, got {args.max_frames}")
    for flag, port in (("--udp", args.udp), ("--ws", args.ws)):
        if port is not None and not 0 < port < 65536:
            raise UserError(f"{flag}: expected a port 1..65535, got {port}")
    try:
        opts = LiveOptions(realtime=args.realtime, fps=args.fps, photometric=args.photometric,
                           latency_budget_ms=args.budget, smoothing=not args.no_smoothing, threads=args.threads,
                           identity=args.identity, identity_seconds=args.identity_seconds)
        lt = LiveTracker(args.source, opts, rig=args.rig)
    except (SourceError, ValueError) as err:
        raise UserError(str(err)) from None
    window = not args.headless and _has_display()
    if not args.headless and not window and not args.quiet:
        print("no display: running headless", file=sys.stderr)
    W, H = lt.size
    kind = lt.source.kind
    print(f"live: {kind} {args.source} {W}x{H} at {lt.fps:.3g} fps"
          + (" (real time)" if lt.source.realtime else " (every frame, as fast as possible)")
          + (f"; rig {args.rig}" if args.rig else ("; identity estimated online" if args.identity == "online"
                                                     else "; default face")))
    out = None if args.out is None else Path(args.out)
    out_existed = out is not None and out.exists()
    rec = udp = ws = None
    try:
        if out is not None or args.live_link_csv:
            rec = Recorder(out, lt.names, lt.fps, lt.size, overlay=not args.no_overlay_video,
                           live_link=args.live_link_csv)
        if args.udp is not None:
            udp = UdpSender(args.udp)
        if args.ws is not None:
            ws = WebSocketServer(args.ws, lt.names, lt.fps)
            print(f"WebSocket: ws://127.0.0.1:{ws.port}/")
    except OSError as err:
        if rec is not None:
            rec.abort()
        if udp is not None:
            udp.close()
        raise UserError(f"cannot start the outputs: {err}") from None

    mode = args.overlay
    lat, stages = [], []
    t_first = t_last = None
    t_status = time.perf_counter()
    n_status = 0
    ok = False
    gen = lt.frames()
    try:
        with _Stop() as stop:
            for f in gen:
                now = time.perf_counter()
                t_first = t_first or now
                t_last = now
                lat.append(f.latency_ms)
                stages.append(f.stages_ms)
                if udp is not None or ws is not None:
                    msg = f.message(lt.names)
                    if udp is not None:
                        udp.send(msg)
                    if ws is not None:
                        ws.send(msg)
                n = len(lat)
                fps_now = (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else 0.0
                hud = {"fps": fps_now, "latency_ms": f.latency_ms, "dropped": f.dropped, "identity": lt.identity_state}
                pic = None
                if window or (rec is not None and rec.wants_overlay):
                    pic = lt.overlay(f, mode, hud)
                if rec is not None:
                    rec.add(f, overlay_rgb=pic)
                if window:
                    import cv2

                    cv2.imshow("facerig live", pic[:, :, ::-1])
                    key = cv2.waitKey(1) & 0xFF
                    if key == ord("q"):
                        break
                    if key == ord("m"):
                        mode = OVERLAY_MODES[(OVERLAY_MODES.index(mode) + 1) % len(OVERLAY_MODES)]
                    elif key == ord("r"):
                        lt.reset_identity()
                    elif key == ord("s"):
                        from facerig.io import write_image

                        snap = (out or Path(".")) / f"snapshot_{f.index:06d}.png"
                        write_image(snap, pic)
                        print(f"wrote {snap}")
                if not args.quiet and now - t_status >= 1.0:
                    done = n - n_status
                    print(f"frame {f.index}: {done / (now - t_status):.1f} fps, latency {f.latency_ms:.0f} ms, "
                          f"dropped {f.dropped}" + ("" if f.found else ", no face"), file=sys.stderr, flush=True)
                    t_status, n_status = now, n
                if stop.flag or (args.max_frames is not None and n >= args.max_frames):
                    break
        gen.close()
        if lt.stats["faces"] == 0:
            raise NoFaceError(f"no face found in {args.source} ({lt.stats['frames']} frames processed)")
        ok = True
    except (NoFaceError, SourceError) as err:
        raise UserError(str(err)) from None
    finally:
        gen.close()
        if ws is not None:
            ws.close()
        if udp is not None:
            udp.close()
        if window:
            import cv2

            cv2.destroyAllWindows()
        if not ok and rec is not None:
            rec.abort()
            if out is not None and not out_existed:
                try:
                    out.rmdir()  # only when empty
                except OSError:
                    pass
    wall = (t_last - t_first) if lat and t_last > t_first else 0.0
    summ = summarise(lat, stages, wall, lt.stats)
    if len(lat) > 1:
        summ["processed_fps"] = (len(lat) - 1) / wall if wall > 0 else None
    summ.update({"source": str(args.source), "kind": kind, "source_fps": lt.fps, "size": [W, H],
                 "realtime": lt.source.realtime, "frames_read": lt.source.frames_read,
                 "rig": args.rig, "identity": lt.identity_state, "photometric": args.photometric, "latency_budget_ms": args.budget,
                 "names": lt.names})
    summ.update({k: v for k, v in lt.stats.items() if k.startswith("identity")})
    files = rec.close(summ) if rec is not None else {}
    sfps = f"{summ['processed_fps']:.1f}" if summ.get("processed_fps") else "-"
    st = ", ".join(f"{k} {v:.1f}" for k, v in summ["stage_ms"].items())
    print(f"processed {summ['frames']} frames ({summ['faces']} with a face) at {sfps} frames/s; dropped "
          f"{summ['dropped']}; latency p50 {summ['latency_ms_p50']:.1f} ms, p95 {summ['latency_ms_p95']:.1f} ms; "
          f"photometric step on {summ['photometric_frames']} frames")
    print(f"per-stage ms (median): {st}")
    if files:
        print("wrote " + ", ".join(str(v) for v in files.values()))
    return 0
