"""Codex (`codex exec --json`): argv, environment and the JSONL output parser."""
from __future__ import annotations

import re

from .base import FULL_PERMISSION_PHASES, Adapter, AgentEvent, AgentRequest, OutputParser, RunOutcome, as_int, as_str

RECONNECT_RE = re.compile(r"^Reconnecting\.\.\.\s*(\d+)/(\d+)")
LAST_STATUS_RE = re.compile(r"last status:\s*(\d{3})")
TOOL_ITEMS = frozenset({"command_execution", "file_change", "mcp_tool_call", "web_search"})


def _status_of(message: str) -> int | None:
    match = LAST_STATUS_RE.search(message)
    return int(match.group(1)) if match else None


def _tool_call(item: dict) -> AgentEvent:
    itype = item.get("type")
    if itype == "command_execution":
        name, tool_input = "shell", {"command": item.get("command")}
    elif itype == "mcp_tool_call":
        name = "/".join(as_str(item.get(k)) for k in ("server", "tool") if item.get(k)) or "mcp_tool_call"
        tool_input = item.get("arguments")
    elif itype == "web_search":
        name, tool_input = "web_search", {"query": item.get("query")}
    else:
        name, tool_input = "file_change", {"changes": item.get("changes")}
    return AgentEvent("tool_call", name, {"id": item.get("id"), "name": name, "input": tool_input})


def _tool_result(item: dict) -> AgentEvent:
    itype = item.get("type")
    status = as_str(item.get("status"))
    exit_code = item.get("exit_code")
    if itype == "command_execution":
        output = as_str(item.get("aggregated_output"))
    elif itype == "file_change":
        output = "\n".join(f"{c.get('kind', '?')} {c.get('path', '')}" for c in item.get("changes") or []
                           if isinstance(c, dict))
    elif itype == "mcp_tool_call":
        error = item.get("error")
        output = as_str(error.get("message")) if isinstance(error, dict) else str(item.get("result") or "")
    else:
        output = as_str(item.get("query"))
    failed = status in ("failed", "declined") or (isinstance(exit_code, int) and exit_code != 0)
    data = {"id": item.get("id"), "is_error": failed, "output": output, "status": status or None}
    if itype == "command_execution":
        data["exit_code"] = exit_code
    return AgentEvent("tool_result", output, data)


def _todo_text(item: dict) -> str:
    lines = []
    for entry in item.get("items") or []:
        if isinstance(entry, dict):
            mark = "x" if entry.get("completed") else " "
            lines.append(f"[{mark}] {as_str(entry.get('text'))}")
    return "\n".join(lines)


class CodexParser(OutputParser):
    """Parses `codex exec --json` lines; the thread id is the session id; no cost is reported."""

    kind = "codex"
    ignored_stderr = ("Reading additional input from stdin...",)
    noise_stderr = re.compile(r"WARNING: proceeding, even though we could not create PATH aliases")

    def __init__(self, model: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.session_id: str | None = None
        self.final_text = ""
        self.completed = False
        self.failed_message: str | None = None
        self.last_error = ""
        self.last_status: int | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self._started: set[object] = set()

    def _parse_object(self, obj: dict) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "thread.started":
            self.session_id = as_str(obj.get("thread_id")) or self.session_id
            return [AgentEvent("init", data={"session_id": self.session_id, "model": self.model})]
        if kind in ("item.started", "item.updated", "item.completed") and isinstance(obj.get("item"), dict):
            return self._item(kind, obj["item"])
        if kind == "error":
            return self._error(as_str(obj.get("message")))
        if kind == "turn.completed":
            return self._turn_completed(obj)
        if kind == "turn.failed":
            error = obj.get("error")
            message = as_str(error.get("message")) if isinstance(error, dict) else ""
            self.failed_message = message or "turn failed"
            self.last_status = _status_of(message) or self.last_status
            return [AgentEvent("error", message, {"fatal": True}),
                    AgentEvent("result", message, {"success": False, "session_id": self.session_id,
                                                   "cost_usd": None, "subtype": "turn.failed",
                                                   "api_error_status": self.last_status})]
        return []

    def _item(self, kind: str, item: dict) -> list[AgentEvent]:
        itype = item.get("type")
        if itype in TOOL_ITEMS:
            events = []
            if item.get("id") not in self._started and (kind == "item.started" or kind == "item.completed"):
                self._started.add(item.get("id"))
                events.append(_tool_call(item))
            if kind == "item.completed":
                events.append(_tool_result(item))
            return events
        if itype == "todo_list":
            return [AgentEvent("thinking", _todo_text(item), {"todo": item.get("items")})]
        if kind != "item.completed":
            return []
        if itype == "agent_message":
            text = as_str(item.get("text"))
            self.final_text = text
            return [AgentEvent("text", text)]
        if itype == "reasoning":
            return [AgentEvent("thinking", as_str(item.get("text")))]
        if itype == "error":
            return [AgentEvent("error", as_str(item.get("message")), {"fatal": False})]
        return []

    def _error(self, message: str) -> list[AgentEvent]:
        match = RECONNECT_RE.match(message)
        status = _status_of(message)
        if match:
            return [AgentEvent("retry", message, {"attempt": int(match.group(1)), "max_retries": int(match.group(2)),
                                                  "status": status, "delay_ms": None})]
        self.last_error = message
        self.last_status = status or self.last_status
        return [AgentEvent("error", message, {"fatal": False})]

    def _turn_completed(self, obj: dict) -> list[AgentEvent]:
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        data = {"input_tokens": as_int(usage.get("input_tokens")), "output_tokens": as_int(usage.get("output_tokens")),
                "cache_read_tokens": as_int(usage.get("cached_input_tokens")),
                "reasoning_tokens": as_int(usage.get("reasoning_output_tokens")), "cost_usd": None}
        self.input_tokens += data["input_tokens"]
        self.output_tokens += data["output_tokens"]
        self.cache_read_tokens += data["cache_read_tokens"]
        self.completed = True
        return [AgentEvent("usage", data=data),
                AgentEvent("result", self.final_text, {"success": True, "session_id": self.session_id,
                                                       "cost_usd": None, "subtype": "turn.completed"})]

    def finish(self, exit_code: int | None) -> RunOutcome:
        success = self.completed and self.failed_message is None and exit_code == 0
        if success:
            error_text = ""
        else:
            error_text = self.failed_message or self.last_error or self.stderr_tail()
        return RunOutcome(
            success=success, final_text=self.final_text, error_text=error_text, session_id=self.session_id,
            model=self.model, cost_usd=None, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens, num_turns=None, exit_code=exit_code,
            api_error_status=self.last_status, subtype="turn.failed" if self.failed_message is not None else None,
            resets_at=None, saw_result=self.completed or self.failed_message is not None, agent=self.kind,
        )


class CodexAdapter(Adapter):
    kind = "codex"
    default_binary = ("codex",)
    supports_resume = True
    own_env = ("OPENAI_*", "CODEX_*")

    def argv(self, req: AgentRequest) -> list[str]:
        argv = [*self.command, "exec", "--json", "--skip-git-repo-check", "-C", str(req.cwd)]
        if req.phase in FULL_PERMISSION_PHASES:
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        else:
            argv += ["-s", "read-only"]
        model = self.effective_model(req)
        if model:
            argv += ["-m", model]
        argv += list(self.args)
        if req.resume_session_id:
            argv += ["resume", req.resume_session_id]
        return argv + [req.prompt]

    def parser(self) -> CodexParser:
        return CodexParser(model=self.model or self.default_model)
