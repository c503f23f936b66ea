"""`GatewayApp`: the ASGI 3 application of one worker.

It adapts ASGI to the gateway's handler stack (`layers.py`): the scope becomes a
`Request` whose body is read on demand, and `answer` sends the `Response` with its
length, with no body where HTTP has none (HEAD, 204, 304; no `Content-Length` on 204
and 304). The worker's own protocol (`protocol.py`) builds the `Request` from the parsed
head and calls `answer` itself, which writes the response in one socket write
(`protocol.write_response`); any other ASGI server goes through the scope. The lifespan
protocol starts the `GatewayService` (loading and preparing functions off the event
loop) and closes it after the server has drained.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import StockadeError
from .messages import Request
from .problem import render_error
from .protocol import write_response
from .response import framing
from .service import GatewayService

__all__ = ["GatewayApp", "Scope", "Receive", "Send"]

logger = logging.getLogger("stockade.gateway")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class GatewayApp:
    """ASGI entry point for `service`."""

    def __init__(self, service: GatewayService) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            return
        await self.answer(Request(
            method=scope["method"], path=scope["path"],
            query=scope["query_string"].decode("latin-1"), headers=scope["headers"],
            client=scope.get("client"), server=scope.get("server"),
            scheme=scope.get("scheme", "http"), http_version=scope.get("http_version", "1.1"),
            raw_path=scope.get("raw_path") or b"", receive=receive,
        ), send)

    async def answer(self, request: Request, send: Send) -> None:
        """Answer `request` through `send`: in one socket write when `send` is the worker
        protocol's (`write_response`), else as ASGI messages."""
        handler = self.service.handler
        if handler is None:
            response = render_error(StockadeError("the gateway is not started"), request.path)
        else:
            response = await handler(request)
        head = request.method == "HEAD"
        if write_response(send, response, head):
            return  # one socket write (the worker's protocol)
        length, body = framing(response, head)
        headers = response.headers if length is None \
            else [*response.headers, (b"content-length", length)]
        await send({"type": "http.response.start", "status": response.status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await loop.run_in_executor(None, self.service.start)
                    await self.service.started()
                except StockadeError as exc:
                    await send({"type": "lifespan.startup.failed", "message": exc.message})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await loop.run_in_executor(None, self.service.close)
                await send({"type": "lifespan.shutdown.complete"})
                return
