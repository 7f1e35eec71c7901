"""User-defined `command` agents: an argv template, output read as plain text."""
from __future__ import annotations

import re
from collections import deque
from typing import Sequence

from ..errors import ConfigError
from .base import Adapter, AgentEvent, AgentRequest, OutputParser, RunOutcome

FINAL_TEXT_LINES = 200
ERROR_TAIL_LINES = 20
PROMPT = "{prompt}"
PROMPT_FILE = "{prompt_file}"
PLACEHOLDER_RE = re.compile(r"\{prompt(?:_file)?\}")


class PlainTextParser(OutputParser):
    """Every stdout line is a "text" event (JSON or not); success = exit code 0; the final text is
    the last FINAL_TEXT_LINES lines of stdout, so a verdict printed at the end can be read."""

    kind = "command"

    def __init__(self) -> None:
        super().__init__()
        self._tail: deque[str] = deque(maxlen=FINAL_TEXT_LINES)

    def feed(self, line: str) -> list[AgentEvent]:
        line = line.rstrip("\r\n")
        self._tail.append(line)
        return [AgentEvent("text", line)]

    def finish(self, exit_code: int | None) -> RunOutcome:
        success = exit_code == 0
        lines = list(self._tail)
        while lines and not lines[-1].strip():
            lines.pop()
        error_text = ""
        if not success:
            error_text = self.stderr_tail(ERROR_TAIL_LINES) or "\n".join(lines[-ERROR_TAIL_LINES:])
        return RunOutcome(success=success, final_text="\n".join(lines), error_text=error_text,
                          exit_code=exit_code, saw_result=exit_code is not None, agent=self.kind)


class CommandAdapter(Adapter):
    """`command` is an argv template: `{prompt}` and `{prompt_file}` are replaced inside each element.
    Without either placeholder the prompt is appended as the last argument."""

    kind = "command"

    def __init__(self, name: str, *, command: Sequence[str] | None, **kwargs):
        if not command:
            raise ConfigError(f"agent {name!r} has no command",
                              hint=f"set agents.{name}.command to an argv list such as "
                                   '["my-agent", "--message", "{prompt}"]')
        super().__init__(name, command=command, **kwargs)

    @property
    def uses_prompt_file(self) -> bool:
        return any(PROMPT_FILE in part for part in (*self.command, *self.args))

    def argv(self, req: AgentRequest) -> list[str]:
        template = [*self.command, *self.args]
        if self.uses_prompt_file and req.prompt_file is None:
            raise ValueError(f"agent {self.name!r} uses {PROMPT_FILE} but the request has no prompt_file")
        values = {PROMPT: req.prompt, PROMPT_FILE: str(req.prompt_file) if req.prompt_file is not None else ""}
        argv = [PLACEHOLDER_RE.sub(lambda m: values[m.group(0)], part) for part in template]
        if not any(PLACEHOLDER_RE.search(part) for part in template):
            argv.append(req.prompt)
        return argv

    def parser(self) -> PlainTextParser:
        return PlainTextParser()
