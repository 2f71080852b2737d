"""The ZeroMQ agent endpoints: a ROUTER; each DEALER peer sends one JSON-RPC message per
frame.  libzmq drops a peer whose frame exceeds the size cap (MAXMSGSIZE) before we see
it, and bounds what a slow peer can queue (SNDHWM).

Two of them: ``[listen] zmq`` (tokens) and ``[listen] zmq_curve`` (CurveZMQ: only keys
registered for an agent finish the handshake, front.zap; each peer's key, its ZAP
User-Id, stands for a token on that peer's connection).

A peer is known by its routing id, which a peer may choose, and ZeroMQ tells a ROUTER
nothing when a peer goes: a newcomer that picks the routing id of a peer that went
would inherit its session (the agent its `initialize` authenticated).  So each peer is
tied to the connection (fd) its first message came on, and a socket monitor's
"disconnected" event ends the peer of that fd.  libzmq emits that event before it closes
the fd or frees the routing id, so reading the monitor before a new peer is registered
and before a session peer's message is handled closes the race.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import cast

import zmq

from daemon.front.switchboard import Connection, Switchboard
from daemon.ipc import curve
from daemon.ipc.zmq_endpoint import ZmqEndpoint, bind_router
from daemon.protocol import jsonrpc

log = logging.getLogger("zmq")
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)
_EVENT = struct.Struct("=HI")  # a monitor event's first frame: event, value (here the fd)


class AgentRouter:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], address: str, board: Switchboard,
                 max_bytes: int, curve_keys: curve.KeyPair | None = None) -> None:
        server = curve.ServerSide(curve_keys, curve.DOMAIN_AGENTS) if curve_keys else None
        sock = bind_router(ctx, address, max_bytes=max_bytes, hwm=10_000,
                           curve_server=server)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.board = board
        self.transport = "zmq_curve" if server else "zmq"
        self.peers: dict[bytes, Connection] = {}
        self.fds: dict[int, bytes] = {}  # the connection each peer's messages come on
        self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._monitor_events = self._monitor.getsockopt
        self._monitor_fd = cast(int, self._monitor.getsockopt(zmq.FD))
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._monitor_fd, self._forget_disconnected)
        self._zmq = ZmqEndpoint(sock, self._on_frames, self._wants_fd,
                               user_ids=server is not None)

    def _wants_fd(self, identity: bytes) -> bool:
        """Before each message: a new peer's fd is read from its message."""
        conn = self.peers.get(identity)
        if conn is None:
            # its fd may be a gone peer's, reused: that peer's end must be seen first
            self._forget_disconnected()
            return True
        if conn.agent is not None and cast(int, self._monitor_events(_EVENTS)) & _POLLIN:
            self._forget_disconnected()  # this may be a newcomer on a gone peer's id
        return identity not in self.peers

    def _peer(self, identity: bytes) -> Connection:
        conn = self.peers.get(identity)
        if conn is None or conn.key not in self.board.connections:
            zmq_end = self._zmq

            def send(raw: bytes, identity: bytes = identity) -> None:
                zmq_end.send([identity, raw])

            def forget(identity: bytes = identity) -> None:
                self.peers.pop(identity, None)

            conn = Connection(send, forget, self.transport)
            conn.curve_key = self._zmq.user_id  # a routing id is one connection: one key
            self.peers[identity] = conn
            self.fds[self._zmq.source_fd] = identity
            self.board.attach(conn)
        return conn

    def _forget_disconnected(self) -> None:
        """Each connection that went ends its peer's session (and its calls)."""
        while True:
            try:
                event = self._monitor.recv_multipart(_NOBLOCK)
            except zmq.Again:
                break
            _kind, fd = _EVENT.unpack_from(event[0])
            identity = self.fds.pop(fd, None)
            conn = self.peers.pop(identity, None) if identity is not None else None
            if conn is not None:
                self.board.detach(conn)

    def _on_frames(self, frames: list[bytes]) -> None:
        identity = frames[0]
        conn = self._peer(identity)
        if len(frames) != 2:
            conn.send(jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "Invalid Request: send one "
                                    f"JSON-RPC message per frame (got {len(frames) - 1})"))
            return
        self.board.on_message(conn, frames[1])

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            self._loop.remove_reader(self._monitor_fd)
        self._zmq.sock.disable_monitor()
        self._monitor.close(linger=0)
        self._zmq.close()
