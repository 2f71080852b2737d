"""Gateway throughput and latency against the bare ZeroMQ ceiling, in one run.

N agent connections keep a window of pipelined `echo` calls in flight for a fixed time;
each response is parsed and matched by id, and its latency recorded.  The same driver
then runs against a bare pyzmq ROUTER echo (no gateway at all) on the same machine, so
the gateway's figure is reported as a ratio of that ceiling.  A third run paces calls at
half the gateway's peak rate to read its latency under moderate load.  Last, the peaks
again with the bundled plugin chain (plugins/, default config), so the cost of the
guardrails is a ratio of the same run's empty chain.
"""

from __future__ import annotations

import functools
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import zmq

from daemon.bench.harness import bundled_plugins, temporary_daemon
from daemon.control.client import read_control_file
from daemon.front.auth import admin_token_path

Conn = Any


class Driver:
    """A single-threaded, non-blocking load generator over either transport."""

    def __init__(self, transport: str, address: str, token: str | None, conns: int) -> None:
        self.transport = transport
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.conns: list[Conn] = []
        self.buffers: dict[int, bytearray] = {}
        for _ in range(conns):
            if transport == "tcp":
                host, _, port = address.rpartition(":")
                sock = socket.create_connection((host, int(port)))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.conns.append(sock)
                self.buffers[sock.fileno()] = bytearray()
            else:
                z = self.ctx.socket(zmq.DEALER)
                z.setsockopt(zmq.LINGER, 0)
                z.connect(address)
                self.conns.append(z)
        if token is not None:
            init = orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"},
                "_meta": {"io.workingagents/token": token}}})
            for conn in self.conns:
                self._send(conn, init)
                self._recv_blocking(conn)

    def _send(self, conn: Conn, raw: bytes) -> None:
        if self.transport == "tcp":
            conn.sendall(raw + b"\n")
        else:
            conn.send(raw, zmq.NOBLOCK)

    def _recv_blocking(self, conn: Conn) -> bytes:
        if self.transport == "tcp":
            buf = self.buffers[conn.fileno()]
            while b"\n" not in buf:
                buf += conn.recv(65536)
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            return line
        return bytes(conn.recv())

    def _drain(self, conn: Conn) -> list[bytes]:
        out: list[bytes] = []
        if self.transport == "tcp":
            try:
                data = conn.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            buf = self.buffers[conn.fileno()]
            buf += data
            *lines, rest = bytes(buf).split(b"\n")
            buf[:] = rest
            return lines
        while True:
            try:
                out.append(conn.recv(zmq.NOBLOCK))
            except zmq.Again:
                return out

    def run(self, duration: float, window: int, rate: float | None = None) -> dict[str, Any]:
        """Keep ``window`` calls in flight per connection (or pace at ``rate`` calls/s)."""
        latencies, elapsed, errors = self.collect(duration, window, rate)
        return {"calls_per_s": round(len(latencies) / elapsed), "errors": errors,
                "latency_ms": _percentiles(latencies)}

    def collect(self, duration: float, window: int, rate: float | None = None,
                settle: bool = False) -> tuple[list[float], float, int]:
        """run()'s latencies (ms), seconds and errors; ``settle``: then wait (uncounted)
        for the calls still in flight, so that none is left for the gateway to finish
        while another run is measured."""
        sent: dict[int, float] = {}
        latencies: list[float] = []
        next_id = 1
        poller = zmq.Poller() if self.transport == "zmq" else None
        sel = selectors.DefaultSelector() if self.transport == "tcp" else None
        for conn in self.conns:
            if poller is not None:
                poller.register(conn, zmq.POLLIN)
            elif sel is not None:
                sel.register(conn, selectors.EVENT_READ, conn)
        inflight = dict.fromkeys(range(len(self.conns)), 0)
        index = {id(c): i for i, c in enumerate(self.conns)}
        errors = 0
        start = time.perf_counter()
        end = start + duration
        paced = 0

        def fire(i: int) -> None:
            nonlocal next_id
            rid = next_id
            next_id += 1
            self._send(self.conns[i], orjson.dumps({
                "jsonrpc": "2.0", "id": rid, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"n": rid}}}))
            sent[rid] = time.perf_counter()
            inflight[i] += 1

        elapsed = 0.0
        while True:
            now = time.perf_counter()
            if now >= end and not elapsed:
                elapsed = now - start
                if not settle:
                    break
                end = now + 2.0  # for the calls in flight; none is sent from now on
            if elapsed and (now >= end or not any(inflight.values())):
                break
            if elapsed:
                pass  # settling: nothing more is sent
            elif rate is None:
                for i in inflight:
                    while inflight[i] < window:
                        fire(i)
            else:
                due = int((now - start) * rate)
                while paced < due:
                    i = paced % len(self.conns)
                    if inflight[i] < window:
                        fire(i)
                    paced += 1
            ready: list[Conn]
            if poller is not None:
                ready = [s for s, _ in poller.poll(1)]
            else:
                assert sel is not None
                ready = [key.data for key, _ in sel.select(0.001)]
            for conn in ready:
                for raw in self._drain(conn):
                    message = orjson.loads(raw)
                    t0 = sent.pop(message.get("id"), None)
                    if t0 is None:
                        continue
                    inflight[index[id(conn)]] -= 1
                    if elapsed:
                        continue  # settling: answered after the measured window
                    if "error" in message:
                        errors += 1
                    latencies.append((time.perf_counter() - t0) * 1000)
        if sel is not None:
            sel.close()
        return latencies, elapsed, errors

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    s = sorted(samples)

    def at(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 3)
    return {"p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "max": round(s[-1], 3)}


def bare_echo(endpoint: str) -> None:
    """The ceiling: a pyzmq ROUTER that sends every frame straight back (no gateway)."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(endpoint)
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    while True:
        sock.send_multipart(sock.recv_multipart())


def _bare_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from daemon.bench.gateway_load import bare_echo; "
                               "bare_echo('tcp://127.0.0.1:*')"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _measure(make: Callable[[], Driver], duration: float, window: int,
             rate: float | None = None) -> dict[str, Any]:
    driver = make()
    try:
        driver.run(min(0.5, duration / 4), window, rate)  # warm up
        return driver.run(duration, window, rate)
    finally:
        driver.close()


def _interleaved(makes: Mapping[str, Callable[[], Driver]], duration: float, window: int,
                 rounds: int) -> dict[str, dict[str, Any]]:
    """The peak of each gateway, measured in turns (ABBA...) of duration/rounds each,
    every turn settled before the next: a slow drift of the machine's load then weighs
    on both alike, where two runs one after the other saw different machines."""
    drivers = {name: make() for name, make in makes.items()}
    try:
        for driver in drivers.values():
            driver.collect(min(0.5, duration / 4), window, settle=True)  # warm up
        got: dict[str, list[Any]] = {name: [[], 0.0, 0, []] for name in drivers}
        for turn in range(rounds):
            for name in (list(drivers) if turn % 2 == 0 else list(drivers)[::-1]):
                latencies, elapsed, errors = drivers[name].collect(duration / rounds,
                                                                   window, settle=True)
                sums = got[name]
                sums[0] += latencies
                sums[1] += elapsed
                sums[2] += errors
                sums[3].append(len(latencies) / elapsed)
    finally:
        for driver in drivers.values():
            driver.close()
    return {name: {"calls_per_s": round(len(lat) / elapsed), "errors": errors,
                   "latency_ms": _percentiles(lat), "turns_calls_per_s": [round(x) for x in per]}
            for name, (lat, elapsed, errors, per) in got.items()}


def run(conns: int = 8, window: int = 16, duration: float = 3.0,
        rounds: int = 6) -> dict[str, Any]:
    """``rounds``: the turns the empty and the bundled chain take at peak load."""
    results: dict[str, Any] = {"conns": conns, "window": window, "duration_s": duration}
    proc, endpoint = _bare_server()
    try:
        results["bare_zmq_echo"] = _measure(lambda: Driver("zmq", endpoint, None, conns),
                                            duration, window)
    finally:
        proc.kill()
        proc.wait()
    with temporary_daemon(gateway_workers=2) as daemon, bundled_plugins() as bundled, \
            temporary_daemon(gateway_workers=2, plugin_dirs=[bundled]) as chained:
        ends = {}
        for name, each in (("", daemon), ("_bundled_chain", chained)):
            listen = read_control_file(each.state_dir)["listen"]
            ends[name] = (listen, admin_token_path(each.state_dir).read_text().strip())
        for transport in ("zmq", "tcp"):
            makes = {f"gateway_{transport}{name}": functools.partial(
                Driver, transport, listen[transport], token, conns)
                for name, (listen, token) in ends.items()}
            results.update(_interleaved(makes, duration, window, rounds))
            peak = results[f"gateway_{transport}"]
            results[f"gateway_{transport}_at_half_peak"] = _measure(
                makes[f"gateway_{transport}"], duration, window * 4,
                rate=peak["calls_per_s"] / 2)
    ceiling = results["bare_zmq_echo"]["calls_per_s"] or 1
    results["ratio_gateway_zmq_to_bare"] = round(results["gateway_zmq"]["calls_per_s"]
                                                 / ceiling, 3)
    results["ratio_gateway_tcp_to_bare"] = round(results["gateway_tcp"]["calls_per_s"]
                                                 / ceiling, 3)
    for transport in ("zmq", "tcp"):
        results[f"ratio_bundled_to_empty_chain_{transport}"] = round(
            results[f"gateway_{transport}_bundled_chain"]["calls_per_s"]
            / max(1, results[f"gateway_{transport}"]["calls_per_s"]), 3)
    results["cpus"] = os.cpu_count()
    results["daemon_log"] = str(Path(daemon.state_dir) / "daemon.log")
    return results
