"""The orchestrator with the genuine Gemini CLI (`gemini -p ... --output-format stream-json`)."""
from __future__ import annotations

import pytest

from .harness import BASE, git, implement_merge_verify

pytestmark = pytest.mark.contract


def test_gemini_implements_merges_verifies(git_repo, server, state):
    outcome = implement_merge_verify("gemini", git_repo, server, state)
    implement_session, verify_session = outcome.sessions
    assert implement_session["agent_session_id"] != verify_session["agent_session_id"]
    assert implement_session["cost_usd"] is None
    # Gemini's shell hides ~/.gitconfig (GIT_CONFIG_GLOBAL=/dev/null); the adapter passes the
    # project's identity on, so the agent's own commit carries it.
    author = git(git_repo, "log", "--format=%an <%ae>", "--grep=^feat: hello file$", BASE)
    assert author == "Test User <test@example.com>"
