"""What the master reads of a tools/list or tools/call request: the routing fields only.

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

GATEWAY_METHODS = frozenset({"tools/list", "tools/call"})


class Params(msgspec.Struct):
    name: Any = None
    meta: dict[str, Any] | None = msgspec.field(name="_meta", default=None)


class RequestHead(msgspec.Struct):
    jsonrpc: str = ""
    id: _Id | None = None  # None: missing or null, and so not a head
    method: str = ""
    params: Params = msgspec.field(default_factory=Params)

    @property
    def tool(self) -> str | None:
        """The tool a tools/call names, when it names one with a string."""
        name = self.params.name
        return name if self.method == "tools/call" and isinstance(name, str) else None


_decoder = msgspec.json.Decoder(RequestHead)


def decode(raw: bytes) -> RequestHead | None:
    """The head of a JSON-RPC 2.0 tools/list or tools/call request, or None."""
    try:
        head = _decoder.decode(raw)
    except msgspec.DecodeError:  # ValidationError included: a type the head does not take
        return None
    if head.id is None or head.method not in GATEWAY_METHODS or head.jsonrpc != "2.0":
        return None
    return head
