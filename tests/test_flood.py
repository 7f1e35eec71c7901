"""Bounded resources: agents printing floods of output (huge lines, invalid UTF-8) cannot exhaust
the daemon's memory or disk; the output kept per session is capped with a visible note.

The peak memory of the `run` process (VmHWM) is printed; run with `-s` to see it. AO_FLOOD_MB sets
how much each of the 8 agents prints in the first test (default 100)."""
from __future__ import annotations

import os
import sqlite3
import time

from processes import output, start_run
from projects import feature, load_features, make_project

MEMORY_LIMIT_MB = 150
AGENTS = 8


def eight_tracks() -> tuple[list[dict], list[dict]]:
    tracks = [{"name": f"t{i}", "categories": [f"c{i}"], "isDefault": i == 0}
              for i in range(AGENTS)]
    return tracks, [feature(i + 1, f"c{i}") for i in range(AGENTS)]


def run_measuring_peak(repo, tmp_path, env) -> tuple[int, float, float]:
    """Run to the end; (exit code, peak resident memory of `run` in MB, seconds)."""
    started = time.monotonic()
    proc = start_run(repo, tmp_path, env=env)
    peak_kb = 0
    status = f"/proc/{proc.pid}/status"
    while proc.poll() is None:
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    return proc.returncode, peak_kb / 1024, time.monotonic() - started


def session_output(repo) -> list[tuple]:
    con = sqlite3.connect(repo / ".orchestrator" / "orchestrator.db")
    try:
        rows = con.execute("SELECT id, output_bytes, truncated FROM sessions ORDER BY id")
        rows = rows.fetchall()
        texts = {sid: "".join(r[0] for r in con.execute(
            "SELECT data FROM events WHERE session_id = ? AND type = 'output'", (sid,)))
            for sid, _, _ in rows}
    finally:
        con.close()
    return [(sid, size, truncated, texts[sid]) for sid, size, truncated in rows]


def state_size_mb(repo) -> float:
    return sum(p.stat().st_size for p in (repo / ".orchestrator").glob("orchestrator.db*")) / 1e6


def test_eight_agents_flooding_10mb_lines_stay_bounded(git_repo, tmp_path):
    megabytes = int(os.environ.get("AO_FLOOD_MB") or 100)
    tracks, features = eight_tracks()
    repo = make_project(git_repo, features, tracks=tracks)
    env = {"FAKE_AGENT_SCENARIO": "flood", "FAKE_FLOOD_BYTES": str(megabytes << 20),
           "FAKE_FLOOD_LINE_BYTES": str(10 << 20)}
    code, peak, seconds = run_measuring_peak(repo, tmp_path, env)
    print(f"\nflood: {AGENTS} agents x {megabytes} MB in 10 MB lines: run peak memory "
          f"{peak:.0f} MB (VmHWM), {seconds:.1f} s, state {state_size_mb(repo):.1f} MB")
    assert code == 0, output(tmp_path)[-3000:]
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    assert 0 < peak < MEMORY_LIMIT_MB
    rows = session_output(repo)
    assert len(rows) == AGENTS
    for sid, size, truncated, text in rows:
        # each 10 MB line is kept as its first 64 K characters with a note giving its size
        assert "…[line truncated: 10485759 bytes]" in text  # 10 MB with its newline
        assert size < 2 << 20
    assert state_size_mb(repo) < 50


def test_output_kept_per_session_is_capped_with_a_note(git_repo, tmp_path):
    tracks, features = eight_tracks()
    cap = 1 << 20
    repo = make_project(git_repo, features, tracks=tracks, agent={"maxOutputBytes": cap})
    env = {"FAKE_AGENT_SCENARIO": "flood", "FAKE_FLOOD_BYTES": str(20 << 20),
           "FAKE_FLOOD_LINE_BYTES": str(4096)}
    code, peak, seconds = run_measuring_peak(repo, tmp_path, env)
    print(f"\nflood: {AGENTS} agents x 20 MB in 4 KB lines, maxOutputBytes 1 MB: run peak "
          f"memory {peak:.0f} MB, {seconds:.1f} s, state {state_size_mb(repo):.1f} MB")
    assert code == 0, output(tmp_path)[-3000:]
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    assert 0 < peak < MEMORY_LIMIT_MB
    for sid, size, truncated, text in session_output(repo):
        assert truncated == 1
        assert cap <= size < cap + 64 * 1024
        assert f"output truncated: more than {cap} bytes" in text
    assert state_size_mb(repo) < AGENTS * cap * 3 / 1e6 + 5
