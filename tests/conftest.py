"""Shared fixtures: every test gets a private HOME with a git identity, and real git repositories."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKES_DIR = REPO_ROOT / "tests" / "fakes"
TRANSCRIPTS_DIR = REPO_ROOT / "tests" / "transcripts"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """No test may read or write the real $HOME; git gets an identity and a default branch."""
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test User\n\temail = test@example.com\n"
        "[init]\n\tdefaultBranch = main\n"
        "[advice]\n\tdetachedHead = false\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TZ", "UTC")
    for name in list(os.environ):
        if name.startswith("GIT_") or name in ("PROJECT_ROOT", "PORT", "AO_DEBUG"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    return home


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture
def git_repo(tmp_path) -> Path:
    """A repository with one commit on `main` and a branch `ai-develop` at the same commit."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# demo project\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "initial commit")
    git(repo, "branch", "ai-develop")
    return repo


@pytest.fixture
def fakes_on_path(monkeypatch) -> Path:
    """Put the fake claude/codex/gemini first on PATH."""
    monkeypatch.setenv("PATH", f"{FAKES_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    return FAKES_DIR


@pytest.fixture
def python_exe() -> str:
    return sys.executable
