"""Plugin files -> plugin classes, each version a new module compiled from its bytes.

Never ``importlib.reload``: old references would survive, and a same-size rewrite within
a second can load a stale .pyc.  The sha256 of the bytes is the version's identity and
goes into the module name, so two versions never share a module.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import msgspec

from daemon.plugin import Plugin

# (sha256, path) -> the module code of that version, compiled before the worker forked
# (filled by hotswap.warm in the forkserver); anything else is compiled when loaded
COMPILED: dict[tuple[str, str], types.CodeType] = {}
# (sha256, path) -> the module of that version, already run before the worker forked (a
# bundled plugin's: hotswap.warm); taken by the first load in a worker, later loads of
# the same version run a fresh module as always
LOADED: dict[tuple[str, str], types.ModuleType] = {}


class Refused(Exception):
    """A plugin file that must not be loaded; the message says why."""


@dataclass(frozen=True)
class PluginSource:
    path: str
    code: bytes
    sha256: str


def is_plugin_file(path: Path) -> bool:
    """Editors' temp files and the documented `.NAME.py.tmp` drops are not plugins."""
    name = path.name
    return name.endswith(".py") and not name.startswith((".", "#", "_")) \
        and not name.endswith("~")


def read_source(path: Path) -> PluginSource:
    """Read a plugin file if it can be trusted: owned by root or by the daemon's user,
    and writable by nobody else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise Refused(f"cannot open: {exc.strerror}") from None
    try:
        info = os.fstat(fd)  # of the file we read, not of whatever the path names now
        if not stat.S_ISREG(info.st_mode):
            raise Refused("not a regular file")
        if info.st_uid not in (0, os.geteuid()):
            raise Refused(f"owned by uid {info.st_uid}, not by root or the daemon's user")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise Refused(f"writable by group or others (mode {stat.S_IMODE(info.st_mode):o})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            code = f.read()
    finally:
        os.close(fd)
    return PluginSource(str(path), code, hashlib.sha256(code).hexdigest())


# what Plugin.kinds may name (daemon.plugin.Call.kind)
CALL_KINDS = frozenset({"tool", "resource", "prompt", "completion", "llm", "a2a"})


def load_class(source: PluginSource) -> type[Plugin]:
    """Compile and run the file as a fresh module; return its one Plugin subclass."""
    stem = Path(source.path).stem.replace("-", "_")
    module_name = f"workingagents_plugin_{stem}_{source.sha256[:12]}"
    module = LOADED.pop((source.sha256, source.path), None)
    if module is None:
        code = COMPILED.get((source.sha256, source.path)) \
            or compile(source.code, source.path, "exec", dont_inherit=True)
        module = types.ModuleType(module_name)
        module.__file__ = source.path
        try:
            sys.modules[module_name] = module  # dataclasses and pickling look them up
            exec(code, module.__dict__)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
    else:
        sys.modules[module_name] = module
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Plugin) and v is not Plugin
             and v.__module__ == module_name]
    if len(found) != 1:
        sys.modules.pop(module_name, None)
        raise Refused(f"defines {len(found)} Plugin subclasses; exactly one is needed")
    cls = found[0]
    if not isinstance(cls.name, str) or not cls.name.isidentifier():
        raise Refused(f"{cls.__name__}.name must be an identifier, got {cls.name!r}")
    if not isinstance(cls.priority, int) or isinstance(cls.priority, bool):
        raise Refused(f"{cls.__name__}.priority must be an integer")
    if not isinstance(cls.version, int | str) or isinstance(cls.version, bool):
        raise Refused(f"{cls.__name__}.version must be an integer or a string")
    schema = cls.config_schema
    if schema is not None and not (isinstance(schema, type)
                                   and issubclass(schema, msgspec.Struct)):
        raise Refused(f"{cls.__name__}.config_schema must be a msgspec Struct "
                      "(e.g. a daemon.plugin.PluginConfig subclass)")
    kinds = cls.kinds
    if not isinstance(kinds, set | frozenset | list | tuple) or not set(kinds) <= CALL_KINDS:
        raise Refused(f"{cls.__name__}.kinds must be a set of {', '.join(sorted(CALL_KINDS))}"
                      f", got {kinds!r}")  # a string would match its substrings
    hook_kinds = cls.hook_kinds
    if not isinstance(hook_kinds, dict) or not all(
            hook in ("before_call", "after_call") and isinstance(seen, set | frozenset | list
                                                                 | tuple)
            and set(seen) <= CALL_KINDS for hook, seen in hook_kinds.items()):
        raise Refused(f"{cls.__name__}.hook_kinds must map before_call or after_call to a "
                      f"set of {', '.join(sorted(CALL_KINDS))}, got {hook_kinds!r}")
    return cls


def hooks(cls: type[Plugin]) -> list[str]:
    return [h for h in ("before_call", "after_call") if callable(getattr(cls, h, None))]
