"""Gemini CLI (`gemini -p ... --output-format stream-json`): argv, environment and the output parser."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

from .. import git
from ..errors import GitError
from .base import (Adapter, AgentEvent, AgentRequest, OutputParser, RunOutcome, as_int, as_str,
                   keep_reply_tail)

# Exit codes of gemini in json/stream-json mode: API errors are the HTTP status mod 256.
GEMINI_EXIT_CODES = {
    173: "API error 429 (rate limit / quota)", 144: "API error 400 (bad request)",
    244: "API error 500 (server error)", 247: "API error 503 (model overloaded)",
    41: "authentication failed", 42: "invalid input", 44: "sandbox error", 52: "configuration error",
    53: "turn limit reached", 54: "tool error", 55: "folder is not trusted", 130: "interrupted (SIGINT)",
}
EXIT_CODE_HTTP_STATUS = {173: 429, 144: 400, 244: 500, 247: 503}

# Gemini CLI runs every shell command with GIT_CONFIG_GLOBAL=/dev/null and GIT_CONFIG_SYSTEM=/dev/null
# but keeps GIT_CONFIG_COUNT/KEY_n/VALUE_n from its own environment: the identity git would use
# in the project has to reach its shell that way, or the agent's `git commit` fails.
IDENTITY_KEYS = ("user.name", "user.email")


def git_config_env(settings: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """GIT_CONFIG_COUNT / GIT_CONFIG_KEY_n / GIT_CONFIG_VALUE_n entries for `settings`, appended
    after the entries `env` already has."""
    if not settings:
        return {}
    try:
        start = max(0, int(env.get("GIT_CONFIG_COUNT", "0")))
    except ValueError:
        start = 0
    out = {}
    for offset, (key, value) in enumerate(settings.items()):
        out[f"GIT_CONFIG_KEY_{start + offset}"] = key
        out[f"GIT_CONFIG_VALUE_{start + offset}"] = value
    out["GIT_CONFIG_COUNT"] = str(start + len(settings))
    return out


def git_identity(repo: Path) -> dict[str, str]:
    """user.name / user.email as git resolves them in `repo` (its own, global and system config)."""
    identity = {}
    for key in IDENTITY_KEYS:
        try:
            value = git.git(repo, "config", "--get", key, check=False, timeout=10).stdout.strip()
        except GitError:
            return {}
        if value:
            identity[key] = value
    return identity


class GeminiParser(OutputParser):
    """The prompt echo (role user) is not output; assistant `delta` pieces are joined into one reply;
    the final text is the last reply (the text after the last tool call)."""

    kind = "gemini"
    noise_stderr = re.compile(r"Warning: 256-color support not detected|YOLO mode is enabled|"
                              r"Ripgrep is not available|\[STARTUP\] ")

    def __init__(self) -> None:
        super().__init__()
        self.session_id: str | None = None
        self.model: str | None = None
        self.result: dict | None = None
        self._reply: list[str] = []
        self._reply_size = 0
        self._reply_open = False

    def _parse_object(self, obj: dict) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "init":
            self.session_id = as_str(obj.get("session_id")) or self.session_id
            self.model = as_str(obj.get("model")) or self.model
            return [AgentEvent("init", data={"session_id": self.session_id, "model": self.model})]
        if kind == "message":
            return self._message(obj)
        if kind == "tool_use":
            self._reply_open = False
            name = as_str(obj.get("tool_name"))
            return [AgentEvent("tool_call", name, {"id": obj.get("tool_id"), "name": name,
                                                   "input": obj.get("parameters")})]
        if kind == "tool_result":
            self._reply_open = False
            error = obj.get("error")
            error_message = as_str(error.get("message")) if isinstance(error, dict) else as_str(error)
            output = as_str(obj.get("output")) or error_message
            return [AgentEvent("tool_result", output, {"id": obj.get("tool_id"), "output": output,
                                                       "is_error": obj.get("status") != "success"})]
        if kind == "error":
            return [AgentEvent("error", as_str(obj.get("message")), {"fatal": False, "severity": obj.get("severity")})]
        if kind == "result":
            return self._result(obj)
        return []

    def _message(self, obj: dict) -> list[AgentEvent]:
        if obj.get("role") != "assistant":
            return []
        text = as_str(obj.get("content"))
        if not (obj.get("delta") and self._reply_open):
            self._reply = []
            self._reply_size = 0
        self._reply.append(text)
        self._reply_size = keep_reply_tail(self._reply, self._reply_size + len(text))
        self._reply_open = bool(obj.get("delta"))
        return [AgentEvent("text", text, {"delta": bool(obj.get("delta"))})]

    def _result(self, obj: dict) -> list[AgentEvent]:
        self.result = obj
        stats = obj.get("stats") if isinstance(obj.get("stats"), dict) else {}
        error = obj.get("error") if isinstance(obj.get("error"), dict) else {}
        success = obj.get("status") == "success"
        usage = {"input_tokens": as_int(stats.get("input_tokens")), "output_tokens": as_int(stats.get("output_tokens")),
                 "cache_read_tokens": as_int(stats.get("cached")), "cost_usd": None}
        return [AgentEvent("usage", data=usage),
                AgentEvent("result", as_str(error.get("message")), {
                    "success": success, "session_id": self.session_id, "cost_usd": None,
                    "subtype": as_str(obj.get("status")) or None, "error_type": error.get("type"),
                    "tool_calls": stats.get("tool_calls")})]

    def finish(self, exit_code: int | None) -> RunOutcome:
        res = self.result or {}
        stats = res.get("stats") if isinstance(res.get("stats"), dict) else {}
        error = res.get("error") if isinstance(res.get("error"), dict) else {}
        success = self.result is not None and res.get("status") == "success" and exit_code == 0
        error_text = ""
        if not success:
            error_text = as_str(error.get("message")) or self.stderr_tail()
        return RunOutcome(
            success=success, final_text="".join(self._reply), error_text=error_text, session_id=self.session_id,
            model=self.model, cost_usd=None, input_tokens=as_int(stats.get("input_tokens")),
            output_tokens=as_int(stats.get("output_tokens")), cache_read_tokens=as_int(stats.get("cached")),
            num_turns=None, exit_code=exit_code,
            api_error_status=None if success else EXIT_CODE_HTTP_STATUS.get(exit_code),
            subtype=as_str(res.get("status")) or None, resets_at=None, saw_result=self.result is not None,
            agent=self.kind, error_kind=as_str(error.get("type")) or None,
        )


class GeminiAdapter(Adapter):
    """Gemini has no max-turns flag and no tool allow-list: every phase runs with `--approval-mode yolo`
    (the read-only modes give a headless run no shell, so a verifier could not run anything)."""

    kind = "gemini"
    default_binary = ("gemini",)
    supports_resume = True
    own_env = ("GEMINI_*", "GOOGLE_*")

    def argv(self, req: AgentRequest) -> list[str]:
        argv = [*self.command, "-p", req.prompt, "--output-format", "stream-json", "--approval-mode", "yolo",
                "--skip-trust"]
        model = self.effective_model(req)
        if model:
            argv += ["-m", model]
        if req.resume_session_id:
            argv += ["--resume", req.resume_session_id]
        return argv + list(self.args)

    def parser(self) -> GeminiParser:
        return GeminiParser()

    def env(self, base_env: Mapping[str, str], *, passthrough: Sequence[str] = (), phase: str = "implement",
            euid: int | None = None) -> dict[str, str]:
        env = super().env(base_env, passthrough=passthrough, phase=phase, euid=euid)
        if self.project_root is not None:
            env.update(git_config_env(git_identity(self.project_root), env))
        return env
