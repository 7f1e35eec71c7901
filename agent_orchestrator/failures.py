"""Why did an agent run fail? One category per failed attempt (SPEC §8), pure and table-driven.

Structured signals come first (how the run ended, the final result's subtype, HTTP status, error
kind, Gemini's exit codes), then patterns over the agent's final error text and its stderr only —
never over tool output it printed along the way (that is not part of RunOutcome.error_text)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from .agents.base import RunOutcome
from .resets import parse_reset

RATE_LIMIT = "rate_limit"
ENVIRONMENT = "environment"
TEST_ONLY = "test_only"
IMPLEMENTATION = "implementation"

SNIPPET_CHARS = 300


@dataclass
class Failure:
    category: str
    reason: str
    resets_at: float | None = None
    retryable: bool = True


@dataclass(frozen=True)
class Rule:
    category: str
    reason: str
    pattern: re.Pattern | None = None
    retryable: bool = True


def _rx(*alternatives: str) -> re.Pattern:
    return re.compile("|".join(alternatives), re.IGNORECASE | re.MULTILINE)


HTTP_STATUS_RULES: dict[int, Rule] = {
    429: Rule(RATE_LIMIT, "rate limited (HTTP 429)"),
    529: Rule(RATE_LIMIT, "API overloaded (HTTP 529)"),
    503: Rule(RATE_LIMIT, "service unavailable (HTTP 503)"),
    500: Rule(RATE_LIMIT, "API server error (HTTP 500)"),
    502: Rule(RATE_LIMIT, "API server error (HTTP 502)"),
    504: Rule(RATE_LIMIT, "API server error (HTTP 504)"),
    401: Rule(ENVIRONMENT, "authentication failed (HTTP 401): check the agent's API key or login", retryable=False),
    403: Rule(ENVIRONMENT, "access denied by the API (HTTP 403): check the agent's account", retryable=False),
}

ERROR_KIND_RULES: dict[str, Rule] = {
    "rate_limit": Rule(RATE_LIMIT, "rate limited"),
    "rate_limit_error": Rule(RATE_LIMIT, "rate limited"),
    "usage_limit_reached": Rule(RATE_LIMIT, "usage limit reached"),
    "overloaded_error": Rule(RATE_LIMIT, "API overloaded"),
    "server_error": Rule(RATE_LIMIT, "API server error"),
    "authentication_failed": Rule(ENVIRONMENT, "authentication failed: check the agent's API key or login",
                                  retryable=False),
    "authentication_error": Rule(ENVIRONMENT, "authentication failed: check the agent's API key or login",
                                 retryable=False),
    "billing_error": Rule(ENVIRONMENT, "billing problem with the agent's account", retryable=False),
}

SUBTYPE_RULES: dict[str, Rule] = {
    "error_max_turns": Rule(IMPLEMENTATION, "reached the max turns limit"),
    "error_max_budget_usd": Rule(IMPLEMENTATION, "reached the max budget (USD)"),
    "error_during_execution": Rule(IMPLEMENTATION, "the agent failed during execution"),
}

GEMINI_EXIT_RULES: dict[int, Rule] = {
    173: Rule(RATE_LIMIT, "rate limited / quota exhausted (gemini exit 173 = HTTP 429)"),
    247: Rule(RATE_LIMIT, "model overloaded (gemini exit 247 = HTTP 503)"),
    244: Rule(RATE_LIMIT, "API server error (gemini exit 244 = HTTP 500)"),
    41: Rule(ENVIRONMENT, "gemini authentication failed (exit 41): check GEMINI_API_KEY and "
                          "security.auth.selectedType", retryable=False),
    44: Rule(ENVIRONMENT, "gemini sandbox error (exit 44)"),
    52: Rule(ENVIRONMENT, "gemini configuration error (exit 52)", retryable=False),
    55: Rule(ENVIRONMENT, "gemini refused an untrusted folder (exit 55)", retryable=False),
    42: Rule(IMPLEMENTATION, "gemini rejected its input (exit 42)"),
    53: Rule(IMPLEMENTATION, "gemini reached its turn limit (exit 53)"),
    54: Rule(IMPLEMENTATION, "gemini tool error (exit 54)"),
    130: Rule(IMPLEMENTATION, "gemini was interrupted (exit 130)"),
}

RATE_LIMIT_TEXT_RULES = (
    Rule(RATE_LIMIT, "usage limit reached", _rx(r"You[’']ve hit your [\w -]*limit", r"usage limit reached",
                                                r"\busage limit\b")),
    Rule(RATE_LIMIT, "quota exceeded", _rx(r"Quota exceeded", r"insufficient_quota", r"exceeded your current quota",
                                           r"Resource has been exhausted", r"RESOURCE_EXHAUSTED")),
    Rule(RATE_LIMIT, "rate limited", _rx(r"last status:\s*429", r"\brate[ _-]?limit", r"Too Many Requests",
                                         r"Request rejected \(429\)")),
    Rule(RATE_LIMIT, "API overloaded or unavailable", _rx(r"high demand", r"\boverloaded\b",
                                                          r"last status:\s*5\d\d", r"\b529\b.*Overloaded")),
)

ENVIRONMENT_TEXT_RULES = (
    Rule(ENVIRONMENT, "the agent CLI is not logged in: run its login or set its API key",
         _rx(r"Not logged in", r"Please run /login", r"Invalid API key", r"API key not valid",
             r"Invalid auth method", r"authentication_error"), retryable=False),
    Rule(ENVIRONMENT, "the agent CLI rejected its arguments (version mismatch?)",
         _rx(r"unexpected argument '", r"unknown option '", r"unrecognized arguments?:",
             r"requires --verbose"), retryable=False),
    Rule(ENVIRONMENT, "Docker is not running", _rx(r"Cannot connect to the Docker daemon",
                                                  r"Is the docker daemon running")),
    Rule(ENVIRONMENT, "a service refused the connection (ECONNREFUSED)", _rx(r"\bECONNREFUSED\b", r"Connection refused")),
    Rule(ENVIRONMENT, "the disk is full", _rx(r"\bENOSPC\b", r"No space left on device")),
    Rule(ENVIRONMENT, "a read-only file system blocked the agent", _rx(r"Read-only file system", r"\bEROFS\b")),
    Rule(ENVIRONMENT, "a port is already in use", _rx(r"\bEADDRINUSE\b", r"address already in use")),
    Rule(ENVIRONMENT, "the network is unreachable", _rx(r"\bENOTFOUND\b", r"\bEAI_AGAIN\b", r"Could not resolve host",
                                                       r"Network is unreachable", r"\bENETUNREACH\b")),
)

TEST_ONLY_TEXT_RULES = (
    Rule(TEST_ONLY, "tests failed", _rx(r"AssertionError", r"assertion failed", r"\bFAILED\s+\S+::",
                                        r"\b\d+\s+tests?\s+failed\b", r"\b\d+ failed(?:,| and) \d+ passed",
                                        r"\b\d+ passed, \d+ failed", r"={3,} .*\bfailed\b", r"Tests?:\s+\d+\s+failed",
                                        r"expect\(.*\)\.to", r"\bExpected\b.*\bReceived\b")),
    Rule(TEST_ONLY, "lint failed", _rx(r"\beslint\b", r"\bruff\b", r"\bflake8\b", r"\bphpstan\b", r"\bclippy\b",
                                       r"\blint(?:ing|er)?\b.*(?:error|fail)")),
    Rule(TEST_ONLY, "type check failed", _rx(r"error TS\d{3,5}", r"\berror: .*\[[a-z-]+\]$", r"mypy",
                                             r"type[- ]?check(?:ing)? failed", r"pyright", r"Found \d+ errors?")),
)


def _snippet(text: str, pattern: re.Pattern | None = None) -> str:
    """The first line of `text` (the first line `pattern` matches, when given), shortened."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if pattern is not None:
        lines = [line for line in lines if pattern.search(line)] or lines
    first = lines[0] if lines else ""
    return first if len(first) <= SNIPPET_CHARS else first[:SNIPPET_CHARS] + "…"


def _with_snippet(reason: str, text: str, pattern: re.Pattern | None = None) -> str:
    snippet = _snippet(text, pattern)
    return f"{reason}: {snippet}" if snippet and snippet not in reason else reason


def _minutes(value: float | None) -> str:
    return f"{value:g} min" if value is not None else "the configured limit"


def _by_exit_reason(exit_reason: str, timeout_minutes: float | None, stall_minutes: float | None) -> Failure | None:
    if exit_reason == "timeout":
        return Failure(IMPLEMENTATION, f"stopped: the agent ran longer than {_minutes(timeout_minutes)}")
    if exit_reason == "stalled":
        return Failure(IMPLEMENTATION, f"stopped: the agent printed no output for {_minutes(stall_minutes)}")
    if exit_reason == "stopped":
        return Failure(IMPLEMENTATION, "stopped by the orchestrator before the agent finished")
    return None


def _structured(outcome: RunOutcome) -> Rule | None:
    if outcome.api_error_status in HTTP_STATUS_RULES:
        return HTTP_STATUS_RULES[outcome.api_error_status]
    if outcome.error_kind in ERROR_KIND_RULES:
        return ERROR_KIND_RULES[outcome.error_kind]
    if outcome.subtype in SUBTYPE_RULES:
        return SUBTYPE_RULES[outcome.subtype]
    if outcome.agent == "gemini" and outcome.exit_code in GEMINI_EXIT_RULES:
        return GEMINI_EXIT_RULES[outcome.exit_code]
    return None


def _first_match(rules: Iterable[Rule], text: str) -> Rule | None:
    return next((rule for rule in rules if rule.pattern is not None and rule.pattern.search(text)), None)


def _critical(critical_patterns: Iterable[object], text: str) -> Rule | None:
    for item in critical_patterns:
        pattern = getattr(item, "regex", None) or getattr(item, "pattern", item)
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(str(pattern))
        if regex.search(text):
            label = getattr(item, "label", None) or regex.pattern
            return Rule(ENVIRONMENT, f"critical pattern matched: {label}", regex)
    return None


def _fallback_reason(outcome: RunOutcome) -> str:
    if not outcome.saw_result and outcome.exit_code is None:
        return "the agent was killed before it finished (no final result)"
    if not outcome.saw_result:
        return f"the agent exited with code {outcome.exit_code} without a final result"
    if outcome.error_text.strip():
        return "the agent reported an error"
    if outcome.exit_code not in (0, None):
        return f"the agent exited with code {outcome.exit_code}"
    return "the agent did not finish successfully"


def _resets_at(outcome: RunOutcome, text: str, now: float) -> float | None:
    if outcome.resets_at is not None and outcome.resets_at > now:
        return outcome.resets_at
    parsed = parse_reset(text, now=datetime.fromtimestamp(now, timezone.utc))
    if parsed is not None and parsed.timestamp() > now:
        return parsed.timestamp()
    return None


def classify(outcome: RunOutcome, *, stderr_tail: str, exit_reason: str = "exited", critical_patterns=(),
             now: float, timeout_minutes: float | None = None, stall_minutes: float | None = None) -> Failure | None:
    """The failure category of one run, or None when it succeeded. `now` is epoch seconds."""
    by_exit = _by_exit_reason(exit_reason, timeout_minutes, stall_minutes)
    if by_exit is not None:
        return by_exit
    if outcome.success:
        return None
    text = "\n".join(t for t in (outcome.error_text, stderr_tail) if t and t.strip())
    rule = (_structured(outcome)
            or _first_match(RATE_LIMIT_TEXT_RULES, text)
            or _critical(critical_patterns, text)
            or _first_match(ENVIRONMENT_TEXT_RULES, text)
            or _first_match(TEST_ONLY_TEXT_RULES, text))
    if rule is None:
        return Failure(IMPLEMENTATION, _with_snippet(_fallback_reason(outcome), outcome.error_text or stderr_tail))
    reason = _with_snippet(rule.reason, text if rule.pattern is not None else outcome.error_text or stderr_tail,
                           rule.pattern)
    resets_at = _resets_at(outcome, text, now) if rule.category == RATE_LIMIT else None
    return Failure(rule.category, reason, resets_at=resets_at, retryable=rule.retryable)
