"""What an upstream server says unasked, in the upstream worker: list changes and
resource updates.

``notifications/{tools,resources,prompts}/list_changed``: the worker lists the server's
offer again and sends it to the master (UpstreamTools, as at start), which updates the
gateway workers and tells agents.  A burst of them costs one listing (DEBOUNCE).

Resource subscriptions: the master sends the set of URIs agents watch on this upstream
(ResourceWatch); the worker makes the server's subscriptions match it and answers
ResourceWatched; each ``notifications/resources/updated`` for a watched URI goes to the
master (ResourceUpdated), which fans it out to the agents subscribed.

Eras: a handshake-era server gets ``resources/subscribe``/``unsubscribe`` and sends its
notifications unasked (stdio, or its HTTP GET stream).  A 2026-07-28 server sends them
only on a ``subscriptions/listen`` stream, so the worker keeps one open, asking for the
list changes the server's capabilities offer and the watched URIs; a new set opens a new
stream, and the old one is closed once the new one is acknowledged.  Frames of any other
stream (one being closed) are ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import orjson

from daemon.ipc import messages
from daemon.protocol import mcp
from daemon.protocol.jsonrpc import RpcError
from daemon.worker.runtime import WorkerHandle

log = logging.getLogger("upstream")
DEBOUNCE = 0.2  # seconds a list change waits for more before the server is listed again
ACK_TIMEOUT = 10.0  # seconds for a listen stream's acknowledgement
RELISTEN_GAP = 1.0  # seconds before a listen stream the server ended is opened again
LIST_CHANGES = {"notifications/tools/list_changed": ("tools", "toolsListChanged"),
                "notifications/resources/list_changed": ("resources", "resourcesListChanged"),
                "notifications/prompts/list_changed": ("prompts", "promptsListChanged")}
UPDATED = "notifications/resources/updated"
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"


class Client(Protocol):
    modern: bool
    capabilities: dict[str, Any]
    exited: asyncio.Event

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]: ...

    async def request_raw(self, method: str, params: bytes) -> bytes: ...


def offers_subscriptions(client: Client) -> bool:
    resources = client.capabilities.get("resources")
    return isinstance(resources, dict) and resources.get("subscribe") is True


class UpstreamEvents:
    def __init__(self, worker: WorkerHandle, name: str, client: Client,
                 relist: Callable[[], Awaitable[None]]) -> None:
        self.worker = worker
        self.name = name
        self.client = client
        self.relist = relist  # lists the server again and sends UpstreamTools
        self.watched: set[str] = set()  # what the server has been asked for
        self._wanted: messages.ResourceWatch | None = None  # the latest set, not yet applied
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty = False
        self._relisting: asyncio.Task[None] | None = None
        self._applying: asyncio.Task[None] | None = None
        self._listening: asyncio.Task[None] | None = None  # the current listen stream
        self._stream_id: Any = None  # its subscription id, once acknowledged
        self._ack: asyncio.Future[dict[str, Any]] | None = None  # a stream being opened
        worker.on(messages.ResourceWatch, self.watch)
        if hasattr(client, "on_session"):  # over HTTP, the server may forget our session
            client.on_session = self.session_renewed

    # -- what the server says -------------------------------------------------------------

    def on_notification(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        meta = params.get("_meta")
        stream = meta.get(mcp.META_SUBSCRIPTION) if isinstance(meta, dict) else None
        if method == ACKNOWLEDGED:
            ack, self._ack = self._ack, None
            if ack is not None and not ack.done():
                self._stream_id = stream
                honored = params.get("notifications")
                ack.set_result(honored if isinstance(honored, dict) else {})
            return
        if stream is not None and stream != self._stream_id:
            return  # a stream being closed, or one that is not ours
        if method in LIST_CHANGES:
            self._changed()
        elif method == UPDATED and params.get("uri") in self.watched:
            self.worker.send(messages.ResourceUpdated(upstream=self.name,
                                                      uri=str(params["uri"])))

    def _changed(self) -> None:
        self._dirty = True
        if self._relisting is None or self._relisting.done():
            self._relisting = self._spawn(self._relist())

    async def _relist(self) -> None:
        while self._dirty:
            await asyncio.sleep(DEBOUNCE)  # a burst of changes: one listing
            self._dirty = False
            try:
                await self.relist()
            except (RpcError, OSError) as exc:
                log.warning("%s: could not list the server again after it said its lists "
                            "changed: %s", self.name, exc)

    # -- resource subscriptions -------------------------------------------------------------

    def start(self) -> None:
        """After the handshake: a 2026-07-28 server's list changes need a listen stream."""
        if self.client.modern and self._lists() and self._applying is None:
            self._apply(messages.ResourceWatch(version=0, uris=[]))  # (else under way)

    def watch(self, wanted: messages.ResourceWatch) -> None:
        self._apply(wanted)

    def session_renewed(self) -> None:
        """The server forgot our session (it restarted): subscribe afresh."""
        uris, self.watched = sorted(self.watched), set()
        if uris and self._wanted is None:  # (else the set on its way subscribes them all)
            self._apply(messages.ResourceWatch(version=0, uris=uris))

    def _apply(self, wanted: messages.ResourceWatch) -> None:
        self._wanted = wanted  # applied in order, the latest set last
        if self._applying is None or self._applying.done():
            self._applying = self._spawn(self._apply_latest())

    async def _apply_latest(self) -> None:
        while self._wanted is not None:
            wanted, self._wanted = self._wanted, None
            uris = set(wanted.uris)
            if self.client.modern:
                failed = await self._listen(uris)
            else:
                failed = await self._subscribe(uris)
            if wanted.version:  # 0: the worker's own first stream, nobody waits for it
                self.worker.send(messages.ResourceWatched(
                    upstream=self.name, version=wanted.version, failed=failed))

    async def _subscribe(self, uris: set[str]) -> dict[str, str]:
        """Handshake era: one resources/subscribe per new URI, unsubscribe per old one."""
        failed: dict[str, str] = {}
        for uri in sorted(uris - self.watched):
            try:
                await self.client.request("resources/subscribe", {"uri": uri})
                self.watched.add(uri)
            except (RpcError, OSError) as exc:
                failed[uri] = str(exc) or exc.__class__.__name__
        for uri in sorted(self.watched - uris):
            self.watched.discard(uri)
            try:
                await self.client.request("resources/unsubscribe", {"uri": uri})
            except (RpcError, OSError) as exc:
                log.info("%s: unsubscribing from %s failed: %s", self.name, uri, exc)
        return failed

    def _lists(self) -> dict[str, bool]:
        """The list changes the server's capabilities say it reports."""
        caps = self.client.capabilities
        return {flag: True for key, flag in LIST_CHANGES.values()
                if isinstance(caps.get(key), dict) and caps[key].get("listChanged") is True}

    async def _listen(self, uris: set[str]) -> dict[str, str]:
        """2026-07-28: a new listen stream for this set; the old one closes once the new
        one is acknowledged (until then, the old one still reports)."""
        wanted: dict[str, Any] = self._lists()
        if uris:
            wanted["resourceSubscriptions"] = sorted(uris)
        ack: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._ack = ack
        opened = self._spawn(self._keep_listening(wanted, ack))
        waited: set[asyncio.Future[Any]] = {ack, opened}
        done, _ = await asyncio.wait(waited, timeout=ACK_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        self._ack = None
        if not ack.done():
            opened.cancel()
            why = "the server did not acknowledge the subscription" if not done else \
                "the server refused the subscription stream"
            return dict.fromkeys(uris, why)
        old, self._listening = self._listening, opened
        if old is not None:
            old.cancel()
        honored = ack.result().get("resourceSubscriptions")
        honored = set(honored) if isinstance(honored, list) else set()
        self.watched = uris & honored
        return dict.fromkeys(uris - honored, "the server did not honor the subscription")

    async def _keep_listening(self, wanted: dict[str, Any],
                              ack: asyncio.Future[dict[str, Any]]) -> None:
        """One listen stream, opened again if the server ends it (it keeps no backlog:
        what changed meanwhile is not reported, as after any dropped stream)."""
        params = orjson.dumps({"notifications": wanted})
        while not self.client.exited.is_set():
            try:
                await self.client.request_raw("subscriptions/listen", params)
            except (RpcError, OSError) as exc:
                if not ack.done():
                    return  # refused outright: the caller says so
                log.warning("%s: its subscriptions/listen stream failed: %s", self.name, exc)
            await asyncio.sleep(RELISTEN_GAP)
            if self._ack is None:  # (else a new stream is being opened: it will name itself)
                self._stream_id = None  # the reopened stream's acknowledgement names it
                self._ack = asyncio.get_running_loop().create_future()

    # -- life -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
