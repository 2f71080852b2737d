"""Upstream worker job: one upstream MCP server, supervised like any worker.

It starts the server (stdio) or connects to it (Streamable HTTP: ``url``), does the
dual-era handshake, lists its tools, tells the
master (bus kind "tools"), and then serves gateway workers on its own ROUTER: gateway
workers call it directly, so an upstream call costs no extra hop through the master.  If
the server exits (over HTTP: becomes unreachable), so does this worker (exit 69, after
one line saying how the server ended; 4 if it never started): the supervisor restarts it
under the OTP rules, and the master tells agents that the tools went and came back.

Wire, gateway worker DEALER -> this ROUTER (envelopes of ipc.messages):
  u seq progress tool arguments  ->  r seq result | f seq {"code", "message"}
                                     p seq {progress, total, message} ...
  q seq method params            ->  r seq result | f seq {"code", "message", "data"}
  x seq                          ->  (the call is cancelled upstream)
                                 <-  Q seq ask {method, params}   (the server asks)
  R seq ask {result} | {error}   ->  (the agent's answer, to the server)
                                 <-  N seq notification           (its log message)
The arguments and the result are JSON bytes this worker never parses: the arguments are
spliced into the request it writes to the server, the result read out of its answer.
A q request (resources/read, prompts/get, completion/complete, a tools/call retried with
MRTR input) passes its params through the same way.

At start it also lists the server's resources, resource templates and prompts (each
only if the server's capabilities say it has them), for the master to pass on; it lists
them again when the server says they changed, and keeps the server's resource
subscriptions as the master asks (tools.upstream_events).

A server's request during a call (sampling, elicitation, roots/list) goes back to the
gateway worker that made the call, numbered here (``ask``); the answer goes to the server
as ours.  One still unanswered when its call ends is answered with an error.

Progress tokens sent upstream are this worker's own, one per call, so that two agents'
tokens can never collide; updates go back to the caller under its call seq.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import zmq

from daemon.ipc import messages
from daemon.ipc.zmq_endpoint import ZmqEndpoint, bind_router
from daemon.protocol.jsonrpc import INTERNAL_ERROR, TIMED_OUT, RpcError
from daemon.tools.mcp_http import HttpMcpClient, shown_url
from daemon.tools.mcp_stdio import StdioMcpClient
from daemon.tools.upstream_events import UpstreamEvents, offers_subscriptions
from daemon.worker.background import first_set
from daemon.worker.call_tasks import CallTasks
from daemon.worker.runtime import EXIT_UPSTREAM_EXITED, JobExit, WorkerHandle, describe_exit

log = logging.getLogger("upstream")
EXIT_UPSTREAM_DID_NOT_START = 4
McpClient = StdioMcpClient | HttpMcpClient


class UpstreamService:
    def __init__(self, worker: WorkerHandle, name: str, client: McpClient,
                 endpoint: str) -> None:
        self.worker = worker
        self.name = name
        self.client = client
        sock = bind_router(worker.context, endpoint)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.router = ZmqEndpoint(sock, self.on_frames)
        self.tasks: CallTasks[tuple[bytes, int]] = CallTasks()
        self.progress_routes: dict[str, tuple[bytes, int]] = {}
        # ask -> the call it came with, and the agent's answer when it comes
        self.asks: dict[int, tuple[tuple[bytes, int], asyncio.Future[bytes]]] = {}
        self._ask_ids = itertools.count(1)
        # what the server says outside calls (tools.upstream_events)
        self.on_event: Callable[[dict[str, Any]], None] = lambda _message: None
        client.on_notification = self.on_notification
        client.on_request = self.on_request

    def on_notification(self, message: dict[str, Any], route: Any = None) -> None:
        method = message.get("method")
        if method == "notifications/message":
            if route is not None:  # a log message during a call: for its agent
                peer, seq = route
                self.router.send([peer, messages.pack_seq(messages.NOTE, seq,
                                                          orjson.dumps(message))])
            return
        if method != "notifications/progress":
            self.on_event(message)
            return
        params = dict(message.get("params") or {})
        route = self.progress_routes.get(str(params.pop("progressToken", "")))
        if route is not None:
            peer, seq = route
            params.pop("_meta", None)
            self.router.send([peer, messages.pack_progress(seq, orjson.dumps(params))])

    async def on_request(self, message: dict[str, Any], route: Any) -> bytes:
        """The server asks the agent of the call ``route`` ((peer, seq)); its answer."""
        peer, seq = route
        ask = next(self._ask_ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.asks[ask] = (route, future)
        self.router.send([peer, messages.pack_ask(messages.ASK, seq, ask,
                                                  orjson.dumps(message))])
        try:
            return await future
        finally:
            self.asks.pop(ask, None)

    def on_answer(self, payload: bytes) -> None:
        _seq, ask, answer = messages.unpack_ask(payload)
        entry = self.asks.get(ask)
        if entry is not None and not entry[1].done():
            entry[1].set_result(answer if answer[:1] == b"{" else _error_answer(
                "malformed answer"))

    def call_ended(self, route: tuple[bytes, int]) -> None:
        """What the server still asks of a call that is over gets an error."""
        for ask_route, future in list(self.asks.values()):
            if ask_route == route and not future.done():
                future.set_result(_error_answer(
                    "the call this request came with has ended (answered, cancelled or "
                    "timed out) before its agent answered"))

    def on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            return
        peer, payload = frames
        kind = payload[:1]
        if kind == messages.UPSTREAM_CALL:
            seq, tool, progress, arguments = messages.unpack_upstream_call(payload)
            self.tasks.start((peer, seq), self.serve(peer, seq, tool, progress, arguments))
        elif kind == messages.UPSTREAM_REQUEST:
            seq, method, params = messages.unpack_upstream_request(payload)
            self.tasks.start((peer, seq), self.forward(peer, seq, method, params))
        elif kind == messages.CANCEL:
            self.tasks.cancel((peer, messages.unpack_seq(payload)[0]))
        elif kind == messages.ANSWER:
            self.on_answer(payload)

    async def forward(self, peer: bytes, seq: int, method: str, params: bytes) -> None:
        """Any other request, its params and result passed through as bytes."""
        if params[:1] != b"{" or b"\n" in params:
            self.router.send([peer, messages.pack_failed(
                seq, INTERNAL_ERROR, "malformed request: the params are not one JSON object")])
            return
        if method == "logging/setLevel" and (self.client.modern
                                             or "logging" not in self.client.capabilities):
            self.router.send([peer, messages.pack_reply(seq, b"{}")])  # it does not log
            return
        try:
            reply = messages.pack_reply(seq, await self.client.request_raw(method, params,
                                                                           (peer, seq)))
        except asyncio.CancelledError:
            return
        except RpcError as exc:
            reply = messages.pack_failed(seq, exc.code, exc.message, exc.data)
        except Exception as exc:
            log.warning("%s: %s failed: %s", self.name, method, exc)
            reply = messages.pack_failed(seq, INTERNAL_ERROR, f"upstream error: {exc}")
        finally:
            if self.asks:
                self.call_ended((peer, seq))
        self.router.send([peer, reply])

    async def serve(self, peer: bytes, seq: int, tool: str, progress: bool,
                    arguments: bytes) -> None:
        if arguments[:1] != b"{" or b"\n" in arguments:  # it would not be one line
            self.router.send([peer, messages.pack_failed(
                seq, INTERNAL_ERROR, "malformed call: the arguments are not one JSON object")])
            return
        token = f"wa-{peer.hex()}-{seq}" if progress else None
        if token is not None:
            self.progress_routes[token] = (peer, seq)
        try:
            reply = messages.pack_reply(seq, await self.client.call_tool(tool, arguments,
                                                                         token, (peer, seq)))
        except asyncio.CancelledError:
            return
        except RpcError as exc:
            reply = messages.pack_failed(seq, exc.code, exc.message, exc.data)
        except Exception as exc:  # the server misbehaved; the agent gets a clear error
            log.warning("%s: call to %s failed: %s", self.name, tool, exc)
            reply = messages.pack_failed(seq, INTERNAL_ERROR, f"upstream error: {exc}")
        finally:
            if token is not None:
                self.progress_routes.pop(token, None)
            if self.asks:
                self.call_ended((peer, seq))
        self.router.send([peer, reply])

    async def close(self) -> None:
        await self.tasks.cancel_all()
        self.router.close()


def _error_answer(message: str) -> bytes:
    return orjson.dumps({"error": {"code": INTERNAL_ERROR, "message": message}})


@dataclass
class Offer:
    """What the server offers, as it listed it (the gateway names and routes it)."""

    tools: list[dict[str, Any]]
    resources: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)


async def list_offer(client: McpClient) -> Offer:
    """Its tools, and its resources, templates and prompts where its capabilities say it
    has them (a server that lists none of those is not asked)."""
    offer = Offer(await client.list_tools())
    if "resources" in client.capabilities:
        offer.resources = await client.list_all("resources/list", "resources")
        offer.templates = await client.list_all("resources/templates/list",
                                                "resourceTemplates")
    if "prompts" in client.capabilities:
        offer.prompts = await client.list_all("prompts/list", "prompts")
    return offer


async def start(client: McpClient, budget: float) -> Offer:
    """Handshake and lists, all within ``budget`` (less than the supervisor's
    start_timeout, so that a server that never answers gets a log line that says so
    rather than a kill that says nothing)."""
    try:
        async with asyncio.timeout(budget):
            await client.start()
            return await list_offer(client)
    except TimeoutError:
        step = client.asked if client.version else "the handshake"
        raise RpcError(TIMED_OUT, f"no answer to {step} within {budget:g}s") from None


async def run(worker: WorkerHandle, name: str, command: list[str], endpoint: str,
              env: dict[str, str] | None = None, cwd: str = "",
              start_timeout: float = 10.0, url: str = "",
              headers: dict[str, str] | None = None, timeout: float = 30.0,
              protocol: str = "auto") -> None:
    client: McpClient = HttpMcpClient(name, url, headers or {}, timeout) if url \
        else StdioMcpClient(name, command, env or {}, cwd)
    client.protocol = protocol
    server = shown_url(url) if url else " ".join(command)
    try:
        offer = await start(client, start_timeout * 0.8)
    except (OSError, RpcError, TimeoutError) as exc:
        exited = client.exited.is_set()  # on its own, before close() ends a live server
        await client.close()
        code = client.proc.returncode if isinstance(client, StdioMcpClient) and client.proc \
            else None
        why = f"the server exited ({describe_exit(code)})" if exited and code is not None \
            else str(exc) or repr(exc)
        raise JobExit(EXIT_UPSTREAM_DID_NOT_START, f"upstream {name} ({server}) "
                                                   f"did not start: {why}") from None
    service = UpstreamService(worker, name, client, endpoint)
    log.info("%s: MCP %s, %d tools", name, client.version, len(offer.tools))
    if offer.resources or offer.templates or offer.prompts:
        log.info("%s: %d resources, %d resource templates, %d prompts", name,
                 len(offer.resources), len(offer.templates), len(offer.prompts))
    def report(offer: Offer) -> None:
        worker.send(messages.UpstreamTools(
            upstream=name, endpoint=service.endpoint, tools=offer.tools,
            resources=offer.resources, templates=offer.templates, prompts=offer.prompts,
            subscribe=offers_subscriptions(client)))

    async def relist() -> None:
        offer = await list_offer(client)
        log.info("%s: its lists changed: now %d tools, %d resources, %d resource "
                 "templates, %d prompts", name, len(offer.tools), len(offer.resources),
                 len(offer.templates), len(offer.prompts))
        report(offer)

    events = UpstreamEvents(worker, name, client, relist)
    service.on_event = events.on_notification
    report(offer)
    await worker.ready()
    events.start()
    await first_set(worker.stopping, client.exited)
    await events.close()
    await service.close()
    await client.close()
    if not worker.stopping.is_set():
        if isinstance(client, HttpMcpClient):
            how = f"{server} is unreachable"
        else:
            code = client.proc.returncode if client.proc else None
            how = "the server exited (" + (describe_exit(code) if code is not None
                                           else "closed its stdout") + ")"
        raise JobExit(EXIT_UPSTREAM_EXITED, f"upstream {name}: {how}; "
                                            "this worker exits so that it is restarted")
