"""What every HTTP route answers with: JSON bodies and errors, and the bearer token it
reads (daemon.front.http serves them; each front door's routes import them from here)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def json_error(status: int, message: str, headers: dict[str, str] | None = None,
               **extra: Any) -> web.Response:
    """The error body of every route that has no format of its own."""
    return json_response({"error": {"status": status, "message": message, **extra}}, status,
                         headers)


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if there is one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Unauthenticated(web.HTTPUnauthorized):
    """401 with a JSON body: raised by a route whose token is missing or not valid."""

    def __init__(self, message: str) -> None:
        super().__init__(body=orjson.dumps({"error": {"status": 401, "message": message}}),
                         content_type="application/json",
                         headers={"WWW-Authenticate": 'Bearer realm="workingagents"'})
