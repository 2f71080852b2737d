"""Who owns which A2A task: (peer, taskId, contextId) -> agent, in the state dir.

A task belongs to the agent whose message created it, and so does its context.  Every
gateway worker opens the same SQLite file (WAL: readers never wait for the writer), so
an agent served by one worker cannot read a task another worker recorded for another
agent.  A row is written before the answer that names the task leaves the worker, so no
agent can ask for an id the store does not know yet.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    peer TEXT NOT NULL, task_id TEXT NOT NULL, context_id TEXT, agent TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (peer, task_id));
CREATE TABLE IF NOT EXISTS contexts (
    peer TEXT NOT NULL, context_id TEXT NOT NULL, agent TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (peer, context_id));
"""


def store_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / "a2a" / "tasks.sqlite"


class TaskOwners:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=10.0, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def task_owner(self, peer: str, task_id: str) -> str | None:
        row = self.db.execute("SELECT agent FROM tasks WHERE peer=? AND task_id=?",
                              (peer, task_id)).fetchone()
        return None if row is None else str(row[0])

    def context_owner(self, peer: str, context_id: str) -> str | None:
        row = self.db.execute("SELECT agent FROM contexts WHERE peer=? AND context_id=?",
                              (peer, context_id)).fetchone()
        return None if row is None else str(row[0])

    def claim(self, peer: str, agent: str, task_id: str | None,
              context_id: str | None) -> bool:
        """Record what a peer's answer names for ``agent``; False if another agent
        already owns it (the answer must then not reach ``agent``)."""
        now = time.time()
        if context_id:
            self.db.execute("INSERT OR IGNORE INTO contexts VALUES (?, ?, ?, ?)",
                            (peer, context_id, agent, now))
            if self.context_owner(peer, context_id) != agent:
                return False
        if task_id:
            self.db.execute("INSERT OR IGNORE INTO tasks VALUES (?, ?, ?, ?, ?)",
                            (peer, task_id, context_id, agent, now))
            if self.task_owner(peer, task_id) != agent:
                return False
        return True
