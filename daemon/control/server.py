"""The control endpoint: a ROUTER in the master that runs CLI requests.

Only the owner of the state dir gets in: the ipc socket is mode 0600 in a 0700 runtime
dir, and every request must carry the token the master wrote to <state_dir>/control.json
(0600).  A tcp:// endpoint also speaks CurveZMQ: only a client with the daemon's client
key (<state_dir>/curve/client.key_secret, 0600) finishes the handshake.  Each request
runs as its own task, so a slow `restart` never makes `status` wait.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

import zmq

from daemon.control.command_error import CommandError
from daemon.ipc import curve, messages
from daemon.ipc.zmq_endpoint import ZmqEndpoint, bind_router

if TYPE_CHECKING:
    from daemon.master.arbiter import Master

log = logging.getLogger("control")


class ControlServer:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, token: str,
                 master: Master, curve_server: curve.ServerSide | None = None) -> None:
        sock = bind_router(ctx, endpoint, max_bytes=1 << 20, curve_server=curve_server)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._token = token.encode()
        self._master = master
        self._zmq = ZmqEndpoint(sock, self._on_frames)

    def _on_frames(self, frames: list[bytes]) -> None:
        identity, payload = frames[0], frames[-1]
        try:
            request = messages.decode(payload)
        except messages.MalformedMessage as exc:
            self._reply(identity, None, error=f"malformed request: {exc}")
            return
        rid = request.get("id")
        token = request.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._token):
            log.warning("control request refused: bad or missing token")
            self._reply(identity, rid, error="unauthorized: bad or missing control token")
            return
        from daemon.control.commands import COMMANDS

        command = COMMANDS.get(str(request.get("cmd")))
        args = request.get("args") or {}
        if command is None or not isinstance(args, dict):
            self._reply(identity, rid, error=f"unknown command {request.get('cmd')!r}; "
                                             f"known: {', '.join(sorted(COMMANDS))}")
            return
        self._master.own(self._run(identity, rid, command, args))

    async def _run(self, identity: bytes, rid: Any, command: Any, args: dict[str, Any]) -> None:

        try:
            result = await command.execute(self._master, args)
        except CommandError as exc:
            self._reply(identity, rid, error=str(exc))
            return
        except Exception as exc:
            log.exception("control command %s failed", command.NAME)
            self._reply(identity, rid, error=f"internal error: {exc}")
            return
        self._reply(identity, rid, result=result)

    def _reply(self, identity: bytes, rid: Any, result: Any = None,
               error: str | None = None) -> None:
        body: dict[str, Any] = {"id": rid, "ok": error is None}
        if error is None:
            body["result"] = result
        else:
            body["error"] = error
        self._zmq.send([identity, messages.encode(body)])

    def close(self) -> None:
        self._zmq.close()
