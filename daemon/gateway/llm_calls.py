"""What a gateway worker does with one AI gateway request (ipc.messages LLM_CALL).

The master's HTTP front authenticated the agent and passed the body on untouched; here it
is parsed once, then: the agent's roles (``models`` globs: a hidden model answers 404,
exactly like an unknown one), the plugin chain (``call.kind == "llm"``, ``call.tool`` the
model, ``call.arguments`` the body; denials become 403, budgets 429), the providers
(llm.providers: routing, retries, fallback), the answer passed back (streamed chunk by
chunk through gateway.llm_stream), after_call on the whole answer, and one audit record.
STARTED goes to the master just before the provider request: from then on a worker
crash fails the request instead of re-routing it, since the provider may be at work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

import aiohttp
import orjson

from daemon import metrics
from daemon.audit.link import AuditLink
from daemon.gateway import plugin_chain
from daemon.gateway.deadlines import Deadlines
from daemon.gateway.llm_models import ModelList
from daemon.gateway.llm_record import LlmTrace
from daemon.gateway.llm_stream import ChunkGuard, StreamRelay
from daemon.gateway.plugin_host import PluginHost
from daemon.gateway.stream_credit import Credits
from daemon.ipc import messages
from daemon.ipc.call_slot import CallSlot
from daemon.llm import key_scrub
from daemon.llm.apis import Anthropic, Api, OpenAi, provider_error
from daemon.llm.bounded import ResponseTooLarge, read_capped
from daemon.llm.key_scrub import KeyScrub
from daemon.llm.providers import Attempt, Provider, ProviderFailure, Providers
from daemon.llm.texts import usage_of
from daemon.plugin import Call
from daemon.protocol import mcp

log = logging.getLogger("llm")
PATHS = {"llm/chat": "/chat/completions", "llm/embeddings": "/embeddings",
         "llm/messages": "/messages"}
JSON = {"Content-Type": "application/json"}
SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
MAX_MODEL = 256  # characters of a model name
_RETRY_IN = re.compile(r"retry in ([0-9.]+)\s*s")


class Refusal(Exception):
    """An answer of the gateway's own, in the API's error shape."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


class LlmCalls:
    def __init__(self, options: dict[str, Any], agent_roles: dict[str, tuple[str, ...]],
                 plugins: PluginHost, audit: AuditLink, worker: str, slot: CallSlot | None,
                 send: Callable[[bytes], None], send_now: Callable[[bytes], None]) -> None:
        self.plugins = plugins
        self.audit = audit
        self.worker = worker
        self.slot = slot
        self.send = send
        self.send_now = send_now
        self.tally = metrics.LlmTally()
        self.credits = Credits()  # the open streams' windows (gateway.stream_credit)
        self.deadlines = Deadlines()  # request_timeout, one timer for every request
        self.providers = Providers([])
        self.model_list = ModelList()
        self.apply(options, agent_roles)

    def apply(self, options: dict[str, Any], agent_roles: dict[str, tuple[str, ...]]) -> None:
        """Settings (a start, or a reload: the connection pool stays)."""
        old = self.providers
        self.providers = Providers(options.get("providers", []))
        self.providers.adopt(old)
        self.role_models = {r: tuple(p) for r, p in options.get("role_models", {}).items()}
        self.agent_roles = agent_roles
        self.content = str(options.get("content", "digest"))
        self.request_timeout = float(options.get("request_timeout", 600.0))
        self.max_response = int(options.get("max_response_bytes", 16 << 20))
        self.scrubs = {p.name: s for p in self.providers.all if (s := key_scrub.of(p.key))}
        self.model_list.cache.clear()
        self.allowed: dict[tuple[str, str], bool] = {}

    def may_use(self, agent: str, model: str) -> bool:
        key = (agent, model)
        allowed = self.allowed.get(key)
        if allowed is None:
            roles = self.agent_roles.get(agent, ())
            allowed = "admin" in roles or any(fnmatchcase(model, pattern) for role in roles
                                              for pattern in self.role_models.get(role, ()))
            if len(self.allowed) > 4096:  # agents choose the names: stay bounded
                self.allowed.clear()
            self.allowed[key] = allowed
        return allowed

    async def close(self) -> None:
        self.deadlines.close()
        await self.providers.close()

    # -- one request -------------------------------------------------------------------

    async def serve(self, seq: int, agent: str, method: str, request: bytes) -> None:
        api: Api = Anthropic if method == "llm/messages" else OpenAi
        passed, raw = messages.unpack_llm_request(request)
        trace = LlmTrace(self.worker, agent, method, raw, self.content)
        self.deadlines.enter(seq, self.request_timeout)
        try:
            await self._serve(seq, agent, method, raw, api, trace, passed)
        except asyncio.CancelledError:
            if not self.deadlines.expired(seq):  # the agent went away: the provider too
                trace.outcome = {"status": "cancelled"}
                self.audit.submit(trace.record())
                raise
            self._timed_out(seq, api, trace)
        except TimeoutError:
            self._timed_out(seq, api, trace)
        except Refusal as exc:
            self._refuse(seq, api, trace, exc)
        except Exception:
            log.exception("AI gateway request %s of %s failed", method, agent)
            self._refuse(seq, api, trace, Refusal(500, "Internal error in the gateway"))
        finally:
            self.deadlines.leave(seq)

    def _timed_out(self, seq: int, api: Api, trace: LlmTrace) -> None:
        trace.outcome = {"status": "error", "http": 504, "message": "timed out"}
        self._refuse(seq, api, trace, Refusal(504, "Timed out: the request did not end "
                                                   f"within {self.request_timeout:g}s"))

    def _refuse(self, seq: int, api: Api, trace: LlmTrace, exc: Refusal) -> None:
        if trace.outcome.get("status") == "ok":
            trace.outcome = {"status": "error", "http": exc.status, "message": exc.message}
        if trace.streaming:  # the agent has the stream's head: an error event ends it
            self._finish(seq, trace, messages.LLM_END + api.stream_error(exc.status,
                                                                         exc.message))
            return
        headers = {**JSON, **exc.headers}
        self._finish(seq, trace, messages.pack_llm_head(
            exc.status, headers, api.error(exc.status, exc.message, exc.code)))

    def _finish(self, seq: int, trace: LlmTrace, frame: bytes) -> None:
        """Send the last frame once the record is durable (a stream's end, too)."""
        def durable(error: str | None) -> None:
            last = frame
            if error is not None and frame[:1] == messages.LLM_WHOLE:
                api = Anthropic if trace.method == "llm/messages" else OpenAi
                last = messages.pack_llm_head(503, JSON, api.error(
                    503, f"Audit unavailable: the request was not recorded ({error})"))
            self.send(messages.pack_reply(seq, last))
        self.tally.request(trace)
        self.audit.submit(trace.record(), durable)

    async def _serve(self, seq: int, agent: str, method: str, raw: bytes, api: Api,
                     trace: LlmTrace, passed: dict[str, str]) -> None:
        if method == "llm/models":
            listed = await self.model_list.listed(self.providers, self.may_use, agent)
            if raw:  # one model, by id (the master's {"model": id})
                wanted = str(orjson.loads(raw).get("model"))[:MAX_MODEL + 1]
                trace.model = wanted
                one = self.model_list.one(listed, wanted)
                if one is None:
                    raise Refusal(404, *api.not_found(wanted))
                listed = one
            self._finish(seq, trace, messages.pack_llm_head(200, JSON, orjson.dumps(listed)))
            return
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Refusal(400, f"The request body is not valid JSON: {exc}") from None
        if not isinstance(request, dict):
            raise Refusal(400, "The request body must be a JSON object")
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise Refusal(400, "model: a string is required")
        if len(model) > MAX_MODEL:  # names key caches, budgets and metrics: keep them small
            raise Refusal(400, f"model: at most {MAX_MODEL} characters")
        trace.model = model
        not_found = api.not_found(model)
        if not self.may_use(agent, model):
            roles = self.agent_roles.get(agent, ())
            trace.trail.append(("roles", "-", "before_call", "deny",
                                f"roles {', '.join(roles) or '(none)'} do not allow model "
                                f"{model}", 0.0))
            trace.outcome = {"status": "denied", "by": "roles", "http": 404}
            raise Refusal(404, *not_found)
        kind = "anthropic" if api is Anthropic else "openai"
        providers = self.providers.matching(model, kind)
        if not providers:
            if self.providers.matching(model):
                other = "/v1/chat/completions" if api is Anthropic else "/v1/messages"
                raise Refusal(400, f"model {model} is served over the other API: use {other}")
            raise Refusal(404, *not_found)
        if not isinstance(request.get("stream", False), bool):  # a lenient provider
            raise Refusal(400, "stream: a boolean is expected")  # would stream a "true"
        stream = method != "llm/embeddings" and request.get("stream") is True
        trace.stream = stream
        drop_usage = False
        if stream and api is OpenAi:
            options = request.get("stream_options")
            options = options if isinstance(options, dict) else {}
            drop_usage = options.get("include_usage") is not True
            request = {**request, "stream_options": {**options, "include_usage": True}}
        chain = self.plugins.chain_for("llm")  # this request's, whatever a swap does
        call = Call(agent, self.agent_roles.get(agent, ()), model, request, kind="llm")
        redacted: list[Any] = []
        admitted = await plugin_chain.before(chain, call, trace.trail, self.slot, seq,
                                             redacted)
        if isinstance(admitted, dict):
            if redacted:
                trace.kept = redacted[0]
            raise _denial(admitted, trace)
        if admitted.arguments is not request:
            trace.kept = admitted.arguments
        trace.screened = True
        call = admitted
        # The provider may be at work from here: the master must have STARTED first.  It
        # joins this turn's batch (one ZeroMQ send for every call that got here in this
        # turn, instead of one each), which leaves before this call resumes.
        self.send(messages.pack_started(seq))
        attempts: list[Attempt] = []
        try:
            await asyncio.sleep(0)
            provider, response = await self.providers.post(
                providers, PATHS[method], orjson.dumps(call.arguments), attempts, passed)
        except ProviderFailure as exc:
            trace.attempts = [a.record() for a in attempts]
            await self._after_failure(chain, call, trace, seq)
            trace.outcome = {"status": "provider_error", "http": 502, "message": str(exc)}
            raise Refusal(502, f"Provider failure: {exc}",
                          headers={"x-should-retry": "false"}) from None
        except asyncio.CancelledError:
            # dropped (or timed out) before the provider answered: nothing was used, so
            # what a budget reserved goes back.  A stream cut later keeps its estimate
            # charged: what it used is unknown.
            trace.outcome = {"status": "cancelled"}
            await self._after_failure(chain, call, trace, seq)
            raise
        trace.attempts = [a.record() for a in attempts]
        trace.provider = provider.name
        try:
            if response.status >= 300:  # the request's own fault: the provider's answer
                body = self._clean(provider, await self._read(provider, response, trace))
                trace.outcome = {"status": "error", "http": response.status,
                                 "message": body[:300].decode(errors="replace")}
                await self._after_failure(chain, call, trace, seq)
                self._finish(seq, trace, messages.pack_llm_head(response.status, JSON, body))
            elif stream and response.content_type != "text/event-stream":
                trace.outcome = {"status": "provider_error", "http": 502,
                                 "message": f"a stream answered as {response.content_type}"}
                raise Refusal(502, f"Provider failure: {provider.name} answered a stream "
                                   f"request with {response.content_type}, not an event "
                                   "stream", headers={"x-should-retry": "false"})
            elif stream:
                try:
                    await self._stream(seq, api, chain, call, trace, response, drop_usage,
                                       provider)
                finally:
                    self.credits.close(seq)
            else:
                await self._whole(seq, chain, call, trace, response, provider)
        finally:
            response.close()  # read to the end by now, unless cancelled: then it aborts

    async def _whole(self, seq: int, chain: tuple[Any, ...], call: Call, trace: LlmTrace,
                     response: Any, provider: Provider) -> None:
        try:
            body = await self._read(provider, response, trace)
        except (TimeoutError, aiohttp.ClientError) as exc:  # a stall or a cut after the head
            broke = (f"no data for {provider.timeout:g}s" if isinstance(exc, TimeoutError)
                     else f"the answer broke off ({exc.__class__.__name__})")
            trace.outcome = {"status": "provider_error", "http": 502,
                             "message": f"{provider.name}: {broke}"}
            raise Refusal(502, f"Provider failure: {provider.name} sent its response head, "
                               f"then {broke}",
                          headers={"x-should-retry": "false"}) from None
        trace.token()
        body = provider.scrub(body)
        try:
            result = orjson.loads(body)
        except orjson.JSONDecodeError:
            result = None
        if (scrub := self._scrub(provider)) is not None:
            body, result = scrub.json(body, result)
        if not isinstance(result, dict):  # no API answers anything else
            trace.outcome = {"status": "provider_error", "http": 502}
            raise Refusal(502, "Provider failure: the provider's answer is not a JSON "
                               "object", headers={"x-should-retry": "false"})
        failed = provider_error(result)
        if failed is not None:  # a 200 that is not an answer
            trace.outcome = {"status": "provider_error", "http": 502, "message": failed}
            raise Refusal(502, f"Provider failure: {failed}",
                          headers={"x-should-retry": "false"})
        self._usage(chain, call, trace, result)
        if chain:
            given = result
            result = await plugin_chain.after(chain, call, result, trace.trail, self.slot,
                                              seq)
            if result is not given:
                if mcp.META_DENIED in (result.get("_meta") or {}):
                    trace.completion = None
                    raise _denial(result, trace)
                body = orjson.dumps(result)
        trace.completion = _completion(result, body, self.content)
        self._finish(seq, trace, messages.pack_llm_head(200, JSON, body))

    async def _stream(self, seq: int, api: Api, chain: tuple[Any, ...], call: Call,
                      trace: LlmTrace, response: Any, drop_usage: bool,
                      provider: Provider) -> None:
        guard = ChunkGuard(chain, call, self._scrub(provider))
        window = self.credits.open(seq)

        def send(data: bytes) -> None:
            window.sent(len(data))
            self.send(messages.pack_progress(seq, messages.LLM_DATA + data))
        relay = StreamRelay(api, guard, send, trace.token, drop_usage, window.room,
                            self.max_response)
        self.send(messages.pack_progress(seq, messages.pack_llm_head(200, SSE)))
        trace.streaming = True
        try:
            await relay.relay(response.content.iter_any())
        except Exception as exc:  # a timeout, a broken connection: never a silent end
            guard.note(trace.trail)
            broke = f"{provider.name}: {exc}" if isinstance(exc, ResponseTooLarge) else \
                f"the stream broke off ({exc.__class__.__name__})"
            trace.outcome = {"status": "provider_error", "http": 502,
                             "message": f"the provider's stream broke: {exc!r}"[:300]}
            trace.completion = relay.text.text()
            self._finish(seq, trace, messages.LLM_END + api.stream_error(
                502, f"Provider failure: {broke}"))
            return
        guard.note(trace.trail)
        if relay.failed is not None:  # the provider's error event ends the client's stream
            trace.outcome = {"status": "provider_error", "http": 502, "message":
                             provider.scrub(relay.failed.encode()).decode(errors="replace")}
            trace.completion = relay.text.text()
            self._finish(seq, trace, messages.LLM_END + provider.scrub(relay.terminal))
            return
        if relay.denied is None and not relay.terminal and relay.text.finished():
            relay.terminal = api.terminal()  # a lenient provider: the answer is whole
        if relay.denied is None and not relay.terminal:  # cut off: never a clean end
            trace.outcome = {"status": "provider_error", "http": 502,
                             "message": "the provider's stream ended without its last event"}
            trace.completion = relay.text.text()
            self._finish(seq, trace, messages.LLM_END + api.stream_error(
                502, "Provider failure: the stream ended before the answer did"))
            return
        assembled = relay.text.assembled()
        self._usage(chain, call, trace, assembled)
        trace.completion = relay.text.text() if self.content != "none" else None
        if relay.denied is not None:
            hosted, deny = relay.denied
            trace.outcome = {"status": "denied", "by": hosted.name, "reason": deny.reason}
            self._finish(seq, trace, messages.LLM_END)
            return
        end = relay.terminal
        if chain:
            result = await plugin_chain.after(chain, call, assembled, trace.trail, self.slot,
                                              seq)
            denied = (result.get("_meta") or {}).get(mcp.META_DENIED)
            if denied:
                trace.outcome = {"status": "denied", "by": denied.get("by"),
                                 "reason": denied.get("reason")}
                end = api.stream_error(403, _text(result))
        self._finish(seq, trace, messages.LLM_END + end)

    async def _read(self, provider: Provider, response: Any, trace: LlmTrace) -> bytes:
        """A whole answer, up to [llm] max_response_bytes (the caller closes the
        response: over the cap, the connection is dropped unread)."""
        try:
            return await read_capped(response, self.max_response)
        except ResponseTooLarge as exc:
            trace.outcome = {"status": "provider_error", "http": 502,
                             "message": f"{provider.name}: {exc}"}
            raise Refusal(502, f"Provider failure: {provider.name} answered, but {exc}",
                          headers={"x-should-retry": "false"}) from None

    def _clean(self, provider: Provider, body: bytes) -> bytes:
        """An error body without the provider's key, escaped in its JSON or not."""
        body = provider.scrub(body)
        scrub = self._scrub(provider)
        if scrub is not None and b"\\" in body:
            with contextlib.suppress(orjson.JSONDecodeError):
                body = scrub.json(body, orjson.loads(body))[0]
        return body

    def _scrub(self, provider: Provider) -> KeyScrub | None:
        """The scrub of the key this answer's request was sent with: a reload while it
        was at the provider may have renamed the provider or changed its key."""
        scrub = self.scrubs.get(provider.name)
        if scrub is not None and scrub.key == provider.key:
            return scrub
        return key_scrub.of(provider.key)

    def _usage(self, chain: tuple[Any, ...], call: Call, trace: LlmTrace,
               result: Any) -> None:
        trace.usage = usage_of(result)
        if trace.usage is None:
            return
        for hosted in chain:  # the first plugin that prices it (plugins/budgets.py)
            price = getattr(hosted.plugin, "cost", None)
            if price is not None and "llm" in getattr(hosted.plugin, "kinds", ()):
                try:
                    trace.cost = price(call, trace.usage)
                except Exception:
                    log.exception("plugin %s: cost() failed", hosted.name)
                if trace.cost is not None:
                    return

    async def _after_failure(self, chain: tuple[Any, ...], call: Call, trace: LlmTrace,
                             seq: int) -> None:
        """after_call sees a failed request too (an error body, no usage): a budget
        reserved for it is given back."""
        if chain:
            await plugin_chain.after(chain, call, {"error": trace.outcome}, trace.trail,
                                     self.slot, seq)


def _text(result: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in result.get("content") or ()
                   if isinstance(b, dict)) or "Denied"


def _denial(result: dict[str, Any], trace: LlmTrace) -> Refusal:
    """A plugin's denial as the SDKs expect it: 403, or 429 for a budget/rate limit."""
    denied = (result.get("_meta") or {}).get(mcp.META_DENIED) or {}
    message = _text(result)
    trace.outcome = {"status": "denied", "by": denied.get("by"),
                     "reason": denied.get("reason")}
    if denied.get("kind") == "rate_limit":
        found = _RETRY_IN.search(str(denied.get("reason", "")))
        wait = max(1, int(float(found.group(1)) + 0.999)) if found else 60
        trace.outcome["http"] = 429
        return Refusal(429, message, "budget_exceeded",
                       {"x-should-retry": "false", "retry-after": str(wait)})
    trace.outcome["http"] = 403
    return Refusal(403, message, "denied")


def _completion(result: Any, body: bytes, content: str) -> Any:
    """What the record keeps of a whole answer: its text, where it has one."""
    if content == "none":
        return None
    if isinstance(result, dict):
        if isinstance(result.get("choices"), list):
            return "".join(str(((c or {}).get("message") or {}).get("content") or "")
                           for c in result["choices"] if isinstance(c, dict))
        if isinstance(result.get("content"), list):
            return "".join(str(b.get("text", "")) for b in result["content"]
                           if isinstance(b, dict))
    return {"bytes": len(body)}
