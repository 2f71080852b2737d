"""What the plugin files need, made ready once in the forkserver, so workers fork with it.

Preloaded by the forkserver (worker_process.prepare_forkserver) when the master starts,
with the plugin dirs in ``WARM_ENV``: each trusted plugin file found there is compiled
once (its code object kept in ``source.COMPILED`` under its sha256 and path), and the
modules it imports at top level are imported (a worker start would otherwise pay ~40 ms
for Cedar, RE2, jsonschema, ...).  The cache is only an accelerator: ``load_class`` uses
a code object only for the exact bytes (sha256) and path of the version it was asked to load,
and compiles as before for anything else (a version dropped after the start).

A file byte for byte the same as one the daemon ships (config.bundled_plugin_dirs) also
has its module run here (``source.LOADED``), with its config schema's msgspec type info
made: our own code, which does nothing at import but define its class and compile its
patterns (a few ms per worker start).  Nothing of any other plugin file runs here: its
module body runs in the worker, as it always did (a module that hangs, crashes or starts
a thread at import must never take the forkserver with it).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import os
import sys
from pathlib import Path

from daemon.config import bundled_plugin_dirs
from daemon.hotswap.plugin_config import plugin_config
from daemon.hotswap.source import (
    COMPILED,
    LOADED,
    PluginSource,
    Refused,
    is_plugin_file,
    load_class,
    read_source,
)

WARM_ENV = "WORKINGAGENTS_WARM_PLUGIN_DIRS"
OWN_PACKAGES = frozenset({"daemon", "plugins", "__future__"})


def imported_modules(tree: ast.Module) -> list[str]:
    """Absolute modules a plugin imports at top level (also under try/if), ours excluded:
    an import inside a function may never run, so it is not preloaded."""
    names: list[str] = []
    for node in ast.walk(_top_level(tree)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return [n for n in dict.fromkeys(names) if n.partition(".")[0] not in OWN_PACKAGES]


def _top_level(tree: ast.Module) -> ast.Module:
    """The module without its function and class bodies: what runs at import."""
    class Strip(ast.NodeTransformer):
        def visit_FunctionDef(self, node: ast.AST) -> None:
            return None

        visit_AsyncFunctionDef = visit_FunctionDef
        visit_ClassDef = visit_FunctionDef
    stripped: ast.Module = Strip().visit(tree)
    return stripped


def warm(dirs: list[Path]) -> None:
    """Compile every trusted plugin file in ``dirs`` and import what it imports; never
    raises (a failure here only means a worker does that work itself)."""
    wanted: list[str] = []
    ours: list[PluginSource] = []
    shipped = _shipped()
    for directory in dirs:
        try:
            files = sorted(p for p in directory.iterdir() if is_plugin_file(p))
        except OSError:
            continue
        for path in files:
            try:
                source = read_source(path)
                COMPILED[(source.sha256, source.path)] = compile(
                    source.code, source.path, "exec", dont_inherit=True)
                wanted += imported_modules(ast.parse(source.code, source.path))
            except (Refused, SyntaxError, ValueError, OSError):
                continue
            if source.sha256 in shipped:
                ours.append(source)
    for name in dict.fromkeys(wanted):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # not installed, or fails: the worker will say so, as before
            continue
    for source in ours:
        try:
            cls = load_class(source)
            plugin_config(cls, {})  # msgspec's type info for its schema, made once
        except Exception:  # the worker loads it itself, and says what is wrong
            continue
        LOADED[(source.sha256, source.path)] = sys.modules[cls.__module__]


def _shipped() -> set[str]:
    """The sha256 of each plugin file the daemon ships."""
    found: set[str] = set()
    for directory in bundled_plugin_dirs():
        for path in directory.glob("*.py"):
            with contextlib.suppress(OSError):
                found.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def _from_environment() -> None:
    value = os.environ.pop(WARM_ENV, "")
    # a forkserver that cannot start would stop every worker start: never raise
    with contextlib.suppress(Exception):
        if value:
            warm([Path(d) for d in value.split(os.pathsep) if d])


_from_environment()
