"""classify(): recorded transcripts and synthetic outcomes, one category per failed run."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent_orchestrator.agents import parser_for
from agent_orchestrator.agents.base import RunOutcome
from agent_orchestrator.agents.claude import ClaudeParser
from agent_orchestrator.failures import classify

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"
INDEX = json.loads((TRANSCRIPTS / "index.json").read_text())
NOW = datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class CriticalPattern:
    """Shaped like config.CriticalPattern: the source text, a label and the compiled regex."""

    pattern: str
    label: str
    regex: re.Pattern


def replay(name):
    meta = INDEX[name]
    parser = parser_for(meta["cli"])
    for line in (TRANSCRIPTS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
        parser.feed(line)
    stderr = (TRANSCRIPTS / f"{name}.stderr.txt").read_text(encoding="utf-8")
    for line in stderr.splitlines():
        parser.feed_stderr(line)
    return parser.finish(meta["exit_code"]), "\n".join(stderr.splitlines()[-20:])


def run_claude(lines, exit_code):
    parser = ClaudeParser()
    for line in lines:
        parser.feed(json.dumps(line))
    return parser.finish(exit_code)


def result(**fields):
    return {"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "s",
            "total_cost_usd": 0.1, "usage": {"input_tokens": 1, "output_tokens": 1}, **fields}


def tool_output(text):
    return [
        {"type": "assistant", "message": {"id": "m1", "model": "m", "content": [
            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "psql"}}]}},
        {"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": text, "is_error": True}]}},
    ]


TRANSCRIPT_CATEGORIES = {
    "claude-maxturns": "implementation",
    "claude-overloaded": "rate_limit",
    "claude-overloaded-default-retries": "rate_limit",
    "claude-overloaded-stream": "rate_limit",
    "claude-ratelimit": "rate_limit",
    "claude-ratelimit-default-retries": "rate_limit",
    "codex-full-auto-flag": "environment",
    "codex-quota": "rate_limit",
    "codex-ratelimit": "rate_limit",
    "codex-ratelimit-noretry": "rate_limit",
    "codex-ratelimit-stream": "rate_limit",
    "codex-server-error": "rate_limit",
    "gemini-overloaded": "rate_limit",
    "gemini-ratelimit": "rate_limit",
}


@pytest.mark.parametrize("name", sorted(INDEX))
def test_transcripts(name):
    outcome, stderr = replay(name)
    failure = classify(outcome, stderr_tail=stderr, now=NOW)
    expected = TRANSCRIPT_CATEGORIES.get(name)
    if expected is None:
        assert outcome.success and failure is None
    else:
        assert failure is not None and failure.category == expected, failure


def test_claude_max_turns_is_implementation():
    failure = classify(replay("claude-maxturns")[0], stderr_tail="", now=NOW)
    assert failure.reason == "reached the max turns limit: Reached maximum number of turns (2)"
    assert failure.retryable and failure.resets_at is None


def test_codex_quota_and_gemini_173_are_rate_limits():
    assert classify(replay("codex-quota")[0], stderr_tail="", now=NOW).reason.startswith("quota exceeded")
    gemini = classify(*replay("gemini-ratelimit")[:1], stderr_tail="", now=NOW)
    assert gemini.category == "rate_limit" and gemini.resets_at == NOW + 1  # "Suggested retry after 1s."
    bare = RunOutcome(exit_code=173, agent="gemini")
    assert classify(bare, stderr_tail="", now=NOW).category == "rate_limit"


def test_codex_bad_flag_is_environment_not_retryable():
    failure = classify(*replay("codex-full-auto-flag")[:1], stderr_tail="", now=NOW)
    assert not failure.retryable and "unexpected argument '--full-auto'" in failure.reason


def test_econnrefused_from_a_tool_in_a_successful_run_is_not_a_failure():
    outcome = run_claude(tool_output("Error: connect ECONNREFUSED 127.0.0.1:5432") + [result()], 0)
    assert outcome.success
    assert classify(outcome, stderr_tail="", now=NOW) is None


def test_econnrefused_from_a_tool_does_not_make_a_failed_run_environmental():
    lines = tool_output("Error: connect ECONNREFUSED 127.0.0.1:5432") + [
        result(subtype="error_max_turns", is_error=True, result=None, errors=["Reached maximum number of turns (5)"])]
    failure = classify(run_claude(lines, 1), stderr_tail="", now=NOW)
    assert failure.category == "implementation"


def test_econnrefused_in_the_final_error_is_environment():
    outcome = RunOutcome(exit_code=1, saw_result=True, error_text="connect ECONNREFUSED 127.0.0.1:5432", agent="command")
    failure = classify(outcome, stderr_tail="", now=NOW)
    assert failure.category == "environment" and "ECONNREFUSED" in failure.reason


def test_is_error_with_subtype_success_is_a_failure():
    outcome = run_claude([result(is_error=True, result="Not logged in · Please run /login")], 1)
    failure = classify(outcome, stderr_tail="", now=NOW)
    assert failure.category == "environment" and not failure.retryable
    assert failure.reason.endswith("Not logged in · Please run /login")


def test_claude_usage_limit_prefers_rate_limit_event_reset():
    lines = [
        {"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": NOW + 3000}},
        result(is_error=True, result="You've hit your 5-hour limit · resets 4:49am (UTC)", api_error_status=429),
    ]
    failure = classify(run_claude(lines, 1), stderr_tail="", now=NOW)
    assert failure.category == "rate_limit" and failure.resets_at == NOW + 3000


def test_claude_usage_limit_reset_from_text():
    outcome = run_claude([result(is_error=True, result="You've hit your 5-hour limit · resets 4:49am (UTC)")], 1)
    failure = classify(outcome, stderr_tail="", now=NOW)
    assert failure.category == "rate_limit" and failure.reason.startswith("usage limit reached")
    assert failure.resets_at == datetime(2026, 11, 24, 4, 49, tzinfo=timezone.utc).timestamp()


def test_legacy_usage_limit_epoch():
    outcome = run_claude([result(is_error=True, result=f"Claude AI usage limit reached|{int(NOW) + 600}")], 1)
    assert classify(outcome, stderr_tail="", now=NOW).resets_at == NOW + 600


def test_past_reset_times_are_ignored():
    outcome = run_claude([result(is_error=True, result=f"Claude AI usage limit reached|{int(NOW) - 600}")], 1)
    failure = classify(outcome, stderr_tail="", now=NOW)
    assert failure.category == "rate_limit" and failure.resets_at is None


def test_codex_usage_limit():
    outcome = RunOutcome(exit_code=1, saw_result=True, agent="codex", subtype="turn.failed",
                         error_text="You\u2019ve hit your usage limit. Upgrade to Pro or try again at 2:51 AM.")
    failure = classify(outcome, stderr_tail="", now=NOW)
    assert failure.category == "rate_limit"
    assert failure.resets_at == datetime(2026, 11, 24, 2, 51, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("status,category", [(429, "rate_limit"), (529, "rate_limit"), (503, "rate_limit"),
                                             (500, "rate_limit"), (401, "environment")])
def test_http_status(status, category):
    outcome = run_claude([result(is_error=True, result="API Error", api_error_status=status)], 1)
    assert classify(outcome, stderr_tail="", now=NOW).category == category


@pytest.mark.parametrize("code,category,retryable", [(41, "environment", False), (55, "environment", False),
                                                     (247, "rate_limit", True), (53, "implementation", True)])
def test_gemini_exit_codes(code, category, retryable):
    failure = classify(RunOutcome(exit_code=code, agent="gemini"), stderr_tail="", now=NOW)
    assert (failure.category, failure.retryable) == (category, retryable)


def test_gemini_exit_codes_do_not_apply_to_other_agents():
    assert classify(RunOutcome(exit_code=173, agent="command", saw_result=True), stderr_tail="",
                    now=NOW).category == "implementation"


def test_docker_not_running_in_stderr():
    stderr = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
    failure = classify(RunOutcome(exit_code=1, agent="command", saw_result=True), stderr_tail=stderr, now=NOW)
    assert failure.category == "environment" and failure.reason.startswith("Docker is not running")


def test_disk_full():
    outcome = RunOutcome(exit_code=1, saw_result=True, error_text="write failed: ENOSPC: no space left on device")
    assert classify(outcome, stderr_tail="", now=NOW).reason.startswith("the disk is full")


def test_critical_pattern_matches_error_text_and_stderr_only():
    source = r"SQLSTATE\[HY000\] \[2002\]"
    patterns = [CriticalPattern(source, "database is down", re.compile(source))]
    outcome = RunOutcome(exit_code=1, saw_result=True, error_text="gave up")
    failure = classify(outcome, stderr_tail="PDOException: SQLSTATE[HY000] [2002] Connection refused",
                       critical_patterns=patterns, now=NOW)
    assert failure.category == "environment" and "database is down" in failure.reason
    in_tool_output = run_claude(tool_output("SQLSTATE[HY000] [2002]") + [
        result(subtype="error_during_execution", is_error=True, result=None)], 1)
    assert classify(in_tool_output, stderr_tail="", critical_patterns=patterns, now=NOW).category == "implementation"


@pytest.mark.parametrize("text,reason", [
    ("AssertionError: expected 2 == 3", "tests failed"),
    ("==== 2 failed, 10 passed in 1.2s ====", "tests failed"),
    ("src/a.ts(3,5): error TS2322: Type 'string' is not assignable to type 'number'.", "type check failed"),
    ("npm run lint: eslint found 3 errors", "lint failed"),
])
def test_test_only(text, reason):
    failure = classify(RunOutcome(exit_code=1, saw_result=True, error_text=text), stderr_tail="", now=NOW)
    assert failure.category == "test_only" and failure.reason.startswith(reason)


def test_gemini_attempt_lines_are_not_test_failures():
    stderr = "Attempt 1 failed with status 400. Retrying with backoff..."
    failure = classify(RunOutcome(exit_code=1, agent="command", saw_result=True), stderr_tail=stderr, now=NOW)
    assert failure.category == "implementation"


@pytest.mark.parametrize("exit_reason,kwargs,reason", [
    ("timeout", {"timeout_minutes": 60}, "stopped: the agent ran longer than 60 min"),
    ("stalled", {"stall_minutes": 15}, "stopped: the agent printed no output for 15 min"),
    ("stalled", {}, "stopped: the agent printed no output for the configured limit"),
])
def test_timeout_and_stall(exit_reason, kwargs, reason):
    outcome = RunOutcome(exit_code=None, error_text="429 rate limit")
    failure = classify(outcome, stderr_tail="", exit_reason=exit_reason, now=NOW, **kwargs)
    assert (failure.category, failure.reason) == ("implementation", reason)


def test_killed_without_result():
    failure = classify(RunOutcome(exit_code=None), stderr_tail="", now=NOW)
    assert failure.category == "implementation" and "killed" in failure.reason


def test_exit_without_final_event():
    failure = classify(RunOutcome(exit_code=0, agent="codex"), stderr_tail="", now=NOW)
    assert failure.reason == "the agent exited with code 0 without a final result"


def test_budget_exhausted():
    outcome = run_claude([result(subtype="error_max_budget_usd", is_error=True, result=None)], 1)
    assert classify(outcome, stderr_tail="", now=NOW).reason.startswith("reached the max budget")


def test_success_is_none():
    assert classify(RunOutcome(success=True, exit_code=0, saw_result=True), stderr_tail="ECONNREFUSED", now=NOW) is None


def test_errno_codes_match_as_words_only():
    """Patterns are case-insensitive: 'FileNotFoundError' must not read as ENOTFOUND (DNS)."""
    crash = ("Traceback (most recent call last):\n"
             "FileNotFoundError: [Errno 2] No such file or directory: 'x.jsonl'")
    failure = classify(RunOutcome(exit_code=1, agent="claude"), stderr_tail=crash, now=NOW)
    assert failure.category == "implementation", failure
    dns = classify(RunOutcome(exit_code=1, agent="claude"),
                   stderr_tail="Error: getaddrinfo ENOTFOUND api.example.com", now=NOW)
    assert dns.category == "environment" and "network" in dns.reason
