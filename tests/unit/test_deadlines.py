"""The request timeout of a gateway worker's LLM calls, on one timer (gateway.deadlines)."""

from __future__ import annotations

import asyncio

from daemon.gateway.deadlines import Deadlines


async def _call(deadlines: Deadlines, key: int, seconds: float, work: float) -> str:
    deadlines.enter(key, seconds)
    try:
        await asyncio.sleep(work)
        return "done"
    except asyncio.CancelledError:
        if not deadlines.expired(key):
            raise
        return "timed out"
    finally:
        deadlines.leave(key)


def test_a_call_past_its_deadline_is_cancelled_and_told_it_timed_out() -> None:
    async def main() -> list[str]:
        deadlines = Deadlines()
        return list(await asyncio.gather(_call(deadlines, 1, 0.05, 30),
                                         _call(deadlines, 2, 30, 0.01),
                                         _call(deadlines, 3, 0.1, 30)))
    assert asyncio.run(main()) == ["timed out", "done", "timed out"]


def test_a_call_that_ends_in_time_leaves_nothing_behind() -> None:
    async def main() -> tuple[str, int]:
        deadlines = Deadlines()
        done = await _call(deadlines, 1, 0.05, 0)
        await asyncio.sleep(0.1)  # the timer fires for a call that left: nothing happens
        left = len(deadlines._calls) + len(deadlines._expired)
        deadlines.close()
        return done, left
    assert asyncio.run(main()) == ("done", 0)


def test_an_agent_cancelling_a_call_is_a_cancellation_not_a_timeout() -> None:
    async def main() -> bool:
        deadlines = Deadlines()
        task = asyncio.create_task(_call(deadlines, 1, 30, 30))
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        finally:
            deadlines.close()
        return False
    assert asyncio.run(main())


def test_a_shorter_timeout_after_a_reload_is_kept_though_an_older_call_waits_longer() -> None:
    async def main() -> list[str]:
        deadlines = Deadlines()
        first = asyncio.create_task(_call(deadlines, 1, 30, 0.5))
        await asyncio.sleep(0)
        second = asyncio.create_task(_call(deadlines, 2, 0.05, 30))
        return [await second, await first]
    assert asyncio.run(main()) == ["timed out", "done"]
