"""Shared helpers of bench/pipeline.py and bench/memory.py: the machine, scratch projects driven by
the fast fake agent (bench/fake_agent/claude), running the product from this checkout, tables and
the final JSON line."""
from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
FAKE_AGENT = BENCH_DIR / "fake_agent" / "claude"
BASE = "ai-develop"


# ---------------------------------------------------------------- the machine

def machine(*, chromium: bool = False) -> dict:
    """CPUs, CPU model, memory, Python, git and SQLite versions, kernel, load; with `chromium`,
    the version of the Chromium the dashboard measurements use."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_mb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    info = {"cpus": os.cpu_count(), "cpu": cpu, "memory_mb": mem_mb,
            "python": platform.python_version(), "git": git_version.replace("git version ", ""),
            "sqlite": sqlite3.sqlite_version, "os": f"{platform.system()} {platform.release()}",
            "load_1min_at_start": load}
    if chromium:
        info["chromium"] = _chromium_version()
    return info


def _chromium_version() -> str | None:
    for binary in ("/usr/bin/chromium", "chromium"):
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.stdout.strip():
            return out.stdout.strip()
    return None


def describe_machine(info: dict) -> str:
    return (f"{info['cpus']} CPUs ({info['cpu']}), {info['memory_mb']} MB RAM, {info['os']}, "
            f"Python {info['python']}, git {info['git']}, load {info['load_1min_at_start']:.2f}")


def cpu_busy(seconds: float = 1.0) -> float | None:
    """The share of all CPUs busy (0..1) over `seconds`, from /proc/stat; None where unknown."""
    def sample():
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return 1.0 - (idle1 - idle0) / total if total else None


def wait_for_quiet(limit: float, max_wait: float = 120.0) -> float | None:
    """Wait (up to max_wait seconds) until other processes leave the CPUs at most `limit` busy;
    the machine is shared, and a benchmark measured next to another one measures both. Returns
    the last busy share seen (None: not measured; limit >= 1 never waits)."""
    if limit >= 1:
        return None
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    if busy is not None and busy > limit:
        print(f"waiting for the machine to be quiet (CPUs {busy:.0%} busy, waiting for at most "
              f"{limit:.0%}) ...", flush=True)
    while busy is not None and busy > limit and time.monotonic() < deadline:
        busy = cpu_busy(2.0)
    if busy is not None and busy > limit:
        print(f"warning: the CPUs are still {busy:.0%} busy with other work; measuring anyway",
              flush=True)
    return busy


# ---------------------------------------------------------------- scratch projects

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def init_repo(repo: Path) -> Path:
    """A git repository on `main` with one commit, an identity, and `ai-develop` at main."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "bench")
    git(repo, "config", "user.email", "bench@localhost")
    git(repo, "config", "commit.gpgsign", "false")
    (repo / "README.md").write_text("# bench project\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "initial commit")
    return repo


def merged(defaults: dict, extra: dict | None) -> dict:
    """`defaults` with `extra` laid over it, sections (objects) merged one level deep."""
    cfg = dict(defaults)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_project(repo: Path, config: dict, features: list[dict]) -> Path:
    """init_repo, then orchestrator.config.json and features.json committed, and the base branch
    at that commit."""
    init_repo(repo)
    (repo / "orchestrator.config.json").write_text(json.dumps(config, indent=2) + "\n")
    (repo / "features.json").write_text(json.dumps({"features": features}, indent=1) + "\n")
    git(repo, "add", "orchestrator.config.json", "features.json")
    git(repo, "commit", "-q", "-m", "orchestrator setup")
    git(repo, "branch", "-f", BASE, "HEAD")
    return repo


def make_project(repo: Path, *, features: int, tracks: int, extra_config: dict | None = None) -> Path:
    """A project of `features` features spread round-robin over `tracks` tracks (by category),
    verification disabled, the claude agent replaced by the benchmark fake agent."""
    cfg = merged({
        "projectName": "bench", "baseBranch": BASE,
        "tracks": [{"name": f"t{i}", "categories": [f"c{i}"], "isDefault": i == 0}
                   for i in range(tracks)],
        "verification": {"disabled": True},
        "agent": {"preferred": "claude", "envPassthrough": ["FAKE_*"]},
        "agents": {"claude": {"command": [str(FAKE_AGENT)]}},
    }, extra_config)
    items = [{"id": i, "category": f"c{(i - 1) % tracks}", "name": f"Feature {i}",
              "description": f"Implement feature {i}.", "steps": ["Do it", "Test it"],
              "status": "open"} for i in range(1, features + 1)]
    return write_project(repo, cfg, items)


PYCACHE = Path(tempfile.gettempdir()) / "agent-orchestrator-bench-pycache"


def product_env(extra: dict | None = None) -> dict:
    """The environment the product runs in: this checkout first on PYTHONPATH, and byte-code
    cached (outside the checkout) as it is for an installed package, even where the caller's
    environment sets PYTHONDONTWRITEBYTECODE."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("AO_DEBUG", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(extra or {})
    return env


def product_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent_orchestrator", *args]


def feature_statuses(repo: Path) -> dict[int, str]:
    doc = json.loads((repo / "features.json").read_text())
    return {f["id"]: f.get("status", "open") for f in doc["features"]}


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


# ---------------------------------------------------------------- output

def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w)
                               for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text.rstrip("x%s"))
    except ValueError:
        return False
    return True


def emit_json(name: str, payload: dict) -> None:
    print(json.dumps({"bench": name, **payload}, separators=(",", ":"), default=str), flush=True)
