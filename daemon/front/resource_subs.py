"""Resource subscriptions, kept by the master (which holds the agents' connections).

A subscriber is a connection's own subscriptions (``resources/subscribe``, handshake era;
an HTTP request in a session counts as its session) or one ``subscriptions/listen``
stream's (``resourceSubscriptions``, 2026-07-28).  A URI is routed to its upstream as a
resources/read is (the upstream that listed it, else the one whose template matches),
and one the agent's roles hide answers like one that does not exist.

Each upstream is subscribed once per URI, whatever the number of subscribers: its worker
gets the set of its URIs that someone watches (ResourceWatch, versioned) whenever that set
changes and whenever the worker (re)starts, and answers with the URIs the server refused
(ResourceWatched).  A subscribe that adds a URI to the set is answered after that answer,
so an update that follows reaches the agent; until then its subscriber hears nothing of
other URIs either (a listen stream's acknowledgement comes first).  An update
(ResourceUpdated) goes to that URI's subscribers only.  A subscriber goes with its
connection, its session, or its stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.front.auth import Agent
from daemon.ipc import messages
from daemon.ipc.bus import WorkerBus
from daemon.protocol import jsonrpc
from daemon.protocol.jsonrpc import RpcError

RESOURCE_NOT_FOUND = -32002  # the MCP spec's code (gateway.passthrough answers reads alike)
METHODS = frozenset({"resources/subscribe", "resources/unsubscribe"})
UPDATED = "notifications/resources/updated"

Subscriber = tuple[int, jsonrpc.RequestId | None]  # (connection key, listen stream id)
Done = Callable[[dict[str, str]], None]  # given the URIs that failed: uri -> why


class Catalog(Protocol):
    """What the master knows of the upstreams (master.upstreams.UpstreamDirectory)."""

    def owner_of(self, uri: str) -> str | None: ...

    def subscribable(self, name: str) -> bool: ...

    def identity(self, name: str) -> bytes | None: ...


@dataclass
class _Waiter:
    subscriber: Subscriber
    upstream: str
    version: int
    uris: set[str]
    deadline: float
    done: Done
    failed: dict[str, str] = field(default_factory=dict)  # by the siblings answered first


class ResourceWatchers:
    def __init__(self, bus: WorkerBus, catalog: Catalog,
                 deliver: Callable[[Subscriber, str], None]) -> None:
        self.bus = bus
        self.catalog = catalog
        self.deliver = deliver  # an update, to one subscriber
        self.subscribers: dict[str, set[Subscriber]] = {}  # uri -> who watches it
        self.owner: dict[str, str] = {}  # watched uri -> its upstream
        self._uris: dict[Subscriber, set[str]] = {}
        self._by_conn: dict[int, set[Subscriber]] = {}
        self._versions: dict[str, int] = {}  # upstream -> the last set's version
        self._sent: dict[str, frozenset[str]] = {}  # upstream -> the last set sent
        self._waiters: list[_Waiter] = []
        self._holding: set[Subscriber] = set()  # answer not given yet: hears nothing
        bus.on(messages.ResourceWatched, self.on_watched)
        bus.on(messages.ResourceUpdated, self.on_updated)

    # -- what agents ask ------------------------------------------------------------------

    def resolve(self, agent: Agent, uri: Any, may_read: Callable[[Agent, str], bool]) -> str:
        """The upstream a subscription to ``uri`` goes to; raises what the agent is told."""
        if not isinstance(uri, str):
            raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: needs a string "
                                                   "params.uri")
        upstream = self.catalog.owner_of(uri)
        if upstream is None or not may_read(agent, uri):  # hidden: as if it did not exist
            raise RpcError(RESOURCE_NOT_FOUND, "Resource not found", {"uri": uri})
        if not self.catalog.subscribable(upstream):
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, "Method not found: the server of this "
                                                     "resource does not offer subscriptions",
                           {"uri": uri})
        return upstream

    def resolve_all(self, agent: Agent, uris: Any,
                    may_read: Callable[[Agent, str], bool]) -> dict[str, str]:
        """A listen stream's resourceSubscriptions: uri -> upstream for those it may have
        (the rest are left out of its acknowledgement, as the spec lets a server do)."""
        if uris is None:
            return {}
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: resourceSubscriptions "
                                                   "must be a list of URIs")
        found = {}
        for uri in uris:
            try:
                found[uri] = self.resolve(agent, uri, may_read)
            except RpcError:
                continue
        return found

    def request(self, subscriber: Subscriber, agent: Agent, rid: jsonrpc.RequestId,
                method: str, uri: Any, may_read: Callable[[Agent, str], bool],
                timeout: float, send: Callable[[bytes], None]) -> None:
        """resources/subscribe or unsubscribe: answered through ``send``; raises what
        the agent is told at once."""
        if method == "resources/unsubscribe":
            if not isinstance(uri, str):
                raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: needs a string "
                                                       "params.uri")
            self.remove(subscriber, uri)
            send(jsonrpc.result(rid, {}))
            return
        upstream = self.resolve(agent, uri, may_read)

        def answer(failed: dict[str, str]) -> None:
            if failed:
                send(jsonrpc.error(rid, jsonrpc.INTERNAL_ERROR, "Subscription failed: "
                                   f"{next(iter(failed.values()))}", {"uri": uri}))
            else:
                send(jsonrpc.result(rid, {}))
        self.add(subscriber, {uri: upstream}, timeout, answer)

    def add(self, subscriber: Subscriber, uris: dict[str, str], timeout: float,
            done: Done) -> None:
        """Subscribe to ``uris`` (uri -> upstream); ``done`` once the upstreams have
        them (at once when they already do, or when an upstream is not up: its worker
        gets them when it comes up)."""
        mine = self._uris.setdefault(subscriber, set())
        self._by_conn.setdefault(subscriber[0], set()).add(subscriber)
        for uri, upstream in uris.items():
            self.subscribers.setdefault(uri, set()).add(subscriber)
            self.owner[uri] = upstream
            mine.add(uri)
        deadline = time.monotonic() + timeout
        for upstream in sorted(set(uris.values())):
            version = self._push(upstream)
            if version is not None:
                self._waiters.append(_Waiter(subscriber, upstream, version,
                                             {u for u, o in uris.items() if o == upstream},
                                             deadline, done))
        if any(w.subscriber == subscriber and w.done is done for w in self._waiters):
            self._holding.add(subscriber)
        else:
            done({})

    def remove(self, subscriber: Subscriber, uri: str | None = None) -> None:
        """Unsubscribe from one URI, or from all (a stream or a connection ended)."""
        mine = self._uris.get(subscriber, set())
        gone = set(mine) if uri is None else {uri} & mine
        mine -= gone
        if not mine:
            self._uris.pop(subscriber, None)
            subs = self._by_conn.get(subscriber[0], set())
            subs.discard(subscriber)
            if not subs:
                self._by_conn.pop(subscriber[0], None)
        if uri is None:
            self._waiters = [w for w in self._waiters if w.subscriber != subscriber]
            self._holding.discard(subscriber)
        upstreams = set()
        for each in gone:
            watching = self.subscribers.get(each, set())
            watching.discard(subscriber)
            if not watching:
                self.subscribers.pop(each, None)
                upstreams.add(self.owner.pop(each))
        for upstream in sorted(upstreams):
            self._push(upstream)

    def drop_connection(self, key: int) -> None:
        for subscriber in list(self._by_conn.get(key, ())):
            self.remove(subscriber)

    def watching(self, key: int) -> bool:
        """Whether a connection holds subscriptions (it waits for updates: not idle)."""
        return key in self._by_conn

    # -- the upstream workers -------------------------------------------------------------

    def _push(self, upstream: str) -> int | None:
        """Send the upstream's set if it changed; the version to wait for, if sent."""
        uris = frozenset(u for u, o in self.owner.items() if o == upstream)
        if uris == self._sent.get(upstream, frozenset()):
            return None
        return self._send(upstream, uris)

    def _send(self, upstream: str, uris: frozenset[str]) -> int | None:
        identity = self.catalog.identity(upstream)
        if identity is None:
            return None  # not up: it gets the set when it is (upstream_up)
        version = self._versions[upstream] = self._versions.get(upstream, 0) + 1
        self._sent[upstream] = uris
        self.bus.send(identity, messages.ResourceWatch(version=version, uris=sorted(uris)))
        return version

    def upstream_up(self, name: str) -> None:
        """A (re)started worker subscribes afresh to what is watched on its server."""
        self._sent.pop(name, None)
        uris = frozenset(u for u, o in self.owner.items() if o == name)
        if uris:
            self._send(name, uris)

    def on_watched(self, _identity: bytes, message: messages.ResourceWatched) -> None:
        upstream, failed = message.upstream, message.failed
        for uri in failed:  # the server refused it: nobody is subscribed to it
            if self.owner.get(uri) == upstream:
                for subscriber in list(self.subscribers.get(uri, ())):
                    self.remove(subscriber, uri)
        if failed and upstream in self._sent:
            self._sent[upstream] = self._sent[upstream] - set(failed)
        for waiter in [w for w in self._waiters if w.upstream == upstream
                       and w.version <= message.version]:
            self._finish(waiter, {u: failed[u] for u in waiter.uris if u in failed})

    def on_updated(self, _identity: bytes, message: messages.ResourceUpdated) -> None:
        if self.owner.get(message.uri) != message.upstream:
            return  # not watched, or another upstream's
        for subscriber in list(self.subscribers.get(message.uri, ())):
            if subscriber not in self._holding:
                self.deliver(subscriber, message.uri)

    def expire(self, now: float) -> None:
        """Subscriptions an upstream did not confirm in time fail (it is hung, or down)."""
        for waiter in [w for w in self._waiters if w.deadline < now]:
            for uri in waiter.uris:
                self.remove(waiter.subscriber, uri)
            self._finish(waiter, dict.fromkeys(waiter.uris, "the server did not confirm "
                                                            "the subscription in time"))

    def _finish(self, waiter: _Waiter, failed: dict[str, str]) -> None:
        if waiter not in self._waiters:
            return
        self._waiters.remove(waiter)
        # one request may wait on several upstreams: it is answered once, when all have
        # answered, with every failure
        siblings = [w for w in self._waiters if w.done is waiter.done]
        if siblings:
            for sibling in siblings:
                sibling.failed.update(waiter.failed)
                sibling.failed.update(failed)
            return
        failed = {**waiter.failed, **failed}
        if not any(w.subscriber == waiter.subscriber for w in self._waiters):
            self._holding.discard(waiter.subscriber)
        waiter.done(failed)
