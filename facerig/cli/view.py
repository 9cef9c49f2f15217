"""``facerig view``: look at a rig in the browser, or render a screenshot of it headlessly.

    facerig view out/rig                                  # serve http://127.0.0.1:PORT/ until Ctrl-C
    facerig view rig.glb --port 8000 --open               # a fixed port, open the default browser
    facerig view out/rig --ws-url ws://127.0.0.1:8765/    # animate from `facerig live` data
    facerig view out/rig --screenshot shot.png --frame 20
    facerig view out/rig --screenshot jaw.jpg --weights jawOpen=1,eyeBlink_L=1
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "view", help="show a rig in a local web page (or render a screenshot through headless Chromium)",
        description="Serve a local page that shows RIG (a rig.glb or a `facerig rig` output folder): orbit camera, "
                    "play/pause/scrub of the recorded animation beside the source video, a slider per expression "
                    "shape, a plot of the weights over time, a download button; live animation from a WebSocket "
                    "(--ws-url). With --screenshot, render one view through headless Chromium and exit.")
    p.add_argument("rig", help="a .glb file or a `facerig rig -o` output folder (holding rig.glb)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to serve on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the rig "
                        "to your network)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: a free one, printed)")
    p.add_argument("--ws-url", default=None, metavar="URL",
                   help="a WebSocket of per-frame weights and pose (facerig live --ws PORT: ws://127.0.0.1:PORT/)")
    p.add_argument("--video", default=None, metavar="PATH",
                   help="video (or folder of frames) to show beside the animation (default: the folder's "
                        "preview.mp4, source and fit panels)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("--screenshot", default=None, metavar="OUT",
                   help="render the page headlessly (Chromium) to OUT (.png or .jpg) and exit")
    p.add_argument("--frame", type=int, default=None, help="--screenshot: the animation frame to show (default 0)")
    p.add_argument("--weights", default=None, metavar="NAME=V,...",
                   help="--screenshot: shape weights to set, e.g. jawOpen=1,eyeBlink_L=0.5")
    p.add_argument("--size", default="1280x720", metavar="WxH", help="--screenshot: page size in pixels")
    p.set_defaults(func=run)


def _size(text: str):
    from facerig.cli import UserError
    try:
        w, h = (int(x) for x in text.lower().split("x"))
        if not (64 <= w <= 8192 and 64 <= h <= 8192):
            raise ValueError
        return w, h
    except ValueError:
        raise UserError(f"--size: expected WIDTHxHEIGHT between 64 and 8192 pixels, e.g. 1280x720, got {text!r}") \
            from None


def run(args) -> int:
    from facerig.cli import UserError
    from facerig.view import BrowserError, RigFileError, parse_weights, screenshot, serve

    if args.screenshot is None and (args.frame is not None or args.weights is not None):
        raise UserError("--frame and --weights go with --screenshot (the page has its own controls)")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port: expected 0..65535, got {args.port}")
    try:
        if args.screenshot is not None:
            weights = parse_weights(args.weights) if args.weights else None
            out = screenshot(args.rig, args.screenshot, frame=args.frame, weights=weights, size=_size(args.size),
                             video=args.video)
            print(f"wrote {out}")
            return 0
        server = serve(args.rig, host=args.host, port=args.port, ws_url=args.ws_url, video=args.video)
    except (RigFileError, ValueError, BrowserError) as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {err.strerror or err} (try another --port)") \
            from None
    info = server.info
    print(f"facerig view: {info.glb} ({len(info.names)} shapes, {info.frames} frames"
          + (f", video {info.video.name}" if info.video else "") + ")")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: other machines can load this rig", file=sys.stderr)
    print(f"open {server.url}   (Ctrl-C to stop)", flush=True)
    if args.open:
        import webbrowser
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    return 0
