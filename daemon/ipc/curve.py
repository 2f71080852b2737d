"""CurveZMQ: the daemon's key pairs in <state_dir>/curve/, and how each end's socket uses them.

Two key pairs, made at the first start and kept across restarts (so agents configured
with the server's public key keep working):

- ``server``: the master's ROUTERs that speak Curve: ``[listen] zmq_curve`` for agents,
  and the worker bus and control endpoint when they are on tcp://.  Agents are given
  ``server.key`` (public).
- ``client``: the daemon's own clients of those tcp:// endpoints: workers (handed it in
  their boot, pickled to the forkserver over a socketpair) and the CLI (which reads it
  from here, like control.json, so only root and the daemon's user can).

Files use zmq.auth's certificate format (zmq.auth.load_certificate reads them, czmq's
tools too); a ``*.key_secret`` file is 0600, and the directory 0700.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

DIRNAME = "curve"
SERVER = "server"
CLIENT = "client"
KEY_CHARS = 40  # a 32-byte key in Z85
DOMAIN_AGENTS = "workingagents.agents"  # ZAP domain: keys registered in [agents.*]
DOMAIN_INTERNAL = "workingagents.internal"  # ZAP domain: the daemon's client key only


@dataclass(frozen=True)
class KeyPair:
    public: bytes  # Z85, 40 bytes
    secret: bytes = field(repr=False)  # Z85; never in a log line or an error

    @classmethod
    def new(cls) -> KeyPair:
        public, secret = zmq.curve_keypair()
        return cls(public, secret)


@dataclass(frozen=True)
class ServerSide:
    """What a Curve ROUTER binds with: its key pair and the ZAP domain that vets clients."""

    keys: KeyPair
    domain: str


@dataclass(frozen=True)
class ClientSide:
    """What a Curve DEALER connects with: the server's public key and its own pair."""

    server_public: bytes
    keys: KeyPair


@dataclass(frozen=True)
class DaemonKeys:
    """The master's Curve: its two key pairs, and which of its endpoints speak Curve."""

    server: KeyPair
    client: KeyPair
    bus: bool  # the worker bus is on tcp://
    control: bool  # the control endpoint is on tcp://
    agents: bool  # [listen] zmq_curve is set

    @classmethod
    def ensure(cls, state_dir: Path, *, bus_endpoint: str, control_endpoint: str,
               agents: bool) -> DaemonKeys:
        return cls(ensure(state_dir, SERVER), ensure(state_dir, CLIENT),
                   on_tcp(bus_endpoint), on_tcp(control_endpoint), agents)

    @property
    def in_use(self) -> bool:
        return self.bus or self.control or self.agents

    @property
    def internal_server(self) -> ServerSide:
        return ServerSide(self.server, DOMAIN_INTERNAL)

    @property
    def bus_server(self) -> ServerSide | None:
        return self.internal_server if self.bus else None

    @property
    def bus_client(self) -> ClientSide | None:
        return ClientSide(self.server.public, self.client) if self.bus else None

    @property
    def control_server(self) -> ServerSide | None:
        return self.internal_server if self.control else None


def is_public_key(text: str) -> bool:
    """40 characters of Z85 that decode to 32 bytes (a Curve key)."""
    if len(text) != KEY_CHARS:
        return False
    try:
        return len(z85.decode(text)) == 32
    except (ValueError, KeyError, struct.error):  # what z85.decode raises on junk
        return False


def directory(state_dir: Path) -> Path:
    return state_dir / DIRNAME


def secret_path(state_dir: Path, name: str) -> Path:
    return directory(state_dir) / f"{name}.key_secret"


def public_path(state_dir: Path, name: str) -> Path:
    return directory(state_dir) / f"{name}.key"


def ensure(state_dir: Path, name: str) -> KeyPair:
    """The key pair ``name``, made now if this is the first start.  Only the master calls
    this, holding the state dir's lock, so no other process races to make it."""
    try:
        return load(state_dir, name)
    except FileNotFoundError:
        pass
    directory(state_dir).mkdir(mode=0o700, exist_ok=True)
    keys = KeyPair.new()
    # The public file first: a pair is complete once its secret file exists.
    _write(public_path(state_dir, name), 0o644, keys.public, None)
    _write(secret_path(state_dir, name), 0o600, keys.public, keys.secret)
    return keys


def load(state_dir: Path, name: str) -> KeyPair:
    """Read the pair ``name``; FileNotFoundError or PermissionError as open() raises them."""
    path = secret_path(state_dir, name)
    with open(path, "rb"):  # zmq.auth says OSError for every failure: keep errno's kind
        pass
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise ValueError(f"{path}: no secret-key in it")
    return KeyPair(public, secret)


def load_client(state_dir: Path) -> ClientSide:
    """What the CLI needs to reach a tcp:// control endpoint."""
    server = zmq.auth.load_certificate(public_path(state_dir, SERVER))[0]
    return ClientSide(server, load(state_dir, CLIENT))


def _write(path: Path, mode: int, public: bytes, secret: bytes | None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    lines = ["#   ZeroMQ CURVE " + ("**Secret** Certificate, made by workingagents: "
                                    "never share it" if secret else
                                    "Public Certificate, made by workingagents"),
             "", "metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.write(fd, ("\n".join(lines) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def serve(sock: zmq.Socket[bytes], side: ServerSide) -> None:
    """Make ``sock`` a Curve server; set before bind.  The ZAP handler of the socket's
    context (front.zap) decides which clients finish the handshake."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, side.keys.secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, side.domain.encode())


def connect_as(sock: zmq.Socket[bytes], side: ClientSide) -> None:
    """Make ``sock`` a Curve client of ``side.server_public``; set before connect."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, side.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, side.keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, side.keys.secret)


def on_tcp(endpoint: str) -> bool:
    """Our own endpoints use Curve on tcp://; ipc:// ones are guarded by file modes."""
    return endpoint.startswith("tcp://")
