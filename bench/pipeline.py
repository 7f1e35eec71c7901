#!/usr/bin/env python3
"""Pipeline overhead: what the orchestrator adds to the agents' own time.

For each setting (F features on N tracks, agents that take D seconds, verification disabled) a
fresh scratch project is run with `agent-orchestrator run` from this checkout, driven by the fast
fake agent bench/fake_agent/claude (prints Claude stream-json, sleeps D, commits one file).

  makespan           wall time of the `run` process, from spawn to exit (what a user waits)
  ideal              ceil(F/N) x D: the agents' time alone, perfectly packed on the N tracks
  ratio              makespan / ideal
  overhead/feature   (makespan - ideal) x N / F: the track time lost per feature, in seconds
  in-process         the same from the orchestrator's start event to the last feature's `passed`
                     event: without the interpreter's start-up, opening the project and shutdown
  fixed cost         wall time of `run` on an empty backlog: start-up and shutdown alone

In the same run, the raw git floor: the git commands one feature needs, run directly and one after
the other in a scratch repository (worktree add with a new branch, the agent's add + commit, merge
--no-ff into the base branch, worktree remove), plus the one more merge the pipeline does (the base
branch into the feature branch, before the feature branch goes back into the base branch).

Usage: python bench/pipeline.py [--settings F,N,D ...] [--repeat R] [--count-git]
                                [--profile [F,N,D ...]] [--quiet-below SHARE] [--keep]
Prints tables and a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pipeline_common import (  # noqa: E402
    BASE, Timer, describe_machine, emit_json, feature_statuses, git, init_repo, machine,
    make_project, product_argv, product_env, remove_tree, scratch_dir, table, wait_for_quiet,
)

DEFAULT_SETTINGS = ["12,3,1", "24,4,1", "200,16,2", "24,4,0", "200,16,0"]
TARGET_RATIO = 1.05
TARGET_OVERHEAD = 0.05
TARGET_FLOOR_MULTIPLE = 3.0
RATIO_TARGET_SETTINGS = {(24, 4, 1.0), (200, 16, 2.0)}


# ---------------------------------------------------------------- the product

def run_setting(features: int, tracks: int, delay: float, *, keep: bool = False,
                git_log: Path | None = None, path_prefix: str | None = None,
                profile: Path | None = None) -> dict:
    work = scratch_dir(f"ao-bench-{features}x{tracks}-")
    repo = make_project(work / "repo", features=features, tracks=tracks)
    env = {"FAKE_AGENT_DELAY": f"{delay:g}"}
    argv = product_argv("run", "--project", str(repo))
    if profile is not None:
        env["BENCH_PROFILE_OUT"] = str(profile)
        argv = [sys.executable, str(Path(__file__).resolve().parent / "_pipeline_profile.py"),
                *argv[3:]]
    if git_log is not None:
        env["BENCH_GIT_LOG"] = str(git_log)
    if path_prefix:
        env["PATH"] = path_prefix + os.pathsep + os.environ.get("PATH", "")
    out = open(work / "run.out", "w")
    try:
        spawned = time.time()
        with Timer() as t:
            code = subprocess.call(argv, cwd=work,
                                   env=product_env(env), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    finally:
        out.close()
    statuses = feature_statuses(repo)
    passed = sum(1 for s in statuses.values() if s == "passed")
    if code != 0 or passed != features:
        tail = (work / "run.out").read_text()[-3000:]
        raise SystemExit(f"run failed (exit {code}, {passed}/{features} passed) in {work}:\n{tail}")
    result = {"features": features, "tracks": tracks, "delay": delay, "makespan": t.seconds,
              "dir": str(work)}
    if features:
        start, end = _in_process_span(repo)
        result.update(in_process=end - start, startup=start - spawned,
                      shutdown=spawned + t.seconds - end)
    if profile is not None:
        result["timeline"] = _timeline(repo)
    if not keep:
        remove_tree(work)
    return result


def _events(repo: Path, *types: str) -> list[tuple[str, float, dict]]:
    """(type, ts, data) of the run's events of these types, in order, from its history."""
    con = sqlite3.connect(repo / ".orchestrator" / "orchestrator.db")
    try:
        rows = con.execute(f"SELECT type, ts, data FROM events WHERE type IN "
                           f"({', '.join('?' * len(types))}) ORDER BY id", types).fetchall()
    finally:
        con.close()
    return [(type_, ts, json.loads(data)) for type_, ts, data in rows]


def _in_process_span(repo: Path) -> tuple[float, float]:
    rows = _events(repo, "status", "feature")
    start = next(ts for type_, ts, d in rows if type_ == "status" and d.get("state") == "running")
    end = max(ts for type_, ts, d in rows if type_ == "feature" and d.get("status") == "passed")
    return start, end


def _timeline(repo: Path) -> dict[int, dict]:
    """Per feature: when it was claimed, its agent ran, it merged and passed, and its track."""
    out: dict[int, dict] = {}
    for type_, ts, d in _events(repo, "feature", "session", "merge", "track"):
        fid = d.get("id") if type_ == "feature" else d.get("feature_id")
        if fid is None:
            continue
        rec = out.setdefault(int(fid), {})
        if type_ == "feature":
            rec.setdefault(d.get("status"), ts)
        elif type_ == "session":
            rec.setdefault("session_" + str(d.get("status")), ts)
        elif type_ == "merge":
            rec["merged"] = ts
        else:
            rec["track"] = d.get("name")
    return out


# (name, from, to, on the track?). A track runs one agent at a time: between one agent's exit and
# the next agent's spawn it only claims the next feature; the rest of a feature runs alongside.
# "prev:" marks take the time from the track's previous feature.
PROFILE_STEPS = (
    ("previous agent's exit -> next feature claimed", "prev:session_succeeded", "in_progress", True),
    ("claim -> agent spawned (status, fast-forward, prompt, session record, spawn)",
     "in_progress", "session_running", True),
    ("agent beyond D (its own git add + commit, exit)", "session_running", "session_succeeded",
     True),
    ("alongside: worktree made ahead (git worktree add -b)", "worktree_add_start",
     "worktree_add_end", False),
    ("alongside: look for uncommitted changes (git status)", "session_succeeded",
     "commit_check_end", False),
    ("alongside: did the agent commit? (git rev-list)", "commit_check_end",
     "merge_into_feature_start", False),
    ("alongside: merge base into feature (+ protected files)", "merge_into_feature_start",
     "merge_into_feature_end", False),
    ("alongside: wait for the merge lock", "merge_into_feature_end", "merge_into_base_start",
     False),
    ("alongside: merge into base, under the lock", "merge_into_base_start",
     "merge_into_base_end", False),
    ("alongside: worktree remove, push check", "merge_into_base_end", "worktree_remove_end",
     False),
    ("alongside: status passed, progress file", "worktree_remove_end", "passed", False),
)


def profile_report(result: dict, data: dict) -> dict:
    delay = result["delay"]
    timeline = result["timeline"]
    for fid, rec in data["steps"].items():
        timeline.setdefault(int(fid), {}).update(rec)
    by_track: dict[str, list[dict]] = {}
    for rec in timeline.values():
        if "passed" in rec and "in_progress" in rec:
            by_track.setdefault(rec.get("track", "?"), []).append(rec)
    samples: dict[str, list[float]] = {name: [] for name, *_ in PROFILE_STEPS}
    for recs in by_track.values():
        recs.sort(key=lambda r: r["in_progress"])
        for prev, rec in zip([None, *recs], recs):
            for name, a, b, _ in PROFILE_STEPS:
                source = prev if a.startswith("prev:") else rec
                a = a.removeprefix("prev:")
                if source is not None and a in source and b in rec:
                    samples[name].append(rec[b] - source[a] - (delay if a == "session_running" else 0))
    steps = {name: {"median_ms": 1000 * statistics.median(v), "mean_ms": 1000 * statistics.mean(v),
                    "max_ms": 1000 * max(v), "on_track": on_track}
             for name, _, _, on_track in PROFILE_STEPS if (v := samples[name])}
    git_rows = {name: {"count": len(v), "per_feature": len(v) / result["features"],
                       "median_ms": 1000 * statistics.median(v), "total_s": sum(v)}
                for name, v in data["git"].items()}
    writes = data["features_json_writes"]
    return {"steps": steps,
            "sum_of_means_ms": sum(s["mean_ms"] for s in steps.values() if s["on_track"]),
            "git": dict(sorted(git_rows.items(), key=lambda kv: -kv[1]["total_s"])),
            "features_json_writes": {"count": len(writes),
                                     "median_ms": 1000 * statistics.median(writes) if writes else 0}}


def figures(r: dict) -> dict:
    f, n, d = r["features"], r["tracks"], r["delay"]
    ideal = math.ceil(f / n) * d
    r = dict(r)
    r["ideal"] = ideal
    r["ratio"] = r["makespan"] / ideal if ideal else None
    r["overhead_per_feature"] = (r["makespan"] - ideal) * n / f
    r["in_process_ratio"] = r["in_process"] / ideal if ideal else None
    r["in_process_overhead_per_feature"] = (r["in_process"] - ideal) * n / f
    return r


def fixed_cost(runs: int = 3) -> float:
    """Median wall time of `run` with nothing to do: interpreter, imports, opening the project,
    recovery checks, shutdown."""
    return statistics.median(run_setting(0, 1, 0.0)["makespan"] for _ in range(runs))


# ---------------------------------------------------------------- the raw git floor

FLOOR_STEPS = ("worktree add", "commit", "merge base into feature", "merge into base",
               "worktree remove")
MINIMAL_STEPS = ("worktree add", "commit", "merge into base", "worktree remove")


def git_floor(count: int) -> dict:
    """Per-feature time of each raw git step, run directly (one git process per command, like the
    product). Feature k+1's worktree is created before feature k is merged, so that merging the
    base branch into a feature branch is a real merge, as it is when tracks run concurrently."""
    work = scratch_dir("ao-bench-floor-")
    repo = init_repo(work / "repo")
    git(repo, "branch", BASE)
    integration = work / "integration"
    git(repo, "worktree", "add", "-q", str(integration), BASE)
    times = [dict.fromkeys(FLOOR_STEPS, 0.0) for _ in range(count + 1)]

    def timed(i: int, step: str, cwd: Path, *argv: str) -> None:
        started = time.perf_counter()
        subprocess.run(["git", *argv], cwd=cwd, check=True, capture_output=True)
        times[i][step] += time.perf_counter() - started

    def open_feature(i: int) -> Path:
        wt = work / f"wt-{i}"
        timed(i, "worktree add", repo, "worktree", "add", "-q", "-b", f"feature/{i}-x", str(wt), BASE)
        (wt / f"feature-{i}.txt").write_text(f"feature {i}\n")
        timed(i, "commit", wt, "add", "--", f"feature-{i}.txt")
        timed(i, "commit", wt, "commit", "-q", "-m", f"feat: feature {i}")
        return wt

    worktree = open_feature(1)
    for i in range(1, count + 1):
        following = open_feature(i + 1) if i < count else None
        timed(i, "merge base into feature", worktree, "merge", "-q", "--no-edit", BASE)
        timed(i, "merge into base", integration, "merge", "-q", "--no-ff", "-m",
              f"Merge feature #{i}", f"feature/{i}-x")
        timed(i, "worktree remove", repo, "worktree", "remove", "--force", str(worktree))
        worktree = following
    remove_tree(work)
    per_step = {s: statistics.median(t[s] for t in times[1:]) for s in FLOOR_STEPS}
    return {"features": count, "per_step": per_step,
            "minimal": statistics.median(sum(t[s] for s in MINIMAL_STEPS) for t in times[1:]),
            "pipeline_sequence": statistics.median(sum(t.values()) for t in times[1:])}


# ---------------------------------------------------------------- git processes per feature

def count_git(features: int = 8, tracks: int = 2) -> dict:
    """Run a small setting with a `git` shim first on PATH that logs the daemon's git commands
    (the fake agent's own commits are not logged: its environment is scrubbed)."""
    work = scratch_dir("ao-bench-gitcount-")
    shim_dir = work / "shim"
    shim_dir.mkdir()
    real_git = subprocess.run(["sh", "-c", "command -v git"], capture_output=True,
                              text=True).stdout.strip()
    shim = shim_dir / "git"
    shim.write_text("#!/bin/sh\n"
                    "[ -n \"$BENCH_GIT_LOG\" ] && printf '%s\\n' \"$*\" >> \"$BENCH_GIT_LOG\"\n"
                    f"exec {real_git} \"$@\"\n")
    shim.chmod(0o755)
    log = work / "git.log"
    run_setting(features, tracks, 0.0, git_log=log, path_prefix=str(shim_dir))
    lines = log.read_text().splitlines() if log.exists() else []
    remove_tree(work)
    by_command: dict[str, int] = {}
    for line in lines:
        words = line.split()
        while len(words) >= 2 and words[0] == "-c":
            words = words[2:]
        name = " ".join(words[:2]) if words[:1] == ["worktree"] else (words[0] if words else "?")
        by_command[name] = by_command.get(name, 0) + 1
    return {"features": features, "tracks": tracks, "total": len(lines),
            "per_feature": len(lines) / features,
            "by_command": dict(sorted(by_command.items(), key=lambda kv: -kv[1]))}


# ---------------------------------------------------------------- main

def parse_setting(text: str) -> tuple[int, int, float]:
    f, n, d = text.split(",")
    return int(f), int(n), float(d)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, metavar="F,N,D",
                    help=f"settings to run (default: {' '.join(DEFAULT_SETTINGS)})")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per setting; the one with the median makespan is reported")
    ap.add_argument("--floor-features", type=int, default=None,
                    help="also measure the raw git floor for this many features (it is measured "
                         "for the F of every setting anyway)")
    ap.add_argument("--count-git", action="store_true",
                    help="also count the daemon's git processes per feature (8 features, 2 tracks)")
    ap.add_argument("--quiet-below", type=float, default=0.25, metavar="SHARE",
                    help="before each measurement, wait (at most --max-wait s) until other "
                         "processes keep the CPUs at most this busy (default 0.25; 1 = never wait)")
    ap.add_argument("--max-wait", type=float, default=120.0)
    ap.add_argument("--profile", metavar="F,N,D", nargs="*",
                    help="also run these settings with every step of every feature timed and "
                         "show where a feature's track time goes (default 24,4,1 200,16,2)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch projects")
    args = ap.parse_args(argv)
    if args.profile is not None and not args.profile:
        args.profile = ["24,4,1", "200,16,2"]

    def quiet() -> float | None:
        return wait_for_quiet(args.quiet_below, args.max_wait) if args.quiet_below < 1 else None

    info = machine()
    print(f"machine: {describe_machine(info)}\n", flush=True)
    run_setting(2, 1, 0.0)  # warm-up, not counted: byte-code compiled, caches filled

    # the floor for as many features as each setting has: git gets slower as the tree grows
    floors: dict[int, dict] = {}
    extra = {args.floor_features} if args.floor_features else set()
    for count in sorted({parse_setting(t)[0] for t in args.settings} | extra):
        quiet()
        floors[count] = git_floor(count)
    print("raw git floor: median per feature, one git command after the other, in a repository "
          "growing by one file per feature")
    counts = sorted(floors)
    print(table(["step"] + [f"F={c} s" for c in counts],
                [[s] + [floors[c]["per_step"][s] for c in counts] for s in FLOOR_STEPS]
                + [["floor: worktree add + commit + merge into base + worktree remove"]
                   + [floors[c]["minimal"] for c in counts],
                   ["with the pipeline's second merge (base into feature)"]
                   + [floors[c]["pipeline_sequence"] for c in counts]]))
    quiet()
    fixed = fixed_cost()
    print(f"\nfixed cost: `run` on an empty backlog takes {fixed:.3f} s (start-up and shutdown)\n",
          flush=True)

    results = []
    for text in args.settings:
        f, n, d = parse_setting(text)
        runs = []
        for _ in range(max(1, args.repeat)):
            busy = quiet()
            run = run_setting(f, n, d, keep=args.keep)
            run["cpu_busy_before"] = busy
            runs.append(run)
        runs.sort(key=lambda r: r["makespan"])
        r = figures(runs[len(runs) // 2])
        r["runs"] = [round(x["makespan"], 3) for x in runs]
        r["floor"] = floors[f]["minimal"]
        r["floor_pipeline_sequence"] = floors[f]["pipeline_sequence"]
        results.append(r)
        print(f"  F={f} N={n} D={d:g}: makespan {r['makespan']:.2f} s (ideal {r['ideal']:g} s), "
              f"overhead/feature {r['overhead_per_feature']:.3f} s", flush=True)

    def ratio(value):
        return f"{value:.3f}x" if value else "-"

    print()
    print(table(["F", "N", "D", "makespan s", "ideal s", "ratio", "overhead/feature s", "vs floor",
                 "in-process s", "in-process ratio", "in-process overhead/feature s",
                 "start-up s", "shutdown s"],
                [[r["features"], r["tracks"], f"{r['delay']:g}", r["makespan"], f"{r['ideal']:g}",
                  ratio(r["ratio"]), r["overhead_per_feature"],
                  f"{r['overhead_per_feature'] / r['floor']:.2f}x", r["in_process"],
                  ratio(r["in_process_ratio"]), r["in_process_overhead_per_feature"],
                  r["startup"], r["shutdown"]] for r in results]))

    checks = []
    for r in results:
        key = [r["features"], r["tracks"], r["delay"]]
        if tuple(key) in RATIO_TARGET_SETTINGS:
            checks.append({"setting": key, "target": f"makespan <= {TARGET_RATIO} x ideal",
                           "value": round(r["ratio"], 4), "met": r["ratio"] <= TARGET_RATIO,
                           "in_process": round(r["in_process_ratio"], 4)})
        if r["delay"] > 0:
            checks.append({"setting": key, "target": f"overhead/feature <= {TARGET_OVERHEAD} s",
                           "value": round(r["overhead_per_feature"], 4),
                           "met": r["overhead_per_feature"] <= TARGET_OVERHEAD,
                           "in_process": round(r["in_process_overhead_per_feature"], 4)})
            multiple = r["overhead_per_feature"] / r["floor"]
            checks.append({"setting": key,
                           "target": f"overhead/feature <= {TARGET_FLOOR_MULTIPLE} x raw git floor",
                           "value": round(multiple, 3), "met": multiple <= TARGET_FLOOR_MULTIPLE,
                           "in_process": round(r["in_process_overhead_per_feature"]
                                               / r["floor"], 3)})
    print()
    print(table(["setting F,N,D", "target", "value", "met", "in-process value"],
                [[",".join(f"{x:g}" for x in c["setting"]), c["target"], c["value"],
                  "yes" if c["met"] else "NO", c["in_process"]] for c in checks]))

    gitcount = None
    if args.count_git:
        quiet()
        gitcount = count_git()
        print(f"\ngit processes started by the daemon: {gitcount['per_feature']:.1f} per feature "
              f"({gitcount['total']} for {gitcount['features']} features on {gitcount['tracks']} "
              f"tracks, D=0; the fake agent's own add + commit not counted)")
        print(table(["git command", "count"], [[k, v] for k, v in gitcount["by_command"].items()]))

    profiles = []
    for text in args.profile or []:
        f, n, d = parse_setting(text)
        quiet()
        out = scratch_dir("ao-bench-profile-") / "profile.json"
        result = figures(run_setting(f, n, d, profile=out))
        report = profile_report(result, json.loads(out.read_text()))
        remove_tree(out.parent)
        profiles.append({"setting": [f, n, d], "makespan": result["makespan"],
                         "in_process": result["in_process"], **report})
        rounds = math.ceil(f / n)
        print(f"\nwhere a feature's track time goes, F={f} N={n} D={d:g} (instrumented run: "
              f"makespan {result['makespan']:.2f} s, in-process {result['in_process']:.2f} s; "
              f"{rounds} features per track one after the other)")
        print(table(["step", "median ms", "mean ms", "max ms"],
                    [[name, s["median_ms"], s["mean_ms"], s["max_ms"]]
                     for name, s in report["steps"].items()]
                    + [["on the track, sum of the means: track time per feature beyond D", "",
                        report["sum_of_means_ms"], ""]]))
        print(table(["git command (daemon)", "per feature", "median ms", "total s"],
                    [[name, g["per_feature"], g["median_ms"], g["total_s"]]
                     for name, g in report["git"].items()]))
        w = report["features_json_writes"]
        print(f"features.json writes: {w['count']} ({w['count'] / f:.1f} per feature), median "
              f"{w['median_ms']:.2f} ms each")

    print()
    emit_json("pipeline", {
        "machine": info,
        "definitions": {
            "makespan": "wall time of `agent-orchestrator run` from spawn to exit",
            "ideal": "ceil(F/N) * D",
            "overhead_per_feature": "(makespan - ideal) * N / F: seconds of track time lost per feature",
            "in_process": "from the orchestrator's start event to the last `passed` event",
            "floor": "median per-feature time of the raw git steps run directly",
        },
        "floors": floors,
        "fixed_cost": round(fixed, 4),
        "results": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                     if k != "dir"} for r in results],
        "checks": checks,
        "git_processes": gitcount,
        "profiles": profiles,
        "all_met": all(c["met"] for c in checks),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
