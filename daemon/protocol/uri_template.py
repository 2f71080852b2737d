"""RFC 6570 URI templates as the gateway matches them: which URIs a resource template
covers (a resources/read, or a resource subscription, routed by an upstream's template)."""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=256)
def _pattern(template: str) -> re.Pattern[str]:
    """A template as a pattern of the URIs it expands to: a simple expression is one path
    segment; reserved ({+x}) and fragment ({#x}) ones span segments; query ones ({?x},
    {&x}) the rest of the URI."""
    out, at = [], 0
    for found in re.finditer(r"\{([+#./;?&]?)[^}]*\}", template):
        out.append(re.escape(template[at:found.start()]))
        operator = found[1]
        out.append(".*" if operator in ("+", "#", "?", "&") else "[^/?#]+")
        at = found.end()
    out.append(re.escape(template[at:]))
    return re.compile("".join(out))


def matches(template: str, uri: str) -> bool:
    return _pattern(template).fullmatch(uri) is not None
