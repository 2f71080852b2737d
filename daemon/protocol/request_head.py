"""What the master reads of a request for a gateway worker (tools/*, resources/*,
prompts/*, completion/complete): the routing fields only.

msgspec decodes the head (jsonrpc, id, method, params.name, params._meta) into a Struct
and skips the rest, so a call's arguments are never built as Python objects in the
master; the gateway worker parses the request once, in full.  Anything else (another
method, a notification, a field of an unexpected type, text that is not JSON) is not a
head: the master's full parse handles it and names what is wrong.

Duplicate keys: msgspec, like orjson, keeps the last, so master and worker read the same
fields; the worker refuses the request (-32600) before acting on it, and the master runs
its own full check before it answers anything itself (protocol.duplicate_keys).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

# An int64 (orjson reads a larger number as a float): a larger id is not a head, so the
# master and the worker never read two different ids.
_Id = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)] | str

# The calls (what is quarantined, audited when refused, timed out by name) ...
CALL_METHODS = frozenset({"tools/call", "resources/read", "prompts/get",
                          "completion/complete"})
# ... and every request a gateway worker answers
GATEWAY_METHODS = CALL_METHODS | {"tools/list", "resources/list", "resources/templates/list",
                                  "prompts/list", "logging/setLevel"}


class Params(msgspec.Struct):
    name: Any = None
    uri: Any = None
    meta: dict[str, Any] | None = msgspec.field(name="_meta", default=None)


class RequestHead(msgspec.Struct):
    jsonrpc: str = ""
    id: _Id | None = None  # None: missing or null, and so not a head
    method: str = ""
    params: Params = msgspec.field(default_factory=Params)

    @property
    def tool(self) -> str | None:
        """What the call is routed as: the tool a tools/call names, the prompt of a
        prompts/get, the URI of a resources/read (when it is a string)."""
        return routed_name(self.method, self.params.name, self.params.uri)


def routed_name(method: str, name: Any, uri: Any) -> str | None:
    routed = name if method in ("tools/call", "prompts/get") else \
        uri if method == "resources/read" else None
    return routed if isinstance(routed, str) else None


_decoder = msgspec.json.Decoder(RequestHead)


def decode(raw: bytes) -> RequestHead | None:
    """The head of a JSON-RPC 2.0 request for a gateway worker, or None."""
    try:
        head = _decoder.decode(raw)
    except msgspec.DecodeError:  # ValidationError included: a type the head does not take
        return None
    if head.id is None or head.method not in GATEWAY_METHODS or head.jsonrpc != "2.0":
        return None
    return head
