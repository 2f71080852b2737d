"""The AI gateway: the official openai and anthropic SDKs, through the daemon, against
fake providers (real aiohttp servers, tests.fixtures.fake_llm)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.audit_helpers import audit_dir, calls
from tests.conftest import wait_for
from tests.fixtures.fake_llm import FakeLlm
from tests.llm_helpers import (
    anthropic_client,
    anthropic_provider,
    openai_client,
    openai_provider,
    start_llm_daemon,
)


@pytest.fixture
def fake() -> Iterator[FakeLlm]:
    with FakeLlm() as server:
        yield server


def llm_records(daemon) -> list[dict]:
    return calls(audit_dir(daemon.state_dir), "llm")


def test_a_chat_completion_through_the_gateway_reaches_the_provider_with_its_key(
        start_daemon, state_dir, fake):
    d = start_llm_daemon(start_daemon, state_dir, {"fake": openai_provider(fake)})
    client = openai_client(d)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.usage.total_tokens > 0
    path, headers, body = fake.seen[-1]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-provider-key"  # never the agent's token
    assert body["model"] == "gpt-4o-mini"
    record = wait_for(lambda: llm_records(d), 10, "the llm audit record")[-1]
    assert record["agent"] == "alice" and record["model"] == "gpt-4o-mini"
    assert record["provider"] == "fake" and record["outcome"]["status"] == "ok"
    assert record["usage"]["total"] == reply.usage.total_tokens
    assert "request_sha256" in record and "request" not in record  # digest by default
