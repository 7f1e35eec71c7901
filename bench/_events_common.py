"""Helpers shared by bench/events.py and bench/api.py: their scratch projects, the real daemon in
a subprocess, CPU accounting, percentiles and table printing (the machine and waiting for a quiet
machine are in _pipeline_common, shared by every benchmark)."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from _pipeline_common import BASE, describe_machine, machine, merged, write_project  # noqa: E402

URL_RE = re.compile(r"dashboard at (http://[^\s]+)")


def make_project(root: Path, config: dict, features: list[dict]) -> Path:
    """A project with one track (the config laid over the defaults), verification disabled."""
    return write_project(root, merged({
        "projectName": root.name, "baseBranch": BASE,
        "tracks": [{"name": "core", "categories": [], "isDefault": True}],
        "verification": {"disabled": True, "delayMs": 0}}, config), features)


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


def announce(*, chromium: bool = False) -> dict:
    """Print the machine, and a warning when other benchmarks or tests are running; the machine."""
    info = machine(chromium=chromium)
    line = f"machine: {describe_machine(info)}, SQLite {info['sqlite']}"
    print(line + (f", {info['chromium']}" if chromium else ""), flush=True)
    busy = other_processes()
    if busy:
        print("warning: other benchmark or test processes are running; the figures will be noisy:\n  "
              + "\n  ".join(busy[:5]), flush=True)
    return info


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


def print_table(title: str, rows: list[tuple], headers: tuple) -> None:
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
