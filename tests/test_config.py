from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent_orchestrator.config import (
    CONFIG_FILE, SETTINGS, AgentDef, Config, describe_settings, load_config, parse_config, settings_markdown,
)
from agent_orchestrator.values import (
    branch_name_problem, parse_argv, parse_argv_list, suggest, valid_branch_name,
)
from agent_orchestrator.errors import ConfigError

ROOT = Path("/tmp/my-app")


def parse(data: dict) -> tuple[Config, list[str]]:
    return parse_config(data, project_root=ROOT)


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(data)
    return exc.value.problems


# ---------------------------------------------------------------- defaults

def test_defaults_of_the_original_keys():
    cfg, warnings = parse({})
    assert warnings == []
    assert cfg["projectName"] == "my-app"
    assert cfg["baseBranch"] == "ai-develop"
    assert cfg["featuresFile"] == "features.json"
    assert cfg["progressFile"] == "orchestrator-progress.txt"
    assert cfg["instructionsFile"] == "ORCHESTRATOR.md"
    assert cfg["appUrl"] == "http://localhost:3000"
    assert cfg["tracks"] == [{"name": "core", "categories": [], "color": "#3b82f6", "isDefault": True}]
    assert cfg["worktree.symlinkDirs"] == [] and cfg["worktree.copyFiles"] == []
    assert cfg["worktree.dockerService"] is None and cfg["worktree.dockerWorkDir"] is None
    assert cfg["agent.preferred"] == "claude"
    assert cfg["agent.fallbackAgents"] == []
    assert cfg["agent.maxTurnsImplementation"] == 40
    assert cfg["agent.maxTurnsVerification"] == 20
    assert cfg["agent.allowedToolsVerification"] == "Bash,Read,Write"
    assert cfg["verification.maxAttempts"] == 3
    assert cfg["verification.delayMs"] == 5000
    assert cfg["verification.disabled"] is False
    assert cfg["criticalPatterns"] == [] and cfg.critical_patterns == []
    assert cfg.agents == {}


def test_defaults_of_the_additions():
    cfg, _ = parse({})
    expected = {
        "agent.maxRetries": 2, "agent.timeoutMinutes": 60, "agent.stallMinutes": 15, "agent.killGraceSeconds": 10,
        "agent.rateLimitWaitMs": 60000, "agent.rateLimitMaxWaitMs": 3600000, "agent.envPassthrough": [],
        "agent.sandbox": "none", "agent.network": True, "agent.model": None, "agent.maxOutputBytes": 52428800,
        "verification.commands": [], "verification.commandTimeoutSeconds": 600,
        "verification.revertOnFailure": True, "verification.serverCommand": None,
        "git.push": "auto", "git.remote": "origin", "git.deleteMergedBranches": False, "agents": {},
    }
    for key, value in expected.items():
        assert cfg[key] == value, key


def test_every_registry_key_has_a_value_and_help():
    cfg, _ = parse({})
    for s in SETTINGS:
        cfg[s.key]
        assert s.help.strip(), s.key
    with pytest.raises(KeyError):
        cfg["agent.nope"]


def test_values_given_override_defaults_and_sections_read_as_objects():
    cfg, _ = parse({"baseBranch": "develop", "agent": {"maxTurnsImplementation": 7, "timeoutMinutes": 0.5},
                    "verification": {"disabled": True}})
    assert cfg["baseBranch"] == "develop"
    assert cfg["agent.maxTurnsImplementation"] == 7
    assert cfg["agent.timeoutMinutes"] == 0.5
    assert cfg["agent"]["maxTurnsVerification"] == 20
    assert cfg["verification"]["disabled"] is True
    assert cfg.is_set("baseBranch") and not cfg.is_set("appUrl")


def test_path_is_relative_to_project_root():
    cfg, _ = parse({"featuresFile": "backlog/features.json"})
    assert cfg.path("featuresFile") == ROOT / "backlog" / "features.json"
    assert cfg.path("progressFile") == ROOT / "orchestrator-progress.txt"
    with pytest.raises(KeyError):
        cfg.path("baseBranch")


# ---------------------------------------------------------------- tracks

def test_tracks_first_becomes_default_and_colors_are_filled():
    cfg, _ = parse({"tracks": [{"name": "api", "categories": ["backend"]}, {"name": "ui", "categories": ["web"]}]})
    assert [t.name for t in cfg.tracks] == ["api", "ui"]
    assert cfg.tracks[0].is_default and not cfg.tracks[1].is_default
    assert cfg.default_track.name == "api"
    assert cfg.tracks[0].categories == ("backend",)
    assert all(re.match(r"#[0-9a-f]{6}", t.color) for t in cfg.tracks)


def test_marked_default_track_is_kept():
    cfg, _ = parse({"tracks": [{"name": "a"}, {"name": "b", "isDefault": True}]})
    assert cfg.default_track.name == "b"
    assert not cfg.tracks[0].is_default


def test_32_tracks_are_fine():
    cfg, _ = parse({"tracks": [{"name": f"t{i}"} for i in range(32)]})
    assert len(cfg.tracks) == 32


def test_category_in_two_tracks_warns():
    _, warnings = parse({"tracks": [{"name": "a", "categories": ["x"]}, {"name": "b", "categories": ["x"]}]})
    assert any("'a'" in w and "'b'" in w and '"x"' in w for w in warnings)


# ---------------------------------------------------------------- mistakes (each must end in exit 2)

MISTAKES = [
    ({"baseBranch": "ai..develop"}, "baseBranch", ["ai..develop", "not a valid git branch name", ".."]),
    ({"baseBranch": "-rf"}, "baseBranch", ["-rf", "'-'"]),
    ({"baseBranch": "my branch"}, "baseBranch", ["my branch", "space"]),
    ({"baseBranch": 12}, "baseBranch", ["expected a string", "12"]),
    ({"tracks": [{"name": "core"}, {"name": "my track"}]}, "tracks[1].name",
     ['"my track" is not allowed', "use letters, digits, '.', '_', '-' (max 40), starting with a letter or digit"]),
    ({"tracks": [{"name": "-x"}]}, "tracks[0].name", ['"-x" is not allowed']),
    ({"tracks": [{"name": "a" * 41}]}, "tracks[0].name", ["max 40"]),
    ({"tracks": [{"name": "core"}, {"name": "Core"}]}, "tracks[1].name", ['"Core"', "already used by tracks[0]", "unique"]),
    ({"tracks": []}, "tracks", ["0 tracks", "1 to 32"]),
    ({"tracks": [{"name": f"t{i}"} for i in range(33)]}, "tracks", ["33 tracks", "1 to 32"]),
    ({"tracks": [{"name": "a", "isDefault": True}, {"name": "b", "isDefault": True}]}, "tracks",
     ["2 tracks have isDefault true", "at most one"]),
    ({"tracks": [{"categories": []}]}, "tracks[0].name", ["missing"]),
    ({"tracks": [{"name": "a", "categories": "web"}]}, "tracks[0].categories", ["expected a list of strings", '"web"']),
    ({"tracks": [{"name": "a", "isDefault": "yes"}]}, "tracks[0].isDefault", ["true or false", '"yes"']),
    ({"tracks": {"name": "a"}}, "tracks", ["expected a list of tracks", "an object"]),
    ({"agent": {"maxTurnsImplementation": "40"}}, "agent.maxTurnsImplementation", ["expected an integer", '"40" (a string)']),
    ({"agent": {"maxTurnsVerification": 2.5}}, "agent.maxTurnsVerification", ["expected an integer", "2.5"]),
    ({"verification": {"maxAttempts": 0}}, "verification.maxAttempts", [">= 1", "0"]),
    ({"verification": {"delayMs": -5}}, "verification.delayMs", [">= 0", "-5"]),
    ({"verification": {"disabled": "false"}}, "verification.disabled", ["true or false", '"false"']),
    ({"agent": {"sandbox": "docker"}}, "agent.sandbox", ['"docker"', "none, bwrap"]),
    ({"git": {"push": "sometimes"}}, "git.push", ['"sometimes"', "auto, always, never"]),
    ({"git": {"remote": "--upload-pack=x"}}, "git.remote", ["git remote name"]),
    ({"criticalPatterns": [{"pattern": "(unclosed", "label": "x"}]}, "criticalPatterns[0].pattern",
     ['"(unclosed"', "not a valid regular expression", "missing )"]),
    ({"criticalPatterns": [{"label": "x"}]}, "criticalPatterns[0].pattern", ["missing"]),
    ({"criticalPatterns": "ECONNREFUSED"}, "criticalPatterns", ["expected a list"]),
    ({"verification": {"commands": "npm test"}}, "verification.commands",
     ['"npm test"', 'must be an argv list, e.g. ["npm", "test"] — shell strings are not run']),
    ({"verification": {"commands": [["npm", "test"], "npm run lint"]}}, "verification.commands[1]",
     ["must be an argv list"]),
    ({"verification": {"serverCommand": "npm run dev -- --port {port}"}}, "verification.serverCommand",
     ["must be an argv list"]),
    ({"agents": {"mine": {"command": "my-agent --prompt {prompt}"}}}, "agents.mine.command",
     ["must be an argv list", "shell strings are not run"]),
    ({"agents": {"mine": {"command": ["my-agent", "--yes"]}}}, "agents.mine.command", ["{prompt}", "{prompt_file}"]),
    ({"agents": {"mine": {"kind": "command"}}}, "agents.mine.command", ["missing", "argv template"]),
    ({"agents": {"mine": {"kind": "cursor", "command": ["x", "{prompt}"]}}}, "agents.mine.kind",
     ['"cursor"', "claude, codex, gemini, command"]),
    ({"agents": {"claude": {"env": {"ANTHROPIC_API_KEY": 5}}}}, "agents.claude.env", ["string values"]),
    ({"agents": {"bad name": {"command": ["x", "{prompt}"]}}}, "agents.bad name", ["not allowed"]),
    ({"agent": {"preferred": "copilot"}}, "agent.preferred", ['"copilot" is not an agent', "claude, codex, gemini"]),
    ({"agent": {"fallbackAgents": ["codex", "cursor"]}}, "agent.fallbackAgents[1]", ['"cursor" is not an agent']),
    ({"agent": {"fallbackAgents": "codex"}}, "agent.fallbackAgents", ["expected a list of strings"]),
    ({"agent": {"rateLimitWaitMs": 5000, "rateLimitMaxWaitMs": 1000}}, "agent.rateLimitMaxWaitMs",
     ["smaller than agent.rateLimitWaitMs"]),
    ({"agent": "claude"}, "agent", ["expected an object", '"claude"']),
    ({"worktree": {"symlinkDirs": "node_modules"}}, "worktree.symlinkDirs", ["expected a list of strings"]),
    ({"worktree": {"copyFiles": ["../secrets.env"]}}, "worktree.copyFiles", ["relative to the project root"]),
    ({"worktree": {"copyFiles": ["/etc/passwd"]}}, "worktree.copyFiles", ["relative to the project root"]),
    ({"featuresFile": ""}, "featuresFile", ["file path"]),
    ({"appUrl": "localhost:3000"}, "appUrl", ["http(s) URL"]),
    ({"projectName": ""}, "projectName", ["must not be empty"]),
]


@pytest.mark.parametrize("data,key,expects", MISTAKES, ids=[m[1] + "-" + str(i) for i, m in enumerate(MISTAKES)])
def test_config_mistake_names_key_value_and_expectation(data, key, expects):
    with pytest.raises(ConfigError) as exc:
        parse(data)
    err = exc.value
    assert err.exit_code == 2
    assert CONFIG_FILE in err.message
    assert err.hint and "README" in err.hint
    matching = [p for p in err.problems if p.startswith(key + ":")]
    assert matching, err.problems
    assert any(all(e in p for e in expects) for p in matching), matching


def test_all_problems_are_reported_at_once():
    data = {"baseBranch": "a b", "tracks": [{"name": "x y"}], "agent": {"maxTurnsImplementation": 0},
            "verification": {"commands": "make test"}, "criticalPatterns": [{"pattern": "["}]}
    with pytest.raises(ConfigError) as exc:
        parse_config(data, source="/p/orchestrator.config.json", project_root=ROOT)
    err = exc.value
    assert len(err.problems) == 5
    assert err.message.startswith("/p/orchestrator.config.json: 5 problems")
    keys = [p.split(":")[0] for p in err.problems]
    assert keys == ["baseBranch", "tracks[0].name", "agent.maxTurnsImplementation", "verification.commands",
                    "criticalPatterns[0].pattern"]
    rendered = err.render()
    assert "hint:" in rendered and "  - baseBranch" in rendered


def test_top_level_must_be_an_object():
    with pytest.raises(ConfigError) as exc:
        parse_config([1, 2], project_root=ROOT)
    assert "top level must be a JSON object" in exc.value.message


# ---------------------------------------------------------------- commands

@pytest.mark.parametrize("value,expected", [
    ("make", ["make"]), (["npm", "test"], ["npm", "test"]), (["a b.sh", "--x"], ["a b.sh", "--x"]),
])
def test_parse_argv_accepts(value, expected):
    assert parse_argv(value) == (expected, None)


@pytest.mark.parametrize("value", ["npm test", ["npm test"], [], "", ["npm", 3], ["npm", ""], {"cmd": "x"}])
def test_parse_argv_rejects(value):
    argv, problem = parse_argv(value)
    assert argv is None and problem


def test_verification_command_forms():
    cfg, _ = parse({"verification": {"commands": [["npm", "test"], ["npm", "run", "lint"]], "serverCommand": "serve"}})
    assert cfg["verification.commands"] == [["npm", "test"], ["npm", "run", "lint"]]
    assert cfg["verification.serverCommand"] == ["serve"]
    cfg, warnings = parse({"verification": {"commands": ["npm", "test"]}})
    assert cfg["verification.commands"] == [["npm", "test"]]
    assert any("ONE command" in w for w in warnings)
    cfg, _ = parse({"verification": {"commands": "make"}})
    assert cfg["verification.commands"] == [["make"]]
    assert parse_argv_list([]) == ([], [])


# ---------------------------------------------------------------- agents / patterns

def test_agents_override_builtin_and_define_command_agent():
    cfg, _ = parse({
        "agents": {
            "claude": {"command": "/opt/claude/bin/claude", "env": {"ANTHROPIC_API_KEY": "sk-1"}},
            "aider": {"command": ["aider", "--message", "{prompt}"], "model": "gpt-x", "args": ["--yes"]},
            "opus": {"kind": "claude", "model": "opus"},
        },
        "agent": {"preferred": "aider", "fallbackAgents": ["opus", "claude"]},
    })
    assert cfg.agents["claude"] == AgentDef("claude", "claude", ("/opt/claude/bin/claude",), {"ANTHROPIC_API_KEY": "sk-1"}, None, ())
    assert cfg.agents["aider"].kind == "command"
    assert cfg.agents["aider"].command == ("aider", "--message", "{prompt}")
    assert cfg.agents["aider"].args == ("--yes",)
    assert cfg.agents["opus"].kind == "claude" and cfg.agents["opus"].model == "opus"
    assert cfg.agent_names() == ["claude", "codex", "gemini", "aider", "opus"]


def test_critical_patterns_are_compiled_case_insensitive():
    cfg, _ = parse({"criticalPatterns": [{"pattern": r"SQLSTATE\[HY000\]", "label": "database down"}, "redis.*refused"]})
    p0, p1 = cfg.critical_patterns
    assert p0.label == "database down" and p0.regex.search("error: sqlstate[hy000] gone")
    assert p1.label == "redis.*refused" and p1.regex.search("Redis connection refused")


# ---------------------------------------------------------------- unknown keys

@pytest.mark.parametrize("data,expected", [
    ({"agent": {"maxTurn": 3}}, "unknown key 'agent.maxTurn' — did you mean 'agent.maxTurnsImplementation'?"),
    ({"basebranch": "x"}, "unknown key 'basebranch' — did you mean 'baseBranch'?"),
    ({"maxAttempts": 2}, "unknown key 'maxAttempts' — did you mean 'verification.maxAttempts'?"),
    ({"verification": {"disable": True}}, "did you mean 'verification.disabled'?"),
    ({"agnet": {}}, "unknown key 'agnet' — did you mean 'agent'?"),
    ({"tracks": [{"name": "a", "colour": "red"}]}, "unknown key 'tracks[0].colour' — did you mean 'tracks[0].color'?"),
    ({"criticalPatterns": [{"pattern": "x", "lable": "y"}]}, "did you mean 'criticalPatterns[0].label'?"),
    ({"agents": {"claude": {"comand": "claude"}}}, "unknown key 'agents.claude.comand' — did you mean 'agents.claude.command'?"),
    ({"zzzqqq": 1}, "unknown key 'zzzqqq' — it is ignored"),
])
def test_unknown_key_warns_with_closest_known_key(data, expected):
    _, warnings = parse(data)
    assert any(expected in w for w in warnings), warnings


def test_comment_keys_are_ignored_silently():
    _, warnings = parse({"$schema": "x", "_comment": "hello", "agent": {"_note": "y"}})
    assert warnings == []


def test_suggest_returns_none_for_nothing_close():
    assert suggest("completely-different", ["baseBranch", "tracks"]) is None


# ---------------------------------------------------------------- masking

def test_public_dict_masks_secrets():
    cfg, _ = parse({"agents": {
        "claude": {"env": {"ANTHROPIC_API_KEY": "sk-ant-secret", "CLAUDE_CONFIG_DIR": "/x"}},
        "mine": {"command": ["mine", "--api-key", "abc123", "--token=tok456", "{prompt}"]},
    }})
    public = cfg.to_public_dict()
    text = json.dumps(public)
    for secret in ("sk-ant-secret", "/x", "abc123", "tok456"):
        assert secret not in text
    assert public["agents"]["claude"]["env"] == {"ANTHROPIC_API_KEY": "***", "CLAUDE_CONFIG_DIR": "***"}
    assert public["agents"]["mine"]["command"] == ["mine", "--api-key", "***", "--token=***", "{prompt}"]
    assert public["baseBranch"] == "ai-develop"
    assert public["agent"]["maxTurnsImplementation"] == 40
    assert public["tracks"][0]["name"] == "core"
    json.dumps(public)


def test_mask_secret_looking_keys_and_headers():
    from agent_orchestrator.values import mask_secrets
    data = {"apiToken": "t", "password": "p", "githubKey": "k", "headers": {"X-A": "h"}, "name": "visible",
            "nested": {"client_secret": "s", "keep": 1}}
    masked = mask_secrets(data)
    assert masked == {"apiToken": "***", "password": "***", "githubKey": "***", "headers": {"X-A": "***"},
                      "name": "visible", "nested": {"client_secret": "***", "keep": 1}}


# ---------------------------------------------------------------- load_config

def test_missing_file_gives_defaults_and_a_warning(tmp_path):
    cfg, warnings = load_config(tmp_path)
    assert cfg["baseBranch"] == "ai-develop"
    assert cfg.source is None
    assert len(warnings) == 1 and "not found" in warnings[0] and "init" in warnings[0]


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, path=tmp_path / "other.json")
    assert "other.json" in exc.value.message


def test_load_reads_the_file(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"baseBranch": "develop", "agent": {"maxTurn": 1}}))
    cfg, warnings = load_config(tmp_path)
    assert cfg["baseBranch"] == "develop"
    assert cfg.source == tmp_path / CONFIG_FILE
    assert cfg.project_root == tmp_path
    assert any("agent.maxTurn" in w for w in warnings)


def test_invalid_json_names_line_and_column(tmp_path):
    (tmp_path / CONFIG_FILE).write_text('{\n  "baseBranch": "x",\n  "tracks": [,]\n}\n')
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)
    err = exc.value
    assert str(tmp_path / CONFIG_FILE) in err.message
    assert "line 3, column 14" in err.message
    assert err.problems == ['line 3: "tracks": [,]']
    assert err.exit_code == 2


def test_problems_from_file_name_the_file(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"tracks": [{"name": "a/b"}]}))
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)
    assert exc.value.message.startswith(str(tmp_path / CONFIG_FILE))
    assert exc.value.problems[0].startswith('tracks[0].name: "a/b" is not allowed')


def test_duplicate_keys_warn(tmp_path):
    (tmp_path / CONFIG_FILE).write_text('{"baseBranch": "a", "baseBranch": "b"}')
    cfg, warnings = load_config(tmp_path)
    assert cfg["baseBranch"] == "b"
    assert any("'baseBranch' appears twice" in w for w in warnings)


# ---------------------------------------------------------------- branch names

@pytest.mark.parametrize("name", ["ai-develop", "feature/12-login", "release/v1.2", "a", "x_y", "ünïcode"])
def test_valid_branch_names(name):
    assert branch_name_problem(name) is None and valid_branch_name(name)


@pytest.mark.parametrize("name", ["", "@", "HEAD", "-b", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b",
                                  "a.lock", "a/", "/a", "a//b", "a.", ".a", "x/.y", "a@{1}", "x/y.lock/z", "a\tb"])
def test_invalid_branch_names(name):
    assert branch_name_problem(name) is not None and not valid_branch_name(name)


# ---------------------------------------------------------------- docs

def test_settings_markdown_lists_every_key():
    md = settings_markdown()
    lines = md.strip().splitlines()
    assert lines[0] == "| Key | Type | Default | Description |"
    assert len(lines) == len(SETTINGS) + 2
    for s in SETTINGS:
        assert f"| `{s.key}` |" in md
    assert "| `agent.maxTurnsImplementation` | integer | `40` |" in md
    assert "`none`, `bwrap`" in md


def test_describe_settings_is_json():
    rows = describe_settings()
    assert [r["key"] for r in rows] == [s.key for s in SETTINGS]
    json.dumps(rows)
