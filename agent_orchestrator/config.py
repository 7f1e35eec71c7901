"""orchestrator.config.json: one settings registry drives defaults, validation, /api/config and the README."""
from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from .errors import ConfigError

CONFIG_FILE = "orchestrator.config.json"
BUILTIN_AGENTS = ("claude", "codex", "gemini")
AGENT_KINDS = ("claude", "codex", "gemini", "command")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}\Z")
NAME_RULE = "use letters, digits, '.', '_', '-' (max 40), starting with a letter or digit"
MAX_TRACKS = 32
TRACK_COLORS = ("#3b82f6", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#ec4899", "#14b8a6", "#f97316")
PATH_KEYS = ("featuresFile", "progressFile", "instructionsFile")
MASK = "***"
NOTIFY_EVENTS = ("feature.passed", "feature.failed", "track.paused", "budget.warning", "budget.reached",
                 "rate_limit.waiting", "conflict.predicted", "run.finished")
WEBHOOK_FIELDS = ("url", "events", "headers")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
ARGV_HINT = 'must be an argv list, e.g. ["npm", "test"] — shell strings are not run'
_MISSING = object()


@dataclass(frozen=True)
class Setting:
    key: str
    type: str
    default: Any
    help: str
    secret: bool = False
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None


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


# ---------------------------------------------------------------- pure checks

def branch_name_problem(name: str) -> str | None:
    """Why `name` is not a valid branch name (the rules of `git check-ref-format --branch`), or None."""
    if not name:
        return "is empty"
    if name in ("@", "HEAD"):
        return f"cannot be {name!r}"
    if name.startswith("-"):
        return "cannot start with '-'"
    if ".." in name:
        return "cannot contain '..'"
    if "@{" in name:
        return "cannot contain '@{'"
    bad = sorted({c for c in name if c in " ~^:?*[\\" or ord(c) < 32 or ord(c) == 127})
    if bad:
        shown = ", ".join("space" if c == " " else repr(c) for c in bad)
        return f"cannot contain {shown}"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "cannot start or end with '/' or contain '//'"
    if name.endswith("."):
        return "cannot end with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return "no path component may start with '.'"
        if part.endswith(".lock"):
            return "no path component may end with '.lock'"
    return None


def valid_branch_name(name: str) -> bool:
    return isinstance(name, str) and branch_name_problem(name) is None


def show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def found(value: Any) -> str:
    return f"{show(value)} ({kind_of(value)})"


def parse_argv(value: Any) -> tuple[list[str] | None, str | None]:
    """One command: an argv list of non-empty strings, or a single word. Returns (argv, problem)."""
    if isinstance(value, str):
        if not value.strip():
            return None, "is an empty command"
        if any(c.isspace() for c in value):
            return None, f"{show(value)} {ARGV_HINT}"
        return [value], None
    if not isinstance(value, list):
        return None, f"expected an argv list of strings, found {found(value)}"
    if not value:
        return None, "is an empty command"
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            return None, f"element {i} must be a non-empty string, found {found(item)}"
    if len(value) == 1 and any(c.isspace() for c in value[0]):
        return None, f"{show(value)} {ARGV_HINT}"
    return list(value), None


def parse_argv_list(value: Any) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Several commands: a list of argv lists, or one argv list (flat list of strings), or one word.
    Returns (commands, problems); a problem is (suffix naming the element, e.g. "[1]" or "", text)."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        argv, problem = parse_argv(value)
        return ([argv] if argv else []), ([("", problem)] if problem else [])
    if not isinstance(value, list):
        return [], [("", f"expected a list of argv lists such as [[\"npm\", \"test\"]], found {found(value)}")]
    commands: list[list[str]] = []
    problems: list[tuple[str, str]] = []
    for i, item in enumerate(value):
        argv, problem = parse_argv(item)
        if problem:
            problems.append((f"[{i}]", problem))
        else:
            commands.append(argv)
    return commands, problems


def suggest(name: str, candidates: list[str]) -> str | None:
    """The closest known key to `name` (difflib), comparing whole dotted paths and last components."""
    best, best_score = None, 0.0
    leaf = name.rsplit(".", 1)[-1].lower()
    for cand in candidates:
        cand_leaf = cand.rsplit(".", 1)[-1].lower()
        score = max(difflib.SequenceMatcher(None, name.lower(), cand.lower()).ratio(),
                    0.95 * difflib.SequenceMatcher(None, leaf, cand_leaf).ratio())
        if len(leaf) >= 4 and cand_leaf.startswith(leaf):
            score = max(score, 0.9)
        if score > best_score:
            best, best_score = cand, score
    return best if best_score >= 0.6 else None


def _unknown_key(path: str, candidates: list[str], prefix: str = "") -> str:
    guess = suggest(path[len(prefix):], [c[len(prefix):] for c in candidates])
    hint = f" — did you mean '{prefix}{guess}'?" if guess else " — it is ignored"
    return f"unknown key '{path}'{hint}"


def _ignored_key(key: str) -> bool:
    return key.startswith(("$", "_"))


# ---------------------------------------------------------------- registry

def _at_least(n: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= n else f"must be >= {n}, found {show(v)}"


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _branch_check(v: str) -> str | None:
    problem = branch_name_problem(v)
    return None if problem is None else f"{show(v)} is not a valid git branch name ({problem}) — e.g. \"ai-develop\""


def _url_check(v: str) -> str | None:
    return None if re.match(r"https?://\S+\Z", v) else f"expected an http(s) URL such as \"http://localhost:3000\", found {show(v)}"


def _remote_check(v: str) -> str | None:
    if not v or v.startswith("-") or any(c.isspace() for c in v):
        return f"expected a git remote name such as \"origin\", found {show(v)}"
    return None


def _notify_command_check(v: list[str]) -> str | None:
    for arg in v:
        if any(c in arg for c in "\r\n\0"):
            return f"{show(arg)}: an argument must not contain line breaks or NUL"
    return None


def _relative_paths(v: list[str]) -> str | None:
    for p in v:
        if not p or p.startswith("/") or ".." in Path(p).parts:
            return f"{show(p)} must be a path relative to the project root, inside it"
    return None


S = Setting
SETTINGS: list[Setting] = [
    S("projectName", "string", None, "Project name shown in the dashboard. Default: the project directory's name.", check=_non_empty),
    S("baseBranch", "string", "ai-develop", "Branch features are merged into (created from the current HEAD if missing). Must be a valid git branch name.", check=_branch_check),
    S("featuresFile", "path", "features.json", "The backlog, relative to the project root."),
    S("progressFile", "path", "orchestrator-progress.txt", "Append-only log of feature outcomes, relative to the project root."),
    S("instructionsFile", "path", "ORCHESTRATOR.md", "Session protocol every agent is told to follow."),
    S("appUrl", "string", "http://localhost:3000", "URL of the running app, given to the verification agent.", check=_url_check),
    S("tracks", "tracks", [{"name": "core", "categories": [], "color": "#3b82f6", "isDefault": True}],
      "Parallel tracks (1 to 32): {name, categories, color, isDefault}. A feature goes to the track listing its category, else to the default track."),
    S("worktree.symlinkDirs", "strings", [], "Directories of the project root symlinked into every worktree (e.g. node_modules); never committed.", check=_relative_paths),
    S("worktree.copyFiles", "strings", [], "Files of the project root copied into every worktree (e.g. .env); never committed.", check=_relative_paths),
    S("worktree.dockerService", "string?", None, "Docker Compose / Sail service the app runs in; enables the worktree wrapper script."),
    S("worktree.dockerWorkDir", "string?", None, "Working directory of the project inside that container."),
    S("worktree.dockerComposeFile", "string?", None, "Compose file for the wrapper script (null: the one found in the project: compose.yaml, docker-compose.yml, ...)."),
    S("worktree.dockerUser", "string?", None, "User to run commands as inside the container (`-u`); Sail projects use `sail`."),
    S("agent.preferred", "string", "claude", "Agent that runs first: claude, codex, gemini or a name defined under `agents`."),
    S("agent.fallbackAgents", "strings", [], "Agents tried in order when the current one is rate limited."),
    S("agent.maxTurnsImplementation", "integer", 40, "Max agent turns for implement and fix sessions.", check=_at_least(1)),
    S("agent.maxTurnsVerification", "integer", 20, "Max agent turns for verification sessions.", check=_at_least(1)),
    S("agent.allowedToolsVerification", "string", "Bash,Read,Write", "Tools the verification agent may use (Claude `--allowedTools`)."),
    S("agent.maxRetries", "integer", 2, "Retries of a feature after implementation/test failures before it is marked failed.", check=_at_least(0)),
    S("agent.timeoutMinutes", "number", 60, "Wall-clock limit of one agent session.", check=_at_least(0.01)),
    S("agent.stallMinutes", "number", 15, "A session with no output for this long is stopped.", check=_at_least(0.01)),
    S("agent.killGraceSeconds", "number", 10, "Seconds between SIGTERM and SIGKILL when stopping an agent.", check=_at_least(0)),
    S("agent.rateLimitWaitMs", "integer", 60000, "First back-off when every agent is rate limited and no reset time is known.", check=_at_least(0)),
    S("agent.rateLimitMaxWaitMs", "integer", 3600000, "Longest back-off (the wait doubles up to this).", check=_at_least(0)),
    S("agent.envPassthrough", "strings", [], "Extra environment variables (fnmatch patterns) passed to agents; [\"*\"] passes everything."),
    S("agent.sandbox", "string", "none", "Run agents in a sandbox that confines writes to the worktree.", choices=("none", "bwrap")),
    S("agent.network", "boolean", True, "Allow agents network access (only enforced with a sandbox)."),
    S("agent.sandboxReadable", "strings", [], "Extra paths agents may read inside the sandbox (absolute, or relative to the project root), e.g. a tool's data directory under /tmp."),
    S("agent.model", "string?", None, "Model passed to every agent that has no model of its own (null: the CLI's default)."),
    S("agent.maxOutputBytes", "integer", 52428800, "Output kept per session; beyond it the output is truncated (the session goes on).", check=_at_least(1024)),
    S("agent.maxConcurrent", "integer?", None, "Most sessions of one agent at a time (null: as many as there are tracks). Shrinks under rate-limit pressure, grows back after agent.pressureQuietSeconds.", check=_at_least(1)),
    S("agent.pressureQuietSeconds", "number", 300, "Quiet period (no retries or rate-limit warnings) after which a shrunk agent concurrency grows back by one.", check=_at_least(0)),
    S("budget.perFeatureUsd", "number?", None, "Cost limit of one feature (null: none). Reached: the feature stops after its current session and fails; Claude also gets --max-budget-usd with what is left.", check=_at_least(0)),
    S("budget.totalUsd", "number?", None, "Cost limit of all sessions recorded in the project (null: none). Reached: every track pauses after its current session.", check=_at_least(0)),
    S("budget.warnAt", "number", 0.8, "Fraction of a budget at which a warning notice is sent.", check=lambda v: None if 0 < v <= 1 else f"must be between 0 and 1, found {show(v)}"),
    S("verification.maxAttempts", "integer", 3, "Verification + fix cycles per feature.", check=_at_least(1)),
    S("verification.delayMs", "integer", 5000, "Wait after a merge before verifying (hot reload).", check=_at_least(0)),
    S("verification.disabled", "boolean", False, "Skip verification: features pass after a successful implementation and merge."),
    S("verification.commands", "commands", [], "Commands run by the daemon in the integration checkout for every feature; each an argv list. A non-zero exit fails the verification."),
    S("verification.commandTimeoutSeconds", "number", 600, "Timeout of each verification command.", check=_at_least(1)),
    S("verification.revertOnFailure", "boolean", True, "Revert the merge of a feature that finally failed, so the base branch keeps only passing features."),
    S("verification.serverCommand", "argv?", None, "Starts the app in the integration checkout for verification when the project root is on another branch; {port} is replaced by a free port."),
    S("verification.serverStartSeconds", "number", 60, "How long the serverCommand's app may take to answer HTTP before the verification fails."),
    S("git.push", "string", "auto", "Push the base branch after a feature passes: auto (only if it has an upstream), always, never.", choices=("auto", "always", "never")),
    S("git.remote", "string", "origin", "Remote to push to.", check=_remote_check),
    S("git.deleteMergedBranches", "boolean", False, "Delete a feature branch after it passed."),
    S("notify.webhooks", "webhooks", [], "Webhooks that receive a JSON POST on notable events: [{url, events, headers}]. `events` lists notification names (feature.passed, feature.failed, track.paused, budget.warning, budget.reached, rate_limit.waiting, conflict.predicted, run.finished) or \"*\" (the default); `headers` are sent with every request and masked in /api/config."),
    S("notify.command", "argv?", None, "Command run on every notification (argv list), e.g. [\"notify-send\", \"{title}\", \"{message}\"]; {event}, {title} and {message} are replaced in each argument, and the notification's JSON is in the environment variable AO_EVENT.", check=_notify_command_check),
    S("notify.timeoutSeconds", "number", 5, "Timeout of one webhook request and of one notify.command run.", check=_at_least(0.1)),
    S("notify.retries", "integer", 3, "Retries of a webhook request that failed (connection error, timeout, HTTP 408/429/5xx), with a growing pause between them.", check=lambda v: None if 0 <= v <= 10 else f"must be between 0 and 10, found {show(v)}"),
    S("conflicts.enabled", "boolean", True, "Predict merge conflicts between running feature branches and the base branch (and between each other) while tracks work, with `git merge-tree` (git 2.38 or newer)."),
    S("conflicts.intervalSeconds", "number", 30, "Seconds between two conflict predictions.", check=_at_least(1)),
    S("criticalPatterns", "patterns", [], "Regexes (case-insensitive) that mark a failure as an environment problem: [{pattern, label}]."),
    S("agents", "agents", {}, "Agent definitions by name: {kind, command, env, model, args}. A builtin name (claude, codex, gemini) overrides that agent; another name defines a command agent."),
]
del S
SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.key.split(".")[0] for s in SETTINGS if "." in s.key))
TRACK_FIELDS = ("name", "categories", "color", "isDefault")
PATTERN_FIELDS = ("pattern", "label")
AGENT_FIELDS = ("kind", "command", "env", "model", "args")

TYPE_NAMES = {
    "string": "string", "path": "string (path)", "string?": "string or null", "integer": "integer",
    "number": "number", "number?": "number or null", "integer?": "integer or null", "boolean": "boolean", "strings": "list of strings", "argv?": "argv list or null",
    "commands": "list of argv lists", "tracks": "list of tracks", "patterns": "list of {pattern, label}",
    "agents": "object", "webhooks": "list of {url, events, headers}",
}


# ---------------------------------------------------------------- parsing

class _Ctx:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def bad(self, key: str, text: str) -> object:
        self.problems.append(f"{key}: {text}")
        return _MISSING

    def expected(self, key: str, what: str, value: Any) -> object:
        return self.bad(key, f"expected {what}, found {found(value)}")

    def unknown_fields(self, path: str, obj: dict, known: tuple[str, ...]) -> None:
        for k in obj:
            if k not in known and not _ignored_key(k):
                self.warnings.append(_unknown_key(f"{path}.{k}", [f"{path}.{f}" for f in known], prefix=f"{path}."))


def _parse_strings(ctx: _Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, list):
        return ctx.expected(key, "a list of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return ctx.bad(f"{key}[{i}]", f"expected a string, found {found(item)}")
    return list(value)


def _parse_track(ctx: _Ctx, key: str, item: Any, index: int) -> dict | None:
    if not isinstance(item, dict):
        ctx.expected(key, "an object {\"name\": ..., \"categories\": [...]}", item)
        return None
    ctx.unknown_fields(key, item, TRACK_FIELDS)
    ok = True
    name = item.get("name", _MISSING)
    if name is _MISSING:
        ctx.bad(f"{key}.name", f"is missing — every track needs a name ({NAME_RULE})")
        ok = False
    elif not isinstance(name, str) or not NAME_RE.match(name):
        ctx.bad(f"{key}.name", f"{show(name)} is not allowed — {NAME_RULE}")
        ok = False
    cats = _parse_strings(ctx, f"{key}.categories", item.get("categories", []))
    color = item.get("color", TRACK_COLORS[index % len(TRACK_COLORS)])
    if not isinstance(color, str):
        ctx.expected(f"{key}.color", "a CSS color string such as \"#3b82f6\"", color)
        ok = False
    is_default = item.get("isDefault", False)
    if not isinstance(is_default, bool):
        ctx.expected(f"{key}.isDefault", "true or false", is_default)
        ok = False
    if not ok or cats is _MISSING:
        return None
    return {"name": name, "categories": cats, "color": color, "isDefault": is_default}


def _parse_tracks(ctx: _Ctx, key: str, value: Any) -> Any:
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
        return _MISSING
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


def _parse_patterns(ctx: _Ctx, key: str, value: Any) -> Any:
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
        pattern, label = item.get("pattern", _MISSING), item.get("label", item.get("pattern"))
        if pattern is _MISSING:
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
    return out if len(out) == len(value) else _MISSING


def _parse_agent(ctx: _Ctx, key: str, name: str, item: Any) -> AgentDef | None:
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
    args = _parse_strings(ctx, f"{key}.args", item.get("args", []))
    if not ok or args is _MISSING:
        return None
    return AgentDef(name, kind, tuple(command) if command else None, dict(env), model, tuple(args))


def _parse_agents(ctx: _Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        return ctx.expected(key, "an object {\"name\": {\"kind\": ..., \"command\": [...]}}", value)
    out = {}
    for name, item in value.items():
        agent = _parse_agent(ctx, f"{key}.{name}", name, item)
        if agent is not None:
            out[name] = agent
    return out if len(out) == len(value) else _MISSING


def _parse_webhook(ctx: _Ctx, key: str, item: Any) -> dict | None:
    if not isinstance(item, dict):
        ctx.expected(key, "an object {\"url\": \"https://...\", \"events\": [...], \"headers\": {...}}", item)
        return None
    ctx.unknown_fields(key, item, WEBHOOK_FIELDS)
    ok = True
    url = item.get("url", _MISSING)
    if url is _MISSING:
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


def _parse_webhooks(ctx: _Ctx, key: str, value: Any) -> Any:
    if not isinstance(value, list):
        return ctx.expected(key, "a list of webhooks [{\"url\": \"https://...\"}]", value)
    hooks = [_parse_webhook(ctx, f"{key}[{i}]", item) for i, item in enumerate(value)]
    return hooks if all(h is not None for h in hooks) else _MISSING


def _parse_value(ctx: _Ctx, s: Setting, value: Any) -> Any:
    key, t = s.key, s.type
    if t in ("string", "path", "string?"):
        if value is None and t == "string?":
            return None
        if not isinstance(value, str):
            return ctx.expected(key, "a string or null" if t == "string?" else "a string", value)
        if t == "path" and (not value.strip() or "\0" in value):
            return ctx.bad(key, f"expected a file path relative to the project root, found {found(value)}")
    elif t in ("integer", "integer?"):
        if value is None and t == "integer?":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return ctx.expected(key, "an integer or null" if t == "integer?" else "an integer", value)
    elif t in ("number", "number?"):
        if value is None and t == "number?":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return ctx.expected(key, "a number or null" if t == "number?" else "a number", value)
    elif t == "boolean":
        if not isinstance(value, bool):
            return ctx.expected(key, "true or false", value)
    elif t == "strings":
        value = _parse_strings(ctx, key, value)
    elif t == "argv?":
        if value is None:
            return None
        value, problem = parse_argv(value)
        if problem:
            return ctx.bad(key, problem)
    elif t == "commands":
        commands, problems = parse_argv_list(value)
        if problems:
            for suffix, text in problems:
                ctx.bad(key + suffix, text)
            return _MISSING
        value = commands
    elif t == "tracks":
        return _parse_tracks(ctx, key, value)
    elif t == "patterns":
        return _parse_patterns(ctx, key, value)
    elif t == "agents":
        return _parse_agents(ctx, key, value)
    elif t == "webhooks":
        return _parse_webhooks(ctx, key, value)
    if value is _MISSING:
        return value
    if s.choices and value not in s.choices:
        return ctx.bad(key, f"{show(value)} is not one of {', '.join(s.choices)}")
    if s.check and value is not None:
        problem = s.check(value)
        if problem:
            return ctx.bad(key, problem)
    return value


def _flatten(ctx: _Ctx, data: dict) -> dict[str, Any]:
    """The user's values by dotted key; warns about unknown keys."""
    candidates = [s.key for s in SETTINGS] + list(SECTIONS)
    given: dict[str, Any] = {}
    for top, value in data.items():
        if _ignored_key(top):
            continue
        if top in SETTINGS_BY_KEY:
            given[top] = value
        elif top in SECTIONS:
            if not isinstance(value, dict):
                ctx.expected(top, "an object {...}", value)
                continue
            for sub, v in value.items():
                dotted = f"{top}.{sub}"
                if dotted in SETTINGS_BY_KEY:
                    given[dotted] = v
                elif not _ignored_key(sub):
                    ctx.warnings.append(_unknown_key(dotted, candidates))
        else:
            ctx.warnings.append(_unknown_key(top, candidates))
    return given


def parse_config(data: object, *, source: str = CONFIG_FILE, project_root: Path) -> tuple[Config, list[str]]:
    """Validate parsed JSON; returns (config, warnings) or raises ConfigError listing every problem."""
    project_root = Path(project_root)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object {{...}}, found {kind_of(data)}",
                          hint=f"Write the settings as an object, e.g. {{\"baseBranch\": \"ai-develop\"}}, in {source}.")
    ctx = _Ctx()
    given = _flatten(ctx, data)
    values: dict[str, Any] = {}
    for s in SETTINGS:
        if s.key in given:
            v = _parse_value(ctx, s, given[s.key])
        elif s.type in ("tracks", "patterns", "agents"):
            v = _parse_value(ctx, s, copy.deepcopy(s.default))
        else:
            v = copy.deepcopy(s.default)
        values[s.key] = v
    if values["projectName"] is None:
        values["projectName"] = project_root.name or "project"
    _cross_checks(ctx, values, given)
    if ctx.problems:
        n = len(ctx.problems)
        raise ConfigError(
            f"{source}: {n} problem{'s' if n > 1 else ''} in the configuration",
            hint=f"Fix the keys listed above in {source}; every key with its type and default is in the README (Configuration).",
            problems=ctx.problems)
    tracks = [Track(t["name"], tuple(t["categories"]), t["color"], t["isDefault"]) for t in values.pop("tracks")]
    patterns = values.pop("criticalPatterns")
    agents = values.pop("agents")
    return Config(values, project_root=project_root, source=None, tracks=tracks, critical_patterns=patterns,
                  agents=agents, explicit=frozenset(given)), ctx.warnings


def _cross_checks(ctx: _Ctx, values: dict[str, Any], given: dict[str, Any]) -> None:
    agents = values["agents"] if isinstance(values["agents"], dict) else {}
    known = list(BUILTIN_AGENTS) + [a for a in agents if a not in BUILTIN_AGENTS]
    if isinstance(given.get("agents"), dict):
        known += [a for a in given["agents"] if a not in known]
    names = ", ".join(known)
    preferred = values["agent.preferred"]
    if isinstance(preferred, str) and preferred not in known:
        ctx.bad("agent.preferred", f"{show(preferred)} is not an agent — use one of {names} or define it under \"agents\"")
    fallback = values["agent.fallbackAgents"]
    if isinstance(fallback, list):
        for i, name in enumerate(fallback):
            if name not in known:
                ctx.bad(f"agent.fallbackAgents[{i}]", f"{show(name)} is not an agent — use one of {names} or define it under \"agents\"")
            elif name == preferred or name in fallback[:i]:
                ctx.warnings.append(f"agent.fallbackAgents[{i}]: {name!r} is already in the agent order; it is tried once")
    wait, max_wait = values["agent.rateLimitWaitMs"], values["agent.rateLimitMaxWaitMs"]
    if isinstance(wait, int) and isinstance(max_wait, int) and max_wait < wait:
        ctx.bad("agent.rateLimitMaxWaitMs", f"{max_wait} is smaller than agent.rateLimitWaitMs ({wait}) — it must be >= it")
    cmds = given.get("verification.commands")
    if isinstance(cmds, list) and len(cmds) > 1 and all(isinstance(c, str) for c in cmds):
        ctx.warnings.append(f"verification.commands: {show(cmds)} is read as ONE command; write a list of argv lists "
                            f"such as [[\"npm\", \"test\"], [\"npm\", \"run\", \"lint\"]] for several")


# ---------------------------------------------------------------- the result

_SECRET_WORDS = ("token", "secret", "password", "passwd", "credential", "authorization", "apikey",
                 "privatekey", "accesskey", "cookie")


def looks_secret(name: str) -> bool:
    norm = re.sub(r"[^a-z0-9]", "", name.lower())
    return any(w in norm for w in _SECRET_WORDS) or norm.endswith("key")


def _mask_argv(argv: list) -> list:
    out, hide_next = [], False
    for a in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
        elif isinstance(a, str) and a.startswith("-") and looks_secret(a.split("=", 1)[0]):
            if "=" in a:
                out.append(a.split("=", 1)[0] + "=" + MASK)
            else:
                out.append(a)
                hide_next = True
        else:
            out.append(a)
    return out


def _mask_url(url: str) -> str:
    """Webhook URLs (Slack, Discord, ...) carry their secret in the path or query: keep only
    the scheme and host."""
    match = re.match(r"([a-z][a-z0-9+.-]*://)(?:[^@/]*@)?([^/?#]*)(.*)", url, re.I)
    if not match:
        return MASK
    return match.group(1) + match.group(2) + ("/" + MASK if match.group(3) not in ("", "/") else "")


def mask_secrets(obj: Any) -> Any:
    """A copy with the values of secret-looking keys, `env` and `headers` objects and secret argv flags masked."""
    if isinstance(obj, list):
        if obj and all(isinstance(a, str) for a in obj):
            return _mask_argv(obj)
        return [mask_secrets(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if k in ("env", "headers") and isinstance(v, dict):
            out[k] = {name: MASK for name in v}
        elif k == "url" and isinstance(v, str):
            out[k] = _mask_url(v)
        elif looks_secret(k) and v not in (None, "", [], {}):
            out[k] = MASK
        else:
            out[k] = mask_secrets(v)
    return out


class Config:
    """The effective configuration: every registry key has a value (default applied)."""

    def __init__(self, values: dict[str, Any], *, project_root: Path, source: Path | None, tracks: list[Track],
                 critical_patterns: list[CriticalPattern], agents: dict[str, AgentDef],
                 explicit: frozenset[str] = frozenset()):
        self._values = values
        self.project_root = Path(project_root)
        self.source = source
        self.tracks = tracks
        self.critical_patterns = critical_patterns
        self.agents = agents
        self.explicit = explicit

    def __getitem__(self, key: str) -> Any:
        if key == "tracks":
            return [{"name": t.name, "categories": list(t.categories), "color": t.color, "isDefault": t.is_default}
                    for t in self.tracks]
        if key == "criticalPatterns":
            return [{"pattern": p.pattern, "label": p.label} for p in self.critical_patterns]
        if key == "agents":
            return {name: _agent_dict(a) for name, a in self.agents.items()}
        if key in self._values:
            return copy.deepcopy(self._values[key])
        if key in SECTIONS:
            return {k.split(".", 1)[1]: copy.deepcopy(v) for k, v in self._values.items() if k.startswith(key + ".")}
        raise KeyError(f"unknown setting {key!r}")

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def is_set(self, key: str) -> bool:
        """Whether the user's file gives this key (rather than the default)."""
        return key in self.explicit

    @property
    def default_track(self) -> Track:
        return next(t for t in self.tracks if t.is_default)

    def agent_names(self) -> list[str]:
        return list(BUILTIN_AGENTS) + [n for n in self.agents if n not in BUILTIN_AGENTS]

    def path(self, key: str) -> Path:
        if key not in PATH_KEYS:
            raise KeyError(f"{key!r} is not a file setting ({', '.join(PATH_KEYS)})")
        return self.project_root / self._values[key]

    def to_dict(self) -> dict:
        """The effective configuration as nested JSON (unmasked)."""
        out: dict[str, Any] = {}
        for s in SETTINGS:
            head, _, leaf = s.key.partition(".")
            if leaf:
                out.setdefault(head, {})[leaf] = self[s.key]
            else:
                out[head] = self[s.key]
        return out

    def to_public_dict(self) -> dict:
        """The effective configuration with secrets masked ("***"), for /api/config."""
        data = self.to_dict()
        for s in SETTINGS:
            if s.secret:
                head, _, leaf = s.key.partition(".")
                if leaf:
                    data[head][leaf] = MASK
                else:
                    data[head] = MASK
        return mask_secrets(data)


def _agent_dict(a: AgentDef) -> dict:
    return {"kind": a.kind, "command": list(a.command) if a.command else None, "env": dict(a.env),
            "model": a.model, "args": list(a.args)}


# ---------------------------------------------------------------- I/O

def load_config(project_root: Path, *, path: Path | None = None) -> tuple[Config, list[str]]:
    """Read and validate the config file; a missing default file means all defaults (with a warning)."""
    project_root = Path(project_root)
    explicit = path is not None
    path = Path(path) if explicit else project_root / CONFIG_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file not found: {path}",
                              hint="Check the path, or run `agent-orchestrator init` to create one.") from None
        config, warnings = parse_config({}, source=str(path), project_root=project_root)
        return config, [f"{path} not found — using the defaults (run `agent-orchestrator init` to create it)", *warnings]
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", hint="Check the file's permissions.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start})", hint="Save the file as UTF-8.") from None
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict:
        seen: dict[str, Any] = {}
        for k, v in items:
            if k in seen:
                duplicates.append(f"key {k!r} appears twice in the same object; the last value is used")
            seen[k] = v
        return seen

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        line = text.splitlines()[e.lineno - 1] if 0 < e.lineno <= len(text.splitlines()) else ""
        raise ConfigError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}",
                          hint="Fix the JSON syntax (a trailing comma, a missing comma or quote, or a comment are the usual causes).",
                          problems=[f"line {e.lineno}: {line.strip()[:120]}"] if line.strip() else []) from None
    config, warnings = parse_config(data, source=str(path), project_root=project_root)
    config.source = path
    return config, duplicates + warnings


# ---------------------------------------------------------------- docs

def _default_text(s: Setting) -> str:
    if s.key == "projectName":
        return "project directory name"
    return f"`{json.dumps(s.default, ensure_ascii=False)}`"


def settings_markdown() -> str:
    """The README table of every setting, generated from SETTINGS."""
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for s in SETTINGS:
        text = s.help
        if s.choices:
            text += " One of: " + ", ".join(f"`{c}`" for c in s.choices) + "."
        if s.secret:
            text += " Masked in /api/config."
        cells = [f"`{s.key}`", TYPE_NAMES[s.type], _default_text(s), text]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def describe_settings() -> list[dict]:
    """The registry as JSON (key, type, default, help, choices, secret) for the API and the dashboard."""
    return [{"key": s.key, "type": TYPE_NAMES[s.type], "default": s.default, "help": s.help,
             "choices": list(s.choices) if s.choices else None, "secret": s.secret} for s in SETTINGS]
