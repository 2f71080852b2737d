"""The HTTP front door's shared parts: the listener, TLS, Origin, JSON errors, /healthz.

The routes of each front door (/mcp, /v1/…, /a2a/…) have tests of their own.
"""

from __future__ import annotations

import datetime
import os
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from daemon.bench.harness import write_config
from tests.conftest import CLI, wait_for
from tests.gateway_helpers import TOKENS, gateway_config, listen


def base_url(daemon: Any, scheme: str = "http") -> str:
    return f"{scheme}://{listen(daemon)['http']}"


def test_healthz_answers_200_with_the_health_and_needs_no_token(start_daemon):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    reply = httpx.get(f"{base_url(d)}/healthz", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {"health": "healthy", "reasons": []}


def test_an_unknown_route_is_a_json_404(start_daemon):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    reply = httpx.get(f"{base_url(d)}/nothing-here", timeout=10)
    assert reply.status_code == 404
    assert reply.json()["error"]["status"] == 404


def test_a_foreign_origin_is_refused_and_a_loopback_one_is_not(start_daemon):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    url = f"{base_url(d)}/healthz"
    evil = httpx.get(url, headers={"Origin": "http://evil.example"}, timeout=10)
    assert evil.status_code == 403
    assert "http_origins" in evil.json()["error"]["message"]
    for origin in ("http://localhost:3000", "http://127.0.0.1", "https://[::1]:8443"):
        assert httpx.get(url, headers={"Origin": origin}, timeout=10).status_code == 200
    # a look-alike that only starts like a loopback origin
    tricky = httpx.get(url, headers={"Origin": "http://localhost.evil.example"}, timeout=10)
    assert tricky.status_code == 403


def test_the_origin_allow_list_comes_from_the_config(start_daemon):
    d = start_daemon(extra={**gateway_config(), "listen": {
        "tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*",
        "http_origins": ["https://app.example.com"]}})
    d.wait_ready()
    url = f"{base_url(d)}/healthz"
    assert httpx.get(url, headers={"Origin": "https://app.example.com"},
                     timeout=10).status_code == 200
    assert httpx.get(url, headers={"Origin": "http://localhost:3000"},
                     timeout=10).status_code == 403


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_serves_https_when_cert_and_key_are_set(start_daemon, tmp_path):
    cert, key = _self_signed(tmp_path)
    d = start_daemon(extra={**gateway_config(), "listen": {
        "tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*",
        "tls_cert": str(cert), "tls_key": str(key)}})
    d.wait_ready()
    trust = ssl.create_default_context(cafile=str(cert))
    reply = httpx.get(f"{base_url(d, 'https')}/healthz", verify=trust, timeout=10)
    assert reply.status_code == 200
    assert "https 127.0.0.1:" in d.log()


def test_tls_with_a_missing_key_file_is_one_clear_line_at_start(tmp_path):
    cert, _ = _self_signed(tmp_path)
    config = write_config(tmp_path / "wa.toml", {
        "daemon": {"state_dir": str(tmp_path / "state")},
        "listen": {"tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*",
                   "tls_cert": str(cert), "tls_key": str(tmp_path / "missing.pem")}})
    out = subprocess.run([*CLI, "serve", "--config", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "(listen.http)" in out.stderr and "No such file or directory" in out.stderr


def test_tls_cert_without_a_key_is_refused_as_config(tmp_path):
    config = write_config(tmp_path / "wa.toml", {
        "daemon": {"state_dir": str(tmp_path / "state")},
        "listen": {"tls_cert": "/etc/ssl/cert.pem"}})
    out = subprocess.run([*CLI, "serve", "--config", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "key listen.tls_cert: expected tls_cert and tls_key both set" in out.stderr


def test_healthz_answers_503_once_the_daemon_is_stopping(start_daemon):
    d = start_daemon(extra=gateway_config(), supervision={"shutdown_timeout": 10.0})
    d.wait_ready()
    url = f"{base_url(d)}/healthz"
    assert httpx.get(url, timeout=10).status_code == 200
    # a call in flight holds its worker (and so the server) up while the tree stops
    slow = threading.Thread(target=lambda: httpx.post(
        f"{base_url(d)}/mcp", timeout=30, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "sleep", "arguments": {"seconds": 8}, "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}}}},
        headers={"Authorization": f"Bearer {TOKENS['bob']}", "MCP-Protocol-Version":
                 "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "sleep"}))
    slow.start()
    time.sleep(0.5)
    os.kill(d.pid, signal.SIGTERM)

    def refused() -> bool:
        try:
            return httpx.get(url, timeout=5).status_code == 503
        except httpx.TransportError:
            return False
    wait_for(refused, 8, "healthz to say 503")
    slow.join(30)
