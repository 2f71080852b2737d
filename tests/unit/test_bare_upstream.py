"""``[upstreams.X] prefix = ""``: one upstream's tools and prompts keep their own names,
never taking a name the gateway or another upstream has."""

from __future__ import annotations

import re

import pytest
import zmq

from daemon import config
from daemon.gateway.permissions import Policy
from daemon.gateway.upstream_links import UpstreamLinks


def offered(*tools: str, prompts: tuple[str, ...] = ()) -> dict[str, object]:
    # "restarting" with an endpoint: listed and routable, without opening a socket
    return {"state": "restarting", "endpoint": "ipc:///nowhere", "retry_at": None,
            "tools": [{"name": t, "inputSchema": {"type": "object"}} for t in tools],
            "prompts": [{"name": p} for p in prompts]}


def test_the_bare_upstreams_tools_and_prompts_keep_their_names_unless_taken():
    ctx = zmq.Context()
    try:
        links = UpstreamLinks(ctx)
        links.bare = "ref"
        registry = links.update({
            "ref": offered("add", "echo", "files__x", "a2a__peer", "files", "plain__y",
                           prompts=("greet", "files__p")),
            "files": offered("x", "read", prompts=("p",))})
        names = [t.name for t in registry.all()]
        assert {"add", "files", "plain__y", "files__read", "files__x", "echo"} <= set(names)
        assert "a2a__peer" not in names
        assert registry.get("echo").origin is None, "the built-in echo stays the built-in"
        assert registry.get("files__x").origin == ("files", "x"), "files__ is files' own"
        assert registry.get("add").origin == ("ref", "add")
        assert sorted(registry.prompts) == ["files__p", "greet"]
        assert registry.prompts["files__p"].upstream == "files"
        assert registry.prompts["greet"].name == "greet"
    finally:
        ctx.term()


def test_without_the_key_every_upstream_keeps_its_prefix():
    ctx = zmq.Context()
    try:
        registry = UpstreamLinks(ctx).update({"ref": offered("add", prompts=("greet",))})
        assert registry.get("ref__add") is not None and registry.get("add") is None
        assert list(registry.prompts) == ["ref__greet"]
    finally:
        ctx.term()


def test_an_unknown_name_belongs_to_the_bare_upstream_for_its_down_answer():
    policy = Policy({}, {}, upstreams=("files", "ref"), bare_upstream="ref")
    assert policy.upstream_of("add") == "ref"
    assert policy.upstream_of("files__read") == "files"
    assert policy.upstream_of("a2a__peer") is None
    assert Policy({}, {}, upstreams=("files",)).upstream_of("add") is None


@pytest.mark.parametrize("text, expected", [
    ('[upstreams.a]\ncommand = ["x"]\nprefix = "a_"\n',
     'key upstreams.a.prefix: expected "" (bare names) or no key (names are a__<tool>)'),
    ('[upstreams.a]\ncommand = ["x"]\nprefix = ""\n[upstreams.b]\nurl = "http://b/mcp"\n'
     'prefix = ""\n', 'key upstreams.b.prefix: expected "" on one upstream at most'),
])
def test_a_prefix_other_than_bare_or_two_bare_upstreams_are_refused(tmp_path, text, expected):
    path = tmp_path / "wa.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=re.escape(expected)):
        config.load(str(path))


def test_one_bare_upstream_loads_and_its_gateway_workers_are_told(tmp_path):
    from daemon.master.tree import gateway_options
    path = tmp_path / "wa.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n[upstreams.a]\ncommand = ["x"]\n'
                    'prefix = ""\n[upstreams.b]\ncommand = ["y"]\n')
    settings = config.load(str(path))
    assert settings.config.upstreams["a"].prefix == ""
    assert settings.config.upstreams["b"].prefix is None
    options = gateway_options(settings)
    assert options["bare_upstream"] == "a" and options["upstreams"] == ["a", "b"]
