"""`init`: scripted answers, --yes, stdin not a terminal, re-runs that keep settings; real tmp git repos."""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

from agent_orchestrator.config import load_config
from agent_orchestrator.errors import ConfigError, UsageError
from agent_orchestrator.init_wizard import (
    INIT_FLAGS, QUESTIONS, feature_categories, parse_tracks, propose_tracks, render_tracks,
    run_init, split_commands,
)

SAIL_COMPOSE = ("services:\n    laravel.test:\n        image: sail-8.3/app\n        volumes:\n"
                "            - '.:/var/www/html'\n    mysql:\n        image: mysql\n")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def no_input(prompt: str) -> str:
    raise AssertionError(f"must not prompt, but asked: {prompt}")


class Script:
    """input_fn that answers prompts in order and records them."""

    def __init__(self, *answers: str):
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.answers:
            raise AssertionError(f"unexpected prompt: {prompt}")
        return self.answers.pop(0)


def on_path(*names: str):
    return lambda name: f"/usr/bin/{name}" if name in names else None


def init(repo: Path, answers: dict | None = None, *, yes: bool = True, interactive: bool = False,
         input_fn=no_input, which=on_path("claude")) -> tuple[int, dict, list[str]]:
    out: list[str] = []
    code = run_init(repo, answers or {}, assume_yes=yes, interactive=interactive, input_fn=input_fn,
                    print_fn=lambda *a: out.append(" ".join(map(str, a))), which=which)
    return code, json.loads((repo / "orchestrator.config.json").read_text()), out


@pytest.fixture
def next_repo(git_repo) -> Path:
    (git_repo / "package.json").write_text(json.dumps({"dependencies": {"next": "14", "react": "18"},
                                                       "scripts": {"lint": "next lint"}}))
    (git_repo / ".env.local").write_text("NEXT_PUBLIC_APP_URL=http://localhost:3100\n")
    return git_repo


@pytest.fixture
def sail_repo(git_repo) -> Path:
    (git_repo / "composer.json").write_text(json.dumps({"require": {"laravel/framework": "^11"},
                                                        "require-dev": {"laravel/sail": "^1", "laravel/pint": "^1"}}))
    (git_repo / "artisan").write_text("#!/usr/bin/env php\n")
    (git_repo / "docker-compose.yml").write_text(SAIL_COMPOSE)
    (git_repo / ".env").write_text("APP_URL=http://localhost\n")
    return git_repo


def test_yes_writes_a_config_that_loads_and_everything_around_it(next_repo):
    code, data, out = init(next_repo, which=on_path("codex", "gemini"))
    assert code == 0
    config, warnings = load_config(next_repo)
    assert warnings == []
    assert config["projectName"] == "project" and config["baseBranch"] == "ai-develop"
    assert config["appUrl"] == "http://localhost:3100"
    assert config["agent.preferred"] == "codex" and config["agent.fallbackAgents"] == ["gemini"]
    assert config["worktree.symlinkDirs"] == ["node_modules"]
    assert config["worktree.copyFiles"] == [".env.local"]
    assert config["verification.commands"] == [["npm", "run", "lint"]]
    assert config["verification.disabled"] is False
    assert [t.name for t in config.tracks] == ["core"]
    assert (next_repo / "orchestrator.config.json").read_text().startswith('{\n  "projectName": "project",\n')
    assert "Next.js" in (next_repo / "ORCHESTRATOR.md").read_text()
    assert ".orchestrator/" in (next_repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert not (next_repo / ".gitignore").exists()
    assert git(next_repo, "status", "--porcelain", "--ignored=matching", "--", ".orchestrator") == ""
    assert any("Detected: Next.js" in line for line in out)
    assert any("agent-orchestrator start" in line for line in out)
    assert any("Create features.json" in line for line in out)


def test_missing_base_branch_is_created_from_the_current_branch_without_checkout(git_repo):
    git(git_repo, "checkout", "-q", "-b", "work")
    code, data, out = init(git_repo, {"base_branch": "ai-work"})
    assert data["baseBranch"] == "ai-work"
    assert git(git_repo, "rev-parse", "ai-work") == git(git_repo, "rev-parse", "work")
    assert git(git_repo, "branch", "--show-current") == "work"
    assert "created branch ai-work from work" in out


def test_declining_the_branch_keeps_the_repo_unchanged(git_repo):
    code, data, out = init(git_repo, {"base_branch": "later", "create_branch": False})
    assert code == 0 and data["baseBranch"] == "later"
    assert git(git_repo, "branch", "--list", "later") == ""
    assert any("does not exist" in line for line in out)


def test_scripted_answers_with_a_retry_after_a_bad_one(sail_repo):
    (sail_repo / "features.json").write_text(json.dumps({"features": [
        {"id": 1, "category": "backend", "name": "a"}, {"id": 2, "category": "ui", "name": "b"}]}))
    script = Script(
        "",                     # project name
        "bad branch name",      # base branch: rejected, asked again
        "ai-main",              # base branch
        "y",                    # create it from main
        "",                     # features file
        "docs/AGENTS-PROTOCOL.md",  # instructions file
        "",                     # app url
        "",                     # docker (default yes: Sail found)
        "",                     # service
        "",                     # work dir
        "vendor, node_modules, storage/app",  # symlink dirs
        "codex",                # preferred agent
        "claude",               # fallbacks
        "",                     # tracks: proposed from categories
        "",                     # verification yes
        "",                     # verify commands
        "n",                    # .gitignore
    )
    code, data, out = init(sail_repo, yes=False, interactive=True, input_fn=script,
                           which=on_path("claude", "codex"))
    assert code == 0 and script.answers == []
    assert any("not a valid git branch name" in line for line in out)
    assert "Create it from 'main'?" in script.prompts[3]
    assert script.prompts[7].startswith("Run commands in the Docker container 'laravel.test' (docker-compose.yml)?")
    assert script.prompts[13] == "Tracks ('name=category,...; name2=...') [backend=backend; ui=ui]: "
    assert git(sail_repo, "rev-parse", "ai-main") == git(sail_repo, "rev-parse", "main")
    assert data["baseBranch"] == "ai-main"
    assert data["instructionsFile"] == "docs/AGENTS-PROTOCOL.md"
    assert (sail_repo / "docs" / "AGENTS-PROTOCOL.md").read_text().startswith("# Session protocol")
    assert data["appUrl"] == "http://localhost"
    assert data["worktree"]["dockerService"] == "laravel.test"
    assert data["worktree"]["dockerWorkDir"] == "/var/www/html"
    assert data["worktree"]["symlinkDirs"] == ["vendor", "node_modules", "storage/app"]
    assert data["agent"] == {"preferred": "codex", "fallbackAgents": ["claude"]}
    assert [(t["name"], t["categories"], t["isDefault"]) for t in data["tracks"]] == [
        ("backend", ["backend"], True), ("ui", ["ui"], False)]
    assert data["verification"]["commands"] == [["./orchestrator-exec", "php", "artisan", "test"],
                                                ["./orchestrator-exec", "vendor/bin/pint", "--test"]]
    exclude = (sail_repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert ".orchestrator/" in exclude and "/orchestrator-exec" in exclude
    assert not (sail_repo / ".gitignore").exists()
    load_config(sail_repo)


def test_stdin_not_a_terminal_uses_defaults_without_prompting(next_repo):
    code, data, out = init(next_repo, {"agent": "gemini"}, yes=False, interactive=False, input_fn=no_input)
    assert code == 0 and data["agent"]["preferred"] == "gemini"
    assert any("stdin is not a terminal" in line for line in out)


def test_interactive_none_reads_isatty_of_stdin(next_repo, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    out: list[str] = []
    assert run_init(next_repo, {}, assume_yes=False, input_fn=no_input, print_fn=out.append,
                    which=on_path()) == 0
    assert any("stdin is not a terminal" in line for line in out)


def test_rerun_keeps_every_setting_and_shows_current_values_as_defaults(next_repo):
    init(next_repo, {"agent": "codex", "fallback_agents": "claude", "app_url": "http://app.test:81",
                     "symlink_dirs": "node_modules,.cache", "tracks": "api=backend; web*=frontend,ui",
                     "verification": False, "project_name": "Shop"})
    path = next_repo / "orchestrator.config.json"
    data = json.loads(path.read_text())
    data["custom"] = {"keep": True}
    data["agent"]["maxTurnsImplementation"] = 12
    data["tracks"][0]["color"] = "#123456"
    data["tracks"][0]["note"] = "mine"
    data["criticalPatterns"] = [{"pattern": "redis down", "label": "redis"}]
    path.write_text(json.dumps(data, indent=4))
    (next_repo / "ORCHESTRATOR.md").write_text("my own protocol\n")

    code, again, _ = init(next_repo, which=on_path("claude", "codex", "gemini"))
    assert again == data
    assert (next_repo / "ORCHESTRATOR.md").read_text() == "my own protocol\n"

    script = Script(*[""] * 20)
    init(next_repo, yes=False, interactive=True, input_fn=script)
    assert json.loads(path.read_text()) == data
    shown = "\n".join(script.prompts)
    for value in ("[Shop]", "[http://app.test:81]", "[node_modules, .cache]", "[codex]", "[claude]",
                  "[api=backend; web*=frontend,ui]", "Verify each feature after merging? [y/N]"):
        assert value in shown
    assert "Commands the daemon runs" not in shown


def test_rerun_keeps_hand_written_tracks_verbatim(git_repo):
    tracks = [{"name": "api", "categories": ["backend"]}, {"name": "web", "categories": [], "icon": "w"}]
    (git_repo / "orchestrator.config.json").write_text(json.dumps({"tracks": tracks, "agents": {
        "mine": {"kind": "command", "command": ["my-agent", "{prompt}"]}}}))
    _, data, _ = init(git_repo, {"agent": "mine"})
    assert data["tracks"] == tracks
    assert data["agent"]["preferred"] == "mine" and "mine" in data["agents"]


def test_rerun_changing_tracks_keeps_colors_of_tracks_that_stay(git_repo):
    init(git_repo, {"tracks": "a; b=x"})
    first = {t["name"]: t["color"] for t in json.loads((git_repo / "orchestrator.config.json").read_text())["tracks"]}
    _, data, _ = init(git_repo, {"tracks": "b=x,y; c"})
    tracks = {t["name"]: t for t in data["tracks"]}
    assert tracks["b"]["color"] == first["b"] and tracks["b"]["categories"] == ["x", "y"]
    assert tracks["b"]["isDefault"] is True and tracks["c"]["color"] not in first.values()


def test_gitignore_only_when_agreed_and_only_once(git_repo):
    (git_repo / ".gitignore").write_text("node_modules")
    init(git_repo)
    assert (git_repo / ".gitignore").read_text() == "node_modules"
    init(git_repo, {"gitignore": True})
    init(git_repo, {"gitignore": True})
    assert (git_repo / ".gitignore").read_text() == "node_modules\n.orchestrator/\n"


def test_not_a_git_repository_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a git repository") as info:
        run_init(tmp_path, {}, assume_yes=True, print_fn=lambda *a: None)
    assert info.value.exit_code == 2
    assert not (tmp_path / "orchestrator.config.json").exists()


def test_subdirectory_of_a_repository_is_refused(git_repo):
    (git_repo / "sub").mkdir()
    with pytest.raises(UsageError, match="not at its top"):
        run_init(git_repo / "sub", {}, assume_yes=True, print_fn=lambda *a: None)


@pytest.mark.parametrize("answers,flag", [
    ({"base_branch": "-x"}, "--base-branch"),
    ({"agent": "cursor"}, "--agent"),
    ({"app_url": "localhost"}, "--app-url"),
    ({"tracks": "bad name"}, "--tracks"),
    ({"features_file": "../outside.json"}, "--features-file"),
    ({"verify_commands": "npm 'test"}, "--verify-commands"),
])
def test_bad_flags_are_usage_errors_and_nothing_is_written(git_repo, answers, flag):
    with pytest.raises(UsageError, match=flag) as info:
        init(git_repo, answers)
    assert info.value.exit_code == 2
    assert not (git_repo / "orchestrator.config.json").exists()
    assert not (git_repo / "ORCHESTRATOR.md").exists()


def test_existing_invalid_json_is_not_overwritten(git_repo):
    path = git_repo / "orchestrator.config.json"
    path.write_text('{"baseBranch": "x",}')
    with pytest.raises(ConfigError, match="line 1"):
        init(git_repo)
    assert path.read_text() == '{"baseBranch": "x",}'


def test_existing_config_with_a_bad_value_is_reported_not_written(git_repo):
    path = git_repo / "orchestrator.config.json"
    path.write_text(json.dumps({"verification": {"maxAttempts": 0}}))
    with pytest.raises(ConfigError):
        init(git_repo)
    assert json.loads(path.read_text()) == {"verification": {"maxAttempts": 0}}


def test_end_of_input_cancels_without_writing(git_repo):
    def eof(prompt: str) -> str:
        raise EOFError

    with pytest.raises(UsageError, match="cancelled"):
        init(git_repo, yes=False, interactive=True, input_fn=eof)
    assert not (git_repo / "orchestrator.config.json").exists()


def test_docker_can_be_turned_off_by_flag(sail_repo):
    _, data, _ = init(sail_repo, {"docker": False})
    assert data["worktree"]["dockerService"] is None
    assert data["verification"]["commands"][0] == ["php", "artisan", "test"]
    assert "/orchestrator-exec" not in (sail_repo / ".git" / "info" / "exclude").read_text()


def test_repository_without_commits_gets_a_hint_instead_of_a_branch(tmp_path):
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    code, data, out = init(repo)
    assert code == 0 and data["baseBranch"] == "ai-develop"
    assert any("no commits yet" in line for line in out)


def test_cli_flags_cover_every_question_and_parse():
    dests = {dest for _, dest, _ in INIT_FLAGS}
    assert {q.key for q in QUESTIONS} == dests
    parser = argparse.ArgumentParser()
    for flag in INIT_FLAGS:
        flag.add_to(parser)
    ns = parser.parse_args(["--no-docker", "--agent", "codex", "--verification", "--tracks", "a; b=x"])
    assert (ns.docker, ns.agent, ns.verification, ns.tracks, ns.gitignore, ns.base_branch) == (
        False, "codex", True, "a; b=x", None, None)


def test_pure_helpers():
    assert split_commands("npm test; php artisan test --filter 'a;b'") == [
        ["npm", "test"], ["php", "artisan", "test", "--filter", "a;b"]]
    assert split_commands("none") == []
    assert parse_tracks("a; b*=x, y") == [("a", [], False), ("b", ["x", "y"], True)]
    assert render_tracks(parse_tracks("a; b*=x, y")) == "a; b*=x,y"
    with pytest.raises(ValueError):
        parse_tracks("a*; b*")
    assert feature_categories('[{"category": "ui"}, {"category": "api"}, {"category": "ui"}, 3]') == ["ui", "api"]
    assert feature_categories("not json") == []
    assert propose_tracks([]) == [("core", [], True)]
    assert propose_tracks(["User Auth", "api", "ui", "ops"]) == [
        ("User-Auth", ["User Auth"], True), ("api", ["api"], False), ("ui", ["ui"], False)]
