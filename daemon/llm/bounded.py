"""``[llm] max_response_bytes``: what a gateway worker holds of one provider answer.

A whole (not streamed) answer is read into memory to be parsed, guarded and audited:
one larger than the cap is refused as soon as its Content-Length or its bytes so far
say so, and the caller drops the connection (the rest is never read).  A stream's
bytes pass through under the credit window (gateway.stream_credit), but its text is
kept to assemble the answer after_call and the audit record see: that text (completion
and tool-call arguments) is held to the same cap.
"""

from __future__ import annotations

from typing import Any

READ_CHUNK = 1 << 16


class ResponseTooLarge(Exception):
    def __init__(self, cap: int, what: str = "answer") -> None:
        super().__init__(f"its {what} is larger than [llm] max_response_bytes "
                         f"({cap} bytes)")


async def read_capped(response: Any, cap: int) -> bytes:
    """``response``'s body (an aiohttp ClientResponse), or ResponseTooLarge."""
    if cap <= 0:
        return bytes(await response.read())
    length = response.content_length
    if length is not None and length > cap:
        raise ResponseTooLarge(cap)
    if length is not None and "Content-Encoding" not in response.headers:
        return bytes(await response.read())  # no more than it said (nor inflated)
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        body += chunk
        if len(body) > cap:
            raise ResponseTooLarge(cap)
    return bytes(body)
