"""The ZeroMQ agent endpoints: a ROUTER; each DEALER peer sends one JSON-RPC message per
frame.  libzmq drops a peer whose frame exceeds the size cap (MAXMSGSIZE) before we see
it, and bounds what a slow peer can queue (SNDHWM).

Two of them: ``[listen] zmq`` (tokens) and ``[listen] zmq_curve`` (CurveZMQ: only keys
registered for an agent finish the handshake, transport.zap; each peer's key, its ZAP
User-Id, stands for a token on that peer's connection)."""

from __future__ import annotations

import logging

import zmq

from daemon.gateway.switchboard import Connection, Switchboard
from daemon.protocol import jsonrpc
from daemon.transport import curve
from daemon.transport.zmq_endpoint import ZmqEndpoint, bind_router

log = logging.getLogger("zmq")


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
        self._zmq = ZmqEndpoint(sock, self._on_frames, user_ids=server is not None)

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
            self.board.attach(conn)
        return conn

    def _on_frames(self, frames: list[bytes]) -> None:
        identity = frames[0]
        conn = self._peer(identity)
        if len(frames) != 2:
            conn.send(jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "Invalid Request: send one "
                                    f"JSON-RPC message per frame (got {len(frames) - 1})"))
            return
        self.board.on_message(conn, frames[1])

    def close(self) -> None:
        self._zmq.close()
