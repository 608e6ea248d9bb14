"""Every answer carries ``x-request-id: req_…``, as the live API's do.

The official client exposes the header as ``_request_id`` on what it returns
(observed of the live API; the ``openai`` client exposes it as ``_request_id``).
"""

from __future__ import annotations

import secrets
from typing import Any

__all__ = ["RequestIdMiddleware", "new_request_id"]

Scope = dict[str, Any]


def new_request_id() -> str:
    """A fresh request id.

    Example:
        >>> rid = new_request_id()
        >>> rid.startswith("req_"), len(rid)
        (True, 36)
    """
    return f"req_{secrets.token_hex(16)}"


class RequestIdMiddleware:
    """ASGI middleware adding ``x-request-id`` to every HTTP answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (b"x-request-id", new_request_id().encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_id)
