"""The orchestrator with the genuine Codex CLI (`codex exec --json`) behind a custom provider."""
from __future__ import annotations

import pytest

from .harness import implement_merge_verify

pytestmark = pytest.mark.contract


def test_codex_implements_merges_verifies(git_repo, server, state):
    outcome = implement_merge_verify("codex", git_repo, server, state)
    implement_session, verify_session = outcome.sessions
    # Codex sends its thread id as the `session-id` header: the orchestrator recorded the same id.
    assert {r.session_id for r in outcome.implement} == {implement_session["agent_session_id"]}
    assert {r.session_id for r in outcome.verify} == {verify_session["agent_session_id"]}
    assert implement_session["cost_usd"] is None
