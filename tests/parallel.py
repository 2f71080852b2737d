"""Parallel test runs (pytest-xdist) with room for tests that must run alone.

Most tests wait on processes and sockets, so the suite runs on several xdist workers at
once (setup.cfg's addopts). A test marked ``@pytest.mark.serial`` measures figures or
timing that other tests' load would skew: it runs with no other test running. Every test
holds a lock shared across the workers for its whole setup/call/teardown: serial tests
hold it exclusively, the rest shared. A second "gate" lock queues the exclusive taker
ahead of later shared ones, so a serial test is not starved by the others' overlapping
runs. Tests that share a module-scoped fixture run on one worker (``--dist loadgroup``).
Without xdist (``-n 0``) there is nothing to coordinate and nothing is locked.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

LOCK_DIR_KEY = "wa_lock_dir"
WORKERS_PER_CPU = 2  # the tests mostly wait on processes and sockets, not on a CPU


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "serial: runs with no other test at once (timing or figures that "
        "parallel load would skew)")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: more workers than CPUs (WA_TEST_WORKERS overrides)."""
    if os.environ.get("WA_TEST_WORKERS"):
        return int(os.environ["WA_TEST_WORKERS"])
    return WORKERS_PER_CPU * len(os.sched_getaffinity(0))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: one lock dir per run, handed to every worker."""
    config = node.config
    if not hasattr(config, "_wa_lock_dir"):
        config._wa_lock_dir = tempfile.mkdtemp(prefix="wa-xdist-locks-")
    node.workerinput[LOCK_DIR_KEY] = config._wa_lock_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    lock_dir = getattr(config, "_wa_lock_dir", None)
    if lock_dir is not None:
        shutil.rmtree(lock_dir, ignore_errors=True)


def _lock_dir(config: pytest.Config) -> Path | None:
    workerinput = getattr(config, "workerinput", None)
    if not workerinput or LOCK_DIR_KEY not in workerinput:
        return None
    return Path(workerinput[LOCK_DIR_KEY])


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests sharing a module- or class-scoped fixture (a daemon started once for a
    module) go to one worker, so that fixture starts once, not once per worker."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        scopes = {d.scope for defs in info.name2fixturedefs.values() for d in defs}
        if scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[
        None, object, object]:
    lock_dir = _lock_dir(item.config)
    if lock_dir is None:
        return (yield)
    alone = item.get_closest_marker("serial") is not None
    with open(lock_dir / "gate", "a") as gate, open(lock_dir / "run", "a") as run:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(run, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            return (yield)
        finally:
            fcntl.flock(run, fcntl.LOCK_UN)

