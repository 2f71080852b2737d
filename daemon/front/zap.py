"""The master's ZAP handler (ZeroMQ RFC 27): which Curve clients finish their handshake.

libzmq asks it, over inproc://zeromq.zap.01 in the master's context, about every client
of a Curve ROUTER; a refused client never gets a message through.  It runs on the
master's loop (a ZmqEndpoint, like every other socket there), so its answer reads the
agents of the config in force: a key removed by a reload is refused from then on.

| ZAP domain (curve.DOMAIN_*) | who is let in                         | User-Id          |
|-----------------------------|---------------------------------------|------------------|
| workingagents.agents        | a key in some [agents.NAME]           | the key (Z85)    |
| workingagents.internal      | the daemon's client key (workers, CLI)| "workingagents"  |

The User-Id of an agent connection is its key, not the agent's name: the switchboard
maps it to an agent on every request, so a reload that moves or removes a key applies
to open connections too.  NULL-mechanism sockets (the token endpoint, ipc:// sockets)
are let through untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import zmq
from zmq.utils import z85

from daemon.ipc import curve
from daemon.ipc.zmq_endpoint import ZmqEndpoint

log = logging.getLogger("zap")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
VERSION = b"1.0"
INTERNAL_USER = b"workingagents"


class ZapHandler:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], internal_key: bytes,
                 agent_key_known: Callable[[str], bool]) -> None:
        """``internal_key``: the daemon's client public key (Z85); ``agent_key_known``: is
        this Z85 key registered for an agent, now."""
        self._internal = internal_key
        self._agent_key_known = agent_key_known
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(ZAP_ENDPOINT)
        self._zmq = ZmqEndpoint(sock, self._on_frames)

    def _on_frames(self, frames: list[bytes]) -> None:
        # [peer, b"", version, request id, domain, address, identity, mechanism, creds...]
        if len(frames) < 8 or frames[2] != VERSION:
            log.warning("malformed ZAP request (%d frames)", len(frames))
            if len(frames) >= 4:
                self._reply(frames[0], frames[3], b"400", b"Malformed request")
            return
        peer, request_id = frames[0], frames[3]
        domain, address, mechanism = frames[4].decode(errors="replace"), frames[5], frames[7]
        credentials = frames[8:]
        if mechanism == b"NULL":
            self._reply(peer, request_id, b"200", b"OK")
            return
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self._reply(peer, request_id, b"400", b"Unsupported mechanism")
            return
        key = z85.encode(credentials[0])
        if domain == curve.DOMAIN_INTERNAL and key == self._internal:
            self._reply(peer, request_id, b"200", b"OK", INTERNAL_USER)
        elif domain == curve.DOMAIN_AGENTS and self._agent_key_known(key.decode()):
            self._reply(peer, request_id, b"200", b"OK", key)
        else:
            # The key is public, so it may be logged: it tells an admin whom to register.
            log.warning("Curve client %s from %s refused on %s: key not registered",
                        key.decode(), address.decode(errors="replace") or "?", domain)
            self._reply(peer, request_id, b"400", b"Key not registered")

    def _reply(self, peer: bytes, request_id: bytes, code: bytes, text: bytes,
               user_id: bytes = b"") -> None:
        self._zmq.send([peer, b"", VERSION, request_id, code, text, user_id, b""])

    def close(self) -> None:
        self._zmq.close()
