from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from agent_orchestrator import db as dbmod
from agent_orchestrator.db import SCHEMA_VERSION, Database, StoreError
from agent_orchestrator.errors import NotFound, OrchestratorError


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / ".orchestrator" / "orchestrator.db")
    yield database
    database.close()


def new_session(db: Database, **overrides) -> int:
    args = dict(feature_id=1, track="core", phase="implement", agent="claude", attempt=1,
                prompt="# Implement feature #1: Login", cwd="/tmp/wt", started_at=100.0)
    args.update(overrides)
    return db.create_session(**args)


def raw_user_version(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


# schema and opening ---------------------------------------------------------------------------

def test_migrates_empty_file_and_reopens(tmp_path):
    path = tmp_path / "state" / "orchestrator.db"
    database = Database(path)
    assert database.schema_version == SCHEMA_VERSION == len(dbmod.MIGRATIONS)
    sid = new_session(database)
    database.close()
    assert raw_user_version(path) == SCHEMA_VERSION
    assert path.stat().st_mode & 0o777 == 0o600

    again = Database(path)
    try:
        assert again.schema_version == SCHEMA_VERSION
        assert again.get_session(sid)["prompt"] == "# Implement feature #1: Login"
    finally:
        again.close()


def test_wal_and_pragmas(db):
    with db._locked() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(events)")}
        assert "events_session" in indexes


def test_migrations_run_in_order_from_an_older_version(tmp_path, monkeypatch):
    calls = []
    real = list(dbmod.MIGRATIONS)
    nxt = len(real) + 1

    def extra(conn):
        calls.append(nxt)
        conn.execute("ALTER TABLE sessions ADD COLUMN extra TEXT")

    path = tmp_path / "o.db"
    Database(path).close()
    monkeypatch.setattr(dbmod, "MIGRATIONS", real + [extra])
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", nxt)
    database = Database(path)
    database.close()
    assert calls == [nxt]
    assert raw_user_version(path) == nxt


def scanned_totals(db: Database) -> dict:
    """What the totals are, computed from every session row (what the triggers must keep)."""
    with db._locked() as conn:
        rows = conn.execute("SELECT agent, track, feature_id, status, COUNT(*), TOTAL(cost_usd),"
                            " COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
                            " TOTAL(ended_at - started_at) FROM sessions"
                            " GROUP BY agent, track, feature_id, status").fetchall()
        kept = conn.execute("SELECT agent, track, feature_id, status, sessions, cost_usd, input_tokens,"
                            " output_tokens, seconds FROM session_totals").fetchall()
    def norm(rs):
        return {tuple(r[:4]): (r[4], round(r[5], 9), r[6], r[7], round(r[8], 9)) for r in rs}
    return norm(rows), norm(kept)


def test_v2_keeps_session_totals_and_upgrades_a_v1_history(tmp_path, monkeypatch):
    path = tmp_path / "o.db"
    monkeypatch.setattr(dbmod, "MIGRATIONS", [dbmod._migrate_v1])
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", 1)
    old = Database(path)
    for i in range(30):
        sid = new_session(old, feature_id=i % 4, agent=("claude", "codex")[i % 2], started_at=100.0 + i)
        if i % 3:
            old.update_session(sid, status="succeeded", cost_usd=0.1 * i, input_tokens=10 * i,
                               output_tokens=i, ended_at=110.0 + 2 * i)
    with old._locked() as conn:
        before = tuple(conn.execute("SELECT COUNT(*), TOTAL(cost_usd), SUM(input_tokens) FROM sessions").fetchone())
    old.close()
    monkeypatch.undo()

    db = Database(path)  # the upgrade fills the totals from the sessions already recorded
    try:
        assert db.schema_version == SCHEMA_VERSION
        t = db.totals()
        assert (t["sessions"], t["cost_usd"], t["input_tokens"]) == (before[0], round(before[1], 6), before[2])
        scanned, kept = scanned_totals(db)
        assert scanned == kept
        import random
        rng = random.Random(7)
        ids = [new_session(db, feature_id=rng.randint(0, 5), track=rng.choice(["core", "ui"]),
                           agent=rng.choice(["claude", "gemini"])) for _ in range(40)]
        for _ in range(120):
            db.update_session(rng.choice(ids), status=rng.choice(["running", "succeeded", "failed"]),
                              cost_usd=rng.choice([None, 0.01 * rng.randint(0, 300)]),
                              input_tokens=rng.randint(0, 9999), ended_at=rng.choice([None, 500.0]))
        db.mark_interrupted(900.0)
        scanned, kept = scanned_totals(db)
        assert scanned == kept
        assert db.totals()["sessions"] == 70
    finally:
        db.close()


def test_latest_session_by_feature_follows_every_write(db):
    import random
    rng = random.Random(3)
    ids = []
    for _ in range(200):
        if not ids or rng.random() < 0.4:
            ids.append(new_session(db, feature_id=rng.randint(1, 12), phase=rng.choice(["implement", "verify"])))
        else:
            db.update_session(rng.choice(ids), status=rng.choice(["succeeded", "failed"]),
                              cost_usd=rng.random(), final_text=str(rng.random()))
        got = db.latest_session_by_feature()
        with db._locked() as conn:
            rows = conn.execute("SELECT * FROM sessions WHERE id IN"
                                " (SELECT MAX(id) FROM sessions GROUP BY feature_id)").fetchall()
        expected = {r["feature_id"]: {k: v for k, v in dbmod._row_dict(r).items() if k != "prompt"} for r in rows}
        assert got == expected
        got[1] = "changed by a caller"  # the result is the caller's own copy
        assert db.latest_session_by_feature().get(1) != "changed by a caller"


def test_results_cached_until_the_sessions_change_even_from_another_connection(db):
    sid = new_session(db, feature_id=1)
    assert db.totals()["sessions"] == 1 and db.list_sessions()[1] == 1
    assert db.latest_session_by_feature()[1]["id"] == sid
    other = sqlite3.connect(db.path)  # e.g. someone fixing the history by hand
    other.execute("DELETE FROM sessions")
    other.commit()
    other.close()
    assert db.totals()["sessions"] == 0 and db.list_sessions()[1] == 0
    assert db.latest_session_by_feature() == {}
    new_session(db, feature_id=2)
    assert db.totals()["by_feature"] == {2: db.totals()["by_feature"][2]}
    assert db.list_sessions(feature_id=2)[1] == 1


def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "o.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(StoreError) as info:
        Database(path)
    err = info.value
    assert str(path) in err.message and "newer" in err.message
    assert str(SCHEMA_VERSION + 5) in err.message
    assert "upgrade" in err.hint and "mv" in err.hint


def test_corrupt_file_names_the_file_and_says_move_it_away(tmp_path):
    path = tmp_path / "orchestrator.db"
    path.write_bytes(b"this is not a database at all\n" * 200)
    with pytest.raises(OrchestratorError) as info:
        Database(path)
    assert str(path) in info.value.message
    assert "move it away" in info.value.hint


def test_unreadable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as info:
        Database(blocker / "sub" / "o.db")
    assert "o.db" in info.value.message


def test_closed_database_raises_store_error(tmp_path):
    database = Database(tmp_path / "o.db")
    database.close()
    database.close()
    with pytest.raises(StoreError, match="closed"):
        database.max_event_id()


# sessions -------------------------------------------------------------------------------------

def test_create_update_get(db):
    sid = new_session(db)
    row = db.get_session(sid)
    assert row["status"] == "running" and row["attempt"] == 1 and row["truncated"] is False
    assert row["input_tokens"] == 0 and row["ended_at"] is None
    db.update_session(sid, status="succeeded", ended_at=150.5, exit_code=0, exit_reason="exited",
                      cost_usd=0.25, input_tokens=1200, output_tokens=300, num_turns=7,
                      agent_session_id="abc", model="sonnet", final_text="done",
                      output_bytes=4096, truncated=True)
    row = db.get_session(sid)
    assert row["status"] == "succeeded" and row["cost_usd"] == 0.25
    assert row["truncated"] is True and row["model"] == "sonnet" and row["num_turns"] == 7
    assert db.get_session(sid + 100) is None


def test_update_whitelist_rejects_unknown_columns(db):
    sid = new_session(db)
    with pytest.raises(ValueError, match="unknown column"):
        db.update_session(sid, **{"status = 'x', prompt": "evil"})
    with pytest.raises(ValueError, match="unknown column"):
        db.update_session(sid, prompt="changed")
    with pytest.raises(ValueError, match="unknown status"):
        db.update_session(sid, status="bogus")
    assert db.get_session(sid)["prompt"].startswith("# Implement")
    with pytest.raises(NotFound):
        db.update_session(sid + 1, status="failed")


def test_list_sessions_filters_paging_newest_first(db):
    ids = []
    for i in range(12):
        ids.append(new_session(db, feature_id=1 + i % 3, track="core" if i % 2 else "ui",
                               phase="verify" if i % 4 == 0 else "implement", started_at=100.0 + i))
    db.update_session(ids[3], status="failed")
    rows, total = db.list_sessions()
    assert total == 12 and [r["id"] for r in rows] == ids[::-1]
    assert "prompt" not in rows[0] and "final_text" in rows[0]

    rows, total = db.list_sessions(limit=5, offset=5)
    assert total == 12 and [r["id"] for r in rows] == ids[::-1][5:10]

    rows, total = db.list_sessions(feature_id=2)
    assert total == 4 and all(r["feature_id"] == 2 for r in rows)
    rows, total = db.list_sessions(track="ui", phase="verify")
    assert total == sum(1 for i in range(12) if i % 2 == 0 and i % 4 == 0)
    rows, total = db.list_sessions(status="failed")
    assert [r["id"] for r in rows] == [ids[3]] and total == 1
    rows, total = db.list_sessions(feature_id=99)
    assert rows == [] and total == 0


def test_running_and_mark_interrupted(db):
    a, b, c = new_session(db), new_session(db, feature_id=2), new_session(db, feature_id=3)
    db.update_session(b, status="succeeded", ended_at=120.0)
    assert [r["id"] for r in db.running_sessions()] == [a, c]
    marked = db.mark_interrupted(200.0)
    assert [r["id"] for r in marked] == [a, c]
    assert all(r["status"] == "interrupted" and r["ended_at"] == 200.0 for r in marked)
    assert db.get_session(a)["exit_reason"] == "interrupted"
    assert db.get_session(b)["status"] == "succeeded"
    assert db.running_sessions() == [] and db.mark_interrupted(300.0) == []


def test_latest_session_by_feature(db):
    new_session(db, feature_id=1)
    second = new_session(db, feature_id=1, phase="verify")
    other = new_session(db, feature_id=7)
    latest = db.latest_session_by_feature()
    assert set(latest) == {1, 7}
    assert latest[1]["id"] == second and latest[1]["phase"] == "verify"
    assert latest[7]["id"] == other


def test_totals_grouping_and_since(db):
    def done(sid, cost, tin, tout, ended):
        db.update_session(sid, status="succeeded", cost_usd=cost, input_tokens=tin, output_tokens=tout,
                          ended_at=ended)

    done(new_session(db, feature_id=1, agent="claude", track="core", started_at=10), 0.10, 100, 10, 15)
    done(new_session(db, feature_id=1, agent="codex", track="core", started_at=20), 0.20, 200, 20, 27.5)
    done(new_session(db, feature_id=2, agent="claude", track="ui", started_at=30), 0.30, 300, 30, 31)
    new_session(db, feature_id=3, agent="gemini", track="ui", started_at=40)   # no cost yet
    t = db.totals()
    assert t["sessions"] == 4 and t["cost_usd"] == pytest.approx(0.6)
    assert t["input_tokens"] == 600 and t["output_tokens"] == 60
    assert t["by_agent"]["claude"] == {"sessions": 2, "cost_usd": pytest.approx(0.4),
                                       "input_tokens": 400, "output_tokens": 40, "seconds": 6.0}
    assert t["by_agent"]["codex"]["seconds"] == 7.5  # agents reporting no cost: tokens and time
    assert t["by_agent"]["gemini"]["cost_usd"] == 0
    assert t["by_track"]["core"]["cost_usd"] == pytest.approx(0.3)
    assert t["by_feature"][1]["sessions"] == 2 and t["by_feature"][2]["input_tokens"] == 300
    json.dumps(t)
    recent = db.totals(since=25)
    assert recent["sessions"] == 2 and set(recent["by_feature"]) == {2, 3}
    assert db.totals(since=1000) == {"sessions": 0, "cost_usd": 0, "input_tokens": 0,
                                     "output_tokens": 0, "seconds": 0, "by_agent": {}, "by_track": {},
                                     "by_feature": {}}


# events and state -----------------------------------------------------------------------------

def output_row(event_id, session_id, text, kind="text"):
    data = {"session_id": session_id, "feature_id": 1, "track": "core",
            "event": {"kind": kind, "text": text, "data": {"n": event_id}}}
    return (event_id, "output", session_id, json.dumps(data), 1000.0 + event_id)


def test_insert_events_after_and_max_id(db):
    assert db.max_event_id() == 0 and db.events_after(0) == []
    rows = [output_row(i, 1, f"line {i}") for i in range(1, 6)]
    rows.append((6, "status", None, json.dumps({"state": "running"}), 2000.0))
    db.insert_events(rows)
    db.insert_events([])
    assert db.max_event_id() == 6
    after = db.events_after(2, limit=3)
    assert [r[0] for r in after] == [3, 4, 5]
    assert after[0] == rows[2]
    assert db.events_after(6) == []
    with pytest.raises(StoreError):
        db.insert_events([rows[0]])          # duplicate id: whole batch refused
    assert db.max_event_id() == 6


def test_session_events_paging_and_decoding(db):
    rows = []
    for i in range(1, 31):
        rows.append(output_row(i, 1 if i % 2 else 2, f"line {i}", kind="tool_call" if i == 3 else "text"))
    rows.append((31, "session", 1, json.dumps({"id": 1, "status": "succeeded"}), 3000.0))
    rows.append((32, "output", 1, json.dumps({"session_id": 1}), 3001.0))
    db.insert_events(rows)
    page = db.session_events(1, limit=4)
    assert [e["id"] for e in page] == [1, 3, 5, 7]
    assert page[1] == {"id": 3, "ts": 1003.0, "kind": "tool_call", "text": "line 3", "data": {"n": 3}}
    nxt = db.session_events(1, after=page[-1]["id"], limit=100)
    assert [e["id"] for e in nxt] == list(range(9, 30, 2)) + [32]
    assert nxt[-1] == {"id": 32, "ts": 3001.0, "kind": "raw", "text": "", "data": {}}
    assert db.session_events(2, after=28) == [{"id": 30, "ts": 1030.0, "kind": "text",
                                               "text": "line 30", "data": {"n": 30}}]
    assert db.session_events(99) == []


def test_state_roundtrip(db):
    assert db.get_state("paused", default=[]) == []
    db.set_state("paused", ["ui"])
    db.set_state("limits", {"claude": {"until": 12.5}})
    db.set_state("paused", ["ui", "core"])
    assert db.get_state("paused") == ["ui", "core"]
    assert db.get_state("limits") == {"claude": {"until": 12.5}}


def test_thread_safe_writes(db):
    def work(n):
        for i in range(25):
            sid = new_session(db, feature_id=n)
            db.update_session(sid, status="succeeded", cost_usd=0.01)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.totals()["sessions"] == 150
    assert db.list_sessions(status="succeeded")[1] == 150


def test_session_counts_by_agent_and_status(db):
    done = new_session(db, feature_id=1, agent="claude")
    db.update_session(done, status="succeeded")
    new_session(db, feature_id=2, agent="claude")
    failed = new_session(db, feature_id=3, agent="codex")
    db.update_session(failed, status="failed")
    assert db.session_counts() == {"claude": {"succeeded": 1, "running": 1},
                                   "codex": {"failed": 1}}
