"""Abuse: idle connections by the thousand, slowloris, floods of unauthenticated requests
and misbehaving upstreams, each while a well-behaved agent keeps getting its answers.

Sizes are CI-sized by default; WA_SLOW=1 runs the bigger ones.  The memory figures each
test measures are printed (run with -s to see them; README "Abuse and limits" quotes them).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from daemon.protocol.jsonrpc import RpcError
from tests.audit_helpers import audit_dir, records
from tests.conftest import wait_for
from tests.gateway_helpers import agent, gateway_config, tcp_address
from tests.test_observability import scrape, value

FIXTURES = Path(__file__).parent / "fixtures"
SLOW = bool(os.environ.get("WA_SLOW"))
MiB = 1 << 20


def figure(text: str) -> None:
    print(f"\n[abuse] {text}", file=sys.stderr)


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


class WellBehavedAgent:
    """Calls echo over and over on one connection in a thread; every call must be
    answered, correctly and within 10 s, for as long as the abuse lasts."""

    def __init__(self, daemon, pause: float = 0.05) -> None:
        self.daemon = daemon
        self.pause = pause
        self.calls = 0
        self.slowest = 0.0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with agent(self.daemon, "bob", timeout=10) as bob:
                while not self._stop.is_set():
                    started = time.monotonic()
                    result = bob.call_tool("echo", {"n": self.calls})
                    assert json.loads(result["content"][0]["text"]) == {"n": self.calls}
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    self.calls += 1
                    self._stop.wait(self.pause)
        except BaseException as exc:  # reported by the test's thread in __exit__
            self.failure = exc

    def __enter__(self) -> WellBehavedAgent:
        self._thread.start()
        wait_for(lambda: self.calls > 0 or self.failure, 10, "the agent's first answer")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        assert self.failure is None, f"the well-behaved agent failed: {self.failure!r}"
        assert self.calls > 0 and self.slowest < 10.0


def listen_with(**limits: object) -> dict[str, object]:
    return {"tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*", **limits}


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def is_closed(sock: socket.socket, seen: bytearray) -> bool:
    """Reads what the daemon sent without blocking; True once it closed the connection."""
    sock.setblocking(False)
    try:
        while data := sock.recv(65536):
            seen += data
        return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


# -- the agents' side ----------------------------------------------------------------------


IDLE = int(os.environ.get("WA_ABUSE_IDLE", "20000" if SLOW else "10000"))


def test_ten_thousand_idle_connections_cost_little_memory_and_the_agent_is_served(
        start_daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))  # a common default
    try:
        d = start_daemon(extra=gateway_config())  # ... which the master inherits
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    raise_fd_limit(IDLE + 500)
    d.wait_ready()
    assert "open files: limit" in d.log(), "the master says what it raised its limit to"
    master = psutil.Process(d.pid)
    socks: list[socket.socket] = []
    with WellBehavedAgent(d):
        fds, before = master.num_fds(), master.memory_info().rss
        try:
            address = tcp_address(d)
            for _ in range(IDLE):
                socks.append(socket.create_connection(address, timeout=10))
            wait_for(lambda: master.num_fds() >= fds + IDLE, 30,
                     f"the master to accept {IDLE} connections")
            held = master.memory_info().rss
            figure(f"{IDLE} idle connections: master RSS {before / MiB:.1f} -> "
                   f"{held / MiB:.1f} MiB ({(held - before) / IDLE:.0f} bytes each)")
            assert held - before < IDLE * 8192, "an idle connection costs under 8 KiB"
            with agent(d, "alice") as late:  # a newcomer still gets in, and is served
                assert late.call_tool("echo", {"late": True})["isError"] is False
        finally:
            for s in socks:
                s.close()
        wait_for(lambda: master.num_fds() < fds + 100, 30, "the connections to go")


def test_slowloris_lines_trickled_a_byte_a_second_are_cut_off_and_the_agent_is_served(
        start_daemon):
    d = start_daemon(extra={**gateway_config(), "listen": listen_with(line_timeout=2.0)})
    d.wait_ready()
    count = 1000 if SLOW else 200
    partial = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}'
    with WellBehavedAgent(d, pause=0.2), agent(d, "alice") as quiet:
        quiet.call_tool("echo", {})
        before, peak = rss(d.pid), 0
        socks = [socket.create_connection(tcp_address(d), timeout=5) for _ in range(count)]
        seen = [bytearray() for _ in socks]
        started = time.monotonic()
        try:
            open_ = set(range(count))
            for second in range(20):
                for i in list(open_):
                    if is_closed(socks[i], seen[i]):
                        open_.discard(i)
                    else:
                        try:
                            socks[i].send(partial[second:second + 1])
                        except OSError:
                            open_.discard(i)
                peak = max(peak, rss(d.pid))
                if not open_:
                    break
                time.sleep(1.0)
            took = time.monotonic() - started
            assert not open_, f"{len(open_)} trickling connections still open after {took:.0f}s"
            figure(f"slowloris: {count} connections at 1 byte/s, all closed after {took:.1f}s; "
                   f"master RSS {before / MiB:.1f} -> peak {peak / MiB:.1f} MiB")
            replies = [json.loads(bytes(s).splitlines()[0]) for s in seen if s]
            assert replies and all(r["error"]["code"] == -32600 for r in replies)
            assert "not completed within 2s" in replies[0]["error"]["message"]
        finally:
            for s in socks:
                s.close()
        # An authenticated connection that only sat idle all that time is not cut off.
        assert quiet.call_tool("echo", {"still": "here"})["isError"] is False


def test_incomplete_lines_share_one_memory_budget_and_the_oldest_is_cut_off(start_daemon):
    d = start_daemon(extra={**gateway_config(), "listen": listen_with(
        line_timeout=120.0, max_pending_bytes=4 * MiB)})
    d.wait_ready()
    before = rss(d.pid)
    socks = [socket.create_connection(tcp_address(d), timeout=5) for _ in range(16)]
    seen = [bytearray() for _ in socks]
    with WellBehavedAgent(d):
        try:
            for s in socks:  # 900 KB each, no newline: 14 MB if the master kept them all
                s.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "x", "pad": "' +
                          b"p" * 900_000)
                time.sleep(0.05)  # oldest first, as the master sees them
            wait_for(lambda: sum(map(is_closed, socks, seen)) >= 11, 10,
                     "the master to cut off the oldest incomplete lines")
            figure(f"16 x 900 KB incomplete lines, budget 4 MiB: master RSS "
                   f"{before / MiB:.1f} -> {rss(d.pid) / MiB:.1f} MiB")
            assert not is_closed(socks[-1], seen[-1]), "the newest line is still welcome"
            assert is_closed(socks[0], seen[0]), "the oldest went first"
            assert b"-32013" in seen[0] or b"-32600" in seen[0]
        finally:
            for s in socks:
                s.close()


def test_a_flood_of_unauthenticated_requests_is_counted_not_audited_and_the_agent_is_served(
        start_daemon):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    per_conn, conns = (25_000, 4) if SLOW else (2_500, 4)
    before = rss(d.pid)
    with WellBehavedAgent(d) as bob:
        for _ in range(conns):
            with socket.create_connection(tcp_address(d), timeout=10) as s:
                reader = s.makefile("rb")
                lines = []
                for i in range(per_conn):
                    meta = {"_meta": {"io.workingagents/token": "wrong"}} if i % 2 else {}
                    method = "initialize" if i % 10 == 0 else "tools/call"
                    lines.append(json.dumps({"jsonrpc": "2.0", "id": i, "method": method,
                                             "params": {"name": "echo", **meta}}).encode())
                s.sendall(b"\n".join(lines) + b"\n")
                codes = {json.loads(reader.readline())["error"]["code"]
                         for _ in range(per_conn)}
                assert codes == {-32010}
        with pytest.raises(RpcError) as err, agent(d, "bob", "zmq", stateless=True) as z:
            z.token = "not-a-token"  # the zmq shim counts too
            z.call_tool("echo", {})
        assert err.value.code == -32010
        flooded = rss(d.pid)
    total = per_conn * conns
    figure(f"{total} unauthenticated requests: master RSS {before / MiB:.1f} -> "
           f"{flooded / MiB:.1f} MiB")
    samples = wait_for(lambda: (lambda s: s if value(
        s, "workingagents_unauthenticated_total", transport="zmq") else None)(scrape(d)),
        10, "the metric")
    assert value(samples, "workingagents_unauthenticated_total", transport="tcp") == total
    assert value(samples, "workingagents_unauthenticated_total", transport="zmq") == 1
    def audited() -> list[dict] | None:
        found = records(audit_dir(d.state_dir))
        return found if sum(r.get("agent") == "bob" for r in found) >= bob.calls else None

    found = wait_for(audited, 10, "the agent's calls to be audited")
    assert {r["agent"] for r in found if "agent" in r} == {"bob"}, \
        "nothing of the flood reached the audit log"


# -- misbehaving upstreams -------------------------------------------------------------------


def with_bad_upstream(mode: str, **gateway: object) -> dict[str, dict[str, object]]:
    config = gateway_config(**gateway)
    config["upstreams.old"] = {"command": [sys.executable, str(FIXTURES / "legacy_upstream.py")]}
    config["upstreams.bad"] = {"command": [sys.executable, str(FIXTURES / "bad_upstream.py"),
                                           mode]}
    return config


def wait_serving(d) -> None:
    """Gateway workers and the good upstream up (a bad upstream still failing to start
    holds back the tree's "ready", not the agents)."""
    def serving() -> bool:
        if d.proc.poll() is not None:
            raise AssertionError(f"daemon exited {d.proc.returncode}:\n{d.log()}")
        if not (d.state_dir / "control.json").exists():
            return False
        workers = d.workers()
        return all(workers.get(name, {}).get("state") == "ready"
                   for name in ("gateway-0", "gateway-1", "mcp:old"))
    wait_for(serving, 60, "the daemon to serve")


def others_are_served(d) -> None:
    with agent(d, "alice") as alice, agent(d, "bob") as bob:
        assert alice.call_tool("echo", {"x": 1})["isError"] is False
        assert bob.call_tool("old__shout", {"text": "ok"})["content"][0]["text"] == "OK"


def server_parent_rss(d, mode: str) -> int:
    """RSS of the upstream worker whose server runs in ``mode`` (0 if none now)."""
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process(d.pid).children(recursive=True):
            if mode in p.cmdline():
                return p.parent().memory_info().rss
    return 0


def upstream_state(d) -> str:
    return str(d.workers().get("mcp:bad", {}).get("state"))


def test_an_upstream_writing_garbage_is_served_and_its_oversized_reply_refused(start_daemon):
    d = start_daemon(extra=with_bad_upstream("garbage"))
    wait_serving(d)
    with WellBehavedAgent(d), agent(d, "bob") as bob:
        wait_for(lambda: upstream_state(d) == "ready", 30, "the garbage upstream to start")
        assert bob.call_tool("bad__shout", {"text": "hi"})["content"][0]["text"] == "HI"
        worker = d.workers()["mcp:bad"]["pid"]
        with pytest.raises(RpcError) as err:
            bob.call_tool("bad__huge", {})
        assert err.value.code == -32603 and "over" in err.value.message
        figure(f"upstream worker after a 20 MiB line and a 20 MiB reply: RSS "
               f"{rss(worker) / MiB:.1f} MiB")
        assert rss(worker) < 150 * MiB
        assert bob.call_tool("bad__shout", {"text": "again"})["content"][0]["text"] == "AGAIN"
        assert d.workers()["mcp:bad"]["pid"] == worker, "the upstream was not restarted"
        others_are_served(d)
    log = d.log()
    assert "refused a message of over" in log
    assert log.count("not JSON") < 10, "a stream of garbage does not flood the log"


@pytest.mark.parametrize("mode", ["silent", "silent_list"])
def test_an_upstream_that_never_answers_its_start_is_shown_down_and_others_are_served(
        start_daemon, mode):
    d = start_daemon(extra=with_bad_upstream(mode))
    wait_serving(d)
    with WellBehavedAgent(d):
        others_are_served(d)
        assert upstream_state(d) != "ready"
        wait_for(lambda: "upstream bad" in d.log() and "no answer" in d.log(), 20,
                 "a log line that says why the upstream did not start")
        with agent(d, "bob") as bob:
            assert not [t for t in bob.list_tools() if t["name"].startswith("bad__")]
        others_are_served(d)
    expected = "tools/list" if mode == "silent_list" else "handshake"
    assert expected in d.log()


def test_an_upstream_that_never_answers_a_call_times_out_and_stays_up(start_daemon):
    d = start_daemon(extra=with_bad_upstream("silent_call", call_timeout=2.0))
    wait_serving(d)
    with WellBehavedAgent(d), agent(d, "bob") as bob:
        wait_for(lambda: upstream_state(d) == "ready", 30, "the upstream to start")
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(RpcError) as err:
                bob.call_tool("bad__shout", {"text": "hello?"})
            assert err.value.code == -32016 and time.monotonic() - started < 10
        others_are_served(d)
        assert upstream_state(d) == "ready"


def test_an_upstream_with_a_50_mb_tool_list_is_refused_with_bounded_memory(start_daemon):
    d = start_daemon(extra=with_bad_upstream("huge_list"))
    wait_serving(d)
    peak = 0
    with WellBehavedAgent(d):
        deadline = time.monotonic() + 30
        while "refused a message of over" not in d.log():
            assert time.monotonic() < deadline, "no log line about the oversized tools/list"
            peak = max(peak, server_parent_rss(d, "huge_list"))
            time.sleep(0.01)
        others_are_served(d)
        assert upstream_state(d) != "ready"
    figure(f"upstream worker reading a 50 MB tools/list: peak RSS seen {peak / MiB:.1f} MiB")
    assert peak < 150 * MiB
