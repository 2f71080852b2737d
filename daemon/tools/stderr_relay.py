"""An upstream server's stderr, turned into log events of its worker.

Each line becomes one event of logger ``upstream.NAME``, prefixed "NAME stderr:",
so ``--log-format json`` applies and a multi-line message cannot forge other
events.  Terminal escapes (colours, cursor moves) and other control characters are
removed, and a line is cut at ``MAX_LINE`` bytes.  The pipe is always read to the
end, whatever the server writes, so it can never block on a full pipe.
"""

from __future__ import annotations

import asyncio
import logging
import re

MAX_LINE = 4096
CHUNK = 1 << 16
# CSI sequences (colours), OSC sequences (titles, links), two-byte escapes, then any
# other control character but tab.
_UNPRINTABLE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                          r"|\x1b[ -~]?|[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def clean(raw: bytes) -> str:
    return _UNPRINTABLE.sub("", raw.decode(errors="replace")).rstrip()


async def relay(stream: asyncio.StreamReader, name: str) -> None:
    """Log each line of ``stream`` until its end."""
    log = logging.getLogger(f"upstream.{name}")

    def say(raw: bytes, cut: bool = False) -> None:
        text = clean(raw)
        if text:
            log.info("%s stderr: %s%s", name, text, " [line cut]" if cut else "")

    pending = bytearray()
    skipping = False  # the rest of a line already logged cut
    while chunk := await stream.read(CHUNK):
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            if not skipping:
                say(bytes(pending[:end]))
            skipping = False
            del pending[:end + 1]
        if len(pending) > MAX_LINE:
            if not skipping:
                say(bytes(pending[:MAX_LINE]), cut=True)
            skipping = True
            pending.clear()
    if pending and not skipping:
        say(bytes(pending))
