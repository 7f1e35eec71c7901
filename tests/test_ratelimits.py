"""The shared rate-limit registry: fallback order, reset times, exponential backoff."""
from __future__ import annotations

from agent_orchestrator.ratelimits import AgentLimits, agent_chain


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_chain_override_then_preferred_then_fallbacks():
    assert agent_chain("claude", ["codex", "claude", "gemini"]) == ["claude", "codex", "gemini"]
    assert agent_chain("claude", ["codex"], "gemini") == ["gemini", "claude", "codex"]


def test_limited_agent_is_skipped_until_its_reset():
    clock = Clock()
    limits = AgentLimits(base_wait=60, max_wait=3600, clock=clock)
    assert limits.pick(["claude", "codex"]) == ("claude", None)
    limits.mark_limited("claude", resets_at=clock.now + 300, reason="429")
    assert limits.pick(["claude", "codex"]) == ("codex", None)
    limits.mark_limited("codex", resets_at=None, reason="quota")
    assert limits.pick(["claude", "codex"]) == (None, clock.now + 60)
    clock.now += 61
    assert limits.pick(["claude", "codex"]) == ("codex", None)
    clock.now += 300
    assert limits.pick(["claude", "codex"]) == ("claude", None)


def test_backoff_doubles_and_is_capped():
    clock = Clock()
    limits = AgentLimits(base_wait=60, max_wait=200, clock=clock)
    waits = [limits.mark_limited("claude", resets_at=None, reason="x") - clock.now
             for _ in range(4)]
    assert waits == [60, 120, 200, 200]
    limits.clear("claude")
    assert limits.mark_limited("claude", resets_at=None, reason="x") - clock.now == 60


def test_unavailable_reported_once_and_never_picked():
    limits = AgentLimits(base_wait=60, max_wait=3600, clock=Clock())
    assert limits.mark_unavailable("codex", "not found") is True
    assert limits.mark_unavailable("codex", "not found") is False
    assert limits.pick(["codex", "gemini"]) == ("gemini", None)
    assert limits.pick(["codex"]) == (None, None)
