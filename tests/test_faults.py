"""Fault tests: `run` killed with SIGKILL at chosen moments, and a user interfering with the run.
Each ends with nothing lost and the run completed after a restart."""
from __future__ import annotations

import json
import os
import signal
import stat
import uuid

import pytest

from processes import (agent_log, alive_with_env, children_of, kill_all, output, running, sessions,
                       start_run, wait_for)
from projects import feature, git, load_features, make_project, run_cli

TWO_TRACKS = [{"name": "a", "categories": ["a"], "isDefault": True},
              {"name": "b", "categories": ["b"]}]
VERIFY_ON = {"disabled": False, "delayMs": 0}


def rules(tmp_path, *items) -> dict:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(list(items)))
    return {"FAKE_AGENT_SCENARIO": str(path), "FAKE_AGENT_STATE_DIR": str(tmp_path / "state")}


def kill9(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def token_env() -> tuple[str, dict]:
    token = uuid.uuid4().hex
    return token, {"FAKE_FAULT_TOKEN": token}


def no_half_merge(repo) -> None:
    common = repo / ".git"
    for gitdir in [common, *(common / "worktrees").glob("*")]:
        for name in ("MERGE_HEAD", "REVERT_HEAD", "CHERRY_PICK_HEAD", "index.lock"):
            assert not (gitdir / name).exists(), f"{gitdir.name}/{name} left behind"
    changed = git(repo, "status", "--porcelain", "--untracked-files=no").splitlines()
    assert [line for line in changed if not line.endswith(" features.json")] == []


def rerun(repo, *, env=None):
    result = run_cli("run", "--project", str(repo), env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# ---------------------------------------------------------------- kill -9 of the daemon
def test_kill9_during_implementation_keeps_the_agents_work(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1, "a"), feature(2, "b")], tracks=TWO_TRACKS)
    token, env = token_env()
    env.update(rules(tmp_path, {"match": "^# Implement", "scenario": "leftover"}))
    env["FAKE_AGENT_DELAY"] = "60"
    proc = start_run(repo, tmp_path, env=env)
    worktrees = repo / ".orchestrator" / "worktrees"
    wait_for(lambda: len(running(repo, "implement")) == 2
             and len(list(worktrees.glob("*/feature-*.txt"))) == 2, what="two agents writing")
    kill9(proc)
    orphans = alive_with_env("FAKE_FAULT_TOKEN", token)
    assert orphans, "the agents should have outlived the killed daemon"

    result = rerun(repo)
    assert "recovered from an interrupted run" in result.stdout
    assert alive_with_env("FAKE_FAULT_TOKEN", token) == []
    feats = load_features(repo)
    assert {feats[1]["status"], feats[2]["status"]} == {"passed"}
    for fid in (1, 2):
        branch = feats[fid]["branch"]
        assert "commit work left by an interrupted session" in git(repo, "log", "--format=%s",
                                                                   branch)
        # the interrupted agent's file, committed by the recovery, is on the base branch
        assert f"feature {fid}: implement by claude" in git(repo, "show",
                                                            f"ai-develop:feature-{fid}.txt")
    rows = sessions(repo)
    assert [r["status"] for r in rows[:2]] == ["interrupted", "interrupted"]
    assert all(r["status"] != "running" for r in rows)
    no_half_merge(repo)


def test_kill9_during_verification_resumes_and_passes(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)], verification=VERIFY_ON)
    token, env = token_env()
    env.update(rules(tmp_path, {"match": "^# Verify", "scenario": "hang"}))
    env["FAKE_AGENT_LOG"] = str(tmp_path / "agents.jsonl")
    proc = start_run(repo, tmp_path, env=env)
    wait_for(lambda: any(e["phase"] == "verify" for e in agent_log(tmp_path / "agents.jsonl")),
             what="the verifier running")
    kill9(proc)
    assert alive_with_env("FAKE_FAULT_TOKEN", token)
    assert load_features(repo)[1]["status"] == "verifying"

    rerun(repo)
    assert alive_with_env("FAKE_FAULT_TOKEN", token) == []
    f = load_features(repo)[1]
    assert f["status"] == "passed"
    assert "feature 1: implement by claude" in git(repo, "show", "ai-develop:feature-1.txt")
    rows = sessions(repo)
    assert (rows[1]["phase"], rows[1]["status"]) == ("verify", "interrupted")
    assert rows[-1]["phase"] == "verify" and rows[-1]["status"] == "succeeded"
    no_half_merge(repo)


def test_kill9_during_verification_does_not_implement_again(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)], verification=VERIFY_ON)
    env = rules(tmp_path, {"match": "^# Verify", "scenario": "hang"})
    env["FAKE_AGENT_LOG"] = str(tmp_path / "agents.jsonl")
    proc = start_run(repo, tmp_path, env=env)
    wait_for(lambda: any(e["phase"] == "verify" for e in agent_log(tmp_path / "agents.jsonl")),
             what="the verifier running")
    kill9(proc)
    rerun(repo)
    assert [r["phase"] for r in sessions(repo)] == ["implement", "verify", "verify"]


SLOW_HOOK = """#!/bin/sh
if [ -f "{flag}" ]; then touch "{entered}"; sleep {seconds}; fi
exit 0
"""


def slow_merge_hook(repo, tmp_path, seconds: int) -> tuple:
    flag, entered = tmp_path / "slow-merges", tmp_path / "merge-entered"
    hook = repo / ".git" / "hooks" / "pre-merge-commit"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(SLOW_HOOK.format(flag=flag, entered=entered, seconds=seconds))
    hook.chmod(0o755)
    flag.write_text("")
    return flag, entered


@pytest.mark.parametrize("checkout", ["integration-worktree", "user-checkout"])
def test_kill9_of_daemon_and_git_during_a_merge(git_repo, tmp_path, checkout):
    """A crash of everything (daemon, git and its hook) after git staged the merge into the
    base branch and before it committed it: the next start undoes it, the base branch is as
    before, the feature is merged again and passes."""
    repo = make_project(git_repo, [feature(1)])
    if checkout == "user-checkout":
        git(repo, "checkout", "-q", "ai-develop")
    flag, entered = slow_merge_hook(repo, tmp_path, 60)
    base_before = git(repo, "rev-parse", "ai-develop")
    proc = start_run(repo, tmp_path)
    wait_for(entered.exists, what="the merge hook")
    tree = children_of(proc.pid)
    proc.kill()
    kill_all(tree)
    proc.wait(timeout=10)
    target = repo if checkout == "user-checkout" else repo / ".orchestrator" / "integration"
    assert git(target, "diff", "--cached", "--name-only") == "feature-1.txt"
    assert git(repo, "rev-parse", "ai-develop") == base_before
    (repo / "user-notes.txt").write_text("not staged, must survive\n")
    flag.unlink()

    result = rerun(repo)
    assert "staged merge of feature/1-feature-1" in result.stdout
    assert load_features(repo)[1]["status"] == "passed"
    assert git(repo, "log", "--merges", "--format=%s", "ai-develop").splitlines() == [
        "Merge feature #1: Feature 1"]
    assert (repo / "user-notes.txt").read_text() == "not staged, must survive\n"
    no_half_merge(repo)


def test_kill9_of_daemon_during_a_merge_lets_git_finish(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)])
    flag, entered = slow_merge_hook(repo, tmp_path, 2)
    proc = start_run(repo, tmp_path)
    wait_for(entered.exists, what="the merge hook")
    kill9(proc)
    flag.unlink()  # the hook already running goes on sleeping; later merges are quick
    result = rerun(repo)
    assert load_features(repo)[1]["status"] == "passed"
    assert "feature 1" in git(repo, "show", "ai-develop:feature-1.txt")
    assert "leftover state of a completed merge" in result.stdout
    no_half_merge(repo)


def test_stale_index_lock_left_by_a_killed_git(git_repo, tmp_path):
    """A git killed while it held index.lock (a machine crash) leaves the lock; no process holds
    it, so the restart removes it and the merges into the checkout work."""
    repo = make_project(git_repo, [feature(1), feature(2)])
    git(repo, "checkout", "-q", "ai-develop")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    os.utime(lock, (0, 0))
    result = rerun(repo)
    assert "removed stale git lock" in result.stdout
    assert not lock.exists()
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    no_half_merge(repo)


# ---------------------------------------------------------------- the user interferes
def test_worktree_deleted_by_the_user_mid_run(git_repo, tmp_path):
    import shutil
    repo = make_project(git_repo, [feature(1)])
    env = {"FAKE_AGENT_DELAY": "3"}
    proc = start_run(repo, tmp_path, env=env)
    worktree = repo / ".orchestrator" / "worktrees" / "feature-1"
    wait_for(lambda: running(repo, "implement") and (worktree / "feature-1.txt").exists()
             and "feat: feature 1" in git(repo, "log", "--format=%s", "feature/1-feature-1"),
             what="the agent's commit")
    shutil.rmtree(worktree)
    proc.wait(timeout=60)
    if load_features(repo)[1]["status"] != "passed":
        if load_features(repo)[1]["status"] == "failed":
            pytest.fail("the feature failed because its worktree vanished: "
                        + load_features(repo)[1].get("failure_reason", "") + "\n"
                        + output(tmp_path))
        rerun(repo)
    assert load_features(repo)[1]["status"] == "passed"
    assert "feature 1: implement by claude" in git(repo, "show", "ai-develop:feature-1.txt")
    no_half_merge(repo)


def test_user_commit_on_the_base_branch_mid_run(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1, "a"), feature(2, "b")], tracks=TWO_TRACKS)
    proc = start_run(repo, tmp_path, env={"FAKE_AGENT_DELAY": "1.5"})
    wait_for(lambda: len(running(repo, "implement")) == 2, what="both agents running")
    # the user pushes a commit onto the base branch (a new tree on top of it)
    (tmp_path / "elsewhere").mkdir()
    other = tmp_path / "elsewhere" / "clone"
    git(tmp_path, "clone", "-q", "--branch", "ai-develop", str(repo), str(other))
    (other / "USER.md").write_text("the user's own work\n")
    git(other, "add", "USER.md")
    git(other, "commit", "-q", "-m", "user: own work")
    sha = git(other, "rev-parse", "HEAD")
    git(repo, "fetch", "-q", str(other), "ai-develop")
    git(repo, "update-ref", "refs/heads/ai-develop", sha)
    assert proc.wait(timeout=60) == 0, output(tmp_path)
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    assert git(repo, "merge-base", "--is-ancestor", sha, "ai-develop") == ""
    assert git(repo, "show", "ai-develop:USER.md") == "the user's own work"
    for fid in (1, 2):
        assert f"feature {fid}" in git(repo, "show", f"ai-develop:feature-{fid}.txt")
    no_half_merge(repo)


def test_features_json_made_read_only_mid_run(git_repo, tmp_path):
    """The daemon says clearly that it cannot write features.json and never corrupts it; once
    the file is writable again a restart completes the run."""
    repo = make_project(git_repo, [feature(1), feature(2)])
    path = repo / "features.json"
    proc = start_run(repo, tmp_path, env={"FAKE_AGENT_DELAY": "1"})
    wait_for(lambda: running(repo, "implement"), what="the first agent")
    path.chmod(0o444)
    before = path.read_bytes()
    try:
        wait_for(lambda: "features.json is read-only" in output(tmp_path), timeout=30,
                 what="the read-only error")
        proc.kill()
        proc.wait(timeout=10)
        text = output(tmp_path)
        assert "hint: Make it writable (chmod u+w" in text
        assert path.read_bytes() == before
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        json.loads(before)
        assert not list(repo.glob(".features.json*")) and not list(repo.glob("*.tmp"))
    finally:
        path.chmod(0o644)
    rerun(repo)
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    no_half_merge(repo)


def test_features_json_read_only_stops_the_run(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1), feature(2)])
    path = repo / "features.json"
    proc = start_run(repo, tmp_path, env={"FAKE_AGENT_DELAY": "1"})
    wait_for(lambda: running(repo, "implement"), what="the first agent")
    path.chmod(0o444)
    before = path.read_bytes()
    try:
        try:
            code = proc.wait(timeout=10)
        except Exception:
            proc.kill()
            proc.wait()
            raise AssertionError("run kept going with a read-only features.json")
        assert code == 1
        assert "track core is paused" in output(tmp_path) and "chmod u+w" in output(tmp_path)
        assert path.read_bytes() == before
    finally:
        path.chmod(0o644)
