"""The outermost ASGI callable: ``/ws`` straight to the hub, the rest to Starlette.

Each live WebSocket keeps its whole call chain suspended for its lifetime.
Through Starlette that chain is two middlewares, the router and the route
(about 5 KiB per socket, measured in docs/benchmarks.md); here it is one
frame. HTTP routes, the lifespan and every other path still go through the
Starlette app unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket


class HubASGI:
    """Dispatch ``websocket`` scopes for ``path`` to ``endpoint``; all else to ``app``."""

    def __init__(
        self, app: Starlette, path: str, endpoint: Callable[[WebSocket], Awaitable[None]] | None
    ) -> None:
        self.app = app
        self.path = path
        self.endpoint = endpoint

    @property
    def state(self) -> State:
        """The Starlette app's state (``state.components`` holds every component)."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.endpoint is not None
            and scope["type"] == "websocket"
            and scope["path"] == self.path
        ):
            await self.endpoint(WebSocket(scope, receive, send))
            return
        await self.app(scope, receive, send)
