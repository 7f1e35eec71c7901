"""Pure scheduling: routing, order, dependencies, blocking."""
from __future__ import annotations

from dataclasses import dataclass, field

from agent_orchestrator import scheduler
from agent_orchestrator.scheduler import TrackRule


@dataclass
class F:
    id: int
    status: str = "open"
    category: str = ""
    priority: int = 0
    depends_on: list = field(default_factory=list)
    track: str | None = None
    name: str = "x"


TRACKS = [TrackRule("core", (), True), TrackRule("ui", ("frontend", "design"), False),
          TrackRule("api", ("backend",), False)]


def test_route_by_category_default_and_override():
    assert scheduler.route(F(1, category="frontend"), TRACKS) == "ui"
    assert scheduler.route(F(2, category="backend"), TRACKS) == "api"
    assert scheduler.route(F(3, category="docs"), TRACKS) == "core"
    assert scheduler.route(F(4, category="frontend", track="api"), TRACKS) == "api"
    assert scheduler.route(F(5, category="frontend", track="nope"), TRACKS) == "ui"


def test_priority_then_lowest_id():
    feats = [F(5), F(2), F(9, priority=3), F(1, status="passed")]
    assert scheduler.next_feature(feats, "core", TRACKS, claimed=set()).id == 9
    assert scheduler.next_feature(feats, "core", TRACKS, claimed={9}).id == 2
    assert scheduler.next_feature(feats, "core", TRACKS, claimed={9, 2, 5}) is None
    assert scheduler.next_feature(feats, "ui", TRACKS, claimed=set()) is None


def test_dependencies_wait_until_passed():
    feats = [F(1, status="in_progress", category="backend"), F(2, depends_on=[1])]
    assert scheduler.next_feature(feats, "core", TRACKS, claimed=set()) is None
    feats[0].status = "passed"
    assert scheduler.next_feature(feats, "core", TRACKS, claimed=set()).id == 2


def test_selected_limits_the_run():
    feats = [F(1), F(2)]
    assert scheduler.next_feature(feats, "core", TRACKS, claimed=set(), selected={2}).id == 2


def test_failed_dependency_blocks_and_passing_unblocks():
    feats = [F(1, status="failed", name="Auth"), F(2, depends_on=[1]), F(3, depends_on=[2])]
    assert scheduler.blocking_changes(feats) == [(2, "blocked", "dependency #1 (Auth) failed")]
    feats[1].status = "blocked"
    assert scheduler.blocking_changes(feats) == [(3, "blocked", "dependency #2 (x) blocked")]
    feats[0].status = "open"
    assert (2, "open", None) in scheduler.blocking_changes(feats)


def test_overlapping_touches_do_not_run_at_the_same_time():
    a = F(1, category="frontend")
    a.touches = ["src/cart/*"]
    b = F(2)
    b.touches = ["src/cart/total.py"]
    c = F(3)
    c.touches = ["docs/**"]
    feats = [a, b, c]
    assert scheduler.next_feature(feats, "core", TRACKS, claimed={1}).id == 3
    assert scheduler.next_feature(feats, "core", TRACKS, claimed=set()).id == 2
