from __future__ import annotations

import json
import threading
import time

import pytest

from agent_orchestrator.db import Database, StoreError
from agent_orchestrator import events as events_mod
from agent_orchestrator.events import (
    Event,
    EventBus,
    SubscriptionClosed,
    SubscriptionDropped,
)


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "orchestrator.db")
    yield database
    database.close()


@pytest.fixture
def buses():
    made = []

    def make(*args, **kwargs):
        bus = EventBus(*args, **kwargs)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.close()


def drain(sub, until_id, timeout=10.0):
    ids, deadline = [], time.monotonic() + timeout
    while (not ids or ids[-1] < until_id) and time.monotonic() < deadline:
        ids += [e.id for e in sub.get(0.2)]
    return ids


class FlakyDb:
    """Stands in for Database: refuses writes while `failing` is set (a full disk)."""

    def __init__(self):
        self.rows = {}
        self.failing = True
        self.calls = 0

    def max_event_id(self):
        return max(self.rows, default=0)

    def insert_events(self, rows):
        self.calls += 1
        if self.failing:
            raise StoreError("session history database o.db: database or disk is full")
        for row in rows:
            assert row[0] not in self.rows
            self.rows[row[0]] = row

    def events_after(self, after_id, limit=1000):
        return [self.rows[i] for i in sorted(self.rows) if i > after_id][:limit]


def test_event_sse_frame():
    event = Event(7, "output", {"text": "a\nb", "ü": "é"}, 1.5, session_id=3)
    frame = event.sse().decode()
    assert frame == 'id: 7\nevent: output\ndata: {"text":"a\\nb","ü":"é"}\n\n'
    assert json.loads(frame.splitlines()[2][len("data: "):]) == event.data
    assert event.to_dict() == {"id": 7, "type": "output", "ts": 1.5, "session_id": 3,
                               "data": event.data}
    odd = Event(8, "notice", {"message": "bad \udcff byte"}, 0.0)
    assert b"\\udcff" in odd.sse()


def test_ids_continue_after_reopen_and_close_flushes(tmp_path, buses):
    path = tmp_path / "o.db"
    database = Database(path)
    bus = EventBus(database, clock=lambda: 42.0)
    for i in range(5):
        bus.publish("output", {"session_id": 1, "event": {"kind": "text", "text": f"l{i}"}}, session_id=1)
    bus.publish("status", {"state": "running"})
    bus.close()
    bus.close()
    assert database.max_event_id() == 6
    assert [e["text"] for e in database.session_events(1)] == ["l0", "l1", "l2", "l3", "l4"]
    assert database.events_after(5)[0] == (6, "status", None, '{"state":"running"}', 42.0)
    database.close()

    database = Database(path)
    try:
        bus = buses(database)
        assert bus.last_id == 6
        assert bus.publish("notice", {"level": "info", "message": "hi"}).id == 7
        assert [e.id for e in bus.since(4)] == [5, 6, 7]
    finally:
        bus.close()
        database.close()


def test_ring_replay_then_live(buses):
    bus = buses(None, ring_size=100)
    for i in range(50):
        bus.publish("track", {"n": i})
    sub = bus.subscribe(last_id=40)
    bus.publish("track", {"n": 50})
    assert [e.id for e in sub.get(1)] == list(range(41, 51))
    batch = sub.get(1)
    assert [e.id for e in batch] == [51] and batch[0].data == {"n": 50}
    assert sub.get(0.01) == []
    assert bus.subscribe(last_id=51).get(0.01) == []
    live = bus.subscribe()
    assert live.get(0.01) == []
    bus.publish("merge", {"feature_id": 1})
    assert [e.type for e in live.get(1)] == ["merge"]


def test_db_replay_after_ring_overflow(db, buses):
    bus = buses(db, ring_size=10)
    published = [bus.publish("output", {"i": i}, session_id=i % 3) for i in range(100)]
    bus.flush()
    sub = bus.subscribe(last_id=5, max_queue=10)
    got = []
    while len(got) < 95:
        batch = sub.get(1)
        assert batch
        got += batch
    assert [e.id for e in got] == list(range(6, 101))
    assert [(e.type, e.data, e.session_id, e.sse()) for e in got] == \
        [(e.type, e.data, e.session_id, e.sse()) for e in published[5:]]


def test_replay_spans_db_and_unflushed_memory(db, buses):
    bus = buses(db, ring_size=10, flush_interval=60, flush_at=10**6)
    for i in range(50):
        bus.publish("output", {"i": i})
    bus.flush()
    for i in range(50, 100):
        bus.publish("output", {"i": i})
    assert db.max_event_id() == 50
    assert [e.id for e in bus.since(0, limit=1000)] == list(range(1, 101))
    assert [e.id for e in bus.since(30, limit=25)] == list(range(31, 56))
    assert [e.id for e in bus.since(60, limit=1000, until=70)] == list(range(61, 71))
    assert bus.since(100) == []


def test_without_db_replay_is_limited_to_the_ring(buses):
    bus = buses(None, ring_size=5)
    for i in range(20):
        bus.publish("status", {"i": i})
    assert [e.id for e in bus.since(0)] == [16, 17, 18, 19, 20]


def test_concurrent_publisher_and_reconnecting_subscriber_no_gap_no_duplicate(db, buses):
    bus = buses(db, ring_size=64, flush_at=256)
    db_reads = []
    real_events_after = db.events_after
    db.events_after = lambda *a, **k: db_reads.append(a) or real_events_after(*a, **k)
    total = 20000

    def publish_all():
        for i in range(total):
            bus.publish("output" if i % 5 else "session", {"i": i}, session_id=i % 7)
            if i % 200 == 0:
                time.sleep(0.002)

    def polite_reader():
        last, rounds = 0, 0
        while last < total and time.monotonic() < deadline:
            time.sleep(0.002)
            rounds += 1
            with bus.subscribe(last_id=last, max_queue=total) as sub:
                for _ in range((1, 4, 30)[rounds % 3]):
                    batch = sub.get(0.01)
                    polite.extend(e.id for e in batch)
                    last = batch[-1].id if batch else last

    polite: list[int] = []
    deadline = time.monotonic() + 30
    publisher = threading.Thread(target=publish_all)
    reader = threading.Thread(target=polite_reader)
    publisher.start()
    reader.start()
    received, last, reconnects, drops = [], 0, 0, 0
    while last < total and time.monotonic() < deadline:
        time.sleep(0.005 * (reconnects % 3))
        sub = bus.subscribe(last_id=last, max_queue=20)
        reconnects += 1
        try:
            for _ in range(3):
                batch = sub.get(0.05)
                received += [e.id for e in batch]
                if batch:
                    assert batch[-1].data["i"] == batch[-1].id - 1
                    last = batch[-1].id
        except SubscriptionDropped:
            drops += 1
        finally:
            sub.close()
    publisher.join()
    reader.join()
    assert received == list(range(1, total + 1))
    assert polite == list(range(1, total + 1))
    assert reconnects > 3 and drops > 0 and db_reads


def test_slow_subscriber_is_dropped_without_slowing_publish(db, buses):
    bus = buses(db, ring_size=1000)
    idle = bus.subscribe(max_queue=100)
    reader = bus.subscribe(max_queue=100_000)
    start = time.monotonic()
    for i in range(100_000):
        bus.publish("output", {"session_id": 1, "event": {"kind": "text", "text": "x" * 20}}, session_id=1)
    elapsed = time.monotonic() - start
    assert elapsed < 15, elapsed
    assert idle.dropped and len(idle._queue) == 0
    assert idle not in bus._subs and reader in bus._subs
    assert len(bus._ring) == 1000
    assert len(bus._pending) <= bus._max_pending
    with pytest.raises(SubscriptionDropped) as info:
        idle.get(0.01)
    assert "Last-Event-ID" in info.value.hint
    assert len(reader.get(0)) == 100_000
    bus.flush()
    assert db.max_event_id() == 100_000


def test_eight_threads_publish_unique_increasing_ids(db, buses):
    bus = buses(db, ring_size=100)
    results = [[] for _ in range(8)]

    def work(n):
        for i in range(2000):
            results[n].append(bus.publish("output", {"t": n, "i": i}).id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for r in results for i in r]
    assert sorted(ids) == list(range(1, 16001))
    assert all(r == sorted(r) for r in results)
    bus.close()
    assert [row[0] for row in db.events_after(0, limit=20000)] == list(range(1, 16001))


def test_writer_failure_reported_once_publishing_continues(buses, caplog):
    flaky = FlakyDb()
    bus = buses(flaky, flush_at=5)
    sub = bus.subscribe()
    for i in range(20):
        bus.publish("output", {"i": i})
    assert not bus.flush()
    assert not bus.flush()
    events = drain(sub, 20)
    notices = [e for e in bus.since(0) if e.type == "notice"]
    assert len(notices) == 1 and notices[0].data["level"] == "error"
    assert "disk is full" in notices[0].data["message"]
    assert "cannot save events" in caplog.text
    assert 20 in events

    flaky.failing = False
    assert bus.flush()
    notices = [e for e in bus.since(0) if e.type == "notice"]
    assert [n.data["level"] for n in notices] == ["error", "warning"]
    bus.close()
    assert sorted(flaky.rows) == list(range(1, bus.last_id + 1))


def test_pending_is_bounded_when_the_db_fails_and_loss_is_reported(buses):
    flaky = FlakyDb()
    bus = buses(flaky, max_pending=10, flush_interval=60, flush_at=10**6)
    for i in range(50):
        bus.publish("output", {"i": i})
    assert len(bus._pending) == 10
    assert [e.id for e in bus.since(0)] == list(range(1, 51))   # the ring still has them
    flaky.failing = False
    assert bus.flush()
    notice = bus.since(50)[-1]
    assert notice.type == "notice" and "40 events could not be saved" in notice.data["message"]
    for i in range(20):  # the queue is full again when the notice is published...
        bus.publish("output", {"i": i})
    bus.publish("notice", {"level": "warning", "message": "kept"})
    assert bus.flush()   # ...and it is saved all the same
    assert any(json.loads(row[3]).get("message") == "kept" for row in flaky.rows.values())


def test_ring_is_bounded_by_bytes(buses):
    bus = buses(None, ring_size=1000, ring_bytes=10_000)
    for i in range(100):
        bus.publish("output", {"text": "y" * 1000})
    assert 1 <= len(bus._ring) <= 10
    assert bus._ring[-1].id == 100


def test_get_times_out_and_close_ends_subscriptions(buses):
    bus = buses(None)
    sub = bus.subscribe()
    start = time.monotonic()
    assert sub.get(0.05) == []
    assert 0.04 <= time.monotonic() - start < 1

    def close_soon():
        time.sleep(0.05)
        bus.close()

    closer = threading.Thread(target=close_soon)
    closer.start()
    with pytest.raises(SubscriptionClosed):
        sub.get(5)
    closer.join()
    with pytest.raises(SubscriptionDropped):
        bus.subscribe().get(0.01)
    own = EventBus(None)
    with own.subscribe() as mine:
        pass
    assert mine.closed and own._subs == []
    own.close()


def test_publish_rejects_bad_types(buses):
    bus = buses(None)
    with pytest.raises(ValueError):
        bus.publish("bad\ntype", {})
    assert bus.publish("rate_limit", {"agent": "claude"}).id == 1


class SlowDb(FlakyDb):
    """A database that accepts writes only when `gate` is set (a writer that fell behind)."""

    def __init__(self):
        super().__init__()
        self.failing = False
        self.gate = threading.Event()

    def insert_events(self, rows):
        self.gate.wait(10)
        super().insert_events(rows)


def wait_until_caught_up(bus, timeout=10.0):
    deadline = time.monotonic() + timeout
    while bus.behind() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not bus.behind()


def test_behind_when_many_bytes_wait_and_caught_up_after(buses, monkeypatch):
    monkeypatch.setattr(events_mod, "BACKLOG_PAUSE_BYTES", 1_000_000)
    slow = SlowDb()
    bus = buses(slow, flush_interval=0.01)
    for i in range(300):
        bus.publish("output", {"text": "z" * 10_000})
    assert bus.behind()   # 3 MB wait for the database
    slow.gate.set()
    assert wait_until_caught_up(bus)
    bus.flush()
    assert len(slow.rows) == 300


def test_behind_with_many_small_events_before_any_is_lost(buses):
    """Small events reach the count limit long before the byte limit: the agents must be held
    before events are dropped."""
    slow = SlowDb()
    bus = buses(slow, max_pending=1000, flush_interval=0.01)
    published = 0
    while not bus.behind():
        bus.publish("output", {"text": "short line"})
        published += 1
        assert published <= 600, "never behind"
    assert bus._lost == 0
    slow.gate.set()
    assert wait_until_caught_up(bus)
    bus.flush()
    assert len(slow.rows) == published


def test_not_behind_while_the_database_refuses_writes(buses):
    """A refusing database must not hold the agents: events beyond max_pending are dropped and
    reported instead."""
    flaky = FlakyDb()
    bus = buses(flaky, max_pending=10, flush_interval=60, flush_at=10**6)
    for i in range(9):
        bus.publish("output", {"text": "y" * 1000})
    assert bus.behind()
    assert not bus.flush()
    assert not bus.behind()
