"""The last accepted version of each plugin, kept in the state dir.

A policy never silently disappears: each version the workers commit is copied to
<state_dir>/accepted_plugins/, so that a daemon that starts while a refused file sits in
a plugin dir serves the last accepted version of that plugin instead of nothing.  Per
plugin: NAME.<sha256[:16]>.py holds the bytes, NAME.json says which of them is current
(name, version, sha256, the file it came from, when).  The bytes are written first and
the record last, each by rename, so a crash leaves the previous record whole; the bytes
are checked against the record's sha256 when read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from daemon.hotswap.source import PluginSource

log = logging.getLogger("plugins")


@dataclass(frozen=True)
class KeptVersion:
    name: str
    version: int | str
    accepted: str  # when it was committed, "YYYY-MM-DD HH:MM:SS UTC"
    source: PluginSource  # the accepted bytes, under the path of the file they came from


class KeptVersions:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "accepted_plugins"

    def keep(self, name: str, version: int | str, source: PluginSource) -> str:
        """Record a committed version; returns when it was accepted."""
        accepted = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        current = self._record(name)
        if current is not None and current.get("sha256") == source.sha256:
            accepted = str(current.get("accepted", accepted))  # the same bytes as before
            if current.get("path") == source.path:
                return accepted
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        code_file = f"{name}.{source.sha256[:16]}.py"
        _write(self.dir / code_file, source.code)
        _write(self.dir / f"{name}.json", orjson.dumps(
            {"name": name, "version": version, "sha256": source.sha256, "path": source.path,
             "file": code_file, "accepted": accepted}))
        self._sweep(name, keep=code_file)
        return accepted

    def find(self, path: str) -> KeptVersion | None:
        """The kept version that came from this file, else the one named like it."""
        records = self._records()
        match = next((r for r in records if r.get("path") == path), None) or \
            next((r for r in records if r.get("name") == Path(path).stem), None)
        return self._load(match) if match is not None else None

    def forget_all_but(self, paths: set[str]) -> None:
        """Drop kept versions whose file is gone from the plugin dirs (a deleted file
        unloads its plugin: nothing of it should come back at the next start)."""
        stems = {Path(p).stem for p in paths}
        for record in self._records():
            if record.get("path") not in paths and record.get("name") not in stems:
                name = str(record.get("name"))
                (self.dir / f"{name}.json").unlink(missing_ok=True)
                self._sweep(name, keep=None)
                log.info("kept version of plugin %s forgotten: %s is gone", name,
                         record.get("path"))

    # -- the files --------------------------------------------------------------------

    def _records(self) -> list[dict[str, object]]:
        if not self.dir.is_dir():
            return []
        found = [self._record(p.stem) for p in sorted(self.dir.glob("*.json"))]
        return [r for r in found if r is not None]

    def _record(self, name: str) -> dict[str, object] | None:
        try:
            record = orjson.loads((self.dir / f"{name}.json").read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            log.error("kept version record %s/%s.json unreadable: %s", self.dir, name, exc)
            return None
        return record if isinstance(record, dict) else None

    def _load(self, record: dict[str, object]) -> KeptVersion | None:
        try:
            code = (self.dir / str(record["file"])).read_bytes()
        except (OSError, KeyError) as exc:
            log.error("kept version of plugin %s unreadable: %s", record.get("name"), exc)
            return None
        sha256 = hashlib.sha256(code).hexdigest()
        if sha256 != record.get("sha256"):
            log.error("kept version of plugin %s does not match its sha256; not used",
                      record.get("name"))
            return None
        version = record.get("version")
        return KeptVersion(str(record["name"]),
                           version if isinstance(version, int | str) else str(version),
                           str(record.get("accepted")),
                           PluginSource(str(record["path"]), code, sha256))

    def _sweep(self, name: str, keep: str | None) -> None:
        for old in self.dir.glob(f"{name}.*.py"):
            if old.name != keep:
                old.unlink(missing_ok=True)


def _write(path: Path, data: bytes) -> None:
    """Write by rename, after fsync: the file is whole or absent, never half written."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
