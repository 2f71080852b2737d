"""The layout shows the architecture: folders follow the processes, and no module or
package imports another that imports it back (an import-graph walk over daemon/).

Imports under ``if TYPE_CHECKING:`` are left out: they are annotations, never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

DAEMON = Path(__file__).parent.parent / "daemon"

# Which process runs each folder, and what it may import of ours (besides the shared
# leaves: plugin, config, protocol, logs, metrics, ipc).
PROCESS_FOLDERS = {
    "master": "the master: arbiter, reconfiguration, state dir, the tree, upstream directory",
    "front": "the master: listeners, auth, switchboard, quarantine",
    "gateway": "a gateway worker: a call's governance and dispatch",
    "tools": "gateway workers (built-in tools, the registry) and upstream workers",
    "audit": "the audit process (and the link every other process writes through)",
    "hotswap": "the master's half of the hot swap, the sandbox process that checks a "
               "version, and the loader gateway workers build versions with",
    "supervision": "the master: supervisors, worker slots, liveness",
    "worker": "every worker process: the runtime a job runs in",
    "ipc": "every process: messages, the bus, the call slot, CurveZMQ keys",
    "control": "the master's control endpoint (and the CLI's client of it)",
    "cli": "the workingagents command",
    "llm": "the AI gateway's LLM APIs: settings and error shapes (master), provider "
           "clients and stream handling (gateway workers)",
    "a2a": "the agent gateway: the master's card keeper; the gateway workers' binding, "
           "peer client and task ownership store",
}
# Worker-side folders never import the master's.
WORKER_SIDE = ("gateway", "tools", "worker", "audit")
MASTER_SIDE = ("master", "front", "supervision", "control")


def module_name(path: Path) -> str:
    parts = path.relative_to(DAEMON.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            for other in node.orelse:
                visit(other)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in DAEMON.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module \
                    and node.module.startswith("daemon"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    graph[name].add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.startswith("daemon"))
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    is_package = (DAEMON.parent / Path(*parts) / "__init__.py").exists()
    return ".".join(parts[:2]) if len(parts) > 2 or is_package else module


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle, if there is any (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return None
    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_module_imports_one_that_imports_it_back():
    assert cycle(import_graph()) is None


def test_no_package_imports_one_that_imports_it_back():
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in import_graph().items():
        for target in targets:
            if package_of(module) != package_of(target):
                packages[package_of(module)].add(package_of(target))
    assert cycle(packages) is None


def test_every_folder_is_a_room_of_one_process_and_worker_side_never_imports_the_master():
    folders = {p.name for p in DAEMON.iterdir() if (p / "__init__.py").exists()}
    assert folders - {"bench", "protocol"} == set(PROCESS_FOLDERS)
    def folder(module: str) -> str:
        return module.split(".")[1] if "." in module else ""
    crossings = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if folder(module) in WORKER_SIDE and folder(target) in MASTER_SIDE)
    assert crossings == []
