"""The AI gateway: the official openai and anthropic SDKs, through the daemon, against
fake providers (real aiohttp servers, tests.fixtures.fake_llm)."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.conftest import wait_for
from tests.fixtures.fake_llm import FakeLlm
from tests.llm_helpers import (
    anthropic_client,
    anthropic_provider,
    llm_records,
    openai_client,
    openai_provider,
    start_llm_daemon,
)


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


def test_a_streamed_completion_arrives_chunk_by_chunk_with_usage_when_asked(
        start_daemon, state_dir, fake):
    d = start_llm_daemon(start_daemon, state_dir, {"fake": openai_provider(fake)})
    client = openai_client(d)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream me please"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and
             c.choices[0].delta.content]
    assert "".join(texts) == "echo: stream me please"
    assert len(texts) > 3  # passed on as the provider sent them, not as one piece
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    record = wait_for(lambda: llm_records(d), 10, "the llm audit record")[-1]
    assert record["stream"] is True and record["usage"]["completion"] > 0
    assert "ttft_ms" in record and record["ttft_ms"] <= record["ms"]


def test_a_stream_without_include_usage_gets_no_usage_chunk_but_the_audit_has_usage(
        start_daemon, state_dir, fake):
    d = start_llm_daemon(start_daemon, state_dir, {"fake": openai_provider(fake)})
    chunks = list(openai_client(d).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.choices for c in chunks)  # as the provider would have answered
    assert fake.seen[-1][2]["stream_options"] == {"include_usage": True}  # injected
    record = wait_for(lambda: llm_records(d), 10, "the llm audit record")[-1]
    assert record["usage"]["prompt"] > 0


def test_the_models_list_shows_only_what_the_agents_roles_allow(start_daemon, state_dir,
                                                                 fake):
    d = start_llm_daemon(start_daemon, state_dir, {"fake": openai_provider(fake)})
    alice = sorted(m.id for m in openai_client(d).models.list())
    assert alice == ["gpt-4o-mini", "text-embedding-3-small"]
    bob = sorted(m.id for m in openai_client(d, "bob").models.list())
    assert bob == ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]


def test_a_hidden_model_is_a_404_identical_to_an_unknown_one(start_daemon, state_dir, fake):
    d = start_llm_daemon(start_daemon, state_dir, {"fake": openai_provider(fake)})
    client = openai_client(d)
    errors = []
    for model in ("gpt-4o", "no-such-model"):  # alice may not use gpt-4o; nobody serves the other
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model=model,
                                           messages=[{"role": "user", "content": "x"}])
        errors.append(caught.value.body)
    assert errors[0]["message"].replace("gpt-4o", "M") == \
        errors[1]["message"].replace("no-such-model", "M")
    assert errors[0]["code"] == errors[1]["code"] == "model_not_found"
    assert not any(b and b.get("model") == "gpt-4o" for _p, _h, b in fake.seen)
    denied = wait_for(lambda: [r for r in llm_records(d) if r["model"] == "gpt-4o"], 10,
                      "the record of the hidden model")[-1]
    assert denied["outcome"]["status"] == "denied" and denied["outcome"]["by"] == "roles"


def test_a_wrong_token_is_a_401_the_sdk_reports_as_authentication_error(
        start_daemon, state_dir, fake):
    d = start_llm_daemon(start_daemon, state_dir, {"fake": openai_provider(fake)})
    client = openai.OpenAI(base_url=openai_client(d).base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=str(openai_client(d).base_url).removesuffix("/v1/"),
                            api_key="wrong", max_retries=0).messages.create(
            model="claude-3-5-haiku", max_tokens=10,
            messages=[{"role": "user", "content": "x"}])


def test_tool_calls_and_embeddings_pass_through(start_daemon, state_dir, fake):
    d = start_llm_daemon(start_daemon, state_dir, {"fake": openai_provider(fake)})
    client = openai_client(d)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {
            "name": "get_weather", "parameters": {"type": "object", "properties": {
                "city": {"type": "string"}}}}}])
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and '"Paris"' in call.function.arguments
    vectors = client.embeddings.create(model="text-embedding-3-small", input=["ab", "abcd"])
    assert [v.embedding[0] for v in vectors.data] == [2.0, 4.0]
    assert {r["api"] for r in wait_for(lambda: len(llm_records(d)) >= 2 and llm_records(d),
                                       10, "two records")} == {"chat", "embeddings"}


def test_anthropic_messages_plain_and_streamed_with_x_api_key(start_daemon, state_dir):
    with FakeLlm() as fake:
        d = start_llm_daemon(start_daemon, state_dir, {"claude": anthropic_provider(fake)})
        client = anthropic_client(d, default_headers={"anthropic-beta": "some-feature"})
        reply = client.messages.create(model="claude-3-5-haiku", max_tokens=100,
                                       messages=[{"role": "user", "content": "bonjour"}])
        assert reply.content[0].text == "echo: bonjour"
        assert reply.usage.output_tokens > 0
        sent = fake.seen[-1][1]
        assert sent["x-api-key"] == "sk-provider-key"  # never the agent's token
        assert sent["anthropic-beta"] == "some-feature" and sent["anthropic-version"]
        with client.messages.stream(model="claude-3-5-haiku", max_tokens=100, messages=[
                {"role": "user", "content": "streamed bonjour"}]) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
        assert "".join(pieces) == "echo: streamed bonjour" and len(pieces) > 3
        assert final.usage.output_tokens > 0
        records = wait_for(lambda: len(llm_records(d)) >= 2 and llm_records(d), 10,
                           "two records")
        assert [r["api"] for r in records] == ["messages", "messages"]
        assert records[-1]["stream"] is True and records[-1]["usage"]["completion"] > 0


def test_audit_tail_shows_llm_records_readably(start_daemon, state_dir, fake):
    d = start_llm_daemon(start_daemon, state_dir, {"fake": openai_provider(fake)})
    client = openai_client(d)
    list(client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                        messages=[{"role": "user", "content": "tail me"}]))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": "x"}])
    client.models.list()  # names no model
    wait_for(lambda: len(llm_records(d)) >= 3, 10, "three records")
    lines = d.cli("audit", "tail", "-n", "3").stdout.strip().splitlines()
    assert " llm alice gpt-4o-mini chat stream via fake ok " in lines[0]
    assert " tokens " in lines[0] and "ttft " in lines[0]
    assert " llm alice gpt-4o chat denied by roles" in lines[1]
    assert " llm alice models ok " in lines[2]
