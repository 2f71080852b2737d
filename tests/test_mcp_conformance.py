"""The official MCP conformance suite (@modelcontextprotocol/conformance, its server
scenarios) through the gateway in front of the suite's reference server: every scenario
that passes straight passes through the gateway too (benchmarks/conformance.py runs it
and prints the table).  Needs node >= 22 and npm with the registry reachable."""

from __future__ import annotations

import pytest

from benchmarks import conformance


@pytest.fixture(scope="module")
def node() -> list[str]:
    found = conformance.find_node()
    if isinstance(found, str):
        pytest.skip(found)
    node, npm = found
    reason = conformance.install(npm)
    if reason is not None:
        pytest.skip(reason)
    return node


def test_every_scenario_that_passes_straight_passes_through_the_gateway(node):
    with conformance.reference_server(node) as upstream:
        direct = conformance.run_suite(node, upstream)
        with conformance.gateway(upstream) as (url, token):
            through = conformance.run_suite(node, url, token)
    table = conformance.table(direct, through)
    assert len(direct) >= 25 and all(o.ok for o in direct.values()), \
        f"the reference server itself should pass:\n{table}"
    assert conformance.regressions(direct, through) == [], table
    # a scenario pending a feature that now passes leaves conformance.PENDING
    stale = sorted(name for name in conformance.PENDING if name in through and through[name].ok)
    assert stale == [], f"remove from conformance.PENDING: {stale}\n{table}"
