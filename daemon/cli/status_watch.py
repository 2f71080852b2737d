"""`status --watch`: the tree and the call rates, redrawn in place (rich.live).

Rates come from the daemon's own Prometheus endpoint (the address is in control.json):
the difference between two scrapes over the time between them.  When the daemon stops,
the view says so and the command exits 0.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from daemon.cli.status_view import render_status
from daemon.control.client import Stopped

Totals = dict[str, float]


def scrape(address: str | None) -> Totals:
    """Counters summed the way the view shows them; {} without a metrics endpoint, or
    while it does not answer (a daemon stopping)."""
    if not address:
        return {}
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    totals: Totals = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "workingagents_calls_total":
                totals["calls"] = totals.get("calls", 0) + sample.value
                key = f"calls:{sample.labels.get('outcome')}"
                totals[key] = totals.get(key, 0) + sample.value
            elif sample.name == "workingagents_audit_records_total":
                totals["audit"] = totals.get("audit", 0) + sample.value
            elif sample.name == "workingagents_restarts_total":
                totals["restarts"] = totals.get("restarts", 0) + sample.value
            elif sample.name == "workingagents_audit_unacknowledged":
                totals["held"] = totals.get("held", 0) + sample.value
    return totals


def rates_table(before: Totals, after: Totals, seconds: float) -> Table:
    table = Table(title="per second since the last refresh (unacked: audit records held)",
                  title_justify="left")
    for column in ("calls", "ok", "denied", "tool err", "errors", "audited", "restarts",
                   "unacked"):
        table.add_column(column, justify="right")

    def rate(key: str) -> str:
        delta = after.get(key, 0) - before.get(key, 0)
        return f"{delta / seconds:.1f}" if seconds > 0 and before and after else "-"
    table.add_row(rate("calls"), rate("calls:ok"), rate("calls:denied"),
                  rate("calls:tool_error"), rate("calls:error"), rate("audit"),
                  rate("restarts"), f"{after.get('held', 0):.0f}")
    return table


def watch(fetch: Callable[[], dict[str, Any]], metrics_address: str | None, interval: float,
          count: int | None) -> tuple[dict[str, Any] | None, str | None]:
    """Redraw until interrupted (or ``count`` refreshes, for scripts and tests); returns
    the last snapshot shown (its health is the exit status) and, if the daemon stopped
    meanwhile, the line to end on."""
    before, at = scrape(metrics_address), time.monotonic()
    shown = 0
    snapshot = None
    with Live(auto_refresh=False) as live:
        try:
            while count is None or shown < count:
                time.sleep(interval)
                snapshot = fetch()
                after, now = scrape(metrics_address), time.monotonic()
                live.update(Group(Text(render_status(snapshot)),
                                  rates_table(before, after, now - at)), refresh=True)
                before, at = after, now
                shown += 1
        except KeyboardInterrupt:
            pass
        except Stopped as exc:
            return None, str(exc)
    return snapshot, None
