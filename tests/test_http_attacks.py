"""/mcp as an attacker tries it: compressed bodies, slow clients, another agent's
session.  Each test checks that the daemon refuses clearly and serves everyone else."""

from __future__ import annotations

import asyncio
import socket
import time
import zlib
from typing import Any

import httpx

from tests.gateway_helpers import gateway_config, listen
from tests.test_abuse import listen_with
from tests.test_http_front import ACCEPT, auth, body, open_session, url
from tests.test_http_sdk import client as sdk_client


def address(d: Any) -> tuple[str, int]:
    host, _, port = listen(d)["http"].rpartition(":")
    return host, int(port)


def restarts(d: Any) -> int:
    return sum(w.get("restarts", 0) for w in d.workers().values())


def gzip_bomb(megabytes: int) -> bytes:
    """A gzip body that inflates to ``megabytes`` MiB of JSON (about 1 KiB per MiB)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = deflate.compress(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"')
    block = b"a" * (1 << 20)
    out += b"".join(deflate.compress(block) for _ in range(megabytes))
    return out + deflate.flush()


def test_a_compressed_body_is_refused_with_415_before_it_is_inflated(start_daemon):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    before = restarts(d)
    bomb = gzip_bomb(200)  # 200 KB on the wire, 200 MB inflated
    reply = httpx.post(url(d), content=bomb, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip", "Accept": ACCEPT},
        timeout=30)
    assert reply.status_code == 415
    assert "Content-Encoding" in reply.json()["error"]["message"]
    assert reply.headers["Accept-Encoding"] == "identity"
    # the master's loop never stalled: no worker missed a heartbeat, calls are served
    headers = open_session(d)
    called = httpx.post(url(d), json=body("tools/call", {"name": "echo", "arguments": {}}, 2),
                        headers=headers, timeout=10)
    assert called.json()["result"]["isError"] is False
    assert restarts(d) == before


def test_another_agents_session_id_is_not_found_whatever_carries_the_token(start_daemon):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    bobs = open_session(d, "bob")["Mcp-Session-Id"]
    alice_token = auth("alice")["Authorization"].removeprefix("Bearer ")
    listing = body("tools/list", {"_meta": {"io.workingagents/token": alice_token}}, 2)
    for headers in ({**auth("alice")}, {}):  # the bearer header, or the _meta token
        reply = httpx.post(url(d), json=listing, timeout=10, headers={
            **headers, "Accept": ACCEPT, "Mcp-Session-Id": bobs})
        assert reply.status_code == 404, reply.text
        assert "no such MCP session" in reply.json()["error"]["message"]
    # bob's session is untouched
    mine = httpx.post(url(d), json=body("tools/list", rid=3), timeout=10, headers={
        "Accept": ACCEPT, "Mcp-Session-Id": bobs})
    assert [t["name"] for t in mine.json()["result"]["tools"]] == ["echo", "sleep"]


def closed_within(sock: socket.socket, seconds: float, trickle: bytes) -> bytes | None:
    """Send ``trickle`` a byte a second until the server closes; what it answered, or
    None if it still holds the connection after ``seconds``."""
    seen = b""
    deadline = time.monotonic() + seconds
    sock.settimeout(1.0)
    for i in range(len(trickle) * 1000):
        if time.monotonic() > deadline:
            return None
        try:
            sock.send(trickle[i % len(trickle):][:1])
        except OSError:
            return seen
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return seen
        if not chunk:
            return seen
        seen += chunk
    return None


def test_slowloris_headers_and_bodies_are_cut_off_after_line_timeout(start_daemon):
    d = start_daemon(extra={**gateway_config(), "listen": listen_with(line_timeout=2.0)})
    d.wait_ready()
    headers = open_session(d)
    with socket.create_connection(address(d), timeout=10) as trickling:
        answered = closed_within(trickling, 20, b"POST /mcp HTTP/1.1\r\nX-Slow: " + b"a" * 100)
        assert answered is not None, "a header trickled a byte a second is held open"
    with socket.create_connection(address(d), timeout=10) as trickling:
        trickling.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 1000\r\n\r\n{")
        answered = closed_within(trickling, 20, b" " * 100)
        assert answered is not None, "a body trickled a byte a second is held open"
        assert answered.startswith(b"HTTP/1.1 408"), answered[:200]
        assert b"line_timeout" in answered
    # the session that sat idle meanwhile is still served (on a new connection)
    called = httpx.post(url(d), json=body("tools/call", {"name": "echo", "arguments": {}}, 2),
                        headers=headers, timeout=10)
    assert called.json()["result"]["isError"] is False


def test_a_malformed_request_carrying_a_token_never_writes_it_to_the_log(start_daemon):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    token = auth("bob")["Authorization"].encode()
    for malformed in (token + b"\rX", token + b"x" * 9000, b"X-Junk: a\nb\r\n" + token):
        with socket.create_connection(address(d), timeout=10) as sock:
            sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\n" + malformed
                         + b"\r\nContent-Length: 0\r\n\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    headers = open_session(d)  # the server goes on
    called = httpx.post(url(d), json=body("tools/call", {"name": "echo", "arguments": {}}, 2),
                        headers=headers, timeout=10)
    assert called.json()["result"]["isError"] is False
    assert b"bob-secret-token" not in d.log_path.read_bytes()


def test_a_quiet_sdk_session_holding_its_get_stream_outlives_idle_timeout(start_daemon):
    """An IDE that sits quiet with its notification stream open is not idle: the Python
    SDK does not initialize again after a 404, so a swept session breaks it."""
    d = start_daemon(extra={**gateway_config(), "listen": listen_with(idle_timeout=1.0)})
    d.wait_ready()

    async def run() -> None:
        async with sdk_client(d, "legacy") as bob:
            await bob.call_tool("echo", {"text": "before"})
            await asyncio.sleep(4)  # quiet, but its GET stream is open
            echoed = await bob.call_tool("echo", {"text": "after"})
            assert echoed.content[0].text == '{"text":"after"}'
    asyncio.run(run())
    assert "closing idle http connection" not in d.log()


def test_a_get_without_a_session_is_405_which_clients_take_as_no_stream_offered(start_daemon):
    """The spec: a GET is answered with an SSE stream or 405; SDK clients (the TypeScript
    SDK's GET after initialized, a stateless client's probe) treat only 405 as "none"."""
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    reply = httpx.get(url(d), headers={**auth(), "Accept": "text/event-stream"}, timeout=10)
    assert reply.status_code == 405
    assert set(reply.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert "Mcp-Session-Id" in reply.json()["error"]["message"]
    headers = open_session(d)  # with its session, the GET is the session's stream
    with httpx.stream("GET", url(d), headers={**headers, "Accept": "text/event-stream"},
                      timeout=10) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
