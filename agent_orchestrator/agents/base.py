"""The shared vocabulary of all agent adapters: normalised events, the run outcome, requests,
the parser protocol and the adapter base class (argv prefix and scrubbed environment)."""
from __future__ import annotations

import json
import os
import re
from collections import deque
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Mapping, Sequence

PHASES = ("implement", "verify", "fix", "conflict")
FULL_PERMISSION_PHASES = frozenset({"implement", "fix", "conflict"})

EVENT_KINDS = frozenset({
    "init", "text", "thinking", "tool_call", "tool_result", "usage", "retry", "rate_limit",
    "error", "result", "raw", "stderr",
})

BASIC_ENV_NAMES = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_*", "TERM", "TMPDIR", "SHELL",
    "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS",
)

REPO_POINTING_GIT_VARS = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_PREFIX", "GIT_COMMON_DIR", "GIT_NAMESPACE",
})

STDERR_TAIL_LINES = 40


@dataclass
class AgentEvent:
    """One normalised piece of agent output, the same shape for every CLI."""

    kind: str
    text: str = ""
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "data": dict(self.data)}


@dataclass
class RunOutcome:
    """The fold of one run's events and its exit code."""

    success: bool = False
    final_text: str = ""
    error_text: str = ""
    session_id: str | None = None
    model: str | None = None
    cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    num_turns: int | None = None
    exit_code: int | None = None
    api_error_status: int | None = None
    subtype: str | None = None
    resets_at: float | None = None
    saw_result: bool = False
    agent: str | None = None
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    error_kind: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AgentRequest:
    phase: str
    prompt: str
    cwd: Path
    max_turns: int | None = None
    allowed_tools: str | None = None
    model: str | None = None
    resume_session_id: str | None = None
    prompt_file: Path | None = None
    max_budget_usd: float | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown agent phase {self.phase!r}; expected one of {', '.join(PHASES)}")


def parse_json_object(line: str) -> dict | None:
    """The JSON object on this line, or None when the line is not a JSON object."""
    stripped = line.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def as_int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    return 0


def as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def as_str(value: object) -> str:
    return value if isinstance(value, str) else ""


class OutputParser:
    """Incremental, pure parser of one run's output. Subclasses handle `_parse_object`."""

    kind = "generic"
    ignored_stderr: tuple[str, ...] = ()
    noise_stderr: re.Pattern | None = None

    def __init__(self) -> None:
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def feed(self, line: str) -> list[AgentEvent]:
        line = line.rstrip("\r\n")
        if not line.strip():
            return []
        obj = parse_json_object(line)
        if obj is None:
            return self._parse_text(line)
        return self._parse_object(obj)

    def feed_stderr(self, line: str) -> list[AgentEvent]:
        line = line.rstrip("\r\n")
        if not line.strip() or line.strip() in self.ignored_stderr:
            return []
        if self.noise_stderr is None or not self.noise_stderr.match(line):
            self._stderr_tail.append(line)
        return [AgentEvent("stderr", line)]

    def finish(self, exit_code: int | None) -> RunOutcome:
        raise NotImplementedError

    def _parse_text(self, line: str) -> list[AgentEvent]:
        return [AgentEvent("raw", line)]

    def _parse_object(self, obj: dict) -> list[AgentEvent]:
        return []

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._stderr_tail)[-lines:])


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def scrub_env(base_env: Mapping[str, str], keep: Sequence[str]) -> dict[str, str]:
    """Only the variables whose names match one of the fnmatch patterns in `keep`."""
    return {k: v for k, v in base_env.items() if _matches(k, keep) and k not in REPO_POINTING_GIT_VARS}


class Adapter:
    """How to run one agent: its argv per phase, its environment and its output parser."""

    kind = "generic"
    default_binary: tuple[str, ...] = ()
    own_env: tuple[str, ...] = ()
    supports_resume = False

    def __init__(self, name: str, *, command: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                 model: str | None = None, args: Sequence[str] = (), passthrough: Sequence[str] = (),
                 default_model: str | None = None, project_root: Path | None = None):
        self.name = name
        self.project_root = Path(project_root) if project_root is not None else None
        self.command = tuple(command) if command else self.default_binary
        self.extra_env = dict(env or {})
        self.model = model
        self.default_model = default_model
        self.args = tuple(args)
        self.passthrough = tuple(passthrough)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, command={list(self.command)!r})"

    @property
    def binary(self) -> str:
        return self.command[0]

    def argv(self, req: AgentRequest) -> list[str]:
        raise NotImplementedError

    def parser(self) -> OutputParser:
        raise NotImplementedError

    def env(self, base_env: Mapping[str, str], *, passthrough: Sequence[str] = (), phase: str = "implement",
            euid: int | None = None) -> dict[str, str]:
        """Scrubbed environment (SPEC §11): basics, this CLI's own variables, passthrough patterns
        (`["*"]` keeps everything), TZ=UTC, then the agent definition's own `env`."""
        keep = (*BASIC_ENV_NAMES, *self.own_env, *self.conditional_env(base_env), *self.passthrough, *passthrough)
        env = scrub_env(base_env, keep)
        env["TZ"] = "UTC"
        for key, value in self.default_env().items():
            env.setdefault(key, value)
        env.update(self.extra_env)
        env.update(self.phase_env(phase, os.geteuid() if euid is None else euid))
        return env

    def conditional_env(self, base_env: Mapping[str, str]) -> tuple[str, ...]:
        return ()

    def default_env(self) -> dict[str, str]:
        return {}

    def phase_env(self, phase: str, euid: int) -> dict[str, str]:
        return {}

    def effective_model(self, req: AgentRequest) -> str | None:
        """The agent's own model (agents.<name>.model) wins; then the request's; then agent.model."""
        return self.model or req.model or self.default_model


MAX_REPLY_CHARS = 256 * 1024


def keep_reply_tail(parts: list[str], size: int, limit: int = MAX_REPLY_CHARS) -> int:
    """Drop the oldest parts of a reply being collected until it holds at most `limit`
    characters (the end of an answer is what matters: the verdict is there); returns its size.
    An agent printing hundreds of megabytes of text cannot make a parser hold them."""
    while size > limit and len(parts) > 1:
        size -= len(parts.pop(0))
    if size > limit:
        parts[0] = parts[0][-limit:]
        size = len(parts[0])
    return size
