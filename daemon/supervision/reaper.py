"""The master as child subreaper: orphans in its subtree are reparented to it and reaped.

A worker's grandchildren (an upstream server's own children, say) are killed with the
worker's process group; if any outlive their parent they come to the master, which reaps
them, so no zombie is ever left.  Some direct children are waited for by others and must
be left alone: multiprocessing's forkserver and resource tracker, and plugin checks.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os

import psutil

from daemon.supervision.waited import waited_for
from daemon.supervision.worker_process import ExitStatus, forkserver_helper_pids

log = logging.getLogger("master")

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans() -> None:
    helpers = forkserver_helper_pids()
    with waited_for() as waited, contextlib.suppress(psutil.Error):
        for child in psutil.Process().children():
            if child.pid in helpers or child.pid in waited:
                continue  # someone waits for these
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(child.pid, os.WNOHANG)
                if pid:
                    exit = ExitStatus(os.waitstatus_to_exitcode(status), 0.0)
                    log.info("reaped orphan pid %d (%s)", pid, exit.describe())
