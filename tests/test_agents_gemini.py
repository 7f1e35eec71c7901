"""Gemini CLI runs its shell with GIT_CONFIG_GLOBAL=/dev/null and GIT_CONFIG_SYSTEM=/dev/null (found
by the contract tests with gemini-cli 0.61.0): the adapter hands the project's git identity to it
as GIT_CONFIG_KEY_n/VALUE_n entries, which the CLI keeps, so the agent's `git commit` works."""
from __future__ import annotations

import subprocess
from types import SimpleNamespace

from agent_orchestrator.agents import get_adapter
from agent_orchestrator.agents.gemini import GeminiAdapter, git_config_env, git_identity


class Config(SimpleNamespace):
    def __getitem__(self, key):
        return {"agent.envPassthrough": [], "agent.model": None}[key]


def set_config(repo, *args):
    subprocess.run(["git", "-C", str(repo), "config", *args], check=True)


def test_git_config_env_numbers_entries_after_existing_ones():
    identity = {"user.name": "Ann", "user.email": "ann@example.com"}
    assert git_config_env(identity, {}) == {
        "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "Ann",
        "GIT_CONFIG_KEY_1": "user.email", "GIT_CONFIG_VALUE_1": "ann@example.com", "GIT_CONFIG_COUNT": "2"}
    appended = git_config_env(identity, {"GIT_CONFIG_COUNT": "3"})
    assert appended["GIT_CONFIG_KEY_3"] == "user.name" and appended["GIT_CONFIG_COUNT"] == "5"
    assert git_config_env({}, {"GIT_CONFIG_COUNT": "1"}) == {}
    assert git_config_env(identity, {"GIT_CONFIG_COUNT": "x"})["GIT_CONFIG_COUNT"] == "2"


def test_identity_is_what_git_uses_in_the_project(git_repo):
    # tests/conftest.py gives HOME a .gitconfig with "Test User"; the repository's own config wins.
    assert git_identity(git_repo) == {"user.name": "Test User", "user.email": "test@example.com"}
    set_config(git_repo, "user.email", "local@example.com")
    assert git_identity(git_repo) == {"user.name": "Test User", "user.email": "local@example.com"}


def test_identity_missing_or_no_repository(tmp_path, isolated_home):
    (isolated_home / ".gitconfig").write_text("")
    assert git_identity(tmp_path) == {}
    assert git_identity(tmp_path / "does-not-exist") == {}


def test_gemini_env_carries_the_project_identity(git_repo):
    adapter = get_adapter("gemini", Config(agents={}, project_root=git_repo))
    env = adapter.env({"PATH": "/usr/bin", "HOME": "/home/x"}, phase="implement")
    assert env["GIT_CONFIG_COUNT"] == "2"
    assert (env["GIT_CONFIG_KEY_0"], env["GIT_CONFIG_VALUE_0"]) == ("user.name", "Test User")
    assert (env["GIT_CONFIG_KEY_1"], env["GIT_CONFIG_VALUE_1"]) == ("user.email", "test@example.com")


def test_gemini_env_appends_to_git_config_the_user_passes(git_repo):
    adapter = GeminiAdapter("gemini", project_root=git_repo, passthrough=("GIT_CONFIG_*",))
    env = adapter.env({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.autocrlf", "GIT_CONFIG_VALUE_0": "false"})
    assert env["GIT_CONFIG_KEY_0"] == "core.autocrlf" and env["GIT_CONFIG_KEY_1"] == "user.name"
    assert env["GIT_CONFIG_COUNT"] == "3"


def test_other_agents_and_unknown_project_get_no_git_config(git_repo):
    assert "GIT_CONFIG_COUNT" not in GeminiAdapter("gemini").env({"PATH": "/usr/bin"})
    claude = get_adapter("claude", Config(agents={}, project_root=git_repo))
    assert "GIT_CONFIG_COUNT" not in claude.env({"PATH": "/usr/bin"})
