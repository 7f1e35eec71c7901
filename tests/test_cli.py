"""The command line as a user meets it: help, version, and mistakes that end in exit 2 with a
message naming the problem and the fix — never a traceback."""
from __future__ import annotations

import json

import pytest

from agent_orchestrator import __version__
from projects import feature, make_project, run_cli


def test_help_and_version():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("init", "start", "run", "status"):
        assert command in result.stdout
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"agent-orchestrator {__version__}"
    for command in ("init", "start", "run", "status"):
        assert run_cli(command, "--help").returncode == 0


def test_unknown_option_is_usage_error():
    result = run_cli("run", "--bogus")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def _config(repo, data):
    (repo / "orchestrator.config.json").write_text(json.dumps(data))


MISTAKES = [
    # (what to write, file, words the message must contain)
    ("config", "{not json", ["orchestrator.config.json", "line 1"]),
    ("config", {"tracks": []}, ["tracks", "1"]),
    ("config", {"tracks": [{"name": "has space"}]}, ["tracks[0].name", "has space"]),
    ("config", {"tracks": [{"name": "a"}, {"name": "a"}]}, ["already used", "unique"]),
    ("config", {"tracks": [{"name": "a", "isDefault": True}, {"name": "b", "isDefault": True}]},
     ["isDefault"]),
    ("config", {"verification": {"maxAttempts": "three"}}, ["verification.maxAttempts", "three"]),
    ("config", {"criticalPatterns": [{"pattern": "(", "label": "x"}]}, ["criticalPatterns", "("]),
    ("config", {"agent": {"preferred": "gpt-cli"}}, ["agent.preferred", "gpt-cli"]),
    ("config", {"verification": {"commands": ["npm test"]}}, ["argv"]),
    ("config", {"baseBranch": "no such branch"}, ["baseBranch"]),
    ("config", {"baseBranch": "does-not-exist"}, ["does-not-exist", "git branch"]),
    ("features", "[{", ["features.json", "line"]),
    ("features", [feature(1), feature(1)], ["duplicate", "1"]),
    ("features", [{"id": 1, "category": "c", "status": "open"}], ["name", "1"]),
    ("features", [feature(1, status="done")], ["status", "done", "open"]),
    ("features", [feature(1, dependsOn=[9])], ["dependsOn", "9"]),
    ("features", [feature(1, dependsOn=[2]), feature(2, dependsOn=[1])], ["cycle"]),
    ("features", {"items": []}, ["features"]),
    ("features", None, ["features.json", "not found"]),
]


@pytest.mark.parametrize("kind,content,words", MISTAKES)
def test_mistakes_end_in_exit_2_with_a_clear_message(git_repo, kind, content, words):
    repo = make_project(git_repo, [feature(1)])
    path = repo / ("orchestrator.config.json" if kind == "config" else "features.json")
    if content is None:
        path.unlink()
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.lower()
    for word in words:
        assert word.lower() in message, f"{word!r} not in: {result.stderr}"
    assert "hint:" in message or "expected" in message or "must" in message


def test_not_a_git_repository(tmp_path):
    result = run_cli("run", "--project", str(tmp_path))
    assert result.returncode == 2 and "not a git repository" in result.stderr


def test_unknown_feature_and_track_filters(git_repo):
    repo = make_project(git_repo, [feature(1)])
    result = run_cli("run", "--project", str(repo), "--feature", "42")
    assert result.returncode == 2 and "42" in result.stderr
    result = run_cli("run", "--project", str(repo), "--track", "nope")
    assert result.returncode == 2 and "nope" in result.stderr


def test_project_root_env_and_status(git_repo):
    repo = make_project(git_repo, [feature(1), feature(2, status="passed")])
    result = run_cli("status", env={"PROJECT_ROOT": str(repo)})
    assert result.returncode == 0, result.stderr
    assert "1 open" in result.stdout and "1 passed" in result.stdout
    assert "daemon: not running" in result.stdout
    result = run_cli("status", "--json", "--project", str(repo))
    info = json.loads(result.stdout)
    assert info["counts"] == {"open": 1, "passed": 1}


def test_unknown_key_warns_with_suggestion(git_repo):
    repo = make_project(git_repo, [feature(1, status="passed")])
    data = json.loads((repo / "orchestrator.config.json").read_text())
    data["agent"]["maxTurnsImplementaton"] = 10
    _config(repo, data)
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 0, result.stderr
    assert "maxTurnsImplementaton" in result.stderr and "maxTurnsImplementation" in result.stderr
