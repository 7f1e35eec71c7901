"""Running `agent-orchestrator run` with the genuine CLIs against the mock model server.

Each CLI is pointed at the server with ordinary user configuration only: the `agents.<name>`
entries of orchestrator.config.json (`command`, `env`, `model`, `args`) and the CLI's own settings
file in its isolated state directory — exactly what README "Custom endpoints" tells users to write.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .mock_server import ANTHROPIC, GEMINI, OPENAI, MockModelServer, Request

CONTRACT_DIR = Path(__file__).resolve().parent
REPO_ROOT = CONTRACT_DIR.parent.parent
BIN_DIR = CONTRACT_DIR / "node_modules" / ".bin"
PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "gemini": "@google/gemini-cli"}
API_OF = {"claude": ANTHROPIC, "codex": OPENAI, "gemini": GEMINI}
MODELS = {"claude": "claude-gateway-model", "codex": "gpt-5.5", "gemini": "gemini-2.5-flash"}
INSTALL_HINT = "run `npm ci --prefix tests/contract` (or set AO_SKIP_CONTRACT=1 to skip these tests)"
SKIP_VARIABLE = "AO_SKIP_CONTRACT"

# Variables of the developer's own setup that must not reach the CLIs under test.
FOREIGN_ENV = re.compile(r"^(ANTHROPIC_|CLAUDE_|OPENAI_|CODEX_|GEMINI_|GOOGLE_|IS_SANDBOX$|AO_|FAKE_)")
PROXY_NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy")
BASE = "ai-develop"

# API keys live in the environment the orchestrator runs in, not in its config file: Claude's and
# Gemini's variables reach their CLI by default, the Codex provider's key through agent.envPassthrough.
SECRETS = {"ANTHROPIC_API_KEY": "mock-anthropic-key", "GATEWAY_API_KEY": "mock-openai-key",
           "GEMINI_API_KEY": "mock-gemini-key"}
# How each CLI presents its key: (request header, expected value).
CREDENTIAL_HEADERS = {"claude": ("x-api-key", "mock-anthropic-key"),
                      "codex": ("authorization", "Bearer mock-openai-key"),
                      "gemini": ("x-goog-api-key", "mock-gemini-key")}


def pinned_versions() -> dict[str, str]:
    deps = json.loads((CONTRACT_DIR / "package.json").read_text())["dependencies"]
    return {cli: deps[package] for cli, package in PACKAGES.items()}


def installed_version(cli: str) -> str | None:
    manifest = CONTRACT_DIR / "node_modules" / PACKAGES[cli] / "package.json"
    try:
        return json.loads(manifest.read_text()).get("version")
    except (OSError, ValueError):
        return None


def install_problems() -> list[str]:
    """Why the genuine CLIs cannot be used as pinned, one line each (empty: all good)."""
    problems = []
    for cli, pinned in pinned_versions().items():
        binary = BIN_DIR / cli
        version = installed_version(cli)
        if not os.access(binary, os.X_OK):
            problems.append(f"{binary} is missing")
        elif version != pinned:
            problems.append(f"{PACKAGES[cli]} {version or '?'} is installed, package.json pins {pinned}")
    return problems


# ----------------------------------------------------------------------------- configuration

def agent_config(cli: str, server: MockModelServer, state: Path) -> dict:
    """The `agents.<cli>` entry a user writes to send that CLI to a gateway at server.url."""
    if cli == "claude":
        return {"command": [str(BIN_DIR / "claude")], "model": MODELS["claude"], "env": {
            "ANTHROPIC_BASE_URL": server.url,
            "CLAUDE_CONFIG_DIR": str(state / "claude"),
            "CLAUDE_CODE_MAX_RETRIES": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }}
    if cli == "codex":
        provider = "gateway"
        overrides = {
            "model_provider": f'"{provider}"',
            f"model_providers.{provider}.name": '"Gateway"',
            f"model_providers.{provider}.base_url": f'"{server.url}/v1"',
            f"model_providers.{provider}.env_key": '"GATEWAY_API_KEY"',
            f"model_providers.{provider}.wire_api": '"responses"',
            f"model_providers.{provider}.request_max_retries": "1",
            f"model_providers.{provider}.stream_max_retries": "1",
            "analytics.enabled": "false",
            "features.plugins": "false",
        }
        args = [a for key, value in overrides.items() for a in ("-c", f"{key}={value}")]
        return {"command": [str(BIN_DIR / "codex")], "model": MODELS["codex"], "args": args, "env": {
            "CODEX_HOME": str(state / "codex")}}
    if cli == "gemini":
        return {"command": [str(BIN_DIR / "gemini")], "model": MODELS["gemini"], "env": {
            "GOOGLE_GEMINI_BASE_URL": server.url,
            "GEMINI_CLI_HOME": str(state / "gemini"),
        }}
    raise ValueError(cli)


GEMINI_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "general": {"maxAttempts": 1, "enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "privacy": {"usageStatisticsEnabled": False},
}


def prepare_state(state: Path) -> None:
    """Each CLI's own state directory; Gemini's holds its settings file."""
    for name in ("claude", "codex", "tmp"):
        (state / name).mkdir(parents=True, exist_ok=True)
    settings = state / "gemini" / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(GEMINI_SETTINGS, indent=2) + "\n")


# ----------------------------------------------------------------------------- projects and runs

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


HELLO = {"id": 1, "category": "core", "name": "Hello file",
         "description": "Add hello.txt containing the line 'hi'.",
         "steps": ["hello.txt exists", "hello.txt contains hi"], "status": "open"}

IMPLEMENT = "printf 'hi\\n' > hello.txt && git add hello.txt && git commit -q -m 'feat: hello file'"
VERIFY = "cat hello.txt"
VERDICT = "I read hello.txt.\nSTEP 1: PASS\nSTEP 2: PASS\nVERDICT: PASS"


def make_project(repo: Path, server: MockModelServer, state: Path, *, preferred: str,
                 fallback: list[str] = (), agent: dict | None = None) -> Path:
    prepare_state(state)
    config = {
        "projectName": "contract", "baseBranch": BASE,
        "verification": {"disabled": False, "delayMs": 0, "maxAttempts": 1},
        "agent": {"preferred": preferred, "fallbackAgents": list(fallback), "killGraceSeconds": 1,
                  "timeoutMinutes": 4, "stallMinutes": 2, "envPassthrough": ["GATEWAY_API_KEY"],
                  **(agent or {})},
        "agents": {cli: agent_config(cli, server, state) for cli in PACKAGES},
    }
    (repo / "orchestrator.config.json").write_text(json.dumps(config, indent=2) + "\n")
    (repo / "features.json").write_text(json.dumps({"features": [HELLO]}, indent=2) + "\n")
    git(repo, "add", "orchestrator.config.json", "features.json")
    git(repo, "commit", "-q", "-m", "add orchestrator files")
    git(repo, "branch", "-f", BASE, "HEAD")
    return repo


def run_orchestrator(repo: Path, server: MockModelServer, state: Path, *,
                     timeout: float = 300) -> subprocess.CompletedProcess:
    """`agent-orchestrator run` in a clean environment: no model credentials or CLI settings of
    the machine, TMPDIR in the test's state, and every proxy variable pointing at the mock server
    so any attempt of a CLI to reach the internet is recorded (as a CONNECT) instead of made."""
    env = {k: v for k, v in os.environ.items() if not FOREIGN_ENV.match(k)}
    env.update(SECRETS)
    env.update({name: server.url for name in PROXY_NAMES})
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                "TMPDIR": str(state / "tmp"), "PYTHONPATH": str(REPO_ROOT), "TZ": "UTC"})
    return subprocess.run([sys.executable, "-m", "agent_orchestrator", "run", "--project", str(repo)],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def run_and_explain(repo: Path, server: MockModelServer, state: Path) -> tuple[subprocess.CompletedProcess, str]:
    """The run, and what to show when an assertion about it fails."""
    result = run_orchestrator(repo, server, state)
    return result, explain(result, server)


def explain(result: subprocess.CompletedProcess, server: MockModelServer) -> str:
    lines = [f"exit {result.returncode}", "--- stdout", result.stdout[-6000:], "--- stderr", result.stderr[-4000:],
             "--- requests"]
    lines += [f"{r.seq} {r.method} {r.path} {r.action} {r.status} script={r.script} turn={r.turn_index}"
              for r in server.requests]
    return "\n".join(lines)


def features(repo: Path) -> dict[int, dict]:
    return {f["id"]: f for f in json.loads((repo / "features.json").read_text())["features"]}


def _db(repo: Path) -> sqlite3.Connection:
    con = sqlite3.connect(repo / ".orchestrator" / "orchestrator.db")
    con.row_factory = sqlite3.Row
    return con


def sessions(repo: Path) -> list[dict]:
    con = _db(repo)
    try:
        return [dict(r) for r in con.execute("SELECT * FROM sessions ORDER BY id")]
    finally:
        con.close()


def output_events(repo: Path, session_id: int) -> list[dict]:
    """The normalised agent events the orchestrator recorded for one session."""
    con = _db(repo)
    try:
        rows = con.execute("SELECT data FROM events WHERE type = 'output' AND session_id = ? ORDER BY id",
                           (session_id,)).fetchall()
    finally:
        con.close()
    return [json.loads(r["data"])["event"] for r in rows]


def kinds_of(repo: Path, session_id: int) -> list[str]:
    return [e["kind"] for e in output_events(repo, session_id)]


@dataclass
class Totals:
    input_tokens: int
    output_tokens: int


def served_usage(requests: list[Request]) -> Totals:
    """What the server told the CLI it used, summed over the requests it answered."""
    answered = [r for r in requests if r.usage is not None]
    return Totals(sum(r.usage.input_tokens for r in answered), sum(r.usage.output_tokens for r in answered))


def session_files(state: Path, session_id: str) -> list[Path]:
    """Files in a CLI's state directory that are named after and hold the session id."""
    return [p for p in state.rglob("*") if p.is_file() and session_id[:8] in p.name
            and session_id in p.read_text(errors="replace")]


def assert_isolated(home: Path) -> None:
    """The CLIs wrote nothing to HOME: their state went to the directories the config names."""
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.name != ".gitconfig")
    assert not written, f"a CLI wrote to HOME instead of its state directory: {written}"


def assert_contained(server: MockModelServer) -> None:
    """Nothing left the sandbox of the test: no request to the internet, none the test did not
    script, nothing written to HOME."""
    assert_isolated(Path(os.environ["HOME"]))
    escaped = [f"{r.method} {r.path}" for r in server.requests if r.method == "CONNECT"]
    assert not escaped, f"a CLI tried to reach the internet (through the proxy variables): {escaped}"
    unscripted = [f"{r.seq} {r.method} {r.path} ({r.action})" for r in server.unscripted() if r.method != "CONNECT"]
    assert not unscripted, f"requests no script answered: {unscripted}"


# ----------------------------------------------------------------------------- the common scenario

@dataclass
class Outcome:
    result: subprocess.CompletedProcess
    sessions: list[dict]
    implement: list[Request]
    verify: list[Request]


def script_hello(server: MockModelServer, cli: str) -> tuple[str, str]:
    """Script an implementer that writes and commits hello.txt, and a verifier that reads it and
    passes. Returns the two scripts' names."""
    api = API_OF[cli]
    implement = server.script(api, r"^# Implement feature #1\b", [
        {"type": "bash", "command": IMPLEMENT, "text": "I'll write hello.txt and commit it."},
        {"type": "text", "text": "Created hello.txt and committed it."}], name=f"{cli}-implement")
    verify = server.script(api, r"^# Verify feature #1\b", [
        {"type": "bash", "command": VERIFY, "text": "Checking the file."},
        {"type": "text", "text": VERDICT}], name=f"{cli}-verify")
    return implement.name, verify.name


def implement_merge_verify(cli: str, repo: Path, server: MockModelServer, state: Path) -> Outcome:
    """`run` with one CLI for everything, then what must hold whichever CLI it is."""
    implement_name, verify_name = script_hello(server, cli)
    make_project(repo, server, state, preferred=cli)
    result, why = run_and_explain(repo, server, state)
    assert result.returncode == 0, why
    assert_contained(server)
    assert features(repo)[1]["status"] == "passed", why

    # The CLI really ran the scripted command in the feature's worktree: the commit is the agent's,
    # and it was merged into the base branch.
    assert git(repo, "show", f"{BASE}:hello.txt") == "hi"
    assert "feat: hello file" in git(repo, "log", "--format=%s", BASE)
    assert "Merge feature #1: Hello file" in git(repo, "log", "--merges", "--format=%s", BASE)

    rows = sessions(repo)
    assert [(s["phase"], s["agent"], s["status"]) for s in rows] == [
        ("implement", cli, "succeeded"), ("verify", cli, "succeeded")], why
    implement, verify = server.of(implement_name, action="reply"), server.of(verify_name, action="reply")
    assert [r.turn_index for r in implement] == [0, 1] and [r.turn_index for r in verify] == [0, 1]
    # The verifier ran its command in the integration checkout, where the merged file is.
    assert "hi" in verify[1].tool_outputs[-1]
    assert "VERDICT: PASS" in rows[1]["final_text"]

    for row, requests in ((rows[0], implement), (rows[1], verify)):
        assert row["agent_session_id"], row
        assert row["model"] == MODELS[cli], row
        assert all(r.model == MODELS[cli] for r in requests)
        served = served_usage(requests)
        assert (row["input_tokens"], row["output_tokens"]) == (served.input_tokens, served.output_tokens), row
        assert row["exit_code"] == 0 and row["failure_category"] is None
        kinds = kinds_of(repo, row["id"])
        assert {"init", "text", "tool_call", "tool_result", "usage", "result"} <= set(kinds), kinds
    header, value = CREDENTIAL_HEADERS[cli]
    assert all(r.headers.get(header) == value for r in implement + verify), "the API key did not arrive"
    for row in rows:
        assert session_files(state / cli, row["agent_session_id"]), (
            f"{cli} kept no transcript of session {row['agent_session_id']} in its state directory")
    calls = [e for e in output_events(repo, rows[0]["id"]) if e["kind"] == "tool_call"]
    assert any("hello.txt" in json.dumps(e["data"].get("input")) for e in calls), calls
    return Outcome(result, rows, implement, verify)

