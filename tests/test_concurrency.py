"""Usage-aware concurrency: pressure shrinks an agent's capacity, quiet periods grow it back."""
from __future__ import annotations

import asyncio

from agent_orchestrator.concurrency import AgentSlots


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def make(maximum=4, quiet=60):
    clock, changes = Clock(), []
    slots = AgentSlots(maximum=lambda agent: maximum, quiet_seconds=quiet, clock=clock,
                       on_change=lambda *args: changes.append(args))
    return slots, clock, changes


def test_pressure_shrinks_below_what_runs_and_quiet_grows_back_to_the_maximum():
    slots, clock, changes = make()

    async def scenario():
        for _ in range(4):
            await slots.acquire("claude")
        slots.pressure("claude", "429")
        assert slots.snapshot()["claude"] == {"capacity": 3, "maximum": 4, "in_use": 4}
        slots.pressure("claude", "429 again")
        assert slots.snapshot()["claude"]["capacity"] == 2  # each report: one fewer again
        for _ in range(4):
            slots.release("claude")
        slots.pressure("claude", "retry")
        assert slots.snapshot()["claude"]["capacity"] == 1  # nothing running: down to 1
        await slots.acquire("claude")
        assert not slots.available("claude")
        clock.now += 59
        assert not slots.available("claude")
        clock.now += 1
        assert slots.available("claude")  # grew to 2
        clock.now += 60
        slots.available("claude")
        clock.now += 60
        slots.available("claude")
        clock.now += 600
        slots.available("claude")
        assert slots.snapshot()["claude"]["capacity"] == 4

    asyncio.run(scenario())
    reasons = [c[3] for c in changes]
    assert reasons[:3] == ["429", "429 again", "retry"]
    assert reasons.count("quiet period without pressure") == 3


def test_waiting_acquire_proceeds_when_a_slot_is_released():
    slots, clock, _ = make(maximum=1)

    async def scenario():
        await slots.acquire("codex")
        waiter = asyncio.ensure_future(slots.acquire("codex"))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        slots.release("codex")
        await asyncio.wait_for(waiter, 1)

    asyncio.run(scenario())


def test_agents_are_independent():
    slots, clock, _ = make(maximum=2)

    async def scenario():
        await slots.acquire("claude")
        slots.pressure("claude", "429")
        assert slots.available("codex") and not slots.available("claude")

    asyncio.run(scenario())
