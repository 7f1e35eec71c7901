"""End to end: verification, the fix loop, reverts, conflicts, rate limits and hung agents."""
from __future__ import annotations

import json

import pytest

from projects import fake_rules as rules, feature, git, load_features, make_project, run_cli, session_rows

VERIFY_ON = {"disabled": False, "delayMs": 0, "maxAttempts": 3}






def phases(repo):
    return [(r["phase"], r["agent"], r["status"]) for r in session_rows(repo)]


def test_verifier_fails_once_fix_agent_commits_then_passes(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)], verification=VERIFY_ON)
    env = rules(tmp_path, {"match": "^# Verify", "scenario": "verdict_fail_step2", "times": 1},
                {"match": "^# Verify", "scenario": "verdict_pass"})
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_features(repo)[1]["status"] == "passed"
    assert [p for p, _, _ in phases(repo)] == ["implement", "verify", "fix", "verify"]
    fix_prompt = session_rows(repo)[2]["prompt"]
    assert "STEP 2: FAIL" in fix_prompt
    assert "Fix feature #1" in fix_prompt
    assert len(git(repo, "log", "--merges", "--first-parent", "--format=%s",
                   "ai-develop").splitlines()) == 2


def test_verifier_always_fails_feature_reverted_branch_kept(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)], verification={**VERIFY_ON, "maxAttempts": 2})
    env = rules(tmp_path, {"match": "^# Verify", "scenario": "verdict_fail"})
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 1
    f = load_features(repo)[1]
    assert f["status"] == "failed" and f["failure_category"] == "verification"
    assert "verification failed 2 time(s)" in f["failure_reason"]
    assert [p for p, _, _ in phases(repo)] == ["implement", "verify", "fix", "verify"]
    tree = git(repo, "ls-tree", "-r", "--name-only", "ai-develop")
    assert "feature-1.txt" not in tree
    assert git(repo, "show", "feature/1-feature-1:feature-1.txt")
    assert "FAILED" in (repo / "orchestrator-progress.txt").read_text()


def test_fail_inside_tool_output_does_not_count(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)], verification=VERIFY_ON)
    env = rules(tmp_path, {"match": "^# Verify", "scenario": "verdict_in_tool_output"})
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_features(repo)[1]["status"] == "passed"


def test_no_verdict_is_a_failure(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)], verification={**VERIFY_ON, "maxAttempts": 1})
    env = rules(tmp_path, {"match": "^# Verify", "scenario": "no_verdict"})
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 1
    assert "verifier gave no verdict" in load_features(repo)[1]["failure_reason"]


def test_verify_commands_are_part_of_the_verdict(git_repo, tmp_path, python_exe):
    feats = [feature(1, verify=[[python_exe, "-c", "import sys; sys.exit(3)"]])]
    repo = make_project(git_repo, feats, verification={**VERIFY_ON, "maxAttempts": 1})
    env = rules(tmp_path, {"match": "^# Verify", "scenario": "verdict_pass"})
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 1
    reason = load_features(repo)[1]["failure_reason"]
    assert "exit 3" in reason
    verify_prompt = session_rows(repo)[1]["prompt"]
    assert "FAILED (exit 3" in verify_prompt


def test_rate_limited_claude_falls_back_to_codex(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)],
                        agent={"preferred": "claude", "fallbackAgents": ["codex"]})
    env = rules(tmp_path, {"agent": "claude", "match": ".", "scenario": "ratelimit"})
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = session_rows(repo)
    assert [(r["agent"], r["failure_category"]) for r in rows] == [("claude", "rate_limit"),
                                                                   ("codex", None)]
    f = load_features(repo)[1]
    assert f["status"] == "passed" and f["attempts"] == 1
    assert "rate-limited" in result.stdout


def test_hung_agent_is_stopped_at_the_stall_limit(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)],
                        agent={"stallMinutes": 0.02, "maxRetries": 0, "killGraceSeconds": 0.5})
    result = run_cli("run", "--project", str(repo), env={"FAKE_AGENT_SCENARIO": "hang"})
    assert result.returncode == 1
    f = load_features(repo)[1]
    assert f["status"] == "failed" and "printed no output" in f["failure_reason"]
    assert session_rows(repo)[0]["exit_reason"] == "stalled"


def test_agent_ignoring_sigterm_is_killed(git_repo):
    repo = make_project(git_repo, [feature(1)],
                        agent={"timeoutMinutes": 0.02, "maxRetries": 0, "killGraceSeconds": 0.3})
    result = run_cli("run", "--project", str(repo),
                     env={"FAKE_AGENT_SCENARIO": "hang_ignore_term"}, timeout=60)
    assert result.returncode == 1
    assert "longer than" in load_features(repo)[1]["failure_reason"]
    assert session_rows(repo)[0]["exit_reason"] == "timeout"


@pytest.mark.parametrize("agent", ["codex", "gemini"])
def test_codex_and_gemini_run_the_whole_pipeline(git_repo, tmp_path, agent):
    repo = make_project(git_repo, [feature(1)], verification=VERIFY_ON,
                        agent={"preferred": agent})
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = session_rows(repo)
    assert [(r["phase"], r["agent"], r["status"]) for r in rows] == [
        ("implement", agent, "succeeded"), ("verify", agent, "succeeded")]
    assert all(r["agent_session_id"] and r["input_tokens"] > 0 for r in rows)
    assert load_features(repo)[1]["status"] == "passed"


def test_max_turns_is_retried_with_the_failure_as_context(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)])
    env = rules(tmp_path, {"match": "^# Implement", "scenario": "max_turns", "times": 1})
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = session_rows(repo)
    assert [(r["phase"], r["failure_category"]) for r in rows] == [
        ("implement", "implementation"), ("implement", None)]
    assert "maximum number of turns" in rows[0]["error"]
    second = rows[1]["prompt"]
    assert "The previous attempt failed" in second and "maximum number of turns" in second
    assert load_features(repo)[1]["attempts"] == 2


def test_server_command_serves_the_app_for_the_verifier(git_repo, python_exe):
    from agent_orchestrator.appserver import answers
    server = [python_exe, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
    repo = make_project(git_repo, [feature(1)],
                        verification={**VERIFY_ON, "serverCommand": server})
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    verify_prompt = session_rows(repo)[1]["prompt"]
    import re
    url = re.search(r"served at (http://127\.0\.0\.1:\d+)", verify_prompt).group(1)
    assert f"app for verification at {url}" in result.stdout
    assert not answers(url), "the app server was left running"


def test_server_command_that_dies_fails_the_verification(git_repo, python_exe):
    server = [python_exe, "-c", "import sys; print('boom: no database'); sys.exit(4)"]
    repo = make_project(git_repo, [feature(1)],
                        verification={**VERIFY_ON, "maxAttempts": 1, "serverCommand": server})
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 1
    reason = load_features(repo)[1]["failure_reason"]
    assert "exited with 4 before answering" in reason and "boom: no database" in reason


def test_retry_of_a_reverted_feature_brings_its_work_back(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)], verification={**VERIFY_ON, "maxAttempts": 1})
    env = rules(tmp_path, {"match": "^# Verify", "scenario": "verdict_fail", "times": 1},
                {"match": "^# Verify", "scenario": "verdict_pass"})
    assert run_cli("run", "--project", str(repo), env=env).returncode == 1
    assert "feature-1.txt" not in git(repo, "ls-tree", "-r", "--name-only", "ai-develop")
    # the user retries it by setting the status back to open
    doc = json.loads((repo / "features.json").read_text())
    doc["features"][0]["status"] = "open"
    (repo / "features.json").write_text(json.dumps(doc, indent=2))
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_features(repo)[1]["status"] == "passed"
    assert "feature-1.txt" in git(repo, "ls-tree", "-r", "--name-only", "ai-develop")
    subjects = git(repo, "log", "--first-parent", "--format=%s", "ai-develop").splitlines()
    assert subjects[0].startswith("Reapply feature #1:") or subjects[1].startswith(
        "Reapply feature #1:"), subjects
    # no implementation again: the retry verified the kept work
    assert [p for p, _, _ in phases(repo)].count("implement") == 1
