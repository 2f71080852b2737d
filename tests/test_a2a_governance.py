"""The agent gateway's governance over time: card pinning, peers that are down, and
gateway workers that die mid-stream."""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from daemon.bench.harness import write_config
from tests.a2a_helpers import A2aPeer, a2a_config, base, message, rpc, sdk_client, start_a2a_daemon
from tests.audit_helpers import audit_dir, calls
from tests.conftest import wait_for
from tests.gateway_helpers import TOKENS, shard

ALICE = {"Authorization": f"Bearer {TOKENS['alice']}", "A2A-Version": "1.0"}
HELLO = rpc("SendMessage", {"message": {"role": "ROLE_USER", "messageId": "m",
                                        "parts": [{"text": "hello"}]}})


def card(d, peer: str = "echo") -> dict:
    reply = httpx.get(f"{base(d)}/a2a/{peer}/.well-known/agent-card.json", headers=ALICE)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_card_whose_skills_change_is_held_until_an_admin_accepts_it(start_daemon,
                                                                      state_dir):
    first = A2aPeer("echo", skills=1)
    port = first.port
    try:
        d = start_a2a_daemon(start_daemon, state_dir, {"echo": first})
        assert len(card(d)["skills"]) == 1
        first.kill()
        changed = A2aPeer("echo", skills=3, port=port)  # a rug pull: new skills
        try:
            status = wait_for(lambda: d.status() if d.status()["a2a_peers"]["echo"]["held"]
                              else None, 20, "the changed card to be held")
            held = status["a2a_peers"]["echo"]["held"]
            assert any(f'accept_card = "{held}"' in r for r in status["reasons"])
            assert len(card(d)["skills"]) == 1  # the pinned card is still the one served
            denied = wait_for(lambda: httpx.post(f"{base(d)}/a2a/echo", headers=ALICE,
                                                 json=HELLO, timeout=30).json().get("error"),
                              10, "the held peer's messages to be denied")
            assert denied["code"] == -32023 and denied["data"]["by"] == "cards"
            config = a2a_config({"echo": changed})
            config["a2a.peers.echo"]["accept_card"] = held
            write_config(d.config, {**config, **{k: v for k, v in _base_sections(d).items()
                                                 if k not in config}})
            assert d.cli("reload").returncode == 0
            wait_for(lambda: len(card(d)["skills"]) == 3, 20, "the accepted card")
            reply = wait_for(lambda: httpx.post(f"{base(d)}/a2a/echo", headers=ALICE,
                                                json=HELLO, timeout=30).json().get("result"),
                             10, "messages to flow again")
            assert reply["message"]["parts"][0]["text"] == "echo: hello"
        finally:
            changed.kill()
    finally:
        first.kill()


def _base_sections(d) -> dict:
    """The sections the test daemon wrote besides the a2a config (listen, daemon...)."""
    import tomllib
    loaded = tomllib.loads(d.config.read_text())
    out = {}
    for name, table in loaded.items():
        if name in ("daemon", "supervision", "control", "listen", "plugins", "metrics"):
            out[name] = table
    return out


def test_a_peer_that_is_down_costs_only_its_own_messages(start_daemon, state_dir):
    with A2aPeer("echo") as echo:
        gone = A2aPeer("echo")
        gone.kill()  # its port answers nothing
        config = a2a_config({"echo": echo, "stream": gone})
        d = start_daemon(extra=config)
        d.wait_ready()
        status = wait_for(lambda: d.status() if d.status()["a2a_peers"].get("stream", {})
                          .get("error") else None, 20, "the dead peer to be marked")
        assert any(r.startswith("a2a peer stream: card unavailable")
                   for r in status["reasons"])
        assert httpx.get(f"{base(d)}/healthz").status_code == 200  # calls are served
        failed = httpx.post(f"{base(d)}/a2a/stream", headers=ALICE, json=HELLO,
                            timeout=30).json()
        assert failed["error"]["code"] == -32024 and failed["error"]["data"]["peer"] == "stream"
        served = httpx.post(f"{base(d)}/a2a/echo", headers=ALICE, json=HELLO, timeout=30)
        assert served.json()["result"]["message"]["parts"][0]["text"] == "echo: hello"


def test_a_gateway_worker_killed_mid_stream_ends_the_stream_with_a_clear_error(
        start_daemon, state_dir):
    with A2aPeer("stream") as streamer:
        d = start_a2a_daemon(start_daemon, state_dir, {"stream": streamer})

        worker = d.pids()[shard("alice")]  # asked before: `status` takes a while

        async def talk():
            client = await sdk_client(d, "stream", streaming=True)
            seen = []
            with pytest.raises(Exception) as failed:
                async for event in client.send_message(message("slow please")):
                    seen.append(event)
                    if len(seen) == 2:
                        os.kill(worker, signal.SIGKILL)
            await client.close()
            return seen, failed.value
        seen, failed = asyncio.run(talk())
        assert len(seen) >= 2 and "stopped while running this call" in str(failed), repr(failed)
        wait_for(lambda: shard("alice") in d.pids(), 20, "the replacement")

        async def again():
            client = await sdk_client(d, "stream")
            replies = [r async for r in client.send_message(message("again"))]
            await client.close()
            return replies
        assert asyncio.run(again())[0].task.status.state == 3  # TASK_STATE_COMPLETED


def test_a_slow_peer_times_out_its_own_messages_while_the_others_are_served(start_daemon,
                                                                            state_dir):
    with A2aPeer("stream") as slow, A2aPeer("echo") as echo:
        d = start_a2a_daemon(start_daemon, state_dir, {"stream": slow, "echo": echo},
                             request_timeout=3.0)
        hang = rpc("SendMessage", {"message": {"role": "ROLE_USER", "messageId": "h",
                                               "parts": [{"text": "hang"}]}})

        async def talk():
            async with httpx.AsyncClient(headers=ALICE, timeout=30) as client:
                waiting = asyncio.ensure_future(client.post(f"{base(d)}/a2a/stream",
                                                            json=hang))
                served = await client.post(f"{base(d)}/a2a/echo", json=HELLO)
                assert not waiting.done()  # the echo did not wait for the slow peer
                stream = {**hang, "method": "SendStreamingMessage"}
                async with client.stream("POST", f"{base(d)}/a2a/stream",
                                         json=stream) as events:
                    lines = [line async for line in events.aiter_lines() if line]
                return (await waiting).json(), served.json(), lines
        slow_answer, served, lines = asyncio.run(talk())
        assert served["result"]["message"]["parts"][0]["text"] == "echo: hello"
        assert slow_answer["error"]["code"] == -32016
        assert lines[-1].startswith("data: ") and '"code":-32016' in lines[-1]


def test_a_message_the_master_turns_away_as_busy_is_still_audited(start_daemon, state_dir):
    """Every message is one audit record, the master's own refusals included (its worker
    is full: [listen] max_inflight_per_worker = 1, a slow message and quick ones racing
    for the one slot: whichever comes second is refused)."""
    with A2aPeer("stream") as peer:
        config = a2a_config({"stream": peer})
        config["listen"] = {"tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*",
                            "http": "127.0.0.1:0", "max_inflight_per_worker": 1}
        d = start_daemon(extra=config)
        d.wait_ready()
        wait_for(lambda: (d.status().get("a2a_peers") or {}).get("stream", {}).get(
            "available"), 20, "the peer's card")
        slow = rpc("SendMessage", {"message": {"role": "ROLE_USER", "messageId": "s",
                                               "parts": [{"text": "slow"}]}})
        url = f"{base(d)}/a2a/stream"
        with ThreadPoolExecutor(1) as pool:  # about 1.2 s at the peer
            held = pool.submit(httpx.post, url, headers=ALICE, json=slow, timeout=30)
            answers = []

            def refused() -> dict | None:
                answers.append(httpx.post(url, headers=ALICE, json=HELLO, timeout=30).json())
                if held.done():
                    answers.append(held.result().json())
                return next((a for a in answers if "error" in a), None)
            busy = wait_for(refused, 10, "one message refused while another runs")
        assert "Busy" in busy["error"]["message"]
        record = wait_for(lambda: calls(audit_dir(d.state_dir), "refused"), 10,
                          "the refusal's record")[-1]
        assert record["agent"] == "alice" and record["tool"] == "a2a/stream"
        assert "Busy" in record["outcome"]["message"]
