"""Claude Code (`claude -p`): argv, environment and the stream-json / json output parser."""
from __future__ import annotations

from typing import Mapping

from .base import (
    FULL_PERMISSION_PHASES, Adapter, AgentEvent, AgentRequest, OutputParser, RunOutcome, as_float, as_int, as_str,
    keep_reply_tail,
)

SYNTHETIC_MODEL = "<synthetic>"
DEFAULT_VERIFY_TOOLS = "Bash,Read,Write"
VERIFY_DISALLOWED_TOOLS = "Edit,MultiEdit,NotebookEdit"


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _block_text(content: object) -> str:
    """tool_result content is a string or a list of {type: text, text} blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(as_str(b.get("text")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


class ClaudeParser(OutputParser):
    """Parses `--output-format stream-json --verbose` lines and the single `--output-format json` result."""

    kind = "claude"

    def __init__(self) -> None:
        super().__init__()
        self.session_id: str | None = None
        self.model: str | None = None
        self.result: dict | None = None
        self.synthetic_text = ""
        self.synthetic_status: int | None = None
        self.error_kind: str | None = None
        self.resets_at: float | None = None
        self._reply_id: object = None
        self._reply: list[str] = []
        self._reply_size = 0

    def _parse_object(self, obj: dict) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "system":
            return self._system(obj)
        if kind == "assistant":
            return self._assistant(obj)
        if kind == "user":
            return self._user(obj)
        if kind == "rate_limit_event":
            return self._rate_limit(obj)
        if kind == "result":
            return self._result(obj)
        return []

    def _system(self, obj: dict) -> list[AgentEvent]:
        subtype = obj.get("subtype")
        if subtype == "init":
            self.session_id = as_str(obj.get("session_id")) or self.session_id
            self.model = as_str(obj.get("model")) or self.model
            return [AgentEvent("init", data={"session_id": self.session_id, "model": self.model,
                                             "cwd": obj.get("cwd"), "version": obj.get("claude_code_version")})]
        if subtype == "api_retry":
            data = {"attempt": obj.get("attempt"), "max_retries": obj.get("max_retries"),
                    "status": obj.get("error_status"), "delay_ms": obj.get("retry_delay_ms"),
                    "error": obj.get("error")}
            text = (f"API retry {obj.get('attempt')}/{obj.get('max_retries')} "
                    f"({obj.get('error_status')} {obj.get('error')})")
            return [AgentEvent("retry", text, data)]
        return []

    def _assistant(self, obj: dict) -> list[AgentEvent]:
        message = obj.get("message")
        if not isinstance(message, dict):
            return []
        blocks = [b for b in message.get("content") or [] if isinstance(b, dict)]
        if message.get("model") == SYNTHETIC_MODEL or obj.get("is_api_error_message"):
            text = "\n".join(as_str(b.get("text")) for b in blocks if b.get("type") == "text")
            self.synthetic_text = text
            self.synthetic_status = _int_or_none(obj.get("api_error_status")) or self.synthetic_status
            self.error_kind = as_str(obj.get("error")) or self.error_kind
            return [AgentEvent("error", text, {"fatal": True, "api_error_status": obj.get("api_error_status"),
                                               "error": obj.get("error")})]
        parent = obj.get("parent_tool_use_id")
        extra = {"parent_tool_use_id": parent} if parent else {}
        events: list[AgentEvent] = []
        for block in blocks:
            btype = block.get("type")
            if btype == "text":
                text = as_str(block.get("text"))
                if not parent:
                    if message.get("id") != self._reply_id:
                        self._reply_id = message.get("id")
                        self._reply = []
                        self._reply_size = 0
                    self._reply.append(text)
                    self._reply_size = keep_reply_tail(self._reply, self._reply_size + len(text))
                events.append(AgentEvent("text", text, dict(extra)))
            elif btype == "thinking":
                events.append(AgentEvent("thinking", as_str(block.get("thinking")), dict(extra)))
            elif btype == "tool_use":
                events.append(AgentEvent("tool_call", as_str(block.get("name")),
                                         {"id": block.get("id"), "name": block.get("name"),
                                          "input": block.get("input"), **extra}))
        return events

    def _user(self, obj: dict) -> list[AgentEvent]:
        message = obj.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            return []
        parent = obj.get("parent_tool_use_id")
        extra = {"parent_tool_use_id": parent} if parent else {}
        events = []
        for block in message["content"]:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                output = _block_text(block.get("content"))
                data = {"id": block.get("tool_use_id"), "is_error": bool(block.get("is_error")), "output": output}
                events.append(AgentEvent("tool_result", output, {**data, **extra}))
        return events

    def _rate_limit(self, obj: dict) -> list[AgentEvent]:
        info = obj.get("rate_limit_info")
        if not isinstance(info, dict):
            return []
        resets_at = as_float(info.get("resetsAt"))
        status = as_str(info.get("status"))
        if status == "rejected" and resets_at is not None:
            self.resets_at = resets_at
        return [AgentEvent("rate_limit", f"rate limit {status}", {
            "status": status, "resets_at": resets_at, "type": info.get("rateLimitType")})]

    def _result(self, obj: dict) -> list[AgentEvent]:
        self.result = obj
        self.session_id = as_str(obj.get("session_id")) or self.session_id
        if not self.model and isinstance(obj.get("modelUsage"), dict) and obj["modelUsage"]:
            self.model = next(iter(obj["modelUsage"]))
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        cost = as_float(obj.get("total_cost_usd"))
        is_error = bool(obj.get("is_error"))
        usage_data = {
            "input_tokens": as_int(usage.get("input_tokens")), "output_tokens": as_int(usage.get("output_tokens")),
            "cache_read_tokens": as_int(usage.get("cache_read_input_tokens")),
            "cache_creation_tokens": as_int(usage.get("cache_creation_input_tokens")), "cost_usd": cost}
        result_data = {
            "success": not is_error, "is_error": is_error, "session_id": self.session_id, "cost_usd": cost,
            "num_turns": _int_or_none(obj.get("num_turns")), "subtype": obj.get("subtype"),
            "api_error_status": obj.get("api_error_status"), "terminal_reason": obj.get("terminal_reason"),
            "errors": [e for e in obj.get("errors") or [] if isinstance(e, str)]}
        return [AgentEvent("usage", data=usage_data), AgentEvent("result", as_str(obj.get("result")), result_data)]

    def finish(self, exit_code: int | None) -> RunOutcome:
        res = self.result or {}
        saw_result = self.result is not None
        is_error = bool(res.get("is_error"))
        success = saw_result and not is_error and exit_code == 0
        usage = res.get("usage") if isinstance(res.get("usage"), dict) else {}
        result_text = as_str(res.get("result"))
        final_text = result_text if saw_result and not is_error and result_text else "\n".join(self._reply)
        return RunOutcome(
            success=success,
            final_text=final_text,
            error_text="" if success else self._error_text(res, is_error),
            session_id=self.session_id,
            model=self.model,
            cost_usd=as_float(res.get("total_cost_usd")),
            input_tokens=as_int(usage.get("input_tokens")),
            output_tokens=as_int(usage.get("output_tokens")),
            cache_read_tokens=as_int(usage.get("cache_read_input_tokens")),
            cache_creation_tokens=as_int(usage.get("cache_creation_input_tokens")),
            num_turns=_int_or_none(res.get("num_turns")),
            exit_code=exit_code,
            api_error_status=_int_or_none(res.get("api_error_status")) or self.synthetic_status,
            subtype=as_str(res.get("subtype")) or None,
            resets_at=self.resets_at,
            saw_result=saw_result,
            agent=self.kind,
            error_kind=self.error_kind or as_str(res.get("api_error")) or as_str(res.get("api_error_type")) or None,
        )

    def _error_text(self, res: dict, is_error: bool) -> str:
        parts = []
        if is_error and as_str(res.get("result")):
            parts.append(res["result"])
        parts += [e for e in res.get("errors") or [] if isinstance(e, str) and e not in parts]
        if not parts and self.synthetic_text:
            parts.append(self.synthetic_text)
        if not parts:
            parts.append(self.stderr_tail())
        return "\n".join(p for p in parts if p)


class ClaudeAdapter(Adapter):
    kind = "claude"
    default_binary = ("claude",)
    supports_resume = True
    own_env = (
        "ANTHROPIC_*", "CLAUDE_*", "DISABLE_AUTOUPDATER", "DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING",
        "DISABLE_NON_ESSENTIAL_MODEL_CALLS", "DISABLE_COST_WARNINGS", "MAX_THINKING_TOKENS", "API_TIMEOUT_MS",
        "BASH_DEFAULT_TIMEOUT_MS", "BASH_MAX_TIMEOUT_MS", "MCP_TIMEOUT", "MCP_TOOL_TIMEOUT",
    )

    def argv(self, req: AgentRequest) -> list[str]:
        argv = [*self.command, "-p", req.prompt, "--output-format", "stream-json", "--verbose"]
        if req.max_turns:
            argv += ["--max-turns", str(req.max_turns)]
        if req.phase in FULL_PERMISSION_PHASES:
            argv.append("--dangerously-skip-permissions")
        else:
            argv += ["--allowedTools", req.allowed_tools or DEFAULT_VERIFY_TOOLS,
                     "--disallowedTools", VERIFY_DISALLOWED_TOOLS]
        model = self.effective_model(req)
        if model:
            argv += ["--model", model]
        if req.resume_session_id:
            argv += ["--resume", req.resume_session_id]
        if req.max_budget_usd is not None:
            argv += ["--max-budget-usd", str(req.max_budget_usd)]
        return argv + list(self.args)

    def parser(self) -> ClaudeParser:
        return ClaudeParser()

    def conditional_env(self, base_env: Mapping[str, str]) -> tuple[str, ...]:
        names: tuple[str, ...] = ()
        if base_env.get("CLAUDE_CODE_USE_BEDROCK") or self.extra_env.get("CLAUDE_CODE_USE_BEDROCK"):
            names += ("AWS_*",)
        if base_env.get("CLAUDE_CODE_USE_VERTEX") or self.extra_env.get("CLAUDE_CODE_USE_VERTEX"):
            names += ("CLOUD_ML_REGION", "VERTEX_REGION_*", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")
        return names

    def default_env(self) -> dict[str, str]:
        return {"DISABLE_AUTOUPDATER": "1"}

    def phase_env(self, phase: str, euid: int) -> dict[str, str]:
        if phase in FULL_PERMISSION_PHASES and euid == 0:
            return {"IS_SANDBOX": "1"}
        return {}
