"""The pieces of MCP passthrough on their own: URI templates, plugin kinds, result texts."""

from __future__ import annotations

from daemon.gateway.plugin_chain import Hosted
from daemon.gateway.plugin_host import PluginHost
from daemon.plugin import Plugin, map_texts, texts
from daemon.protocol.uri_template import matches as _matches


def test_a_uri_template_matches_the_uris_it_expands_to_and_no_others():
    assert _matches("notes://books/{name}", "notes://books/dune")
    assert not _matches("notes://books/{name}", "notes://books/dune/chapter-1")
    assert not _matches("notes://books/{name}", "notes://films/dune")
    assert _matches("file:///{+path}", "file:///srv/a/b.txt")
    assert _matches("search://q{?term,limit}", "search://q?term=x&limit=3")
    assert _matches("a.b://x", "a.b://x") and not _matches("a.b://x", "aXb://x")


class ToolOnly(Plugin):
    name = "tool_only"


class ResourceOnly(Plugin):
    name = "resource_only"
    kinds = frozenset({"resource"})


class Both(Plugin):
    name = "both"
    kinds = frozenset({"tool", "resource"})


def test_each_kind_of_call_gets_the_chain_of_the_plugins_that_see_it():
    host = PluginHost()
    host.chain = tuple(Hosted(p.name, 1, i, "0" * 64, "enforce", 1.0, p())
                       for i, p in enumerate((ToolOnly, ResourceOnly, Both)))
    assert [h.name for h in host.chain_for("tool")] == ["tool_only", "both"]
    assert [h.name for h in host.chain_for("resource")] == ["resource_only", "both"]
    assert host.chain_for("prompt") == ()
    host.chain = host.chain[2:]  # a swap: the kinds follow the new chain
    assert host.chain_for("tool") is host.chain, "all see it: the same tuple"


def test_texts_and_map_texts_reach_tool_resource_and_prompt_results():
    tool = {"content": [{"type": "text", "text": "a"}, {"type": "image", "data": "x"}],
            "isError": False}
    resource = {"contents": [{"uri": "u://1", "text": "b"}, {"uri": "u://2", "blob": "AA"}]}
    prompt = {"messages": [{"role": "user", "content": {"type": "text", "text": "c"}}]}
    assert [texts(r) for r in (tool, resource, prompt)] == [["a"], ["b"], ["c"]]
    assert map_texts(tool, str.upper)["content"][0]["text"] == "A"
    assert map_texts(tool, str.upper)["content"][1] == {"type": "image", "data": "x"}
    assert map_texts(resource, str.upper)["contents"] == [
        {"uri": "u://1", "text": "B"}, {"uri": "u://2", "blob": "AA"}]
    assert map_texts(prompt, str.upper)["messages"][0]["content"]["text"] == "C"
    assert tool["content"][0]["text"] == "a", "the result given is left as it was"


def test_a_plugin_whose_kinds_are_not_a_set_of_known_kinds_is_refused():
    import hashlib

    import pytest

    from daemon.hotswap.source import PluginSource, Refused, load_class

    def load(kinds: str) -> type[Plugin]:
        code = ("from daemon.plugin import Plugin\n"
                f"class P(Plugin):\n    name = 'p'\n    kinds = {kinds}\n").encode()
        return load_class(PluginSource("p.py", code, hashlib.sha256(code).hexdigest()))
    assert load('{"resource", "prompt"}').kinds == {"resource", "prompt"}
    assert load('["tool"]').kinds == ["tool"]
    for bad in ('"resource"', '{"resources"}', '{"tool": 1}'):
        with pytest.raises(Refused, match="kinds must be a set"):
            load(bad)
