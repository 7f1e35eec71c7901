#!/usr/bin/env python3
"""Event pipeline benchmark: agent output -> parsing -> event bus -> SQLite and 10 SSE clients.

    python bench/events.py [--lines 200000] [--clients 10] [--repeat 5]
                           [--paced-lines 20000 --paced-rate 2000] [--profile DIR] [--py-spy FILE] [--keep]

What it does, all in one run on this machine:

1. The floor: the same stamped stream-json lines parsed in one process by the product's own
   parser (decode + ClaudeParser.feed, best of 3), and by bare json.loads for reference; measured
   before and after the runs, the faster counts.
2. Flood, --repeat times: a scratch git project whose `claude` is bench/fake_agent/flood_claude;
   the real daemon (`python -m agent_orchestrator start --port 0`) in its own process; 10 SSE
   clients of /api/events in another process (bench/_events_clients.py); POST /api/start; the
   agent prints --lines stream-json lines as fast as it can. Each line carries the time it was
   written; each client records, per output event, its arrival time minus that stamp.
   Throughput = lines / (the later of: the last event reaching every client, the last event
   being in the database (polled every 5 ms) - the first line's write time). The median run is
   reported; the latencies of all runs are pooled.
3. Paced: the same with the agent printing --paced-lines at --paced-rate lines per second (more
   than a busy set of tracks produces), for the latency when the pipeline is not saturated.

Prints tables and a final line of JSON. Ratios are against the floor measured in the same run.
Before each measurement it waits (at most 2 min) until other work leaves the CPUs at most 25 %
busy (--quiet-below); each run also reports the CPU time the machine spent on other work
meanwhile ("other CPU s"), and a warning when that shows the run was disturbed. --profile DIR runs the first flood's daemon
under cProfile (its event-loop thread) and writes DIR/daemon.prof and DIR/daemon.txt; --py-spy
FILE samples every thread of it (py-spy must be installed); the figures of a profiled run are
slower.
"""
from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path

from _events_common import (BENCH_DIR, DaemonProcess, announce, make_project, percentile,
                            print_table, system_busy_seconds, thread_cpu)
from _pipeline_common import wait_for_quiet
from _events_lines import all_lines

from agent_orchestrator.agents.claude import ClaudeParser

FLOOD_AGENT = BENCH_DIR / "fake_agent" / "flood_claude"
TARGET_RATIO = 0.25
TARGET_P99_MS = 10.0
# CPU the machine spends outside the benchmark's processes, per second of a flood run: on a quiet
# machine about 0.5 (kernel work for loopback TCP and pipes, the daemon's git commands); above
# this, something else was running
NOISE_CPU_PER_SECOND = 0.75


def floor(lines: int) -> dict:
    """Plain parsing of the same lines in this one process: the product's parser and bare JSON."""
    raw = all_lines(lines)
    best_parser = best_json = float("inf")
    events = 0
    for _ in range(3):
        parser = ClaudeParser()
        feed = parser.feed
        start = time.perf_counter()
        count = 0
        for line in raw:
            count += len(feed(line.decode("utf-8", errors="replace")))
        best_parser = min(best_parser, time.perf_counter() - start)
        events = count
    loads = json.loads
    for _ in range(3):
        start = time.perf_counter()
        for line in raw:
            loads(line)
        best_json = min(best_json, time.perf_counter() - start)
    return {"lines": len(raw), "events": events, "parser_seconds": best_parser,
            "parser_events_per_s": events / best_parser, "json_seconds": best_json,
            "json_lines_per_s": len(raw) / best_json}


class DbPoller(threading.Thread):
    """Samples MAX(id) of the events table every `interval` s: (time.time(), max id)."""

    def __init__(self, db_path: Path, interval: float = 0.005):
        super().__init__(daemon=True)
        self.db_path = db_path
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        con = None
        while not self.stop.is_set():
            try:
                if con is None:
                    con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
                value = int(con.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
            except sqlite3.Error:  # the file is being created
                value = 0
            self.samples.append((time.time(), value))
            self.stop.wait(self.interval)
        if con is not None:
            con.close()

    def reached(self, event_id: int) -> float | None:
        for when, value in self.samples:
            if value >= event_id:
                return when
        return None


def run_phase(name: str, workdir: Path, *, lines: int, clients: int, rate: float,
              profile: Path | None, pyspy: Path | None = None) -> dict:
    project = make_project(workdir / name, {
        "agent": {"preferred": "claude", "maxRetries": 0, "maxOutputBytes": 10 ** 12,
                  "envPassthrough": ["FLOOD_*"], "killGraceSeconds": 1},
        "agents": {"claude": {"command": [sys.executable, str(FLOOD_AGENT)]}},
    }, [{"id": 1, "category": "core", "name": "Flood", "description": "Print a lot.",
         "steps": ["Print"], "status": "open"}])
    report = workdir / f"{name}-agent.json"
    prefix = workdir / f"{name}-clients"
    daemon = DaemonProcess(project, env={"FLOOD_LINES": str(lines), "FLOOD_RATE": str(rate),
                                         "FLOOD_REPORT": str(report)}, profile=profile)
    poller = None
    spy = None
    if pyspy is not None:
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(daemon.pid), "--rate", "250", "--threads",
                                "--format", "raw", "--output", str(pyspy), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    try:
        client_proc = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "_events_clients.py"), str(daemon.port), str(clients),
             str(lines), str(prefix)], stdout=subprocess.PIPE, text=True, cwd=str(BENCH_DIR))
        if client_proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the SSE clients did not connect")
        poller = DbPoller(project / ".orchestrator" / "orchestrator.db")
        poller.start()
        cpu_before = daemon.cpu_seconds()
        busy_before, self_before, wall_before = system_busy_seconds(), time.process_time(), time.time()
        status, body = daemon.request("POST", "/api/start")
        if status != 200:
            raise RuntimeError(f"POST /api/start: {status} {body!r}")
        line = client_proc.stdout.readline().strip()
        client_proc.wait(60)
        if line != "done":
            raise RuntimeError("the SSE clients did not finish")
        summary = json.loads((prefix.with_name(prefix.name + ".json")).read_text())
        last_id = max(c["last_id"] for c in summary["clients"])
        deadline = time.monotonic() + 120
        while poller.reached(last_id) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        poller.stop.set()
        poller.join()
        cpu_daemon = daemon.cpu_seconds() - cpu_before
        threads = thread_cpu(daemon.pid)
        busy = system_busy_seconds() - busy_before
        own = time.process_time() - self_before
        wall = time.time() - wall_before
        agent = json.loads(report.read_text()) if report.exists() else {}
    except BaseException:
        print("".join(daemon.output[-40:]), file=sys.stderr)
        raise
    finally:
        if poller is not None:
            poller.stop.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        code = daemon.stop()
    if profile is not None:
        with open(profile.with_suffix(".txt"), "w") as out:
            stats = pstats.Stats(str(profile), stream=out)
            stats.sort_stats("cumulative").print_stats(40)
            stats.sort_stats("tottime").print_stats(40)

    per_client = summary["clients"]
    incomplete = [i for i, c in enumerate(per_client) if not c["complete"] or c["frames"] != lines]
    if incomplete:
        print(f"{name}: {len(incomplete)} clients did not get every event: "
              f"{[(c['frames'], c['gaps']) for c in per_client]}\n" + "".join(daemon.output[-40:]), file=sys.stderr)
    latencies = array("d")
    worst_client_p99 = 0.0
    for i in range(clients):
        values = array("d")
        with open(f"{prefix}.{i}.lat", "rb") as handle:
            values.frombytes(handle.read())
        ordered = sorted(values)
        worst_client_p99 = max(worst_client_p99, percentile(ordered, 99))
        latencies.extend(values)
    ordered = sorted(latencies)
    t0 = min(c["first_stamp"] for c in per_client if c["first_stamp"] is not None)
    t_sse = max(c["last_arrival"] for c in per_client)
    t_db = poller.reached(last_id)
    t_end = max(t_sse, t_db or t_sse)
    return {
        "lines": lines, "clients": clients, "rate": rate or None,
        "incomplete_clients": incomplete, "gaps": sum(c["gaps"] for c in per_client),
        "seconds": t_end - t0, "events_per_s": lines / (t_end - t0),
        "sse_events_per_s": lines / (t_sse - t0),
        "db_events_per_s": lines / (t_db - t0) if t_db else None,
        "agent_write_seconds": (agent["last"] - agent["first"]) if agent else None,
        "agent_cpu_seconds": agent.get("cpu_seconds"),
        "latency_ms": {**latency_stats(ordered), "worst_client_p99": worst_client_p99 * 1000},
        "_latencies": latencies,
        "daemon_cpu_seconds": cpu_daemon,
        # CPU the machine spent on anything else than this benchmark during the run (noise)
        "other_cpu_seconds": round(busy - cpu_daemon - summary["cpu_seconds"] - own
                                   - (agent.get("cpu_seconds") or 0.0), 2),
        "wall_seconds": round(wall, 2),
        "daemon_thread_cpu_seconds": {"main": threads.pop(daemon.pid, 0.0),
                                      "others": sorted((round(v, 2) for v in threads.values() if v >= 0.05),
                                                       reverse=True)}, "clients_cpu_seconds": summary["cpu_seconds"],
        "daemon_exit": code,
    }


def settle(project: Path, *, keep: bool) -> None:
    """Between runs: drop the run's project (a history of ~200 MB) and wait until the kernel has
    written back what the run left dirty, so the next run does not share the CPU with it."""
    if not keep:
        shutil.rmtree(project, ignore_errors=True)
    os.sync()


def latency_stats(values) -> dict:
    ordered = sorted(values)
    return {"p50": percentile(ordered, 50) * 1000, "p90": percentile(ordered, 90) * 1000,
            "p99": percentile(ordered, 99) * 1000, "max": ordered[-1] * 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=200_000, help="stamped lines of the flood (200000)")
    ap.add_argument("--clients", type=int, default=10, help="SSE clients (10)")
    ap.add_argument("--repeat", type=int, default=5, help="flood runs; the median one is reported (5)")
    ap.add_argument("--paced-lines", type=int, default=20_000, help="lines of the paced run (20000; 0: skip)")
    ap.add_argument("--paced-rate", type=float, default=2000, help="lines per second of the paced run (2000)")
    ap.add_argument("--profile", type=Path, help="profile the first flood's daemon with cProfile into this directory")
    ap.add_argument("--py-spy", dest="pyspy", type=Path,
                    help="sample the first flood's daemon (all threads) with py-spy into this collapsed-stack "
                         "file (paced-FILE for the paced run)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch projects (printed)")
    ap.add_argument("--quiet-below", type=float, default=0.25,
                    help="before each measurement wait (at most 2 min) until other work leaves the CPUs at most "
                         "this busy (0.25; 1: never wait)")
    args = ap.parse_args(argv)

    info = announce()
    workdir = Path(tempfile.mkdtemp(prefix="ao-bench-events-"))
    floods: list[dict] = []
    try:
        wait_for_quiet(args.quiet_below)
        print(f"floor: parsing {args.lines} lines in one process ...", flush=True)
        floors = [floor(args.lines)]
        profile = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profile = args.profile.resolve() / "daemon.prof"
        for n in range(args.repeat):
            wait_for_quiet(args.quiet_below)
            print(f"flood {n + 1}/{args.repeat}: {args.lines} lines, {args.clients} SSE clients ...", flush=True)
            floods.append(run_phase(f"flood{n + 1}", workdir, lines=args.lines, clients=args.clients, rate=0,
                                    profile=profile if n == 0 else None, pyspy=args.pyspy if n == 0 else None))
            settle(workdir / f"flood{n + 1}", keep=args.keep)
        paced = None
        if args.paced_lines:
            wait_for_quiet(args.quiet_below)
            print(f"paced: {args.paced_lines} lines at {args.paced_rate:g}/s, {args.clients} SSE clients ...",
                  flush=True)
            paced = run_phase("paced", workdir, lines=args.paced_lines, clients=args.clients,
                              rate=args.paced_rate, profile=None,
                              pyspy=args.pyspy.with_name("paced-" + args.pyspy.name) if args.pyspy else None)
        wait_for_quiet(args.quiet_below)
        print("floor again, after the runs ...", flush=True)
        floors.append(floor(args.lines))
    finally:
        if args.keep:
            print(f"scratch projects kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    # the faster of the two floors: the ratio is not flattered by a floor measured while busy
    base = max(floors, key=lambda f: f["parser_events_per_s"])
    flood = sorted(floods, key=lambda f: f["events_per_s"])[len(floods) // 2]
    pooled = array("d")
    for run in floods:
        pooled.extend(run.pop("_latencies"))
    pooled_latency = latency_stats(pooled)
    if paced is not None:
        paced.pop("_latencies")
    floor_rate = base["parser_events_per_s"]
    ratio = flood["events_per_s"] / floor_rate
    ratio_json = flood["events_per_s"] / base["json_lines_per_s"]
    rows = [("floor: decode + ClaudeParser.feed, one process (best of before/after)", f"{floor_rate:,.0f}", "1.00"),
            ("reference: bare json.loads of each line", f"{base['json_lines_per_s']:,.0f}",
             f"{base['json_lines_per_s'] / floor_rate:.2f}")]
    for n, run in enumerate(floods, 1):
        mark = " (median)" if run is flood else ""
        rows.append((f"pipeline run {n}{mark}: agent -> daemon -> SQLite + {args.clients} SSE clients",
                     f"{run['events_per_s']:,.0f}", f"{run['events_per_s'] / floor_rate:.2f}"))
    rows += [("  median run: last event at every SSE client", f"{flood['sse_events_per_s']:,.0f}",
              f"{flood['sse_events_per_s'] / floor_rate:.2f}"),
             ("  median run: last event in the database", f"{flood['db_events_per_s'] or 0:,.0f}",
              f"{(flood['db_events_per_s'] or 0) / floor_rate:.2f}")]
    print_table("Throughput (events per second)", rows, ("", "events/s", "x floor"))
    rows = []
    for n, run in enumerate(floods, 1):
        lat = run["latency_ms"]
        rows.append((f"flood run {n} (as fast as the agent can)", run["lines"], f"{lat['p50']:.2f}", f"{lat['p90']:.2f}",
                     f"{lat['p99']:.2f}", f"{lat['max']:.1f}", f"{lat['worst_client_p99']:.2f}",
                     f"{run['daemon_cpu_seconds']:.1f}", f"{run['other_cpu_seconds']:.1f}", _delivery(run)))
    lat = pooled_latency
    rows.append((f"flood, all {len(floods)} runs", sum(r["lines"] for r in floods), f"{lat['p50']:.2f}",
                 f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", f"{lat['max']:.1f}", "", "", "", ""))
    if paced is not None:
        lat = paced["latency_ms"]
        rows.append((f"paced ({args.paced_rate:g} lines/s)", paced["lines"], f"{lat['p50']:.2f}", f"{lat['p90']:.2f}",
                     f"{lat['p99']:.2f}", f"{lat['max']:.1f}", f"{lat['worst_client_p99']:.2f}",
                     f"{paced['daemon_cpu_seconds']:.1f}", f"{paced['other_cpu_seconds']:.1f}", _delivery(paced)))
    print_table(f"Latency: line written by the agent -> arrival at each of {args.clients} SSE clients (ms)", rows,
                ("run", "lines", "p50", "p90", "p99", "max", "worst client p99", "daemon CPU s", "other CPU s",
                 "delivery"))
    noisy = [n for n, run in enumerate(floods, 1)
             if run["other_cpu_seconds"] > NOISE_CPU_PER_SECOND * run["wall_seconds"]]
    if noisy:
        print(f"\nwarning: during flood run(s) {noisy} the machine spent more than {NOISE_CPU_PER_SECOND} CPU-seconds "
              "per second on other work (\"other CPU s\"): those figures are disturbed; run again on a quiet machine")
    complete = all(not r["incomplete_clients"] and not r["gaps"] for r in floods + ([paced] if paced else []))
    targets = {
        "pipeline_ratio": {"target": f">= {TARGET_RATIO}", "value": round(ratio, 3),
                           "met": ratio >= TARGET_RATIO and complete},
        "sse_p99_ms": {"target": f"<= {TARGET_P99_MS}", "value": round(pooled_latency["p99"], 2),
                       "met": pooled_latency["p99"] <= TARGET_P99_MS and complete},
    }
    print("\nTargets: " + ", ".join(f"{k} {v['value']} ({v['target']}): {'met' if v['met'] else 'NOT met'}"
                                    for k, v in targets.items()))
    if args.profile:
        print(f"profile: {profile} and {profile.with_suffix('.txt')}")
    result = {"bench": "events", "machine": info, "noisy_runs": noisy, "floor": base, "floors": floors, "flood": flood,
              "flood_runs": floods, "flood_latency_ms": pooled_latency, "paced": paced,
              "ratio_vs_parser_floor": ratio, "ratio_vs_json_loads": ratio_json, "complete": complete,
              "targets": targets}
    print(json.dumps(result, separators=(",", ":")))
    return 0


def _delivery(run: dict) -> str:
    if not run["incomplete_clients"] and not run["gaps"]:
        return "all events, in order"
    return f"INCOMPLETE clients {run['incomplete_clients']}, gaps {run['gaps']}"


if __name__ == "__main__":
    sys.exit(main())
