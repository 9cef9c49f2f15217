"""Streaming per-frame results to other programs on this machine (format: STREAM_FORMAT).

* :class:`UdpSender`: one JSON object per datagram to ``host:port`` (stdlib ``socket``).
* :class:`WebSocketServer`: a ``websockets`` server on ``host:port`` (its own thread and asyncio
  loop) that sends ``{"type": "hello", "names": [...], "fps": ..}`` to each client on connect, then
  broadcasts every message to every connected client (a slow client's messages are dropped by
  ``websockets``' broadcast, it never slows the tracker); :meth:`WebSocketServer.close` sends
  ``{"type": "end"}`` first.

Both bind / send to 127.0.0.1 by default; port 0 picks a free port (see ``.port``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

__all__ = ["UdpSender", "WebSocketServer", "encode"]


def encode(message: dict) -> str:
    """Compact JSON text of one message (UTF-8 when sent)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


class UdpSender:
    """Send each message as one UDP datagram (JSON, UTF-8) to ``host:port``.

    A frame's message with 53 weights is about 1.9 kB, well under a datagram's limit. Errors of
    individual sends (nobody listening is not one for UDP) are counted in ``errors``, not raised."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        if not (isinstance(port, int) and 0 < port < 65536):
            raise ValueError(f"port: expected 1..65535, got {port!r}")
        self.addr = (host, port)
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = 0
        self.errors = 0

    def send(self, message: dict) -> None:
        try:
            self.sock.sendto(encode(message).encode("utf-8"), self.addr)
            self.sent += 1
        except OSError:
            self.errors += 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class WebSocketServer:
    """A WebSocket server broadcasting messages to every connected client (any path).

    Args:
        port: TCP port (0 = a free one; the bound port is ``.port`` after construction).
        names: the expression names sent in the "hello" message; fps: the source's frame rate.
        host: interface (default 127.0.0.1).

    :meth:`send` is thread-safe and never blocks on clients. Raises ``OSError`` when the port
    cannot be bound (in use), at construction.
    """

    def __init__(self, port: int, names, fps: float, host: str = "127.0.0.1"):
        if not (isinstance(port, int) and 0 <= port < 65536):
            raise ValueError(f"port: expected 0..65535, got {port!r}")
        self.hello = encode({"type": "hello", "names": list(names), "fps": float(fps)})
        self.clients: set = set()
        self.sent = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, args=(host, port), daemon=True, name="facerig-ws")
        self._thread.start()
        self._ready.wait(10.0)
        if self._error is not None:
            raise self._error
        self.port = self._server.sockets[0].getsockname()[1] if self._server is not None else port

    async def _handler(self, ws, *args):
        self.clients.add(ws)
        try:
            await ws.send(self.hello)
            async for _ in ws:  # clients may send; nothing is expected
                pass
        except Exception:  # noqa: BLE001 - a client going away is normal
            pass
        finally:
            self.clients.discard(ws)

    def _run(self, host, port):
        asyncio.set_event_loop(self._loop)

        async def main():
            try:
                try:
                    from websockets.asyncio.server import serve
                except ImportError:  # websockets 12: the legacy server
                    from websockets.server import serve
                self._stop = asyncio.Event()
                self._server = await serve(self._handler, host, port)
            except BaseException as err:  # noqa: BLE001 - re-raised in the constructor
                self._error = err
                self._ready.set()
                return
            self._ready.set()
            await self._stop.wait()
            self._server.close()
            await self._server.wait_closed()

        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def _broadcast(self, text: str):
        try:
            from websockets.asyncio.server import broadcast
        except ImportError:  # websockets 12
            from websockets import broadcast
        if self.clients:
            broadcast(set(self.clients), text)
            self.sent += 1

    def send(self, message: dict) -> None:
        """Queue one message for every connected client (thread-safe, returns at once)."""
        if self._loop.is_closed() or self._stop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._broadcast, encode(message))
        except RuntimeError:  # the loop has stopped
            pass

    def close(self, timeout: float = 2.0) -> None:
        """Send {"type": "end"} to every client, close the connections and stop the thread."""
        if self._thread.is_alive() and self._stop is not None and not self._loop.is_closed():
            self.send({"type": "end"})

            async def _finish():
                await asyncio.sleep(0.05)  # let the queued messages go out
                self._stop.set()

            try:
                asyncio.run_coroutine_threadsafe(_finish(), self._loop)
            except RuntimeError:
                pass
        self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
