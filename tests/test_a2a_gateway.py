"""The agent gateway: real A2A agents made with the official a2a-sdk behind the daemon
(tests.fixtures.a2a_peer), the SDK's own client as the caller through it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from a2a.helpers.proto_helpers import get_message_text
from a2a.types.a2a_pb2 import CancelTaskRequest, GetTaskRequest, ListTasksRequest, TaskState

from tests.a2a_helpers import A2aPeer, base, message, rpc, sdk_client, start_a2a_daemon
from tests.audit_helpers import audit_dir, calls
from tests.conftest import wait_for
from tests.gateway_helpers import TOKENS, agent


@pytest.fixture
def echo() -> Iterator[A2aPeer]:
    with A2aPeer("echo") as peer:
        yield peer


@pytest.fixture
def streamer() -> Iterator[A2aPeer]:
    with A2aPeer("stream") as peer:
        yield peer


def a2a_records(daemon) -> list[dict]:
    return calls(audit_dir(daemon.state_dir), "a2a")


def test_the_sdk_client_discovers_a_peer_through_the_gateway_and_its_message_is_answered(
        start_daemon, state_dir, echo):
    d = start_a2a_daemon(start_daemon, state_dir, {"echo": echo})

    async def talk():
        client = await sdk_client(d, "echo")
        card = client._card  # what discovery found: the gateway, never the peer
        assert [i.url for i in card.supported_interfaces] == [f"{base(d)}/a2a/echo"]
        replies = [r async for r in client.send_message(message("hello there"))]
        await client.close()
        return replies
    replies = asyncio.run(talk())
    assert get_message_text(replies[0].message) == "echo: hello there"
    record = wait_for(lambda: a2a_records(d), 10, "the a2a audit record")[-1]
    assert record["agent"] == "alice" and record["peer"] == "echo"
    assert record["method"] == "SendMessage" and record["outcome"]["status"] == "ok"
    assert "request_sha256" in record and "request" not in record  # digest by default
    tail = d.cli("audit", "tail")
    assert tail.returncode == 0 and " a2a alice echo SendMessage ok " in tail.stdout


def test_a_streamed_message_arrives_event_by_event_and_its_task_can_be_got_and_listed(
        start_daemon, state_dir, streamer):
    d = start_a2a_daemon(start_daemon, state_dir, {"stream": streamer})

    async def talk():
        client = await sdk_client(d, "stream", streaming=True)
        events = [e async for e in client.send_message(message("go"))]
        task_id = events[0].task.id
        got = await client.get_task(GetTaskRequest(id=task_id))
        listed = await client.list_tasks(ListTasksRequest())
        await client.close()
        return events, got, listed
    events, got, listed = asyncio.run(talk())
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task" and kinds.count("artifact_update") == 4
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert got.status.state == TaskState.TASK_STATE_COMPLETED
    assert "".join(p.text for p in got.artifacts[0].parts) == "step one two three "
    assert [t.id for t in listed.tasks] == [got.id]
    record = wait_for(lambda: [r for r in a2a_records(d)
                               if r["method"] == "SendStreamingMessage"], 10, "record")[-1]
    assert record["task"] == got.id
    assert record["states"] == ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING",
                                "TASK_STATE_COMPLETED"]


def test_a_streams_final_event_arrives_only_once_its_audit_record_is_written(
        start_daemon, state_dir, streamer):
    """A client that reads up to the final state and hangs up got the whole answer: the
    record must already say ok then (found by the chaos harness: it said cancelled)."""
    d = start_a2a_daemon(start_daemon, state_dir, {"stream": streamer})
    url = f"{base(d)}/a2a/stream"

    async def talk(n: int) -> list[int]:
        seen = []
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKENS['alice']}",
                                              "A2A-Version": "1.0"},
                                     timeout=30) as http:
            for i in range(n):
                body = rpc("SendStreamingMessage", {"message": {
                    "role": "ROLE_USER", "messageId": f"m{i}", "parts": [{"text": "go"}]}})
                async with http.stream("POST", url, json=body) as response:
                    async for line in response.aiter_lines():
                        if "TASK_STATE_COMPLETED" in line:
                            break  # the final event: read no further, hang up
                seen.append(sum(r["outcome"]["status"] == "ok" for r in a2a_records(d)))
        return seen
    seen = asyncio.run(talk(5))
    assert seen == [1, 2, 3, 4, 5]  # each record was there when its final event came
    statuses = [r["outcome"]["status"] for r in a2a_records(d)]
    assert statuses == ["ok"] * 5


def test_another_agent_cannot_get_cancel_subscribe_to_or_list_the_first_ones_task(
        start_daemon, state_dir, streamer):
    d = start_a2a_daemon(start_daemon, state_dir, {"stream": streamer})

    async def talk():
        alice = await sdk_client(d, "stream", "alice")
        events = [e async for e in alice.send_message(message("go"))]
        task = events[0].task
        await alice.close()
        bob = httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKENS['bob']}",
                                         "A2A-Version": "1.0"}, timeout=30)
        url = f"{base(d)}/a2a/stream"
        answers = [(await bob.post(url, json=rpc(method, params))).json() for method, params in (
            ("GetTask", {"id": task.id}), ("CancelTask", {"id": task.id}),
            ("tasks/get", {"id": task.id}),
            ("SendMessage", {"message": {"role": "ROLE_USER", "messageId": "m1",
                                         "taskId": task.id, "parts": [{"text": "more"}]}}),
            ("SendMessage", {"message": {"role": "ROLE_USER", "messageId": "m2",
                                         "contextId": task.context_id,
                                         "parts": [{"text": "more"}]}}))]
        listed = (await bob.post(url, json=rpc("ListTasks", {}))).json()
        unknown = (await bob.post(url, json=rpc("GetTask", {"id": "no-such-task"}))).json()
        await bob.aclose()
        return answers, listed, unknown
    answers, listed, unknown = asyncio.run(talk())
    for answer in answers:
        assert answer["error"] == unknown["error"] == {"code": -32001,
                                                       "message": "Task not found"}
    assert listed["result"]["tasks"] == []
    denied = wait_for(lambda: [r for r in a2a_records(d) if r["agent"] == "bob"
                               and r["outcome"].get("by") == "ownership"], 10, "records")
    assert len(denied) >= 5


def test_a_caller_whose_roles_do_not_allow_the_peer_gets_404_like_an_unknown_peer(
        start_daemon, state_dir, echo):
    d = start_a2a_daemon(start_daemon, state_dir, {"echo": echo})
    bob = {"Authorization": f"Bearer {TOKENS['bob']}"}
    card = httpx.get(f"{base(d)}/a2a/echo/.well-known/agent-card.json", headers=bob)
    unknown = httpx.get(f"{base(d)}/a2a/nobody/.well-known/agent-card.json", headers=bob)
    assert card.status_code == unknown.status_code == 404
    sent = httpx.post(f"{base(d)}/a2a/echo", headers=bob, json=rpc("SendMessage", {
        "message": {"role": "ROLE_USER", "messageId": "m", "parts": [{"text": "hi"}]}}))
    assert sent.status_code == 404
    assert httpx.get(f"{base(d)}/a2a/echo/.well-known/agent-card.json").status_code == 401
    assert httpx.post(f"{base(d)}/a2a/echo", json=rpc("GetTask", {"id": "x"})).status_code \
        == 401
    record = wait_for(lambda: [r for r in a2a_records(d) if r["agent"] == "bob"], 10,
                      "the denial's record")[-1]
    assert record["outcome"] == {"status": "denied", "by": "roles", "http": 404}


def test_push_notification_configs_are_refused_and_v03_names_are_aliases(
        start_daemon, state_dir, echo):
    d = start_a2a_daemon(start_daemon, state_dir, {"echo": echo})
    alice = {"Authorization": f"Bearer {TOKENS['alice']}", "A2A-Version": "1.0"}
    url = f"{base(d)}/a2a/echo"
    push = httpx.post(url, headers=alice, json=rpc("CreateTaskPushNotificationConfig", {}))
    assert push.json()["error"]["code"] == -32003
    legacy = httpx.post(url, headers=alice, json=rpc("tasks/pushNotificationConfig/set", {}))
    assert legacy.json()["error"]["code"] == -32003
    old = {"Authorization": f"Bearer {TOKENS['alice']}", "A2A-Version": "0.3"}
    sent = httpx.post(url, headers=old, json=rpc("message/send", {"message": {
        "role": "user", "messageId": "m", "kind": "message",
        "parts": [{"kind": "text", "text": "old style"}]}}), timeout=30)
    reply = sent.json()["result"]
    assert reply["kind"] == "message" and reply["parts"][0]["text"] == "echo: old style"
    nonsense = httpx.post(url, headers=alice, content=b"{not json")
    assert nonsense.json()["error"]["code"] == -32700


def test_a_message_carrying_a_secret_is_redacted_both_ways_streamed_events_too(
        start_daemon, state_dir, echo, streamer):
    d = start_a2a_daemon(start_daemon, state_dir, {"echo": echo, "stream": streamer},
                         plugins={"secrets": {}, "pii": {}}, audit={"a2a_content": "full"})

    async def talk():
        client = await sdk_client(d, "echo")
        sent = [r async for r in client.send_message(message(
            "my key is AKIAIOSFODNN7EXAMPLE"))]
        leaked = [r async for r in client.send_message(message("reveal it"))]
        await client.close()
        streaming = await sdk_client(d, "stream", streaming=True)
        streamed = [e async for e in streaming.send_message(message("reveal it"))]
        await streaming.close()
        return sent, leaked, streamed
    sent, leaked, streamed = asyncio.run(talk())
    assert get_message_text(sent[0].message) == "echo: my key is [secret]"  # the peer saw it so
    assert "AKIA" not in get_message_text(leaked[0].message)
    assert "jane.doe@example.com" not in get_message_text(leaked[0].message)
    texts = "".join(p.text for e in streamed if e.HasField("artifact_update")
                    for p in e.artifact_update.artifact.parts)
    assert "step one" in texts and "[secret]" in texts and "AKIA" not in texts
    records = wait_for(lambda: a2a_records(d) if len(a2a_records(d)) >= 3 else None, 10,
                       "three records")
    assert "AKIAIOSFODNN7EXAMPLE" not in str(records)
    assert records[0]["request_redacted"] is True


def test_a_peer_killed_mid_stream_ends_the_stream_with_a_clear_error_and_shows_in_status(
        start_daemon, state_dir, streamer, echo):
    d = start_a2a_daemon(start_daemon, state_dir, {"stream": streamer, "echo": echo})

    async def talk():
        client = await sdk_client(d, "stream", streaming=True)
        seen = []
        with pytest.raises(Exception) as failed:
            async for event in client.send_message(message("slow please")):
                seen.append(event)
                if len(seen) == 2:
                    streamer.kill()
        await client.close()
        other = await sdk_client(d, "echo")  # the other peer is still served
        reply = [r async for r in other.send_message(message("still here?"))]
        await other.close()
        return seen, failed.value, reply
    seen, failed, reply = asyncio.run(talk())
    assert len(seen) >= 2 and "stream failed" in str(failed)
    assert get_message_text(reply[0].message) == "echo: still here?"
    status = wait_for(lambda: d.status() if (d.status()["a2a_peers"]["stream"]["error"])
                      else None, 20, "the peer to be marked unavailable")
    assert status["health"] == "degraded"
    assert any(r.startswith("a2a peer stream: card unavailable") for r in status["reasons"])
    record = wait_for(lambda: [r for r in a2a_records(d)
                               if r["outcome"]["status"] == "peer_error"], 10, "record")[-1]
    assert "broke off" in record["outcome"]["message"]


def test_a_task_can_be_cancelled_through_the_gateway(start_daemon, state_dir, streamer):
    d = start_a2a_daemon(start_daemon, state_dir, {"stream": streamer})

    async def talk():
        client = await sdk_client(d, "stream")
        request = message("hang until cancelled")
        request.configuration.return_immediately = True
        events = [e async for e in client.send_message(request)]
        first = events[0]
        cancelled = await client.cancel_task(CancelTaskRequest(id=first.task.id))
        await client.close()
        return cancelled
    cancelled = asyncio.run(talk())
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED


def test_an_mcp_agent_messages_a_peer_through_the_a2a_tool_governed_by_peers(
        start_daemon, state_dir, echo, streamer):
    d = start_a2a_daemon(start_daemon, state_dir, {"echo": echo, "stream": streamer})
    with agent(d, "alice") as alice:
        names = [t["name"] for t in alice.list_tools()]
        assert "a2a__echo" in names and "a2a__stream" in names
        result = alice.call_tool("a2a__echo", {"message": "from mcp"})
        assert result["content"][0]["text"] == "echo: from mcp" and not result["isError"]
        task = alice.call_tool("a2a__stream", {"message": "go"})
        assert task["content"][0]["text"] == "step one two three "
    with agent(d, "bob") as bob:  # ops: tools "*", but peers only "stream"
        names = [t["name"] for t in bob.list_tools()]
        assert "a2a__echo" not in names and "a2a__stream" in names
        with pytest.raises(Exception, match="Unknown tool"):
            bob.call_tool("a2a__echo", {"message": "hi"})
