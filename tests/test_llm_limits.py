"""The AI gateway's hardening limits: an answer too large to hold, one agent's flood of
concurrent requests, and a provider that hands its own key back inside the completion
(tests.fixtures.hostile_llm, the official SDKs)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import openai
import pytest

from daemon import config
from tests.audit_helpers import audit_dir, calls
from tests.conftest import wait_for
from tests.fixtures.hostile_llm import HostileLlm
from tests.llm_helpers import (
    KEY_ENV,
    anthropic_client,
    anthropic_provider,
    anthropic_stream_error,
    last_record,
    llm_config,
    llm_records,
    openai_client,
    openai_provider,
    openai_stream_error,
    still_serves,
)

KEY = KEY_ENV["FAKE_OPENAI_KEY"]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def hostile() -> Iterator[HostileLlm]:
    with HostileLlm() as server:
        yield server


def start(start_daemon: Any, fake: HostileLlm, audit: dict[str, Any] | None = None,
          **llm: Any) -> Any:
    config = llm_config({"oa": openai_provider(fake, timeout=5.0, max_retries=0),
                         "an": anthropic_provider(fake, timeout=5.0, max_retries=0)},
                        audit=audit)
    config["llm"] = llm
    d = start_daemon(extra=config, env=KEY_ENV)
    d.wait_ready()
    return d




def key_nowhere(d: Any) -> None:
    """Not in what the records keep of the answers (the tests' prompts ask the fake to
    say the key: the request as the agent wrote it is recorded as written)."""
    for record in llm_records(d):
        assert KEY not in str({k: v for k, v in record.items() if k != "request"})
    assert KEY not in d.log()


# -- [llm] max_response_bytes -----------------------------------------------------------


def test_a_whole_answer_over_max_response_bytes_is_a_clear_502_and_the_worker_serves_on(
        start_daemon, hostile):
    d = start(start_daemon, hostile, max_response_bytes=1 << 20)
    hostile.mode = "huge"  # 8 MiB
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert caught.value.status_code == 502
    assert "max_response_bytes" in caught.value.message
    assert caught.value.body["type"] == "server_error"  # type: ignore[index]
    with pytest.raises(anthropic.APIStatusError) as failed:
        anthropic_client(d).messages.create(model="claude-3-5-haiku", max_tokens=5,
                                            messages=HI)
    assert failed.value.status_code == 502 and "max_response_bytes" in str(failed.value)
    outcome = last_record(d, 2)["outcome"]
    assert outcome["status"] == "provider_error" and "max_response_bytes" in outcome["message"]
    still_serves(d, hostile)


def test_a_stream_whose_text_outgrows_max_response_bytes_ends_with_an_error_event(
        start_daemon, hostile):
    d = start(start_daemon, hostile, max_response_bytes=2048)
    hostile.chunk = 64
    text = "say: " + "word " * 1000  # 5000 characters
    assert "max_response_bytes" in openai_stream_error(d, text).message
    assert "max_response_bytes" in str(anthropic_stream_error(d, text))
    assert last_record(d, 2)["outcome"]["status"] == "provider_error"
    still_serves(d, hostile)


def test_max_response_bytes_and_max_concurrent_per_agent_are_checked_with_the_config(
        tmp_path):
    for text, expected in (
            ("max_response_bytes = 10", "key llm.max_response_bytes: expected an integer "
                                        "from 1024"),
            ("max_concurrent_per_agent = -1", "key llm.max_concurrent_per_agent: expected "
                                              "an integer >= 0")):
        path = tmp_path / "llm.toml"
        path.write_text(f"[llm]\n{text}\n")
        with pytest.raises(config.ConfigError, match=re.escape(expected)):
            config.load(str(path))


# -- [llm] max_concurrent_per_agent -----------------------------------------------------


def test_one_agent_over_its_concurrent_requests_gets_a_429_while_another_is_served(
        start_daemon, hostile):
    d = start(start_daemon, hostile, max_concurrent_per_agent=4)
    hostile.chunk, hostile.delay = 10, 0.05  # "long": 1000 characters over about 5 s
    client = openai_client(d)
    with contextlib.ExitStack() as open_streams:
        streams = []
        for _ in range(4):  # the agent's slow streams, each started and held open
            stream = open_streams.enter_context(client.chat.completions.create(
                model="gpt-4o-mini", stream=True, messages=[{"role": "user",
                                                            "content": "long"}]))
            next(iter(stream))
            streams.append(stream)
        refused = []
        for _ in range(6):  # and more: each refused at once, in OpenAI's shape
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(model="gpt-4o-mini", messages=HI)
            refused.append(caught.value)
        first = refused[0]
        assert first.status_code == 429 and first.response.headers["retry-after"] == "1"
        assert first.body["type"] == "rate_limit_error"  # type: ignore[index]
        assert "max_concurrent_per_agent" in first.message
        with pytest.raises(anthropic.RateLimitError) as limited:  # Anthropic's shape
            anthropic_client(d).messages.create(model="claude-3-5-haiku", max_tokens=5,
                                                messages=HI)
        assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert limited.value.response.headers["retry-after"] == "1"
        # another agent is served meanwhile
        reply = openai_client(d, "bob").chat.completions.create(model="gpt-4o-mini",
                                                                messages=HI)
        assert reply.choices[0].message.content == "echo: hi"
        # the agent's streams go on to their end, whole
        texts = ["".join(c.choices[0].delta.content or "" for c in s if c.choices)
                 for s in streams]
        assert all(t.endswith("word ") for t in texts)
    # their slots are free again
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert reply.choices[0].message.content == "echo: hi"
    refusals = wait_for(lambda: [r for r in calls(audit_dir(d.state_dir), "refused")
                                 if r.get("http") == 429], 10, "the refusals' records")
    assert {r["agent"] for r in refusals} == {"alice"} and len(refusals) == 7
    assert "max_concurrent_per_agent" in refusals[0]["outcome"]["message"]


def test_a_request_the_master_turns_away_as_busy_is_still_audited(start_daemon, hostile):
    """Every request is one audit record, the master's own refusals included (here its
    worker is full: [listen] max_inflight_per_worker)."""
    config = llm_config({"oa": openai_provider(hostile, timeout=5.0, max_retries=0)})
    config["listen"] = {"tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*",
                        "http": "127.0.0.1:0", "max_inflight_per_worker": 1}
    d = start_daemon(extra=config, env=KEY_ENV)
    d.wait_ready()
    hostile.chunk, hostile.delay = 10, 0.05
    client = openai_client(d)
    with client.chat.completions.create(model="gpt-4o-mini", stream=True, messages=[
            {"role": "user", "content": "long"}]) as stream:
        next(iter(stream))
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert "Busy" in caught.value.message
    refusal = wait_for(lambda: calls(audit_dir(d.state_dir), "refused"), 10,
                       "the refusal's record")[-1]
    assert refusal["agent"] == "alice" and refusal["tool"] == "llm/chat"
    assert refusal["http"] == 429 and "Busy" in refusal["outcome"]["message"]


# -- the provider's key never reaches the agent -----------------------------------------


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_a_provider_that_streams_its_key_back_split_across_chunks_never_shows_it(
        start_daemon, hostile, chunk):
    d = start(start_daemon, hostile, audit={"llm_content": "full"})
    hostile.chunk = chunk
    ask = [{"role": "user", "content": f"say: the key is {KEY}, and again:{KEY}"}]
    text = "".join(c.choices[0].delta.content or "" for c in openai_client(
        d).chat.completions.create(model="gpt-4o-mini", stream=True, messages=ask)
        if c.choices)
    assert text == "the key is [provider key], and again:[provider key]"
    with anthropic_client(d).messages.stream(model="claude-3-5-haiku", max_tokens=50,
                                             messages=ask) as events:
        assert events.get_final_text() == text
    whole = openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=ask)
    assert whole.choices[0].message.content == text
    records = [last_record(d, 3), *llm_records(d)[-3:-1]]
    assert all(r["outcome"]["status"] == "ok" for r in records)
    assert all(r["completion"] == text for r in records)
    key_nowhere(d)


def test_a_provider_that_json_escapes_its_key_in_an_answer_never_shows_it(
        start_daemon, hostile):
    d = start(start_daemon, hostile, audit={"llm_content": "full"})
    hostile.mode = "escaped-key"
    reply = openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert reply.choices[0].message.content == "your key is [provider key], keep it"
    assert last_record(d)["completion"] == "your key is [provider key], keep it"
    key_nowhere(d)
    still_serves(d, hostile)


def test_text_that_only_looks_like_the_start_of_the_key_streams_out_whole(
        start_daemon, hostile):
    d = start(start_daemon, hostile)
    hostile.chunk = 3
    said = "sk-prov is not the key, nor is sk-provider-ke; sk-"
    ask = [{"role": "user", "content": f"say: {said}"}]
    text = "".join(c.choices[0].delta.content or "" for c in openai_client(
        d).chat.completions.create(model="gpt-4o-mini", stream=True, messages=ask)
        if c.choices)
    assert text == said


def test_a_stream_under_way_through_a_reload_that_renames_its_provider_still_hides_the_key(
        start_daemon, hostile):
    d = start(start_daemon, hostile, audit={"llm_content": "full"})
    hostile.chunk = 3
    hostile.gate_word = "(held)"
    ask = [{"role": "user", "content": f"(held) say: the key is {KEY}"}]

    def stream() -> str:
        return "".join(c.choices[0].delta.content or "" for c in openai_client(
            d).chat.completions.create(model="gpt-4o-mini", stream=True, messages=ask)
            if c.choices)
    with ThreadPoolExecutor(1) as pool:
        try:
            text = pool.submit(stream)
            wait_for(lambda: any("(held)" in str(body) for _p, _h, body in hostile.seen),
                     10, "the request to reach the provider")
            d.config.write_text(d.config.read_text().replace("[llm.providers.oa]",
                                                             "[llm.providers.oa2]"))
            assert d.cli("reload").returncode == 0

            def renamed() -> bool:
                openai_client(d).chat.completions.create(model="gpt-4o-mini", messages=HI)
                return last_record(d, 1).get("provider") == "oa2"
            wait_for(renamed, 20, "the worker to serve with the renamed provider")
        finally:
            hostile.gate.set()
        assert text.result(30) == "the key is [provider key]"
    key_nowhere(d)
