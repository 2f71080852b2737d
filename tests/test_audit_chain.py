"""The audit log records every call, and `audit verify` finds any tampering."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.audit_helpers import audit_dir, calls, records, verify
from tests.conftest import CLI, Daemon
from tests.gateway_helpers import agent, gateway_config
from tests.plugin_versions import COUNTER_V1


@pytest.fixture
def rotated_log(start_daemon, state_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A stopped daemon's audit dir spanning several files, and its shipped checkpoints."""
    ship = tmp_path / "shipped"
    d: Daemon = start_daemon(extra={**gateway_config(), "audit": {
        "rotate_bytes": 1500, "checkpoint_records": 5, "ship_dir": str(ship)}})
    d.wait_ready()
    with agent(d, "bob") as bob:
        for i in range(30):
            text = bob.call_tool("echo", {"i": i})["content"][0]["text"]
            assert json.loads(text) == {"i": i}
    d.stop()
    files = sorted(audit_dir(state_dir).glob("audit-*.jsonl"))
    assert len(files) >= 4, files
    return audit_dir(state_dir), ship / "checkpoints.jsonl"


def tampered(original: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(original, copy)
    return copy


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_calls_are_recorded_with_arguments_outcome_and_worker(rotated_log):
    directory, _ = rotated_log
    made = calls(directory)
    assert [r["args"] for r in made] == [{"i": i} for i in range(30)]
    first = made[0]
    assert first["agent"] == "bob" and first["tool"] == "echo"
    assert first["worker"].startswith("gateway-")
    assert first["outcome"]["status"] == "ok" and first["outcome"]["isError"] is False
    assert len(first["outcome"]["result_sha256"]) == 64 and first["outcome"]["bytes"] > 0
    canonical = json.dumps(first["args"], sort_keys=True, separators=(",", ":"))
    assert first["args_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    everything = records(directory)
    assert everything[0]["kind"] == "genesis" and everything[0]["n"] == 0
    assert [r["n"] for r in everything] == list(range(len(everything)))
    # each new file opens with the previous file's last hash
    for path in sorted(directory.glob("audit-*.jsonl"))[1:]:
        head = json.loads(lines_of(path)[0])
        assert head["kind"] == "rotate" and head["from"].startswith("audit-")


def test_verify_passes_an_untouched_log_and_its_shipped_checkpoints(rotated_log):
    directory, shipped = rotated_log
    out = verify(directory, "--checkpoints", shipped)
    assert out.returncode == 0, out.stdout + out.stderr
    total = len(records(directory))
    assert out.stdout.startswith(f"ok, {total} records in ")
    assert "signed checkpoints verified" in out.stdout


def verify_with_file_2_changed(rotated_log, tmp_path, change) -> str:
    """verify's output after ``change`` edited the lines of the second file of a copy."""
    copy = tampered(rotated_log[0], tmp_path, "copy")
    path = copy / "audit-00000002.jsonl"
    lines = lines_of(path)
    change(lines)
    path.write_bytes(b"".join(lines))
    out = verify(copy)
    assert out.returncode == 1, out.stdout
    return out.stdout


def test_verify_catches_an_edited_line(rotated_log, tmp_path):
    def edit(lines: list[bytes]) -> None:
        lines[2] = lines[2].replace(b'"agent":"bob"', b'"agent":"eve"')
    assert "audit-00000002.jsonl line 4: prev does not match the hash of line 3" \
        in verify_with_file_2_changed(rotated_log, tmp_path, edit)


def test_verify_catches_a_deleted_line(rotated_log, tmp_path):
    def delete(lines: list[bytes]) -> None:
        del lines[1]
    out = verify_with_file_2_changed(rotated_log, tmp_path, delete)
    assert "audit-00000002.jsonl line 2: record number" in out and "missing" in out


def test_verify_catches_reordered_lines(rotated_log, tmp_path):
    def swap(lines: list[bytes]) -> None:
        lines[1], lines[2] = lines[2], lines[1]
    out = verify_with_file_2_changed(rotated_log, tmp_path, swap)
    assert "audit-00000002.jsonl line 2:" in out and "out of order" in out


def test_verify_catches_an_inserted_line(rotated_log, tmp_path):
    def replay(lines: list[bytes]) -> None:
        lines.insert(2, lines[1])
    out = verify_with_file_2_changed(rotated_log, tmp_path, replay)
    assert "audit-00000002.jsonl line 3:" in out and "inserted" in out


def test_verify_catches_a_file_removed_from_the_middle(rotated_log, tmp_path):
    copy = tampered(rotated_log[0], tmp_path, "removed")
    (copy / "audit-00000002.jsonl").unlink()
    out = verify(copy)
    assert out.returncode == 1
    assert "audit-00000003.jsonl line 1: does not continue audit-00000001.jsonl" in out.stdout


def test_verify_reports_a_cut_tail_from_the_checkpoints(rotated_log, tmp_path):
    copy = tampered(rotated_log[0], tmp_path, "truncated")
    last = sorted(copy.glob("audit-*.jsonl"))[-1]
    lines = lines_of(last)
    last.write_bytes(b"".join(lines[:-2]))  # whole lines gone: the chain alone is intact
    out = verify(copy)
    assert out.returncode == 1
    assert "truncated" in out.stdout and "were cut off" in out.stdout


def test_shipped_checkpoints_catch_a_tail_cut_with_the_local_checkpoints(rotated_log,
                                                                          tmp_path):
    directory, shipped = rotated_log
    copy = tampered(directory, tmp_path, "rewritten")
    last = sorted(copy.glob("audit-*.jsonl"))[-1]
    last.write_bytes(b"".join(lines_of(last)[:-2]))
    (copy / "checkpoints.jsonl").unlink()  # the attacker removed the local evidence too
    assert verify(copy).returncode == 0  # locally, nothing shows...
    out = verify(copy, "--checkpoints", shipped)  # ...the shipped copy does
    assert out.returncode == 1 and "truncated" in out.stdout


def test_verify_of_the_newest_file_alone_still_catches_a_cut_tail(rotated_log, tmp_path):
    copy = tampered(rotated_log[0], tmp_path, "cut")
    last = sorted(copy.glob("audit-*.jsonl"))[-1]
    assert verify(last).returncode == 0, "untouched, the file alone verifies"
    last.write_bytes(b"".join(lines_of(last)[:-2]))
    out = verify(last)  # the checkpoints beside it are found and applied
    assert out.returncode == 1 and "were cut off" in out.stdout, out.stdout + out.stderr


def test_verify_of_an_older_file_alone_leaves_later_checkpoints_to_later_files(rotated_log):
    first = sorted(rotated_log[0].glob("audit-*.jsonl"))[0]
    out = verify(first)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "signed checkpoints verified" in out.stdout and "later files" in out.stderr


def test_verify_of_a_file_without_checkpoints_fails_saying_how_to_give_them(rotated_log,
                                                                           tmp_path):
    directory, shipped = rotated_log
    alone = tmp_path / "alone"
    alone.mkdir()
    last = sorted(directory.glob("audit-*.jsonl"))[-1]
    shutil.copy(last, alone / last.name)
    out = verify(alone / last.name)
    assert out.returncode == 1
    assert "cannot be detected without the signed checkpoints" in out.stdout
    assert "--checkpoints" in out.stdout
    out = verify(alone / last.name, "--checkpoints", shipped)  # and no genesis to name a key
    assert out.returncode == 1 and "give --key" in out.stdout
    key = records(directory)[0]["key"]
    out = verify(alone / last.name, "--checkpoints", shipped, "--key", key)
    assert out.returncode == 0 and "signed checkpoints verified" in out.stdout, out.stdout


def test_verify_refuses_a_forged_checkpoint(rotated_log, tmp_path):
    copy = tampered(rotated_log[0], tmp_path, "forged")
    path = copy / "checkpoints.jsonl"
    lines = lines_of(path)
    forged = json.loads(lines[0])
    forged["n"] += 1000
    lines[0] = json.dumps(forged).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    out = verify(copy)
    assert out.returncode == 1 and "bad signature" in out.stdout


def test_torn_tail_is_cut_noted_and_recorded_on_restart(start_daemon, state_dir):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    with agent(d, "bob") as bob:
        bob.call_tool("echo", {"before": "crash"})
    d.stop()
    directory = audit_dir(state_dir)
    path = sorted(directory.glob("audit-*.jsonl"))[-1]
    torn = b'{"n":99,"prev":"abc'
    with path.open("ab") as f:
        f.write(torn)  # what a crash in the middle of a write leaves
    out = verify(directory)
    assert out.returncode == 0 and "torn last line" in out.stderr
    d2 = start_daemon(extra=gateway_config())
    d2.wait_ready()
    with agent(d2, "bob") as bob:
        bob.call_tool("echo", {"after": "restart"})
    assert "torn line of 19 bytes" in d2.log()
    d2.stop()
    assert not path.read_bytes().endswith(torn)
    noted = [r for r in records(directory) if r["kind"] == "torn_tail"]
    assert len(noted) == 1 and noted[0]["bytes"] == len(torn)
    assert [c["args"] for c in calls(directory)] == [{"before": "crash"}, {"after": "restart"}]
    out = verify(directory)
    assert out.returncode == 0, out.stdout


def test_plugin_decisions_name_the_plugin_and_version(start_daemon, state_dir, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "counter.py").write_text(COUNTER_V1)
    d = start_daemon(extra={**gateway_config(), "plugins": {"dirs": [str(plugins)]}})
    d.wait_ready()
    with agent(d, "bob") as bob:
        assert "[v1 #1]" in bob.call_tool("echo", {"x": 1})["content"][0]["text"]
        denied = bob.call_tool("echo", {"blocked": True})
        assert denied["isError"] is True
    allowed, refused = calls(audit_dir(state_dir))
    assert allowed["decisions"] == [  # what a hook did, in full
        {"plugin": "counter", "version": "1", "hook": "after", "verdict": "rewrite",
         "ms": allowed["decisions"][0]["ms"]}]
    # which version let it pass unchanged, by hook
    assert allowed["allowed"] == {"before": {"counter": "1"}, "after": {}}
    assert refused["outcome"]["status"] == "denied" and refused["outcome"]["by"] == "counter"
    assert refused["decisions"][0]["verdict"] == "deny"
    assert refused["decisions"][0]["reason"] == "blocked by v1"
    tail = d.cli("audit", "tail", "--denied")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.count("\n") == 1 and "[deny by counter v1 (before): blocked by v1]" \
        in tail.stdout
    assert "bob echo" in d.cli("audit", "tail", "--agent", "bob", "--tool", "echo").stdout
    assert d.cli("audit", "tail", "--agent", "alice").stdout == ""


def test_audit_cli_errors_are_one_line(tmp_path):
    out = subprocess.run([*CLI, "audit", "verify", str(tmp_path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and "no audit files" in out.stdout


def test_audit_tail_follow_prints_new_records_as_they_are_written(start_daemon, state_dir):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    with agent(d, "alice") as alice, agent(d, "bob") as bob:
        bob.call_tool("echo", {"who": "bob", "i": 1})
        follower = subprocess.Popen([*CLI, "audit", "tail", "-f", "-n", "1", "--agent", "bob",
                                     "--json", "--config", str(d.config)],
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert follower.stdout is not None
            assert json.loads(follower.stdout.readline())["args"] == {"who": "bob", "i": 1}
            alice.call_tool("echo", {"who": "alice"})  # filtered out
            bob.call_tool("echo", {"who": "bob", "i": 2})
            assert json.loads(follower.stdout.readline())["args"] == {"who": "bob", "i": 2}
        finally:
            follower.kill()
            follower.wait()


def test_digest_mode_keeps_only_the_arguments_digest(start_daemon, state_dir):
    d = start_daemon(extra={**gateway_config(), "audit": {"arguments": "digest"}})
    d.wait_ready()
    with agent(d, "bob") as bob:
        bob.call_tool("echo", {"card": "4111 1111 1111 1111"})
    (made,) = calls(audit_dir(state_dir))
    assert "args" not in made
    assert made["args_sha256"] == hashlib.sha256(b'{"card":"4111 1111 1111 1111"}').hexdigest()
    assert b"4111" not in b"".join(p.read_bytes() for p in audit_dir(state_dir).glob("*.jsonl"))


def test_a_permissive_plugins_denials_are_audited_not_enforced(start_daemon, state_dir,
                                                              tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "counter.py").write_text(COUNTER_V1)
    d = start_daemon(extra={**gateway_config(), "plugins": {"dirs": [str(plugins)]},
                            "plugins.config.counter": {"mode": "permissive"}})
    d.wait_ready()
    with agent(d, "bob") as bob:
        assert bob.call_tool("echo", {"blocked": True})["isError"] is False
    (made,) = calls(audit_dir(state_dir))
    assert made["outcome"]["status"] == "ok"
    assert made["decisions"][0]["verdict"] == "would_deny"
    assert made["decisions"][0]["reason"] == "blocked by v1"
    assert "[would_deny by counter v1 (before): blocked by v1]" in d.cli(
        "audit", "tail", "--denied").stdout


def test_files_rotate_by_age_too(start_daemon, state_dir):
    d = start_daemon(extra={**gateway_config(), "audit": {"rotate_seconds": 0.5}})
    d.wait_ready()
    with agent(d, "bob") as bob:
        bob.call_tool("echo", {"i": 1})
        time.sleep(0.7)
        bob.call_tool("echo", {"i": 2})
    files = sorted(audit_dir(state_dir).glob("audit-*.jsonl"))
    assert len(files) >= 2
    assert json.loads(lines_of(files[-1])[0])["kind"] == "rotate"
    assert verify(audit_dir(state_dir)).returncode == 0


def test_a_log_ending_in_a_record_longer_than_a_mebibyte_continues(start_daemon, state_dir):
    big = {**gateway_config(), "listen": {"tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*",
                                          "max_message_bytes": 4 << 20}}
    d = start_daemon(extra=big)
    d.wait_ready()
    with agent(d, "bob") as bob:
        bob.call_tool("echo", {"blob": "x" * (2 << 20)})
    d.stop()
    d2 = start_daemon(extra=big)
    d2.wait_ready()
    with agent(d2, "bob") as bob:
        bob.call_tool("echo", {"after": "restart"})
    d2.stop()
    assert [sorted(c["args"]) for c in calls(audit_dir(state_dir))] == [["blob"], ["after"]]
    assert verify(audit_dir(state_dir)).returncode == 0
