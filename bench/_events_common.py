"""Helpers shared by bench/events.py and bench/api.py: scratch git projects, the real daemon in a
subprocess, percentiles, the machine description and table printing."""
from __future__ import annotations

import http.client
import json
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

URL_RE = re.compile(r"dashboard at (http://[^\s]+)")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_project(root: Path, config: dict, features: list[dict]) -> Path:
    """A git repository with orchestrator.config.json and features.json committed, and the base
    branch ai-develop."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "bench")
    git(root, "config", "user.email", "bench@example.invalid")
    (root / "README.md").write_text("bench project\n")
    cfg = {"projectName": root.name, "baseBranch": "ai-develop",
           "tracks": [{"name": "core", "categories": [], "isDefault": True}],
           "verification": {"disabled": True, "delayMs": 0}}
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    (root / "orchestrator.config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (root / "features.json").write_text(json.dumps({"project": root.name, "features": features},
                                                   indent=1) + "\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "bench project")
    git(root, "branch", "-f", "ai-develop", "HEAD")
    return root


class DaemonProcess:
    """`python -m agent_orchestrator start --port 0` on a project, in its own process."""

    def __init__(self, project: Path, *, env: dict | None = None, profile: Path | None = None,
                 autostart: bool = False):
        self.project = project
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        argv = [sys.executable]
        if profile is not None:
            argv += ["-m", "cProfile", "-o", str(profile)]
        argv += ["-m", "agent_orchestrator", "start", "--project", str(project), "--port", "0"]
        if autostart:
            argv.append("--autostart")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=full_env, cwd=str(project))
        self.output: list[str] = []
        self.url = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the daemon exited:\n" + "".join(self.output))
            self.output.append(line)
            match = URL_RE.search(line)
            if match:
                self.url = match.group(1)
                break
        else:
            raise RuntimeError("the daemon did not print its URL:\n" + "".join(self.output))
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1].split("/")[0])
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()
        self.token = (project / ".orchestrator" / "token").read_text().strip()

    def _read_rest(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, method: str, path: str, body=None, *, conn: http.client.HTTPConnection | None = None):
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Host": f"127.0.0.1:{self.port}"}
        data = None
        if method != "GET":
            headers["Authorization"] = f"Bearer {self.token}"
            headers["Content-Type"] = "application/json"
            data = json.dumps(body or {}).encode()
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        if own:
            conn.close()
        return response.status, payload

    def cpu_seconds(self) -> float:
        return process_cpu(self.proc.pid)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(5)
        return self.proc.returncode


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def system_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all CPUs; /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(below: float, *, longest: float = 120.0) -> float:
    """Wait (at most `longest` s) until the machine's CPUs are at most `below` busy over a second
    (a fraction of all CPUs, this process idle meanwhile): a benchmark measured next to another
    one measures both. Returns the last busy fraction seen; below >= 1 never waits."""
    if below >= 1:
        return 0.0
    cpus = os.cpu_count() or 1
    deadline = time.monotonic() + longest
    warned = False
    while True:
        start = system_busy_seconds()
        time.sleep(1.0)
        busy = (system_busy_seconds() - start) / cpus
        if busy <= below or time.monotonic() >= deadline:
            if busy > below:
                print(f"warning: the CPUs are still {busy:.0%} busy with other work; measuring anyway", flush=True)
            return busy
        if not warned:
            print(f"waiting for the machine to be quiet (CPUs {busy:.0%} busy, waiting for at most "
                  f"{below:.0%}) ...", flush=True)
            warned = True


def other_processes() -> list[str]:
    """Command lines of other busy Python or Chromium processes (for a warning about noise)."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if ("bench/" in cmd or "pytest" in cmd or "agent_orchestrator" in cmd) and "_events_" not in cmd:
            found.append(f"{entry}: {cmd[:120]}")
    return found


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a live process: {native thread id: seconds}."""
    out = {}
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def percentile(sorted_values, q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def machine() -> dict:
    """nproc, CPU model, memory, Python, SQLite and Chromium versions of this machine."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    chromium = None
    for binary in ("/usr/bin/chromium", "chromium"):
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20)
            chromium = out.stdout.strip() or None
            if chromium:
                break
        except (OSError, subprocess.TimeoutExpired):
            continue
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": mem_gib,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "chromium": chromium, "kernel": platform.release()}


def print_table(title: str, rows: list[tuple], headers: tuple) -> None:
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
