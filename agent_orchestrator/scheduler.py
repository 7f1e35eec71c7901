"""Pure scheduling decisions: which track a feature belongs to, which feature a track runs next,
and which features are blocked by a failed dependency. Functions of data, no I/O."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .conflicts import blocked_by_touches

DONE_BAD = ("failed", "blocked")


@dataclass(frozen=True)
class TrackRule:
    name: str
    categories: tuple[str, ...]
    is_default: bool


def route(feature, tracks: Sequence[TrackRule]) -> str:
    """The track a feature runs on: its `track` override, else the track listing its category,
    else the default track."""
    names = {t.name for t in tracks}
    if feature.track and feature.track in names:
        return feature.track
    for track in tracks:
        if feature.category and feature.category in track.categories:
            return track.name
    return next(t.name for t in tracks if t.is_default)


def order_key(feature) -> tuple[int, int]:
    return (-int(feature.priority or 0), int(feature.id))


def waiting_on(feature, by_id: dict) -> list[int]:
    """Dependencies that have not passed yet (missing ids count as not passed)."""
    return [d for d in feature.depends_on if getattr(by_id.get(d), "status", None) != "passed"]


def failed_dependency(feature, by_id: dict) -> int | None:
    for dep in feature.depends_on:
        status = getattr(by_id.get(dep), "status", None)
        if status in DONE_BAD:
            return dep
    return None


def next_feature(features: Iterable, track: str, tracks: Sequence[TrackRule], *, claimed: set[int],
                 selected: set[int] | None = None):
    """The open feature this track should run now: highest priority, then lowest id, whose
    dependencies have all passed, that no other track holds, and whose `touches` do not overlap
    a running feature's."""
    feats = list(features)
    by_id = {f.id: f for f in feats}
    running = [by_id[i] for i in claimed if i in by_id]
    candidates = [
        f for f in feats
        if f.status == "open" and f.id not in claimed
        and (selected is None or f.id in selected)
        and route(f, tracks) == track
        and not waiting_on(f, by_id)
        and blocked_by_touches(f, running) is None
    ]
    return min(candidates, key=order_key) if candidates else None


def blocking_changes(features: Iterable) -> list[tuple[int, str, str | None]]:
    """Status changes implied by dependencies: open features whose dependency failed become
    blocked (with the reason); blocked features whose dependencies no longer failed reopen."""
    feats = list(features)
    by_id = {f.id: f for f in feats}
    changes = []
    for f in feats:
        bad = failed_dependency(f, by_id)
        if f.status == "open" and bad is not None:
            dep = by_id[bad]
            changes.append((f.id, "blocked", f"dependency #{bad} ({dep.name}) {dep.status}"))
        elif f.status == "blocked" and bad is None:
            changes.append((f.id, "open", None))
    return changes

