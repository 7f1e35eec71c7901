"""Untrusted names: feature names, categories, branch and track names from files can never become
command options, escape a directory or break a branch name."""
from __future__ import annotations

import json
import subprocess

import pytest

from agent_orchestrator import git as gitmod
from agent_orchestrator.worktrees import Worktrees
from projects import feature, git, load_features, make_project, run_cli

NASTY = [
    "--force", "-rf", "--upload-pack=touch /tmp/ao-pwned", "../../../etc/passwd", "a/b/c",
    "..", ".", "feature/..lock", "x.lock", "HEAD", "@{-1}", "~^:?*[\\", "$(touch ao-pwned)",
    "; rm -rf / #", "`id`", "ünïcødé 名前 🚀", "名前だけ", "   ", "\t\n", "line1\nline2",
    "x" * 500, "-" * 50, "ﬁle ＡＢＣ", "\u202eevil", "trailing.", "a//b", "/abs/path",
]


@pytest.mark.parametrize("name", NASTY)
def test_branch_name_is_always_valid_and_never_an_option(name, tmp_path):
    branch = gitmod.branch_name(7, name)
    assert branch.startswith("feature/7-")
    assert gitmod.valid_branch_name(branch)
    assert len(branch) <= len("feature/7-") + 40
    done = subprocess.run(["git", "check-ref-format", "--branch", branch], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == branch
    wt = Worktrees(tmp_path, tmp_path / ".orchestrator")
    path = wt.path_for(branch.replace("/", "-"))
    assert path.parent == tmp_path / ".orchestrator" / "worktrees"


@pytest.mark.parametrize("bad", ["--delete", "-x", "feature/../../x", "feature/a b",
                                 "feature/x.lock", "feature//x", "feature/x\n--force", "", "/x"])
def test_invalid_branch_names_are_refused(bad):
    assert not gitmod.valid_branch_name(bad)


@pytest.mark.parametrize("bad", ["../x", "a/b", "-rf", "", "x" * 101, "ä", "."])
def test_worktree_names_cannot_escape(bad, tmp_path):
    from agent_orchestrator.errors import OrchestratorError

    with pytest.raises(OrchestratorError):
        Worktrees(tmp_path, tmp_path / ".orchestrator").path_for(bad)


def test_a_run_over_hostile_names_stays_inside_the_project(git_repo, tmp_path):
    names = ["--force", "../../../outside", "$(touch ao-pwned)", "ünïcødé 名前 🚀", "x" * 500,
             "-rf", "a/b/c", "line1\nline2"]
    features = [feature(i + 1, category, name=name) for i, (name, category) in enumerate(
        zip(names, ["--all", "../../x", "a/b", "名前", "-", "core", "..", "x" * 300]))]
    # branches written into features.json by hand (or by an attacker): never used when invalid
    features[0]["branch"] = "--delete"
    features[1]["branch"] = "feature/../../../escape"
    features[2]["branch"] = "main"
    features[3]["branch"] = "feature/x y"
    repo = make_project(git_repo, features)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("run", "--project", str(repo), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    feats = load_features(repo)
    assert {f["status"] for f in feats.values()} == {"passed"}
    for fid, f in feats.items():
        assert f["branch"] == gitmod.branch_name(fid, f["name"])
        assert gitmod.valid_branch_name(f["branch"])
    branches = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").splitlines()
    assert sorted(b for b in branches if not b.startswith("feature/")) == ["ai-develop", "main"]
    assert not any(b.startswith("-") for b in branches)
    # nothing was created next to the project or above it, no command ran from a name
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list(repo.rglob("ao-pwned")) and not (tmp_path / "ao-pwned").exists()
    worktrees = repo / ".orchestrator" / "worktrees"
    assert not worktrees.exists() or all(p.parent == worktrees for p in worktrees.iterdir())
    progress = (repo / "orchestrator-progress.txt").read_text()
    assert "ünïcødé 名前 🚀" in progress
    merges = git(repo, "log", "--merges", "--format=%s", "ai-develop")
    assert "Merge feature #1: --force" in merges


def test_main_is_never_taken_over_through_the_branch_field(git_repo):
    repo = make_project(git_repo, [feature(1, branch="main")])
    main_before = git(repo, "rev-parse", "main")
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert git(repo, "rev-parse", "main") == main_before
    assert load_features(repo)[1]["branch"] == "feature/1-feature-1"


@pytest.mark.parametrize("branch", ["feature/ünïcødé", "feature/" + "x" * 150])
def test_valid_but_unusual_branch_field_still_works(git_repo, branch):
    """A branch name git accepts but that makes no valid worktree directory name."""
    repo = make_project(git_repo, [feature(1, branch=branch)])
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_features(repo)[1]["status"] == "passed"


@pytest.mark.parametrize("track", ["--all", "../x", "a/b", "", "x" * 41, "ünï"])
def test_hostile_track_names_are_refused_in_the_config(git_repo, track):
    repo = make_project(git_repo, [feature(1)],
                        tracks=[{"name": track, "categories": [], "isDefault": True}])
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 2
    assert "tracks" in result.stderr and "Traceback" not in result.stderr
    assert not (repo / ".orchestrator" / "worktrees").exists()


def test_unknown_track_in_a_feature_is_refused(git_repo):
    repo = make_project(git_repo, [feature(1, track="../../etc")])
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 2
    assert "../../etc" in result.stderr


def test_cli_track_and_feature_values_are_not_options(git_repo):
    repo = make_project(git_repo, [feature(1)])
    result = run_cli("run", "--project", str(repo), "--track=--all")
    assert result.returncode == 2 and "no such track" in result.stderr
    assert json.loads((repo / "features.json").read_text())["features"][0]["status"] == "open"
