"""The rollout loop's scheduler: passes at the times they ask for, one at a time per
resource, and a resource changed while its pass ran gets another pass."""

from __future__ import annotations

import asyncio
import threading

from shipway_operator.rollouts import RolloutScheduler


def _run(scenario):  # type: ignore[no-untyped-def]
    async def main() -> None:
        await scenario()

    asyncio.run(asyncio.wait_for(main(), timeout=20))


def test_a_pass_runs_again_after_the_seconds_it_asks_for_and_stops_on_none() -> None:
    calls: list[str] = []

    def run(namespace: str, name: str) -> float | None:
        calls.append(name)
        return 0.05 if len(calls) < 3 else None

    async def scenario() -> None:
        scheduler = RolloutScheduler(run)
        task = asyncio.create_task(scheduler.run_forever())
        while scheduler._loop is None:
            await asyncio.sleep(0.01)
        scheduler.poke("ns", "a")
        while len(calls) < 3 or scheduler.scheduled():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert calls == ["a", "a", "a"]

    _run(scenario)


def test_pokes_while_scheduled_do_not_add_passes_but_one_during_a_pass_adds_one() -> None:
    calls: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def run(namespace: str, name: str) -> float | None:
        calls.append(name)
        if len(calls) == 1:
            inside.set()
            release.wait(10)
        return None  # nothing more to do: only a poke brings it back

    async def scenario() -> None:
        scheduler = RolloutScheduler(run)
        task = asyncio.create_task(scheduler.run_forever())
        while scheduler._loop is None:
            await asyncio.sleep(0.01)
        scheduler.poke("ns", "a")
        while not inside.is_set():
            await asyncio.sleep(0.01)
        scheduler.poke("ns", "a")  # the resource changed while its pass ran
        scheduler.poke("ns", "a")  # twice: still one more pass
        await asyncio.sleep(0.05)
        assert calls == ["a"]  # never two passes of one resource at once
        release.set()
        while len(calls) < 2 or scheduler.scheduled():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert calls == ["a", "a"]

    _run(scenario)


def test_a_failing_pass_is_retried_after_the_retry_period() -> None:
    calls: list[str] = []

    def run(namespace: str, name: str) -> float | None:
        calls.append(name)
        if len(calls) == 1:
            raise ConnectionError("API server unreachable")
        return None

    async def scenario() -> None:
        scheduler = RolloutScheduler(run, retry_seconds=0.05)
        task = asyncio.create_task(scheduler.run_forever())
        while scheduler._loop is None:
            await asyncio.sleep(0.01)
        scheduler.poke("ns", "a")
        while len(calls) < 2 or scheduler.scheduled():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert calls == ["a", "a"]

    _run(scenario)
