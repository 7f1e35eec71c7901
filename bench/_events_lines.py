"""The stream-json lines of the event benchmark, shared by the flood agent
(bench/fake_agent/flood_claude) and the plain-parsing floor of bench/events.py.

The shapes are those of Claude Code's `--output-format stream-json --verbose` as recorded in
tests/transcripts/claude-success.jsonl: an init line, then a repeating cycle of an assistant text
block, an assistant tool_use block (Bash) and the user tool_result line (with the `tool_use_result`
metadata the real CLI adds), then the result line. Every cycle line carries a stamp
`@ao:SEQ:EPOCH@` (the line's number and the time it was written, `time.time()`) inside the text,
the tool's command and the tool's output, so the latency from the agent to an SSE client can be
measured end to end: the stamp survives parsing and normalisation into the `output` event.
"""
from __future__ import annotations

import json
import re

SESSION_ID = "9f69a4cf-f103-42e3-bcc7-856bbfa95dc9"
MODEL = "claude-opus-5-5"
# A stamp: the line's number and the time it was written (a tool result carries it twice).
STAMP_RE = re.compile(rb"@ao:(\d+):(\d+\.\d+)@")


def _usage(tokens_in: int) -> dict:
    return {"input_tokens": tokens_in, "output_tokens": 1, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0}


def _split(obj: dict, marker: str) -> tuple[bytes, bytes]:
    """The compact JSON of obj cut at `marker` (which must appear once): prefix, suffix."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    head, sep, tail = text.partition(marker)
    assert sep and marker not in tail, marker
    return head.encode(), tail.encode()


def init_line(cwd: str = "/tmp/run/repo") -> bytes:
    obj = {"type": "system", "subtype": "init", "cwd": cwd, "session_id": SESSION_ID,
           "tools": ["Task", "Bash", "Edit", "Read", "Write", "WebFetch", "WebSearch"],
           "mcp_servers": [], "model": MODEL, "permissionMode": "bypassPermissions",
           "apiKeySource": "none", "claude_code_version": "2.1.0", "output_style": "default",
           "uuid": "c3a9d7e4-54d5-4f4e-9a0b-2f0c84b0e6a1"}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class Cycle:
    """Builds the stamped lines fast: each kind is a pre-encoded template around the stamp."""

    def __init__(self) -> None:
        marker = "<<STAMP>>"
        text = {"type": "assistant", "message": {
            "id": "msg_ecbc198d28e847c994bd826d", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": f"Checking the next module before editing it {marker}"}],
            "stop_reason": None, "stop_sequence": None, "usage": _usage(2859), "context_management": None},
            "parent_tool_use_id": None, "session_id": SESSION_ID,
            "uuid": "f60e9e27-38a6-4e67-a398-c89bba32f82e", "timestamp": "2026-11-24T01:48:03.306Z",
            "request_id": "req_e54ed19650084f1487722c69"}
        tool = {"type": "assistant", "message": {
            "id": "msg_ecbc198d28e847c994bd826d", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "tool_use", "id": "toolu_0b0becf26e134649bbf4bad3", "name": "Bash",
                         "input": {"command": f"grep -rn 'TODO' src/ | head -20 # {marker}",
                                   "description": "Find the open TODOs"}}],
            "stop_reason": None, "stop_sequence": None, "usage": _usage(2860), "context_management": None},
            "parent_tool_use_id": None, "session_id": SESSION_ID,
            "uuid": "a2b4c6d8-0000-4e4e-9a9a-123456789abc", "timestamp": "2026-11-24T01:48:03.412Z",
            "request_id": "req_e54ed19650084f1487722c69"}
        result = {"type": "user", "message": {"role": "user", "content": [{
            "tool_use_id": "toolu_0b0becf26e134649bbf4bad3", "type": "tool_result",
            "content": f"src/app.py:12: # TODO handle the empty case {marker}", "is_error": False}]},
            "parent_tool_use_id": None, "session_id": SESSION_ID,
            "uuid": "789c1f68-aff5-483b-9329-1241388e0d79", "timestamp": "2026-11-24T01:48:03.622Z",
            "tool_use_result": {"stdout": "src/app.py:12: # TODO handle the empty case", "stderr": "",
                                "interrupted": False, "isImage": False, "noOutputExpected": False},
            "tool_result_meta": [{"id": "toolu_0b0becf26e134649bbf4bad3", "permission_decision": {
                "decision": "accept", "source": "config", "reason_type": "mode"}}]}
        self.templates = [_split(obj, marker) for obj in (text, tool, result)]

    def line(self, seq: int, now: float) -> bytes:
        head, tail = self.templates[seq % 3]
        return b"%s@ao:%d:%.6f@%s\n" % (head, seq, now, tail)


def result_line(lines: int) -> bytes:
    obj = {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 460,
           "duration_api_ms": 70, "num_turns": lines // 3, "result": f"Printed {lines} lines.",
           "stop_reason": "end_turn", "session_id": SESSION_ID, "total_cost_usd": 0.024964,
           "usage": {"input_tokens": 5831, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                     "output_tokens": 82},
           "modelUsage": {MODEL: {"inputTokens": 5831, "outputTokens": 82, "costUSD": 0.024964}},
           "permission_denials": [], "terminal_reason": "completed",
           "uuid": "70d7318a-64b5-41cf-82c2-c3497658cc37"}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def all_lines(count: int, *, now: float = 1_800_000_000.0) -> list[bytes]:
    """The whole transcript of a flood of `count` stamped lines (for the floor measurement)."""
    cycle = Cycle()
    return [init_line(), *(cycle.line(i, now + i * 1e-5) for i in range(count)), result_line(count)]
