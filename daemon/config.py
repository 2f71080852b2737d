"""TOML configuration -> typed, validated settings.

Unknown keys and wrong types are refused with the file, the key and what was expected
(msgspec does the checking).  A config is loaded at start and again at reload; a refused
reload leaves the running settings in place, so loading never mutates anything.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from daemon import agents_dir, secret_env
from daemon.a2a import settings as a2a_settings
from daemon.a2a.settings import A2aSection
from daemon.agents_dir import AgentSection
from daemon.llm import settings as llm_settings
from daemon.llm.settings import LlmSection

SYSTEM_CONFIG = Path("/etc/workingagents/workingagents.toml")
IPC_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
MAX_AGENT_NAME_BYTES = 255  # its length is one byte of the CALL envelope (ipc.messages)


class ConfigError(Exception):
    """A config file that cannot be used; the message names file, key and expectation."""


class Fixed:
    """Marks a key (or a whole table) that a running daemon cannot change: a reload that
    changes it is refused (daemon.master.fixed_settings words the refusal)."""

    def __repr__(self) -> str:
        return "FIXED"


FIXED = Fixed()  # Annotated[type, FIXED]: beside the key it marks


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class DaemonSection(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    state_dir: Annotated[str, FIXED] = ""  # default: see default_state_dir()
    # default: $RUNTIME_DIRECTORY, else <state_dir>/run
    runtime_dir: Annotated[str, FIXED] = ""
    gateway_workers: int = 2
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"  # `serve --log-format` overrides it


class ControlSection(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # Where the CLI reaches the master.  Default ipc://<runtime_dir>/control.sock (mode 0600).
    endpoint: Annotated[str, FIXED] = ""


class SupervisionSection(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """OTP knobs shared by every supervisor in the tree, plus liveness and backoff."""

    max_restarts: int = 5  # more than this many restarts ...
    max_seconds: float = 10.0  # ... within this many seconds: the supervisor gives up
    start_timeout: float = 10.0  # a worker must report READY within this
    shutdown_timeout: float = 5.0  # SIGTERM, then SIGKILL after this
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0  # a worker silent this long is hung: SIGABRT, SIGKILL
    abort_grace: float = 1.0  # time for faulthandler to dump a hung worker's stack
    backoff_initial: float = 0.05  # delay before the 2nd consecutive restart; doubles
    backoff_max: float = 5.0
    backoff_reset: float = 10.0  # a child up this long has its backoff forgotten
    # master<->workers; default ipc://<runtime_dir>/bus.sock
    bus_endpoint: Annotated[str, FIXED] = ""


# Origins of pages served from this machine, any port ("*" matches the port only).
LOOPBACK_ORIGINS = ("http://127.0.0.1:*", "https://127.0.0.1:*", "http://localhost:*",
                    "https://localhost:*", "http://[::1]:*", "https://[::1]:*",
                    "http://127.0.0.1", "https://127.0.0.1", "http://localhost",
                    "https://localhost", "http://[::1]", "https://[::1]")


class ListenSection(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Where agents connect.  Port 0 (tcp) or "*" (zmq) picks a free port; the master
    publishes the ports it got in <state_dir>/control.json."""

    # TCP shim: newline-delimited JSON-RPC 2.0; "" = off
    tcp: Annotated[str, FIXED] = "127.0.0.1:7700"
    # ZeroMQ ROUTER, one JSON-RPC message per frame; "" = off
    zmq: Annotated[str, FIXED] = "tcp://127.0.0.1:7701"
    # ZeroMQ ROUTER with CurveZMQ: agents authenticate by a key registered in
    # [agents.NAME] curve_public_key; the server's keys are in <state_dir>/curve; "" = off
    zmq_curve: Annotated[str, FIXED] = ""
    # HTTP: /mcp (MCP Streamable HTTP), /v1/... (AI gateway), /a2a/..., /healthz; "" = off
    http: Annotated[str, FIXED] = "127.0.0.1:7780"
    # the Origin values a browser may send (DNS rebinding); default: loopback origins
    http_origins: list[str] = msgspec.field(default_factory=lambda: list(LOOPBACK_ORIGINS))
    tls_cert: Annotated[str, FIXED] = ""  # PEM files: HTTPS when both are set
    tls_key: Annotated[str, FIXED] = ""
    max_message_bytes: int = 1 << 20  # a longer line or frame is refused
    idle_timeout: float = 300.0  # a connection silent this long is closed
    line_timeout: float = 30.0  # a TCP line must complete this long after its first byte
    max_pending_bytes: int = 64 << 20  # all incomplete TCP lines together; past it the
    # connection with the oldest one is closed
    max_inflight_per_connection: int = 256  # more answer -32013 busy
    max_inflight_per_worker: int = 8192


class GatewaySection(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    call_timeout: float = 60.0  # seconds; a call still running then answers -32016
    tool_timeouts: dict[str, float] = msgspec.field(default_factory=dict)  # per tool name
    # An agent with this many calls that hung, crashed or overran a gateway worker ...
    quarantine_strikes: int = 3
    quarantine_window: float = 60.0  # ... within this many seconds is quarantined (-32019)
    quarantine_seconds: float = 30.0  # for this long, doubling each time it trips again,
    quarantine_max_seconds: float = 600.0  # up to this (and forgiven after this long quiet)


class RoleSection(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    tools: list[str] = msgspec.field(default_factory=list)  # glob patterns of tool names
    resources: list[str] = msgspec.field(default_factory=list)  # ... of resource URIs
    prompts: list[str] = msgspec.field(default_factory=list)  # ... of <upstream>__<prompt>
    models: list[str] = msgspec.field(default_factory=list)  # LLM models (AI gateway), globs
    peers: list[str] = msgspec.field(default_factory=list)  # A2A peers (agent gateway), globs


UPSTREAM_PROTOCOLS = ("auto", "2025-11-25", "2026-07-28")


class UpstreamSection(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """An upstream MCP server, over stdio (``command``) or Streamable HTTP (``url``),
    served by a supervised worker of the tools supervisor; its tools appear as
    <name>__<tool> (its prompts as <name>__<prompt>), or bare with ``prefix = ""``."""

    command: list[str] = msgspec.field(default_factory=list)  # exactly one of command ...
    url: str = ""  # ... and url (http:// or https://)
    # Header = "NAME": an HTTP header whose value is the secret NAME (daemon.secret_env)
    headers_env: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: float = 30.0  # HTTP: seconds to connect and for an answer to start
    # None: tools and prompts are <name>__<tool>; "": their own names, bare (one upstream
    # at most, so that a name says which server it is; built-ins keep theirs)
    prefix: str | None = None
    # "auto": 2026-07-28 when the server offers it, else the handshake era; "2025-11-25":
    # always the handshake era (a server whose tools ask the client back, sampling or
    # elicitation, can do so only in a session); "2026-07-28": that era or no start
    protocol: str = "auto"
    env: dict[str, str] = msgspec.field(default_factory=dict)  # plain values, no secrets
    # VAR = "NAME": the server's $VAR is the secret NAME, read at start from the daemon's
    # environment or $CREDENTIALS_DIRECTORY/NAME (daemon.secret_env); never in the TOML
    secret_env: dict[str, str] = msgspec.field(default_factory=dict)
    cwd: str = ""


class PluginsSection(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Guardrail and policy plugins: .py files in these dirs, hot-swapped on change."""

    dirs: list[str] | None = None  # default: the bundled plugins, /etc/workingagents/plugins.d
    watch: bool = True  # swap on file drop (watchfiles); reload/SIGHUP rescans too
    budget_ms: float = 50.0  # a hook slower than this denies the call (fail closed)
    # A hook still running this long past its budget cannot be interrupted (C code): its
    # gateway worker is replaced, and the call answers -32018
    hook_grace_ms: float = 500.0
    snapshot_interval: float = 2.0  # seconds between plugin state snapshots
    # [plugins.config.NAME]: the plugin's own table; "mode" ("enforce" | "permissive")
    # and "budget_ms" are read by the gateway, everything else by the plugin
    config: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


class AuditSection(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The tamper-evident audit log, written by the audit process alone."""

    dir: str = ""  # default: <state_dir>/audit
    # "batch": a response waits for its record's group fsync (default); "always": every
    # record is fsynced on its own; "never": written, not fsynced, responses do not wait
    fsync: Literal["always", "batch", "never"] = "batch"
    arguments: Literal["full", "digest"] = "full"  # "digest": keep only sha256 of arguments
    # LLM prompts and completions: "digest" (sha256 and size), "full" (the text), "none"
    llm_content: Literal["full", "digest", "none"] = "digest"
    # A2A messages and replies: "digest" (sha256 and size), "full" (the parts), "none"
    a2a_content: Literal["full", "digest", "none"] = "digest"
    timeout: float = 10.0  # a call whose record is not durable by then fails closed (-32017)
    buffer: int = 10000  # records a gateway worker holds unacknowledged before calls wait
    rotate_bytes: int = 64 << 20  # start a new file past this size ...
    rotate_seconds: float = 86400.0  # ... or this age
    checkpoint_records: int = 1000  # a signed checkpoint every this many records ...
    checkpoint_seconds: float = 10.0  # ... or this often, when records were added
    ship_dir: str = ""  # also append each checkpoint to <ship_dir>/checkpoints.jsonl
    ship_command: list[str] = msgspec.field(default_factory=list)  # checkpoint on stdin


class MetricsSection(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Prometheus metrics over HTTP, from every process of the daemon."""

    listen: str = "127.0.0.1:9464"  # loopback only by default; "" = off; port 0 = any


class Config(_Section, forbid_unknown_fields=True, kw_only=True, frozen=True):
    daemon: DaemonSection = msgspec.field(default_factory=DaemonSection)
    control: ControlSection = msgspec.field(default_factory=ControlSection)
    supervision: SupervisionSection = msgspec.field(default_factory=SupervisionSection)
    listen: ListenSection = msgspec.field(default_factory=ListenSection)
    gateway: GatewaySection = msgspec.field(default_factory=GatewaySection)
    roles: dict[str, RoleSection] = msgspec.field(default_factory=dict)
    agents: dict[str, AgentSection] = msgspec.field(default_factory=dict)
    # upstream workers, the audit process and the metrics listener take their settings
    # only when they start
    upstreams: Annotated[dict[str, UpstreamSection], FIXED] = msgspec.field(default_factory=dict)
    plugins: PluginsSection = msgspec.field(default_factory=PluginsSection)
    audit: Annotated[AuditSection, FIXED] = msgspec.field(default_factory=AuditSection)
    metrics: Annotated[MetricsSection, FIXED] = msgspec.field(default_factory=MetricsSection)
    llm: LlmSection = msgspec.field(default_factory=LlmSection)  # the AI gateway's providers
    a2a: A2aSection = msgspec.field(default_factory=A2aSection)  # the agent gateway's peers


@dataclass(frozen=True)
class Settings:
    """A validated config plus the paths derived from it and where it came from."""

    config: Config
    source: Path | None  # None: built-in defaults
    state_dir: Path
    runtime_dir: Path
    control_endpoint: str
    bus_endpoint: str

    @property
    def audit_dir(self) -> Path:
        d = self.config.audit.dir
        return Path(d).expanduser().absolute() if d else self.state_dir / "audit"

    @property
    def audit_endpoint(self) -> str:
        return f"ipc://{self.runtime_dir}/audit.sock"

    def in_force(self, key: str, raw: Any) -> Any:
        """A key's value as the daemon uses it: resolved, for the paths and endpoints the
        config may leave to a default (``raw``: the key's value in the file)."""
        resolved = {"daemon.state_dir": self.state_dir, "daemon.runtime_dir": self.runtime_dir,
                    "control.endpoint": self.control_endpoint,
                    "supervision.bus_endpoint": self.bus_endpoint}
        return resolved.get(key, raw)

    @property
    def control_file(self) -> Path:
        """Where the master publishes its control endpoint and token for the CLI."""
        return self.state_dir / "control.json"


def default_state_dir() -> Path:
    if os.environ.get("STATE_DIRECTORY"):  # systemd StateDirectory=
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/workingagents")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "workingagents"


def config_path(explicit: str | None) -> Path | None:
    """--config, then $WORKINGAGENTS_CONFIG, then the system file if present, else None."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("WORKINGAGENTS_CONFIG")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def locate_state_dir(explicit: str | None = None) -> Path:
    """The state dir, reading only that key: the CLI must find a running daemon even when
    the config file on disk is broken (the daemon is the one to refuse it at reload)."""
    try:
        return load(explicit).state_dir
    except ConfigError as exc:
        path = config_path(explicit)
        try:
            raw = tomllib.loads(path.read_text()) if path else {}
        except (OSError, ValueError):
            raise exc from None  # unreadable: the one-line error says which file and why
        value = raw.get("daemon", {}).get("state_dir") if isinstance(raw, dict) else None
        if not isinstance(value, str) or not value:
            return default_state_dir().absolute()
        return Path(value).expanduser().absolute()


def load(explicit: str | None = None) -> Settings:
    path = config_path(explicit)
    if path is None:
        return settle(with_agents_dir(Config(), None), None)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        config = msgspec.toml.decode(raw, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {validation_message(str(exc))}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return settle(with_agents_dir(config, path), path)


def with_agents_dir(config: Config, path: Path | None) -> Config:
    """The config plus the agents of agents.d/*.toml (`workingagents agents add`)."""
    try:
        extra = agents_dir.read(agents_dir.location(path, default_state_dir()))
    except agents_dir.AgentsDirError as exc:
        raise ConfigError(str(exc)) from None
    for name, (agent, file) in extra.items():
        if name in config.agents:
            raise ConfigError(f"{file}: key agents.{name}: agent {name} is also defined in "
                              f"{path}")

        def refuse(key: str, expected: str, got: object, file: Path = file) -> ConfigError:
            return ConfigError(f"{file}: key {key}: expected {expected}, got {got!r}")

        _check_agent(config, name, agent, refuse)  # errors name the file in agents.d
    if not extra:
        return config
    agents = {**config.agents, **{name: agent for name, (agent, _) in extra.items()}}
    return msgspec.structs.replace(config, agents=agents)


def validation_message(msg: str, prefix: str = "") -> str:
    """msgspec says "... - at `$.daemon.gateway_workers`"; lead with the key instead
    (``prefix``: where the validated table sits, e.g. "plugins.config.NAME")."""
    text, sep, where = msg.rpartition(" - at ")
    if not sep:
        return f"key {prefix}: {msg}" if prefix else msg
    key = ".".join(filter(None, (prefix, where.strip("`").removeprefix("$").lstrip("."))))
    return f"key {key or '(top level)'}: {text}"


def settle(config: Config, source: Path | None) -> Settings:
    """Check cross-field rules and derive paths; raises ConfigError."""
    where = str(source) if source else "built-in defaults"
    d, s = config.daemon, config.supervision

    def refuse(key: str, expected: str, got: object) -> ConfigError:
        return ConfigError(f"{where}: key {key}: expected {expected}, got {got!r}")

    if not 1 <= d.gateway_workers <= 64:
        raise refuse("daemon.gateway_workers", "an integer from 1 to 64", d.gateway_workers)
    if s.max_restarts < 0:
        raise refuse("supervision.max_restarts", "an integer >= 0", s.max_restarts)
    for key in ("max_seconds", "start_timeout", "heartbeat_interval", "heartbeat_timeout"):
        if getattr(s, key) <= 0:
            raise refuse(f"supervision.{key}", "a number > 0", getattr(s, key))
    for key in ("shutdown_timeout", "abort_grace", "backoff_initial", "backoff_max"):
        if getattr(s, key) < 0:
            raise refuse(f"supervision.{key}", "a number >= 0", getattr(s, key))
    if s.heartbeat_timeout < 2 * s.heartbeat_interval:
        raise refuse(
            "supervision.heartbeat_timeout",
            f"at least twice heartbeat_interval ({2 * s.heartbeat_interval})",
            s.heartbeat_timeout,
        )

    _check_gateway(config, refuse)
    _check_audit(config, refuse)
    llm_settings.check(config.llm, refuse)
    a2a_settings.check(config.a2a, config.upstreams, refuse)
    state_dir = Path(d.state_dir).expanduser() if d.state_dir else default_state_dir()
    if d.runtime_dir:
        runtime_dir = Path(d.runtime_dir).expanduser()
    elif os.environ.get("RUNTIME_DIRECTORY"):  # systemd RuntimeDirectory=
        runtime_dir = Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    else:
        runtime_dir = state_dir / "run"
    control = config.control.endpoint or f"ipc://{runtime_dir}/control.sock"
    bus = s.bus_endpoint or f"ipc://{runtime_dir}/bus.sock"
    for key, endpoint in (("control.endpoint", control), ("supervision.bus_endpoint", bus)):
        _check_endpoint(where, key, endpoint)
    return Settings(config, source, state_dir.absolute(), runtime_dir.absolute(), control, bus)


def _check_endpoint(where: str, key: str, endpoint: str) -> None:
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("ipc", "tcp"):
        raise ConfigError(f"{where}: key {key}: expected ipc://PATH or tcp://HOST:PORT, "
                          f"got {endpoint!r}")
    if scheme == "ipc" and len(rest.encode()) > IPC_PATH_MAX:
        raise ConfigError(
            f"{where}: key {key}: ipc path is {len(rest.encode())} bytes, the limit is "
            f"{IPC_PATH_MAX}; set daemon.runtime_dir to a shorter directory"
        )


def _check_gateway(config: Config, refuse: Any) -> None:
    listen, gateway = config.listen, config.gateway
    if listen.tcp:
        host, sep, port = listen.tcp.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise refuse("listen.tcp", "HOST:PORT (port 0 picks a free one)", listen.tcp)
    if listen.http:
        host, sep, port = listen.http.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise refuse("listen.http", 'HOST:PORT (port 0 picks a free one), or "" for off',
                         listen.http)
    if bool(listen.tls_cert) != bool(listen.tls_key):
        raise refuse("listen.tls_cert", "tls_cert and tls_key both set (HTTPS) or both "
                     "empty", listen.tls_cert or listen.tls_key)
    for origin in listen.http_origins:
        if not origin.startswith(("http://", "https://")) or origin.endswith("/"):
            raise refuse("listen.http_origins", 'origins like "https://app.example.com" '
                         'or "http://localhost:*" (scheme://host[:port], no path)', origin)
    for key in ("zmq", "zmq_curve"):
        address = getattr(listen, key)
        if address and not address.startswith(("tcp://", "ipc://")):
            raise refuse(f"listen.{key}", "tcp://HOST:PORT or ipc://PATH", address)
    for key in ("max_message_bytes", "max_inflight_per_connection", "max_inflight_per_worker",
                "max_pending_bytes"):
        if getattr(listen, key) < 1:
            raise refuse(f"listen.{key}", "an integer >= 1", getattr(listen, key))
    for key in ("idle_timeout", "line_timeout"):
        if getattr(listen, key) <= 0:
            raise refuse(f"listen.{key}", "a number > 0", getattr(listen, key))
    if gateway.call_timeout <= 0:
        raise refuse("gateway.call_timeout", "a number > 0", gateway.call_timeout)
    for tool, seconds in gateway.tool_timeouts.items():
        if seconds <= 0:
            raise refuse(f"gateway.tool_timeouts.{tool}", "a number > 0", seconds)
    for name, table in config.plugins.config.items():
        if table.get("mode", "enforce") not in ("enforce", "permissive"):
            raise refuse(f"plugins.config.{name}.mode", '"enforce" or "permissive"',
                         table.get("mode"))
    if config.plugins.budget_ms <= 0 or config.plugins.snapshot_interval <= 0:
        raise refuse("plugins.budget_ms", "budget_ms and snapshot_interval > 0",
                     config.plugins.budget_ms)
    if config.plugins.hook_grace_ms <= 0:
        raise refuse("plugins.hook_grace_ms", "a number > 0", config.plugins.hook_grace_ms)
    if gateway.quarantine_strikes < 1:
        raise refuse("gateway.quarantine_strikes", "an integer >= 1",
                     gateway.quarantine_strikes)
    for key in ("quarantine_window", "quarantine_seconds", "quarantine_max_seconds"):
        if getattr(gateway, key) <= 0:
            raise refuse(f"gateway.{key}", "a number > 0", getattr(gateway, key))
    for name, upstream in config.upstreams.items():
        # <name>__<tool> must split one way only: "a_" + "__b" and "a" + "___b" would
        # both be "a___b", and a look-alike name (non-ASCII) would fool a reader.
        if not (name.isascii() and name.replace("-", "").replace("_", "").isalnum()) \
                or "__" in name or name.endswith("_"):
            raise refuse(f"upstreams.{name}", "an ASCII name of letters, digits, - and _, "
                         "without '__' and not ending in '_' (tools are named "
                         "<name>__<tool>)", name)
        _check_upstream_transport(name, upstream, refuse)
        if upstream.protocol not in UPSTREAM_PROTOCOLS:
            raise refuse(f"upstreams.{name}.protocol", " or ".join(
                f'"{p}"' for p in UPSTREAM_PROTOCOLS), upstream.protocol)
        if upstream.prefix not in (None, ""):
            raise refuse(f"upstreams.{name}.prefix", '"" (bare names) or no key (names '
                         f'are {name}__<tool>)', upstream.prefix)
        for var, secret in upstream.secret_env.items():  # names only: never a value
            if not secret_env.NAME.fullmatch(secret):
                raise refuse(f"upstreams.{name}.secret_env.{var}", "the name of an "
                             "environment variable or credential", secret)
            if var in upstream.env:
                raise refuse(f"upstreams.{name}.env.{var}", "a variable set in env or "
                             "secret_env, not both", "<hidden>")
    bare = [name for name, upstream in config.upstreams.items() if upstream.prefix == ""]
    if len(bare) > 1:  # which server would a bare name be?
        raise refuse(f"upstreams.{bare[1]}.prefix", '"" on one upstream at most',
                     f'"" on upstreams {", ".join(bare)}')
    keys: dict[str, str] = {}
    for name, agent in config.agents.items():
        _check_agent(config, name, agent, refuse)
        if agent.curve_public_key in keys:  # which agent would the key be?
            raise refuse(f"agents.{name}.curve_public_key", "a key no other agent has",
                         f"the key of agents.{keys[agent.curve_public_key]}")
        if agent.curve_public_key:
            keys[agent.curve_public_key] = name


def _check_upstream_transport(name: str, upstream: UpstreamSection, refuse: Any) -> None:
    if bool(upstream.command) == bool(upstream.url):
        raise refuse(f"upstreams.{name}", "exactly one of command (stdio) and url "
                     "(Streamable HTTP)", "both" if upstream.url else "neither")
    if upstream.command and not all(upstream.command):
        raise refuse(f"upstreams.{name}.command", "a non-empty list of strings",
                     upstream.command)
    if upstream.url:
        scheme, sep, rest = upstream.url.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or rest[0] in "/?#":
            # not echoed: a URL may carry credentials (user:password@host)
            raise refuse(f"upstreams.{name}.url", "an http:// or https:// URL", "<hidden>")
        if upstream.secret_env or upstream.env or upstream.cwd:
            raise refuse(f"upstreams.{name}", "env, secret_env and cwd only with command "
                         "(an HTTP upstream takes headers_env)", "url with a process key")
    elif upstream.headers_env:
        raise refuse(f"upstreams.{name}.headers_env", "headers only with url (a stdio "
                     "upstream takes secret_env)", "command with headers_env")
    for header, secret in upstream.headers_env.items():  # names only: never a value
        if not _HEADER_NAME.fullmatch(header):
            raise refuse(f"upstreams.{name}.headers_env", "HTTP header names", header)
        if not secret_env.NAME.fullmatch(secret):
            raise refuse(f"upstreams.{name}.headers_env.{header}", "the name of an "
                         "environment variable or credential", secret)
    if upstream.timeout <= 0:
        raise refuse(f"upstreams.{name}.timeout", "a number > 0", upstream.timeout)


def _check_agent(config: Config, name: str, agent: AgentSection, refuse: Any) -> None:
    if not 1 <= len(name.encode()) <= MAX_AGENT_NAME_BYTES:  # it rides in every CALL envelope
        raise refuse(f"agents.{name[:40]}", f"a name of 1 to {MAX_AGENT_NAME_BYTES} bytes",
                     f"<{len(name.encode())} bytes>")
    if not agent.token_sha256 and not agent.curve_public_key:
        raise refuse(f"agents.{name}", "token_sha256 or curve_public_key (or both)",
                     "neither")
    digest = agent.token_sha256.lower()
    if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
        raise refuse(f"agents.{name}.token_sha256", "64 hex digits (sha256 of the token)",
                     "<hidden>")
    key = agent.curve_public_key
    if key and not _is_curve_key(key):
        # Not echoed: a secret key pasted here by mistake must not reach a log line.
        raise refuse(f"agents.{name}.curve_public_key", "a Curve public key, 40 characters "
                     "of Z85 (zmq.curve_keypair()[0])", f"<{len(key)} characters>")
    for role in agent.roles:
        if role not in config.roles and role != "admin":
            raise refuse(f"agents.{name}.roles", f"roles defined in [roles.*] "
                         f"(known: {', '.join(sorted(config.roles)) or 'none'})", role)


def _is_curve_key(text: str) -> bool:
    from daemon.ipc.curve import is_public_key  # zmq: imported only when needed

    return is_public_key(text)


def _check_audit(config: Config, refuse: Any) -> None:
    audit = config.audit
    for key in ("timeout", "rotate_seconds", "checkpoint_seconds"):
        if getattr(audit, key) <= 0:
            raise refuse(f"audit.{key}", "a number > 0", getattr(audit, key))
    for key in ("buffer", "rotate_bytes", "checkpoint_records"):
        if getattr(audit, key) < 1:
            raise refuse(f"audit.{key}", "an integer >= 1", getattr(audit, key))
    if config.metrics.listen:
        host, sep, port = config.metrics.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise refuse("metrics.listen", "HOST:PORT (port 0 picks a free one) or \"\"",
                          config.metrics.listen)


def plugin_dirs(settings: Settings) -> list[Path]:
    """The plugin dirs in force: configured, or the bundled ones plus the sysadmin's."""
    if settings.config.plugins.dirs is not None:
        return [Path(d).expanduser() for d in settings.config.plugins.dirs]
    return [*bundled_plugin_dirs()[:1], Path("/etc/workingagents/plugins.d")]


def bundled_plugin_dirs() -> list[Path]:
    """Where the plugins shipped with the daemon are: installed, or in a checkout."""
    here = Path(__file__).resolve().parent.parent
    bundled = [Path(sys.prefix) / "share" / "workingagents" / "plugins", here / "plugins"]
    return [d for d in bundled if d.is_dir()]
