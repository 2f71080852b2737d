"""Server-sent events (text/event-stream) split into their ``data`` payloads, bounded.

MCP's Streamable HTTP sends one JSON-RPC message per event.  Lines may end in LF, CRLF or
CR (the SSE grammar); a field line is ``name: value``; a blank line ends the event; lines
starting with ":" are comments (keep-alives).  Only ``data`` matters here: ``id``,
``event`` and ``retry`` are read past; an event whose data is empty is none (SSE's
dispatch rule: servers send one to prime a resumable stream).  An event over ``cap``
bytes is refused as it streams in: EventTooLarge is raised, and the stream is not worth
reading on.
"""

from __future__ import annotations

from daemon.tools.stdout_lines import LineSplitter


class EventTooLarge(Exception):
    """An event (or a single line of one) over the cap."""


class SseEvents:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lines = LineSplitter(cap, self._oversized)
        self._data: list[bytes] = []
        self._size = 0
        self._after_cr = False  # the last chunk ended in CR: a LF starting the next is its pair

    def _oversized(self, head: bytes) -> None:
        raise EventTooLarge(f"an event of over {self.cap} bytes")

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of each event that ``chunk`` completes."""
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = chunk[-1:] == b"\r"
        if b"\r" in chunk:  # CRLF and lone CR end lines too
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[bytes] = []
        for line in self._lines.feed(chunk):
            if not line:
                data = b"\n".join(self._data)
                if data:  # an empty one (a resumable stream's priming event) is no event
                    events.append(data)
                self._data, self._size = [], 0
                continue
            field, _, value = line.partition(b":")
            if field != b"data":
                continue  # a comment, id, event or retry line
            if value[:1] == b" ":
                value = value[1:]
            self._size += len(value) + 1
            if self._size > self.cap:
                raise EventTooLarge(f"an event of over {self.cap} bytes")
            self._data.append(value)
        return events
