"""Reading a daemon's audit log the way an auditor would: from the files."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import CLI


def audit_dir(state_dir: Path) -> Path:
    return state_dir / "audit"


def records(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("audit-*.jsonl")):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):  # a torn tail: tests that make one look
                out.append(json.loads(line))
    return out


def calls(directory: Path, kind: str = "call") -> list[dict[str, Any]]:
    return [r for r in records(directory) if r.get("kind") == kind]


def verify(*paths: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "audit", "verify", *map(str, paths)], capture_output=True,
                          text=True, timeout=60)
