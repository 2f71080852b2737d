"""The AI gateway as a demanding developer and an attacker try it: providers that
misbehave (tests.fixtures.hostile_llm), bodies and headers that are wrong on purpose,
and attempts to get around budgets and roles, through the official SDKs and raw HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.audit_helpers import audit_dir
from tests.conftest import wait_for
from tests.fixtures.hostile_llm import HostileLlm
from tests.gateway_helpers import TOKENS, listen
from tests.llm_helpers import (
    anthropic_client,
    anthropic_provider,
    anthropic_stream_error,
    base,
    last_record,
    llm_records,
    openai_client,
    openai_provider,
    openai_stream_error,
    start_llm_daemon,
    still_serves,
)

KEY = "sk-provider-key"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def hostile() -> Iterator[HostileLlm]:
    with HostileLlm() as server:
        yield server


def both(start_daemon: Any, state_dir: Any, fake: HostileLlm, **plugins: Any) -> Any:
    return start_llm_daemon(start_daemon, state_dir, {
        "oa": openai_provider(fake, timeout=2.0, max_retries=0),
        "an": anthropic_provider(fake, timeout=2.0, max_retries=0)}, plugins or None)




def never_leaks_the_key(d: Any) -> None:
    assert KEY not in d.log()
    for path in audit_dir(d.state_dir).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in str(d.status())


# -- a provider's failure never looks like a complete answer ---------------------------


def test_a_stream_cut_off_cleanly_halfway_ends_with_an_error_not_a_clean_end(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "cut-clean"
    assert "Provider failure" in openai_stream_error(d, "long").message
    assert last_record(d)["outcome"]["status"] == "provider_error"
    assert "Provider failure" in str(anthropic_stream_error(d, "long"))
    assert last_record(d, 2)["outcome"]["status"] == "provider_error"
    still_serves(d, hostile)


def test_a_finished_stream_without_its_terminal_event_still_ends_cleanly(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "no-done"  # finish_reason and stop_reason came: the answer is whole
    chunks = list(openai_client(d).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "say: whole"}],
        stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "whole"
    with anthropic_client(d).messages.stream(model="claude-3-5-haiku", max_tokens=50,
                                             messages=[{"role": "user",
                                                        "content": "say: whole"}]) as events:
        assert events.get_final_text() == "whole"
    assert last_record(d, 2)["outcome"]["status"] == "ok"


def test_a_stream_whose_connection_drops_halfway_ends_with_an_error_and_is_audited_so(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "truncated"
    openai_stream_error(d, "something long")
    assert last_record(d)["outcome"]["status"] == "provider_error"
    still_serves(d, hostile)


def test_a_200_with_an_error_body_is_a_provider_failure_not_an_answer(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "error-200"
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert caught.value.status_code == 502
    assert "upstream model crashed" in caught.value.message
    assert last_record(d)["outcome"]["status"] == "provider_error"
    with pytest.raises(anthropic.APIStatusError) as failed:
        anthropic_client(d).messages.create(model="claude-3-5-haiku", max_tokens=5,
                                            messages=HI)
    assert failed.value.status_code == 502
    assert last_record(d, 2)["outcome"]["status"] == "provider_error"
    still_serves(d, hostile)


def test_an_error_event_inside_a_provider_stream_reaches_the_client_and_the_audit(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "error-200"
    openai_stream_error(d, "long")
    record = last_record(d)
    assert record["outcome"]["status"] == "provider_error"
    assert "model crashed" in record["outcome"]["message"]
    anthropic_stream_error(d, "hi")
    assert last_record(d, 2)["outcome"]["status"] == "provider_error"


def test_a_stream_answered_with_a_whole_json_body_is_not_passed_off_as_a_stream(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "wrong-type"
    assert "Provider failure" in openai_stream_error(d, "hi").message
    assert last_record(d)["outcome"]["status"] == "provider_error"


def test_a_provider_that_stalls_after_its_headers_is_a_provider_timeout(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "stall"
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert caught.value.status_code in (502, 504)
    assert "Provider failure" in caught.value.message
    assert "600" not in caught.value.message  # not the whole-request timeout: the provider's
    record = last_record(d)
    assert record["outcome"]["status"] == "provider_error" and record["provider"] == "oa"
    still_serves(d, hostile)


def test_a_provider_error_that_quotes_the_key_never_shows_it_to_the_agent(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "echo-key"
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert KEY not in caught.value.response.text
    assert "unsupported parameter" in caught.value.message
    with pytest.raises(anthropic.BadRequestError) as failed:
        anthropic_client(d).messages.create(model="claude-3-5-haiku", max_tokens=5,
                                            messages=HI)
    assert KEY not in failed.value.response.text
    last_record(d, 2)
    never_leaks_the_key(d)


def test_a_provider_that_refuses_the_key_is_a_502_that_leaks_nothing(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "401"
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert caught.value.status_code == 502 and KEY not in caught.value.response.text
    assert last_record(d)["outcome"]["status"] == "provider_error"
    never_leaks_the_key(d)


def test_a_huge_answer_arrives_whole_and_the_gateway_keeps_serving(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "huge"
    reply = openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert len(reply.choices[0].message.content or "") == hostile.huge
    still_serves(d, hostile)


# -- bad input: a clear error in the API's own shape, and everyone else goes on ---------


def test_wrongly_typed_fields_get_a_clear_400_in_each_apis_shape(start_daemon, state_dir,
                                                                hostile):
    d = both(start_daemon, state_dir, hostile)
    headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
    for body in ({"model": 5, "messages": HI}, {"model": ["gpt-4o-mini"]},
                 {"model": "", "messages": HI}, {"model": None}):
        reply = httpx.post(base(d) + "/v1/chat/completions", json=body, headers=headers,
                           timeout=10)
        assert reply.status_code == 400, body
        assert reply.json()["error"]["type"] == "invalid_request_error"
        assert "model" in reply.json()["error"]["message"]
        reply = httpx.post(base(d) + "/v1/messages", json=body, timeout=10,
                           headers={"x-api-key": TOKENS["alice"]})
        assert reply.status_code == 400
        assert reply.json()["type"] == "error"
        assert reply.json()["error"]["type"] == "invalid_request_error"
    still_serves(d, hostile)


def test_a_body_over_the_size_cap_is_a_413_in_each_apis_shape(start_daemon, state_dir,
                                                              hostile):
    d = both(start_daemon, state_dir, hostile)
    big = [{"role": "user", "content": "x" * (2 << 20)}]
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=big)
    assert caught.value.status_code == 413
    assert caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(anthropic.APIStatusError) as failed:
        anthropic_client(d).messages.create(model="claude-3-5-haiku", max_tokens=5,
                                            messages=big)
    assert failed.value.status_code == 413
    assert failed.value.body["error"]["type"] == "request_too_large"
    assert "max_message_bytes" in failed.value.body["error"]["message"]
    still_serves(d, hostile)


def test_headers_with_bare_cr_or_lf_are_refused_and_the_gateway_keeps_serving(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    host, port = listen(d)["http"].rsplit(":", 1)
    for header in (b"anthropic-beta: a\rInjected: yes", b"x-api-key: a\nb: c\r\nX: y"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n" + header +
                         b"\r\nContent-Length: 2\r\n\r\n{}")
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer[:20], answer
    still_serves(d, hostile)
    assert all(s[1].get("Injected") is None for s in hostile.seen)


def test_a_token_in_the_wrong_header_or_a_provider_key_as_token_is_a_401(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    for headers in ({"api-key": TOKENS["alice"]}, {"Authorization": TOKENS["alice"]},
                    {"Authorization": f"Basic {TOKENS['alice']}"},
                    {"Authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
        reply = httpx.post(base(d) + "/v1/chat/completions", headers=headers, timeout=10,
                           json={"model": "gpt-4o-mini", "messages": HI})
        assert reply.status_code == 401, headers
        assert reply.json()["error"]["message"]
    assert hostile.seen == []  # nothing reached the provider
    # the agent's own x-api-key never travels on (the gateway's key replaces it)
    anthropic_client(d).messages.create(model="claude-3-5-haiku", max_tokens=5, messages=HI)
    assert hostile.seen[-1][1]["x-api-key"] == KEY


# -- budgets cannot be bypassed, and refuse before sending -------------------------------


BUDGET = {"budgets": {"tokens_per_minute": 1000}}


def refused_before_sending(d: Any, fake: HostileLlm, send: Any) -> None:
    seen = len(fake.seen)
    with pytest.raises((openai.RateLimitError, anthropic.RateLimitError)):
        send()
    assert len(fake.seen) == seen


def test_a_budget_counts_every_one_of_n_choices(start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile, **BUDGET)
    refused_before_sending(d, hostile, lambda: openai_client(d).chat.completions.create(
        model="gpt-4o-mini", messages=HI, max_tokens=400, n=4))


def test_a_budget_counts_the_larger_of_max_tokens_and_max_completion_tokens(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile, **BUDGET)
    refused_before_sending(d, hostile, lambda: openai_client(d).chat.completions.create(
        model="gpt-4o-mini", messages=HI, max_tokens=5, max_completion_tokens=5000))


def test_a_budget_counts_prompt_text_outside_message_contents(start_daemon, state_dir,
                                                               hostile):
    d = both(start_daemon, state_dir, hostile, **BUDGET)
    bulky = "lorem ipsum " * 1000  # ~3000 tokens, in a tool definition and tool call args
    tools = [{"type": "function", "function": {"name": "f", "description": bulky,
                                               "parameters": {"type": "object"}}}]
    refused_before_sending(d, hostile, lambda: openai_client(d).chat.completions.create(
        model="gpt-4o-mini", messages=HI, max_tokens=5, tools=tools))
    calls = [{"role": "assistant", "content": None, "tool_calls": [{
        "id": "c", "type": "function", "function": {"name": "f", "arguments": bulky}}]},
        {"role": "tool", "tool_call_id": "c", "content": "ok"}, *HI]
    refused_before_sending(d, hostile, lambda: openai_client(d).chat.completions.create(
        model="gpt-4o-mini", messages=calls, max_tokens=5))


def test_a_budget_counts_embeddings_given_as_token_arrays(start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile, budgets={"tokens_per_minute": 2000})
    refused_before_sending(d, hostile, lambda: openai_client(d).embeddings.create(
        model="text-embedding-3-small", input=[[7] * 3000]))


def test_a_budget_refuses_anthropic_messages_and_streams_before_sending(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile, **BUDGET)
    refused_before_sending(d, hostile, lambda: anthropic_client(d).messages.create(
        model="claude-3-5-haiku", max_tokens=2000, messages=HI))
    refused_before_sending(d, hostile, lambda: openai_client(d).chat.completions.create(
        model="gpt-4o-mini", messages=HI, max_tokens=2000, stream=True))


def test_an_answer_without_usage_keeps_its_reservation_charged(start_daemon, state_dir,
                                                                hostile):
    d = both(start_daemon, state_dir, hostile, **BUDGET)
    hostile.mode = "no-usage"
    client = openai_client(d)
    client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=600)
    refused_before_sending(d, hostile, lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=HI, max_tokens=600))
    bob = openai_client(d, "bob")  # streamed: the same, on a budget of its own
    list(bob.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=600,
                                     stream=True))
    refused_before_sending(d, hostile, lambda: bob.chat.completions.create(
        model="gpt-4o-mini", messages=HI, max_tokens=600, stream=True))


# -- roles' models cannot be bypassed ----------------------------------------------------


@pytest.mark.parametrize("model", ["GPT-4O-MINI", "gpt-4o-mini ", "openai/gpt-4o-mini",
                                   "gpt-4o-mini*", "gpt-4o-mini\n", "gpt-4o",
                                   "gpt-4o-mini-2024-07-18"])
def test_a_model_the_roles_do_not_name_exactly_is_a_404_on_every_route(
        start_daemon, state_dir, hostile, model):
    d = start_llm_daemon(start_daemon, state_dir, {
        "oa": openai_provider(hostile, models=["*"]),
        "an": anthropic_provider(hostile, models=["*"])})
    with pytest.raises(openai.NotFoundError):
        openai_client(d).chat.completions.create(model=model, messages=HI)
    with pytest.raises(openai.NotFoundError):
        openai_client(d).embeddings.create(model=model, input="x")
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client(d).messages.create(model=model, max_tokens=5, messages=HI)
    assert hostile.seen == []
    records = wait_for(lambda: len(llm_records(d)) >= 3 and llm_records(d), 10, "records")
    assert all(r["outcome"] == {"status": "denied", "by": "roles", "http": 404}
               for r in records)


def test_async_sdk_clients_stream_through_the_gateway_side_by_side(start_daemon, state_dir,
                                                                   hostile):
    d = both(start_daemon, state_dir, hostile)

    async def run() -> list[str]:
        oa = openai.AsyncOpenAI(base_url=base(d) + "/v1", api_key=TOKENS["alice"],
                                max_retries=0, timeout=30)
        an = anthropic.AsyncAnthropic(base_url=base(d), api_key=TOKENS["alice"],
                                      max_retries=0, timeout=30)

        async def chat(i: int) -> str:
            stream = await oa.chat.completions.create(
                model="gpt-4o-mini", stream=True, messages=[{"role": "user",
                                                             "content": f"say: n{i}"}],
                stream_options={"include_usage": True}, logprobs=False,
                response_format={"type": "text"}, extra_body={"unknown_field": 1},
                extra_headers={"OpenAI-Beta": "assistants=v2"})
            return "".join([c.choices[0].delta.content or "" async for c in stream
                            if c.choices])

        async def claude(i: int) -> str:
            reply = await an.messages.create(model="claude-3-5-haiku", max_tokens=20,
                                             messages=[{"role": "user",
                                                        "content": f"say: a{i}"}])
            return reply.content[0].text  # type: ignore[union-attr]
        try:
            return list(await asyncio.gather(*[chat(i) for i in range(4)],
                                             *[claude(i) for i in range(4)]))
        finally:
            await oa.close()
            await an.close()
    assert asyncio.run(run()) == ["n0", "n1", "n2", "n3", "a0", "a1", "a2", "a3"]
    assert hostile.seen[0][2].get("unknown_field") == 1 or any(
        s[2].get("unknown_field") == 1 for s in hostile.seen)


def test_a_model_name_longer_than_256_characters_is_a_clear_400(start_daemon, state_dir,
                                                                 hostile):
    d = both(start_daemon, state_dir, hostile)
    for name in ("gpt-" + "x" * 300, "claude-" + "y" * 100_000):
        with pytest.raises(openai.BadRequestError) as caught:
            openai_client(d, "bob").chat.completions.create(model=name, messages=HI)
        assert "at most 256 characters" in caught.value.message
        with pytest.raises(anthropic.BadRequestError):
            anthropic_client(d, "bob").messages.create(model=name, max_tokens=5,
                                                       messages=HI)
    assert hostile.seen == []
    still_serves(d, hostile)


def test_a_stream_that_never_ends_its_event_is_cut_with_an_error_not_buffered_forever(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode, hostile.huge = "endless", 24 << 20
    assert "Provider failure" in openai_stream_error(d, "hi").message
    outcome = last_record(d)["outcome"]
    assert outcome["status"] == "provider_error" and "more than 8 MiB" in outcome["message"]
    still_serves(d, hostile)


def test_made_up_model_names_the_provider_does_not_know_stay_out_of_the_metrics(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "strict"
    for i in range(3):
        with pytest.raises(openai.NotFoundError):
            openai_client(d, "bob").chat.completions.create(model=f"gpt-made-up-{i}",
                                                            messages=HI)
    openai_client(d, "bob").chat.completions.create(model="gpt-4o", messages=HI)

    def scraped() -> str:
        return httpx.get(f"http://{listen(d)['metrics']}/metrics", timeout=5).text
    text = wait_for(lambda: 'model="gpt-4o"' in scraped() and scraped(), 10, "the metrics")
    assert "made-up" not in text
    assert 'workingagents_llm_requests_total{agent="bob",model="unknown"' in text


def test_a_stream_flag_that_is_not_a_boolean_is_a_clear_400_not_a_stream_read_as_json(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    for value in ("true", 1):
        reply = httpx.post(base(d) + "/v1/chat/completions", timeout=10,
                           headers={"Authorization": f"Bearer {TOKENS['alice']}"},
                           json={"model": "gpt-4o-mini", "messages": HI, "stream": value})
        assert reply.status_code == 400
        assert reply.json()["error"]["message"] == "stream: a boolean is expected"
    assert hostile.seen == []  # never sent: a lenient provider would have streamed it


def test_models_retrieve_shows_an_allowed_model_and_404s_a_hidden_one_in_both_sdks(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    assert openai_client(d).models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    assert anthropic_client(d).models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    for model in ("gpt-4o", "nope", "a/b", "x" * 1000):  # hidden, unknown, odd
        with pytest.raises(openai.NotFoundError):
            openai_client(d).models.retrieve(model)
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client(d).models.retrieve("gpt-4o")


def test_an_api_the_gateway_does_not_serve_is_a_404_that_says_what_is_served(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client(d).responses.create(model="gpt-4o-mini", input="hi")
    assert "POST /v1/responses is not served" in caught.value.message
    assert "/v1/chat/completions" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        openai_client(d).completions.create(model="gpt-4o-mini", prompt="hi")
    reply = httpx.post(base(d) + "/v1/responses", json={}, timeout=10)
    assert reply.status_code == 401  # the token first, like every route
    assert hostile.seen == []


def test_a_provider_error_event_that_quotes_the_key_never_shows_it(start_daemon, state_dir,
                                                                   hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "error-200"
    message = openai_stream_error(d, "hi").message
    assert "model crashed" in message and KEY not in message
    assert "model crashed" in last_record(d)["outcome"]["message"]
    never_leaks_the_key(d)


def test_a_request_refused_before_the_guardrails_keeps_only_its_digest_in_full_mode(
        start_daemon, state_dir, hostile):
    d = start_llm_daemon(start_daemon, state_dir, {
        "oa": openai_provider(hostile)}, {"secrets": {}}, audit={"llm_content": "full"})
    secret = [{"role": "user", "content": "my key AKIAABCDEFGHIJKLMNOP"}]
    with pytest.raises(openai.NotFoundError):  # a model the roles hide
        openai_client(d).chat.completions.create(model="gpt-4o", messages=secret)
    with pytest.raises(openai.BadRequestError):  # refused before the chain ran
        openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=secret,
                                                 extra_body={"stream": "yes"})
    openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=secret)
    records = wait_for(lambda: len(llm_records(d)) >= 3 and llm_records(d), 10, "records")
    assert "AKIA" not in str(records)
    assert all(r["request_sha256"] for r in records)
    assert "request" not in records[0] and "request" not in records[1]
    assert "[secret]" in str(records[2]["request"])  # as it left the guardrails


def test_a_provider_that_redirects_elsewhere_never_hands_the_key_to_the_other_host(
        start_daemon, state_dir, hostile):
    with HostileLlm(key="another-key") as elsewhere:
        d = both(start_daemon, state_dir, hostile)
        hostile.mode = "redirect"
        hostile.redirect_to = f"http://localhost:{elsewhere.port}"
        with pytest.raises(openai.APIStatusError) as caught:
            openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert caught.value.status_code == 502
        with pytest.raises(anthropic.APIStatusError) as failed:
            anthropic_client(d).messages.create(model="claude-3-5-haiku", max_tokens=5,
                                                messages=HI)
        assert failed.value.status_code == 502
        assert elsewhere.seen == []  # the request never followed the redirect
        assert last_record(d, 2)["outcome"]["status"] == "provider_error"


def test_a_passed_header_with_bytes_that_are_not_text_is_a_clear_400(start_daemon, state_dir,
                                                                      hostile):
    d = both(start_daemon, state_dir, hostile)
    host, port = listen(d)["http"].rsplit(":", 1)
    body = b'{"model": "claude-3-5-haiku", "max_tokens": 5, "messages": []}'
    for value in (b"\xff\xfe", b"2023-06-01\xc3\xa9"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " +
                         TOKENS["alice"].encode() + b"\r\nanthropic-beta: " + value +
                         b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" +
                         body)
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert b'"invalid_request_error"' in answer and b"anthropic-beta" in answer
    assert hostile.seen == []
    still_serves(d, hostile)


def test_a_provider_whose_models_list_is_odd_json_does_not_break_the_list(
        start_daemon, state_dir, hostile, fake):
    d = start_llm_daemon(start_daemon, state_dir, {
        "odd": openai_provider(hostile, models=["gpt-odd*", "gpt-4o-mini"]),
        "ok": openai_provider(fake)})
    hostile.mode = "odd-list"
    assert sorted(m.id for m in openai_client(d, "bob").models.list()) == [
        "gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]


def test_a_whole_answer_that_is_json_but_not_an_object_is_a_provider_failure(
        start_daemon, state_dir, hostile):
    d = both(start_daemon, state_dir, hostile)
    hostile.mode = "odd-answer"
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert caught.value.status_code == 502 and "Provider failure" in caught.value.message
    assert last_record(d)["outcome"]["status"] == "provider_error"
