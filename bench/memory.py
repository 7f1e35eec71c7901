#!/usr/bin/env python3
"""Memory: the daemon's resident memory at idle and while agents flood it with output.

1. Idle: `agent-orchestrator start` on a scratch project (not started: no work), sampled for a
   few seconds once it listens. VmRSS from /proc/PID/status.
2. Flood: `agent-orchestrator start --autostart` with A tracks (default 8) and one feature each,
   whose agents (bench/fake_agent/claude) each print B bytes (default 100 MiB) of Claude
   stream-json assistant-text events in lines of L bytes, then commit. The daemon's VmRSS is
   sampled every 20 ms and its VmHWM (the kernel's peak) read at the end; then its RSS once the
   work is done (idle again). Each line size of --line-bytes is one run (default: 16 KiB events,
   a realistic size, and 10 MiB lines, the pathological case the daemon cuts).

Usage: python bench/memory.py [--agents A] [--megabytes B] [--line-bytes L ...] [--keep]
Prints a table and a final JSON line.
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pipeline_common import (  # noqa: E402
    describe_machine, emit_json, feature_statuses, machine, make_project, product_argv,
    product_env, remove_tree, scratch_dir, table, wait_for_quiet,
)

TARGET_IDLE_MB = 60
TARGET_FLOOD_MB = 150
DEFAULT_LINES = [16 << 10, 10 << 20]


def read_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... of a process, in kB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Vm") or line.startswith("Rss"):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


class Daemon:
    """`agent-orchestrator start` as a child process, its output read by a thread."""

    def __init__(self, repo: Path, *, autostart: bool, env: dict | None = None):
        argv = product_argv("start", "--project", str(repo), "--port", "0")
        if autostart:
            argv.append("--autostart")
        self.proc = subprocess.Popen(argv, env=product_env(env), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "dashboard at" in line:
                self.listening.set()

    def wait_listening(self, timeout: float = 30) -> None:
        if not self.listening.wait(timeout):
            self.stop()
            raise SystemExit("the daemon did not start:\n" + "\n".join(self.lines[-20:]))

    def status(self) -> dict[str, int]:
        return read_status(self.proc.pid)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self._reader.join(5)


def sample_for(daemon: Daemon, seconds: float, interval: float = 0.1) -> list[int]:
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rss = daemon.status().get("VmRSS")
        if rss:
            samples.append(rss)
        time.sleep(interval)
    return samples


def measure_idle(seconds: float, keep: bool) -> dict:
    work = scratch_dir("ao-bench-idle-")
    repo = make_project(work / "repo", features=8, tracks=8)
    daemon = Daemon(repo, autostart=False)
    try:
        daemon.wait_listening()
        samples = sample_for(daemon, seconds)
        status = daemon.status()
    finally:
        daemon.stop()
        if not keep:
            remove_tree(work)
    return {"rss_mb": samples[-1] / 1024, "rss_max_mb": max(samples) / 1024,
            "hwm_mb": status.get("VmHWM", 0) / 1024}


def measure_flood(agents: int, megabytes: int, line_bytes: int, keep: bool) -> dict:
    work = scratch_dir("ao-bench-flood-")
    repo = make_project(work / "repo", features=agents, tracks=agents)
    env = {"FAKE_FLOOD_BYTES": str(megabytes << 20), "FAKE_FLOOD_LINE_BYTES": str(line_bytes),
           "FAKE_AGENT_DELAY": "0"}
    started = time.monotonic()
    daemon = Daemon(repo, autostart=True, env=env)
    peak = 0
    try:
        daemon.wait_listening()
        while True:
            rss = daemon.status().get("VmRSS", 0)
            peak = max(peak, rss)
            statuses = feature_statuses(repo)
            if all(s in ("passed", "failed") for s in statuses.values()):
                break
            if daemon.proc.poll() is not None:
                raise SystemExit("the daemon exited:\n" + "\n".join(daemon.lines[-20:]))
            if time.monotonic() - started > 1800:
                raise SystemExit("the flood did not finish within 30 minutes")
            time.sleep(0.02)
        seconds = time.monotonic() - started
        hwm = daemon.status().get("VmHWM", 0)
        after = sample_for(daemon, 3.0)
        passed = sum(1 for s in statuses.values() if s == "passed")
    finally:
        daemon.stop()
    state_mb = sum(p.stat().st_size for p in (repo / ".orchestrator").glob("orchestrator.db*")) / 1e6
    if not keep:
        remove_tree(work)
    return {"agents": agents, "megabytes_each": megabytes, "line_bytes": line_bytes,
            "peak_rss_mb": max(peak, hwm) / 1024, "sampled_peak_mb": peak / 1024,
            "rss_after_mb": after[-1] / 1024 if after else None, "seconds": seconds,
            "passed": passed, "db_mb": state_mb}


def size_text(n: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kKmM]?)i?[bB]?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 16K, 10M, 65536)")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20}[m.group(2).lower()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--megabytes", type=int, default=100, help="MiB printed by each agent")
    ap.add_argument("--line-bytes", type=parse_size, nargs="+", default=DEFAULT_LINES,
                    help="line sizes, one flood run each (default 16K 10M)")
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--quiet-below", type=float, default=0.25, metavar="SHARE",
                    help="wait (at most 120 s) for the CPUs to be at most this busy first")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)

    info = machine()
    print(f"machine: {describe_machine(info)}\n", flush=True)
    if args.quiet_below < 1:
        wait_for_quiet(args.quiet_below, 120)
    idle = measure_idle(args.idle_seconds, args.keep)
    print(f"idle: RSS {idle['rss_mb']:.1f} MB (max {idle['rss_max_mb']:.1f} MB over "
          f"{args.idle_seconds:g} s, VmHWM {idle['hwm_mb']:.1f} MB)", flush=True)
    floods = []
    for line_bytes in args.line_bytes:
        if args.quiet_below < 1:
            wait_for_quiet(args.quiet_below, 120)
        r = measure_flood(args.agents, args.megabytes, line_bytes, args.keep)
        floods.append(r)
        print(f"flood: {r['agents']} agents x {r['megabytes_each']} MiB in lines of "
              f"{size_text(line_bytes)}: peak RSS {r['peak_rss_mb']:.1f} MB, after "
              f"{r['rss_after_mb']:.1f} MB, {r['seconds']:.1f} s", flush=True)

    print()
    print(table(["measurement", "RSS MB", "target MB", "met"],
                [["idle (started, no work)", round(idle["rss_mb"], 1), TARGET_IDLE_MB,
                  "yes" if idle["rss_mb"] <= TARGET_IDLE_MB else "NO"]]
                + [[f"peak, {r['agents']} agents x {r['megabytes_each']} MiB, "
                    f"{size_text(r['line_bytes'])} lines", round(r["peak_rss_mb"], 1),
                    TARGET_FLOOD_MB, "yes" if r["peak_rss_mb"] <= TARGET_FLOOD_MB else "NO"]
                   for r in floods]
                + [[f"after that flood (idle again), {size_text(r['line_bytes'])} lines",
                    round(r["rss_after_mb"], 1), "-", "-"] for r in floods]))
    print(table(["flood lines", "seconds", "MB/s through the daemon", "features passed",
                 "session history on disk MB"],
                [[size_text(r["line_bytes"]), round(r["seconds"], 1),
                  round(r["agents"] * r["megabytes_each"] * 1.048576 / r["seconds"], 1),
                  f"{r['passed']}/{r['agents']}", round(r["db_mb"], 1)] for r in floods]))
    checks = [{"target": f"idle RSS <= {TARGET_IDLE_MB} MB", "value": round(idle["rss_mb"], 1),
               "met": idle["rss_mb"] <= TARGET_IDLE_MB}]
    checks += [{"target": f"peak RSS <= {TARGET_FLOOD_MB} MB ({size_text(r['line_bytes'])} lines)",
                "value": round(r["peak_rss_mb"], 1), "met": r["peak_rss_mb"] <= TARGET_FLOOD_MB}
               for r in floods]
    print()
    emit_json("memory", {"machine": info, "idle": idle, "floods": floods, "checks": checks,
                         "all_met": all(c["met"] for c in checks)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
