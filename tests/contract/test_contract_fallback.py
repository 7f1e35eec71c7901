"""Rate limits of the genuine CLIs: classified as rate limits, and the next agent finishes the feature."""
from __future__ import annotations

import pytest

from .harness import (BASE, assert_contained, features, git, kinds_of, make_project, run_and_explain,
                      script_hello, sessions)
from .mock_server import ANTHROPIC, GEMINI, OPENAI, Error

pytestmark = pytest.mark.contract

ANY_PROMPT = r"^# (Implement|Verify|Fix) feature #1\b"


def test_claude_persistent_429_falls_back_to_codex(git_repo, server, state):
    limited = server.script(ANTHROPIC, ANY_PROMPT, error=Error(429, retry_after=1), name="claude-429")
    script_hello(server, "codex")
    make_project(git_repo, server, state, preferred="claude", fallback=["codex"])
    result, why = run_and_explain(git_repo, server, state)
    assert result.returncode == 0, why
    assert_contained(server)

    rows = sessions(git_repo)
    assert [(s["phase"], s["agent"], s["status"]) for s in rows] == [
        ("implement", "claude", "failed"), ("implement", "codex", "succeeded"),
        ("verify", "codex", "succeeded")], why
    claude = rows[0]
    assert claude["failure_category"] == "rate_limit", claude
    assert "429" in claude["error"], claude
    assert claude["exit_code"] == 1 and claude["agent_session_id"]
    # CLAUDE_CODE_MAX_RETRIES=1 (agents.claude.env): the first request and one retry, announced.
    assert len(server.of(limited)) == 2
    assert {r.session_id for r in server.of(limited)} == {claude["agent_session_id"]}
    assert "retry" in kinds_of(git_repo, claude["id"])

    feature = features(git_repo)[1]
    assert feature["status"] == "passed", why
    assert feature["attempts"] == 1, "a rate-limited session must not count as an attempt"
    assert git(git_repo, "show", f"{BASE}:hello.txt") == "hi"
    assert "claude is rate-limited" in result.stdout + result.stderr


def test_codex_quota_and_gemini_exit_173_are_rate_limits(git_repo, server, state):
    quota = server.script(OPENAI, ANY_PROMPT, error=Error(429, kind="quota"), name="codex-quota")
    exhausted = server.script(GEMINI, ANY_PROMPT, error=Error(429), name="gemini-429")
    script_hello(server, "claude")
    make_project(git_repo, server, state, preferred="codex", fallback=["gemini", "claude"])
    result, why = run_and_explain(git_repo, server, state)
    assert result.returncode == 0, why
    assert_contained(server)

    rows = sessions(git_repo)
    assert [(s["phase"], s["agent"], s["status"]) for s in rows] == [
        ("implement", "codex", "failed"), ("implement", "gemini", "failed"),
        ("implement", "claude", "succeeded"), ("verify", "claude", "succeeded")], why
    codex, gemini = rows[0], rows[1]
    assert codex["failure_category"] == "rate_limit" and "Quota exceeded" in codex["error"], codex
    assert codex["exit_code"] == 1 and codex["agent_session_id"]
    assert len(server.of(quota)) == 1, "codex does not retry a quota error"
    # general.maxAttempts = 1 in Gemini's settings: one request, then exit 173 (429 mod 256).
    assert gemini["failure_category"] == "rate_limit" and gemini["exit_code"] == 173, gemini
    assert len(server.of(exhausted)) == 1
    assert features(git_repo)[1]["status"] == "passed", why
    assert features(git_repo)[1]["attempts"] == 1


def test_overloaded_claude_529_and_gemini_503_fall_back_to_codex(git_repo, server, state):
    server.script(ANTHROPIC, ANY_PROMPT, error=Error(529, kind="overloaded", retry_after=None), name="claude-529")
    server.script(GEMINI, ANY_PROMPT, error=Error(503, kind="overloaded"), name="gemini-503")
    script_hello(server, "codex")
    make_project(git_repo, server, state, preferred="claude", fallback=["gemini", "codex"])
    result, why = run_and_explain(git_repo, server, state)
    assert result.returncode == 0, why
    assert_contained(server)

    rows = sessions(git_repo)
    assert [(s["phase"], s["agent"], s["status"]) for s in rows] == [
        ("implement", "claude", "failed"), ("implement", "gemini", "failed"),
        ("implement", "codex", "succeeded"), ("verify", "codex", "succeeded")], why
    claude, gemini = rows[0], rows[1]
    assert claude["failure_category"] == "rate_limit" and "529" in claude["error"], claude
    assert gemini["failure_category"] == "rate_limit" and gemini["exit_code"] == 247, gemini
    assert features(git_repo)[1]["status"] == "passed", why
