"""The session history database: the only module that imports sqlite3.

One connection (``check_same_thread=False``) guarded by a lock, WAL journal, schema migrations
by ``PRAGMA user_version``. Every sqlite3 error leaves this module as a :class:`StoreError`.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import NotFound, OrchestratorError
from .states import SessionStatus


class StoreError(OrchestratorError):
    """The session history database could not be opened, read or written."""

    code = "database_error"


SESSION_COLUMNS = (
    "id", "feature_id", "track", "phase", "agent", "model", "agent_session_id", "attempt",
    "prompt", "cwd", "started_at", "ended_at", "status", "exit_code", "exit_reason", "cost_usd",
    "input_tokens", "output_tokens", "num_turns", "error", "failure_category", "final_text",
    "output_bytes", "truncated",
)
UPDATABLE_COLUMNS = frozenset({
    "status", "ended_at", "exit_code", "exit_reason", "agent_session_id", "model", "cost_usd",
    "input_tokens", "output_tokens", "num_turns", "error", "failure_category", "final_text",
    "output_bytes", "truncated",
})
LIST_COLUMNS = tuple(c for c in SESSION_COLUMNS if c != "prompt")
SESSION_STATUSES = frozenset(s.value for s in SessionStatus)
MAX_PAGE = 1000
JSON_CHUNK_CHARS = 256 << 10
_INSERT_JSON = ("INSERT INTO events (id, type, session_id, data, ts) SELECT json_extract(value, '$[0]'),"
                " json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]'),"
                " json_extract(value, '$[4]') FROM json_each(?)")


def _has_json(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite has the JSON functions (built in since 3.38, usually before)."""
    try:
        conn.execute("SELECT json_extract(value, '$[0]') FROM json_each('[[1]]')").fetchall()
        return True
    except sqlite3.Error:
        return False


def _migrate_v1(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            feature_id INTEGER NOT NULL,
            track TEXT NOT NULL,
            phase TEXT NOT NULL,
            agent TEXT NOT NULL,
            model TEXT,
            agent_session_id TEXT,
            attempt INTEGER NOT NULL DEFAULT 1,
            prompt TEXT NOT NULL DEFAULT '',
            cwd TEXT NOT NULL DEFAULT '',
            started_at REAL NOT NULL,
            ended_at REAL,
            status TEXT NOT NULL DEFAULT 'running',
            exit_code INTEGER,
            exit_reason TEXT,
            cost_usd REAL,
            input_tokens INTEGER DEFAULT 0,
            output_tokens INTEGER DEFAULT 0,
            num_turns INTEGER,
            error TEXT,
            failure_category TEXT,
            final_text TEXT,
            output_bytes INTEGER DEFAULT 0,
            truncated INTEGER DEFAULT 0
        )""")
    conn.execute("CREATE INDEX sessions_feature ON sessions (feature_id, id)")
    conn.execute("CREATE INDEX sessions_status ON sessions (status)")
    conn.execute("""
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            session_id INTEGER,
            ts REAL NOT NULL,
            data TEXT NOT NULL
        )""")
    conn.execute("CREATE INDEX events_session ON events (session_id, id)")
    conn.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


_TOTALS_KEY = "agent = {r}.agent AND track = {r}.track AND feature_id = {r}.feature_id AND status = {r}.status"
_TOTALS_ADD = """
    INSERT INTO session_totals (agent, track, feature_id, status, sessions, cost_usd, input_tokens,
                                output_tokens, seconds)
    VALUES (new.agent, new.track, new.feature_id, new.status, 1, COALESCE(new.cost_usd, 0),
            COALESCE(new.input_tokens, 0), COALESCE(new.output_tokens, 0),
            COALESCE(new.ended_at - new.started_at, 0))
    ON CONFLICT (agent, track, feature_id, status) DO UPDATE SET
        sessions = sessions + 1, cost_usd = cost_usd + excluded.cost_usd,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens, seconds = seconds + excluded.seconds;"""
_TOTALS_REMOVE = f"""
    UPDATE session_totals SET sessions = sessions - 1, cost_usd = cost_usd - COALESCE(old.cost_usd, 0),
        input_tokens = input_tokens - COALESCE(old.input_tokens, 0),
        output_tokens = output_tokens - COALESCE(old.output_tokens, 0),
        seconds = seconds - COALESCE(old.ended_at - old.started_at, 0)
    WHERE {_TOTALS_KEY.format(r="old")};
    DELETE FROM session_totals WHERE {_TOTALS_KEY.format(r="old")} AND sessions <= 0;"""


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """Session totals kept up to date by triggers (status, cost and metrics no longer scan every
    session, whose rows hold whole prompts), and covering indexes for the session list."""
    conn.execute("""
        CREATE TABLE session_totals (
            agent TEXT NOT NULL,
            track TEXT NOT NULL,
            feature_id INTEGER NOT NULL,
            status TEXT NOT NULL,
            sessions INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            seconds REAL NOT NULL,
            PRIMARY KEY (agent, track, feature_id, status)
        ) WITHOUT ROWID""")
    conn.execute("""
        INSERT INTO session_totals
        SELECT agent, track, feature_id, status, COUNT(*), TOTAL(cost_usd), COALESCE(SUM(input_tokens), 0),
               COALESCE(SUM(output_tokens), 0), TOTAL(ended_at - started_at)
        FROM sessions GROUP BY agent, track, feature_id, status""")
    conn.execute(f"CREATE TRIGGER session_totals_insert AFTER INSERT ON sessions BEGIN {_TOTALS_ADD} END")
    conn.execute("CREATE TRIGGER session_totals_update AFTER UPDATE OF agent, track, feature_id, status,"
                 " cost_usd, input_tokens, output_tokens, started_at, ended_at ON sessions"
                 f" BEGIN {_TOTALS_REMOVE} {_TOTALS_ADD} END")
    conn.execute(f"CREATE TRIGGER session_totals_delete AFTER DELETE ON sessions BEGIN {_TOTALS_REMOVE} END")
    # The session list: counts and pages of ids come from these indexes alone, whatever the
    # filters (feature, track, status, phase); only the 50 rows of a page are read from the table.
    conn.execute("DROP INDEX sessions_status")
    conn.execute("CREATE INDEX sessions_status ON sessions (status, track, phase, feature_id)")
    conn.execute("CREATE INDEX sessions_track ON sessions (track, status, phase, feature_id)")
    conn.execute("CREATE INDEX sessions_ids ON sessions (id)")  # the id order, narrow: for OFFSET


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_v1, _migrate_v2]
SCHEMA_VERSION = len(MIGRATIONS)


def _move_away_hint(path: Path) -> str:
    return (f"if the file is damaged or not a database, move it away (mv '{path}' '{path}.broken') "
            "and start again: a new, empty session history is created")


def _row_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    if "truncated" in d:
        d["truncated"] = bool(d["truncated"])
    return d


class Database:
    """Sessions, the persisted event stream and a small JSON key/value state, in one SQLite file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        # results computed from the sessions table, kept until it changes: (version, value) by key
        self._writes = 0
        self._cache: dict[Any, tuple[tuple, Any]] = {}
        self._latest: tuple[tuple, dict[int, dict]] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreError(f"cannot create the session history database {self.path}: {exc.strerror}",
                             "check that the directory exists and is writable") from exc
        try:
            conn = sqlite3.connect(str(self.path), timeout=10, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the session history database {self.path}: {exc}",
                             _move_away_hint(self.path)) from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
            self._json_insert = _has_json(conn)
        except OrchestratorError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot read the session history database {self.path}: {exc}",
                             _move_away_hint(self.path)) from exc
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the session history database {self.path} has schema version {version}, but this "
                f"agent-orchestrator only knows versions up to {SCHEMA_VERSION} (it was written by a "
                "newer release)",
                f"upgrade agent-orchestrator, or move the file away (mv '{self.path}' "
                f"'{self.path}.newer') to start a new history")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[target - 1](conn)
                conn.execute(f"PRAGMA user_version = {int(target)}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        with self._locked() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StoreError(f"the session history database {self.path} is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    @contextmanager
    def _write(self, *, sessions: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; `sessions`: it changes the sessions table (the caches go stale)."""
        with self._locked() as conn:
            if sessions:
                self._writes += 1
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def sessions_version(self) -> tuple:
        """Changes whenever the sessions table may have changed (for caches built on it)."""
        with self._locked() as conn:
            return self._writes, conn.execute("PRAGMA data_version").fetchone()[0]

    def _cached(self, conn: sqlite3.Connection, key: Any, compute: Callable[[], Any]) -> Any:
        """compute() once per version of the sessions table: this connection's writes, and any
        other connection's commits (PRAGMA data_version). Call with the lock held."""
        version = (self._writes, conn.execute("PRAGMA data_version").fetchone()[0])
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        if hit is None and len(self._cache) >= 64:
            self._cache.clear()
        value = compute()
        self._cache[key] = (version, value)
        return value

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "full" in text.lower():
            hint = f"free some disk space on the filesystem holding {self.path.parent}"
        elif "malformed" in text or "not a database" in text:
            hint = _move_away_hint(self.path)
        elif "readonly" in text or "read-only" in text:
            hint = f"make {self.path} and its directory writable"
        else:
            hint = None
        return StoreError(f"session history database {self.path}: {text}", hint)

    # sessions -------------------------------------------------------------------------------

    def create_session(self, *, feature_id: int, track: str, phase: str, agent: str, attempt: int,
                       prompt: str, cwd: str, started_at: float, model: str | None = None) -> int:
        with self._write(sessions=True) as conn:
            cur = conn.execute(
                "INSERT INTO sessions (feature_id, track, phase, agent, model, attempt, prompt, cwd,"
                " started_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                (feature_id, track, phase, agent, model, attempt, prompt, str(cwd), started_at))
            session_id = int(cur.lastrowid)
        self._refresh_latest(session_id)
        return session_id

    def update_session(self, session_id: int, **fields: Any) -> None:
        unknown = sorted(set(fields) - UPDATABLE_COLUMNS)
        if unknown:
            raise ValueError(f"update_session: unknown column(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(UPDATABLE_COLUMNS))}")
        if "status" in fields and fields["status"] not in SESSION_STATUSES:
            raise ValueError(f"update_session: unknown status {fields['status']!r}; "
                             f"allowed: {', '.join(sorted(SESSION_STATUSES))}")
        if not fields:
            return
        if "truncated" in fields:
            fields["truncated"] = int(bool(fields["truncated"]))
        names = sorted(fields)
        assignments = ", ".join(f"{name} = ?" for name in names)
        with self._write(sessions=True) as conn:
            cur = conn.execute(f"UPDATE sessions SET {assignments} WHERE id = ?",
                               [fields[n] for n in names] + [session_id])
            if cur.rowcount == 0:
                raise NotFound(f"session {session_id} does not exist")
        self._refresh_latest(session_id)

    def get_session(self, session_id: int) -> dict | None:
        with self._locked() as conn:
            row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _row_dict(row) if row else None

    def list_sessions(self, *, feature_id: int | None = None, track: str | None = None,
                      status: str | None = None, phase: str | None = None, limit: int = 50,
                      offset: int = 0) -> tuple[list[dict], int]:
        """Newest first, without the prompt (get_session has it); returns (page, total matching)."""
        where, params = [], []
        for column, value in (("feature_id", feature_id), ("track", track), ("status", status),
                              ("phase", phase)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        limit = max(1, min(int(limit), MAX_PAGE))
        offset = max(0, int(offset))
        with self._locked() as conn:
            total = self._cached(conn, ("count", clause, tuple(params)), lambda: conn.execute(
                f"SELECT COUNT(*) FROM sessions{clause}", params).fetchone()[0])
            rows = conn.execute(
                f"SELECT {', '.join(LIST_COLUMNS)} FROM sessions WHERE id IN (SELECT id FROM sessions"
                f"{clause} ORDER BY id DESC LIMIT ? OFFSET ?) ORDER BY id DESC", params + [limit, offset]).fetchall()
        return [_row_dict(r) for r in rows], int(total)

    def running_sessions(self) -> list[dict]:
        with self._locked() as conn:
            rows = conn.execute(f"SELECT {', '.join(LIST_COLUMNS)} FROM sessions"
                                " WHERE status = 'running' ORDER BY id").fetchall()
        return [_row_dict(r) for r in rows]

    def mark_interrupted(self, ended_at: float) -> list[dict]:
        """Sessions left running (by a daemon that died) become interrupted; returns them."""
        with self._write(sessions=True) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM sessions WHERE status = 'running'")]
            conn.execute(
                "UPDATE sessions SET status = 'interrupted', ended_at = ?,"
                " exit_reason = COALESCE(exit_reason, 'interrupted') WHERE status = 'running'",
                (ended_at,))
            rows = [conn.execute(f"SELECT {', '.join(LIST_COLUMNS)} FROM sessions WHERE id = ?",
                                 (i,)).fetchone() for i in ids]
        return [_row_dict(r) for r in rows]

    def latest_session_by_feature(self) -> dict[int, dict]:
        """{feature id: its newest session}. Kept between calls and brought up to date row by row
        by this connection's own writes: reading 2,000 rows (each holding a whole prompt) again
        after every session change would take 20-30 ms."""
        with self._locked() as conn:
            version = (self._writes, conn.execute("PRAGMA data_version").fetchone()[0])
            if self._latest is None or self._latest[0] != version:
                rows = conn.execute(
                    f"SELECT {', '.join(LIST_COLUMNS)} FROM sessions WHERE id IN"
                    " (SELECT MAX(id) FROM sessions GROUP BY feature_id)").fetchall()
                self._latest = (version, {int(r["feature_id"]): _row_dict(r) for r in rows})
            return {fid: dict(row) for fid, row in self._latest[1].items()}

    def _refresh_latest(self, session_id: int) -> None:
        """After this connection wrote session `session_id` (and nothing else happened since the
        kept result was made): put that one row into it; else let the next call read them all."""
        with self._locked() as conn:
            kept = self._latest
            if kept is None:
                return
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if kept[0] != (self._writes - 1, version):
                self._latest = None
                return
            row = conn.execute(f"SELECT {', '.join(LIST_COLUMNS)} FROM sessions WHERE id = ?",
                               (session_id,)).fetchone()
            latest = kept[1]
            if row is not None:
                current = latest.get(int(row["feature_id"]))
                if current is None or current["id"] <= session_id:
                    latest[int(row["feature_id"])] = _row_dict(row)
            self._latest = ((self._writes, version), latest)

    def totals(self, *, since: float | None = None) -> dict:
        """Session count, cost and tokens overall and grouped by agent, track and feature."""

        def shape(row: Sequence) -> dict:
            return {"sessions": int(row[0]), "cost_usd": round(float(row[1]), 6),
                    "input_tokens": int(row[2]), "output_tokens": int(row[3]),
                    "seconds": round(float(row[4]), 3)}

        if since is None:  # from the totals the triggers keep (a few rows per feature)
            source, params = "session_totals", []
            sums = ("COALESCE(SUM(sessions), 0), TOTAL(cost_usd), COALESCE(SUM(input_tokens), 0),"
                    " COALESCE(SUM(output_tokens), 0), TOTAL(seconds)")
        else:
            source, params = "sessions WHERE started_at >= ?", [since]
            sums = ("COUNT(*), TOTAL(cost_usd), COALESCE(SUM(input_tokens), 0),"
                    " COALESCE(SUM(output_tokens), 0), TOTAL(ended_at - started_at)")

        def compute() -> dict:
            result: dict[str, Any] = shape(conn.execute(f"SELECT {sums} FROM {source}", params).fetchone())
            for key, column in (("by_agent", "agent"), ("by_track", "track"), ("by_feature", "feature_id")):
                rows = conn.execute(f"SELECT {column}, {sums} FROM {source}"
                                    f" GROUP BY {column} ORDER BY {column}", params).fetchall()
                result[key] = {r[0]: shape(tuple(r)[1:]) for r in rows}
            return result

        with self._locked() as conn:
            # only the run's totals are kept: each `since` would be a new entry
            result = self._cached(conn, "totals", compute) if since is None else compute()
        copy = dict(result)
        for key in ("by_agent", "by_track", "by_feature"):
            copy[key] = {k: dict(v) for k, v in result[key].items()}
        return copy

    def session_counts(self) -> dict[str, dict[str, int]]:
        """{agent: {status: sessions}}."""
        with self._locked() as conn:
            rows = conn.execute("SELECT agent, status, SUM(sessions) FROM session_totals"
                                " GROUP BY agent, status ORDER BY agent, status").fetchall()
        counts: dict[str, dict[str, int]] = {}
        for agent, status, n in rows:
            counts.setdefault(agent, {})[status] = int(n)
        return counts

    # events ---------------------------------------------------------------------------------

    def insert_events(self, rows: Sequence[tuple[int, str, int | None, str, float]]) -> None:
        """Rows are (id, type, session_id, data_json, ts); one transaction, all or nothing.

        The rows go to SQLite as one JSON array per statement (a few MB at most), unpacked by
        json_each: sqlite3 releases Python's GIL around each statement it steps, so executemany
        gives the GIL up and waits to get it back once per row - while the event loop is busy
        that wait is up to a switch interval (5 ms) per row. One statement per chunk keeps
        writing the history from slowing down (or being slowed down by) the rest of the daemon.
        """
        if not rows:
            return
        with self._write() as conn:
            if not self._json_insert:
                conn.executemany("INSERT INTO events (id, type, session_id, data, ts)"
                                 " VALUES (?, ?, ?, ?, ?)", rows)
                return
            start, size = 0, 0
            for end, row in enumerate(rows, 1):
                size += len(row[3]) + 64
                if size >= JSON_CHUNK_CHARS or end == len(rows):
                    conn.execute(_INSERT_JSON, (json.dumps(rows[start:end], ensure_ascii=False),))
                    start, size = end, 0

    def events_after(self, after_id: int, limit: int = 1000) -> list[tuple]:
        """(id, type, session_id, data_json, ts) with id > after_id, oldest first."""
        with self._locked() as conn:
            rows = conn.execute("SELECT id, type, session_id, data, ts FROM events WHERE id > ?"
                                " ORDER BY id LIMIT ?", (after_id, max(1, int(limit)))).fetchall()
        return [tuple(r) for r in rows]

    def session_events(self, session_id: int, *, after: int = 0, limit: int = 500) -> list[dict]:
        """The session's `output` events after id `after`: {id, ts, kind, text, data}."""
        limit = max(1, min(int(limit), MAX_PAGE))
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT id, ts, data FROM events WHERE session_id = ? AND id > ? AND type = 'output'"
                " ORDER BY id LIMIT ?", (session_id, after, limit)).fetchall()
        out = []
        for event_id, ts, data_json in rows:
            try:
                event = json.loads(data_json).get("event") or {}
            except (ValueError, AttributeError):
                event = {}
            out.append({"id": event_id, "ts": ts, "kind": event.get("kind", "raw"),
                        "text": event.get("text", ""), "data": event.get("data") or {}})
        return out

    def max_event_id(self) -> int:
        with self._locked() as conn:
            return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    # state ----------------------------------------------------------------------------------

    def get_state(self, key: str, default: Any = None) -> Any:
        with self._locked() as conn:
            row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_state(self, key: str, value: Any) -> None:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        with self._write() as conn:
            conn.execute("INSERT INTO state (key, value) VALUES (?, ?)"
                         " ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, data))
