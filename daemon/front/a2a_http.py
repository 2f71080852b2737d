"""The agent gateway's HTTP routes (A2A, JSON-RPC binding), in the master.

    GET  /a2a/<peer>/.well-known/agent-card.json     the peer's card, pointing here
    POST /a2a/<peer>                                 JSON-RPC: SendMessage, … (or SSE)

The agent's WorkingAgents token is its bearer token (401 without one).  A card is
served by the master (daemon.a2a.cards keeps them) to agents whose roles' ``peers``
allow the peer, and is 404 to any other, like a peer that does not exist.  A POST is
only authenticated and routed here: the body goes, with the caller's A2A-Version, to
the agent's gateway worker as it came (Switchboard.route_a2a), which governs and
forwards it and answers in LLM frames (ipc.messages); front.worker_stream writes them
out, the master's own answers (busy, timed out, the worker died) as JSON-RPC errors, or
an error event mid-stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from daemon.a2a.binding import VERSION_HEADER, error, sse
from daemon.a2a.cards import CARD_PATH, CardKeeper
from daemon.front.worker_stream import MAX_HELD, Frames, relay
from daemon.protocol.jsonrpc import INTERNAL_ERROR, RpcError

if TYPE_CHECKING:
    from daemon.front.http import HttpFront


def add_routes(front: HttpFront, cards: CardKeeper | None) -> None:
    routes = A2aRoutes(front, cards)
    front.app.router.add_get("/a2a/{peer}" + CARD_PATH, routes.card)
    front.app.router.add_post("/a2a/{peer}", routes.message)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def _not_found(peer: str) -> web.Response:
    return _json({"error": {"status": 404, "message": f"Unknown A2A agent: {peer[:100]}"}},
                 404)


class A2aRoutes:
    def __init__(self, front: HttpFront, cards: CardKeeper | None) -> None:
        self.front = front
        self.cards = cards

    async def card(self, request: web.Request) -> web.StreamResponse:
        agent = self.front.agent(request)
        peer = request.match_info["peer"]
        if self.cards is None or not self.cards.visible(agent.roles, peer):
            return _not_found(peer)
        url = f"{request.scheme}://{request.host}/a2a/{peer}"
        card = self.cards.served(peer, url)
        if card is None:
            return _json({"error": {"status": 503, "message": f"The agent card of {peer} "
                                    "has not been read yet (see `workingagents status`)"}},
                         503, {"Retry-After": "5"})
        return _json(card)

    async def message(self, request: web.Request) -> web.StreamResponse:
        agent = self.front.agent(request)
        peer = request.match_info["peer"]
        version = request.headers.get(VERSION_HEADER, "")[:32]
        body = await request.read()
        frames = Frames()
        board = self.front.board
        try:
            board.route_a2a(frames.conn, agent, peer, version, body)
        except RpcError as exc:
            board.record_refusal(exc)
            return _rpc_error(body, exc.code, exc.message, exc.data)
        try:
            return await relay(request, frames, lambda failed: _rpc_error(
                body, failed.get("code", 0), str(failed.get("message", "Error")),
                failed.get("data")), lambda failed: _error_event(body, failed))
        finally:
            board.detach(frames.conn)  # a client that left: the worker cancels the request


def _error_event(body: bytes, failed: dict[str, Any] | None) -> bytes:
    """The event that ends a stream the master had to end (None: the client was too
    slow to keep up)."""
    if failed is None:
        failed = {"code": INTERNAL_ERROR, "message": "The client read the stream too "
                  f"slowly: the gateway held {MAX_HELD >> 20} MiB for it and dropped it"}
    return sse(error(_rid(body), failed.get("code", 0), str(failed.get("message", "Error")),
                     failed.get("data")))


def _rid(body: bytes) -> Any:
    """The request's id, read only when the master answers itself (rare)."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    rid = request.get("id") if isinstance(request, dict) else None
    return rid if isinstance(rid, str | int) and not isinstance(rid, bool) else None


def _rpc_error(body: bytes, code: int, message: str, data: Any = None) -> web.Response:
    return web.Response(body=error(_rid(body), code, message, data),
                        content_type="application/json")
