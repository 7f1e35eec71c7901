"""End to end, as a user runs it: `agent-orchestrator run` on a real repository with the fake
agent CLIs; everything checked in git, features.json, the progress file and the database."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from projects import (FAKES_DIR, REPO_ROOT, feature, git, load_features, make_project, run_cli,
                      session_rows as sessions)

THREE_TRACKS = [
    {"name": "core", "categories": ["core"], "isDefault": True},
    {"name": "ui", "categories": ["ui"]},
    {"name": "api", "categories": ["api"]},
]




def start_run(repo, **extra_env):
    env = dict(os.environ)
    env["PATH"] = f"{FAKES_DIR}:{env['PATH']}"
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra_env)
    return subprocess.Popen([sys.executable, "-m", "agent_orchestrator", "run", "--project",
                             str(repo)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_until(child, condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_six_features_three_tracks_all_merged(git_repo):
    feats = [feature(1, "core"), feature(2, "ui"), feature(3, "api"), feature(4, "core"),
             feature(5, "ui"), feature(6, "api", name="Ünïcode / weird: name -- with ..dots")]
    repo = make_project(git_repo, feats, tracks=THREE_TRACKS)
    git(repo, "checkout", "-q", "ai-develop")
    (repo / "README.md").write_text("# demo project\nmy uncommitted edit\n")

    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    statuses = {fid: f["status"] for fid, f in load_features(repo).items()}
    assert statuses == {i: "passed" for i in range(1, 7)}
    merges = git(repo, "log", "--merges", "--first-parent", "--format=%s", "ai-develop")
    assert len(merges.splitlines()) == 6
    for i in range(1, 7):
        assert (repo / f"feature-{i}.txt").exists()
        assert f"Merge feature #{i}:" in merges
    progress = (repo / "orchestrator-progress.txt").read_text()
    assert progress.count("PASSED") == 6
    rows = sessions(repo)
    assert len(rows) == 6 and all(r["status"] == "succeeded" for r in rows)
    assert all(r["events"] > 0 and r["agent_session_id"] for r in rows)
    assert not list((repo / ".orchestrator" / "worktrees").glob("*"))
    assert "feature/" not in git(repo, "worktree", "list")
    # the user's uncommitted edit is still there, untouched and uncommitted
    assert (repo / "README.md").read_text() == "# demo project\nmy uncommitted edit\n"
    assert git(repo, "status", "--porcelain", "README.md") == "M README.md"
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "ai-develop"
    # one line per phase change
    assert "#6" in result.stdout and "implementing" in result.stdout and "PASSED" in result.stdout


def test_integration_worktree_when_root_is_on_another_branch(git_repo):
    repo = make_project(git_repo, [feature(1), feature(2)])
    (repo / "notes.txt").write_text("untracked user file\n")
    result = run_cli("run", "--project", str(repo), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in result.stdout.splitlines()]
    assert lines[-1]["type"] == "summary" and lines[-1]["passed"] == [1, 2]
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert not (repo / "feature-1.txt").exists()
    assert git(repo, "show", "ai-develop:feature-1.txt")
    assert (repo / "notes.txt").read_text() == "untracked user file\n"


def test_tracks_overlap_in_time(git_repo):
    feats = [feature(1, "core"), feature(2, "ui"), feature(3, "api")]
    repo = make_project(git_repo, feats, tracks=THREE_TRACKS)
    started = time.monotonic()
    result = run_cli("run", "--project", str(repo), env={"FAKE_AGENT_DELAY": "1.5"})
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    rows = sessions(repo)
    assert len(rows) == 3
    latest_start = max(r["started_at"] for r in rows)
    earliest_end = min(r["ended_at"] for r in rows)
    assert latest_start < earliest_end, "the three sessions did not run at the same time"
    assert elapsed < 3 * 1.5 + 3


def test_user_edits_while_running_survive_and_new_feature_runs(git_repo):
    repo = make_project(git_repo, [feature(1), feature(2)])
    child = start_run(repo, FAKE_AGENT_DELAY="1.5")
    try:
        deadline = time.monotonic() + 30
        while load_features(repo)[1]["status"] != "in_progress":
            assert time.monotonic() < deadline, "feature 1 never started"
            time.sleep(0.05)
        doc = json.loads((repo / "features.json").read_text())
        doc["features"][1]["description"] = "Edited by the user while running."
        doc["features"].append(feature(3, name="Added while running"))
        (repo / "features.json").write_text(json.dumps(doc, indent=4) + "\n")
        out, err = child.communicate(timeout=90)
    finally:
        child.kill()
    assert child.returncode == 0, out + err
    feats = load_features(repo)
    assert feats[2]["description"] == "Edited by the user while running."
    assert {fid: f["status"] for fid, f in feats.items()} == {1: "passed", 2: "passed",
                                                               3: "passed"}
    assert (repo / "features.json").read_text().startswith('{\n    "project"')


def test_a_merge_waiting_for_the_users_checkout_does_not_hold_its_track(git_repo):
    """Verification disabled: once feature 1's agent has committed, its track starts feature 2
    while feature 1 waits to merge (the user's untracked file is in the way), and feature 1
    merges as soon as the file is gone."""
    repo = make_project(git_repo, [feature(1), feature(2)])
    git(repo, "checkout", "-q", "ai-develop")
    (repo / "feature-1.txt").write_text("the user's own file\n")
    child = start_run(repo)
    try:
        deadline = time.monotonic() + 60
        while load_features(repo)[2]["status"] != "passed":
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "feature 2 did not run while feature 1 waited"
            time.sleep(0.05)
        assert load_features(repo)[1]["status"] == "in_progress"
        assert (repo / "feature-1.txt").read_text() == "the user's own file\n"
        (repo / "feature-1.txt").unlink()
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, out + err
    assert {fid: f["status"] for fid, f in load_features(repo).items()} == {1: "passed",
                                                                            2: "passed"}
    assert "waits to merge" in out + err and "feature-1.txt" in out + err
    assert git(repo, "log", "--first-parent", "--format=%s", "ai-develop").splitlines()[:2] == [
        "Merge feature #1: Feature 1", "Merge feature #2: Feature 2"]
    rows = sessions(repo)
    assert [(r["feature_id"], r["phase"]) for r in rows] == [(1, "implement"), (2, "implement")]


def test_conflicts_found_after_the_track_went_on_are_resolved_on_its_turn(git_repo):
    """Three features of one track write the same file; their merges wait for the user's file,
    so all three agents finish first and the track has gone on. Once the file is gone, the second
    and third merges conflict: each job takes the track's turn back for a conflict agent, and
    the sessions of the track never overlap."""
    repo = make_project(git_repo, [feature(1), feature(2), feature(3)])
    git(repo, "checkout", "-q", "ai-develop")
    (repo / "shared.txt").write_text("the user's own file\n")
    child = start_run(repo, FAKE_AGENT_FILE="shared.txt",
                      FAKE_AGENT_CONTENT="written by feature {id}\n", FAKE_AGENT_DELAY="0.3")
    try:
        deadline = time.monotonic() + 60
        while not (repo / ".orchestrator" / "orchestrator.db").exists() or \
                len([r for r in sessions(repo) if r["ended_at"]]) < 3:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the three agents did not all run"
            time.sleep(0.1)
        (repo / "shared.txt").unlink()
        out, err = child.communicate(timeout=90)
    finally:
        child.kill()
    assert child.returncode == 0, out + err
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    rows = sessions(repo)
    assert sorted(r["phase"] for r in rows) == ["conflict", "conflict", "implement", "implement",
                                                "implement"]
    spans = sorted((r["started_at"], r["ended_at"]) for r in rows)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, f"two agents of one track ran at once: {spans}"
    shared = git(repo, "show", "ai-develop:shared.txt")
    assert all(f"written by feature {i}" in shared for i in (1, 2, 3)) and "<<<<<<<" not in shared


def test_a_conflict_found_alongside_waits_for_the_tracks_next_agent(git_repo):
    """While feature 1's agent works, the user commits a different feature-1.txt on the base
    branch. The track starts feature 2 as soon as #1's agent is done; #1's merge, alongside,
    conflicts and needs a conflict agent: it waits until #2's agent has finished, so the track
    never runs two agents at once. (Two tracks: the project may run two sessions at once, so
    only the track's turn keeps them apart.)"""
    repo = make_project(git_repo, [feature(1), feature(2)], tracks=THREE_TRACKS[:2])
    git(repo, "checkout", "-q", "ai-develop")
    child = start_run(repo, FAKE_AGENT_DELAY="2")
    try:
        wait_until(child, lambda: (repo / ".orchestrator" / "worktrees" / "feature-2").exists(),
                   "feature 1's agent did not start")
        (repo / "feature-1.txt").write_text("the user's own feature-1.txt\n")
        git(repo, "add", "feature-1.txt")
        git(repo, "commit", "-q", "-m", "user's commit")
        out, err = child.communicate(timeout=90)
    finally:
        child.kill()
    assert child.returncode == 0, out + err
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    rows = {(r["feature_id"], r["phase"]): r for r in sessions(repo)}
    assert set(rows) == {(1, "implement"), (2, "implement"), (1, "conflict")}
    # the conflict was found while #2's agent worked (it started right after #1's), and waited
    assert rows[(2, "implement")]["started_at"] < rows[(1, "implement")]["ended_at"] + 1
    assert rows[(1, "conflict")]["started_at"] >= rows[(2, "implement")]["ended_at"]


def test_next_worktree_is_made_while_the_agent_works_and_starts_from_the_current_base(git_repo):
    repo = make_project(git_repo, [feature(1), feature(2)])
    git(repo, "checkout", "-q", "ai-develop")
    child = start_run(repo, FAKE_AGENT_DELAY="2")
    ahead = repo / ".orchestrator" / "worktrees" / "feature-2"
    try:
        wait_until(child, ahead.exists, "feature 2's worktree was not made while #1 worked")
        assert load_features(repo)[2]["status"] == "open"
        assert load_features(repo)[1]["status"] == "in_progress"
        # meanwhile, the user commits on the base branch
        (repo / "user.txt").write_text("committed while feature 1 was being implemented\n")
        git(repo, "add", "user.txt")
        git(repo, "commit", "-q", "-m", "user's commit")
        user_sha = git(repo, "rev-parse", "HEAD")
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, out + err
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    # feature 2's agent started from the base branch as it was when #2 was claimed
    parents = git(repo, "log", "-1", "--format=%P", "--grep", "feat: feature 2",
                  load_features(repo)[2]["branch"])
    assert parents == user_sha


def test_a_worktree_made_ahead_and_not_used_is_removed_when_the_run_stops(git_repo):
    repo = make_project(git_repo, [feature(1), feature(2)])
    child = start_run(repo, FAKE_AGENT_DELAY="30")
    ahead = repo / ".orchestrator" / "worktrees" / "feature-2"
    try:
        wait_until(child, ahead.exists, "feature 2's worktree was not made while #1 worked")
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 130, out + err
    assert not ahead.exists()
    assert git(repo, "branch", "--list", "feature/2-*") == ""
    assert "feature-2" not in git(repo, "worktree", "list")
    feats = load_features(repo)
    assert (feats[1]["status"], feats[2]["status"]) == ("open", "open")


def test_a_worktree_left_by_a_killed_run_starts_from_the_current_base(git_repo):
    """The run is killed (no clean stop) after feature 2's worktree was made ahead; the base
    branch moves; the next run's agent for feature 2 starts from the base branch as it is then."""
    repo = make_project(git_repo, [feature(1), feature(2)])
    git(repo, "checkout", "-q", "ai-develop")
    child = start_run(repo, FAKE_AGENT_DELAY="30")
    ahead = repo / ".orchestrator" / "worktrees" / "feature-2"
    try:
        wait_until(child, ahead.exists, "feature 2's worktree was not made while #1 worked")
    finally:
        child.kill()
        child.communicate(timeout=30)
    (repo / "user.txt").write_text("committed between the runs\n")
    git(repo, "add", "user.txt")
    git(repo, "commit", "-q", "-m", "user's commit")
    user_sha = git(repo, "rev-parse", "HEAD")
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    parents = git(repo, "log", "-1", "--format=%P", "--grep", "feat: feature 2",
                  load_features(repo)[2]["branch"])
    assert parents == user_sha


def test_agent_without_commits_fails_with_reason(git_repo):
    repo = make_project(git_repo, [feature(1)], agent={"maxRetries": 1})
    result = run_cli("run", "--project", str(repo), env={"FAKE_AGENT_SCENARIO": "no_commit"})
    assert result.returncode == 1
    f = load_features(repo)[1]
    assert f["status"] == "failed"
    assert "without committing" in f["failure_reason"]
    assert f["failure_category"] == "implementation"
    assert len(sessions(repo)) == 2


def test_leftover_changes_are_committed_for_the_agent(git_repo):
    repo = make_project(git_repo, [feature(1)])
    result = run_cli("run", "--project", str(repo), env={"FAKE_AGENT_SCENARIO": "leftover"})
    assert result.returncode == 0, result.stderr
    assert git(repo, "show", "ai-develop:feature-1.txt")
    log = git(repo, "log", "--format=%s", "feature/1-feature-1")
    assert "commit changes left by the agent" in log


def test_agent_edits_to_orchestrator_files_are_dropped(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)])
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"match": "Implement", "scenario": "implement"}]))
    result = run_cli("run", "--project", str(repo),
                     env={"FAKE_AGENT_FILE": "orchestrator-progress.txt"})
    assert result.returncode == 0, result.stderr
    # the agent's write to the progress file never reaches the base branch
    with pytest.raises(subprocess.CalledProcessError):
        git(repo, "show", "ai-develop:orchestrator-progress.txt")


def test_missing_agent_is_reported_once_and_run_ends(git_repo):
    repo = make_project(git_repo, [feature(1), feature(2)],
                        agent={"preferred": "codex", "fallbackAgents": []})
    result = run_cli("run", "--project", str(repo), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stdout.count("unavailable") + result.stderr.count("unavailable") >= 1
    assert "no agent available" in result.stdout
    assert {f["status"] for f in load_features(repo).values()} == {"open"}
