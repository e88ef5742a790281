"""Plain ASGI middleware: the arrival time, a request body size limit and a Host check.

:class:`BodyLimit` answers 413 with a JSON error when ``Content-Length`` says the body is too
large, and also counts the bytes actually received (a chunked or lying client gets the same
413), before the app sees anything. The body is buffered (it is at most ``max_bytes``) and
replayed.
"""

from __future__ import annotations

import json
import time
from typing import Any

MAX_BODY = 1 << 20  # 1 MiB: a drawing
PICTURE_MAX_BODY = 16 << 20  # 16 MiB: a photo of 12 MB as base64
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
    """Refuse request bodies over ``max_bytes`` with 413 ``{"error": ...}``."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> dict[str, Any]:
        return {"error": f"request body too large: the limit is {self.max_bytes:,} bytes"}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json(send, 400, {"error": "Content-Length is not a number"})
                return
            if declared > self.max_bytes:
                await send_json(send, 413, self._too_large())
                return
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
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


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
