"""Crash recovery (agent_orchestrator/recovery.py): stale git locks, processes of a dead daemon,
half-done merges, and the whole recover() over a project left as a kill -9 leaves it."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_orchestrator import recovery
from agent_orchestrator.recovery import (OWNER_ENV, clear_stale_locks, end_orphans, lock_files,
                                         read_process, staged_merge_of)
from projects import feature, git, load_features, make_project


def old(path: Path) -> Path:
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    return path


def spawn(argv, *, env=None, cwd=None, new_session=True) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=new_session)


def alive(pid: int) -> bool:
    info = read_process(pid)
    return info is not None and info.alive


@pytest.fixture
def worktree(git_repo) -> Path:
    path = git_repo / ".orchestrator" / "worktrees" / "feature-1-x"
    git(git_repo, "worktree", "add", "-q", "-b", "feature/1-x", str(path), "ai-develop")
    return path


# ---------------------------------------------------------------- stale locks
def test_lock_files_of_every_worktree_and_ref(git_repo, worktree):
    common = git_repo / ".git"
    (common / "index.lock").write_text("")
    (common / "worktrees" / "feature-1-x" / "index.lock").write_text("")
    (common / "refs" / "heads" / "feature").mkdir(exist_ok=True)
    (common / "refs" / "heads" / "feature" / "1-x.lock").write_text("")
    assert {p.relative_to(common).as_posix() for p in lock_files(common)} == {
        "index.lock", "worktrees/feature-1-x/index.lock", "refs/heads/feature/1-x.lock"}


def test_old_lock_nobody_holds_is_removed(git_repo, worktree):
    common = git_repo / ".git"
    locks = [common / "index.lock", common / "worktrees" / "feature-1-x" / "index.lock"]
    for lock in locks:
        lock.write_text("")
        old(lock)
    removed, kept = clear_stale_locks(common, [git_repo, worktree], sleep=pytest.fail)
    assert sorted(removed) == sorted(locks) and kept == []
    git(worktree, "commit", "-q", "--allow-empty", "-m", "git works again")


def test_young_lock_is_removed_only_after_waiting(git_repo):
    lock = git_repo / ".git" / "index.lock"
    lock.write_text("")
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        time.sleep(seconds)

    removed, kept = clear_stale_locks(git_repo / ".git", [git_repo], min_age=0.3, sleep=sleep)
    assert removed == [lock] and len(waits) == 1 and 0 < waits[0] <= 0.3


def test_lock_held_open_by_a_live_process_is_kept(git_repo):
    lock = git_repo / ".git" / "index.lock"
    lock.write_text("")
    old(lock)
    holder = spawn([sys.executable, "-c",
                    f"f = open({str(lock)!r}); import time; time.sleep(30)"], new_session=False)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and str(lock) not in (recovery.open_files(holder.pid)
                                                                or set()):
            time.sleep(0.02)
        removed, kept = clear_stale_locks(git_repo / ".git", [git_repo])
    finally:
        holder.kill()
        holder.wait()
    assert removed == [] and lock.exists()
    assert kept[0][0] == lock and f"pid {holder.pid}" in kept[0][1]


def test_lock_is_kept_while_a_git_process_works_in_the_repository(git_repo, worktree):
    lock = git_repo / ".git" / "index.lock"
    lock.write_text("")
    old(lock)
    # a user's git waiting for input, as `git commit` waits for its editor
    user_git = subprocess.Popen(["git", "hash-object", "--stdin"], cwd=worktree,
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.1)
        removed, kept = clear_stale_locks(git_repo / ".git", [git_repo, worktree])
    finally:
        user_git.communicate(b"x")
    assert removed == [] and lock.exists()
    assert f"git process {user_git.pid} runs in {worktree}" in kept[0][1]


# ---------------------------------------------------------------- processes of a dead daemon
STUBBORN = ("import signal, subprocess, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "subprocess.Popen(['sleep', '300'])\n"
            "time.sleep(300)\n")
POLITE = ("import signal, sys, time\n"
          "def bye(*_):\n"
          "    open(sys.argv[1], 'w').write('TERM')\n"
          "    sys.exit(0)\n"
          "signal.signal(signal.SIGTERM, bye)\n"
          "time.sleep(300)\n")
SPAWNER = ("import os, subprocess, sys, json\n"
           "argv, new_session = json.loads(sys.argv[1])\n"
           "p = subprocess.Popen(argv, start_new_session=new_session, stdin=subprocess.DEVNULL,\n"
           "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
           "print(p.pid, flush=True)\n"
           "os._exit(0)\n")


def orphan(argv, *, owner: str | None, new_session: bool = True) -> int:
    """Start argv as the orphan a killed daemon leaves: its parent exits at once."""
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    if owner is not None:
        env[OWNER_ENV] = owner
    done = subprocess.run([sys.executable, "-c", SPAWNER, json.dumps([argv, new_session])],
                          env=env, capture_output=True, text=True, check=True,
                          start_new_session=False)
    return int(done.stdout.split()[0])


def kill(*pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_orphans_of_this_project_are_ended_term_then_kill(tmp_path):
    owner = str(tmp_path / ".orchestrator")
    other = orphan(["sleep", "300"], owner=str(tmp_path / "other"))
    unmarked = orphan(["sleep", "300"], owner=None)
    stubborn = orphan([sys.executable, "-c", STUBBORN], owner=owner)
    polite = orphan([sys.executable, "-c", POLITE, str(tmp_path / "polite")], owner=owner)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _children(stubborn):
            time.sleep(0.02)
        grandchild = _children(stubborn)
        assert grandchild, "the stubborn process should have started its sleep"
        time.sleep(0.2)  # let the polite one install its handler
        started = time.monotonic()
        ended = end_orphans(owner, grace=0.3)
        took = time.monotonic() - started
        assert set(ended) == {stubborn, polite, *grandchild}
        assert (tmp_path / "polite").read_text() == "TERM"
        assert not any(alive(pid) for pid in (stubborn, polite, *grandchild))
        assert 0.3 <= took < 3  # the stubborn one needed SIGKILL after the grace period
        assert alive(other) and alive(unmarked)
    finally:
        kill(other, unmarked, stubborn, polite)


def _children(pid: int) -> list[int]:
    table = recovery.process_table()
    return [p.pid for p in table.values() if p.ppid == pid and p.alive]


def test_git_commands_of_the_dead_daemon_may_finish(tmp_path):
    owner = str(tmp_path / ".orchestrator")
    fake_git = tmp_path / "bin" / "git"
    fake_git.parent.mkdir()
    fake_git.symlink_to("/bin/sleep")
    git_cmd = orphan([str(fake_git), "0.6"], owner=owner)
    agent = orphan(["sleep", "300"], owner=owner)
    try:
        started = time.monotonic()
        ended = end_orphans(owner, grace=0.3, git_wait=10)
        assert time.monotonic() - started >= 0.4  # it waited for git to finish by itself
        assert set(ended) == {git_cmd, agent}
        assert not alive(git_cmd) and not alive(agent)
    finally:
        kill(git_cmd, agent)


def test_own_process_group_is_never_signalled_as_a_whole(tmp_path):
    owner = str(tmp_path / ".orchestrator")
    same_group = orphan(["sleep", "300"], owner=owner, new_session=False)
    assert read_process(same_group).pgid == os.getpgid(0)
    groups = []
    try:
        ended = end_orphans(owner, grace=0.3, signal_group=lambda g, s: groups.append(g))
        assert groups == [] and ended == [same_group]
        assert not alive(same_group)
    finally:
        kill(same_group)


def test_own_children_are_not_orphans(tmp_path, monkeypatch):
    owner = str(tmp_path / ".orchestrator")
    monkeypatch.setenv(OWNER_ENV, owner)  # as in a daemon whose web API runs a git command
    child = spawn(["sleep", "300"])
    try:
        time.sleep(0.1)
        assert end_orphans(owner, grace=0.3) == []
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


# ---------------------------------------------------------------- half-done merges
def _branch_with_file(repo: Path, branch: str, name: str) -> None:
    git(repo, "checkout", "-q", "-b", branch, "ai-develop")
    (repo / name).write_text(f"{name}\n")
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"add {name}")
    git(repo, "checkout", "-q", "ai-develop")


def _stage_merge_without_merge_head(repo: Path, branch: str) -> None:
    git(repo, "merge", "-q", "--no-ff", "--no-commit", branch)
    for name in ("MERGE_HEAD", "MERGE_MSG", "MERGE_MODE"):
        (repo / ".git" / name).unlink()


def test_staged_merge_is_recognised_and_user_changes_are_not(git_repo):
    _branch_with_file(git_repo, "feature/1-x", "one.txt")
    _branch_with_file(git_repo, "feature/2-y", "two.txt")
    assert staged_merge_of(git_repo, ["feature/1-x", "feature/2-y"]) is None
    _stage_merge_without_merge_head(git_repo, "feature/2-y")
    (git_repo / "README.md").write_text("unstaged user edit\n")
    assert staged_merge_of(git_repo, ["feature/1-x", "feature/2-y"]) == "feature/2-y"
    (git_repo / "mine.txt").write_text("staged by the user\n")
    git(git_repo, "add", "mine.txt")
    assert staged_merge_of(git_repo, ["feature/1-x", "feature/2-y"]) is None


# ---------------------------------------------------------------- recover() as a whole
@pytest.fixture
def crashed(git_repo, monkeypatch, tmp_path):
    """A project as a kill -9 during two features leaves it."""
    monkeypatch.delenv(OWNER_ENV, raising=False)
    repo = make_project(git_repo, [feature(1, status="in_progress", branch="feature/1-feature-1"),
                                   feature(2, status="verifying", branch="feature/2-feature-2"),
                                   feature(3)])
    git(repo, "checkout", "-q", "ai-develop")
    wt_dir = repo / ".orchestrator" / "worktrees"
    wt1, wt2 = wt_dir / "feature-1", wt_dir / "feature-2"
    git(repo, "worktree", "add", "-q", "-b", "feature/1-feature-1", str(wt1), "ai-develop")
    git(repo, "worktree", "add", "-q", "-b", "feature/2-feature-2", str(wt2), "ai-develop")
    git(repo, "worktree", "add", "-q", "-b", "feature/9-gone", str(wt_dir / "feature-9-gone"),
        "ai-develop")
    # feature 1: the agent wrote files and had a conflicting merge open when it was killed
    (wt1 / "shared.txt").write_text("from the feature\n")
    git(wt1, "add", "shared.txt")
    git(wt1, "commit", "-q", "-m", "feat: one")
    (repo / "shared.txt").write_text("from the base\n")
    git(repo, "add", "shared.txt")
    git(repo, "commit", "-q", "-m", "base change")
    subprocess.run(["git", "-C", str(wt1), "merge", "ai-develop"], capture_output=True)
    assert (repo / ".git" / "worktrees" / "feature-1" / "MERGE_HEAD").exists()
    (wt1 / "notes.md").write_text("uncommitted work of the agent\n")
    # feature 2: committed, merged into the base, killed during verification; the daemon's
    # merge of feature 2 is also half-done in the user's checkout of the base
    (wt2 / "two.txt").write_text("two\n")
    git(wt2, "add", "two.txt")
    git(wt2, "commit", "-q", "-m", "feat: two")
    _stage_merge_without_merge_head(repo, "feature/2-feature-2")
    # the user deleted a worktree; git left a stale index.lock
    import shutil
    shutil.rmtree(wt_dir / "feature-9-gone")
    lock = repo / ".git" / "worktrees" / "feature-2" / "index.lock"
    lock.write_text("")
    old(lock)
    from agent_orchestrator.db import Database
    (repo / ".orchestrator").mkdir(exist_ok=True)
    db = Database(repo / ".orchestrator" / "orchestrator.db")
    for fid, phase in ((1, "implement"), (2, "verify")):
        sid = db.create_session(feature_id=fid, track="core", phase=phase, agent="claude",
                                attempt=1, prompt="p", cwd=str(repo), started_at=time.time())
        db.update_session(sid, agent_session_id=f"agent-session-{fid}")
    db.close()
    return repo


def test_recover_reconciles_everything_a_crash_left(crashed):
    from agent_orchestrator.orchestrator import Orchestrator
    from agent_orchestrator.project import Project

    repo = crashed
    base_before = git(repo, "rev-parse", "ai-develop")
    project = Project.open(repo)
    notices = []
    try:
        orch = Orchestrator(project)
        sub = project.bus.subscribe()
        report = recovery.recover(orch)
        notices = [e.data["message"] for e in sub.get(1.0) if e.type == "notice"]
        contexts = dict(orch._retry_context)
        rows = project.db.list_sessions()[0]
    finally:
        os.environ.pop(OWNER_ENV, None)
        project.close()

    assert sorted(r["status"] for r in rows) == ["interrupted", "interrupted"]
    feats = load_features(repo)
    assert [feats[i]["status"] for i in (1, 2, 3)] == ["open", "open", "open"]
    assert report.requeued == [1, 2]
    assert contexts[1]["resume"] == {"agent": "claude", "phase": "implement",
                                     "session_id": "agent-session-1"}
    assert "interrupted" in contexts[1]["context"] and "feat: one" in contexts[1]["context"]
    assert "already merged" not in contexts[1]["context"]
    assert contexts[2]["resume"]["phase"] == "verify"
    # the conflicting merge in the feature worktree is aborted, the agent's work committed
    wt1 = repo / ".orchestrator" / "worktrees" / "feature-1"
    assert not (repo / ".git" / "worktrees" / "feature-1" / "MERGE_HEAD").exists()
    assert git(wt1, "status", "--porcelain") == ""
    assert git(repo, "show", "feature/1-feature-1:notes.md") == "uncommitted work of the agent"
    assert "feature/1-feature-1" in report.committed
    # the user's checkout of the base is back where the branch is, the branch never moved
    assert git(repo, "rev-parse", "ai-develop") == base_before
    assert git(repo, "diff", "--cached", "--name-only") == ""
    assert not (repo / "two.txt").exists()
    assert any("staged merge of feature/2-feature-2" in u for u in report.undone)
    # stale lock removed, deleted worktree pruned
    assert not (repo / ".git" / "worktrees" / "feature-2" / "index.lock").exists()
    assert "feature-9-gone" not in git(repo, "worktree", "list")
    assert any(n.startswith("recovered from an interrupted run") for n in notices)


def test_recover_leaves_a_users_own_merge_alone(git_repo, monkeypatch):
    from agent_orchestrator.orchestrator import Orchestrator
    from agent_orchestrator.project import Project

    monkeypatch.delenv(OWNER_ENV, raising=False)
    repo = make_project(git_repo, [feature(1)])
    git(repo, "checkout", "-q", "ai-develop")
    git(repo, "checkout", "-q", "-b", "topic")
    (repo / "README.md").write_text("topic\n")
    git(repo, "commit", "-qam", "topic")
    git(repo, "checkout", "-q", "ai-develop")
    (repo / "README.md").write_text("base\n")
    git(repo, "commit", "-qam", "base")
    subprocess.run(["git", "-C", str(repo), "merge", "topic"], capture_output=True)
    assert (repo / ".git" / "MERGE_HEAD").exists()
    project = Project.open(repo)
    try:
        orch = Orchestrator(project)
        sub = project.bus.subscribe()
        report = recovery.recover(orch)
        notices = [e.data["message"] for e in sub.get(1.0) if e.type == "notice"]
    finally:
        os.environ.pop(OWNER_ENV, None)
        project.close()
    assert (repo / ".git" / "MERGE_HEAD").exists()
    assert report.undone == []
    assert any("a merge is in progress in" in n for n in notices)


def test_recover_after_a_clean_stop_gives_the_next_attempt_its_context(git_repo, monkeypatch):
    from agent_orchestrator.db import Database
    from agent_orchestrator.orchestrator import Orchestrator
    from agent_orchestrator.project import Project

    monkeypatch.delenv(OWNER_ENV, raising=False)
    repo = make_project(git_repo, [feature(1)])
    (repo / ".orchestrator").mkdir(exist_ok=True)
    db = Database(repo / ".orchestrator" / "orchestrator.db")
    sid = db.create_session(feature_id=1, track="core", phase="implement", agent="codex",
                            attempt=2, prompt="p", cwd=str(repo), started_at=time.time())
    db.update_session(sid, status="interrupted", agent_session_id="thread-1")
    db.close()
    project = Project.open(repo)
    try:
        orch = Orchestrator(project)
        report = recovery.recover(orch)
        context = orch._retry_context[1]
    finally:
        os.environ.pop(OWNER_ENV, None)
        project.close()
    assert report.requeued == [] and report.sessions == []
    assert "the run was stopped" in context["context"]
    assert context["resume"] == {"agent": "codex", "phase": "implement", "session_id": "thread-1"}


def test_recover_is_what_start_calls(git_repo, monkeypatch, fakes_on_path):
    """Orchestrator.recover() delegates here; a run over a crashed project completes."""
    from agent_orchestrator.orchestrator import Orchestrator
    from agent_orchestrator.project import Project

    monkeypatch.delenv(OWNER_ENV, raising=False)
    repo = make_project(git_repo, [feature(1, status="in_progress")])
    calls = []
    monkeypatch.setattr(recovery, "recover", lambda orch, _real=recovery.recover:
                        calls.append(1) or _real(orch))
    project = Project.open(repo)
    try:
        summary = asyncio.run(Orchestrator(project).run_until_idle())
    finally:
        os.environ.pop(OWNER_ENV, None)
        project.close()
    assert calls == [1] and summary["passed"] == [1]
    assert json.loads((repo / "features.json").read_text())["features"][0]["status"] == "passed"
