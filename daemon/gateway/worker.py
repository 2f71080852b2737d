"""Gateway worker job: serves the agent calls the master routes to it.

Calls arrive as bus envelopes; each runs as its own task (so a slow tool never holds up
another call) and is cancelled if the agent cancels or leaves.  On SIGTERM the worker
takes nothing new (the master stops routing to an incarnation once it is asked to
stop) and finishes what it has in flight before it exits.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from daemon import metrics
from daemon.audit.link import AuditLink, audit_unavailable
from daemon.gateway import a2a_tool, plugin_chain
from daemon.gateway.a2a_calls import A2aCalls
from daemon.gateway.calls import Answer, CallHandler, Pending
from daemon.gateway.llm_calls import LlmCalls
from daemon.gateway.passthrough import KindTrace
from daemon.gateway.permissions import Policy
from daemon.gateway.plugin_host import PluginHost, state_bytes
from daemon.gateway.upstream_links import UpstreamLinks
from daemon.ipc import messages
from daemon.protocol import jsonrpc
from daemon.worker.background import background
from daemon.worker.call_tasks import CallTasks
from daemon.worker.runtime import WorkerHandle

log = logging.getLogger("gateway")


class GatewayService:
    def __init__(self, worker: WorkerHandle, options: dict[str, Any],
                 plugin_specs: list[dict[str, Any]], audit: dict[str, Any]) -> None:
        self.worker = worker
        self.links = UpstreamLinks(worker.context)
        self.upstreams: dict[str, Any] = {}  # the master's last word on them
        self.plugins = PluginHost()
        # the plugins the master has committed, with their latest state: before READY,
        # so a (re)started worker never serves a call without its guardrails
        self.plugins.install(plugin_specs)
        self.audit = AuditLink.from_options(
            worker.context, audit,
            messages.worker_identity(worker.name, worker.incarnation).decode())
        self.slot = worker.slot
        self.links.asks.audit, self.links.asks.worker = self.audit, worker.name
        self.links.bare = str(options.get("bare_upstream", ""))
        self.handler = CallHandler(Policy.from_options(options), self.links.update({}),
                                   self.plugins, self.audit, worker.name,
                                   audit["arguments"] == "full", self.slot)
        self.llm = LlmCalls(options.get("llm", {}), self.handler.policy.agent_roles,
                            self.plugins, self.audit, worker.name, self.slot,
                            worker.send_raw, worker.send_raw_now)
        self.a2a = A2aCalls(options.get("a2a", {}), self.handler.policy.agent_roles,
                            self.plugins, self.audit, worker.name, self.slot,
                            worker.send_raw, worker.send_raw_now, options.get("a2a_cards"))
        self.handler.tools = a2a_tool.register(self.handler.tools, self.a2a)
        self.tasks: CallTasks[int] = CallTasks()
        # calls to inline tools, stepped together in one task (see call_tasks.step)
        self.batch: dict[int, Pending] = {}
        self._batch_keys = itertools.count(-1, -1)  # below every call's seq
        self.tally = metrics.GatewayTally(plugin_chain.passes)
        worker.on_raw(self.on_envelope)
        worker.on(messages.Config, self.on_config)
        worker.on(messages.Upstreams, self.on_upstreams)
        worker.on(messages.PluginPrepare, self.on_swap)
        worker.on(messages.PluginCommit, self.on_swap)
        worker.on(messages.PluginAbort, self.on_swap)
        worker.on(messages.PluginUnload, self.on_swap)
        worker.on(messages.PluginSnapshot, self.on_swap)

    def on_envelope(self, payload: bytes) -> None:
        kind = payload[:1]
        if kind == messages.CALL:
            seq, agent, tool, raw = messages.unpack_call(payload)
            slot = self.slot
            if slot is None:
                begun = self.handler.begin(agent, tool, raw, seq)
            else:
                slot.running(seq)
                try:
                    begun = self.handler.begin(agent, tool, raw, seq)
                finally:
                    slot.idle()
            if isinstance(begun, Answer):
                self.answer(seq, begun)
            elif begun.tool.inline is not None:  # only the chain's hooks might wait
                if not self.batch:
                    self.tasks.start(next(self._batch_keys), self.serve_batch())
                self.batch[seq] = begun
            else:
                self.tasks.start(seq, self.serve(seq, begun))
        elif kind == messages.LLM_CALL:
            seq, agent, method, raw = messages.unpack_call(payload)
            self.tasks.start(seq, self.llm.serve(seq, agent, method or "", raw))
        elif kind == messages.A2A_CALL:
            seq, agent, method, raw = messages.unpack_call(payload)
            self.tasks.start(seq, self.a2a.serve(seq, agent, method or "", raw))
        elif kind == messages.CREDIT:
            self.llm.credits.taken(*messages.unpack_credit(payload))
        elif kind == messages.CANCEL:
            seq = messages.unpack_seq(payload)[0]
            if self.batch.pop(seq, None) is None:  # not started yet: it never will be
                self.tasks.cancel(seq)
        elif kind == messages.ANSWER:  # an agent answers what an upstream asked it
            self.links.asks.answer(payload)

    async def serve_batch(self) -> None:
        """The calls to inline tools that came in this turn of the loop, each stepped by
        hand; one whose hooks wait carries on as its own task."""
        batch = self.batch  # consumed in place: a cancel may still take a call out
        slot = self.slot
        while batch:
            seq = next(iter(batch))
            pending = batch.pop(seq)
            # a chain of plain-function hooks: the call runs without a coroutine
            if slot is None:
                answer = self.handler.finish_now(pending)
            else:
                slot.running(seq)
                try:
                    answer = self.handler.finish_now(pending)
                finally:
                    slot.idle()
            if answer is None:
                self.tasks.step(seq, self.serve(seq, pending))
                continue
            self.answer(seq, answer)
            if slot is not None and slot.interrupted:  # as serve() does
                slot.interrupted = False
                self.worker.read_bus()

    def answer(self, seq: int, answer: Answer) -> None:
        """Send the response once its audit record is durable (at once in "never", and
        when the call already failed because the audit log could not record it)."""
        record = answer.record
        if record is None:
            self.worker.send_raw(messages.pack_reply(seq, answer.reply))
            return

        def durable(error: str | None) -> None:
            reply = answer.reply
            if error is not None:
                failed = audit_unavailable(error)
                reply = jsonrpc.error(answer.rid, failed.code, failed.message)
            self.worker.send_raw(messages.pack_reply(seq, reply))
            trace = answer.trace
            if trace is not None:
                label = trace.tool
                if isinstance(trace, KindTrace):  # a resource, prompt or completion
                    label = trace.metric or label
                self.tally.call(label if trace.known and label else "unknown",
                                trace.agent, answer.status if error is None else "audit_error",
                                time.perf_counter() - trace.started)
                self.tally.decisions(trace.trail)
        if answer.audit_failed:  # its intent record was refused: do not wait twice
            self.audit.submit(record)
            durable(None)
        else:
            self.audit.submit(record, durable)

    async def serve(self, seq: int, pending: Pending) -> None:
        try:
            if pending.tool.inline is not None:  # pure: no progress, nothing to announce
                answer = await self.handler.finish(pending)
            else:
                answer = await self.handler.finish(
                    pending, self.worker.send_raw,
                    # Before a tool with effects starts, the master must know: if this
                    # worker dies from then on, the outcome is unknown (-32014); before,
                    # it re-routes.
                    lambda: self.worker.send_raw_now(messages.pack_started(seq)))
        except asyncio.CancelledError:  # the agent cancelled or left: MCP wants no response
            self.audit.submit(pending.trace.call_record({"status": "cancelled"}))
            raise
        self.answer(seq, answer)
        if self.slot is not None and self.slot.interrupted:
            # The master may have quarantined the agent whose hook overran and cancelled
            # its other calls, queued here behind this one: read that before they run.
            self.slot.interrupted = False
            self.worker.read_bus()

    def on_swap(self, message: messages.PluginStep) -> None:
        """One step of the master's all-or-nothing swap; the reply says how it went."""
        reply = messages.PluginReply(token=message.token, ok=True)
        try:
            match message:
                case messages.PluginPrepare(spec=spec):
                    self.plugins.prepare(spec)
                case messages.PluginCommit(name=name):
                    hosted = self.plugins.commit(name)
                    log.info("%s: plugin %s v%s serving", self.worker.name, name,
                             hosted.version)
                case messages.PluginAbort(name=name):
                    self.plugins.abort(name)
                case messages.PluginSnapshot():
                    reply = messages.PluginReply(token=message.token, ok=True,
                                                 plugins=self.plugins.snapshot())
                case messages.PluginUnload(name=name):
                    self.plugins.unload(name)
                    log.info("%s: plugin %s unloaded", self.worker.name, name)
        except Exception as exc:
            reply = messages.PluginReply(token=message.token, ok=False,
                                         error=f"{exc.__class__.__name__}: {exc}")
        self.worker.send(reply)

    async def report_metrics(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.tally.flush()
            self.llm.tally.flush()

    async def snapshot_states(self, interval: float) -> None:
        """Send the plugins' state to the master when it changed, so that a restarted
        worker resumes from it (at most ``interval`` seconds old)."""
        last = b""
        while True:
            await asyncio.sleep(interval)
            current = state_bytes(self.plugins)
            if current != last:
                self.worker.send(messages.PluginState(plugins=self.plugins.snapshot()))
                last = current

    def on_upstreams(self, message: messages.Upstreams) -> None:
        self.upstreams = message.upstreams
        self.handler.tools = a2a_tool.register(self.links.update(message.upstreams), self.a2a)

    def on_config(self, message: messages.Config) -> None:
        self.handler.policy = Policy.from_options(message.gateway)
        self.llm.apply(message.gateway.get("llm", {}), self.handler.policy.agent_roles)
        self.a2a.apply(message.gateway.get("a2a", {}), self.handler.policy.agent_roles,
                       message.gateway.get("a2a_cards") or {})
        # peers added or removed: the a2a__ tools follow (the upstreams' links stay)
        self.handler.tools = a2a_tool.register(self.links.update(self.upstreams), self.a2a)
        log.info("%s: gateway settings updated", self.worker.name)

    async def drain(self) -> None:
        if self.tasks:
            log.info("%s: finishing %d calls in flight", self.worker.name, len(self.tasks))
            await self.tasks.drain()
        await self.audit.drain(self.audit.timeout)
        self.audit.close()
        self.links.close()
        await self.llm.close()
        await self.a2a.close()


async def run(worker: WorkerHandle, audit: dict[str, Any], gateway: dict[str, Any] | None = None,
              plugins: list[dict[str, Any]] | None = None,
              snapshot_interval: float = 2.0) -> None:
    service = GatewayService(worker, gateway or {}, plugins or [], audit)
    async with background(service.snapshot_states(snapshot_interval), service.report_metrics()):
        await worker.ready()
        await worker.stopping.wait()
        await service.drain()  # calls in flight, then the audit link; then the loops end
    service.tally.flush()
    service.llm.tally.flush()
    worker.send(messages.PluginState(plugins=service.plugins.snapshot()))
