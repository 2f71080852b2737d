"""An agent reaches exactly the tools its roles name: a name that only looks like one
(case, whitespace, NUL, unicode look-alikes and compatibility forms, path tricks, `__`
injected to reach another upstream) answers -32602 "Unknown tool" exactly like a tool
that does not exist, is never listed, and never reaches an upstream.

dave's role allows `echo` and `notes__read_*`; the upstreams `notes` (read_note, add,
secret_tool) and `vault` (read_note, secret_tool) write down every call they receive."""

from __future__ import annotations

import pytest

from daemon import config
from daemon.gateway.permissions import Policy
from tests.audit_helpers import audit_dir, calls
from tests.conftest import wait_for, write_config
from tests.security.conftest import DAVE, client, received
from tests.security.raw import RawAgent, call

LOOK_ALIKES = [
    "Echo", "ECHO", " echo", "echo ", "echo\t", "echo\n", "echo\u0000", "echo\u0000x",
    "\ufeffecho", "echo\u200b", "\uff45\uff43\uff48\uff4f",  # fullwidth: NFKC folds it to "echo"
    "\u0435cho", "e\u0441ho", "ech\u043e",  # Cyrillic ie, es, o
    "\u212fcho", "echo\u0301",
    "Notes__read_note", "notes__READ_note", "notes__read_note ", " notes__read_note",
    "notes__read_note\u0000", "notes__read_note\u0000x", "notes__read_note\n",
    "\uff4e\uff4f\uff54\uff45\uff53__read_note", "notes\uff3f\uff3fread_note",
    "notes__read_note\u037a",
    "notes__read_../add", "notes__read_note/../add", "notes__read_note/../../vault__read_note",
    "notes__read_*", "notes__read_[a-z]*", "notes__read_?ote",
    "notes____add", "notes___add", "notes__add", "notes__secret_tool", "notes__",
    "notes__read_note__vault__secret_tool", "notes__vault__secret_tool",
    "notes__read_vault__read_note", "vault__read_note", "vault__secret_tool",
    "vault__notes__read_note", "__notes__read_note", "notes", "read_note", "secret_tool",
    "", "__", "no_such_tool",
]


def unknown(name: str) -> dict:
    return {"code": -32602, "message": f"Unknown tool: {name}"}


def test_an_agent_lists_exactly_the_tools_its_roles_allow(gateway):
    with client(gateway, "dave") as dave:
        assert sorted(t["name"] for t in dave.list_tools()) == ["echo", "notes__read_note"]


@pytest.mark.parametrize("transport", ["tcp", "zmq"])
def test_look_alike_names_answer_unknown_tool_and_never_reach_an_upstream(gateway, transport):
    before = {u: len(received(gateway.state_dir, u)) for u in ("notes", "vault")}
    with RawAgent(gateway, transport) as dave:
        assert "result" in dave.initialize(DAVE)
        wrong = {}
        for i, name in enumerate(LOOK_ALIKES, 1):
            answer = dave.ask(call(i, name, {"name": "hello"}))
            if answer.get("id") != i or answer.get("error") != unknown(name):
                wrong[name] = answer
        assert wrong == {}
        # the genuine names still work, so the refusals above are not a broken gateway
        answer = dave.ask(call(1000, "notes__read_note", {"name": "hello"}))
        assert answer["result"]["content"][0]["text"] == 'read_note {"name": "hello"}'
        assert "result" in dave.ask(call(1001, "echo", {"x": 1}))
    wait_for(lambda: len(received(gateway.state_dir, "notes")) == before["notes"] + 1, 10,
             "the genuine call to reach notes")
    got = received(gateway.state_dir, "notes")[before["notes"]:]
    assert len(got) == 1 and '"name":"read_note"' in got[0]
    assert len(received(gateway.state_dir, "vault")) == before["vault"]


def test_the_audit_log_shows_each_look_alike_as_denied_or_unknown_never_run(gateway):
    with RawAgent(gateway) as dave:
        dave.initialize(DAVE)
        for i, name in enumerate(LOOK_ALIKES, 1):
            dave.ask(call(i, name))
    tricks = set(LOOK_ALIKES)
    records = wait_for(lambda: [r for r in calls(audit_dir(gateway.state_dir))
                                if r.get("agent") == "dave" and r.get("tool") in tricks], 10,
                       "records of the look-alike calls")
    assert {r["outcome"]["status"] for r in records} <= {"denied", "error"}
    assert all(r["outcome"].get("by", "roles") == "roles" for r in records)
    hidden = [r for r in records if r["tool"] in ("notes__add", "vault__secret_tool")]
    assert hidden and all(r["outcome"]["status"] == "denied" for r in hidden)


def test_role_globs_match_the_exact_name_case_sensitively():
    policy = Policy({"dave": ("reader",)}, {"reader": ("echo", "notes__read_*")})
    assert policy.may_call("dave", "echo") and policy.may_call("dave", "notes__read_note")
    for name in ("Echo", "echo ", "\uff45\uff43\uff48\uff4f", "notes__READ_note", "notes__add",
                 "vault__read_note", "Notes__read_note"):
        assert not policy.may_call("dave", name), name


def test_the_role_cache_stays_bounded_however_many_names_an_agent_tries():
    policy = Policy({"dave": ("reader",)}, {"reader": ("echo",)})
    for i in range(100_000):
        assert not policy.may_call("dave", f"probe-{i}")
    assert len(policy._cache) <= 10_000


@pytest.mark.parametrize("upstream", ["notes_", "no__tes", "\uff4e\uff4f\uff54\uff45\uff53",
                                      "n\u043etes", "notes/x", ""])
def test_an_upstream_name_that_would_make_tool_names_ambiguous_is_refused(tmp_path, upstream):
    """"a_" + "__" + "b" and "a" + "__" + "_b" would both be "a___b": one upstream could
    shadow the other's tool; non-ASCII names would look like others."""
    path = write_config(tmp_path / "wa.toml", {f'upstreams."{upstream}"': {"command": ["true"]}})
    with pytest.raises(config.ConfigError, match="not ending in '_'"):
        config.load(str(path))
