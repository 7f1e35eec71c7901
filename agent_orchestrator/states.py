"""The states of features, tracks and sessions, and the feature transitions the pipeline may make."""
from __future__ import annotations

from enum import Enum


class FeatureStatus(str, Enum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    VERIFYING = "verifying"
    PASSED = "passed"
    FAILED = "failed"
    BLOCKED = "blocked"


class Phase(str, Enum):
    """What a track is doing right now."""

    IDLE = "idle"
    IMPLEMENTING = "implementing"
    MERGING = "merging"
    VERIFYING = "verifying"
    FIXING = "fixing"
    WAITING = "waiting"
    PAUSED = "paused"


class SessionPhase(str, Enum):
    """The kind of agent session."""

    IMPLEMENT = "implement"
    VERIFY = "verify"
    FIX = "fix"
    CONFLICT = "conflict"


class SessionStatus(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class FailureCategory(str, Enum):
    RATE_LIMIT = "rate_limit"
    ENVIRONMENT = "environment"
    TEST_ONLY = "test_only"
    IMPLEMENTATION = "implementation"
    VERIFICATION = "verification"
    UNAVAILABLE = "unavailable"
    CONFLICT = "conflict"
    BUDGET = "budget"


FEATURE_STATUSES = tuple(s.value for s in FeatureStatus)

_S = FeatureStatus
FEATURE_TRANSITIONS: dict[FeatureStatus, frozenset[FeatureStatus]] = {
    _S.OPEN: frozenset({_S.IN_PROGRESS, _S.BLOCKED, _S.FAILED}),
    _S.IN_PROGRESS: frozenset({_S.VERIFYING, _S.PASSED, _S.FAILED, _S.OPEN, _S.BLOCKED}),
    _S.VERIFYING: frozenset({_S.IN_PROGRESS, _S.PASSED, _S.FAILED, _S.OPEN}),
    _S.PASSED: frozenset({_S.OPEN}),
    _S.FAILED: frozenset({_S.OPEN}),
    _S.BLOCKED: frozenset({_S.OPEN, _S.FAILED}),
}


def can_transition(old: str, new: str) -> bool:
    if old == new:
        return True
    return FeatureStatus(new) in FEATURE_TRANSITIONS[FeatureStatus(old)]
