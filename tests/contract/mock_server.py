"""A scripted stand-in for the model APIs the genuine agent CLIs call, on 127.0.0.1.

It speaks just enough of three wire protocols for Claude Code, Codex and Gemini CLI to run
offline and do real work:
- Anthropic Messages: `POST /v1/messages` (streaming SSE, or one JSON message when not streaming);
- OpenAI Responses: `POST /v1/responses` (streaming SSE);
- Gemini: `POST /v1beta/models/MODEL:streamGenerateContent?alt=sse` (SSE) and `:generateContent` (JSON).

A test scripts the conversations: `server.script(api, match, turns, error=...)`. A request belongs
to the first script whose API is the request's and whose regex `match` is found in the text of the
conversation's user messages (the orchestrator's prompt, never tool output). Which turn of the
script answers is decided by the number of model turns already in the request's history, so tool
results advance the script and a CLI's own retries repeat the same turn. A script's `error`, while
it lasts (`times`, None = always), answers every request of that script instead.

Every request is recorded (`server.requests`) with the parsed body, the script and turn that
answered, the usage the server reported and the session id the CLI sent, so tests can compare
what the orchestrator recorded with what the CLI was really told.
"""
from __future__ import annotations

import itertools
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ANTHROPIC, OPENAI, GEMINI = "anthropic", "openai", "gemini"
APIS = (ANTHROPIC, OPENAI, GEMINI)

UNSCRIPTED_TEXT = "mock model server: no script matches this request"


def bash(command: str, text: str = "") -> dict:
    """A model turn that runs one shell command (optionally after a sentence of text)."""
    return {"type": "bash", "command": command, "text": text}


def say(text: str) -> dict:
    """A model turn that only answers with text (ends the conversation)."""
    return {"type": "text", "text": text}


@dataclass
class Error:
    """An API error answered instead of a turn. kind: rate_limit | overloaded | quota."""

    status: int
    kind: str = "rate_limit"
    times: int | None = None  # None: every request of the script
    retry_after: int | None = 1
    message: str | None = None


@dataclass
class Script:
    name: str
    api: str
    match: re.Pattern
    turns: list[dict]
    error: Error | None = None
    errors_served: int = 0


@dataclass
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass
class Request:
    seq: int
    api: str
    method: str
    path: str
    query: str
    headers: dict
    body: object
    script: str | None = None
    turn_index: int | None = None
    action: str = ""  # reply | error | side | unscripted | not_found
    status: int = 200
    usage: Usage | None = None
    session_id: str | None = None
    model: str | None = None
    tool_outputs: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- request reading

def _anthropic_text(content) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def _anthropic_tool_outputs(messages: list) -> list[str]:
    out = []
    for message in messages:
        for block in message.get("content") or [] if isinstance(message.get("content"), list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                out.append(_anthropic_text(block.get("content")))
    return out


def _openai_model_turns(items: list) -> int:
    model_types = {"function_call", "custom_tool_call", "local_shell_call", "reasoning"}
    turns, inside = 0, False
    for item in items:
        is_model = item.get("type") in model_types or (
            item.get("type", "message") == "message" and item.get("role") == "assistant")
        if is_model and not inside:
            turns += 1
        inside = is_model
    return turns


def _openai_user_text(items: list) -> str:
    texts = []
    for item in items:
        if item.get("type", "message") == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                texts.append(content)
            else:
                texts += [c.get("text", "") for c in content or [] if isinstance(c, dict)]
    return "\n".join(texts)


def conversation(api: str, body: dict) -> tuple[str, int, list[str]]:
    """(text of the user's messages, model turns so far, tool outputs so far) of one request."""
    if api == ANTHROPIC:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        text = "\n".join(_anthropic_text(m.get("content")) for m in messages if m.get("role") == "user")
        turns = sum(1 for m in messages if m.get("role") == "assistant")
        return text, turns, _anthropic_tool_outputs(messages)
    if api == OPENAI:
        items = [i for i in body.get("input") or [] if isinstance(i, dict)]
        outputs = [str(i.get("output", "")) for i in items if i.get("type", "").endswith("call_output")]
        return _openai_user_text(items), _openai_model_turns(items), outputs
    contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
    texts, outputs = [], []
    for content in contents:
        for part in content.get("parts") or []:
            if content.get("role") == "user" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            if isinstance(part.get("functionResponse"), dict):
                outputs.append(json.dumps(part["functionResponse"].get("response")))
    return "\n".join(texts), sum(1 for c in contents if c.get("role") == "model"), outputs


# ----------------------------------------------------------------------------- wire formats

def _sse(events: list[tuple[str | None, dict]]) -> bytes:
    chunks = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        chunks.append(f"{head}data: {json.dumps(data)}\n\n")
    return "".join(chunks).encode()


def anthropic_stream(turn: dict, model: str, usage: Usage, ids) -> bytes:
    msg_id = f"msg_{next(ids):08x}"
    events = [("message_start", {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": 1, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0}}})]
    index = 0
    if turn.get("text"):
        events += [
            ("content_block_start", {"type": "content_block_start", "index": index,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": index,
                                     "delta": {"type": "text_delta", "text": turn["text"]}}),
            ("content_block_stop", {"type": "content_block_stop", "index": index})]
        index += 1
    if turn["type"] == "bash":
        arguments = json.dumps({"command": turn["command"], "description": "Run scripted command"})
        events += [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": f"toolu_{next(ids):08x}", "name": "Bash", "input": {}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": index,
                                     "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            ("content_block_stop", {"type": "content_block_stop", "index": index})]
    stop = "tool_use" if turn["type"] == "bash" else "end_turn"
    events += [("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                  "usage": {"output_tokens": usage.output_tokens}}),
               ("message_stop", {"type": "message_stop"})]
    return _sse(events)


def anthropic_message(text: str, model: str, usage: Usage, ids) -> dict:
    return {"id": f"msg_{next(ids):08x}", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}}


def openai_stream(turn: dict, model: str, usage: Usage, ids) -> bytes:
    resp_id = f"resp_{next(ids):08x}"
    base = {"id": resp_id, "object": "response", "created_at": int(time.time()), "model": model}
    events = [("response.created", {"type": "response.created", "response": {**base, "status": "in_progress",
                                                                            "output": []}})]
    output = []
    if turn.get("text"):
        item_id = f"msg_{next(ids):08x}"
        index = len(output)
        done = {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": turn["text"], "annotations": []}]}
        events += [
            ("response.output_item.added", {"type": "response.output_item.added", "output_index": index, "item": {
                "type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []}}),
            ("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item_id,
                                            "output_index": index, "content_index": 0, "delta": turn["text"]}),
            ("response.output_item.done", {"type": "response.output_item.done", "output_index": index,
                                           "item": done})]
        output.append(done)
    if turn["type"] == "bash":
        index = len(output)
        item = {"type": "function_call", "id": f"fc_{next(ids):08x}", "call_id": f"call_{next(ids):08x}",
                "name": "exec_command", "arguments": json.dumps({"cmd": turn["command"]}), "status": "completed"}
        events += [
            ("response.output_item.added", {"type": "response.output_item.added", "output_index": index,
                                            "item": {**item, "arguments": "", "status": "in_progress"}}),
            ("response.output_item.done", {"type": "response.output_item.done", "output_index": index,
                                           "item": item})]
        output.append(item)
    events.append(("response.completed", {"type": "response.completed", "response": {
        **base, "status": "completed", "output": output,
        "usage": {"input_tokens": usage.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": usage.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": usage.input_tokens + usage.output_tokens}}}))
    return _sse(events)


def gemini_response(turn: dict, model: str, usage: Usage) -> dict:
    parts = []
    if turn.get("text"):
        parts.append({"text": turn["text"]})
    if turn["type"] == "bash":
        parts.append({"functionCall": {"name": "run_shell_command",
                                       "args": {"command": turn["command"], "description": "Run scripted command"}}})
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": usage.input_tokens, "candidatesTokenCount": usage.output_tokens,
                              "totalTokenCount": usage.input_tokens + usage.output_tokens},
            "modelVersion": model}


def error_body(api: str, error: Error) -> dict:
    if api == ANTHROPIC:
        kind = "overloaded_error" if error.kind == "overloaded" else "rate_limit_error"
        message = error.message or ("Overloaded" if error.kind == "overloaded" else
                                    "This request would exceed the rate limit for your organization (mock-org).")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if api == OPENAI:
        if error.kind == "quota":
            return {"error": {"type": "insufficient_quota", "code": "insufficient_quota", "param": None,
                              "message": error.message or "You exceeded your current quota."}}
        if error.kind == "overloaded":
            return {"error": {"type": "server_error", "code": None, "param": None,
                              "message": error.message or "The server had an error while processing your request."}}
        return {"error": {"type": "requests", "code": "rate_limit_exceeded", "param": None,
                          "message": error.message or "Rate limit reached for mock-model. Please try again in 1s."}}
    if error.kind == "overloaded":
        return {"error": {"code": error.status, "message": error.message or
                          "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}
    return {"error": {"code": error.status, "message": error.message or
                      "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}


# ----------------------------------------------------------------------------- the server

class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return  # a CLI that gives up on a connection is not a server error
        super().handle_error(request, client_address)


def _api_of(path: str) -> str | None:
    if path.endswith("/messages"):
        return ANTHROPIC
    if path.endswith("/responses"):
        return OPENAI
    if ":streamGenerateContent" in path or ":generateContent" in path:
        return GEMINI
    return None


class MockModelServer:
    """`with MockModelServer() as server:` serves on 127.0.0.1 at a free port (`server.url`)."""

    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._httpd = _HTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="mock-model-server", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MockModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- scripting
    def script(self, api: str, match: str, turns: list[dict] = (), *, error: Error | None = None,
               name: str | None = None) -> Script:
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, not {api!r}")
        if not turns and error is None:
            raise ValueError("a script needs turns or an error")
        script = Script(name or f"{api}:{match}", api, re.compile(match, re.M), list(turns), error)
        with self._lock:
            self.scripts.append(script)
        return script

    def of(self, script: str | Script, *, action: str | None = None) -> list[Request]:
        """The recorded requests answered by a script (by name), optionally of one action."""
        name = script.name if isinstance(script, Script) else script
        with self._lock:
            return [r for r in self.requests if r.script == name and (action is None or r.action == action)]

    def unscripted(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.action in ("unscripted", "not_found")]

    # -- answering
    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(b"")

            def do_CONNECT(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(self.rfile.read(length) if length else b"")

            def _answer(self, raw: bytes) -> None:
                parts = urlsplit(self.path)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                path = self.path if self.command == "CONNECT" else parts.path
                status, headers, payload = server._respond(self.command, path, parts.query,
                                                           {k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def _respond(self, method: str, path: str, query: str, headers: dict, body) -> tuple[int, dict, bytes]:
        api = _api_of(path) if method == "POST" and isinstance(body, dict) else None
        with self._lock:
            request = Request(next(self._seq), api or "", method, path, query, headers, body)
            self.requests.append(request)
            if api is None:
                request.action, request.status = "not_found", 404
                return 404, {"Content-Type": "application/json"}, json.dumps(
                    {"error": {"message": f"mock model server: no route for {method} {path}"}}).encode()
            return self._answer_api(api, request, body, headers)

    def _answer_api(self, api: str, request: Request, body: dict, headers: dict) -> tuple[int, dict, bytes]:
        model = body.get("model") or (request.path.split("/models/")[-1].split(":")[0] if api == GEMINI else "mock")
        request.model = model
        request.session_id = headers.get("x-claude-code-session-id") or headers.get("session-id")
        streaming = body.get("stream") is True or ":streamGenerateContent" in request.path
        text, turn_index, outputs = conversation(api, body)
        request.turn_index, request.tool_outputs = turn_index, outputs
        script = next((s for s in self.scripts if s.api == api and s.match.search(text)), None)
        usage = Usage(input_tokens=1000 + 100 * request.seq, output_tokens=10 + request.seq)
        if script is None:
            # Side requests (titles, routing, summaries) and anything a test did not script get
            # a short text answer so the CLI ends quickly; tests assert on `unscripted()`.
            request.action = "side" if not streaming else "unscripted"
            turn = say(UNSCRIPTED_TEXT if streaming else "OK")
        else:
            request.script = script.name
            error = script.error
            if error is not None and (error.times is None or script.errors_served < error.times):
                script.errors_served += 1
                request.action, request.status = "error", error.status
                extra = {"retry-after": str(error.retry_after)} if error.retry_after is not None else {}
                return error.status, {"Content-Type": "application/json", **extra}, json.dumps(
                    error_body(api, error)).encode()
            request.action = "reply"
            turn = script.turns[min(turn_index, len(script.turns) - 1)]
        request.usage = usage
        if api == ANTHROPIC:
            if streaming:
                return 200, {"Content-Type": "text/event-stream"}, anthropic_stream(turn, model, usage, self._ids)
            return 200, {"Content-Type": "application/json"}, json.dumps(
                anthropic_message(turn.get("text") or "OK", model, usage, self._ids)).encode()
        if api == OPENAI:
            return 200, {"Content-Type": "text/event-stream"}, openai_stream(turn, model, usage, self._ids)
        response = gemini_response(turn, model, usage)
        if streaming:
            return 200, {"Content-Type": "text/event-stream"}, _sse([(None, response)])
        return 200, {"Content-Type": "application/json"}, json.dumps(response).encode()
