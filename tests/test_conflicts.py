"""Conflict prediction with real git repositories, the watcher, and the `touches` overlap table."""
from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent_orchestrator import conflicts
from agent_orchestrator.conflicts import (ConflictWatcher, Prediction, blocked_by_touches, glob_overlap,
                                          parse_merge_tree, paths_overlap, predict, touches_overlap)
from agent_orchestrator.errors import GitError
from tests.conftest import git

OID = "50cf64e8311eaaedae8be6ca2e3872dc2a6ac929"


# ---------------------------------------------------------------- parsing (pure)

def test_parse_clean_output():
    assert parse_merge_tree(OID + "\n", 0) == conflicts.MergeTreeResult(OID, True, ())
    assert parse_merge_tree(OID + "\0", 0).clean


def test_parse_conflicts_nul_and_newline_separated():
    for text in (f"{OID}\0src/a b.py\0g.txt\0", f"{OID}\nsrc/a b.py\ng.txt\n"):
        result = parse_merge_tree(text, 1)
        assert not result.clean and result.files == ("src/a b.py", "g.txt")


def test_parse_repeated_name_is_listed_once():
    assert parse_merge_tree(f"{OID}\0f\0f\0", 1).files == ("f",)


@pytest.mark.parametrize("text,code", [
    ("", 1),                                   # git exits 1 for a ref it cannot resolve, no output
    ("merge-tree: nope - not something we can merge\n", 1),
    (OID + "\n", 128),
    ("fatal: refusing to merge unrelated histories\n", 128),
])
def test_parse_rejects_errors(text, code):
    with pytest.raises(ValueError):
        parse_merge_tree(text, code)


def test_parse_git_version():
    assert conflicts.parse_git_version("git version 2.39.5\n") == (2, 39, 5)
    assert conflicts.parse_git_version("git version 2.38.0.windows.1") >= conflicts.MIN_GIT
    assert conflicts.parse_git_version("git version 2.37.1") < conflicts.MIN_GIT
    assert conflicts.parse_git_version("nonsense") == ()


@pytest.mark.parametrize("a,b,expected", [
    ({"a.py"}, {"a.py"}, True),
    ({"src"}, {"src/x.py"}, True),
    ({"src/x.py"}, {"src"}, True),
    ({"src/x.py"}, {"src/y.py"}, False),
    ({"src2/x"}, {"src"}, False),
    (set(), {"a"}, False),
])
def test_paths_overlap(a, b, expected):
    assert paths_overlap(a, b) is expected


# ---------------------------------------------------------------- real repositories

def commit_file(repo: Path, branch: str, path: str, text: str, *, create_from: str | None = None) -> None:
    if create_from is not None:
        git(repo, "checkout", "-q", "-b", branch, create_from)
    else:
        git(repo, "checkout", "-q", branch)
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(repo, "add", "--", path)
    git(repo, "commit", "-q", "-m", f"{branch}: {path}")
    git(repo, "checkout", "-q", "main")


@pytest.fixture
def repo(git_repo: Path) -> Path:
    """ai-develop with a shared file; the user's checkout stays on main."""
    commit_file(git_repo, "ai-develop", "app/config.py", "name = 'demo'\nport = 8000\ndebug = False\n")
    commit_file(git_repo, "ai-develop", "app/other.py", "x = 1\n")
    return git_repo


def test_two_branches_changing_the_same_lines_are_predicted_before_either_merges(repo):
    commit_file(repo, "feature/1-a", "app/config.py", "name = 'demo'\nport = 9000\ndebug = False\n",
                create_from="ai-develop")
    commit_file(repo, "feature/2-b", "app/config.py", "name = 'demo'\nport = 7000\ndebug = False\n",
                create_from="ai-develop")
    base_before = git(repo, "rev-parse", "ai-develop")
    preds = predict(repo, "ai-develop", {1: "feature/1-a", 2: "feature/2-b"})
    assert preds == [Prediction((1, 2), ("feature/1-a", "feature/2-b"), ("app/config.py",), "feature")]
    assert git(repo, "rev-parse", "ai-develop") == base_before
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    # and it is real: merging both in turn conflicts in that file
    git(repo, "checkout", "-q", "ai-develop")
    git(repo, "merge", "-q", "--no-ff", "-m", "m1", "feature/1-a")
    out = subprocess.run(["git", "-C", str(repo), "merge", "--no-ff", "-m", "m2", "feature/2-b"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "app/config.py" in out.stdout
    git(repo, "merge", "--abort")


def test_branch_conflicting_with_a_newer_base_commit(repo):
    commit_file(repo, "feature/3-c", "app/config.py", "name = 'demo'\nport = 8000\ndebug = True\n",
                create_from="ai-develop")
    assert predict(repo, "ai-develop", {3: "feature/3-c"}) == []
    commit_file(repo, "ai-develop", "app/config.py", "name = 'demo'\nport = 8000\ndebug = 'verbose'\n")
    assert predict(repo, "ai-develop", {3: "feature/3-c"}) == [
        Prediction((3,), ("feature/3-c",), ("app/config.py",), "base")]


def test_clean_pairs_and_branches_without_commits_give_nothing(repo):
    commit_file(repo, "feature/1-a", "app/config.py", "name = 'shop'\nport = 8000\ndebug = False\n",
                create_from="ai-develop")
    commit_file(repo, "feature/2-b", "app/config.py", "name = 'demo'\nport = 8000\ndebug = True\n",
                create_from="ai-develop")   # other line of the same file: merges cleanly
    commit_file(repo, "feature/3-c", "app/new.py", "y = 2\n", create_from="ai-develop")
    git(repo, "branch", "feature/4-empty", "ai-develop")
    branches = {1: "feature/1-a", 2: "feature/2-b", 3: "feature/3-c", 4: "feature/4-empty",
                5: "feature/5-not-created-yet"}
    assert predict(repo, "ai-develop", branches) == []


def test_a_branch_already_merged_is_skipped(repo):
    commit_file(repo, "feature/1-a", "app/config.py", "name = 'demo'\nport = 1\ndebug = False\n",
                create_from="ai-develop")
    git(repo, "checkout", "-q", "ai-develop")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge 1", "feature/1-a")
    git(repo, "checkout", "-q", "main")
    commit_file(repo, "feature/2-b", "app/config.py", "name = 'demo'\nport = 2\ndebug = False\n",
                create_from="ai-develop^1")   # forked before the merge: conflicts with the base only
    preds = predict(repo, "ai-develop", {1: "feature/1-a", 2: "feature/2-b"})
    assert [p.against for p in preds] == ["base"] and preds[0].feature_ids == (2,)


def test_pair_files_already_conflicting_with_base_are_not_repeated(repo):
    commit_file(repo, "feature/1-a", "app/config.py", "name = 'demo'\nport = 1\ndebug = False\n",
                create_from="ai-develop")
    commit_file(repo, "ai-develop", "app/config.py", "name = 'demo'\nport = 2\ndebug = False\n")
    commit_file(repo, "feature/2-b", "app/other.py", "x = 3\n", create_from="ai-develop")
    preds = predict(repo, "ai-develop", {1: "feature/1-a", 2: "feature/2-b"})
    assert preds == [Prediction((1,), ("feature/1-a",), ("app/config.py",), "base")]


def test_file_names_with_spaces_and_unicode(repo):
    commit_file(repo, "ai-develop", "docs/read me ü.md", "one\n")
    commit_file(repo, "feature/1-a", "docs/read me ü.md", "two\n", create_from="ai-develop")
    commit_file(repo, "feature/2-b", "docs/read me ü.md", "three\n", create_from="ai-develop")
    preds = predict(repo, "ai-develop", {1: "feature/1-a", 2: "feature/2-b"})
    assert preds[0].files == ("docs/read me ü.md",)


def test_merge_tree_error_is_a_git_error(repo):
    with pytest.raises(GitError):
        conflicts.merge_tree(repo, "ai-develop", "no-such-branch")
    with pytest.raises(GitError):
        conflicts.merge_tree(repo, "ai-develop", "--output=x")


# ---------------------------------------------------------------- the watcher

@dataclass
class Recorder:
    events: list = field(default_factory=list)

    def __call__(self, type_: str, data: dict) -> None:
        self.events.append((type_, data))

    def of(self, type_: str) -> list[dict]:
        return [d for t, d in self.events if t == type_]


def test_watcher_announces_once_and_again_after_it_cleared(repo):
    commit_file(repo, "feature/1-a", "app/config.py", "name = 'demo'\nport = 1\ndebug = False\n",
                create_from="ai-develop")
    commit_file(repo, "feature/2-b", "app/config.py", "name = 'demo'\nport = 2\ndebug = False\n",
                create_from="ai-develop")
    active = {1: "feature/1-a", 2: "feature/2-b"}
    rec = Recorder()
    watcher = ConflictWatcher(repo, "ai-develop", lambda: active, rec, interval=30)
    new = watcher.check_once()
    assert len(new) == 1
    assert rec.of("conflict") == [{"feature_ids": [1, 2], "branches": ["feature/1-a", "feature/2-b"],
                                   "files": ["app/config.py"], "against": "feature", "base": "ai-develop"}]
    assert watcher.check_once() == [] and len(rec.of("conflict")) == 1
    active.pop(2)                               # feature 2 finished: the prediction is gone
    assert watcher.check_once() == [] and watcher.current == []
    active[2] = "feature/2-b"                   # it comes back: announced again
    assert len(watcher.check_once()) == 1 and len(rec.of("conflict")) == 2
    commit_file(repo, "feature/2-b", "app/other.py", "x = 9\n")
    commit_file(repo, "feature/1-a", "app/other.py", "x = 8\n")
    new = watcher.check_once()                 # more files: a different prediction
    assert [p.files for p in new] == [("app/config.py", "app/other.py")]


def test_watcher_run_loop_uses_a_thread_and_stops(repo):
    commit_file(repo, "feature/1-a", "app/config.py", "name = 'demo'\nport = 1\ndebug = False\n",
                create_from="ai-develop")
    commit_file(repo, "ai-develop", "app/config.py", "name = 'demo'\nport = 2\ndebug = False\n")
    rec = Recorder()
    sleeps: list[float] = []

    async def main():
        stop = asyncio.Event()

        async def fake_sleep(seconds):
            sleeps.append(seconds)
            if len(sleeps) == 3:
                stop.set()
            await asyncio.sleep(0)

        watcher = ConflictWatcher(repo, "ai-develop", lambda: {1: "feature/1-a"}, rec, interval=12,
                                  sleep=fake_sleep)
        await asyncio.wait_for(watcher.run(stop), 10)

    asyncio.run(main())
    assert sleeps == [12, 12, 12]
    assert [d["against"] for d in rec.of("conflict")] == ["base"]


def test_watcher_stops_promptly_with_the_real_sleep(repo):
    async def main():
        stop = asyncio.Event()
        watcher = ConflictWatcher(repo, "ai-develop", lambda: {}, Recorder(), interval=3600)
        task = asyncio.ensure_future(watcher.run(stop))
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 1)

    asyncio.run(main())


def test_watcher_reports_git_failures_once_and_keeps_going(repo):
    calls = []

    def broken(repo_, base, branches):
        calls.append(branches)
        raise GitError("git merge-tree failed: boom")

    rec = Recorder()
    watcher = ConflictWatcher(repo, "ai-develop", lambda: {1: "feature/1-a"}, rec, interval=1, predictor=broken)
    assert watcher.check_once() == [] and watcher.check_once() == []
    assert len(calls) == 2
    assert [d["level"] for d in rec.of("notice")] == ["warning"]
    assert "boom" in rec.of("notice")[0]["message"]


def test_watcher_does_nothing_without_active_branches(repo):
    calls = []
    watcher = ConflictWatcher(repo, "ai-develop", lambda: {}, Recorder(), interval=1,
                              predictor=lambda *a: calls.append(a) or [])
    assert watcher.check_once() == [] and calls == []


# ---------------------------------------------------------------- touches

@pytest.mark.parametrize("a,b,expected", [
    ("src/app.py", "src/app.py", True),
    ("./src/app.py", "src/app.py", True),
    ("src/app.py", "src/other.py", False),
    ("src", "src/app.py", True),                 # a directory holds the file
    ("src/", "src/app.py", True),
    ("src", "src2/app.py", False),
    ("src/*.py", "src/app.py", True),
    ("src/*.py", "src/app.js", False),
    ("src/**", "src/deep/x.js", True),
    ("src/**", "tests/x.py", False),
    ("*.py", "*.js", False),
    ("*.py", "src/*", True),
    ("src/api/*", "src/*", True),
    ("src/api/*", "src/web/*", False),
    ("app/Http", "*.php", True),                 # a directory may hold .php files
    ("README.md", "*.md", True),
    ("README.md", "docs/*.md", False),
    ("src/[ab].py", "src/a.py", True),
    ("src/[ab].py", "src/c.py", False),
    ("src/?.py", "src/*.py", True),
    ("tests/test_?.py", "tests/*", True),
    ("", "src", False),
])
def test_glob_overlap_table(a, b, expected):
    assert glob_overlap(a, b) is expected
    assert glob_overlap(b, a) is expected


def test_touches_overlap_lists():
    assert touches_overlap(["src/api/*", "docs/x.md"], ["lib/*", "docs/x.md"])
    assert not touches_overlap(["src/api/*"], ["src/web/*", "README.md"])
    assert not touches_overlap([], ["*"])
    assert not touches_overlap(["*"], [])


@dataclass
class F:
    id: int
    touches: list = field(default_factory=list)


def test_blocked_by_touches():
    running = [F(7, ["src/web/*"]), F(3, ["src/api/**"]), F(5, ["src/api/users.py"])]
    assert blocked_by_touches(F(9, ["src/api/users.py"]), running) == 3
    assert blocked_by_touches(F(9, ["docs/*"]), running) is None
    assert blocked_by_touches(F(9, []), running) is None
    assert blocked_by_touches(F(3, ["src/api/x.py"]), [F(3, ["src/api/**"])]) is None  # itself
    assert blocked_by_touches(F(9, ["src/*"]), [F(4, [])]) is None
