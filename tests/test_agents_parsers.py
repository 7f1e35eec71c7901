"""The output parsers against every recorded transcript of the genuine CLIs, and synthetic edge cases."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest

from agent_orchestrator.agents import AgentEvent, parser_for
from agent_orchestrator.agents.claude import ClaudeParser
from agent_orchestrator.agents.codex import CodexParser
from agent_orchestrator.agents.command import PlainTextParser
from agent_orchestrator.agents.gemini import GeminiParser

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"
INDEX = json.loads((TRANSCRIPTS / "index.json").read_text())


class E(NamedTuple):
    success: bool
    session_id: str | None
    cost_usd: float | None
    input_tokens: int
    output_tokens: int
    final_text: str
    error_start: str


DONE = "Created hello.txt and committed it."
FAILED3 = "The command failed with exit code 3."
CLAUDE_429 = "API Error: Request rejected (429) · This request would exceed the rate limit for your organization"
CLAUDE_529 = "API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again in a moment."
CODEX_429 = "exceeded retry limit, last status: 429 Too Many Requests, request id: req_"

EXPECTED = {
    "claude-bash-fails": E(True, "225b86f4-949c-4eaa-966b-8b59e8a6abd8", 0.024324, 5801, 56, FAILED3, ""),
    "claude-json-output": E(True, "8f217ce4-0214-4e1b-a5f3-c45df42b6af8", 0.024972, 5833, 82, DONE, ""),
    "claude-maxturns": E(False, "e930b96b-8fdb-46ee-8a75-976f1e104cf1", 0.024816, 5804, 80, "",
                         "Reached maximum number of turns (2)"),
    "claude-overloaded": E(False, "91e634da-dd10-4558-bcae-13c2c8fe7e34", 0.0, 0, 0, "", CLAUDE_529),
    "claude-overloaded-default-retries": E(False, "d8bdc49d-098e-4c7e-850f-fc997b8b8a55", 0.0, 0, 0, "", CLAUDE_529),
    "claude-overloaded-stream": E(False, "4d828f42-984c-421e-b0e1-bc2fc5c64afe", 0.0, 0, 0, "", CLAUDE_529),
    "claude-partial-messages": E(True, "0ca06171-9b40-4da3-b441-a3b9d25409fd", 0.02498, 5835, 82, DONE, ""),
    "claude-ratelimit": E(False, "0ee1bba9-b99d-4c72-a3a9-c40b4f2c17f5", 0.0, 0, 0, "", CLAUDE_429),
    "claude-ratelimit-default-retries": E(False, "8a1639b9-b67f-4005-8235-26febc205d68", 0.0, 0, 0, "", CLAUDE_429),
    "claude-ratelimit-recover": E(True, "0e342087-5310-497c-83d2-60f194e79ca6", 0.024984, 5836, 82, DONE, ""),
    "claude-success": E(True, "9f69a4cf-f103-42e3-bcc7-856bbfa95dc9", 0.024964, 5831, 82, DONE, ""),
    "codex-bash-fails": E(True, "01a20b3d-7ee3-7220-a4ea-38259915f1d9", None, 14013, 104, FAILED3, ""),
    "codex-default-model": E(True, "01a20b3d-8127-70c0-83da-6a98402d56e8", None, 27370, 175, DONE, ""),
    "codex-full-auto-flag": E(False, None, None, 0, 0, "", "error: unexpected argument '--full-auto' found"),
    "codex-quota": E(False, "01a20b3d-6c63-7812-aa31-6beddd40bf57", None, 0, 0, "",
                     "Quota exceeded. Check your plan and billing details."),
    "codex-ratelimit": E(False, "01a20b3d-4e00-7123-ae10-e26c3053ff67", None, 0, 0, "", CODEX_429 + "7660cb7"),
    "codex-ratelimit-noretry": E(False, "01a20b3d-6382-7182-b9f6-f698d3460ec3", None, 0, 0, "", CODEX_429 + "9951e79"),
    "codex-ratelimit-recover": E(True, "01a20b3d-6519-7322-be8a-f7232fd848e4", None, 14085, 166, DONE, ""),
    "codex-ratelimit-stream": E(False, "01a20b3d-6ad4-70c2-a488-a01d4ca3ad5e", None, 0, 0, "",
                                "rate limit exceeded: Rate limit reached for mock-model in organization org-mock"),
    "codex-server-error": E(False, "01a20b3d-6dc8-78f2-a49d-d55845e9a0f1", None, 0, 0, "",
                            "We\u2019re currently experiencing high demand, which may cause temporary errors."),
    "codex-success": E(True, "01a20b3d-4bbc-7290-8258-242129f3f2e8", None, 14070, 166, DONE, ""),
    "codex-unknown-model": E(True, "01a20b3d-8377-7353-a223-39bb70e71579", None, 10747, 166, DONE, ""),
    "codex-workspace-write": E(True, "01a20b3d-85ef-7193-9d15-f61389c7a84d", None, 14545, 166, DONE, ""),
    "gemini-bash-fails": E(True, "b08f2e89-d686-44be-9e93-de84b12ff0a6", None, 736, 63, FAILED3, ""),
    "gemini-overloaded": E(False, "624f00f9-0519-4214-938a-baaf3662ee38", None, 208, 18, "",
                           "[API Error: The model is overloaded. Please try again later.]"),
    "gemini-ratelimit": E(False, "05670632-b55d-4a1c-bbc6-19dbb3854869", None, 207, 18, "",
                          "[API Error: Resource has been exhausted (e.g. check quota).\nSuggested retry after 1s.]"),
    "gemini-success": E(True, "c82c6c4e-a2eb-4038-9a8f-f01daaf23b2f", None, 750, 87, DONE, ""),
}


def replay(name: str):
    """Feed a transcript (stdout and stderr) to a fresh parser; returns (events, outcome)."""
    meta = INDEX[name]
    parser = parser_for(meta["cli"])
    events: list[AgentEvent] = []
    for line in (TRANSCRIPTS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
        events += parser.feed(line)
    for line in (TRANSCRIPTS / f"{name}.stderr.txt").read_text(encoding="utf-8").splitlines():
        events += parser.feed_stderr(line)
    return events, parser.finish(meta["exit_code"])


def feed_all(parser, lines, exit_code):
    events = []
    for line in lines:
        events += parser.feed(line if isinstance(line, str) else json.dumps(line))
    return events, parser.finish(exit_code)


def kinds(events, kind):
    return [e for e in events if e.kind == kind]


def test_every_recorded_transcript_has_expectations():
    recorded = {p.name[:-len(".jsonl")] for p in TRANSCRIPTS.glob("*.jsonl") if ".requests." not in p.name}
    assert recorded == set(INDEX) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_transcript_outcome(name):
    expected = EXPECTED[name]
    events, outcome = replay(name)
    assert outcome.success is expected.success
    assert outcome.session_id == expected.session_id
    if expected.cost_usd is None:
        assert outcome.cost_usd is None
    else:
        assert outcome.cost_usd == pytest.approx(expected.cost_usd)
    assert (outcome.input_tokens, outcome.output_tokens) == (expected.input_tokens, expected.output_tokens)
    assert outcome.final_text == expected.final_text
    assert outcome.error_text.startswith(expected.error_start)
    assert bool(outcome.error_text) is not expected.success
    assert outcome.exit_code == INDEX[name]["exit_code"]
    assert outcome.agent == INDEX[name]["cli"]
    assert not kinds(events, "raw")
    if expected.success:
        assert kinds(events, "result")


@pytest.mark.parametrize("name,model", [("claude-success", "claude-opus-5-5"), ("claude-json-output", "claude-opus-5-5"),
                                        ("gemini-success", "auto"), ("codex-success", None)])
def test_transcript_model(name, model):
    assert replay(name)[1].model == model


def test_claude_success_events_in_order():
    events, outcome = replay("claude-success")
    assert [e.kind for e in events] == ["init", "text", "tool_call", "tool_result", "text", "usage", "result"]
    assert events[0].data["session_id"] == "9f69a4cf-f103-42e3-bcc7-856bbfa95dc9"
    call = events[2]
    assert call.data["name"] == "Bash"
    assert call.data["input"]["command"] == "echo hi > hello.txt && git add -A && git commit -q -m 'feat: hello'"
    assert events[3].data == {"id": call.data["id"], "is_error": False, "output": "(Bash completed with no output)"}
    assert outcome.num_turns == 2 and outcome.subtype == "success" and outcome.saw_result


def test_claude_bash_failure_is_a_tool_error_not_a_run_failure():
    events, outcome = replay("claude-bash-fails")
    result = kinds(events, "tool_result")[0]
    assert result.data["is_error"] is True and result.data["output"] == "Exit code 3\noops"
    assert outcome.success


def test_claude_partial_messages_do_not_duplicate_text():
    events, _ = replay("claude-partial-messages")
    assert [e.text for e in kinds(events, "text")] == ["I'll create the file and commit it.", DONE]
    assert len(kinds(events, "tool_call")) == 1


def test_claude_synthetic_api_error_is_an_error_not_model_text():
    events, outcome = replay("claude-ratelimit")
    assert not kinds(events, "text")
    error = kinds(events, "error")[0]
    assert error.text.startswith(CLAUDE_429) and error.data["api_error_status"] == 429
    retries = kinds(events, "retry")
    assert [(r.data["attempt"], r.data["status"], r.data["delay_ms"]) for r in retries] == [(1, 429, 1060), (2, 429, 1122)]
    assert outcome.api_error_status == 429 and outcome.error_kind == "rate_limit"
    assert outcome.subtype == "success" and not outcome.success


def test_claude_overloaded_retries_and_status():
    events, outcome = replay("claude-overloaded-default-retries")
    assert len(kinds(events, "retry")) == 10
    assert outcome.api_error_status == 529 and outcome.error_kind == "server_error"


def test_claude_json_output_result_line_does_not_start_with_type():
    line = (TRANSCRIPTS / "claude-json-output.jsonl").read_text().splitlines()[0]
    assert not line.startswith('{"type"')
    events, outcome = replay("claude-json-output")
    assert [e.kind for e in events] == ["usage", "result"]
    assert events[0].data["cost_usd"] == pytest.approx(0.024972)


def claude_result(**fields):
    base = {"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "s1",
            "num_turns": 1, "total_cost_usd": 0.5,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                      "cache_creation_input_tokens": 7}}
    base.update(fields)
    return base


def test_claude_failure_is_is_error_not_subtype():
    _, outcome = feed_all(ClaudeParser(), [claude_result(is_error=True, result="Not logged in · Please run /login")], 1)
    assert not outcome.success and outcome.subtype == "success"
    assert outcome.error_text == "Not logged in · Please run /login"
    assert outcome.final_text == ""


def test_claude_needs_exit_zero_and_a_result():
    assert feed_all(ClaudeParser(), [claude_result()], 0)[1].success
    assert not feed_all(ClaudeParser(), [claude_result()], 1)[1].success
    killed = feed_all(ClaudeParser(), [{"type": "system", "subtype": "init", "session_id": "s9", "model": "m"}], None)[1]
    assert not killed.success and not killed.saw_result and killed.session_id == "s9" and killed.cost_usd is None


def test_claude_cache_tokens_are_separate():
    _, outcome = feed_all(ClaudeParser(), [claude_result()], 0)
    assert (outcome.input_tokens, outcome.output_tokens) == (10, 5)
    assert (outcome.cache_read_tokens, outcome.cache_creation_tokens) == (100, 7)


def test_claude_rate_limit_event_sets_resets_at():
    lines = [
        {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed_warning", "resetsAt": 1700000000}},
        {"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": 1795500000,
                                                         "rateLimitType": "five_hour"}},
        claude_result(is_error=True, result="You've hit your 5-hour limit · resets 4:49am (UTC)", api_error_status=429),
    ]
    events, outcome = feed_all(ClaudeParser(), lines, 1)
    assert [e.data["status"] for e in kinds(events, "rate_limit")] == ["allowed_warning", "rejected"]
    assert outcome.resets_at == 1795500000.0 and outcome.api_error_status == 429


def test_claude_max_turns_keeps_last_model_text_and_ignores_subagents():
    msg = lambda mid, block, parent=None: {"type": "assistant", "parent_tool_use_id": parent,  # noqa: E731
                                           "message": {"id": mid, "model": "m", "content": [block]}}
    lines = [
        msg("a", {"type": "thinking", "thinking": "hmm"}),
        msg("a", {"type": "text", "text": "first"}),
        msg("b", {"type": "text", "text": "VERDICT: PASS"}),
        msg("b", {"type": "text", "text": "second part"}),
        msg("c", {"type": "text", "text": "subagent words"}, parent="toolu_1"),
        claude_result(subtype="error_max_turns", is_error=True, errors=["Reached maximum number of turns (2)"],
                      result=None),
    ]
    events, outcome = feed_all(ClaudeParser(), lines, 1)
    assert kinds(events, "thinking")[0].text == "hmm"
    assert kinds(events, "text")[-1].data == {"parent_tool_use_id": "toolu_1"}
    assert outcome.final_text == "VERDICT: PASS\nsecond part"
    assert outcome.error_text == "Reached maximum number of turns (2)"


def test_unknown_and_non_json_lines():
    parser = ClaudeParser()
    assert parser.feed('{"type": "brand_new_event", "x": 1}') == []
    assert parser.feed('{"type": "system", "subtype": "status", "status": "requesting"}') == []
    assert parser.feed("") == []
    assert [e.to_dict() for e in parser.feed("plain words\n")] == [{"kind": "raw", "text": "plain words", "data": {}}]
    assert parser.feed("[1, 2]")[0].kind == "raw"
    assert parser.feed('{"type": "result", broken')[0].kind == "raw"


def test_stderr_lines_become_events_and_feed_the_error_text():
    parser = ClaudeParser()
    assert parser.feed_stderr("Error: When using --print, --output-format=stream-json requires --verbose\n")[0].kind == "stderr"
    outcome = parser.finish(1)
    assert outcome.error_text == "Error: When using --print, --output-format=stream-json requires --verbose"


def test_codex_events():
    events, outcome = replay("codex-bash-fails")
    call, result = kinds(events, "tool_call")[0], kinds(events, "tool_result")[0]
    assert call.data == {"id": "item_0", "name": "shell", "input": {"command": "/bin/bash -lc 'echo oops >&2; exit 3'"}}
    assert result.data == {"id": "item_0", "is_error": True, "output": "oops\n", "status": "failed", "exit_code": 3}
    assert outcome.success and outcome.cost_usd is None


def test_codex_reconnect_is_retry_not_failure():
    events, outcome = replay("codex-ratelimit-recover")
    retry = kinds(events, "retry")[0]
    assert (retry.data["attempt"], retry.data["max_retries"], retry.data["status"]) == (1, 5, 429)
    assert not kinds(events, "error") and outcome.success
    events, outcome = replay("codex-ratelimit")
    assert [r.data["attempt"] for r in kinds(events, "retry")] == [1, 2, 3, 4, 5]
    assert outcome.api_error_status == 429 and outcome.subtype == "turn.failed"


def test_codex_item_error_is_a_warning():
    events, outcome = replay("codex-unknown-model")
    warning = kinds(events, "error")[0]
    assert warning.data == {"fatal": False} and warning.text.startswith("Model metadata for `mock-model` not found")
    assert outcome.success


def test_codex_ignores_stdin_notice():
    parser = CodexParser()
    assert parser.feed_stderr("Reading additional input from stdin...\n") == []
    assert parser.feed_stderr("something else")[0].kind == "stderr"


def test_codex_synthetic_items_and_usage_sum():
    lines = [
        {"type": "thread.started", "thread_id": "t1"},
        {"type": "item.completed", "item": {"id": "r", "type": "reasoning", "text": "thinking..."}},
        {"type": "item.started", "item": {"id": "td", "type": "todo_list", "items": [{"text": "a", "completed": True}]}},
        {"type": "item.completed", "item": {"id": "f", "type": "file_change", "status": "completed",
                                            "changes": [{"path": "a.py", "kind": "add"}]}},
        {"type": "item.started", "item": {"id": "m", "type": "mcp_tool_call", "server": "s", "tool": "t",
                                          "arguments": {"q": 1}, "status": "in_progress"}},
        {"type": "item.completed", "item": {"id": "m", "type": "mcp_tool_call", "server": "s", "tool": "t",
                                            "status": "failed", "error": {"message": "boom"}}},
        {"type": "item.completed", "item": {"id": "w", "type": "web_search", "query": "python"}},
        {"type": "item.completed", "item": {"id": "x", "type": "agent_message", "text": "first"}},
        {"type": "turn.completed", "usage": {"input_tokens": 100, "cached_input_tokens": 40, "output_tokens": 10}},
        {"type": "item.completed", "item": {"id": "y", "type": "agent_message", "text": "VERDICT: PASS"}},
        {"type": "turn.completed", "usage": {"input_tokens": 50, "cached_input_tokens": 5, "output_tokens": 7}},
    ]
    events, outcome = feed_all(CodexParser(), lines, 0)
    assert kinds(events, "thinking")[0].text == "thinking..."
    assert kinds(events, "thinking")[1].text == "[x] a"
    assert [e.data["name"] for e in kinds(events, "tool_call")] == ["file_change", "s/t", "web_search"]
    assert [(e.text, e.data["is_error"]) for e in kinds(events, "tool_result")] == [
        ("add a.py", False), ("boom", True), ("python", False)]
    assert (outcome.input_tokens, outcome.output_tokens, outcome.cache_read_tokens) == (150, 17, 45)
    assert outcome.final_text == "VERDICT: PASS" and outcome.session_id == "t1" and outcome.success


def test_codex_turn_failed_or_missing_completion_is_failure():
    assert not feed_all(CodexParser(), [{"type": "turn.failed", "error": {"message": "x"}}], 0)[1].success
    assert not feed_all(CodexParser(), [{"type": "thread.started", "thread_id": "t"}], 0)[1].success
    done = [{"type": "turn.completed", "usage": {}}]
    assert feed_all(CodexParser(), done, 0)[1].success
    assert not feed_all(CodexParser(), done, 1)[1].success


def test_gemini_user_echo_is_not_output_and_deltas_join():
    lines = [
        {"type": "init", "session_id": "g1", "model": "gemini-x"},
        {"type": "message", "role": "user", "content": "Verify feature #1"},
        {"type": "message", "role": "assistant", "content": "Let me check.", "delta": True},
        {"type": "tool_use", "tool_name": "run_shell_command", "tool_id": "t1", "parameters": {"command": "ls"}},
        {"type": "tool_result", "tool_id": "t1", "status": "error", "error": {"message": "denied"}},
        {"type": "error", "severity": "warning", "message": "loop detected"},
        {"type": "message", "role": "assistant", "content": "STEP 1: PASS\nVERDICT:", "delta": True},
        {"type": "message", "role": "assistant", "content": " PASS", "delta": True},
        {"type": "result", "status": "success", "stats": {"input_tokens": 9, "output_tokens": 3, "cached": 2}},
    ]
    events, outcome = feed_all(GeminiParser(), lines, 0)
    assert "Verify feature #1" not in [e.text for e in events]
    assert kinds(events, "tool_result")[0].data == {"id": "t1", "output": "denied", "is_error": True}
    assert kinds(events, "error")[0].data["fatal"] is False
    assert outcome.final_text == "STEP 1: PASS\nVERDICT: PASS"
    assert (outcome.input_tokens, outcome.output_tokens, outcome.cache_read_tokens) == (9, 3, 2)
    assert outcome.success and outcome.model == "gemini-x"


def test_gemini_exit_code_maps_to_http_status():
    _, outcome = replay("gemini-ratelimit")
    assert outcome.exit_code == 173 and outcome.api_error_status == 429
    _, outcome = replay("gemini-overloaded")
    assert outcome.api_error_status == 503
    lines = [{"type": "result", "status": "error", "error": {"type": "x", "message": "bad"}}]
    assert not feed_all(GeminiParser(), lines, 0)[1].success


def test_gemini_killed_run_error_text_skips_startup_noise():
    parser = GeminiParser()
    for line in (TRANSCRIPTS / "gemini-success.stderr.txt").read_text().splitlines():
        parser.feed_stderr(line)
    parser.feed_stderr("Invalid auth method selected.")
    outcome = parser.finish(41)
    assert not outcome.success and outcome.error_text == "Invalid auth method selected."


def test_command_parser_reads_plain_text():
    parser = PlainTextParser()
    events = []
    for i in range(250):
        events += parser.feed(f"line {i}\n")
    events += parser.feed('{"type": "result"}')
    events += parser.feed("VERDICT: PASS")
    assert all(e.kind == "text" for e in events) and len(events) == 252
    outcome = parser.finish(0)
    lines = outcome.final_text.splitlines()
    assert len(lines) == 200 and lines[-1] == "VERDICT: PASS" and lines[0] == "line 52"
    assert outcome.success and outcome.error_text == "" and outcome.session_id is None


def test_command_parser_failure_uses_stderr_then_stdout():
    parser = PlainTextParser()
    parser.feed("working")
    parser.feed_stderr("fatal: boom")
    assert parser.finish(2).error_text == "fatal: boom"
    parser = PlainTextParser()
    parser.feed("gave up")
    outcome = parser.finish(1)
    assert not outcome.success and outcome.error_text == "gave up"


def test_event_to_dict_is_a_copy():
    event = AgentEvent("tool_call", "Bash", {"id": "1"})
    as_dict = event.to_dict()
    as_dict["data"]["id"] = "2"
    assert event.data == {"id": "1"} and as_dict["kind"] == "tool_call"
