"""CallTasks.step: a call run by hand up to where it first waits, then as its own task."""

from __future__ import annotations

import asyncio

from daemon.worker.call_tasks import CallTasks


def test_a_stepped_call_that_never_waits_finishes_at_once_without_a_task():
    async def main() -> None:
        tasks: CallTasks[int] = CallTasks()
        done: list[int] = []

        async def call() -> None:
            done.append(1)
        tasks.step(1, call())
        assert done == [1] and len(tasks) == 0
    asyncio.run(main())


def test_a_stepped_call_that_waits_carries_on_in_its_own_task_with_asyncio_timeout():
    async def main() -> None:
        tasks: CallTasks[int] = CallTasks()
        seen: list[object] = []

        async def call() -> None:
            async with asyncio.timeout(5):  # needs a current task, before and after
                seen.append(asyncio.current_task())
                await asyncio.sleep(0.01)
                await asyncio.sleep(0)
                seen.append(asyncio.current_task())
        tasks.step(1, call())
        assert len(tasks) == 1 and len(seen) == 1
        await tasks.drain()
        assert len(seen) == 2 and seen[1] is not None and len(tasks) == 0
    asyncio.run(main())


def test_a_stepped_call_that_times_out_gets_its_timeout_error_where_it_waits():
    async def main() -> None:
        tasks: CallTasks[int] = CallTasks()
        seen: list[str] = []

        async def call() -> None:
            await asyncio.sleep(0)
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.sleep(10)
            except TimeoutError:
                seen.append("timed out")
        tasks.step(1, call())
        await asyncio.wait_for(tasks.drain(), 10)
        assert seen == ["timed out"]
    asyncio.run(main())


def cancel_a_waiting_call(settle: bool) -> tuple[list[str], asyncio.Future[None]]:
    async def main() -> tuple[list[str], asyncio.Future[None]]:
        tasks: CallTasks[int] = CallTasks()
        seen: list[str] = []
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def call() -> None:
            try:
                await waiting
            except asyncio.CancelledError:
                seen.append("cancelled")
                await asyncio.sleep(0)  # it may still clean up, awaiting
                seen.append("cleaned up")
                raise
        tasks.step(7, call())
        if settle:
            await asyncio.sleep(0)
        tasks.cancel(7)
        await tasks.drain()
        return seen, waiting
    return asyncio.run(main())


def test_cancelling_a_stepped_call_throws_the_cancellation_where_it_waits():
    seen, waiting = cancel_a_waiting_call(settle=True)
    assert seen == ["cancelled", "cleaned up"] and waiting.cancelled()


def test_a_stepped_call_cancelled_before_its_task_began_still_hears_of_it():
    seen, _ = cancel_a_waiting_call(settle=False)
    assert seen == ["cancelled", "cleaned up"]


def test_a_stepped_call_sees_the_error_of_the_future_it_awaited():
    async def main() -> None:
        tasks: CallTasks[int] = CallTasks()
        seen: list[str] = []
        failing = asyncio.get_running_loop().create_future()

        async def call() -> None:
            try:
                await failing
            except ValueError as exc:
                seen.append(str(exc))
        tasks.step(1, call())
        failing.set_exception(ValueError("upstream said no"))
        await tasks.drain()
        assert seen == ["upstream said no"]
    asyncio.run(main())


def test_drain_waits_for_calls_that_the_calls_it_waited_for_started():
    async def main() -> None:
        tasks: CallTasks[int] = CallTasks()
        seen: list[str] = []

        async def late() -> None:
            await asyncio.sleep(0.01)
            seen.append("late")

        async def first() -> None:
            await asyncio.sleep(0)
            tasks.step(2, late())
        tasks.start(1, first())
        await tasks.drain()
        assert seen == ["late"]
    asyncio.run(main())
