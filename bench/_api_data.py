"""The project of bench/api.py: a git repository with 8 tracks, a features.json of 2,000 features
and an .orchestrator/orchestrator.db holding 50,000 sessions and 1,000,000 events, written
through the product's own Database (its schema and migrations; batched inserts).

The data is deterministic (seeded) and shaped like a long real run: sessions of every phase and
agent, prompts of 1.5-6 KB, final answers, failures; each session has its `session` start and end
events and ~18 normalised output events (text, tool calls and results, usage, result), except one
session that has 100,000 output events (the dashboard's big session page).
"""
from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path

from _events_common import make_project

from agent_orchestrator.db import Database
from agent_orchestrator.events import encode_data

TRACKS = 8
FEATURES = 2000
SESSIONS = 50_000
EVENTS = 1_000_000
BIG_EVENTS = 100_000
PHASES = (("implement", 50), ("verify", 30), ("fix", 15), ("conflict", 5))
AGENTS = (("claude", "claude-opus-5-5", 60), ("codex", "gpt-5.5-codex", 25), ("gemini", "gemini-3.8-pro", 15))
STATUSES = (("passed", 62), ("failed", 10), ("open", 25), ("blocked", 3))
WORDS = ("the login form validates the email field before it posts the request and shows the error "
         "under the input when the server answers with a problem the session cookie is refreshed "
         "every hour tests cover the happy path and the failures migration adds an index on users "
         "email the dashboard lists the invoices by month with totals and a csv export").split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _weighted(rng: random.Random, items):
    total = sum(i[-1] for i in items)
    pick = rng.uniform(0, total)
    for item in items:
        pick -= item[-1]
        if pick <= 0:
            return item
    return items[-1]


def track_of(feature_id: int) -> str:
    return f"t{feature_id % TRACKS}"


def features(rng: random.Random) -> list[dict]:
    out = []
    for fid in range(1, FEATURES + 1):
        status = _weighted(rng, STATUSES)[0]
        item = {"id": fid, "category": f"c{fid % TRACKS}", "name": f"Feature {fid}: {_text(rng, 4)}",
                "description": _text(rng, 40), "steps": [_text(rng, 8) for _ in range(rng.randint(2, 5))],
                "status": status, "priority": rng.randint(0, 5)}
        if fid > 10 and rng.random() < 0.2:
            item["dependsOn"] = sorted({rng.randint(1, fid - 1) for _ in range(rng.randint(1, 3))})
        if status != "open":
            item["branch"] = f"feature/{fid}-feature-{fid}"
            item["attempts"] = rng.randint(1, 3)
            item["cost_usd"] = round(rng.uniform(0.05, 6), 4)
            item["updated_at"] = "2026-11-20T10:00:00Z"
        if status == "failed":
            item["failure_category"] = rng.choice(("implementation", "verification", "environment"))
            item["failure_reason"] = "verification failed: " + _text(rng, 25)
        elif status == "blocked":
            item["failure_category"] = "dependency"
            item["failure_reason"] = "depends on a feature that failed"
        out.append(item)
    return out


def make(root: Path, *, seed: int = 9) -> dict:
    """Build the project in `root` (a new directory); returns what the measurements need."""
    rng = random.Random(seed)
    feats = features(rng)
    tracks = [{"name": f"t{i}", "categories": [f"c{i}"], "isDefault": i == 0} for i in range(TRACKS)]
    make_project(root, {"tracks": tracks, "agent": {"preferred": "claude"}}, feats)
    db = Database(root / ".orchestrator" / "orchestrator.db")
    try:
        return _fill(db, rng, root)
    finally:
        db.close()


def _fill(db: Database, rng: random.Random, root: Path) -> dict:
    started = time.time() - 30 * 86400
    big = SESSIONS // 2
    per_session = (EVENTS - BIG_EVENTS) // SESSIONS  # the start and end events included
    sessions, rows = [], []
    event_id = 0
    now = started
    prompt_base = (root / "README.md").read_text() + _text(rng, 200)

    def flush_events(force: bool = False) -> None:
        if rows and (force or len(rows) >= 20000):
            db.insert_events(rows)
            rows.clear()

    def flush_sessions(force: bool = False) -> None:
        if sessions and (force or len(sessions) >= 2000):
            with db._write() as conn:  # the bench fills the history in bulk, in the product's schema
                conn.executemany(
                    "INSERT INTO sessions (id, feature_id, track, phase, agent, model, agent_session_id,"
                    " attempt, prompt, cwd, started_at, ended_at, status, exit_code, exit_reason, cost_usd,"
                    " input_tokens, output_tokens, num_turns, error, failure_category, final_text,"
                    " output_bytes, truncated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    sessions)
            sessions.clear()

    for sid in range(1, SESSIONS + 1):
        fid = rng.randint(1, FEATURES)
        track = track_of(fid)
        phase = _weighted(rng, PHASES)[0]
        agent, model, _ = _weighted(rng, AGENTS)
        failed = rng.random() < 0.2
        duration = rng.uniform(30, 900)
        now += rng.uniform(10, 90)
        end = now + duration
        prompt = (f"# {phase.capitalize()} feature #{fid}: Feature {fid}\n\n" + prompt_base
                  + _text(rng, rng.randint(100, 900)))
        status = "failed" if failed else "succeeded"
        category = rng.choice(("implementation", "verification", "environment", "rate_limit")) if failed else None
        sessions.append((sid, fid, track, phase, agent, model, str(uuid.UUID(int=rng.getrandbits(128))),
                         rng.randint(1, 3), prompt, f"{root}/.orchestrator/worktrees/feature-{fid}", now, end,
                         status, 1 if failed else 0, "exited", round(rng.uniform(0.01, 2.5), 4),
                         rng.randint(2000, 400000), rng.randint(100, 30000), rng.randint(1, 60),
                         ("verifier gave no verdict: " + _text(rng, 12)) if failed else None, category,
                         _text(rng, rng.randint(40, 300)), rng.randint(1000, 400000), 0))
        head = {"id": sid, "feature_id": fid, "track": track, "phase": phase, "agent": agent}
        event_id += 1
        rows.append((event_id, "session", sid, encode_data({**head, "status": "running"}), now))
        outputs = BIG_EVENTS if sid == big else per_session - 2
        for n in range(outputs):
            kind = n % 3 if n < outputs - 2 else (3 if n == outputs - 2 else 4)
            if kind == 0:
                ev = {"kind": "text", "text": f"step {n}: " + _text(rng, rng.randint(8, 40)), "data": {}}
            elif kind == 1:
                ev = {"kind": "tool_call", "text": "Bash", "data": {
                    "id": f"toolu_{sid}_{n}", "name": "Bash",
                    "input": {"command": f"grep -rn 'TODO' src/ | head -{n % 50}", "description": "Find TODOs"}}}
            elif kind == 2:
                output = "\n".join(f"src/app_{i}.py:{i * 7}: # TODO {_text(rng, 6)}" for i in range(rng.randint(1, 12)))
                ev = {"kind": "tool_result", "text": output, "data": {
                    "id": f"toolu_{sid}_{n - 1}", "is_error": rng.random() < 0.03, "output": output}}
            elif kind == 3:
                ev = {"kind": "usage", "text": "", "data": {"input_tokens": 5831, "output_tokens": 82,
                                                             "cache_read_tokens": 0, "cost_usd": 0.02}}
            else:
                ev = {"kind": "result", "text": _text(rng, 20), "data": {
                    "success": not failed, "cost_usd": 0.02, "num_turns": 4, "subtype": "success"}}
            event_id += 1
            now += 0.01
            rows.append((event_id, "output", sid, encode_data(
                {"session_id": sid, "feature_id": fid, "track": track, "event": ev}), now))
            flush_events()
        event_id += 1
        rows.append((event_id, "session", sid, encode_data({**head, "status": status, "cost_usd": 0.02}), end))
        flush_sessions()
        flush_events()
    flush_sessions(force=True)
    flush_events(force=True)
    info = {"sessions": SESSIONS, "events": event_id, "features": FEATURES, "tracks": TRACKS,
            "big_session": big, "big_session_events": BIG_EVENTS,
            "small_session": big + 1, "small_session_events": per_session - 2}
    (root / ".orchestrator" / "bench-api.json").write_text(json.dumps(info))
    return info
