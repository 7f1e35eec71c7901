from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent_orchestrator import git
from agent_orchestrator.errors import GitError


def sh(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def commit_file(repo: Path, name: str, content: str, message: str | None = None) -> str:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    sh(repo, "add", "--", name)
    sh(repo, "commit", "-q", "-m", message or f"write {name}")
    return sh(repo, "rev-parse", "HEAD")


def on_branch(repo: Path, branch: str, start: str = "main") -> None:
    sh(repo, "checkout", "-q", "-b", branch, start)


# ------------------------------------------------------------------ pure helpers

@pytest.mark.parametrize("name, slug", [
    ("User Authentication", "user-authentication"),
    ("Crème brûlée façade", "creme-brulee-facade"),
    ("Äpfel & Öl über Straße", "apfel-ol-uber-strae"),
    ("api/v2/users", "api-v2-users"),
    ("--force", "force"),
    ("-rf /", "rf"),
    ("../../etc/passwd", "etc-passwd"),
    ("release.lock", "release-lock"),
    ("a..b", "a-b"),
    ("🚀🔥", "feature"),
    ("", "feature"),
    ("   ", "feature"),
    ("日本語", "feature"),
    ("ﬁle ① ²", "file-1-2"),
    ("Add   multiple---dashes__and_underscores", "add-multiple-dashes-and-underscores"),
    ("x" * 500, "x" * 40),
    ("ab-" * 30, ("ab-" * 14)[:40].rstrip("-")),
])
def test_slugify(name, slug):
    result = git.slugify(name)
    assert result == slug
    assert 1 <= len(result) <= 40
    assert git.valid_branch_name(f"feature/1-{result}")


def test_slugify_max_len():
    assert git.slugify("hello world", max_len=5) == "hello"
    assert git.slugify("hello world", max_len=6) == "hello"


def test_branch_name():
    assert git.branch_name(12, "User login (OAuth)") == "feature/12-user-login-oauth"
    assert git.branch_name(3, "🚀") == "feature/3-feature"


@pytest.mark.parametrize("name, ok", [
    ("ai-develop", True), ("feature/1-login", True), ("a/b/c", True), ("v1.2", True),
    ("naïve", True), ("x@y", True),
    ("", False), ("-x", False), ("HEAD", False), ("@", False), ("a..b", False), ("a b", False),
    ("a~1", False), ("a^", False), ("a:b", False), ("a?", False), ("a*", False), ("a[b", False),
    ("a\\b", False), ("a\tb", False), ("a\x7f", False), ("/a", False), ("a/", False),
    ("a//b", False), ("a.", False), (".a", False), ("a/.b", False), ("a.lock", False),
    ("a/b.lock/c", False), ("a@{1}", False),
])
def test_valid_branch_name(name, ok, git_repo):
    assert git.valid_branch_name(name) is ok
    if name and "\x7f" not in name and "\t" not in name:
        real = subprocess.run(["git", "check-ref-format", "--branch", name], cwd=git_repo,
                              capture_output=True).returncode == 0
        assert real is ok or name in ("HEAD", "@")  # git expands these to the current branch


def test_parse_status_z_with_rename():
    text = "R  new.txt\0old.txt\0 M a b.txt\0?? dir/\0"
    assert git.parse_status_z(text) == [
        git.StatusEntry("R ", "new.txt", "old.txt"),
        git.StatusEntry(" M", "a b.txt"),
        git.StatusEntry("??", "dir/"),
    ]


def test_parse_overwritten_files():
    out = ("error: Your local changes to the following files would be overwritten by merge:\n"
           "\tREADME.md\n\tsrc/app.py\nPlease commit your changes or stash them before you merge.\n"
           "error: The following untracked working tree files would be overwritten by merge:\n"
           "  new.txt\nAborting\n")
    assert git.parse_overwritten_files(out) == ["README.md", "src/app.py", "new.txt"]
    assert git.parse_overwritten_files("CONFLICT (content): Merge conflict in a.txt") == []


def test_check_ref_refuses_options():
    for bad in ("-rf", "--upload-pack=x", "", "a b", "a\nb"):
        with pytest.raises(GitError):
            git.check_ref(bad)


# ------------------------------------------------------------------ queries

def test_queries(git_repo, tmp_path):
    assert git.is_repo(git_repo) and not git.is_repo(tmp_path / "nothing")
    assert git.current_branch(git_repo) == "main"
    assert git.branch_exists(git_repo, "ai-develop") and not git.branch_exists(git_repo, "nope")
    head = sh(git_repo, "rev-parse", "HEAD")
    assert git.rev_parse(git_repo, "ai-develop") == head
    assert git.rev_parse(git_repo, "nope") is None
    git.create_branch(git_repo, "feature/1-x", "ai-develop")
    assert git.branch_exists(git_repo, "feature/1-x")
    with pytest.raises(GitError):
        git.create_branch(git_repo, "-bad", "main")
    commit_file(git_repo, "b.txt", "b")
    assert git.commits_ahead(git_repo, "ai-develop", "main") == 1
    assert git.status(git_repo) == []
    (git_repo / "b.txt").write_text("changed")
    (git_repo / "new file.txt").write_text("n")
    assert sorted(git.dirty_paths(git_repo)) == ["b.txt", "new file.txt"]
    sh(git_repo, "checkout", "-q", "--detach")
    assert git.current_branch(git_repo) is None


def test_git_env_drops_inherited_git_dir(git_repo, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert git.current_branch(git_repo) == "main"
    assert git.rev_parse(git_repo, "HEAD") is not None


def test_has_upstream(git_repo, tmp_path):
    assert not git.has_upstream(git_repo, "ai-develop")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    sh(git_repo, "remote", "add", "origin", str(remote))
    git.push(git_repo, "origin", "ai-develop")
    assert sh(remote, "rev-parse", "ai-develop") == sh(git_repo, "rev-parse", "ai-develop")
    sh(git_repo, "branch", "--set-upstream-to=origin/ai-develop", "ai-develop")
    assert git.has_upstream(git_repo, "ai-develop")
    with pytest.raises(GitError):
        git.push(git_repo, "--exec=evil", "ai-develop")


def test_delete_branch(git_repo):
    git.create_branch(git_repo, "feature/2-y", "main")
    git.delete_branch(git_repo, "feature/2-y")
    assert not git.branch_exists(git_repo, "feature/2-y")


def test_delete_branch_merged_into_base_while_root_is_elsewhere(git_repo):
    on_branch(git_repo, "feature/3-z", "ai-develop")
    commit_file(git_repo, "z.txt", "z")
    sh(git_repo, "checkout", "-q", "main")
    with pytest.raises(GitError, match="not fully merged into ai-develop"):
        git.delete_branch(git_repo, "feature/3-z", merged_into="ai-develop")
    sh(git_repo, "branch", "-f", "ai-develop", "feature/3-z")
    git.delete_branch(git_repo, "feature/3-z", merged_into="ai-develop")
    assert not git.branch_exists(git_repo, "feature/3-z")


# ------------------------------------------------------------------ commit_all

def test_commit_all_with_exclude(git_repo):
    commit_file(git_repo, "features.json", "[]\n")
    (git_repo / "features.json").write_text('[{"id": 1}]\n')
    (git_repo / "src").mkdir()
    (git_repo / "src" / "app.py").write_text("print(1)\n")
    (git_repo / "README.md").unlink()
    (git_repo / "progress.txt").write_text("log\n")
    sha = git.commit_all(git_repo, "agent leftovers", exclude=["features.json", "progress.txt"])
    assert sha == sh(git_repo, "rev-parse", "HEAD")
    assert sh(git_repo, "log", "-1", "--format=%s|%an") == "agent leftovers|Test User"
    files = sh(git_repo, "show", "--name-status", "--format=", "HEAD").splitlines()
    assert sorted(files) == ["A\tsrc/app.py", "D\tREADME.md"]
    assert sorted(git.dirty_paths(git_repo)) == ["features.json", "progress.txt"]
    assert git.commit_all(git_repo, "again", exclude=["features.json", "progress.txt"]) is None


def test_commit_all_unstages_excluded_paths_the_agent_staged(git_repo):
    commit_file(git_repo, "features.json", "[]\n")
    (git_repo / "features.json").write_text("[1]\n")
    (git_repo / "x.txt").write_text("x")
    sh(git_repo, "add", "-A")
    git.commit_all(git_repo, "leftovers", exclude=["features.json"])
    assert sh(git_repo, "show", "--name-only", "--format=", "HEAD") == "x.txt"
    assert (git_repo / "features.json").read_text() == "[1]\n"


def test_commit_all_nothing_to_commit(git_repo):
    assert git.commit_all(git_repo, "nothing") is None


def test_commit_all_without_identity_uses_fallback(git_repo, isolated_home):
    (isolated_home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    (git_repo / "f.txt").write_text("f")
    git.commit_all(git_repo, "by daemon")
    assert sh(git_repo, "log", "-1", "--format=%an <%ae>") == \
        "agent-orchestrator <agent-orchestrator@localhost>"


# ------------------------------------------------------------------ merge

@pytest.fixture
def diverged(git_repo):
    """ai-develop and feature/1-a both change shared.txt (conflict); feature/2-b is clean."""
    commit_file(git_repo, "shared.txt", "base\n")
    sh(git_repo, "branch", "-f", "ai-develop", "main")
    on_branch(git_repo, "feature/1-a", "ai-develop")
    commit_file(git_repo, "shared.txt", "feature\n")
    on_branch(git_repo, "feature/2-b", "ai-develop")
    commit_file(git_repo, "b.txt", "b\n")
    sh(git_repo, "checkout", "-q", "ai-develop")
    commit_file(git_repo, "shared.txt", "develop\n")
    return git_repo


def test_merge_clean_creates_merge_commit(diverged):
    result = git.merge(diverged, "feature/2-b", message="Merge feature #2")
    assert result.ok and not result.conflicts and not result.blocked_by_local_changes
    assert result.sha == sh(diverged, "rev-parse", "HEAD")
    assert sh(diverged, "log", "-1", "--format=%s|%P").startswith("Merge feature #2|")
    assert len(sh(diverged, "log", "-1", "--format=%P").split()) == 2
    again = git.merge(diverged, "feature/2-b", message="again")
    assert again.ok and again.up_to_date and again.sha == result.sha


def test_merge_conflict_is_aborted_and_files_named(diverged):
    (diverged / "user-notes.txt").write_text("mine, uncommitted\n")
    before = sh(diverged, "rev-parse", "HEAD")
    result = git.merge(diverged, "feature/1-a", message="Merge feature #1")
    assert not result.ok
    assert result.conflicts == ["shared.txt"]
    assert not git.merge_in_progress(diverged)
    assert sh(diverged, "rev-parse", "HEAD") == before
    assert (diverged / "shared.txt").read_text() == "develop\n"
    assert (diverged / "user-notes.txt").read_text() == "mine, uncommitted\n"
    assert git.dirty_paths(diverged) == ["user-notes.txt"]


def test_merge_blocked_by_users_uncommitted_change(diverged):
    (diverged / "b.txt").write_text("the user's own b\n")
    before = sh(diverged, "rev-parse", "HEAD")
    result = git.merge(diverged, "feature/2-b", message="Merge feature #2")
    assert not result.ok and not result.conflicts
    assert result.blocked_by_local_changes == ["b.txt"]
    assert (diverged / "b.txt").read_text() == "the user's own b\n"
    assert sh(diverged, "rev-parse", "HEAD") == before
    assert not git.merge_in_progress(diverged)


def test_merge_blocked_by_tracked_local_change(diverged):
    (diverged / "shared.txt").write_text("user edit\n")
    result = git.merge(diverged, "feature/1-a", message="m")
    assert result.blocked_by_local_changes == ["shared.txt"]
    assert (diverged / "shared.txt").read_text() == "user edit\n"


def test_merge_with_unrelated_local_change_keeps_it(diverged):
    (diverged / "README.md").write_text("user edit\n")
    result = git.merge(diverged, "feature/2-b", message="m")
    assert result.ok
    assert (diverged / "README.md").read_text() == "user edit\n"
    assert git.dirty_paths(diverged) == ["README.md"]


def test_merge_never_aborts_the_users_own_merge(diverged):
    subprocess.run(["git", "-C", str(diverged), "merge", "feature/1-a"], capture_output=True)
    assert git.merge_in_progress(diverged)
    result = git.merge(diverged, "feature/2-b", message="m")
    assert not result.ok and result.blocked_by_local_changes
    assert git.merge_in_progress(diverged)


def test_merge_refuses_option_like_ref(diverged):
    with pytest.raises(GitError):
        git.merge(diverged, "--abort", message="m")


# ------------------------------------------------------------------ revert / merge_commits_of

def test_revert_merge_and_merge_commits_of(diverged):
    m1 = git.merge(diverged, "feature/2-b", message="Merge feature #2").sha
    sh(diverged, "checkout", "-q", "feature/2-b")
    commit_file(diverged, "b2.txt", "more\n")
    sh(diverged, "checkout", "-q", "ai-develop")
    other = git.merge(diverged, "feature/1-a", message="x")
    assert not other.ok
    m2 = git.merge(diverged, "feature/2-b", message="Merge feature #2 again").sha
    assert git.merge_commits_of(diverged, "ai-develop", "feature/2-b") == [m2, m1]
    assert git.merge_commits_of(diverged, "ai-develop", "feature/1-a") == []

    assert git.revert_merge(diverged, m2, "Revert feature #2 (verification failed)") is True
    assert not (diverged / "b2.txt").exists() and (diverged / "b.txt").exists()
    assert sh(diverged, "log", "-1", "--format=%s") == "Revert feature #2 (verification failed)"
    assert git.dirty_paths(diverged) == []
    assert not (diverged / ".git" / "REVERT_HEAD").exists()


def test_revert_merge_conflict_is_aborted(diverged):
    m = git.merge(diverged, "feature/2-b", message="Merge feature #2").sha
    commit_file(diverged, "b.txt", "changed later on develop\n")
    head = sh(diverged, "rev-parse", "HEAD")
    assert git.revert_merge(diverged, m, "revert") is False
    assert sh(diverged, "rev-parse", "HEAD") == head
    assert git.dirty_paths(diverged) == []
    assert not (diverged / ".git" / "REVERT_HEAD").exists()
    assert (diverged / "b.txt").read_text() == "changed later on develop\n"


def test_revert_merge_refuses_with_staged_user_changes(diverged):
    m = git.merge(diverged, "feature/2-b", message="Merge feature #2").sha
    (diverged / "README.md").write_text("staged by the user\n")
    sh(diverged, "add", "README.md")
    assert git.revert_merge(diverged, m, "revert") is False
    assert sh(diverged, "rev-parse", "HEAD") == m
    assert sh(diverged, "diff", "--cached", "--name-only") == "README.md"


# ------------------------------------------------------------------ restore_paths_from

def test_restore_paths_from(git_repo):
    commit_file(git_repo, "features.json", "[]\n")
    sh(git_repo, "branch", "-f", "ai-develop", "main")
    on_branch(git_repo, "feature/1-x", "ai-develop")
    commit_file(git_repo, "features.json", '[{"status": "passed"}]\n')
    commit_file(git_repo, "orchestrator-progress.txt", "agent wrote this\n")
    commit_file(git_repo, "node_modules/pkg/index.js", "x\n")
    commit_file(git_repo, "src/app.py", "real work\n")
    sha = git.restore_paths_from(git_repo, "ai-develop",
                                 ["features.json", "orchestrator-progress.txt", "node_modules",
                                  "not-there"], "orchestrator: drop protected files")
    assert sha == sh(git_repo, "rev-parse", "HEAD")
    assert sh(git_repo, "show", "HEAD:features.json") == "[]"
    tree = sh(git_repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    assert sorted(tree) == ["README.md", "features.json", "src/app.py"]
    assert git.restore_paths_from(git_repo, "ai-develop", ["features.json"], "again") is None


# ------------------------------------------------------------------ ensure_excluded

def test_ensure_excluded_is_idempotent(git_repo):
    exclude = git_repo / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("# user stuff\n*.log\n")
    assert git.ensure_excluded(git_repo, ["/.orchestrator", "/node_modules"]) == \
        ["/.orchestrator", "/node_modules"]
    assert git.ensure_excluded(git_repo, ["/node_modules", "/.env", "*.log"]) == ["/.env"]
    assert git.ensure_excluded(git_repo, ["/.env"]) == []
    lines = exclude.read_text().splitlines()
    assert lines == ["# user stuff", "*.log", git.EXCLUDE_BEGIN, "/.orchestrator",
                     "/node_modules", "/.env", git.EXCLUDE_END]
    (git_repo / ".env").write_text("SECRET=1\n")
    (git_repo / ".orchestrator").mkdir()
    (git_repo / ".orchestrator" / "db").write_text("x")
    assert git.dirty_paths(git_repo) == []


def test_ensure_excluded_creates_info_dir(git_repo):
    info = git_repo / ".git" / "info"
    if info.exists():
        for f in info.iterdir():
            f.unlink()
        info.rmdir()
    git.ensure_excluded(git_repo, ["/x"])
    assert "/x" in (info / "exclude").read_text().splitlines()
