"""Validate a plugin version in a throwaway process before anything changes.

The child imports the file's exact bytes, finds the Plugin class, checks its
[plugins.config.NAME] table against its ``config_schema``, runs ``migrate`` on a copy of
the live state (or ``initial_state``), checks that the state is JSON-able, and runs
``self_test``.  A module that crashes the interpreter or loops forever at import
only takes the child with it: the parent kills it at the timeout.  The same check backs
``workingagents plugins check FILE``.

This isolates crashes and hangs, not malice: trust comes from file ownership and mode.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import resource
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.hotswap.plugin_config import TableRefused
from daemon.hotswap.source import PluginSource, Refused
from daemon.supervision.waited import waited_for

CHECK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Verdict:
    name: str
    version: int | str
    priority: int
    hooks: list[str]


def _limit(pid: int) -> None:
    # Set from the parent (prlimit): Python code between fork and exec (preexec_fn) can
    # deadlock in a threaded process such as the master.
    resource.prlimit(pid, resource.RLIMIT_CPU, (int(CHECK_TIMEOUT) + 2,) * 2)
    resource.prlimit(pid, resource.RLIMIT_AS, (2 << 30,) * 2)


def validate(source: PluginSource, configs: dict[str, dict[str, Any]] | None = None,
             live: dict[str, dict[str, Any]] | None = None,
             timeout: float = CHECK_TIMEOUT) -> Verdict:
    """Raises Refused with the reason when the version must not be loaded.

    ``configs`` are all [plugins.config.*] tables and ``live`` the serving versions'
    {name: {version, state}}: the check picks its own by the class's name."""
    request = orjson.dumps({"path": source.path, "code": base64.b64encode(source.code).decode(),
                            "configs": configs or {}, "live": live or {}})
    # A check is a child of the master, which reaps orphans on SIGCHLD: it must leave
    # this one to the thread that waits for it here.
    with waited_for() as waited:
        proc = subprocess.Popen([sys.executable, "-m", "daemon.hotswap.sandbox"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        waited.add(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        _limit(proc.pid)  # if it is gone already, its exit status tells the rest
    try:
        stdout, stderr = proc.communicate(request, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise Refused(f"the check did not finish within {timeout:g}s (a loop at import, "
                      "in migrate or in self_test?)") from None
    finally:
        with waited_for() as waited:
            waited.discard(proc.pid)
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit code {proc.returncode}")
        raise Refused(f"the check process died ({how}): {tail[0]}")
    verdict = orjson.loads(lines[-1])
    if not verdict.get("ok"):
        raise (TableRefused if verdict.get("table") else Refused)(str(verdict.get("error")))
    return Verdict(verdict["name"], verdict["version"], verdict["priority"], verdict["hooks"])


def _check(request: dict[str, Any]) -> dict[str, Any]:
    from daemon.hotswap.plugin_config import TableRefused, plugin_config
    from daemon.hotswap.source import hooks, load_class

    code = base64.b64decode(request["code"])
    source = PluginSource(request["path"], code, hashlib.sha256(code).hexdigest())
    try:
        cls = load_class(source)
    except Refused as exc:
        return {"ok": False, "error": str(exc)}
    except SyntaxError as exc:
        return {"ok": False, "error": f"syntax error at line {exc.lineno}: {exc.msg}"}
    except BaseException as exc:
        return {"ok": False, "error": f"import failed: {exc.__class__.__name__}: {exc}"}
    try:
        config = plugin_config(cls, request["configs"].get(cls.name) or {})
    except TableRefused as exc:
        return {"ok": False, "error": str(exc), "table": True}
    step = "__init__"
    live = request["live"].get(cls.name)
    try:
        plugin = cls(config)
        if live is not None:
            step = "migrate"
            state = plugin.migrate(live.get("state"), live["version"])
        else:
            step = "initial_state"
            state = plugin.initial_state()
        step = "state"
        orjson.dumps(state)  # must be JSON-able, to snapshot and migrate later
        plugin.state = state
        step = "self_test"
        plugin.self_test()
    except BaseException as exc:
        return {"ok": False, "error": f"{step} raised {exc.__class__.__name__}: {exc}"}
    return {"ok": True, "name": cls.name, "version": cls.version, "priority": cls.priority,
            "hooks": hooks(cls)}


if __name__ == "__main__":
    result = _check(orjson.loads(sys.stdin.buffer.read()))
    sys.stdout.buffer.write(orjson.dumps(result, default=str) + b"\n")
