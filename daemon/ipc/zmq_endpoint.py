"""A ZeroMQ socket driven by the asyncio loop without zmq.asyncio.

The socket's FD is edge-triggered: it signals "something changed", not "a message is
waiting".  So every wake-up drains with NOBLOCK while ZMQ_EVENTS says POLLIN (reading it
re-arms the FD), and every send schedules one more drain, because a send can consume the
edge that announced an incoming message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import cast

import zmq

from daemon.ipc import curve, messages

log = logging.getLogger(__name__)

Handler = Callable[[list[bytes]], None]
# Called with each message's first frame before the rest is read; True: read the source
# fd of the message too (``ZmqEndpoint.source_fd``), which costs a zero-copy read.
WantsFd = Callable[[bytes], bool]
_NOBLOCK = int(zmq.NOBLOCK)  # plain ints: pyzmq converts enum flags on every call
_SNDMORE = int(zmq.SNDMORE) | _NOBLOCK
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def bind_router(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, *, mandatory: bool = False,
                max_bytes: int | None = None, hwm: int | None = None,
                curve_server: curve.ServerSide | None = None) -> zmq.Socket[bytes]:
    """A ROUTER bound at ``endpoint``; an ipc:// socket file is made owner-only (0600).
    With ``curve_server``, only the clients its ZAP domain lets in get through."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve_server is not None:
        curve.serve(sock, curve_server)
    if mandatory:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a gone peer fails loudly
    if max_bytes is not None:
        sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    if hwm is not None:
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError:
        sock.close()  # an open socket would keep the context's term() waiting forever
        raise
    if endpoint.startswith("ipc://"):
        os.chmod(endpoint[len("ipc://"):], 0o600)
    return sock


class ZmqEndpoint:
    def __init__(self, sock: zmq.Socket[bytes], on_message: Handler,
                 wants_fd: WantsFd | None = None, *, user_ids: bool = False) -> None:
        """``user_ids``: read each message's ZAP User-Id into ``user_id`` before handling
        it (a Curve ROUTER's peers; costs a zero-copy frame per message, so opt-in)."""
        self.sock = sock
        self.on_message = on_message
        self.user_ids = user_ids
        self.user_id: str | None = None  # the sender of the message being handled
        self.wants_fd = wants_fd
        self.source_fd = -1  # of the message being handled, when wants_fd asked for it
        self._loop = asyncio.get_running_loop()
        self._drain_pending = False
        self._closed = False
        self._batches: dict[bytes, list[bytes]] = {}
        self._flush_pending = False
        self._fd = cast(int, sock.getsockopt(zmq.FD))
        self._loop.add_reader(self._fd, self._drain)
        self._schedule_drain()

    def send(self, frames: list[bytes]) -> bool:
        """Queue frames without blocking; False if the peer is gone or its queue is full."""
        if self._closed:
            return False
        try:
            # Frame by frame with SNDMORE: cheaper than send_multipart's generic path.
            send = self.sock.send
            for frame in frames[:-1]:
                send(frame, _SNDMORE)
            send(frames[-1], _NOBLOCK)
        except (zmq.Again, zmq.error.ZMQError) as exc:
            log.debug("send dropped: %s", exc)
            return False
        finally:
            self._schedule_drain()
        return True

    def send_batched(self, peer: bytes, envelope: bytes) -> None:
        """Queue a data-path envelope for ``peer`` (b"" on a DEALER); everything queued in
        this turn of the loop leaves as one frame per peer (see messages.BATCH)."""
        queued = self._batches.get(peer)
        if queued is None:
            self._batches[peer] = [envelope]
            if not self._flush_pending:
                self._flush_pending = True
                self._loop.call_soon(self._flush)
        else:
            queued.append(envelope)

    def flush(self) -> None:
        """Send the queued batches now (they would go at the end of this loop turn)."""
        self._flush()

    def _flush(self) -> None:
        self._flush_pending = False
        batches, self._batches = self._batches, {}
        for peer, envelopes in batches.items():
            payload = envelopes[0] if len(envelopes) == 1 else messages.pack_batch(envelopes)
            self.send([peer, payload] if peer else [payload])

    def drain(self) -> None:
        """Read and handle whatever has arrived, now (normally the loop does it)."""
        self._drain()

    def _schedule_drain(self) -> None:
        if not self._drain_pending and not self._closed:
            self._drain_pending = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_pending = False
        sock = self.sock
        recv, more = sock.recv, sock.getsockopt
        handle = self.on_message
        user_ids = self.user_ids
        while not self._closed:
            # read while EVENTS says a message waits: asking re-arms the edge-triggered
            # FD as an EAGAIN read would, and costs less than the zmq.Again it raises
            if not cast(int, more(_EVENTS)) & _POLLIN:
                break
            try:
                if user_ids:
                    first = recv(_NOBLOCK, copy=False)
                    self.user_id = _user_id(first)
                    frames = [first.bytes]
                else:
                    frames = [recv(_NOBLOCK)]
            except zmq.Again:
                break
            if self.wants_fd is not None and self.wants_fd(frames[0]):
                frames, self.source_fd = self._rest_with_fd(frames)
            else:
                while more(_RCVMORE):  # the rest of a message is already here, whole
                    frames.append(recv(_NOBLOCK))
            try:
                handle(frames)
            except Exception:  # a bad message must not stop the drain for everyone else
                log.exception("message handler failed")

    def _rest_with_fd(self, frames: list[bytes]) -> tuple[list[bytes], int]:
        fd = -1
        while self.sock.getsockopt(_RCVMORE):
            frame = self.sock.recv(_NOBLOCK, copy=False)
            fd = frame.get(zmq.SRCFD)
            frames.append(frame.bytes)
        return frames, fd

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            self._loop.remove_reader(self._fd)
        self.sock.close(linger=0)


def _user_id(frame: zmq.Frame) -> str | None:
    try:
        user_id = frame.get("User-Id")
    except zmq.ZMQError:  # no ZAP handler answered for this peer
        return None
    return user_id if isinstance(user_id, str) else None
