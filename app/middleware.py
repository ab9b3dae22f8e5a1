"""ASGI middleware that guards the app: the request body size limit, dropping the work of a
request whose client went away, and CORS with JSON preflight rejections."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(Exception):
    pass


async def send_json_error(send: Send, status: int, code: str, detail: str,
                          extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer with the service's JSON error shape straight from ASGI (the connection is closed:
    a request body not read yet is never waited for)."""
    body = json.dumps({"error": code, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """413 for a request body over ``max_bytes``: from Content-Length before reading anything,
    else as soon as the streamed body passes the limit (the app's own answer is discarded)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self, size: str) -> str:
        return f"the request body is {size} than the limit of {self.max_bytes} bytes (INSID3_MAX_UPLOAD_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json_error(send, 413, "upload_too_large", self._detail(f"{int(declared)} bytes, larger"))
            return
        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded:
                return
            response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not response_started:
            await send_json_error(send, 413, "upload_too_large", self._detail("larger"))


CLIENT_GONE_STATUS = 499  # nginx's "client closed request": recorded in the metrics, sent to nobody


class DisconnectMiddleware:
    """Cancels the handling of a request whose client disconnects before the response starts.

    Starlette keeps running a handler whose client went away; cancelling it cancels whatever it
    awaits (a queued job is then dropped unrun, see ``BatchingLoop.submit``). The disconnect is
    watched for once the app has read the whole request body; the app itself then sees
    ``http.disconnect`` only when the client is gone. The cancelled request is answered 499
    (recorded by the metrics, discarded by the server)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read, gone = asyncio.Event(), asyncio.Event()
        response_started = False

        async def watched_receive() -> Message:
            if body_read.is_set():
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal response_started
            response_started = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, watched_receive, watched_send))
        watcher = asyncio.ensure_future(self._watch(receive, body_read, gone, handler, lambda: response_started))
        try:
            await handler
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not gone.is_set() or (current is not None and current.cancelling()):
                raise
            await send_json_error(send, CLIENT_GONE_STATUS, "client_closed_request",
                                  "the client disconnected before the answer; its queued work was dropped")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    @staticmethod
    async def _watch(receive: Receive, body_read: asyncio.Event, gone: asyncio.Event,
                     handler: asyncio.Future[None], started: Callable[[], bool]) -> None:
        """Once the body is read, wait for ``http.disconnect`` and cancel the handler if no
        response has started."""
        await body_read.wait()
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
        if not started():
            handler.cancel()


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS with preflight rejections in the service's JSON error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {name: value for name, value in response.headers.items()
                   if name.startswith("access-control-") or name == "vary"}
        detail = bytes(response.body).decode()
        return JSONResponse({"error": "cors_preflight_rejected", "detail": detail},
                            status_code=response.status_code, headers=headers)
