"""SingleFlight: one execution per key for all callers, each caller on its own deadline."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from imdsfs._flight import SingleFlight


async def test_concurrent_callers_share_one_execution() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        await trio.sleep(0.01)
        return 42

    results: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(lambda: _append(results, flight.run("k", work)))
    assert results == [42] * 10
    assert runs == 1


async def _append(results: list[int], call: object) -> None:
    results.append(await call)  # type: ignore[misc]


async def test_each_waiter_gets_an_exception_object_of_its_own() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def fail() -> int:
        await trio.sleep(0.01)
        raise ValueError("no")

    caught: list[BaseException] = []

    async def call() -> None:
        with pytest.raises(ValueError, match="no") as raised:
            await flight.run("k", fail)
        caught.append(raised.value)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(call)
    assert len(caught) == 3
    assert len({id(exc) for exc in caught}) == 3  # no traceback chained onto another's


async def test_a_caller_giving_up_does_not_cancel_the_execution(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    finished = trio.Event()

    async def slow() -> str:
        await trio.sleep(5)
        finished.set()
        return "done"

    with trio.move_on_after(1):
        await flight.run("k", slow)
    assert flight.in_flight("k")
    assert await flight.run("k", slow) == "done"  # a later caller joins the same execution
    assert finished.is_set()
    assert not flight.in_flight("k")
