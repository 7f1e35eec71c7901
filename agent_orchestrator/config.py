"""orchestrator.config.json: one settings registry drives defaults, validation, /api/config and the README."""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config_sections import (BUILTIN_AGENTS, MISSING, AgentDef, CriticalPattern, Ctx, Track,
                              parse_agents, parse_patterns, parse_strings, parse_tracks,
                              parse_webhooks)
from .errors import ConfigError
from .values import (MASK, branch_name_problem, found, ignored_key, kind_of, mask_secrets,
                     parse_argv, parse_argv_list, show, unknown_key)
CONFIG_FILE = "orchestrator.config.json"
PATH_KEYS = ("featuresFile", "progressFile", "instructionsFile")


@dataclass(frozen=True)
class Setting:
    key: str
    type: str
    default: Any
    help: str
    secret: bool = False
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None


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

TYPE_NAMES = {
    "string": "string", "path": "string (path)", "string?": "string or null", "integer": "integer",
    "number": "number", "number?": "number or null", "integer?": "integer or null", "boolean": "boolean", "strings": "list of strings", "argv?": "argv list or null",
    "commands": "list of argv lists", "tracks": "list of tracks", "patterns": "list of {pattern, label}",
    "agents": "object", "webhooks": "list of {url, events, headers}",
}


# ---------------------------------------------------------------- parsing

def _parse_value(ctx: Ctx, s: Setting, value: Any) -> Any:
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
        value = parse_strings(ctx, key, value)
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
            return MISSING
        value = commands
    elif t == "tracks":
        return parse_tracks(ctx, key, value)
    elif t == "patterns":
        return parse_patterns(ctx, key, value)
    elif t == "agents":
        return parse_agents(ctx, key, value)
    elif t == "webhooks":
        return parse_webhooks(ctx, key, value)
    if value is MISSING:
        return value
    if s.choices and value not in s.choices:
        return ctx.bad(key, f"{show(value)} is not one of {', '.join(s.choices)}")
    if s.check and value is not None:
        problem = s.check(value)
        if problem:
            return ctx.bad(key, problem)
    return value


def _flatten(ctx: Ctx, data: dict) -> dict[str, Any]:
    """The user's values by dotted key; warns about unknown keys."""
    candidates = [s.key for s in SETTINGS] + list(SECTIONS)
    given: dict[str, Any] = {}
    for top, value in data.items():
        if ignored_key(top):
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
                elif not ignored_key(sub):
                    ctx.warnings.append(unknown_key(dotted, candidates))
        else:
            ctx.warnings.append(unknown_key(top, candidates))
    return given


def parse_config(data: object, *, source: str = CONFIG_FILE, project_root: Path) -> tuple[Config, list[str]]:
    """Validate parsed JSON; returns (config, warnings) or raises ConfigError listing every problem."""
    project_root = Path(project_root)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object {{...}}, found {kind_of(data)}",
                          hint=f"Write the settings as an object, e.g. {{\"baseBranch\": \"ai-develop\"}}, in {source}.")
    ctx = Ctx()
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


def _cross_checks(ctx: Ctx, values: dict[str, Any], given: dict[str, Any]) -> None:
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
