"""Config errors name the file, the key and what was expected; the CLI says it in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import config

CLI = [sys.executable, "-m", "daemon"]


@pytest.mark.parametrize("text, expected", [
    ("[daemon]\ngateway_workers = \"two\"\n",
     "key daemon.gateway_workers: Expected `int`, got `str`"),
    ("[daemon]\ngateway_wrokers = 2\n", "Object contains unknown field `gateway_wrokers`"),
    ("[deamon]\n", "unknown field `deamon`"),
    ("[daemon]\ngateway_workers = 0\n",
     "key daemon.gateway_workers: expected an integer from 1 to 64, got 0"),
    ("[supervision]\nheartbeat_timeout = 1.0\nheartbeat_interval = 1.0\n",
     "key supervision.heartbeat_timeout: expected at least twice heartbeat_interval"),
    ("[supervision]\nbus_endpoint = \"udp://x\"\n",
     "key supervision.bus_endpoint: expected ipc://PATH or tcp://HOST:PORT"),
    ("[daemon]\nlog_level = \"loud\"\n", "key daemon.log_level: Invalid enum value 'loud'"),
    ("[daemon\n", "not valid TOML"),
    ("[llm.providers.x]\nkind = \"bard\"\nbase_url = \"http://h/v1\"\n",
     "key llm.providers[...].kind: Invalid enum value 'bard'"),
    ("[llm.providers.x]\nkind = \"openai\"\nbase_url = \"h/v1\"\n",
     "key llm.providers.x.base_url: expected an http:// or https:// URL"),
    ("[llm.providers.x]\nkind = \"openai\"\nbase_url = \"http://h\"\napi_key = \"sk\"\n",
     "unknown field `api_key`"),  # a key in the TOML itself: refused, *_env names it
    ("[llm.providers.x]\nkind = \"openai\"\nbase_url = \"http://h\"\nmodels = []\n",
     "key llm.providers.x.models: expected a non-empty list of model globs"),
    ("[audit]\nllm_content = \"some\"\n", "key audit.llm_content: Invalid enum value"),
])
def test_bad_config_is_refused_with_file_key_and_expectation(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(str(path))
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_serve_with_a_bad_config_exits_1_with_one_line_on_stderr(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[daemon]\ngateway_workers = \"two\"\n")
    out = subprocess.run([*CLI, "serve", "--config", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert f"{path}: key daemon.gateway_workers" in out.stderr


def test_a_missing_config_file_is_one_clear_line(tmp_path):
    out = subprocess.run([*CLI, "serve", "--config", str(tmp_path / "nope.toml")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "nope.toml: cannot read: No such file or directory" in out.stderr


def test_an_ipc_path_that_is_too_long_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "long.toml"
    path.write_text(f"[daemon]\nruntime_dir = \"/tmp/{'x' * 120}\"\n")
    with pytest.raises(config.ConfigError, match=r"set daemon\.runtime_dir to a shorter"):
        config.load(str(path))


def test_config_resolution_order(tmp_path, monkeypatch):
    env_file = tmp_path / "env.toml"
    env_file.write_text("[daemon]\ngateway_workers = 3\n")
    monkeypatch.setenv("WORKINGAGENTS_CONFIG", str(env_file))
    assert config.load().config.daemon.gateway_workers == 3
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[daemon]\ngateway_workers = 5\n")
    assert config.load(str(explicit)).config.daemon.gateway_workers == 5


def test_systemd_directories_are_the_defaults(monkeypatch):
    monkeypatch.delenv("WORKINGAGENTS_CONFIG", raising=False)
    monkeypatch.setattr(config, "SYSTEM_CONFIG", Path("/nonexistent/wa.toml"))
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/workingagents")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/workingagents")
    s = config.load()
    assert s.source is None
    assert s.state_dir == Path("/var/lib/workingagents")
    assert s.control_endpoint == "ipc:///run/workingagents/control.sock"
    assert s.bus_endpoint == "ipc:///run/workingagents/bus.sock"


def test_the_example_config_in_etc_is_valid():
    example = Path(__file__).parent.parent / "etc" / "workingagents.toml"
    settings = config.load(str(example))
    assert settings.config.daemon.gateway_workers >= 1


def test_the_commented_examples_in_etc_are_valid_when_uncommented(tmp_path):
    import re
    example = (Path(__file__).parent.parent / "etc" / "workingagents.toml").read_text()
    text = re.sub(r"^# (\[|tools|token_sha256|roles|command|env|cwd|tool_timeouts|dirs|mode|"
                  r"agent_rate|agent_burst|ship_dir|ship_command|secret_env|curve_public_key|"
                  r"url|headers_env|timeout|models|request_timeout|kind|base_url|api_key_env|"
                  r"max_retries|accept_card|peers)",
                  r"\1", example,
                  flags=re.M)
    path = tmp_path / "uncommented.toml"
    path.write_text(text)
    settings = config.load(str(path))
    assert list(settings.config.agents) == ["alice", "robot"]
    assert settings.config.upstreams["files"].command[0] == "/usr/bin/python3"
    assert settings.config.upstreams["files"].secret_env == {"FILES_API_KEY": "FILES_API_KEY"}
    assert settings.config.upstreams["search"].headers_env == {
        "Authorization": "SEARCH_MCP_AUTH"}
    assert settings.config.plugins.config["rate_limit"]["mode"] == "permissive"
    assert settings.config.audit.ship_command[0] == "logger"
    assert [p.kind for p in settings.config.llm.providers.values()] == ["openai", "anthropic"]
    assert settings.config.roles["analyst"].models == ["gpt-4o-mini", "claude-*"]
    assert settings.config.a2a.peers["researcher"].url == "http://10.0.0.5:9999"
    assert settings.config.roles["analyst"].peers == ["researcher"]


@pytest.mark.parametrize("command", ["status", "tools", "reload"])
def test_every_client_command_reports_an_unreadable_config_in_one_line(tmp_path, command):
    path = tmp_path / "broken.toml"
    path.write_text("[daemon\n")
    out = subprocess.run([*CLI, command, "--config", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip() == f"Error: {path}: not valid TOML: Expected ']' at the end " \
                                 "of a table declaration (at line 1, column 8)"


def settled(tmp_path: Path, text: str) -> config.Settings:
    path = tmp_path / f"{abs(hash(text))}.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n' + text)
    return config.load(str(path))


def test_the_keys_a_reload_cannot_change_are_marked_beside_them_in_config():
    from daemon.master.fixed_settings import fixed_values

    assert [key for key, _ in fixed_values(config.Config())] == [
        "daemon.state_dir", "daemon.runtime_dir", "control.endpoint",
        "supervision.bus_endpoint", "listen.tcp", "listen.zmq", "listen.zmq_curve",
        "listen.http", "listen.tls_cert", "listen.tls_key",
        "upstreams", "audit", "metrics"]


def test_a_reload_that_moves_a_fixed_endpoint_is_refused_with_its_old_and_new_value(tmp_path):
    from daemon.master.fixed_settings import refusal

    old = settled(tmp_path, '[listen]\ntcp = "127.0.0.1:7700"\n')
    new = settled(tmp_path, '[listen]\ntcp = "127.0.0.1:7800"\n')
    assert refusal(old, new) == ("key listen.tcp: cannot change while running "
                                 "(127.0.0.1:7700 -> 127.0.0.1:7800)")


def test_a_refused_table_names_its_changed_keys_and_never_their_values(tmp_path):
    from daemon.master.fixed_settings import refusal

    old = settled(tmp_path, '[upstreams.gh]\ncommand = ["gh"]\nenv = { TOKEN = "s3cret-1" }\n'
                            '[audit]\nship_command = ["ship", "--key", "k3y-1"]\n')
    new = settled(tmp_path, '[upstreams.gh]\ncommand = ["gh"]\nenv = { TOKEN = "s3cret-2" }\n'
                            '[audit]\nship_command = ["ship", "--key", "k3y-2"]\n')
    why = refusal(old, new)
    assert why == "key upstreams.gh.env.TOKEN, audit.ship_command: cannot change while running"
    assert "s3cret" not in why and "k3y" not in why


def test_a_fixed_key_written_out_as_its_default_is_no_change(tmp_path):
    from daemon.master.fixed_settings import refusal

    old = settled(tmp_path, "")
    new = settled(tmp_path, f'[control]\nendpoint = "{old.control_endpoint}"\n')
    assert refusal(old, new) is None


def test_keys_not_marked_fixed_may_change_at_reload(tmp_path):
    from daemon.master.fixed_settings import refusal

    old = settled(tmp_path, "")
    new = settled(tmp_path, 'gateway_workers = 5\nlog_level = "debug"\n'
                            '[roles.dev]\ntools = ["*"]\n[listen]\nline_timeout = 3.0\n'
                            '[supervision]\nmax_restarts = 9\n')
    assert refusal(old, new) is None


def test_an_agent_name_too_long_for_the_call_envelope_is_refused(tmp_path):
    path = tmp_path / "wa.toml"
    name = "é" * 200  # 400 bytes: a CALL envelope gives the name one length byte
    path.write_text(f'[agents."{name}"]\ntoken_sha256 = "{"a" * 64}"\n')
    with pytest.raises(config.ConfigError) as err:
        config.load(str(path))
    assert "a name of 1 to 255 bytes" in str(err.value) and "<400 bytes>" in str(err.value)


def test_a2a_peers_are_checked_and_a2a_is_a_reserved_upstream_name(tmp_path):
    cases = [
        ('[a2a.peers.x]\nurl = "ftp://x"\n', "key a2a.peers.x.url: expected an http://"),
        ('[a2a.peers."a__b"]\nurl = "http://x"\n', "key a2a.peers.a__b: expected a name"),
        ('[a2a.peers.x]\nurl = "http://x"\nheaders_env = { A = "no way" }\n',
         "key a2a.peers.x.headers_env.A: expected the name"),
        ('[upstreams.a2a]\ncommand = ["x"]\n', "key upstreams.a2a: expected another name"),
        ('[roles.r]\npeers = "x"\n', "peers: Expected `array`"),
        ('[audit]\na2a_content = "some"\n', "key audit.a2a_content"),
    ]
    for text, expected in cases:
        path = tmp_path / "a2a.toml"
        path.write_text(text)
        with pytest.raises(config.ConfigError, match=re.escape(expected)):
            config.load(str(path))
