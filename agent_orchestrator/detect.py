"""What kind of project is this? A pure rule table over a few files, plus the one scan that reads them.

`scan(root)` reads the handful of files detection needs; `detect(files)` turns them into a
`Detection` (framework, app URL, worktree settings, verification commands, Docker service) without
touching the filesystem, so every rule is tested with literal file contents.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

# Files whose text detection reads, and files/directories (trailing "/") whose presence is enough.
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
TEXT_FILES = (
    "package.json", "composer.json", "requirements.txt", "requirements-dev.txt", "pyproject.toml",
    "Pipfile", "manage.py", "Gemfile", "go.mod", "Cargo.toml", ".env", ".env.local",
) + COMPOSE_FILES
PRESENCE_FILES = (
    "artisan", "vendor/bin/sail", "setup.py", "pytest.ini", "tsconfig.json", ".mcp.json",
    "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb", "bun.lock", "bin/rails",
    ".venv/", "venv/", "node_modules/", "vendor/",
)
MAX_FILE_BYTES = 512 * 1024

# .env keys that name the app's URL, most specific first; then keys that name only its port.
URL_KEYS = (
    "APP_URL", "NEXT_PUBLIC_APP_URL", "NEXT_PUBLIC_SITE_URL", "NEXT_PUBLIC_BASE_URL", "NEXTAUTH_URL",
    "NUXT_PUBLIC_SITE_URL", "NUXT_PUBLIC_APP_URL", "PUBLIC_APP_URL", "PUBLIC_SITE_URL", "VITE_APP_URL",
    "SITE_URL", "BASE_URL", "ORIGIN",
)
PORT_KEYS = ("PORT", "APP_PORT", "SERVER_PORT", "FLASK_RUN_PORT")


@dataclass
class Detection:
    framework: str
    label: str
    app_url: str
    symlink_dirs: list[str] = field(default_factory=list)
    copy_files: list[str] = field(default_factory=list)
    critical_patterns: list[dict] = field(default_factory=list)
    verify_commands: list[list[str]] = field(default_factory=list)
    docker_service: str | None = None
    docker_work_dir: str | None = None
    docker_user: str | None = None
    compose_file: str | None = None
    evidence: list[str] = field(default_factory=list)


@dataclass
class Facts:
    """What the rules look at, derived once from the files."""

    files: Mapping[str, str]
    npm: set[str]
    scripts: dict[str, str]
    composer: set[str]
    python: set[str]
    gems: set[str]
    env: dict[str, str]

    def has(self, path: str) -> bool:
        return path in self.files


@dataclass(frozen=True)
class Rule:
    framework: str
    label: str
    ecosystem: str        # node | php | python | ruby | go | rust | none
    port: int
    matches: Callable[[Facts], bool]
    why: str


def _npm(*names: str) -> Callable[[Facts], bool]:
    return lambda f: any(n in f.npm for n in names)


def _py(name: str) -> Callable[[Facts], bool]:
    return lambda f: name in f.python


# First match wins: backends with their own markers before front-end libraries they may carry.
RULES: tuple[Rule, ...] = (
    Rule("laravel", "Laravel", "php", 8000,
         lambda f: "laravel/framework" in f.composer or f.has("artisan"), "laravel/framework in composer.json"),
    Rule("rails", "Ruby on Rails", "ruby", 3000,
         lambda f: "rails" in f.gems or f.has("bin/rails"), "rails in Gemfile"),
    Rule("django", "Django", "python", 8000,
         lambda f: "django" in f.python or "django" in f.files.get("manage.py", "").lower(), "django dependency"),
    Rule("nextjs", "Next.js", "node", 3000, _npm("next"), "next in package.json"),
    Rule("nuxt", "Nuxt", "node", 3000, _npm("nuxt", "nuxt3"), "nuxt in package.json"),
    Rule("remix", "Remix", "node", 3000,
         lambda f: any(n.startswith("@remix-run/") for n in f.npm), "@remix-run/* in package.json"),
    Rule("sveltekit", "SvelteKit", "node", 5173, _npm("@sveltejs/kit"), "@sveltejs/kit in package.json"),
    Rule("astro", "Astro", "node", 4321, _npm("astro"), "astro in package.json"),
    Rule("fastapi", "FastAPI", "python", 8000, _py("fastapi"), "fastapi dependency"),
    Rule("flask", "Flask", "python", 5000, _py("flask"), "flask dependency"),
    Rule("vue", "Vue", "node", 5173, _npm("vue"), "vue in package.json"),
    Rule("react", "React", "node", 5173, _npm("react"), "react in package.json"),
    Rule("express", "Express", "node", 3000, _npm("express"), "express in package.json"),
    Rule("go", "Go", "go", 8080, lambda f: f.has("go.mod"), "go.mod"),
    Rule("rust", "Rust (Cargo)", "rust", 8080, lambda f: f.has("Cargo.toml"), "Cargo.toml"),
    Rule("node", "Node.js", "node", 3000, lambda f: f.has("package.json"), "package.json"),
    Rule("python", "Python", "python", 8000,
         lambda f: bool(f.python) or any(f.has(p) for p in
                                         ("pyproject.toml", "requirements.txt", "setup.py", "Pipfile")),
         "Python project files"),
)
UNKNOWN = Rule("unknown", "Unknown project", "none", 3000, lambda f: True, "no known project files")

CRITICAL_PATTERNS: dict[str, list[dict]] = {
    "laravel": [
        {"pattern": r"SQLSTATE\[HY000\] \[2002\]", "label": "database unreachable"},
        {"pattern": r"Vite manifest not found", "label": "front-end assets not built"},
    ],
    "rails": [
        {"pattern": r"ActiveRecord::ConnectionNotEstablished|PG::ConnectionBad", "label": "database unreachable"},
    ],
    "django": [
        {"pattern": r"django\.db\.utils\.OperationalError: (could not connect|connection)",
         "label": "database unreachable"},
    ],
    "node": [{"pattern": r"EADDRINUSE", "label": "port already in use"}],
    "docker": [
        {"pattern": r"Cannot connect to the Docker daemon", "label": "Docker is not running"},
        {"pattern": r"service \"[^\"]+\" is not running", "label": "container not running"},
    ],
}


# ---------------------------------------------------------------------------------------- scan

def scan(project_root: Path) -> dict[str, str]:
    """The one filesystem read: the detection files that exist, as {relative path: text}."""
    files: dict[str, str] = {}
    for rel in TEXT_FILES:
        path = project_root / rel
        if path.is_file():
            with open(path, "rb") as fh:
                files[rel] = fh.read(MAX_FILE_BYTES).decode("utf-8", errors="replace")
    for rel in PRESENCE_FILES:
        path = project_root / rel.rstrip("/")
        if (path.is_dir() if rel.endswith("/") else path.exists()):
            files[rel] = ""
    return files


# ------------------------------------------------------------------------------------- parsers

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip().lower())


def parse_package_json(text: str) -> tuple[set[str], dict[str, str]]:
    try:
        data = json.loads(text)
    except ValueError:
        return set(), {}
    if not isinstance(data, dict):
        return set(), {}
    deps: set[str] = set()
    for key in ("dependencies", "devDependencies", "peerDependencies"):
        if isinstance(data.get(key), dict):
            deps.update(data[key])
    scripts = data.get("scripts") if isinstance(data.get("scripts"), dict) else {}
    return deps, {k: v for k, v in scripts.items() if isinstance(v, str)}


def parse_composer_json(text: str) -> set[str]:
    try:
        data = json.loads(text)
    except ValueError:
        return set()
    if not isinstance(data, dict):
        return set()
    return {name.lower() for key in ("require", "require-dev") if isinstance(data.get(key), dict)
            for name in data[key]}


def parse_requirements(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match and not line.startswith("-"):
            names.add(_norm(match.group(0)))
    return names


def parse_toml_dependencies(text: str) -> set[str]:
    """Dependency names in pyproject.toml / Pipfile / Cargo.toml: keys of *dependencies* / *packages*
    tables and the requirement strings of `dependencies = [...]`-style arrays. Enough for detection."""
    names: set[str] = set()
    section, in_array = "", False
    for raw in text.splitlines():
        line = _strip_comment(raw).strip()
        bare = re.sub(r"\"[^\"]*\"|'[^']*'", '""', line)
        if in_array:
            names.update(_norm(n) for n in re.findall(r"[\"']([A-Za-z0-9][A-Za-z0-9._-]*)", line))
            in_array = "]" not in bare
            continue
        header = re.fullmatch(r"\[\[?([^\]]+)\]\]?", line)
        if header:
            section = header.group(1).strip().lower()
            continue
        key = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*=\s*(.*)", line)
        if not key:
            continue
        if key.group(2).startswith("[") and (key.group(1).endswith("dependencies") or section in (
                "project.optional-dependencies", "dependency-groups")):
            value = key.group(2)
            names.update(_norm(n) for n in re.findall(r"[\"']([A-Za-z0-9][A-Za-z0-9._-]*)", value))
            in_array = "]" not in re.sub(r"\"[^\"]*\"|'[^']*'", '""', value)[1:]
        elif "dependencies" in section or section in ("packages", "dev-packages"):
            names.add(_norm(key.group(1)))
    names.discard("python")
    return names


def parse_gemfile(text: str) -> set[str]:
    return set(re.findall(r"^\s*gem\s+['\"]([^'\"]+)['\"]", text, re.MULTILINE))


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=value lines; `export`, quotes and trailing comments handled; ${VAR} from earlier keys."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        match = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$", raw)
        if not match:
            continue
        key, value = match.group(1), match.group(2).strip()
        if value[:1] in ("'", '"'):
            end = value.find(value[0], 1)
            quote, value = value[0], value[1:end] if end > 0 else value[1:]
            if quote == "'":
                env[key] = value
                continue
        else:
            value = re.split(r"\s+#", value, 1)[0].strip()
        env[key] = expand_vars(value, env)
    return env


def expand_vars(value: str, env: Mapping[str, str]) -> str:
    """${VAR}, ${VAR:-default}, ${VAR-default} as docker compose and dotenv loaders do."""

    def sub(match: re.Match) -> str:
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        if op == ":-" and not current:
            return default
        if op == "-" and current is None:
            return default
        return current or ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}", sub, value)


# ------------------------------------------------------------------------- compose (YAML subset)

def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _scalar(text: str) -> object:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else inner.replace('\\"', '"')
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(part) for part in text[1:-1].split(",") if part.strip()]
    return text


def _split_key(text: str) -> tuple[str, str] | None:
    match = re.match(r"""("[^"]*"|'[^']*'|[^'"\s][^:]*?)\s*:(?:\s+(.*)|$)""", text)
    if not match:
        return None
    return str(_scalar(match.group(1))), (match.group(2) or "").strip()


def parse_yaml_subset(text: str) -> object:
    """Block mappings, block sequences and plain/quoted scalars: what compose files are made of.
    Anchors, multi-line strings and flow mappings are skipped, never an error."""
    lines = []
    for raw in text.replace("\t", "  ").splitlines():
        content = _strip_comment(raw)
        if content.strip() and content.strip() not in ("---", "..."):
            lines.append([len(content) - len(content.lstrip()), content.strip()])
    value, _ = _parse_block(lines, 0, lines[0][0] if lines else 0)
    return value


def _parse_block(lines: list, i: int, indent: int) -> tuple[object, int]:
    if i < len(lines) and lines[i][1].startswith("-") and lines[i][1][1:2] in ("", " "):
        return _parse_seq(lines, i, indent)
    return _parse_map(lines, i, indent)


def _child(lines: list, i: int, indent: int, allow_seq_same: bool) -> tuple[object, int]:
    if i < len(lines) and (lines[i][0] > indent or (
            allow_seq_same and lines[i][0] == indent and lines[i][1].startswith("- "))):
        return _parse_block(lines, i, lines[i][0])
    return None, i


def _parse_map(lines: list, i: int, indent: int) -> tuple[dict, int]:
    out: dict = {}
    while i < len(lines) and lines[i][0] >= indent:
        if lines[i][0] > indent or lines[i][1].startswith("- "):
            i += 1
            continue
        pair = _split_key(lines[i][1])
        i += 1
        if pair is None:
            continue
        key, rest = pair
        if rest and rest[0] in "|>":
            while i < len(lines) and lines[i][0] > indent:
                i += 1
            out[key] = ""
        elif rest:
            out[key] = _scalar(rest)
        else:
            out[key], i = _child(lines, i, indent, allow_seq_same=True)
    return out, i


def _parse_seq(lines: list, i: int, indent: int) -> tuple[list, int]:
    out: list = []
    while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
        rest = lines[i][1][1:].lstrip()
        if not rest:
            value, i = _child(lines, i + 1, indent, allow_seq_same=False)
        elif _split_key(rest) and not rest.startswith(("'", '"')):
            lines[i] = [indent + len(lines[i][1]) - len(rest), rest]
            value, i = _parse_map(lines, i, lines[i][0])
        else:
            value, i = _scalar(rest), i + 1
        out.append(value)
    return out, i


@dataclass(frozen=True)
class ComposeService:
    name: str
    working_dir: str | None
    mount_target: str | None     # where the project directory (".") is mounted
    image: str

    @property
    def project_dir(self) -> str | None:
        """Where the project root is seen inside the container: its mount point, else working_dir."""
        return self.mount_target or self.working_dir


def compose_services(text: str, env: Mapping[str, str] = {}) -> list[ComposeService]:
    data = parse_yaml_subset(text)
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        return []
    out = []
    for name, spec in services.items():
        spec = spec if isinstance(spec, dict) else {}
        work_dir = spec.get("working_dir")
        out.append(ComposeService(
            name=name,
            working_dir=expand_vars(work_dir, env) if isinstance(work_dir, str) and work_dir else None,
            mount_target=_project_mount(spec.get("volumes"), env),
            image=str(spec.get("image") or ""),
        ))
    return out


def _project_mount(volumes: object, env: Mapping[str, str]) -> str | None:
    for volume in volumes if isinstance(volumes, list) else []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        elif isinstance(volume, dict):
            source, target = str(volume.get("source") or ""), str(volume.get("target") or "")
        else:
            continue
        target = expand_vars(target, env)
        if source.rstrip("/") in (".", "${PWD}", "$PWD") and target.startswith("/"):
            return target.rstrip("/") or "/"
    return None


PREFERRED_SERVICES = ("laravel.test", "app", "web", "php", "backend", "api", "server", "node", "django",
                      "rails", "frontend")


def pick_service(services: list[ComposeService], preferred: str | None = None) -> ComposeService | None:
    """The service the code runs in: the named one, else one that mounts the project directory."""
    by_name = {s.name: s for s in services}
    if preferred and preferred in by_name:
        return by_name[preferred]
    mounted = [s for s in services if s.mount_target]
    for name in PREFERRED_SERVICES:
        if name in by_name and by_name[name] in mounted:
            return by_name[name]
    return mounted[0] if mounted else None


# ------------------------------------------------------------------------------------- detect

def facts_of(files: Mapping[str, str]) -> Facts:
    npm, scripts = parse_package_json(files["package.json"]) if "package.json" in files else (set(), {})
    python: set[str] = set()
    for name in ("requirements.txt", "requirements-dev.txt"):
        python |= parse_requirements(files.get(name, ""))
    for name in ("pyproject.toml", "Pipfile"):
        python |= parse_toml_dependencies(files.get(name, ""))
    env = parse_dotenv(files.get(".env", ""))
    env.update(parse_dotenv(files.get(".env.local", "")))
    return Facts(files=files, npm=npm, scripts=scripts, composer=parse_composer_json(files.get("composer.json", "")),
                 python=python, gems=parse_gemfile(files.get("Gemfile", "")), env=env)


def app_url(env: Mapping[str, str], default_port: int, *, host: str = "localhost") -> tuple[str, str]:
    """(url, where it came from): a URL key of .env, else a port key, else the framework's port."""
    for key in URL_KEYS:
        value = env.get(key, "").strip()
        if value and "$" not in value:
            url = value if re.match(r"https?://", value) else f"http://{value}"
            return url.rstrip("/"), f"{key} in .env"
    for key in PORT_KEYS:
        value = env.get(key, "").strip()
        if value.isdigit():
            return _url(host, int(value)), f"{key} in .env"
    return _url(host, default_port), "the usual port"


def _url(host: str, port: int) -> str:
    return f"http://{host}" if port == 80 else f"http://{host}:{port}"


def _runner(facts: Facts) -> list[str]:
    if facts.has("pnpm-lock.yaml"):
        return ["pnpm", "run"]
    if facts.has("yarn.lock"):
        return ["yarn", "run"]
    if facts.has("bun.lockb") or facts.has("bun.lock"):
        return ["bun", "run"]
    return ["npm", "run"]


def _npm_commands(facts: Facts) -> list[list[str]]:
    commands = []
    test = facts.scripts.get("test", "")
    if test and "no test specified" not in test:
        commands.append(_runner(facts) + ["test"])
    if "lint" in facts.scripts:
        commands.append(_runner(facts) + ["lint"])
    for name in ("typecheck", "type-check", "types", "check", "tsc"):
        if name in facts.scripts:
            commands.append(_runner(facts) + [name])
            break
    else:
        if facts.has("tsconfig.json") and "typescript" in facts.npm:
            commands.append(["npx", "tsc", "--noEmit"])
    return commands


def _python_commands(facts: Facts, framework: str) -> list[list[str]]:
    commands = []
    if framework == "django":
        commands.append(["python3", "manage.py", "test"])
    elif "pytest" in facts.python or facts.has("pytest.ini") or "[tool.pytest" in facts.files.get(
            "pyproject.toml", ""):
        commands.append(["python3", "-m", "pytest", "-q"])
    if "ruff" in facts.python or "[tool.ruff" in facts.files.get("pyproject.toml", ""):
        commands.append(["ruff", "check", "."])
    elif "flake8" in facts.python:
        commands.append(["python3", "-m", "flake8"])
    if "mypy" in facts.python or "[tool.mypy" in facts.files.get("pyproject.toml", ""):
        commands.append(["python3", "-m", "mypy", "."])
    return commands


def _verify_commands(rule: Rule, facts: Facts) -> list[list[str]]:
    if rule.ecosystem == "php":
        commands = [["php", "artisan", "test"]]
        if "laravel/pint" in facts.composer:
            commands.append(["vendor/bin/pint", "--test"])
        if {"larastan/larastan", "nunomaduro/larastan", "phpstan/phpstan"} & facts.composer:
            commands.append(["vendor/bin/phpstan", "analyse"])
        return commands + [c for c in _npm_commands(facts) if c[-1] != "test"]
    if rule.ecosystem == "ruby":
        commands = [["bundle", "exec", "rspec"] if "rspec-rails" in facts.gems else ["bin/rails", "test"]]
        if "rubocop" in facts.gems or "rubocop-rails-omakase" in facts.gems:
            commands.append(["bundle", "exec", "rubocop"])
        return commands
    if rule.ecosystem == "python":
        return _python_commands(facts, rule.framework)
    if rule.ecosystem == "go":
        return [["go", "test", "./..."], ["go", "vet", "./..."]]
    if rule.ecosystem == "rust":
        return [["cargo", "test"], ["cargo", "clippy"]]
    if rule.ecosystem == "node":
        return _npm_commands(facts)
    return []


def _symlink_dirs(rule: Rule, facts: Facts) -> list[str]:
    dirs = {"php": ["vendor", "node_modules"], "node": ["node_modules"], "ruby": [], "go": [], "rust": []}
    result = list(dirs.get(rule.ecosystem, []))
    if rule.ecosystem == "php" and not facts.has("package.json"):
        result.remove("node_modules")
    if rule.ecosystem == "python":
        result = [d.rstrip("/") for d in (".venv/", "venv/") if facts.has(d)][:1]
        if facts.has("package.json"):
            result.append("node_modules")
    return result


def _frontend_parts(rule: Rule, facts: Facts) -> list[str]:
    parts = []
    if rule.framework == "laravel":
        if "laravel/sail" in facts.composer or facts.has("vendor/bin/sail"):
            parts.append("Sail")
        if "inertiajs/inertia-laravel" in facts.composer or any(n.startswith("@inertiajs/") for n in facts.npm):
            parts.append("Inertia")
        if "livewire/livewire" in facts.composer:
            parts.append("Livewire")
    if rule.ecosystem in ("php", "python", "ruby"):
        parts += [name for dep, name in (("react", "React"), ("vue", "Vue"), ("svelte", "Svelte"))
                  if dep in facts.npm]
    if rule.framework == "vue" and "@vue/cli-service" in facts.npm:
        parts.append("Vue CLI")
    if rule.framework == "react" and "react-scripts" in facts.npm:
        parts.append("Create React App")
    return parts


def _default_port(rule: Rule, facts: Facts, sail: bool) -> int:
    if sail:
        return 80
    if rule.framework == "vue" and "@vue/cli-service" in facts.npm:
        return 8080
    if rule.framework == "react" and "react-scripts" in facts.npm:
        return 3000
    if rule.framework == "remix" and "vite" in facts.npm:
        return 5173
    return rule.port


def detect(files: Mapping[str, str]) -> Detection:
    """Pure: {relative path: text} (as `scan` returns) -> what the project is and how to run it."""
    facts = facts_of(files)
    rule = next((r for r in RULES if r.matches(facts)), UNKNOWN)
    parts = _frontend_parts(rule, facts)
    sail = "Sail" in parts
    evidence = [f"{rule.label}: {rule.why}"]

    compose_file = next((name for name in COMPOSE_FILES if name in files), None)
    service = None
    if compose_file:
        services = compose_services(files[compose_file], facts.env)
        service = pick_service(services, facts.env.get("APP_SERVICE") or ("laravel.test" if sail else None))
        if service:
            evidence.append(f"{compose_file}: service {service.name} sees the project at {service.project_dir}")
    if sail and not service:
        sail = False

    url, url_source = app_url(facts.env, _default_port(rule, facts, sail))
    evidence.append(f"app URL {url} from {url_source}")
    copy_files = [name for name in (".env", ".env.local", ".mcp.json") if name in files]
    patterns = [dict(p) for p in CRITICAL_PATTERNS.get(rule.framework, CRITICAL_PATTERNS.get(rule.ecosystem, []))]
    if service:
        patterns += [dict(p) for p in CRITICAL_PATTERNS["docker"]]
    return Detection(
        framework=rule.framework,
        label=f"{rule.label} ({', '.join(parts)})" if parts else rule.label,
        app_url=url,
        symlink_dirs=_symlink_dirs(rule, facts),
        copy_files=copy_files,
        critical_patterns=patterns,
        verify_commands=_verify_commands(rule, facts),
        docker_service=service.name if service else None,
        docker_work_dir=service.project_dir if service else None,
        docker_user="sail" if sail else None,
        compose_file=compose_file,
        evidence=evidence,
    )
