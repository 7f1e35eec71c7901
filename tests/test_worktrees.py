from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent_orchestrator import git
from agent_orchestrator.errors import OrchestratorError
from agent_orchestrator.worktrees import Worktrees, parse_worktree_list


def sh(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


USER_NOTE = "the user's uncommitted work\n"


@pytest.fixture
def project(git_repo):
    """A project with untracked shared stuff (node_modules, .env) and the user's uncommitted edit."""
    (git_repo / "node_modules" / "pkg").mkdir(parents=True)
    (git_repo / "node_modules" / "pkg" / "index.js").write_text("module.exports = 1\n")
    (git_repo / ".env").write_text("SECRET=1\n")
    (git_repo / "README.md").write_text(USER_NOTE)
    return git_repo


def make(project: Path, **kw) -> Worktrees:
    kw.setdefault("symlink_dirs", ["node_modules", "vendor"])
    kw.setdefault("copy_files", [".env", "missing.env"])
    return Worktrees(project, project / ".orchestrator", **kw)


def assert_user_state_untouched(project: Path) -> None:
    assert (project / "README.md").read_text() == USER_NOTE
    assert git.current_branch(project) == "main"
    assert sh(project, "status", "--porcelain", "--untracked-files=no") == "M README.md"
    assert (project / ".env").read_text() == "SECRET=1\n"


def test_parse_worktree_list():
    text = ("worktree /p\nHEAD aaa\nbranch refs/heads/main\n\n"
            "worktree /p/.orchestrator/worktrees/x\nHEAD bbb\ndetached\n\n"
            "worktree /gone\nHEAD ccc\nbranch refs/heads/feature/1-a\nprunable gitdir file points to non-existent location\n")
    infos = parse_worktree_list(text)
    assert [(str(i.path), i.branch, i.head, i.prunable) for i in infos] == [
        ("/p", "main", "aaa", False), ("/p/.orchestrator/worktrees/x", None, "bbb", False),
        ("/gone", "feature/1-a", "ccc", True)]


def test_create_reuse_remove(project):
    wt = make(project)
    path = wt.create("feature-1-login", "feature/1-login", "ai-develop")
    assert path == (project / ".orchestrator" / "worktrees" / "feature-1-login").resolve()
    assert git.current_branch(path) == "feature/1-login"
    assert sh(project, "rev-parse", "feature/1-login") == sh(project, "rev-parse", "ai-develop")
    assert any(i.path == path and i.branch == "feature/1-login" for i in wt.list())
    assert wt.create("another-name", "feature/1-login", "ai-develop") == path
    wt.remove(path)
    assert not path.exists()
    assert all(i.path != path for i in wt.list())
    assert git.branch_exists(project, "feature/1-login")
    assert (project / "node_modules" / "pkg" / "index.js").exists()
    assert_user_state_untouched(project)


def test_create_reuses_existing_branch_with_its_commits(project):
    wt = make(project)
    path = wt.create("f2", "feature/2-x", "ai-develop")
    (path / "work.txt").write_text("done\n")
    sh(path, "add", "work.txt")
    sh(path, "commit", "-q", "-m", "work")
    wt.remove(path)
    again = wt.create("f2", "feature/2-x", "ai-develop")
    assert (again / "work.txt").read_text() == "done\n"


def test_symlinks_and_copies_are_never_committed(project):
    wt = make(project)
    path = wt.create("f3", "feature/3-x", "ai-develop")
    assert (path / "node_modules").is_symlink()
    assert (path / "node_modules").resolve() == (project / "node_modules").resolve()
    assert (path / ".env").read_text() == "SECRET=1\n" and not (path / ".env").is_symlink()
    assert not (path / "vendor").exists() and not (path / "missing.env").exists()
    (path / "feature.txt").write_text("f\n")
    sh(path, "add", "-A")
    sh(path, "commit", "-q", "-m", "agent commit")
    assert sh(path, "show", "--name-only", "--format=", "HEAD") == "feature.txt"
    assert git.commit_all(path, "leftovers") is None
    assert sh(project, "status", "--porcelain", "--untracked-files=all") == "M README.md"
    exclude = (project / ".git" / "info" / "exclude").read_text().splitlines()
    assert {"/node_modules", "/.env", "/.orchestrator"} <= set(exclude)
    wt.remove(path)
    assert (project / "node_modules" / "pkg" / "index.js").read_text() == "module.exports = 1\n"
    assert_user_state_untouched(project)


def test_tracked_entries_are_not_linked(git_repo):
    (git_repo / "vendor").mkdir()
    (git_repo / "vendor" / "lib.txt").write_text("tracked\n")
    sh(git_repo, "add", "vendor")
    sh(git_repo, "commit", "-q", "-m", "vendor")
    sh(git_repo, "branch", "-f", "ai-develop", "main")
    path = make(git_repo).create("f4", "feature/4-x", "ai-develop")
    assert not (path / "vendor").is_symlink()
    assert (path / "vendor" / "lib.txt").read_text() == "tracked\n"


def test_remove_refuses_dirty_worktree_unless_forced(project):
    wt = make(project)
    path = wt.create("f5", "feature/5-x", "ai-develop")
    (path / "unsaved.txt").write_text("agent work\n")
    with pytest.raises(OrchestratorError, match="uncommitted changes: unsaved.txt"):
        wt.remove(path)
    assert (path / "unsaved.txt").exists()
    wt.remove(path, force=True)
    assert not path.exists()
    assert (project / "node_modules" / "pkg" / "index.js").exists()


def test_remove_refuses_paths_outside_state_dir(project):
    with pytest.raises(OrchestratorError, match="refusing to remove"):
        make(project).remove(project)
    assert_user_state_untouched(project)


def test_create_after_worktree_dir_vanished(project):
    import shutil
    wt = make(project)
    path = wt.create("f6", "feature/6-x", "ai-develop")
    shutil.rmtree(path)
    again = wt.create("f6", "feature/6-x", "ai-develop")
    assert again == path and git.current_branch(again) == "feature/6-x"


def test_create_refuses_branch_checked_out_by_user(project):
    sh(project, "branch", "feature/7-x", "ai-develop")
    other = project.parent / "user-wt"
    sh(project, "worktree", "add", "-q", str(other), "feature/7-x")
    with pytest.raises(OrchestratorError, match="checked out in"):
        make(project).create("f7", "feature/7-x", "ai-develop")


def test_create_with_missing_base_branch(project):
    with pytest.raises(OrchestratorError, match="base branch 'nope' does not exist"):
        make(project).create("f8", "feature/8-x", "nope")


def test_invalid_names_are_refused(project):
    wt = make(project)
    with pytest.raises(OrchestratorError):
        wt.create("../escape", "feature/9-x", "ai-develop")
    with pytest.raises(OrchestratorError):
        wt.create("f9", "-b", "ai-develop")
    with pytest.raises(OrchestratorError):
        Worktrees(project, project / ".orchestrator", symlink_dirs=["../outside"])


def test_integration_checkout_is_root_when_on_base(project):
    sh(project, "stash", "-q")
    sh(project, "checkout", "-q", "ai-develop")
    assert make(project).integration_checkout("ai-develop") == project.resolve()


def test_integration_checkout_when_root_is_on_another_branch(project):
    wt = make(project)
    feature = wt.create("f10", "feature/10-x", "ai-develop")
    (feature / "ten.txt").write_text("10\n")
    sh(feature, "add", "ten.txt")
    sh(feature, "commit", "-q", "-m", "ten")

    checkout = wt.integration_checkout("ai-develop")
    assert checkout == (project / ".orchestrator" / "integration").resolve()
    assert git.current_branch(checkout) == "ai-develop"
    result = git.merge(checkout, "feature/10-x", message="Merge feature #10")
    assert result.ok
    assert sh(project, "show", "ai-develop:ten.txt") == "10"
    assert wt.integration_checkout("ai-develop") == checkout
    assert_user_state_untouched(project)
    assert not (project / "ten.txt").exists()

    (checkout / "junk.txt").write_text("left by a verifier\n")
    with pytest.raises(OrchestratorError, match="junk.txt"):
        wt.integration_checkout("ai-develop")
    assert wt.integration_checkout("ai-develop", discard_changes=True) == checkout
    assert not (checkout / "junk.txt").exists()

    sh(checkout, "checkout", "-q", "--detach")
    assert git.current_branch(wt.integration_checkout("ai-develop")) == "ai-develop"

    assert wt.release_integration() is True
    assert not checkout.exists()
    assert_user_state_untouched(project)


def test_integration_checkout_reuses_users_worktree_on_base(project):
    other = project.parent / "user-develop"
    sh(project, "worktree", "add", "-q", str(other), "ai-develop")
    assert make(project).integration_checkout("ai-develop") == other.resolve()
