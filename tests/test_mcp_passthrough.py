"""All of MCP through the gateway, not only tools: tool definitions keep every field,
results keep structuredContent; resources, resource templates, prompts and completions
pass through from a real SDK upstream (tests/fixtures/mcp_full_upstream.py), filtered by
roles, through the plugins that see their kind, and audited; input_required results
(2026-07-28 multi round-trip) go to the agent and its retry back upstream; stateless
agents learn of list changes on a subscriptions/listen stream."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from mcp import Client, StdioServerParameters

from daemon.client import AgentClient
from daemon.protocol import mcp
from daemon.protocol.jsonrpc import RpcError
from tests.audit_helpers import audit_dir, calls
from tests.conftest import BUNDLED, wait_for
from tests.gateway_helpers import TOKENS, tcp_address

FIXTURES = Path(__file__).parent / "fixtures"

DENY_EMMA = '''
from daemon.plugin import Deny, Plugin


class NoEmma(Plugin):
    name = "no_emma"
    version = 1
    kinds = {"resource"}

    async def before_call(self, call):
        if call.kind != "resource":
            return Deny(f"saw a {call.kind} call")  # it must never see one
        if call.tool == "library://books/emma":
            return Deny("emma is out on loan")
        return None
'''


def config(plugin_dir: Path) -> dict[str, dict[str, object]]:
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()
    return {
        "plugins": {"dirs": [str(plugin_dir)]},
        "roles.reader": {"tools": ["library__*"],
                         "resources": ["library://catalog", "library://books/*"],
                         "prompts": ["library__summarize"]},
        "roles.ops": {"tools": ["*"], "resources": ["*"], "prompts": ["*"]},
        "agents.alice": {"token_sha256": digest(TOKENS["alice"]), "roles": ["reader"]},
        "agents.bob": {"token_sha256": digest(TOKENS["bob"]), "roles": ["ops"]},
        "upstreams.library": {"command": [sys.executable,
                                          str(FIXTURES / "mcp_full_upstream.py")],
                              "env": {"LIBRARY_MORE": str(plugin_dir.parent / "more")}},
    }


@pytest.fixture
def daemon(start_daemon, state_dir):
    plugin_dir = state_dir / "plugins"
    plugin_dir.mkdir(mode=0o755)
    shutil.copy(BUNDLED / "secrets.py", plugin_dir / "secrets.py")
    (plugin_dir / "no_emma.py").write_text(DENY_EMMA)
    d = start_daemon(extra=config(plugin_dir))
    d.wait_ready(timeout=60)
    wait_for(lambda: {"secrets", "no_emma"} <= {p["name"] for p in
                                                 d.status()["plugins"]["loaded"]},
             30, "the plugins to load")
    return d


def client(daemon, name: str, stateless: bool = False) -> AgentClient:
    return AgentClient.tcp(*tcp_address(daemon), TOKENS[name], stateless=stateless,
                           timeout=30)


def error_of(agent: AgentClient, method: str, params: dict[str, object]) -> RpcError:
    with pytest.raises(RpcError) as caught:
        agent.request(method, params)
    return caught.value


def test_tools_list_keeps_every_field_the_upstream_gave_and_results_keep_structured_content(
        daemon):
    with client(daemon, "bob") as bob:
        tools = {t["name"]: t for t in bob.list_tools()}
        book = tools["library__find_book"]
        assert book["title"] == "Find a book"
        assert book["annotations"] == {"readOnlyHint": True, "destructiveHint": False}
        assert book["icons"] == [{"src": "https://example.com/book.png",
                                  "mimeType": "image/png"}]
        assert book["_meta"] == {"example.com/shelf": "A"}
        assert book["outputSchema"]["properties"]["year"]["type"] == "integer"
        result = bob.call_tool("library__find_book", {"title": "dune"})
        assert result["structuredContent"] == {"title": "dune", "year": 1965}


def test_resources_templates_and_prompts_are_merged_and_filtered_by_roles(daemon):
    with client(daemon, "alice") as alice, client(daemon, "bob", stateless=True) as bob:
        assert [r["uri"] for r in alice.request("resources/list")["resources"]] == [
            "library://catalog"]
        assert sorted(r["uri"] for r in bob.request("resources/list")["resources"]) == [
            "library://catalog", "library://vault/keys"]
        templates = alice.request("resources/templates/list")["resourceTemplates"]
        assert [(t["uriTemplate"], t["title"]) for t in templates] == [
            ("library://books/{name}", "A book")]
        prompts = alice.request("prompts/list")["prompts"]
        assert [(p["name"], p["title"]) for p in prompts] == [
            ("library__summarize", "Summarize a topic")]
        listed = bob.request("prompts/list")
        assert [p["name"] for p in listed["prompts"]] == ["library__admin_only",
                                                          "library__summarize"]
        assert listed["resultType"] == "complete" and listed["cacheScope"] == "private"


def test_an_agent_reads_resources_gets_prompts_and_completes_arguments(daemon):
    with client(daemon, "alice") as alice:
        read = alice.request("resources/read", {"uri": "library://catalog"})
        assert read["contents"][0]["text"] == "dune, emma, ulysses"
        by_template = alice.request("resources/read", {"uri": "library://books/dune"})
        assert by_template["contents"][0] == {"uri": "library://books/dune",
                                              "mimeType": "text/plain", "text": "dune (1965)"}
        prompt = alice.request("prompts/get", {"name": "library__summarize",
                                               "arguments": {"topic": "physics"}})
        assert prompt["messages"][0]["content"]["text"] == "Please summarize physics."
        done = alice.request("completion/complete", {
            "ref": {"type": "ref/prompt", "name": "library__summarize"},
            "argument": {"name": "topic", "value": "p"}})
        assert done["completion"]["values"] == ["physics", "poetry"]
        done = alice.request("completion/complete", {
            "ref": {"type": "ref/resource", "uri": "library://books/{name}"},
            "argument": {"name": "name", "value": "u"}})
        assert done["completion"]["values"] == ["ulysses"]


def test_a_hidden_resource_or_prompt_answers_like_an_unknown_one_and_is_audited(daemon):
    with client(daemon, "alice") as alice:
        hidden = error_of(alice, "resources/read", {"uri": "library://vault/keys"})
        unknown = error_of(alice, "resources/read", {"uri": "library://nowhere"})
        assert (hidden.code, hidden.message) == (unknown.code, unknown.message) == (
            -32002, "Resource not found")
        hidden = error_of(alice, "prompts/get", {"name": "library__admin_only"})
        assert (hidden.code, hidden.message) == (-32602, "Unknown prompt: library__admin_only")
        unknown = error_of(alice, "prompts/get", {"name": "library__nothing"})
        assert (unknown.code, unknown.message) == (-32602, "Unknown prompt: library__nothing")
        bad = error_of(alice, "resources/read", {"uri": 5})
        assert (bad.code, bad.message) == (-32602, "Invalid params: resources/read needs a "
                                                   "string params.uri")
        bad = error_of(alice, "completion/complete", {"ref": {"type": "ref/other"},
                                                      "argument": {}})
        assert bad.code == -32602
        assert alice.call_tool("library__find_book", {"title": "dune"})["isError"] is False
    denied = wait_for(lambda: [r for r in calls(audit_dir(daemon.state_dir))
                               if r["outcome"].get("by") == "roles"], 10, "records")
    assert {(r["call_kind"], r["tool"]) for r in denied} == {
        ("resource", "library://vault/keys"), ("prompt", "library__admin_only")}
    assert all(r["outcome"]["status"] == "denied" for r in denied)
    assert TOKENS["alice"] not in "".join(
        p.read_text() for p in audit_dir(daemon.state_dir).glob("audit-*.jsonl"))


def test_a_plugin_for_resource_calls_denies_a_read_and_never_sees_tool_calls(daemon):
    with client(daemon, "bob") as bob:
        refused = error_of(bob, "resources/read", {"uri": "library://books/emma"})
        assert "Denied by no_emma: emma is out on loan" in refused.message
        assert refused.data[mcp.META_DENIED]["by"] == "no_emma"
        assert bob.request("resources/read", {"uri": "library://books/dune"})["contents"]
        assert bob.call_tool("library__find_book", {"title": "emma"})["isError"] is False
        assert "Please" in bob.request("prompts/get", {
            "name": "library__summarize", "arguments": {"topic": "x"}})["messages"][0][
            "content"]["text"]
    records = wait_for(lambda: [r for r in calls(audit_dir(daemon.state_dir))
                                if r["tool"] == "library://books/emma"], 10, "its record")
    assert records[0]["outcome"]["status"] == "denied"
    assert records[0]["outcome"]["by"] == "no_emma"


def test_secrets_are_redacted_in_a_resource_read_result(daemon):
    with client(daemon, "bob") as bob:
        read = bob.request("resources/read", {"uri": "library://vault/keys"})
        assert read["contents"][0]["text"] == "the deploy key is [secret]"
    assert "AKIAABCDEFGHIJKLMNOP" not in "".join(
        p.read_text() for p in audit_dir(daemon.state_dir).glob("audit-*.jsonl"))


def test_each_kind_of_call_leaves_an_audit_record_that_names_it(daemon):
    with client(daemon, "bob") as bob:
        bob.request("resources/read", {"uri": "library://catalog"})
        bob.request("prompts/get", {"name": "library__summarize", "arguments": {"topic": "a"}})
        bob.request("completion/complete", {
            "ref": {"type": "ref/prompt", "name": "library__summarize"},
            "argument": {"name": "topic", "value": ""}})
        bob.call_tool("library__find_book", {"title": "dune"})

    def kinds() -> set[tuple[str | None, str | None, str]] | None:
        found = {(r.get("call_kind"), r.get("method"), r["tool"])
                 for r in calls(audit_dir(daemon.state_dir))}
        return found if len(found) >= 4 else None
    assert wait_for(kinds, 10, "four records") == {
        ("resource", "resources/read", "library://catalog"),
        ("prompt", "prompts/get", "library__summarize"),
        ("completion", "completion/complete", "library__summarize"),
        (None, None, "library__find_book")}
    intents = {r["tool"] for r in calls(audit_dir(daemon.state_dir), "intent")}
    assert "library://catalog" in intents, "an upstream read is recorded before it runs"


def test_an_input_required_result_reaches_the_agent_and_its_retry_goes_back_upstream(daemon):
    with client(daemon, "bob", stateless=True) as bob:
        first = bob.call_tool("library__confirm", {"item": "order 7"})
        assert first["resultType"] == "input_required" and first["requestState"]
        retry = bob.request("tools/call", {"name": "library__confirm",
                                           "arguments": {"item": "order 7"},
                                           "requestState": first["requestState"]})
        assert retry["resultType"] == "complete"
        assert retry["content"][0]["text"] == "confirmed order 7 (asked-about-order 7)"


def test_the_official_sdk_client_uses_all_of_it_through_the_bridge(daemon):
    env = {**os.environ, "WORKINGAGENTS_TOKEN": TOKENS["alice"]}
    bridge = StdioServerParameters(command=sys.executable, env=env, args=[
        "-m", "daemon", "mcp-bridge", "--config", str(daemon.config)])

    async def run(mode: str) -> None:
        async with Client(bridge, mode=mode) as sdk:
            caps = sdk.server_capabilities
            assert caps is not None and caps.resources is not None and caps.prompts
            tools = {t.name: t for t in (await sdk.list_tools()).tools}
            assert tools["library__find_book"].annotations.read_only_hint is True
            result = await sdk.call_tool("library__find_book", {"title": "emma"})
            assert result.structured_content == {"title": "emma", "year": 1815}
            listed = await sdk.list_resources()
            assert [str(r.uri) for r in listed.resources] == ["library://catalog"]
            read = await sdk.read_resource("library://books/ulysses")
            assert read.contents[0].text == "ulysses (1922)"
            prompt = await sdk.get_prompt("library__summarize", {"topic": "poetry"})
            assert prompt.messages[0].content.text == "Please summarize poetry."
    for mode in ("auto", "legacy"):
        asyncio.run(run(mode))


def test_subscriptions_listen_receives_list_changed_when_an_upstream_restarts(daemon):
    with client(daemon, "bob", stateless=True) as bob:
        meta = {**mcp.stateless_meta({"name": "t", "version": "1"}),
                mcp.META_TOKEN: TOKENS["bob"]}
        bob.send_raw(orjson.dumps({"jsonrpc": "2.0", "id": "listen-1",
                                   "method": "subscriptions/listen", "params": {
                                       "notifications": {"toolsListChanged": True,
                                                         "promptsListChanged": True},
                                       "_meta": meta}}))
        ack = orjson.loads(bob.recv_raw())
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["notifications"] == {"toolsListChanged": True,
                                                  "promptsListChanged": True}
        assert ack["params"]["_meta"][mcp.META_SUBSCRIPTION] == "listen-1"
        (daemon.state_dir / "more").touch()  # it comes back with a tool and a prompt more
        result = daemon.cli("restart", "upstream:library")
        assert result.returncode == 0, result.stderr
        seen = set()
        while not {"notifications/tools/list_changed",
                   "notifications/prompts/list_changed"} <= seen:
            note = orjson.loads(bob.recv_raw())
            assert note["params"]["_meta"][mcp.META_SUBSCRIPTION] == "listen-1"
            seen.add(note["method"])
        assert "notifications/resources/list_changed" not in seen, "not asked for"


def test_subscriptions_listen_over_http_streams_list_changes_as_sse_events(daemon):
    from tests.gateway_helpers import listen

    meta = mcp.stateless_meta({"name": "t", "version": "1"})
    body = orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen",
                         "params": {"notifications": {"toolsListChanged": True},
                                    "_meta": meta}})
    headers = {"Authorization": f"Bearer {TOKENS['bob']}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"}
    url = f"http://{listen(daemon)['http']}/mcp"
    json_only = httpx.post(url, content=body, timeout=10,
                           headers={**headers, "Accept": "application/json"})
    assert json_only.status_code == 400 and "text/event-stream" in json_only.text
    with httpx.stream("POST", url, content=body, headers=headers, timeout=30) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = (orjson.loads(line[5:]) for line in reply.iter_lines()
                  if line.startswith("data:"))
        ack = next(events)
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["notifications"] == {"toolsListChanged": True}
        (daemon.state_dir / "more").touch()
        assert daemon.cli("restart", "upstream:library").returncode == 0
        note = next(events)
        assert note["method"] == "notifications/tools/list_changed"
        assert note["params"]["_meta"][mcp.META_SUBSCRIPTION] == 7
