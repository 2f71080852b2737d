"""The AI gateway's streams under pressure: a client that reads slowly slows the provider
read down (a credit window from the master to the worker), and a graceful restart lets
running streams finish."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson

from tests.gateway_helpers import TOKENS
from tests.llm_helpers import (
    KEY_ENV,
    base,
    llm_config,
    openai_client,
    openai_provider,
)

HUGE = 64 << 20  # the fake's "huge" answer, in characters


def _stream(d, text: str) -> httpx.Response:
    return httpx.stream("POST", base(d) + "/v1/chat/completions", timeout=60, json={
        "model": "gpt-4o-mini", "stream": True,
        "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {TOKENS['alice']}"})


def _settled(value, seconds: float = 1.0) -> int:
    """``value()`` once it has stopped growing for ``seconds``."""
    last, since = value(), time.monotonic()
    deadline = since + 20
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            break
    return last


def test_a_slow_reader_slows_the_provider_read_and_still_gets_the_whole_big_stream(
        start_daemon, fake):
    fake.chunk = 32 << 10
    config = llm_config({"fake": openai_provider(fake)})
    # the worker joins and digests the 64 MB answer for its record at the end: on a
    # loaded 2-core VM that can take seconds, which is not what this test is about
    config["supervision"] = {"heartbeat_timeout": 30.0}
    config["llm"] = {"max_response_bytes": 2 * HUGE}  # the text it keeps for its record
    d = start_daemon(extra=config, env=KEY_ENV)
    d.wait_ready()
    with _stream(d, "huge") as reply:
        assert reply.status_code == 200
        chunks = reply.iter_bytes()
        got = [next(chunks)]
        # the client stops reading: what the provider could send is bounded by the
        # buffers on the way (sockets, and a window per process), far below the answer
        stalled = _settled(lambda: fake.sent)
        assert stalled < HUGE // 2, f"the provider wrote {stalled >> 20} MiB meanwhile"
        got += list(chunks)  # then it reads on, and gets all of it
    body = b"".join(got)
    assert body.rstrip().endswith(b"data: [DONE]")
    assert b'"error"' not in body[-2000:]
    text = "".join(orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in body.split(b"\n\n")
                   if line.startswith(b"data: {") and b'"choices":[{' in line)
    assert text == "word " * (HUGE // 5)
    assert fake.sent > HUGE


def test_a_graceful_restart_lets_a_stream_longer_than_call_timeout_finish(start_daemon,
                                                                          fake):
    fake.chunk, fake.delay = 10, 0.08  # "long": 1000 characters over about 8 s
    config = llm_config({"fake": openai_provider(fake)})
    config["gateway"] = {"call_timeout": 0.5}
    config["supervision"] = {"shutdown_timeout": 0.5}
    d = start_daemon(extra=config, env=KEY_ENV)
    d.wait_ready()
    stream = openai_client(d).chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "long"}])
    text = [next(stream).choices[0].delta.content or ""]
    with ThreadPoolExecutor(1) as pool:  # restart returns once the old worker is gone
        restart = pool.submit(d.cli, "restart", "gateway")
        # the SDK raises on an error event: the stream must go on to its end
        text += [c.choices[0].delta.content or "" for c in stream if c.choices]
        done = restart.result(timeout=60)
    assert "".join(text) == "word " * 200
    assert done.returncode == 0, done.stderr
