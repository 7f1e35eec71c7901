"""Helpers for tests that start `run` in the background and watch processes: start it, wait for
a moment in its life (polling the database or files), and find what is still alive."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from projects import FAKES_DIR, REPO_ROOT


def start_run(repo: Path, tmp_path: Path, *args: str, env: dict | None = None,
              name: str = "run") -> subprocess.Popen:
    """`agent-orchestrator run --project repo` in the background; output goes to files
    (tmp_path/<name>.out, .err) so a flood of output never blocks it."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{FAKES_DIR}{os.pathsep}{full_env.get('PATH', '')}"
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    full_env.update(env or {})
    out = open(tmp_path / f"{name}.out", "w")
    err = open(tmp_path / f"{name}.err", "w")
    try:
        return subprocess.Popen([sys.executable, "-m", "agent_orchestrator", "run", "--project",
                                 str(repo), *args], env=full_env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
    finally:
        out.close()
        err.close()


def output(tmp_path: Path, name: str = "run") -> str:
    return (tmp_path / f"{name}.out").read_text() + (tmp_path / f"{name}.err").read_text()


def wait_for(predicate, *, timeout: float = 30, interval: float = 0.05, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sessions(repo: Path) -> list[dict]:
    path = repo / ".orchestrator" / "orchestrator.db"
    if not path.exists():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM sessions ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def running(repo: Path, phase: str | None = None) -> list[dict]:
    return [s for s in sessions(repo) if s["status"] == "running"
            and (phase is None or s["phase"] == phase)]


def alive_with_env(key: str, value: str) -> list[int]:
    """Live (non-zombie) processes whose environment has key=value."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.rfind(")") + 2:].split()[0] in ("Z", "X"):
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def children_of(pid: int) -> list[int]:
    """Every live descendant of pid."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] in ("Z", "X"):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def agent_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
