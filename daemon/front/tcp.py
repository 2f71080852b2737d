"""The TCP shim: newline-delimited JSON-RPC 2.0 (MCP's stdio framing over a socket).

An asyncio Protocol rather than streams: about 1.3 KB per idle connection instead of 5 KB,
and no task per connection.  A line longer than the cap gets -32600 and is skipped up to
its newline; a client that does not read its responses stops being read (backpressure).
Incomplete lines are bounded in time and memory by a LineGuard shared by all connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from daemon.front.line_guard import LineGuard
from daemon.front.switchboard import Connection, Switchboard
from daemon.protocol import jsonrpc

log = logging.getLogger("tcp")

WRITE_HIGH_WATER = 4 << 20  # stop reading an agent that has this much unread output


class AgentLineProtocol(asyncio.Protocol):
    def __init__(self, board: Switchboard, max_bytes: int, guard: LineGuard) -> None:
        self.board = board
        self.max_bytes = max_bytes
        self.guard = guard
        self.buffer = bytearray()
        self.skipping = False  # inside an oversized line: drop bytes up to its newline
        self.pending_bytes = 0  # what the guard counts of this connection's open line
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self.outgoing: list[bytes] = []  # responses of this loop turn: one write for all

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.conn = Connection(self._send, transport.close, "tcp")
        self.board.attach(self.conn)

    def _send(self, raw: bytes) -> None:
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self.outgoing.append(raw)
        self.outgoing.append(b"\n")

    def _flush(self) -> None:
        chunks, self.outgoing = self.outgoing, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(chunks))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        start = 0
        conn = self.conn
        assert conn is not None
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if self.skipping:
                self.skipping = False
            elif end - start > self.max_bytes:
                conn.send(self._too_long())
            else:
                line = bytes(buf[start:end]).rstrip(b"\r")
                if line.strip():
                    self.board.on_message(conn, line)
            start = end + 1
        del buf[:start]
        if len(buf) > self.max_bytes:
            if not self.skipping:
                conn.send(self._too_long())
            self.skipping = True
            buf.clear()
        in_line = bool(buf) or self.skipping
        if in_line or self in self.guard.started:  # whole lines alone: nothing to track
            self.guard.update(self, len(buf), in_line, fresh=start > 0)

    def cut_off(self, error: bytes) -> None:
        """The guard gave up on this connection's line: say why, then close."""
        self.buffer.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(error + b"\n")
            self.transport.close()

    def _too_long(self) -> bytes:
        return jsonrpc.error(None, jsonrpc.INVALID_REQUEST,
                             f"Invalid Request: message longer than {self.max_bytes} bytes")

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.conn is not None:
            self.board.detach(self.conn)
        self.transport = None


async def serve_tcp(board: Switchboard, address: str, max_bytes: int,
                    guard: LineGuard) -> asyncio.Server:
    host, _, port = address.rpartition(":")
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: AgentLineProtocol(board, max_bytes, guard),
                                    host.strip("[]"), int(port), reuse_address=True,
                                    backlog=1024)
