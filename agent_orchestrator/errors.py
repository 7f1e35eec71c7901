"""One exception family. Each error carries a hint (how to fix it), an exit code and an HTTP status."""
from __future__ import annotations


class OrchestratorError(Exception):
    """A known failure with a message for the user; rendered once per interface (CLI, HTTP)."""

    exit_code = 1
    http_status = 500
    code = "error"

    def __init__(self, message: str, hint: str | None = None, *, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.problems = list(problems or [])

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        lines += [f"  - {p}" for p in self.problems]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        body = {"code": self.code, "message": self.message, "hint": self.hint}
        if self.problems:
            body["problems"] = self.problems
        return {"error": body}


class UsageError(OrchestratorError):
    exit_code = 2
    http_status = 400
    code = "bad_request"


class ConfigError(OrchestratorError):
    """orchestrator.config.json is wrong; `problems` lists every mistake found."""

    exit_code = 2
    http_status = 400
    code = "config_invalid"


class FeaturesError(OrchestratorError):
    """features.json (or a feature sent to the API) is wrong; `problems` names each feature."""

    exit_code = 2
    http_status = 400
    code = "features_invalid"


class NotFound(OrchestratorError):
    exit_code = 2
    http_status = 404
    code = "not_found"


class Conflict(OrchestratorError):
    exit_code = 2
    http_status = 409
    code = "conflict"


class AlreadyRunning(OrchestratorError):
    """Another daemon holds the project's lock."""

    exit_code = 2
    http_status = 409
    code = "already_running"


class GitError(OrchestratorError):
    code = "git_failed"

    def __init__(self, message: str, hint: str | None = None, *, argv: list[str] | None = None,
                 stderr: str = ""):
        super().__init__(message, hint)
        self.argv = argv or []
        self.stderr = stderr


class ProcessError(OrchestratorError):
    code = "process_failed"


class AgentUnavailable(OrchestratorError):
    """The agent CLI's binary is not installed or not executable."""

    code = "agent_unavailable"
