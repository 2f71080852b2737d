"""One line per event on stderr.

Under systemd (JOURNAL_STREAM set) each line starts with a syslog priority such as "<4>"
and no time, because journald adds the time and reads the priority from the prefix.  In a
terminal each line starts with the time and the level.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class _EventFormatter(logging.Formatter):
    def __init__(self, process_name: str, journald: bool) -> None:
        super().__init__()
        self.process_name = process_name
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            # journald shows one entry per line; keep a traceback as one readable block
            text += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        who = f"{self.process_name}[{os.getpid()}]"
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{who}: {text}"
        stamp = self.formatTime(record, "%Y-%m-%d %H:%M:%S")
        return f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {who}: {text}"


def configure(level: str, process_name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EventFormatter(process_name, "JOURNAL_STREAM" in os.environ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
