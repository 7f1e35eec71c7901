"""The nested parts of orchestrator.config.json — tracks, criticalPatterns, agents and
notify.webhooks — parsed and checked, every problem collected in one context."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .values import found, ignored_key, parse_argv, show, unknown_key

BUILTIN_AGENTS = ("claude", "codex", "gemini")
AGENT_KINDS = ("claude", "codex", "gemini", "command")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}\Z")
NAME_RULE = "use letters, digits, '.', '_', '-' (max 40), starting with a letter or digit"
MAX_TRACKS = 32
TRACK_COLORS = ("#3b82f6", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#ec4899", "#14b8a6", "#f97316")
NOTIFY_EVENTS = ("feature.passed", "feature.failed", "track.paused", "budget.warning", "budget.reached",
                 "rate_limit.waiting", "conflict.predicted", "run.finished")
WEBHOOK_FIELDS = ("url", "events", "headers")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
MISSING = object()
TRACK_FIELDS = ("name", "categories", "color", "isDefault")
PATTERN_FIELDS = ("pattern", "label")
AGENT_FIELDS = ("kind", "command", "env", "model", "args")


@dataclass(frozen=True)
class Track:
    name: str
    categories: tuple[str, ...]
    color: str
    is_default: bool


@dataclass(frozen=True)
class CriticalPattern:
    pattern: str
    label: str
    regex: re.Pattern


@dataclass(frozen=True)
class AgentDef:
    name: str
    kind: str
    command: tuple[str, ...] | None = None
    env: dict = field(default_factory=dict)
    model: str | None = None
    args: tuple[str, ...] = ()


class Ctx:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def bad(self, key: str, text: str) -> object:
        self.problems.append(f"{key}: {text}")
        return MISSING

    def expected(self, key: str, what: str, value: Any) -> object:
        return self.bad(key, f"expected {what}, found {found(value)}")

    def unknown_fields(self, path: str, obj: dict, known: tuple[str, ...]) -> None:
        for k in obj:
            if k not in known and not ignored_key(k):
                self.warnings.append(unknown_key(f"{path}.{k}", [f"{path}.{f}" for f in known], prefix=f"{path}."))


def parse_strings(ctx: Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, list):
        return ctx.expected(key, "a list of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return ctx.bad(f"{key}[{i}]", f"expected a string, found {found(item)}")
    return list(value)


def _parse_track(ctx: Ctx, key: str, item: Any, index: int) -> dict | None:
    if not isinstance(item, dict):
        ctx.expected(key, "an object {\"name\": ..., \"categories\": [...]}", item)
        return None
    ctx.unknown_fields(key, item, TRACK_FIELDS)
    ok = True
    name = item.get("name", MISSING)
    if name is MISSING:
        ctx.bad(f"{key}.name", f"is missing — every track needs a name ({NAME_RULE})")
        ok = False
    elif not isinstance(name, str) or not NAME_RE.match(name):
        ctx.bad(f"{key}.name", f"{show(name)} is not allowed — {NAME_RULE}")
        ok = False
    cats = parse_strings(ctx, f"{key}.categories", item.get("categories", []))
    color = item.get("color", TRACK_COLORS[index % len(TRACK_COLORS)])
    if not isinstance(color, str):
        ctx.expected(f"{key}.color", "a CSS color string such as \"#3b82f6\"", color)
        ok = False
    is_default = item.get("isDefault", False)
    if not isinstance(is_default, bool):
        ctx.expected(f"{key}.isDefault", "true or false", is_default)
        ok = False
    if not ok or cats is MISSING:
        return None
    return {"name": name, "categories": cats, "color": color, "isDefault": is_default}


def parse_tracks(ctx: Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, list):
        return ctx.expected(key, "a list of tracks such as [{\"name\": \"core\", \"categories\": []}]", value)
    if not 1 <= len(value) <= MAX_TRACKS:
        return ctx.bad(key, f"has {len(value)} tracks — expected 1 to {MAX_TRACKS}")
    tracks = [_parse_track(ctx, f"{key}[{i}]", item, i) for i, item in enumerate(value)]
    seen: dict[str, int] = {}
    for i, t in enumerate(tracks):
        if t is None:
            continue
        low = t["name"].lower()
        if low in seen:
            ctx.bad(f"{key}[{i}].name", f"{show(t['name'])} is already used by {key}[{seen[low]}] — track names must be unique (ignoring case)")
        else:
            seen[low] = i
    defaults = [i for i, t in enumerate(tracks) if t and t["isDefault"]]
    if len(defaults) > 1:
        ctx.bad(key, f"{len(defaults)} tracks have isDefault true ({', '.join(f'{key}[{i}]' for i in defaults)}) — mark at most one")
    if any(t is None for t in tracks):
        return MISSING
    if not defaults:
        tracks[0]["isDefault"] = True
    owner: dict[str, str] = {}
    for t in tracks:
        for cat in t["categories"]:
            if cat in owner:
                ctx.warnings.append(f"category {show(cat)} is listed by tracks {owner[cat]!r} and {t['name']!r}; features of it go to {owner[cat]!r}")
            else:
                owner[cat] = t["name"]
    return tracks


def parse_patterns(ctx: Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, list):
        return ctx.expected(key, "a list of {\"pattern\": ..., \"label\": ...}", value)
    out = []
    for i, item in enumerate(value):
        k = f"{key}[{i}]"
        if isinstance(item, str):
            item = {"pattern": item}
        if not isinstance(item, dict):
            ctx.expected(k, "an object {\"pattern\": \"regex\", \"label\": \"text\"}", item)
            continue
        ctx.unknown_fields(k, item, PATTERN_FIELDS)
        pattern, label = item.get("pattern", MISSING), item.get("label", item.get("pattern"))
        if pattern is MISSING:
            ctx.bad(f"{k}.pattern", "is missing — give a regular expression")
            continue
        if not isinstance(pattern, str) or not pattern:
            ctx.expected(f"{k}.pattern", "a non-empty regular expression string", pattern)
            continue
        if not isinstance(label, str):
            ctx.expected(f"{k}.label", "a string", label)
            continue
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except re.error as e:
            ctx.bad(f"{k}.pattern", f"{show(pattern)} is not a valid regular expression ({e})")
            continue
        out.append(CriticalPattern(pattern, label, regex))
    return out if len(out) == len(value) else MISSING


def _parse_agent(ctx: Ctx, key: str, name: str, item: Any) -> AgentDef | None:
    if not NAME_RE.match(name):
        ctx.bad(key, f"agent name {show(name)} is not allowed — {NAME_RULE}")
        return None
    if not isinstance(item, dict):
        ctx.expected(key, "an object {\"kind\", \"command\", \"env\", \"model\", \"args\"}", item)
        return None
    ctx.unknown_fields(key, item, AGENT_FIELDS)
    ok = True
    kind = item.get("kind", name if name in BUILTIN_AGENTS else "command")
    if kind not in AGENT_KINDS:
        ctx.bad(f"{key}.kind", f"{show(kind)} is not one of {', '.join(AGENT_KINDS)}")
        ok = False
    command = None
    if item.get("command") is not None:
        command, problem = parse_argv(item["command"])
        if problem:
            ctx.bad(f"{key}.command", problem)
            ok = False
        elif kind == "command" and not any("{prompt}" in a or "{prompt_file}" in a for a in command):
            ctx.bad(f"{key}.command", f"{show(command)} must contain {{prompt}} or {{prompt_file}} where the prompt goes, e.g. [\"my-agent\", \"--message\", \"{{prompt}}\"]")
            ok = False
    elif kind == "command":
        ctx.bad(f"{key}.command", "is missing — a command agent needs an argv template such as [\"my-agent\", \"{prompt}\"]")
        ok = False
    env = item.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        ctx.expected(f"{key}.env", "an object of string values {\"NAME\": \"value\"}", env)
        ok = False
    model = item.get("model")
    if model is not None and not isinstance(model, str):
        ctx.expected(f"{key}.model", "a string or null", model)
        ok = False
    args = parse_strings(ctx, f"{key}.args", item.get("args", []))
    if not ok or args is MISSING:
        return None
    return AgentDef(name, kind, tuple(command) if command else None, dict(env), model, tuple(args))


def parse_agents(ctx: Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        return ctx.expected(key, "an object {\"name\": {\"kind\": ..., \"command\": [...]}}", value)
    out = {}
    for name, item in value.items():
        agent = _parse_agent(ctx, f"{key}.{name}", name, item)
        if agent is not None:
            out[name] = agent
    return out if len(out) == len(value) else MISSING


def _parse_webhook(ctx: Ctx, key: str, item: Any) -> dict | None:
    if not isinstance(item, dict):
        ctx.expected(key, "an object {\"url\": \"https://...\", \"events\": [...], \"headers\": {...}}", item)
        return None
    ctx.unknown_fields(key, item, WEBHOOK_FIELDS)
    ok = True
    url = item.get("url", MISSING)
    if url is MISSING:
        ctx.bad(f"{key}.url", "is missing — give the http(s) URL to POST to")
        ok = False
    elif not isinstance(url, str) or not _webhook_url_ok(url):
        ctx.bad(f"{key}.url", f"expected an http(s) URL such as \"https://example.com/hook\", found {found(url)}")
        ok = False
    events = item.get("events", ["*"])
    if isinstance(events, str):
        events = [events]
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        ctx.expected(f"{key}.events", "a non-empty list of notification names (or [\"*\"])", item.get("events"))
        ok = False
    else:
        for i, name in enumerate(events):
            if name != "*" and name not in NOTIFY_EVENTS:
                guess = difflib.get_close_matches(name, NOTIFY_EVENTS, n=1)
                hint = f" — did you mean {guess[0]!r}?" if guess else f" — use \"*\" or one of {', '.join(NOTIFY_EVENTS)}"
                ctx.bad(f"{key}.events[{i}]", f"{show(name)} is not a notification name{hint}")
                ok = False
    headers = item.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        ctx.expected(f"{key}.headers", "an object of string values {\"Authorization\": \"Bearer ...\"}", headers)
        ok = False
    else:
        for name, v in headers.items():
            if not _HEADER_NAME_RE.match(name):
                ctx.bad(f"{key}.headers", f"{show(name)} is not a valid HTTP header name")
                ok = False
            elif any(c in v for c in "\r\n\0"):
                ctx.bad(f"{key}.headers.{name}", "a header value must not contain line breaks")
                ok = False
    if not ok:
        return None
    return {"url": url, "events": list(dict.fromkeys(events)), "headers": dict(headers)}


def _webhook_url_ok(url: str) -> bool:
    if any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return False
    return port_ok and parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_webhooks(ctx: Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, list):
        return ctx.expected(key, "a list of webhooks [{\"url\": \"https://...\"}]", value)
    hooks = [_parse_webhook(ctx, f"{key}[{i}]", item) for i, item in enumerate(value)]
    return hooks if all(h is not None for h in hooks) else MISSING
