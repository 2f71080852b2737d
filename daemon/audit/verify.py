"""``workingagents audit verify``: check the chain over every file, and the checkpoints.

The walk recomputes every link: a line whose ``n`` or ``prev`` does not follow from the
line before it is the first broken record, named by file and line.  Signed checkpoints
then say how far the log had come: one that covers more records than the files hold
proves the tail was cut off, one whose head differs proves a rewrite.  Checkpoints are
read from the audit dir (for a log file given alone: its directory) and from any shipped
copy given with ``--checkpoints``; log files given without any checkpoints fail, since
nothing else could show that their tail was cut off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from daemon.audit import chain, signing


@dataclass
class Report:
    files: list[Path] = field(default_factory=list)
    records: int = 0  # lines checked
    first: int = 0  # the number of the first record checked (0: from genesis)
    next_n: int = 0  # the number the next record would get
    head: bytes = chain.ZERO
    problem: str | None = None  # the first thing wrong, with file and line
    checkpoints: int = 0  # signed checkpoints verified
    latest: int = 0  # records covered by the latest valid checkpoint
    notes: list[str] = field(default_factory=list)
    key: str | None = None  # the public key the genesis record names

    @property
    def ok(self) -> bool:
        return self.problem is None


def collect(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """The log files (in chain order) and checkpoint files named by ``paths``."""
    logs: list[Path] = []
    checkpoints: list[Path] = []
    for path in paths:
        if path.is_dir():
            logs += chain.log_files(path)
            if (path / signing.CHECKPOINTS).exists():
                checkpoints.append(path / signing.CHECKPOINTS)
        elif path.name == signing.CHECKPOINTS:
            checkpoints.append(path)
        else:
            logs.append(path)
            if (path.parent / signing.CHECKPOINTS).exists():  # where the daemon writes them
                checkpoints.append(path.parent / signing.CHECKPOINTS)
    return sorted(set(logs), key=lambda p: p.name), list(dict.fromkeys(checkpoints))


def verify(paths: list[Path], extra_checkpoints: list[Path] | None = None,
           public_key: str | None = None) -> Report:
    logs, checkpoint_files = collect(paths)
    report = Report(files=logs)
    if not logs:
        report.problem = "no audit files (audit-NNNNNNNN.jsonl) found in " + \
            ", ".join(str(p) for p in paths)
        return report
    checkpoint_files += extra_checkpoints or []
    checkpoints = _read_checkpoints(checkpoint_files, report)
    heads = _walk(logs, {int(c["n"]) for c in checkpoints if _is_int(c.get("n"))}, report)
    files_given = any(not p.is_dir() for p in paths)
    if report.ok and not checkpoint_files:
        if files_given:
            report.problem = (f"no {signing.CHECKPOINTS} beside {logs[-1]}: a cut-off tail "
                              "cannot be detected without the signed checkpoints; give them "
                              "with --checkpoints FILE (or verify the whole audit dir)")
        else:
            report.notes.append(f"no {signing.CHECKPOINTS}: a cut-off tail cannot be "
                                "detected without the signed checkpoints")
    if report.ok:
        key = public_key or report.key or _genesis_key(logs[0].parent)
        later = [p for p in chain.log_files(logs[-1].parent) if p.name > logs[-1].name]
        if checkpoints and key is None and files_given:
            report.problem = ("the checkpoints cannot be checked without the log's public "
                              "key (the walk did not start at a genesis record): give --key")
        else:
            _check_checkpoints(checkpoints, heads, key, report, later)
    return report


def _genesis_key(directory: Path) -> str | None:
    """The key named by the genesis record of ``directory``'s first file, for a walk that
    starts later (one file given alone): as trusted as verifying the whole dir."""
    files = chain.log_files(directory)
    try:
        with files[0].open("rb") as f:
            first = orjson.loads(f.readline())
    except (IndexError, OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(first, dict) or first.get("kind") != "genesis":
        return None
    key = first.get("key")
    return key if isinstance(key, str) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _walk(logs: list[Path], wanted: set[int], report: Report) -> dict[int, bytes]:
    """Recompute the chain; returns the head after ``n`` records for each wanted n."""
    heads: dict[int, bytes] = {}
    head: bytes | None = None
    n = 0
    previous_file: str | None = None
    for path in logs:
        data = path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends in a newline
        for number, line in enumerate(lines, 1):
            where = f"{path.name} line {number}"
            try:
                record = orjson.loads(line)
                rn, prev = record["n"], bytes.fromhex(record["prev"])
                if not _is_int(rn) or len(prev) != 32:
                    raise ValueError
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                report.problem = f"{where}: not an audit record (unparseable, or no n/prev)"
                return heads
            if head is None:  # the first line checked: genesis, or a trusted starting point
                if record.get("kind") == "genesis":
                    if rn != 0 or prev != chain.ZERO:
                        report.problem = f"{where}: a genesis record must be n 0 with a zero prev"
                        return heads
                    report.key = record.get("key")
                else:
                    report.notes.append(f"starts at record {rn} in {path.name}: earlier "
                                        "records were not checked")
                head, n, report.first = prev, rn, rn
            elif number == 1 and previous_file is not None:
                if rn != n or prev != head:
                    report.problem = (
                        f"{where}: does not continue {previous_file} (record {rn}, expected "
                        f"{n}; prev {'matches' if prev == head else 'does not match'} its "
                        "last hash): a file between them is missing, or one was edited")
                    return heads
                if record.get("kind") != "rotate" or record.get("from") != previous_file:
                    report.problem = f"{where}: a new file must open with a rotate record " \
                                     f"naming {previous_file}"
                    return heads
            elif rn != n:
                report.problem = (f"{where}: record number {rn}, expected {n}: a record is "
                                  "missing, inserted or out of order here")
                return heads
            elif prev != head:
                report.problem = (f"{where}: prev does not match the hash of line "
                                  f"{number - 1}: that line (or this one's prev) was edited")
                return heads
            head = chain.node(head, chain.leaf(line))
            n += 1
            report.records += 1
            if n in wanted:
                heads[n] = head
        if torn:
            where = f"{path.name} line {len(lines) + 1}"
            if path is not logs[-1]:
                report.problem = f"{where}: a torn line in a file that is not the last"
                return heads
            report.notes.append(f"{where}: torn last line ({len(torn)} bytes without a "
                                "newline; a crash mid-write): the daemon cuts it off and "
                                "records that when it next starts")
        previous_file = path.name
    report.next_n, report.head = n, head or chain.ZERO
    return heads


def _read_checkpoints(files: list[Path], report: Report) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.problem = f"{path}: cannot read: {exc.strerror}"
            continue
        for number, line in enumerate(data.splitlines(), 1):
            try:
                checkpoint = orjson.loads(line)
            except orjson.JSONDecodeError:
                report.notes.append(f"{path.name} line {number}: not a checkpoint, skipped")
                continue
            if isinstance(checkpoint, dict):
                checkpoint["_where"] = f"{path} line {number}"
                found.append(checkpoint)
    return found


def _check_checkpoints(checkpoints: list[dict[str, Any]], heads: dict[int, bytes],
                       key_text: str | None, report: Report, later: list[Path]) -> None:
    """``later``: log files after the last one checked, which hold the records that
    checkpoints past it cover (not a cut-off tail)."""
    if not checkpoints:
        return
    if key_text is None:
        report.notes.append("checkpoints not checked: no public key (the walk did not start "
                            "at genesis; give --key)")
        return
    try:
        public = signing.parse_public(key_text)
    except ValueError as exc:
        report.problem = f"the public key is unusable: {exc}"
        return
    for checkpoint in sorted(checkpoints, key=lambda c: c.get("n", 0)):
        where = checkpoint["_where"]
        if not signing.check(public, checkpoint):
            report.problem = f"{where}: bad signature: this checkpoint was not signed by " \
                             f"the log's key ({key_text})"
            return
        n = int(checkpoint["n"])
        if n <= report.first:
            continue  # before the first record checked
        if n > report.next_n and later:
            report.notes.append(f"checkpoints past record {report.next_n - 1} cover later "
                                f"files not given ({later[0].name}…): not checked")
            return
        if n > report.next_n:
            report.problem = (f"{where}: truncated: a checkpoint signed at "
                              f"{checkpoint['t']} covers {n} records, the log has only "
                              f"{report.next_n}: records {report.next_n}..{n - 1} were cut off")
            return
        if heads.get(n, b"").hex() != checkpoint["head"]:
            report.problem = (f"{where}: the chain head after {n} records is "
                              f"{heads.get(n, b'').hex()}, the signed checkpoint says "
                              f"{checkpoint['head']}: the log was rewritten")
            return
        report.checkpoints += 1
        report.latest = max(report.latest, n)


def summary(report: Report) -> str:
    if not report.ok:
        return f"FAILED: {report.problem}"
    text = (f"ok, {report.records} records in {len(report.files)} files (records "
            f"{report.first}..{report.next_n - 1}, head {report.head.hex()[:16]}…)")
    if report.checkpoints:
        text += (f"; {report.checkpoints} signed checkpoints verified, the latest covers "
                 f"{report.latest} records")
        if report.latest < report.next_n:
            text += f" ({report.next_n - report.latest} records after it are not yet " \
                    "covered by a checkpoint)"
    return text
