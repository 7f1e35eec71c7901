"""End to end: merge conflicts between tracks, environment failures pausing a track, and a track
waiting for a parsed rate-limit reset (through the clock seam, without real sleeping)."""
from __future__ import annotations

import asyncio

from projects import fake_rules as rules, feature, git, load_features, make_project, run_cli, session_rows


def session_phases(repo):
    return [(r["feature_id"], r["phase"], r["status"]) for r in session_rows(repo)]

TWO_TRACKS = [{"name": "a", "categories": ["a"], "isDefault": True},
              {"name": "b", "categories": ["b"]}]






def no_merge_in_progress(repo):
    assert not (repo / ".git" / "MERGE_HEAD").exists()
    for wt in (repo / ".git" / "worktrees").glob("*"):
        assert not (wt / "MERGE_HEAD").exists(), f"{wt.name} left mid-merge"


def test_two_tracks_same_lines_conflict_resolved_by_fix_agent(git_repo):
    repo = make_project(git_repo, [feature(1, "a"), feature(2, "b")], tracks=TWO_TRACKS)
    env = {"FAKE_AGENT_FILE": "shared.txt", "FAKE_AGENT_CONTENT": "written by feature {id}\n",
           "FAKE_AGENT_DELAY": "0.5"}
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    assert any(phase == "conflict" for _, phase, _ in session_phases(repo))
    shared = git(repo, "show", "ai-develop:shared.txt")
    assert "written by feature 1" in shared and "written by feature 2" in shared
    assert "<<<<<<<" not in shared
    no_merge_in_progress(repo)


def test_unresolved_conflict_fails_with_the_files_named(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1, "a"), feature(2, "b")], tracks=TWO_TRACKS)
    env = rules(tmp_path, {"match": "^# Resolve merge conflict", "scenario": "no_commit"})
    env.update({"FAKE_AGENT_FILE": "shared.txt", "FAKE_AGENT_CONTENT": "feature {id}\n",
                "FAKE_AGENT_DELAY": "0.5"})
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 1
    feats = load_features(repo)
    failed = [f for f in feats.values() if f["status"] == "failed"]
    assert len(failed) == 1 and [f["status"] for f in feats.values()].count("passed") == 1
    assert failed[0]["failure_category"] == "conflict"
    assert "shared.txt" in failed[0]["failure_reason"]
    assert git(repo, "show", "ai-develop:shared.txt").count("feature") == 1
    no_merge_in_progress(repo)


def test_two_environment_failures_pause_the_track(git_repo):
    repo = make_project(git_repo, [feature(1), feature(2)],
                        criticalPatterns=[{"pattern": "fake crash", "label": "agent host broken"}])
    result = run_cli("run", "--project", str(repo), env={"FAKE_AGENT_SCENARIO": "crash"})
    assert result.returncode == 1
    assert "track core is paused" in result.stdout
    assert "2 environment failures" in result.stdout
    feats = load_features(repo)
    assert feats[1]["status"] == "open" and feats[1]["failure_category"] == "environment"
    assert feats[2]["status"] == "open"
    assert [(fid, phase) for fid, phase, _ in session_phases(repo)] == [(1, "implement"),
                                                                         (1, "implement")]
    # the interrupted attempt's work stays on its branch for the next try
    assert git(repo, "rev-parse", "--verify", "feature/1-feature-1")


def test_track_waits_for_parsed_reset_then_resumes(git_repo, tmp_path, monkeypatch,
                                                   fakes_on_path):
    from agent_orchestrator.orchestrator import Orchestrator
    from agent_orchestrator.project import Project

    repo = make_project(git_repo, [feature(1)], agent={"rateLimitWaitMs": 1000})
    for key, value in rules(tmp_path, {"agent": "claude", "match": ".", "scenario": "usage_limit",
                                       "times": 1}).items():
        monkeypatch.setenv(key, value)

    import time
    start = time.time()
    now = [start]
    sleeps = []

    async def fake_sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    project = Project.open(repo)
    try:
        orch = Orchestrator(project, clock=lambda: now[0], sleep=fake_sleep)
        summary = asyncio.run(orch.run_until_idle())
    finally:
        project.close()
    assert summary["passed"] == [1]
    waits = [s for s in sleeps if s > 0]
    assert len(waits) == 1
    # "resets 4:49am (UTC)": the next 04:49 UTC after now, not the 1 s backoff
    assert 60 < waits[0] <= 24 * 3600
    reset = start + waits[0]
    assert time.strftime("%H:%M", time.gmtime(reset)) == "04:49"
    phases = session_phases(repo)
    assert [p for _, p, _ in phases] == ["implement", "implement"]
