"""Running one agent session: spawn the CLI, normalise its output into the event stream, record
the session, and classify how it ended."""
from __future__ import annotations

import asyncio
import collections
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from . import proc
from .agents import get_adapter
from .agents.base import AgentRequest, RunOutcome
from .errors import AgentUnavailable
from .events import encode_data
from .failures import Failure, classify
from .recovery import OWNER_ENV
from .states import SessionStatus

TAIL_LINES = 60
# An agent may print lines of many megabytes: what is kept of one line (in the tail used for
# failure context) or of one event (in the event stream and the database) is bounded.
TAIL_LINE_CHARS = 2000
TAIL_CHARS = TAIL_LINES * TAIL_LINE_CHARS
EVENT_TEXT_CHARS = 64 * 1024
# Longer lines are cut by the process reader before they are parsed (a JSON event that long is
# shown as cut raw text); this bounds the memory one agent can take to a few times this size.
MAX_LINE_BYTES = 2 << 20
CUT_MARKER = " …[cut: {n} characters]"
_LINE_CUT = re.compile(re.escape(proc.TRUNCATION_MARKER).replace(r"\{n\}", r"\d+") + "$")


@dataclass
class SessionResult:
    session_id: int
    agent: str
    outcome: RunOutcome | None
    failure: Failure | None  # None: the session succeeded
    exit_reason: str
    tail: list[str] = field(default_factory=list)  # last lines of text/error output, for context
    unavailable: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.unavailable


class SessionRunner:
    """Owns every running agent process so that a stop can end them all."""

    def __init__(self, *, db, bus, config, clock: Callable[[], float] = time.time,
                 env: Mapping[str, str] | None = None, adapter_factory=get_adapter,
                 sandbox=None, on_event: Callable[[str, object], None] | None = None):
        self.db = db
        self.bus = bus
        self.config = config
        self.clock = clock
        self.env = os.environ if env is None else env
        self.adapter_factory = adapter_factory
        self.sandbox = sandbox
        self.on_event = on_event
        self.active: dict[int, proc.AgentProcess] = {}

    async def run(self, *, agent: str, request: AgentRequest, feature_id: int, track: str,
                  attempt: int) -> SessionResult:
        cfg = self.config
        adapter = self.adapter_factory(agent, cfg)
        argv = adapter.argv(request)
        env = adapter.env(self.env, phase=request.phase)
        if os.environ.get(OWNER_ENV):  # lets a restarted daemon find what a killed one left
            env[OWNER_ENV] = os.environ[OWNER_ENV]
        sid = self.db.create_session(
            feature_id=feature_id, track=track, phase=request.phase, agent=agent, attempt=attempt,
            prompt=request.prompt, cwd=str(request.cwd), started_at=self.clock())
        self._publish_session(sid, feature_id, track, request.phase, agent, "running")

        parser = adapter.parser()
        cap = int(cfg["agent.maxOutputBytes"])
        stored = 0
        truncated = False
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        stderr_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

        # the JSON of every output event of this session starts the same way: encoded once, and
        # each event's JSON is appended to it (exactly what encode_data gives for the whole dict)
        head = encode_data({"session_id": sid, "feature_id": feature_id, "track": track})[:-1] + ',"event":'

        def emit(events) -> None:
            nonlocal stored, truncated
            for ev in events:
                if ev.kind == "init" and ev.data.get("session_id"):
                    # known at once, so a session killed mid-way can still be resumed
                    self.db.update_session(sid, agent_session_id=ev.data["session_id"],
                                           model=ev.data.get("model"))
                if self.on_event is not None:
                    self.on_event(agent, ev)
                if ev.kind in ("text", "error", "raw", "result") and ev.text:
                    lines = ev.text[-TAIL_CHARS:].splitlines()
                    if len(lines) == 1 and len(lines[0]) <= TAIL_LINE_CHARS:
                        tail.append(lines[0])  # the common case: one short line
                    else:
                        tail.extend(_cut(line, TAIL_LINE_CHARS) for line in lines[-TAIL_LINES:])
                if truncated:
                    continue
                data = {"kind": ev.kind, "text": ev.text, "data": ev.data}
                encoded = encode_data(data)
                if len(encoded) > EVENT_TEXT_CHARS:  # else no string in it can be longer
                    data = _cut_strings(data, EVENT_TEXT_CHARS)
                    encoded = encode_data(data)
                size = len(encoded)
                if stored + size > cap:
                    truncated = True
                    data = {"kind": "notice", "text": f"output truncated: more than {cap} bytes; "
                            "the rest of this session's output is not kept", "data": {}}
                    encoded = encode_data(data)
                stored += size
                self.bus.publish("output", {"session_id": sid, "feature_id": feature_id,
                                            "track": track, "event": data}, session_id=sid,
                                 data_json=f"{head}{encoded}}}")

        def on_stdout(line: str) -> None:
            emit(parser.feed(line))

        def on_stderr(line: str) -> None:
            stderr_tail.append(_cut(line, TAIL_LINE_CHARS))
            emit(parser.feed_stderr(line))

        try:
            if self.sandbox is not None:
                argv = self.sandbox(argv, request.cwd)
            child = await proc.AgentProcess.start(argv, cwd=request.cwd, env=env,
                                                  on_stdout=on_stdout, on_stderr=on_stderr,
                                                  max_line=MAX_LINE_BYTES,
                                                  hold_output=self._output_backlog)
        except AgentUnavailable as exc:
            self.db.update_session(sid, status=SessionStatus.FAILED.value, ended_at=self.clock(),
                                   error=exc.message, failure_category="unavailable",
                                   exit_reason="unavailable")
            self._publish_session(sid, feature_id, track, request.phase, agent, "failed",
                                  error=exc.message)
            return SessionResult(sid, agent, None, None, "unavailable", [exc.message],
                                 unavailable=True)

        self.active[sid] = child
        try:
            info = await child.wait(
                timeout=float(cfg["agent.timeoutMinutes"]) * 60,
                stall_timeout=float(cfg["agent.stallMinutes"]) * 60,
                grace=float(cfg["agent.killGraceSeconds"]))
        finally:
            self.active.pop(sid, None)

        outcome = parser.finish(info.returncode)
        failure = classify(outcome, stderr_tail="\n".join(stderr_tail), exit_reason=info.reason,
                           critical_patterns=cfg.critical_patterns, now=self.clock(),
                           timeout_minutes=cfg["agent.timeoutMinutes"],
                           stall_minutes=cfg["agent.stallMinutes"])
        if info.reason == "stopped":
            status = SessionStatus.INTERRUPTED.value
        else:
            status = SessionStatus.SUCCEEDED.value if failure is None else SessionStatus.FAILED.value
        self.db.update_session(
            sid, status=status, ended_at=self.clock(), exit_code=info.returncode,
            exit_reason=info.reason, agent_session_id=outcome.session_id, model=outcome.model,
            cost_usd=outcome.cost_usd, input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens, num_turns=outcome.num_turns,
            error=failure.reason if failure else None,
            failure_category=failure.category if failure else None,
            final_text=(outcome.final_text or "")[-20000:], output_bytes=stored,
            truncated=int(truncated))
        self._publish_session(sid, feature_id, track, request.phase, agent, status,
                              error=failure.reason if failure else None,
                              category=failure.category if failure else None,
                              cost_usd=outcome.cost_usd)
        return SessionResult(sid, agent, outcome, failure, info.reason, list(tail))

    def _output_backlog(self) -> bool:
        """Agents' output waits in their pipes while the event writer is behind."""
        behind = getattr(self.bus, "behind", None)
        return behind is not None and behind()

    def _publish_session(self, sid, feature_id, track, phase, agent, status, **extra) -> None:
        data = {"id": sid, "feature_id": feature_id, "track": track, "phase": phase,
                "agent": agent, "status": status}
        data.update({k: v for k, v in extra.items() if v is not None})
        self.bus.publish("session", data, session_id=sid)

    async def stop_all(self, grace: float | None = None) -> None:
        grace = float(self.config["agent.killGraceSeconds"]) if grace is None else grace
        await asyncio.gather(*(child.terminate(grace=grace) for child in list(self.active.values())))


def _cut(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with a note; a line the process reader already cut
    keeps its note, which gives the size of the whole line."""
    if len(text) <= limit:
        return text
    line_cut = _LINE_CUT.search(text[-80:])
    return text[:limit] + (line_cut.group(0) if line_cut else CUT_MARKER.format(n=len(text)))


def _cut_strings(value, limit: int):
    """A copy of an event's dict with every string longer than `limit` cut and marked."""
    if isinstance(value, str):
        return _cut(value, limit)
    if isinstance(value, dict):
        return {k: _cut_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_strings(v, limit) for v in value]
    return value
