"""The shortcuts the pipeline takes in the usual case (issue 9: fewer git processes, no re-parsing
of features.json) give exactly what the careful way gives, and fall back to it otherwise."""
from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from agent_orchestrator import git
from agent_orchestrator.errors import FeaturesError
from agent_orchestrator.features import DumpCache, FeatureStore, dump_features, parse_features
from agent_orchestrator.worktrees import Worktrees


def sh(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def commit_file(repo: Path, name: str, text: str, message: str = "change") -> None:
    (repo / name).write_text(text)
    sh(repo, "add", "--", name)
    sh(repo, "commit", "-q", "-m", message)


# ---------------------------------------------------------------- features.json

def _random_value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth < 3 and r < 0.2:
        return {f"k{i}é": _random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}
    if depth < 3 and r < 0.4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice([1, 2.5, "x\ny\"z", "ü", None, True, "", -3])


def test_dump_cache_gives_exactly_dump_features():
    rng = random.Random(9)
    for _ in range(200):
        items = [{"id": i, "name": f"F{i}", "status": "open", "x": _random_value(rng)}
                 for i in range(1, rng.randint(0, 6) + 1)]
        data = ({"project": "demo", "meta": _random_value(rng), "features": items, "tail": [1]}
                if rng.random() < 0.6 else items)
        text = json.dumps(data, indent=rng.choice([2, 4, "\t", 1, 0]), ensure_ascii=False)
        doc = parse_features(text + rng.choice(["\n", ""]))
        cache = DumpCache()
        assert cache.dump(doc) == dump_features(doc)
        if doc.features:
            raw = doc.features[-1].raw
            cache.forget(raw)
            raw["status"] = "passed"
            assert cache.dump(doc) == dump_features(doc)


def _store(tmp_path: Path, n: int = 3) -> FeatureStore:
    path = tmp_path / "features.json"
    path.write_text(json.dumps({"features": [{"id": i, "name": f"F{i}", "status": "open"}
                                             for i in range(1, n + 1)]}, indent=2) + "\n")
    store = FeatureStore(path, tmp_path / "features.lock")
    store.load()
    return store


def test_update_after_update_still_sees_the_users_edit(tmp_path):
    store = _store(tmp_path)
    store.update(1, {"status": "in_progress"})
    data = json.loads(store.path.read_text())
    data["features"][0]["status"] = "failed"          # the user, between two daemon writes
    data["features"][1]["name"] = "renamed by the user"
    store.path.write_text(json.dumps(data, indent=2) + "\n")
    assert store.update(1, {"status": "passed", "attempts": 1}) == {"attempts": 1}
    after = {f["id"]: f for f in json.loads(store.path.read_text())["features"]}
    assert after[1]["status"] == "failed" and after[1]["attempts"] == 1
    assert after[2]["name"] == "renamed by the user"
    assert store.changed()


def test_update_of_daemon_fields_is_still_validated(tmp_path):
    store = _store(tmp_path)
    before = store.path.read_text()
    with pytest.raises(FeaturesError) as err:
        store.update(2, {"status": "done"})
    assert "feature #2" in " ".join(err.value.problems)
    assert store.path.read_text() == before
    store.update(2, {"status": "in_progress"})  # the store is still usable
    assert json.loads(store.path.read_text())["features"][1]["status"] == "in_progress"


def test_consecutive_updates_write_what_a_full_dump_writes(tmp_path):
    store = _store(tmp_path, 20)
    for i in range(1, 21):
        store.update(i, {"status": "in_progress", "branch": f"feature/{i}-x"})
        store.update(i, {"status": "passed", "attempts": 1, "cost_usd": 0.5})
    text = store.path.read_text()
    assert text == dump_features(parse_features(text))
    assert all(f["status"] == "passed" for f in json.loads(text)["features"])


# ---------------------------------------------------------------- git

def test_commit_all_with_nothing_to_commit(git_repo):
    head = sh(git_repo, "rev-parse", "HEAD")
    assert git.commit_all(git_repo, "nothing", exclude=["features.json"]) is None
    assert sh(git_repo, "rev-parse", "HEAD") == head


@pytest.fixture
def feature_worktree(git_repo):
    """features.json committed on ai-develop; a feature worktree on a branch from it."""
    sh(git_repo, "checkout", "-q", "ai-develop")
    commit_file(git_repo, "features.json", '{"features": []}\n', "features")
    sh(git_repo, "checkout", "-q", "main")
    wt = git_repo / ".orchestrator" / "worktrees" / "feature-1"
    sh(git_repo, "worktree", "add", "-q", "-b", "feature/1-x", str(wt), "ai-develop")
    return wt


def test_restore_paths_nothing_to_drop(feature_worktree):
    head = sh(feature_worktree, "rev-parse", "HEAD")
    assert git.restore_paths_from(feature_worktree, "ai-develop", ["features.json", "progress.txt"],
                                  "drop") is None
    assert sh(feature_worktree, "rev-parse", "HEAD") == head


def test_restore_paths_drops_a_committed_edit(feature_worktree):
    commit_file(feature_worktree, "features.json", '{"features": [1]}\n', "agent edit")
    sha = git.restore_paths_from(feature_worktree, "ai-develop", ["features.json"], "drop")
    assert sha == sh(feature_worktree, "rev-parse", "HEAD")
    assert (feature_worktree / "features.json").read_text() == '{"features": []}\n'
    assert sh(feature_worktree, "status", "--porcelain") == ""


def test_restore_paths_restores_an_uncommitted_edit(feature_worktree):
    (feature_worktree / "features.json").write_text("edited by the agent\n")
    assert git.restore_paths_from(feature_worktree, "ai-develop", ["features.json"], "drop") is None
    assert (feature_worktree / "features.json").read_text() == '{"features": []}\n'
    # told that the worktree is clean, it only compares HEAD with the ref
    (feature_worktree / "features.json").write_text("edited again\n")
    git.restore_paths_from(feature_worktree, "ai-develop", ["features.json"], "drop",
                           worktree_clean=True)
    assert (feature_worktree / "features.json").read_text() == "edited again\n"


def test_merge_reports_up_to_date_and_sha(feature_worktree, git_repo):
    done = git.merge(feature_worktree, "ai-develop", message="m", no_ff=False)
    assert done.ok and done.up_to_date and done.sha == sh(feature_worktree, "rev-parse", "HEAD")
    commit_file(git_repo, "a.txt", "a\n")  # on main
    done = git.merge(feature_worktree, "main", message="m", no_ff=True, want_sha=False)
    assert done.ok and not done.up_to_date and done.sha is None


def test_merge_in_progress_is_seen_in_a_linked_worktree(feature_worktree, git_repo):
    commit_file(feature_worktree, "README.md", "feature side\n")
    sh(git_repo, "checkout", "-q", "ai-develop")
    commit_file(git_repo, "README.md", "base side\n")
    sh(git_repo, "checkout", "-q", "main")
    subprocess.run(["git", "-C", str(feature_worktree), "merge", "ai-develop"], capture_output=True)
    assert git.merge_in_progress(feature_worktree)
    assert not git.merge_in_progress(git_repo)
    git.abort_merge(feature_worktree)
    assert not git.merge_in_progress(feature_worktree)


def test_current_branch_and_branch_status(git_repo, feature_worktree):
    assert git.current_branch(git_repo) == "main"
    assert git.current_branch(feature_worktree) == "feature/1-x"
    (feature_worktree / "new file.txt").write_text("x")
    branch, entries = git.branch_status(feature_worktree)
    assert branch == "feature/1-x" and [e.path for e in entries] == ["new file.txt"]
    sh(git_repo, "checkout", "-q", "--detach")
    assert git.current_branch(git_repo) is None
    assert git.branch_status(git_repo)[0] is None
    sh(git_repo, "checkout", "-q", "--orphan", "fresh")
    assert git.current_branch(git_repo) == "fresh"


def test_identity_args(git_repo, monkeypatch, tmp_path):
    assert git.identity_args(git_repo) == []
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.gitconfig: no identity at all
    assert git.identity_args(git_repo) == ["-c", f"user.name={git.FALLBACK_NAME}",
                                           "-c", f"user.email={git.FALLBACK_EMAIL}"]
    sh(git_repo, "config", "user.email", "me@example.com")
    assert git.identity_args(git_repo) == ["-c", f"user.name={git.FALLBACK_NAME}"]


# ---------------------------------------------------------------- worktrees

def test_create_reports_a_new_branch_then_reuses(git_repo):
    wts = Worktrees(git_repo, git_repo / ".orchestrator")
    path, new = wts.create_reporting("feature-1", "feature/1-x", "ai-develop")
    assert new and git.current_branch(path) == "feature/1-x"
    assert sh(git_repo, "rev-parse", "feature/1-x") == sh(git_repo, "rev-parse", "ai-develop")
    assert wts.create_reporting("feature-1", "feature/1-x", "ai-develop") == (path, False)
    wts.remove(path)
    again, new = wts.create_reporting("feature-1", "feature/1-x", "ai-develop")
    assert again == path and not new  # the branch existed: kept, with its commits


def test_create_after_the_user_deleted_the_worktree(git_repo):
    import shutil
    wts = Worktrees(git_repo, git_repo / ".orchestrator")
    path = wts.create("feature-1", "feature/1-x", "ai-develop")
    shutil.rmtree(path)  # registered but gone: git refuses the quick way, the careful way prunes
    assert wts.create("feature-1", "feature/1-x", "ai-develop") == path
    assert path.is_dir()


def test_integration_checkout_is_checked_again_each_time(git_repo):
    import shutil
    wts = Worktrees(git_repo, git_repo / ".orchestrator")
    first = wts.integration_checkout("ai-develop", discard_changes=True)
    assert first == wts.integration_dir
    (first / "stray.txt").write_text("left by a verifier")
    (first / "README.md").write_text("changed")
    assert wts.integration_checkout("ai-develop", discard_changes=True) == first
    assert sh(first, "status", "--porcelain") == ""
    shutil.rmtree(first)
    assert wts.integration_checkout("ai-develop", discard_changes=True) == first
    assert git.current_branch(first) == "ai-develop"
    assert wts.release_integration()
    sh(git_repo, "checkout", "-q", "ai-develop")  # now the user's checkout has the base branch
    assert wts.integration_checkout("ai-develop") == git_repo.resolve()
    sh(git_repo, "checkout", "-q", "main")
    assert wts.integration_checkout("ai-develop", discard_changes=True) == wts.integration_dir


# ---------------------------------------------------------------- agent output backpressure

def test_held_output_is_not_read_until_released(tmp_path):
    """While hold_output() is true the child's pipes are not read: the child blocks writing (so
    the daemon's memory does not grow with its output); released, every line arrives."""
    import asyncio
    import sys

    from agent_orchestrator import proc

    script = ("import sys\n"
              "for i in range(2000):\n"
              "    sys.stdout.write('x' * 1000 + '\\n')\n")
    lines: list[str] = []
    hold = {"on": True}

    async def main() -> tuple[int, proc.ExitInfo]:
        child = await proc.AgentProcess.start([sys.executable, "-c", script], cwd=tmp_path,
                                              env=None, on_stdout=lines.append,
                                              on_stderr=lines.append,
                                              hold_output=lambda: hold["on"])
        await asyncio.sleep(0.5)
        seen_while_held = len(lines)
        hold["on"] = False
        return seen_while_held, await child.wait(timeout=30)

    seen_while_held, info = asyncio.run(main())
    # at most what one pipe buffer (64 KiB) and the first chunk held: far from 2 MB
    assert seen_while_held < 200
    assert info.returncode == 0 and info.reason == "exited"
    assert len(lines) == 2000 and all(len(line) == 1000 for line in lines)
