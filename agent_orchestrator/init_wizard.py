"""`agent-orchestrator init`: detect the project, ask a few questions, write orchestrator.config.json.

The questions are data (`QUESTIONS`): a key (= the CLI flag's dest), a prompt, a default computed
from the context (the existing config first, then detection), and a parser that turns typed text
into a value or raises ValueError with a message. An answer comes from its flag, else from the
user (interactive), else it is the default (--yes, or stdin not a terminal). A re-run starts from
the existing file, so every key the wizard does not ask about is kept as the user wrote it.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import config as config_mod
from . import config_sections, detect, docker, git, values
from .errors import ConfigError, UsageError
from .features import atomic_write_text
from .init_flags import INIT_FLAGS

CONFIG_FILE = "orchestrator.config.json"
STATE_DIR_PATTERN = ".orchestrator/"
BUILTIN_AGENTS = ("claude", "codex", "gemini")
MAX_PROPOSED_TRACKS = 3
TRACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}\Z")
NONE_WORDS = ("none", "-", "[]")





# ------------------------------------------------------------------------------------- context

@dataclass
class Context:
    project_root: Path
    existing: dict
    detection: detect.Detection
    current_branch: str | None
    has_commits: bool
    branch_exists: Callable[[str], bool]
    found_agents: list[str]
    answers: dict = field(default_factory=dict)

    def old(self, dotted: str, default: object = None) -> object:
        node: object = self.existing
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return copy.deepcopy(node)

    def known_agents(self) -> list[str]:
        defined = self.existing.get("agents") if isinstance(self.existing.get("agents"), dict) else {}
        return list(BUILTIN_AGENTS) + [a for a in defined if a not in BUILTIN_AGENTS]


# ------------------------------------------------------------------------------------- parsers

def parse_yes_no(text: str, ctx: Context | None = None) -> bool:
    value = text.strip().lower()
    if value in ("y", "yes", "true", "1", "on"):
        return True
    if value in ("n", "no", "false", "0", "off"):
        return False
    raise ValueError(f"answer yes or no, not {text!r}")


def parse_list(text: str) -> list[str]:
    if text.strip().lower() in NONE_WORDS:
        return []
    return list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))


def _matching(regex: str, problem: str) -> Callable[[str, Context], str]:
    def parse(text: str, ctx: Context) -> str:
        if not re.match(regex, text.strip()):
            raise ValueError(f"{text.strip()!r} {problem}")
        return text.strip()
    return parse


_text = _matching(r"\S", "must not be empty")
_url = _matching(r"https?://\S+\Z", "is not a URL such as http://localhost:3000")
_service = _matching(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z", "is not a compose service name")
_container_dir = _matching(r"/", "is not an absolute path inside the container such as /var/www/html")


def _branch(text: str, ctx: Context) -> str:
    problem = values.branch_name_problem(text.strip())
    if problem:
        raise ValueError(f"{text.strip()!r} is not a valid git branch name ({problem})")
    return text.strip()


def _rel_path(text: str, ctx: Context | None = None) -> str:
    path = text.strip()
    if not path or path.startswith("/") or ".." in Path(path).parts:
        raise ValueError(f"{path!r} must be a path relative to the project root, inside it")
    return path


def _dirs(text: str, ctx: Context) -> list[str]:
    return [_rel_path(p) for p in parse_list(text)]


def _agent(text: str, ctx: Context) -> str:
    name = text.strip()
    if name not in ctx.known_agents():
        raise ValueError(f"unknown agent {name!r}: use one of {', '.join(ctx.known_agents())}")
    return name


def _fallbacks(text: str, ctx: Context) -> list[str]:
    names = [_agent(n, ctx) for n in parse_list(text)]
    return [n for n in names if n != ctx.answers.get("agent")]


def split_commands(text: str) -> list[list[str]]:
    """'npm test; npm run lint' -> [["npm", "test"], ["npm", "run", "lint"]]; a quoted ';' stays."""
    if text.strip().lower() in NONE_WORDS:
        return []
    pieces, current, quote = [], "", None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            pieces.append(current)
            current = ""
            continue
        current += ch
    pieces.append(current)
    try:
        return [shlex.split(p) for p in pieces if p.strip()]
    except ValueError as e:
        raise ValueError(f"cannot split {text!r} into commands: {e}") from None


def _commands(text: str, ctx: Context) -> list[list[str]]:
    return split_commands(text)


def render_commands(commands: list[list[str]]) -> str:
    return "; ".join(shlex.join(c) for c in commands) or "none"


def parse_tracks(text: str, ctx: Context | None = None) -> list[tuple[str, list[str], bool]]:
    """'core; ui=frontend,design' -> [(name, categories, is_default)]; '*' after a name marks the default."""
    tracks: list[tuple[str, list[str], bool]] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, _, cats = part.partition("=")
        name = name.strip()
        is_default = name.endswith("*")
        name = name.rstrip("*").strip()
        if not TRACK_NAME.match(name):
            raise ValueError(f"track name {name!r} must match [A-Za-z0-9][A-Za-z0-9._-]* (at most 40 characters)")
        if name in (t[0] for t in tracks):
            raise ValueError(f"track {name!r} is listed twice")
        tracks.append((name, parse_list(cats) if cats.strip() else [], is_default))
    if not 1 <= len(tracks) <= 32:
        raise ValueError("give 1 to 32 tracks, e.g. 'core' or 'core; ui=frontend'")
    if sum(t[2] for t in tracks) > 1:
        raise ValueError("mark at most one track as the default with '*'")
    if not any(t[2] for t in tracks):
        tracks[0] = (tracks[0][0], tracks[0][1], True)
    return tracks


def render_tracks(tracks: list[tuple[str, list[str], bool]]) -> str:
    first_default = bool(tracks) and tracks[0][2]
    parts = []
    for name, cats, is_default in tracks:
        mark = "*" if is_default and not first_default else ""
        parts.append(f"{name}{mark}={','.join(cats)}" if cats else f"{name}{mark}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------- defaults

def feature_categories(text: str) -> list[str]:
    """Categories used in a features file, in order of first appearance; [] when unreadable."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    items = data.get("features") if isinstance(data, dict) else data
    cats = [f.get("category") for f in items if isinstance(f, dict)] if isinstance(items, list) else []
    return list(dict.fromkeys(c.strip() for c in cats if isinstance(c, str) and c.strip()))


def propose_tracks(categories: list[str]) -> list[tuple[str, list[str], bool]]:
    """One track per category (at most MAX_PROPOSED_TRACKS); the first is the default and also
    takes every category without a track of its own."""
    tracks: list[tuple[str, list[str], bool]] = []
    for cat in categories:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", cat).strip("-._")[:40]
        if TRACK_NAME.match(name) and name not in (t[0] for t in tracks):
            tracks.append((name, [cat], not tracks))
        if len(tracks) == MAX_PROPOSED_TRACKS:
            break
    return tracks or [("core", [], True)]


def _existing_tracks(ctx: Context) -> list[tuple[str, list[str], bool]] | None:
    old = ctx.old("tracks")
    if not isinstance(old, list) or not old or not all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                                      for t in old):
        return None
    tracks = [(t["name"], [c for c in t.get("categories") or [] if isinstance(c, str)], t.get("isDefault") is True)
              for t in old]
    if not any(t[2] for t in tracks):
        tracks[0] = (tracks[0][0], tracks[0][1], True)
    return tracks


def _default_tracks(ctx: Context) -> list[tuple[str, list[str], bool]]:
    existing = _existing_tracks(ctx)
    if existing:
        return existing
    path = ctx.project_root / ctx.answers.get("features_file", "features.json")
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    return propose_tracks(feature_categories(text))


def _default_agent(ctx: Context) -> str:
    return str(ctx.old("agent.preferred") or (ctx.found_agents[0] if ctx.found_agents else "claude"))


def _default_fallbacks(ctx: Context) -> list[str]:
    old = ctx.old("agent.fallbackAgents")
    if isinstance(old, list):
        return [a for a in old if a != ctx.answers.get("agent")]
    return [a for a in ctx.found_agents if a != ctx.answers.get("agent")]


def _default_docker(ctx: Context) -> bool:
    worktree = ctx.old("worktree", {})
    if isinstance(worktree, dict) and "dockerService" in worktree:
        return bool(worktree["dockerService"])
    return bool(ctx.detection.docker_service)


def _default_verify_commands(ctx: Context) -> list[list[str]]:
    old = ctx.old("verification.commands")
    if isinstance(old, list):
        return old
    commands = ctx.detection.verify_commands
    return [docker.wrap_command(c) for c in commands] if ctx.answers.get("docker") else commands


# ------------------------------------------------------------------------------------- questions

@dataclass(frozen=True)
class Question:
    key: str
    prompt: str | Callable[[Context], str]
    default: Callable[[Context], object]
    parse: Callable[[str, Context], object]
    kind: str = "text"     # text | yesno | list | commands | tracks
    when: Callable[[Context], bool] = lambda ctx: True


def _render(kind: str, value: object) -> str:
    if kind == "yesno":
        return "yes" if value else "no"
    if kind == "list":
        return ", ".join(value) if value else "none"  # type: ignore[arg-type]
    if kind == "commands":
        return render_commands(value)  # type: ignore[arg-type]
    if kind == "tracks":
        return render_tracks(value)  # type: ignore[arg-type]
    return str(value)


def _base_missing(ctx: Context) -> bool:
    return ctx.has_commits and not ctx.branch_exists(ctx.answers["base_branch"])


QUESTIONS: tuple[Question, ...] = (
    Question("project_name", "Project name", lambda c: c.old("projectName") or c.project_root.name, _text),
    Question("base_branch", "Base branch (features are merged into it)",
             lambda c: c.old("baseBranch") or "ai-develop", _branch),
    Question("create_branch", lambda c: f"Branch '{c.answers['base_branch']}' does not exist. "
             f"Create it from '{c.current_branch or 'HEAD'}'?", lambda c: True, parse_yes_no, "yesno", when=_base_missing),
    Question("features_file", "Features file", lambda c: c.old("featuresFile") or "features.json", _rel_path),
    Question("instructions_file", "Instructions file for the agents",
             lambda c: c.old("instructionsFile") or "ORCHESTRATOR.md", _rel_path),
    Question("app_url", "App URL", lambda c: c.old("appUrl") or c.detection.app_url, _url),
    Question("docker", lambda c: f"Run commands in the Docker container "
             f"'{c.old('worktree.dockerService') or c.detection.docker_service}' ({c.detection.compose_file})?",
             _default_docker, parse_yes_no, "yesno",
             when=lambda c: bool(c.detection.docker_service or c.old("worktree.dockerService"))),
    Question("docker_service", "Docker service",
             lambda c: c.old("worktree.dockerService") or c.detection.docker_service or "app", _service,
             when=lambda c: bool(c.answers.get("docker"))),
    Question("docker_work_dir", "Project directory inside the container",
             lambda c: c.old("worktree.dockerWorkDir") or c.detection.docker_work_dir or "/app", _container_dir,
             when=lambda c: bool(c.answers.get("docker"))),
    Question("symlink_dirs", "Directories symlinked into each worktree (comma-separated, or none)",
             lambda c: c.old("worktree.symlinkDirs", c.detection.symlink_dirs), _dirs, "list"),
    Question("agent", "Preferred agent", _default_agent, _agent),
    Question("fallback_agents", "Fallback agents on a rate limit (comma-separated, or none)",
             _default_fallbacks, _fallbacks, "list"),
    Question("tracks", "Tracks ('name=category,...; name2=...')", _default_tracks, parse_tracks, "tracks"),
    Question("verification", "Verify each feature after merging?",
             lambda c: not c.old("verification.disabled", False), parse_yes_no, "yesno"),
    Question("verify_commands", "Commands the daemon runs to verify (';'-separated, or none)",
             _default_verify_commands, _commands, "commands", when=lambda c: bool(c.answers.get("verification"))),
    Question("gitignore", "Also add .orchestrator/ to .gitignore? (it is already kept out of git via .git/info/exclude)",
             lambda c: False, parse_yes_no, "yesno", when=lambda c: not _gitignored(c.project_root)),
)
FLAG_OF = {dest: flag.split("/")[0] for flag, dest, _ in INIT_FLAGS}


def _gitignored(root: Path) -> bool:
    path = root / ".gitignore"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    return any(line.strip() in (".orchestrator", ".orchestrator/", "/.orchestrator", "/.orchestrator/")
               for line in lines)


def ask_all(ctx: Context, given: dict, *, prompting: bool, input_fn: Callable[[str], str],
            print_fn: Callable[..., None]) -> dict:
    """Answer every question that applies: its flag, else the user (when prompting), else the default."""
    for q in QUESTIONS:
        if not q.when(ctx):
            continue
        value = given.get(q.key)
        if value is not None:
            text = value if isinstance(value, str) else _render(q.kind, value)
            try:
                ctx.answers[q.key] = q.parse(text, ctx)
            except ValueError as e:
                raise UsageError(f"{FLAG_OF.get(q.key, q.key)}: {e}",
                                 hint=f"see `agent-orchestrator init --help` for {FLAG_OF.get(q.key, q.key)}") from None
        elif prompting:
            ctx.answers[q.key] = _ask(q, ctx, input_fn, print_fn)
        else:
            ctx.answers[q.key] = q.default(ctx)
    return ctx.answers


def _ask(q: Question, ctx: Context, input_fn: Callable[[str], str], print_fn: Callable[..., None]) -> object:
    default = q.default(ctx)
    prompt = q.prompt(ctx) if callable(q.prompt) else q.prompt
    shown = ("Y/n" if default else "y/N") if q.kind == "yesno" else _render(q.kind, default)
    for _ in range(5):
        try:
            raw = input_fn(f"{prompt} [{shown}]: ")
        except EOFError:
            raise UsageError("init cancelled (end of input); nothing was written",
                             hint="run it again, or pass --yes to accept every default") from None
        if not raw.strip():
            return default
        try:
            return q.parse(raw, ctx)
        except ValueError as e:
            print_fn(f"  {e}")
    raise UsageError(f"no valid answer to {prompt!r} after 5 tries; nothing was written",
                     hint=f"pass it as {FLAG_OF.get(q.key, q.key)}")


# ------------------------------------------------------------------------------------- building

def _set(data: dict, dotted: str, value: object) -> None:
    head, _, leaf = dotted.partition(".")
    if not leaf:
        data[head] = value
        return
    if not isinstance(data.get(head), dict):
        data[head] = {}
    data[head][leaf] = value


def build_tracks(parsed: list[tuple[str, list[str], bool]], existing: object) -> list[dict]:
    """Track objects for the answers, keeping the color and any other key of same-named old tracks."""
    old = {t["name"]: t for t in existing if isinstance(t, dict) and isinstance(t.get("name"), str)} \
        if isinstance(existing, list) else {}
    used = {t.get("color") for t in old.values()}
    free = [c for c in config_sections.TRACK_COLORS if c not in used] or list(config_sections.TRACK_COLORS)
    tracks = []
    for i, (name, cats, is_default) in enumerate(parsed):
        track = copy.deepcopy(old[name]) if name in old else {"name": name}
        track["categories"] = cats
        if "color" not in track:
            track["color"] = free[i % len(free)]
        track["isDefault"] = is_default
        tracks.append(track)
    return tracks


def new_config(ctx: Context) -> dict:
    """The template a first run starts from; detection fills what the wizard does not ask."""
    d = ctx.detection
    return {
        "projectName": None, "baseBranch": None, "featuresFile": None,
        "progressFile": "orchestrator-progress.txt", "instructionsFile": None, "appUrl": None, "tracks": None,
        "worktree": {"symlinkDirs": [], "copyFiles": list(d.copy_files), "dockerService": None, "dockerWorkDir": None},
        "agent": {"preferred": None, "fallbackAgents": []},
        "verification": {"disabled": False, "commands": []},
        "criticalPatterns": [dict(p) for p in d.critical_patterns],
    }


ANSWER_KEYS = {
    "project_name": "projectName", "base_branch": "baseBranch", "features_file": "featuresFile",
    "instructions_file": "instructionsFile", "app_url": "appUrl", "symlink_dirs": "worktree.symlinkDirs",
    "agent": "agent.preferred", "fallback_agents": "agent.fallbackAgents", "verify_commands": "verification.commands",
}


def build_config(ctx: Context) -> dict:
    """The new file: the existing one (or the template) with the answers applied."""
    a = ctx.answers
    data = copy.deepcopy(ctx.existing) if ctx.existing else new_config(ctx)
    for key, dotted in ANSWER_KEYS.items():
        if key in a:
            _set(data, dotted, a[key])
    if a["tracks"] != _existing_tracks(ctx):
        data["tracks"] = build_tracks(a["tracks"], ctx.existing.get("tracks"))
    if "docker" in a:
        _set(data, "worktree.dockerService", a.get("docker_service") if a["docker"] else None)
        if a["docker"]:
            _set(data, "worktree.dockerWorkDir", a["docker_work_dir"])
            user = ctx.detection.docker_user if a["docker_service"] == ctx.detection.docker_service else None
            if user and "worktree.dockerUser" in config_mod.SETTINGS_BY_KEY and not ctx.old("worktree.dockerUser"):
                _set(data, "worktree.dockerUser", user)
    _set(data, "verification.disabled", not a["verification"])
    return data


# ------------------------------------------------------------------------------------- I/O

def _repo_facts(root: Path) -> tuple[str | None, bool]:
    if not git.is_repo(root):
        raise UsageError(f"{root} is not a git repository",
                         hint="run `git init` and make a first commit there, or pass --project DIR")
    top = git.toplevel(root).resolve()
    if top != root:
        raise UsageError(f"{root} is inside the git repository {top}, not at its top",
                         hint=f"run init at the repository's top directory: --project {top}")
    return git.current_branch(root), git.rev_parse(root, "HEAD") is not None


def _load_existing(path: Path) -> dict:
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}",
                          hint="fix the JSON (init keeps your settings, so it will not overwrite it), then run init again") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object", hint="fix or remove the file, then run init again")
    return data


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def starter_instructions(ctx: Context, data: dict) -> str:
    d = ctx.detection
    commands = data.get("verification", {}).get("commands") or d.verify_commands
    checks = "\n".join(f"- `{shlex.join(c)}`" for c in commands) or "- (add the project's test and lint commands here)"
    docker_line = (f"\nThe app runs in Docker: run project commands in the container with "
                   f"`./{docker.WRAPPER_NAME} <command>` from the worktree root.\n"
                   if (data.get("worktree") or {}).get("dockerService") else "")
    return f"""# Session protocol for {data.get('projectName')}

Every agent session started by agent-orchestrator reads this file. Edit it: project conventions,
how to run things, what "done" means. The orchestrator's own rules win where they conflict.

## The project
- Detected: {d.label}
- App URL: {data.get('appUrl')}
{docker_line}
## Before you start
1. Read `{data.get('progressFile', 'orchestrator-progress.txt')}` (if present) to see what earlier sessions did.
2. Read the code around the feature before changing it; follow the existing structure and style.

## While you work
- Keep the change focused on the feature. No unrelated refactoring.
- Add or update tests for the behaviour you build.
- Do not install or upgrade dependencies.

## Before you commit
Run these and fix what fails:
{checks}

Commit with a message like `feat: <feature name>`.
"""


def _add_to_gitignore(root: Path) -> None:
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    prefix = "" if not text or text.endswith("\n") else "\n"
    write_atomic(path, f"{text}{prefix}{STATE_DIR_PATTERN}\n")


def run_init(project_root: Path, answers: dict, *, assume_yes: bool, interactive: bool | None = None,
             input_fn: Callable[[str], str] = input, print_fn: Callable[..., None] = print,
             which: Callable[[str], str | None] = shutil.which) -> int:
    """The init command. Raises UsageError / ConfigError (exit 2) before writing anything when an
    answer or the resulting configuration is wrong."""
    root = Path(project_root).resolve()
    if not root.is_dir():
        raise UsageError(f"project directory {root} does not exist", hint="pass --project DIR of an existing git repository")
    current, has_commits = _repo_facts(root)
    config_path = root / CONFIG_FILE
    existing = _load_existing(config_path)
    detection = detect.detect(detect.scan(root))
    if interactive is None:
        interactive = sys.stdin.isatty()
    ctx = Context(project_root=root, existing=existing, detection=detection, current_branch=current,
                  has_commits=has_commits,
                  branch_exists=lambda name: git.branch_exists(root, name),
                  found_agents=[a for a in BUILTIN_AGENTS if which(a)])

    print_fn(f"Detected: {detection.label}")
    for line in detection.evidence:
        print_fn(f"  {line}")
    if existing:
        print_fn(f"Updating {CONFIG_FILE}: your current values are the defaults; other settings are kept.")
    prompting = interactive and not assume_yes
    if not interactive and not assume_yes:
        print_fn("stdin is not a terminal: using the defaults (pass flags such as --agent to change them).")
    ask_all(ctx, {k: v for k, v in answers.items() if v is not None}, prompting=prompting,
            input_fn=input_fn, print_fn=print_fn)
    data = build_config(ctx)
    _config, warnings = config_mod.parse_config(data, source=str(config_path), project_root=root)

    base = ctx.answers["base_branch"]
    notes = [f"warning: {w}" for w in warnings]
    if ctx.answers.get("create_branch"):
        git.create_branch(root, base, current or "HEAD")
        notes.append(f"created branch {base} from {current or 'HEAD'}")
    elif not has_commits:
        notes.append(f"the repository has no commits yet: commit something, then `git branch {base}`")
    elif "create_branch" in ctx.answers:
        notes.append(f"branch {base} does not exist: create it before starting (git branch {base})")
    write_atomic(config_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    notes.append(f"wrote {CONFIG_FILE}")
    instructions = root / ctx.answers["instructions_file"]
    if not instructions.exists():
        write_atomic(instructions, starter_instructions(ctx, data))
        notes.append(f"wrote a starter {ctx.answers['instructions_file']}: edit it to describe your project")
    patterns = [STATE_DIR_PATTERN] + ([docker.EXCLUDE_PATTERN] if (data.get("worktree") or {}).get("dockerService") else [])
    git.ensure_excluded(root, patterns)
    if ctx.answers.get("gitignore"):
        _add_to_gitignore(root)
        notes.append("added .orchestrator/ to .gitignore")
    if ctx.answers["agent"] not in ctx.found_agents and ctx.answers["agent"] in BUILTIN_AGENTS:
        notes.append(f"warning: '{ctx.answers['agent']}' is not on PATH; install it before starting")

    for note in notes:
        print_fn(note)
    print_fn("\nNext steps:")
    step = 1
    if not (root / ctx.answers["features_file"]).exists():
        print_fn(f"  {step}. Create {ctx.answers['features_file']} — see examples/features.example.json "
                 "in the agent-orchestrator repository for the format")
        step += 1
    instructions_rel = ctx.answers["instructions_file"]
    print_fn(f"  {step}. Review {instructions_rel} and {CONFIG_FILE}")
    step += 1
    if git.branch_exists(root, base) and not git.git(root, "cat-file", "-e", f"{base}:{instructions_rel}",
                                                      check=False).ok:
        print_fn(f"  {step}. Commit {instructions_rel} to {base}: agents work in worktrees of {base} "
                 "and see only committed files")
        step += 1
    print_fn(f"  {step}. agent-orchestrator start   (dashboard at http://127.0.0.1:3001; press Start)")
    print_fn("     or: agent-orchestrator run   (headless)")
    return 0
