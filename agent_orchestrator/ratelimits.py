"""Which agents are rate-limited or unavailable, shared by every track, and which agent to use."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass
class Limit:
    until: float
    reason: str
    strikes: int


class AgentLimits:
    """A limit seen by one track is known to all. Reset times come from the agent's own message
    when it gives one; otherwise the wait doubles from `base_wait` up to `max_wait`."""

    def __init__(self, *, base_wait: float, max_wait: float, clock: Callable[[], float]):
        self.base_wait = base_wait
        self.max_wait = max_wait
        self.clock = clock
        self._limits: dict[str, Limit] = {}
        self._unavailable: dict[str, str] = {}
        self._lock = threading.Lock()

    def mark_limited(self, agent: str, *, resets_at: float | None, reason: str) -> float:
        now = self.clock()
        with self._lock:
            previous = self._limits.get(agent)
            strikes = (previous.strikes + 1) if previous else 1
            if resets_at and resets_at > now:
                until = min(resets_at, now + max(self.max_wait, resets_at - now))
            else:
                until = now + min(self.base_wait * (2 ** (strikes - 1)), self.max_wait)
            self._limits[agent] = Limit(until, reason, strikes)
            return until

    def clear(self, agent: str) -> None:
        with self._lock:
            self._limits.pop(agent, None)

    def mark_unavailable(self, agent: str, reason: str) -> bool:
        """Returns True the first time, so the caller reports it once."""
        with self._lock:
            first = agent not in self._unavailable
            self._unavailable[agent] = reason
            return first

    def limited_until(self, agent: str) -> float | None:
        with self._lock:
            limit = self._limits.get(agent)
        if limit and limit.until > self.clock():
            return limit.until
        return None

    def pick(self, chain: Sequence[str]) -> tuple[str | None, float | None]:
        """(agent to use now, None) or (None, earliest time one becomes free) or (None, None) when
        every agent in the chain is unavailable."""
        earliest = None
        for agent in chain:
            if agent in self._unavailable:
                continue
            until = self.limited_until(agent)
            if until is None:
                return agent, None
            earliest = until if earliest is None else min(earliest, until)
        return None, earliest

    def snapshot(self) -> dict:
        now = self.clock()
        with self._lock:
            return {
                "limited": {a: {"until": l.until, "reason": l.reason}
                            for a, l in self._limits.items() if l.until > now},
                "unavailable": dict(self._unavailable),
            }


def agent_chain(preferred: str, fallbacks: Sequence[str], override: str | None = None) -> list[str]:
    chain = [override] if override else []
    for name in [preferred, *fallbacks]:
        if name not in chain:
            chain.append(name)
    return chain
