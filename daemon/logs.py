"""One line per event on stderr.

Under systemd (JOURNAL_STREAM set) each line starts with a syslog priority such as "<4>"
and no time, because journald adds the time and reads the priority from the prefix.  In a
terminal each line starts with the time and the level.  With the "json" format each line
is one JSON object (time, level, process, pid, logger, message, and the traceback if
any), for log shippers; workers inherit the format through the environment.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson

FORMAT_ENV = "WORKINGAGENTS_LOG_FORMAT"

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


class _JsonFormatter(logging.Formatter):
    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        event = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                 "process": self.process_name, "pid": os.getpid(), "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            event["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(event).decode()


def configure(level: str, process_name: str, fmt: str | None = None) -> None:
    """``fmt`` "text" or "json"; None: the one the master chose (inherited), else text."""
    fmt = fmt or os.environ.get(FORMAT_ENV) or "text"
    os.environ[FORMAT_ENV] = fmt  # for the workers this process starts
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(process_name) if fmt == "json"
                         else _EventFormatter(process_name, "JOURNAL_STREAM" in os.environ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
