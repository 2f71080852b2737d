"""The master's end of the worker bus: a ROUTER that workers' DEALERs connect to.

It knows each live incarnation by identity ("gateway-0#3") and routes READY and
heartbeats to it; other control messages go, as typed Structs, to the handler registered
for their class; data-path envelopes (tool calls) to one data handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import zmq

from daemon.ipc import curve, messages
from daemon.ipc.zmq_endpoint import ZmqEndpoint, bind_router

if TYPE_CHECKING:  # the bus knows incarnations; supervision starts them
    from daemon.supervision.worker_process import WorkerProcess

log = logging.getLogger("bus")

M = TypeVar("M", bound=messages.Message)


class WorkerBus:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str,
                 curve_server: curve.ServerSide | None = None) -> None:
        """``curve_server`` on tcp:// (workers then connect with the daemon's client key)."""
        sock = bind_router(ctx, endpoint, mandatory=True, curve_server=curve_server)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._zmq = ZmqEndpoint(sock, self._on_frames)
        self._workers: dict[bytes, WorkerProcess] = {}
        self._handlers: dict[type[messages.Message], Callable[[bytes, Any], None]] = {}
        self._data: Callable[[bytes, bytes], None] | None = None

    def attach(self, proc: WorkerProcess) -> None:
        self._workers[proc.identity] = proc

    def detach(self, proc: WorkerProcess) -> None:
        self._workers.pop(proc.identity, None)

    def on(self, kind: type[M], handler: Callable[[bytes, M], None]) -> None:
        """Messages of the Struct class ``kind`` go to ``handler(identity, message)``."""
        self._handlers[kind] = handler

    def on_data(self, handler: Callable[[bytes, bytes], None]) -> None:
        """Data-path envelopes (replies from gateway workers) go to one handler."""
        self._data = handler

    def send(self, identity: bytes, message: messages.Message) -> bool:
        return self._zmq.send([identity, messages.pack_message(message)])

    def send_raw(self, identity: bytes, payload: bytes) -> None:
        """Queue one data-path envelope; it leaves batched at the end of this loop turn.
        Nothing to check: a dead worker is noticed by its exit, not by a failed send."""
        self._zmq.send_batched(identity, payload)

    def flush(self) -> None:
        """Send what send_raw queued now rather than at the end of this loop turn."""
        self._zmq.flush()

    def heartbeat_all(self) -> None:
        frame = messages.HEARTBEAT_FRAME
        for identity, proc in self._workers.items():
            if proc.alive:
                self._zmq.send([identity, frame])

    def _on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            log.warning("dropping bus message with %d frames", len(frames))
            return
        identity, payload = frames
        proc = self._workers.get(identity)
        if payload == messages.HEARTBEAT_FRAME and proc is not None:  # no decoding
            proc.last_heartbeat = time.monotonic()
            return
        for envelope in messages.envelopes(payload):
            if envelope[:1] == messages.MESSAGE:
                self._on_message(identity, proc, envelope)
            elif self._data is not None:
                self._data(identity, envelope)

    def _on_message(self, identity: bytes, proc: WorkerProcess | None, payload: bytes) -> None:
        try:
            message = messages.unpack_message(payload)
        except messages.MalformedMessage as exc:
            log.warning("dropping bus message from %r: %s", identity, exc)
            return
        if proc is not None:
            proc.last_heartbeat = time.monotonic()  # any control message proves liveness
            if isinstance(message, messages.Ready):
                proc.mark_ready()
                return
            if isinstance(message, messages.Heartbeat):
                return
        handler = self._handlers.get(type(message))
        if handler is not None:
            handler(identity, message)
        elif proc is None:
            log.debug("message from unknown worker %r", identity)

    def close(self) -> None:
        self._zmq.close()
