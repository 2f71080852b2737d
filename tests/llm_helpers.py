"""A daemon in front of fake LLM providers, and SDK clients for it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.audit_helpers import audit_dir, calls
from tests.conftest import BUNDLED, Daemon, wait_for
from tests.fixtures.fake_llm import FakeLlm
from tests.gateway_helpers import TOKENS, gateway_config, listen

KEY_ENV = {"FAKE_OPENAI_KEY": "sk-provider-key", "FAKE_ANTHROPIC_KEY": "sk-provider-key"}


def llm_config(providers: dict[str, dict[str, Any]], plugin_dir: Path | None = None,
               plugins: dict[str, Any] | None = None,
               audit: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    config = gateway_config()
    config["roles.analyst"] = {"tools": ["echo"], "models": ["gpt-4o-mini", "claude-*",
                                                             "text-embedding-*"]}
    config["roles.ops"] = {"tools": ["*"], "models": ["*"]}
    for name, table in providers.items():
        config[f"llm.providers.{name}"] = table
    if plugin_dir is not None:
        config["plugins"] = {"dirs": [str(plugin_dir)], "budget_ms": 500.0,
                             "snapshot_interval": 0.2}
        for name, table in (plugins or {}).items():
            config[f"plugins.config.{name}"] = table
    if audit:
        config["audit"] = audit
    return config


def openai_provider(fake: FakeLlm, models: list[str] | None = None,
                    **more: Any) -> dict[str, Any]:
    return {"kind": "openai", "base_url": fake.url, "api_key_env": "FAKE_OPENAI_KEY",
            "models": models or ["gpt-*", "text-embedding-*"], "timeout": 5.0,
            "max_retries": 1, **more}


def anthropic_provider(fake: FakeLlm, **more: Any) -> dict[str, Any]:
    return {"kind": "anthropic", "base_url": fake.url, "api_key_env": "FAKE_ANTHROPIC_KEY",
            "models": ["claude-*"], "timeout": 5.0, "max_retries": 1, **more}


def start_llm_daemon(start_daemon: Any, state_dir: Path, providers: dict[str, dict[str, Any]],
                     plugins: dict[str, dict[str, Any]] | None = None,
                     audit: dict[str, Any] | None = None) -> Daemon:
    """A daemon with these providers and, if given, these bundled plugins (by name)."""
    plugin_dir = None
    if plugins is not None:
        plugin_dir = state_dir / "plugins"
        plugin_dir.mkdir(mode=0o755, exist_ok=True)
        for name in plugins:
            shutil.copy(BUNDLED / f"{name}.py", plugin_dir / f"{name}.py")
    d: Daemon = start_daemon(extra=llm_config(providers, plugin_dir, plugins, audit),
                             env=KEY_ENV)
    d.wait_ready()
    if plugins:
        wait_for(lambda: set(plugins) <= {p["name"] for p in d.status()["plugins"]["loaded"]},
                 30, f"{list(plugins)} to load")
    return d


def base(daemon: Daemon) -> str:
    return f"http://{listen(daemon)['http']}"


def openai_client(daemon: Daemon, agent: str = "alice", **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=base(daemon) + "/v1", api_key=TOKENS[agent],
                         **{"max_retries": 0, "timeout": 30, **options})


def anthropic_client(daemon: Daemon, agent: str = "alice",
                     **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base(daemon), api_key=TOKENS[agent], max_retries=0,
                               timeout=30, **options)


def llm_records(daemon: Daemon) -> list[dict[str, Any]]:
    """The AI gateway's audit records, oldest first."""
    return calls(audit_dir(daemon.state_dir), "llm")


def last_record(d: Any, count: int = 1) -> dict[str, Any]:
    """The newest of the daemon's LLM audit records, once it has ``count``."""
    return wait_for(lambda: len(llm_records(d)) >= count and llm_records(d), 10,
                    "the llm audit record")[-1]


def still_serves(d: Any, fake: Any) -> None:
    """The fake provider back to answering: the daemon serves a plain request again."""
    fake.mode = "ok"
    reply = openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "user", "content": "still there?"}])
    assert reply.choices[0].message.content == "echo: still there?"


def openai_stream_error(d: Any, content: str) -> openai.APIError:
    """What the openai SDK raises while reading a streamed completion to its end."""
    with pytest.raises(openai.APIError) as caught:
        for _chunk in openai_client(d).chat.completions.create(
                model="gpt-4o-mini", stream=True, messages=[{"role": "user",
                                                            "content": content}]):
            pass
    return caught.value


def anthropic_stream_error(d: Any, content: str) -> anthropic.APIStatusError:
    """What the anthropic SDK raises while reading a streamed message to its end."""
    with pytest.raises(anthropic.APIStatusError) as caught, anthropic_client(
            d).messages.stream(model="claude-3-5-haiku", max_tokens=50, messages=[
                {"role": "user", "content": content}]) as events:
        for _event in events:
            pass
    return caught.value
