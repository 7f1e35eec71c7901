"""The orchestrator with the genuine Claude Code CLI (`claude -p ... --output-format stream-json`)."""
from __future__ import annotations

import pytest

from .harness import (BASE, IMPLEMENT, VERDICT, assert_contained, features, git, implement_merge_verify,
                      make_project, output_events, run_and_explain, sessions)
from .mock_server import ANTHROPIC

pytestmark = pytest.mark.contract


def test_claude_implements_merges_verifies(git_repo, server, state):
    outcome = implement_merge_verify("claude", git_repo, server, state)
    implement_session, verify_session = outcome.sessions
    # Claude Code names its session in a request header: the orchestrator recorded the same id.
    assert {r.session_id for r in outcome.implement} == {implement_session["agent_session_id"]}
    assert {r.session_id for r in outcome.verify} == {verify_session["agent_session_id"]}
    assert implement_session["num_turns"] == 2
    assert implement_session["cost_usd"] > 0


def test_claude_max_turns_is_an_implementation_failure_retried_with_context(git_repo, server, state):
    retry = server.script(ANTHROPIC, r"^## The previous attempt failed", [
        {"type": "bash", "command": IMPLEMENT, "text": "Finishing the feature."},
        {"type": "text", "text": "Created hello.txt and committed it."}], name="retry")
    looping = server.script(ANTHROPIC, r"^# Implement feature #1\b", [
        {"type": "bash", "command": "echo step >> steps.txt"}], name="looping")
    server.script(ANTHROPIC, r"^# Verify feature #1\b", [{"type": "text", "text": VERDICT}], name="verify")
    make_project(git_repo, server, state, preferred="claude", agent={"maxTurnsImplementation": 2})
    result, why = run_and_explain(git_repo, server, state)
    assert result.returncode == 0, why
    assert_contained(server)

    rows = sessions(git_repo)
    assert [(s["phase"], s["agent"], s["status"]) for s in rows] == [
        ("implement", "claude", "failed"), ("implement", "claude", "succeeded"),
        ("verify", "claude", "succeeded")], why
    first, second = rows[0], rows[1]
    assert first["failure_category"] == "implementation", first
    assert "max turns" in first["error"] and "Reached maximum number of turns (2)" in first["error"], first
    assert first["exit_code"] == 1
    result_event = [e for e in output_events(git_repo, first["id"]) if e["kind"] == "result"][-1]
    assert result_event["data"]["subtype"] == "error_max_turns", result_event
    assert [r.turn_index for r in server.of(looping)] == [0, 1]

    # The retry carries what went wrong and what the first attempt left behind.
    assert "## The previous attempt failed" in second["prompt"]
    assert "Category: implementation" in second["prompt"] and "max turns" in second["prompt"]
    assert "steps.txt" in second["prompt"]
    assert len(server.of(retry, action="reply")) == 2
    feature = features(git_repo)[1]
    assert feature["status"] == "passed" and feature["attempts"] == 2, feature
    assert git(git_repo, "show", f"{BASE}:hello.txt") == "hi"
