"""Plain ASGI middleware: the arrival time, a request body size limit and a Host check.

:class:`BodyLimit` answers 413 with a JSON error when ``Content-Length`` says the body is too
large, and also counts the bytes actually received (a chunked or lying client gets the same
413), before the app sees anything. The body is buffered (it is at most ``max_bytes``) and
replayed. The bodies held at once, by every request together, are capped too (``max_held``,
8 full-size bodies by default): past it a request gets a fast 503 with ``Retry-After``, so a
burst of large uploads cannot take the machine's memory.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

MAX_BODY = 1 << 20  # 1 MiB: a drawing
PICTURE_MAX_BODY = 16 << 20  # 16 MiB: a photo of 12 MB as base64
HELD_BODIES = 8  # full-size bodies that may be held at once, by all requests together
ARRIVED = "kangae.arrived"  # scope key: time.monotonic() when the request reached the app

Scope = dict[str, Any]


async def send_json(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class Arrival:
    """Note in the scope when a request arrived, so its wait for the model counts from there
    (reading its body and queueing on the event loop included)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        scope[ARRIVED] = time.monotonic()
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 ``{"error": ...}``, and requests whose
    body would take the bytes held by all requests past ``max_held`` with 503 and
    ``Retry-After`` (a body is held from its first byte until its response is sent)."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY, max_held: int | None = None):
        self.app, self.max_bytes = app, max_bytes
        self.max_held = max(max_bytes, HELD_BODIES * max_bytes if max_held is None else max_held)
        self.held = 0  # bytes of bodies held now (one event loop: no lock needed)

    def _too_large(self) -> dict[str, Any]:
        return {"error": f"request body too large: the limit is {self.max_bytes:,} bytes"}

    async def _busy(self, send: Any) -> None:
        body = json.dumps({"error": "too many large requests at once; retry in a second"}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    def _take(self, count: int) -> bool:
        """Hold ``count`` more bytes if the cap allows."""
        if self.held + count > self.max_held:
            return False
        self.held += count
        return True

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        declared = 0
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json(send, 400, {"error": "Content-Length is not a number"})
                return
            if declared > self.max_bytes:
                await send_json(send, 413, self._too_large())
                return
        declared = max(0, declared)
        if not self._take(declared):
            await self._busy(send)
            return
        taken = declared
        try:
            body = bytearray()
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_bytes:
                    await send_json(send, 413, self._too_large())
                    return
                if len(body) > taken:  # a chunked body, or one longer than it said
                    if not self._take(len(body) - taken):
                        await self._busy(send)
                        return
                    taken = len(body)
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.held -= taken


class CancelOnDisconnect:
    """Cancel the request's handler when its client goes away before the answer (the page
    aborts a request for an explanation it no longer shows): its queued model call leaves the
    queue and a running one stops within a step (:func:`~kangae.serve.batcher.run_by`).
    Starlette itself lets a handler run on after a disconnect. Sits inside :class:`BodyLimit`,
    which has read the whole body, so the only message left to receive is the disconnect."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        first: dict[str, Any] | None = await receive()  # the body, replayed
        gone = asyncio.Event()  # the client left before the whole answer was sent
        answered = False

        async def app_receive() -> dict[str, Any]:
            nonlocal first
            if first is not None:
                message, first = first, None
                return message
            await gone.wait()
            return {"type": "http.disconnect"}

        async def app_send(message: dict[str, Any]) -> None:
            nonlocal answered
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not answered:  # servers also say "disconnect" once the response is complete
                gone.set()

        handler = asyncio.ensure_future(self.app(scope, app_receive, app_send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not handler.done():
                if gone.is_set():
                    handler.cancel()
                await asyncio.wait({handler})
        finally:
            watcher.cancel()
            if not handler.done():
                handler.cancel()
            await asyncio.gather(handler, watcher, return_exceptions=True)
        if not handler.cancelled():
            handler.result()  # the handler's own exception, if it raised one


def host_name(host: str) -> str:
    """``Host`` header without its port: ``127.0.0.1:8000`` -> ``127.0.0.1``, ``[::1]:80`` -> ``[::1]``."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0]


class HostCheck:
    """Answer 400 ``{"error": ...}`` unless the ``Host`` header names one of ``allowed`` (any
    port): a page elsewhere cannot reach a server on 127.0.0.1 by DNS rebinding."""

    def __init__(self, app: Any, allowed: list[str]):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1").lower()
            if host_name(host) not in self.allowed:
                if scope["type"] == "http":
                    await send_json(send, 400, {"error": f"Host '{host}' is not served here"})
                return
        await self.app(scope, receive, send)
