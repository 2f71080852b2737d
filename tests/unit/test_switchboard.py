"""The master's switchboard on its own: real Authenticator and Quarantine, with fakes only
at the process edge (the worker bus, the gateway workers) and the agent's socket."""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
import zmq

from daemon import config
from daemon.agents_dir import AgentSection
from daemon.audit.link import AuditLink
from daemon.front.auth import Authenticator
from daemon.front.quarantine import Quarantine, QuarantineLimits
from daemon.front.switchboard import Connection, Limits, Switchboard
from daemon.ipc import messages
from daemon.protocol import jsonrpc, mcp
from tests.unit.audit_writer import AuditWriter, short_endpoint

TOKENS = {"alice": "alice-token", "bob": "bob-token", "carol": "carol-token"}


class RecordingBus:
    """The master's end of the worker bus (the process edge): what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        self.flushes = 0
        self.on_payload: Any = None

    def on_data(self, handler: Any) -> None:
        self.on_payload = handler

    def send_raw(self, identity: bytes, payload: bytes) -> None:
        self.sent.append((identity, payload))

    def flush(self) -> None:
        self.flushes += 1

    def calls_to(self, identity: bytes) -> list[tuple[int, str, bytes]]:
        """(seq, agent, raw request) of each CALL envelope sent to ``identity``."""
        unpacked = [messages.unpack_call(p) for i, p in self.sent
                    if i == identity and p[:1] == messages.CALL]
        return [(u[0], u[1], u[-1]) for u in unpacked]  # whatever else the envelope carries

    def cancels(self) -> list[tuple[bytes, int]]:
        return [(i, messages.unpack_seq(p)[0]) for i, p in self.sent
                if p[:1] == messages.CANCEL]


@dataclass(eq=False)
class FakeWorker:
    """A gateway worker slot as the switchboard reads it: identity is None until READY."""

    id: str
    identity: bytes | None = None


class Agent:
    """One agent connection whose socket records what the switchboard sends it."""

    def __init__(self, board: Switchboard, name: str | None = None) -> None:
        self.out: list[bytes] = []
        self.closed = False
        self.conn = Connection(self.out.append, self._close, "test")
        self.name = name
        board.attach(self.conn)
        self.board = board

    def _close(self) -> None:
        self.closed = True

    def call(self, rid: Any, tool: str = "echo", token: bool = True) -> None:
        params: dict[str, Any] = {"name": tool, "arguments": {}}
        if token and self.name is not None:
            params["_meta"] = {mcp.META_TOKEN: TOKENS[self.name]}
        self.send({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})

    def send(self, message: dict[str, Any]) -> None:
        self.board.on_message(self.conn, orjson.dumps(message))

    def replies(self) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in self.out]


def settings() -> config.Settings:
    agents = {name: AgentSection(token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                                 roles=["user"]) for name, token in TOKENS.items()}
    return config.settle(config.Config(roles={"user": config.RoleSection(tools=["*"])},
                                       agents=agents), None)


def switchboard(workers: list[FakeWorker], strikes: int = 3, call_timeout: float = 5.0,
                audit: AuditLink | None = None) -> tuple[Switchboard, RecordingBus]:
    bus = RecordingBus()
    board = Switchboard(bus, lambda: workers,  # type: ignore[arg-type]
                        Authenticator(settings(), "admin-token"),
                        Limits(max_inflight_per_connection=16, max_inflight_per_worker=64,
                               call_timeout=call_timeout),
                        audit=audit, quarantine=Quarantine(QuarantineLimits(strikes=strikes)))
    return board, bus


def reply(board: Switchboard, identity: bytes, seq: int, rid: Any, text: str = "ok") -> None:
    board.on_worker_payload(identity, messages.pack_reply(
        seq, jsonrpc.result(rid, mcp.text_result(text))))


def error_codes(agent: Agent) -> list[int]:
    return [r["error"]["code"] for r in agent.replies() if "error" in r]


def test_each_pipelined_call_gets_exactly_one_response_whatever_order_the_worker_answers():
    worker = FakeWorker("gateway-0", b"gateway-0#1")
    board, bus = switchboard([worker])
    alice = Agent(board, "alice")
    for rid in (1, 2, "three"):
        alice.call(rid)
    sent = bus.calls_to(worker.identity)
    assert [orjson.loads(raw)["id"] for _, _, raw in sent] == [1, 2, "three"]
    assert {agent for _, agent, _ in sent} == {"alice"}
    (s1, _, _), (s2, _, _), (s3, _, _) = sent
    reply(board, worker.identity, s3, "three")
    reply(board, worker.identity, s1, 1)
    reply(board, worker.identity, s1, 1, "a duplicate")  # answered already: dropped
    reply(board, worker.identity, s2, 2)
    assert [r["id"] for r in alice.replies()] == ["three", 1, 2]
    assert not alice.conn.inflight


def test_an_id_already_in_flight_on_the_connection_answers_minus_32600_and_is_not_routed():
    worker = FakeWorker("gateway-0", b"gateway-0#1")
    board, bus = switchboard([worker])
    alice = Agent(board, "alice")
    alice.call(7)
    alice.call(7)
    assert error_codes(alice) == [jsonrpc.INVALID_REQUEST]
    assert "already in flight" in alice.replies()[0]["error"]["message"]
    assert len(bus.calls_to(worker.identity)) == 1
    (seq, _, _), = bus.calls_to(worker.identity)
    reply(board, worker.identity, seq, 7)
    alice.call(7)  # answered: the id may be used again
    assert len(bus.calls_to(worker.identity)) == 2


def test_a_call_without_a_valid_token_answers_minus_32010_and_reaches_no_worker():
    worker = FakeWorker("gateway-0", b"gateway-0#1")
    board, bus = switchboard([worker])
    stranger = Agent(board)
    stranger.call(1, token=False)
    stranger.send({"jsonrpc": "2.0", "id": 2, "method": "tools/list",
                   "params": {"_meta": {mcp.META_TOKEN: "not-a-token"}}})
    stranger.send({"jsonrpc": "2.0", "id": 3, "method": "initialize",
                   "params": {"_meta": {mcp.META_TOKEN: "not-a-token"}}})
    assert error_codes(stranger) == [jsonrpc.UNAUTHENTICATED] * 3
    assert [r["id"] for r in stranger.replies()] == [1, 2, 3]
    assert bus.sent == []


def test_calls_go_to_the_worker_their_agents_name_hashes_to_even_after_a_token_handshake():
    workers = [FakeWorker("gateway-0", b"gateway-0#1"), FakeWorker("gateway-1", b"gateway-1#1")]
    board, bus = switchboard(workers)
    for name in ("alice", "bob", "carol"):
        agent = Agent(board, name)
        agent.send({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {"protocolVersion": "2025-06-18",
                               "_meta": {mcp.META_TOKEN: TOKENS[name]}}})
        assert "result" in agent.replies()[0]
        agent.call(1, token=False)  # the connection is authenticated now
        home = workers[zlib.crc32(name.encode()) % len(workers)]
        assert [a for _, a, _ in bus.calls_to(home.identity)].count(name) == 1
    assert {a for _, a, _ in bus.calls_to(b"gateway-0#1")} == {"bob"}
    assert {a for _, a, _ in bus.calls_to(b"gateway-1#1")} == {"alice", "carol"}


def test_a_call_waits_while_its_worker_is_not_ready_and_goes_out_when_it_is():
    worker = FakeWorker("gateway-0")  # starting: not READY
    board, bus = switchboard([worker])
    alice = Agent(board, "alice")
    alice.call(1)
    alice.call(2)
    assert bus.sent == [] and alice.out == []
    worker.identity = b"gateway-0#1"
    board.worker_ready(worker)
    sent = bus.calls_to(b"gateway-0#1")
    assert [orjson.loads(raw)["id"] for _, _, raw in sent] == [1, 2]
    board.worker_ready(worker)  # told twice: nothing goes twice
    assert len(bus.sent) == 2


def test_a_gone_worker_fails_started_and_culprit_calls_and_resends_the_rest_to_its_successor():
    worker = FakeWorker("gateway-1", b"gateway-1#1")  # alice and carol both hash here
    board, bus = switchboard([worker], strikes=1)
    alice, carol = Agent(board, "alice"), Agent(board, "carol")
    alice.call("started")
    carol.call("culprit")
    alice.call("waiting")
    (started, _, _), (culprit, _, _), (waiting, _, _) = bus.calls_to(b"gateway-1#1")
    board.on_worker_payload(b"gateway-1#1", messages.pack_started(started))

    worker.identity = None  # it died; its replacement is starting
    board.worker_gone(worker, b"gateway-1#1", culprit=culprit)
    assert error_codes(alice) == [jsonrpc.WORKER_CRASHED]
    assert alice.replies()[0]["id"] == "started"
    assert error_codes(carol) == [jsonrpc.CALL_KILLED_WORKER]
    assert bus.calls_to(b"gateway-1#2") == []

    worker.identity = b"gateway-1#2"
    board.worker_ready(worker)
    resent = bus.calls_to(b"gateway-1#2")
    assert [(s, orjson.loads(raw)["id"]) for s, _, raw in resent] == [(waiting, "waiting")]
    reply(board, b"gateway-1#2", waiting, "waiting")
    assert [r["id"] for r in alice.replies()] == ["started", "waiting"]
    # the culprit was a strike (one is enough here): carol is quarantined, alice is not
    carol.call("again")
    assert error_codes(carol)[-1] == jsonrpc.QUARANTINED
    alice.call("again")
    assert [a for _, a, _ in bus.calls_to(b"gateway-1#2")][-1] == "alice"


def test_a_replacement_already_ready_when_the_old_worker_goes_gets_its_calls_at_once():
    worker = FakeWorker("gateway-0", b"gateway-0#1")
    board, bus = switchboard([worker])
    bob = Agent(board, "bob")
    bob.call(1)
    worker.identity = b"gateway-0#2"  # make-before-break: the successor is READY first
    board.worker_gone(worker, b"gateway-0#1")
    assert len(bus.calls_to(b"gateway-0#2")) == 1
    assert bob.out == []


def test_a_call_no_worker_answered_before_its_deadline_expires_with_minus_32016():
    worker = FakeWorker("gateway-0")  # never READY
    board, _ = switchboard([worker], call_timeout=0.5)
    bob = Agent(board, "bob")
    bob.call(1)
    board.expire(time.monotonic())  # not due yet
    assert bob.out == []
    board.expire(time.monotonic() + 2.0)
    assert error_codes(bob) == [jsonrpc.TIMED_OUT]
    assert not bob.conn.inflight


def test_a_quarantined_agent_gets_minus_32019_with_retry_after_and_its_queued_calls_cancelled():
    worker = FakeWorker("gateway-1", b"gateway-1#1")
    board, bus = switchboard([worker], strikes=2)
    alice, carol = Agent(board, "alice"), Agent(board, "carol")
    alice.call("running")
    alice.call("queued")
    carol.call("bystander")
    (running, _, _), (queued, _, _), (bystander, _, _) = bus.calls_to(b"gateway-1#1")
    board.on_worker_payload(b"gateway-1#1", messages.pack_started(running))
    board.strike("alice", "overran", "first")
    assert alice.out == [] and bus.cancels() == []
    flushes = bus.flushes
    board.strike("alice", "overran", "second")  # trips the breaker

    (answer,) = alice.replies()
    assert answer["id"] == "queued"
    assert answer["error"]["code"] == jsonrpc.QUARANTINED
    assert answer["error"]["data"]["retry_after"] > 0
    assert bus.cancels() == [(b"gateway-1#1", queued)]
    assert bus.flushes > flushes  # the cancel leaves before the worker reads its next call
    reply(board, b"gateway-1#1", running, "running")  # a tool had started: it is answered
    assert [r["id"] for r in alice.replies()] == ["queued", "running"]

    alice.call("later")
    assert error_codes(alice)[-1] == jsonrpc.QUARANTINED
    assert "later" not in [orjson.loads(r)["id"] for _, _, r in bus.calls_to(b"gateway-1#1")]
    reply(board, b"gateway-1#1", bystander, "bystander")  # another agent is unaffected
    assert [r["id"] for r in carol.replies()] == ["bystander"]


def test_a_cancellation_notification_cancels_the_call_in_its_worker_and_drops_its_answer():
    worker = FakeWorker("gateway-0", b"gateway-0#1")
    board, bus = switchboard([worker])
    bob = Agent(board, "bob")
    bob.call(1)
    (seq, _, _), = bus.calls_to(b"gateway-0#1")
    bob.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": 1, "reason": "changed my mind"}})
    assert bus.cancels() == [(b"gateway-0#1", seq)]
    reply(board, b"gateway-0#1", seq, 1)
    assert bob.out == []  # a notification has no answer, and the cancelled call none either
    assert not bob.conn.inflight


def test_detaching_a_connection_cancels_its_calls_that_reached_a_worker():
    worker = FakeWorker("gateway-0", b"gateway-0#1")
    board, bus = switchboard([worker])
    bob, bob_again = Agent(board, "bob"), Agent(board, "bob")  # two connections
    bob.call(1)
    bob.call(2)
    bob_again.call(1)
    (s1, _, _), (s2, _, _), (other, _, _) = bus.calls_to(b"gateway-0#1")
    board.detach(bob.conn)
    assert sorted(seq for _, seq in bus.cancels()) == [s1, s2]
    reply(board, b"gateway-0#1", s1, 1)
    reply(board, b"gateway-0#1", other, 1)
    assert bob.out == []
    assert [r["id"] for r in bob_again.replies()] == [1]


def test_a_call_the_master_gives_up_on_is_answered_only_once_its_lost_record_is_written():
    async def scenario(where: str) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        writer = AuditWriter(ctx, where)
        link = AuditLink(ctx, where, "master", durable=True, timeout=5.0, capacity=10)
        try:
            worker = FakeWorker("gateway-1", b"gateway-1#1")
            board, bus = switchboard([worker], audit=link)
            alice = Agent(board, "alice")
            alice.call(1, tool="sleep")
            (seq, _, _), = bus.calls_to(b"gateway-1#1")
            worker.identity = None
            board.worker_gone(worker, b"gateway-1#1", culprit=seq)
            assert alice.out == []  # its record first
            deadline = time.monotonic() + 2.0
            while not alice.out and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            assert error_codes(alice) == [jsonrpc.CALL_KILLED_WORKER]
            (lost,) = writer.records()
            assert (lost["kind"], lost["agent"], lost["tool"], lost["worker"]) == (
                "lost", "alice", "sleep", "gateway-1")
            assert lost["outcome"]["code"] == jsonrpc.CALL_KILLED_WORKER
        finally:
            link.close()
            writer.close()
            ctx.destroy(linger=0)
    with short_endpoint() as where:
        asyncio.run(scenario(where))


def test_a_token_known_once_names_its_agent_every_time_and_a_wrong_one_never() -> None:
    auth = Authenticator(settings(), "admin-token")
    first = auth.agent_for(TOKENS["alice"])
    assert first is not None and first.name == "alice"
    assert auth.agent_for(TOKENS["alice"]) is first
    assert auth.agent_for("alice-token-") is None
    assert auth.agent_for("alice-token-") is None


def test_a_token_a_reload_removed_is_refused_even_after_it_was_used() -> None:
    before = Authenticator(settings(), "admin-token")
    assert before.agent_for(TOKENS["bob"]) is not None
    reloaded = settings()
    reloaded.config.agents.pop("bob")
    assert Authenticator(reloaded, "admin-token").agent_for(TOKENS["bob"]) is None
