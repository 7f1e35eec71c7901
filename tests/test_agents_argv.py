"""Adapters: argv per phase, adapter lookup from config, and the scrubbed environment."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent_orchestrator.agents import (
    AgentRequest, ClaudeAdapter, CodexAdapter, CommandAdapter, GeminiAdapter, get_adapter,
)
from agent_orchestrator.errors import ConfigError

PROMPT = "# Implement feature #12: Login\nDo it."
CWD = Path("/work/tree")


@dataclass(frozen=True)
class AgentDef:
    name: str
    kind: str | None = None
    command: tuple[str, ...] | None = None
    env: dict = field(default_factory=dict)
    model: str | None = None
    args: tuple[str, ...] = ()


class StubConfig:
    """Just the two things get_adapter reads from the real Config."""

    def __init__(self, agents=(), passthrough=(), model=None):
        self.agents = {a.name: a for a in agents}
        self._settings = {"agent.envPassthrough": list(passthrough), "agent.model": model}

    def __getitem__(self, key):
        return self._settings[key]


def req(phase="implement", **kw):
    return AgentRequest(phase=phase, prompt=PROMPT, cwd=CWD, **kw)


def adapter(name, *defs, **kw):
    return get_adapter(name, StubConfig(defs, **kw))


# ---- claude -------------------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["implement", "fix", "conflict"])
def test_claude_full_permission_phases(phase):
    assert adapter("claude").argv(req(phase, max_turns=40)) == [
        "claude", "-p", PROMPT, "--output-format", "stream-json", "--verbose", "--max-turns", "40",
        "--dangerously-skip-permissions"]


def test_claude_verify_least_privilege():
    argv = adapter("claude").argv(req("verify", max_turns=20, allowed_tools="Bash,Read"))
    assert argv == ["claude", "-p", PROMPT, "--output-format", "stream-json", "--verbose", "--max-turns", "20",
                    "--allowedTools", "Bash,Read", "--disallowedTools", "Edit,MultiEdit,NotebookEdit"]
    assert "--dangerously-skip-permissions" not in argv
    default_tools = adapter("claude").argv(req("verify"))
    assert default_tools[default_tools.index("--allowedTools") + 1] == "Bash,Read,Write"


def test_claude_optional_flags():
    argv = adapter("claude").argv(req(model="opus", resume_session_id="sess-1", max_budget_usd=2.5))
    assert argv[-6:] == ["--model", "opus", "--resume", "sess-1", "--max-budget-usd", "2.5"]
    assert "--max-turns" not in argv


@pytest.mark.parametrize("phase", ["implement", "verify", "fix", "conflict"])
def test_claude_stream_json_always_with_verbose(phase):
    argv = adapter("claude").argv(req(phase))
    assert argv[argv.index("--output-format") + 1] == "stream-json" and "--verbose" in argv


def test_builtin_override_replaces_binary_and_appends_args():
    claude = adapter("claude", AgentDef("claude", "claude", ("python3", "/path/fake/claude"), model="sonnet",
                                        args=("--append-system-prompt", "be brief")))
    argv = claude.argv(req())
    assert argv[:4] == ["python3", "/path/fake/claude", "-p", PROMPT]
    assert argv[-4:] == ["--model", "sonnet", "--append-system-prompt", "be brief"]
    assert "opus" not in claude.argv(req(model="opus"))
    assert adapter("claude", AgentDef("claude", command=("/opt/bin/claude",))).argv(req())[0] == "/opt/bin/claude"


def test_model_precedence():
    assert adapter("gemini", model="gemini-x").argv(req())[-2:] == ["-m", "gemini-x"]
    assert adapter("gemini", model="gemini-x").argv(req(model="gemini-y"))[-2:] == ["-m", "gemini-y"]
    own = adapter("codex", AgentDef("codex", model="gpt-mini"), model="gemini-x")
    assert own.argv(req(model="gemini-x"))[-3:-1] == ["-m", "gpt-mini"]
    assert own.parser().model == "gpt-mini"


def test_named_builtin_kind():
    opus = adapter("claude-opus", AgentDef("claude-opus", "claude", model="opus"))
    assert isinstance(opus, ClaudeAdapter) and opus.name == "claude-opus" and opus.supports_resume
    assert opus.argv(req())[-2:] == ["--model", "opus"]


# ---- codex --------------------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["implement", "fix", "conflict"])
def test_codex_full_permission_phases(phase):
    assert adapter("codex").argv(req(phase, max_turns=40)) == [
        "codex", "exec", "--json", "--skip-git-repo-check", "-C", "/work/tree",
        "--dangerously-bypass-approvals-and-sandbox", PROMPT]


def test_codex_verify_read_only_and_model():
    assert adapter("codex").argv(req("verify", model="gpt-5.5")) == [
        "codex", "exec", "--json", "--skip-git-repo-check", "-C", "/work/tree", "-s", "read-only",
        "-m", "gpt-5.5", PROMPT]


def test_codex_resume():
    argv = adapter("codex", AgentDef("codex", args=("-c", "model_provider=x"))).argv(req("fix", resume_session_id="t-1"))
    assert argv[-5:] == ["-c", "model_provider=x", "resume", "t-1", PROMPT]


@pytest.mark.parametrize("phase", ["implement", "verify", "fix", "conflict"])
def test_codex_never_full_auto(phase):
    assert "--full-auto" not in adapter("codex").argv(req(phase, resume_session_id="t"))


# ---- gemini -------------------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["implement", "verify", "fix", "conflict"])
def test_gemini_argv(phase):
    assert adapter("gemini").argv(req(phase, max_turns=40)) == [
        "gemini", "-p", PROMPT, "--output-format", "stream-json", "--approval-mode", "yolo", "--skip-trust"]


def test_gemini_model_and_resume():
    assert adapter("gemini").argv(req(model="gemini-3.8-flash", resume_session_id="g-1"))[-4:] == [
        "-m", "gemini-3.8-flash", "--resume", "g-1"]


# ---- command agents and lookup ------------------------------------------------------------

def test_command_template_substitutes_inside_elements(tmp_path):
    prompt_file = tmp_path / "prompt.md"
    agent = adapter("aider", AgentDef("aider", "command", ("aider", "--message={prompt}", "--read", "{prompt_file}"),
                                      args=("--yes-always",)))
    assert isinstance(agent, CommandAdapter) and agent.uses_prompt_file and not agent.supports_resume
    assert agent.argv(req(prompt_file=prompt_file)) == [
        "aider", f"--message={PROMPT}", "--read", str(prompt_file), "--yes-always"]


def test_command_prompt_with_braces_is_not_resubstituted():
    agent = adapter("x", AgentDef("x", "command", ("run", "{prompt}")))
    assert agent.argv(AgentRequest("implement", "use {prompt_file} literally", CWD)) == [
        "run", "use {prompt_file} literally"]


def test_command_without_placeholder_appends_prompt():
    assert adapter("x", AgentDef("x", None, ("my-agent", "--go"))).argv(req()) == ["my-agent", "--go", PROMPT]


def test_command_errors():
    with pytest.raises(ValueError, match="prompt_file"):
        adapter("x", AgentDef("x", "command", ("a", "{prompt_file}"))).argv(req())
    with pytest.raises(ConfigError, match="has no command"):
        adapter("x", AgentDef("x", "command"))
    with pytest.raises(ConfigError, match="unknown agent 'nope'"):
        adapter("nope")
    with pytest.raises(ConfigError, match="unknown kind"):
        adapter("x", AgentDef("x", "cursor", ("c",)))
    with pytest.raises(ValueError, match="unknown agent phase"):
        req("deploy")


def test_builtin_lookup():
    assert isinstance(adapter("claude"), ClaudeAdapter)
    assert isinstance(adapter("codex"), CodexAdapter)
    assert isinstance(adapter("gemini"), GeminiAdapter)
    assert adapter("codex").parser().kind == "codex"


# ---- environment --------------------------------------------------------------------------

BASE_ENV = {
    "PATH": "/usr/bin", "HOME": "/home/u", "USER": "u", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "xterm",
    "TZ": "Europe/Paris", "GITHUB_TOKEN": "ghp_secret", "AWS_SECRET_ACCESS_KEY": "aws", "ANTHROPIC_API_KEY": "sk-ant",
    "CLAUDE_CONFIG_DIR": "/c", "OPENAI_API_KEY": "sk-oa", "CODEX_HOME": "/cx", "GEMINI_API_KEY": "gm",
    "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:1", "GIT_DIR": "/elsewhere/.git", "HTTPS_PROXY": "http://proxy:3128",
}


def test_env_scrubbed_by_default():
    env = adapter("claude").env(BASE_ENV, euid=1000)
    assert "GITHUB_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env and "OPENAI_API_KEY" not in env
    assert env["ANTHROPIC_API_KEY"] == "sk-ant" and env["CLAUDE_CONFIG_DIR"] == "/c"
    assert env["PATH"] == "/usr/bin" and env["LC_ALL"] == "C.UTF-8" and env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["TZ"] == "UTC" and "GIT_DIR" not in env and "IS_SANDBOX" not in env


def test_env_each_cli_gets_its_own_variables():
    codex = adapter("codex").env(BASE_ENV, euid=1000)
    assert codex["OPENAI_API_KEY"] == "sk-oa" and codex["CODEX_HOME"] == "/cx" and "ANTHROPIC_API_KEY" not in codex
    gemini = adapter("gemini").env(BASE_ENV, euid=1000)
    assert gemini["GEMINI_API_KEY"] == "gm" and gemini["GOOGLE_GEMINI_BASE_URL"].startswith("http")
    assert "OPENAI_API_KEY" not in gemini
    command = adapter("x", AgentDef("x", "command", ("a",))).env(BASE_ENV, euid=1000)
    assert "ANTHROPIC_API_KEY" not in command and "GEMINI_API_KEY" not in command and command["HOME"] == "/home/u"


def test_env_passthrough_patterns():
    kept = adapter("claude", passthrough=["GITHUB_*"]).env(BASE_ENV, euid=1000)
    assert kept["GITHUB_TOKEN"] == "ghp_secret" and "AWS_SECRET_ACCESS_KEY" not in kept
    per_call = adapter("codex").env(BASE_ENV, passthrough=["AWS_SECRET_ACCESS_KEY"], euid=1000)
    assert per_call["AWS_SECRET_ACCESS_KEY"] == "aws" and "GITHUB_TOKEN" not in per_call
    everything = adapter("codex", passthrough=["*"]).env(BASE_ENV, euid=1000)
    assert everything["GITHUB_TOKEN"] == "ghp_secret" and everything["ANTHROPIC_API_KEY"] == "sk-ant"
    assert everything["TZ"] == "UTC" and "GIT_DIR" not in everything


def test_env_agent_definition_wins():
    agent = adapter("claude", AgentDef("claude", env={"ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "TZ": "UTC",
                                                      "DISABLE_AUTOUPDATER": "0"}))
    env = agent.env(BASE_ENV, euid=1000)
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9" and env["DISABLE_AUTOUPDATER"] == "0"
    assert adapter("claude").env(BASE_ENV, euid=1000)["DISABLE_AUTOUPDATER"] == "1"


def test_env_bedrock_brings_aws_only_when_enabled():
    assert "AWS_SECRET_ACCESS_KEY" not in adapter("claude").env(BASE_ENV, euid=1000)
    env = adapter("claude").env({**BASE_ENV, "CLAUDE_CODE_USE_BEDROCK": "1"}, euid=1000)
    assert env["AWS_SECRET_ACCESS_KEY"] == "aws"


@pytest.mark.parametrize("phase,euid,expected", [
    ("implement", 0, "1"), ("fix", 0, "1"), ("conflict", 0, "1"), ("verify", 0, None), ("implement", 1000, None)])
def test_is_sandbox_for_root(phase, euid, expected):
    assert adapter("claude").env(BASE_ENV, phase=phase, euid=euid).get("IS_SANDBOX") == expected
    assert "IS_SANDBOX" not in adapter("codex").env(BASE_ENV, phase=phase, euid=euid)
