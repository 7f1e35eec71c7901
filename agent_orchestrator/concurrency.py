"""How many sessions of each agent may run at once. Rate-limit pressure reported by an agent
(its own retries, 429s, Claude's `allowed_warning`) shrinks its capacity below what is running;
each quiet period without pressure grows it back by one, up to the configured maximum."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Agent:
    maximum: int
    capacity: int
    in_use: int = 0
    last_pressure: float | None = None


class AgentSlots:
    def __init__(self, *, maximum: Callable[[str], int], quiet_seconds: float,
                 clock: Callable[[], float], on_change: Callable[[str, int, int, str], None]):
        self._maximum = maximum
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self.on_change = on_change
        self._agents: dict[str, _Agent] = {}
        self._changed = asyncio.Event()

    def _get(self, agent: str) -> _Agent:
        if agent not in self._agents:
            top = max(1, self._maximum(agent))
            self._agents[agent] = _Agent(top, top)
        return self._agents[agent]

    def _grow(self, agent: str, state: _Agent) -> None:
        if state.capacity >= state.maximum or state.last_pressure is None:
            return
        if self.clock() - state.last_pressure >= self.quiet_seconds:
            state.capacity += 1
            state.last_pressure = None if state.capacity >= state.maximum else self.clock()
            self.on_change(agent, state.capacity, state.maximum, "quiet period without pressure")

    def available(self, agent: str) -> bool:
        state = self._get(agent)
        self._grow(agent, state)
        return state.in_use < state.capacity

    async def acquire(self, agent: str, *, poll: float = 1.0) -> None:
        """Wait for a slot of `agent` (re-checking growth at least every `poll` seconds)."""
        while not self.available(agent):
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), poll)
            except asyncio.TimeoutError:
                pass
        self._get(agent).in_use += 1

    def release(self, agent: str) -> None:
        state = self._get(agent)
        state.in_use = max(0, state.in_use - 1)
        self._changed.set()

    def pressure(self, agent: str, why: str) -> None:
        """The agent reported rate-limit pressure: one session fewer than it runs now (at least 1)."""
        state = self._get(agent)
        state.last_pressure = self.clock()
        target = max(1, min(state.capacity, state.in_use) - 1)
        if target < state.capacity:
            state.capacity = target
            self.on_change(agent, state.capacity, state.maximum, why)

    def snapshot(self) -> dict:
        return {a: {"capacity": s.capacity, "maximum": s.maximum, "in_use": s.in_use}
                for a, s in self._agents.items()}
