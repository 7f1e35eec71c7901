"""The event stream: one increasing id for every event, a bounded in-memory ring, a batched writer
thread that persists events to the database, and bounded subscriber queues for SSE clients.

Lock order: ``EventBus._flush_lock`` -> ``EventBus._lock`` -> ``Subscription._cond``.
"""
from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from .errors import OrchestratorError

if TYPE_CHECKING:
    from .db import Database

log = logging.getLogger(__name__)

EVENT_TYPES = ("status", "feature", "session", "output", "track", "merge", "notice")
REPLAY_PAGE = 1000
UNSAVED_FLUSH_BYTES = 4 << 20    # the writer writes at once beyond this
BACKLOG_PAUSE_BYTES = 16 << 20   # agents' output is not read beyond this (see behind())
_TYPE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")


class SubscriptionDropped(OrchestratorError):
    """The subscriber fell too far behind; it must reconnect with the last id it received."""

    code = "subscription_dropped"


class SubscriptionClosed(SubscriptionDropped):
    """The subscription or the whole bus was closed (daemon shutting down)."""

    code = "subscription_closed"


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
_ENCODE_ASCII = json.JSONEncoder(separators=(",", ":"), default=str).encode


def encode_data(data: Any) -> str:
    """Compact one-line JSON; text that cannot be UTF-8 encoded (lone surrogates) is escaped."""
    text = _ENCODE(data)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _ENCODE_ASCII(data)
    return text


class Event:
    """One event of the stream. `data_json` is its data encoded once (for the database and SSE).

    An event made from JSON (published with `data_json`, or read back from the database) does not
    keep its data as objects: `data` decodes it on each access. The ring of 20,000 recent events
    then holds one object per event instead of a tree of dicts, which keeps Python's cyclic
    garbage collector's full passes short (they hold every thread while they run).
    """

    __slots__ = ("id", "type", "_data", "ts", "session_id", "data_json", "sse_frame", "cost")

    def __init__(self, id: int, type: str, data: dict | None, ts: float,  # noqa: A002
                 session_id: int | None = None, data_json: str = "", sse_frame: bytes | None = None):
        self.id = id
        self.type = type
        self._data = data
        self.ts = ts
        self.session_id = session_id
        if not data_json:
            if data is None:
                raise ValueError("an event needs its data or its data_json")
            data_json = encode_data(data)
        self.data_json = data_json
        # the SSE frame, built once at publish time when clients are connected and shared by all
        # of them (counted in the ring's bytes); replayed events build theirs on each call
        self.sse_frame = sse_frame
        self.cost = 0  # what it counts in the ring's byte budget (set when published)

    @property
    def data(self) -> dict:
        data = self._data
        return json.loads(self.data_json) if data is None else data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.id, self.type, self.ts, self.session_id, self.data) == \
            (other.id, other.type, other.ts, other.session_id, other.data)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Event(id={self.id!r}, type={self.type!r}, data={self.data!r}, ts={self.ts!r}, "
                f"session_id={self.session_id!r})")

    def sse(self) -> bytes:
        return self.sse_frame or self._frame()

    def _frame(self) -> bytes:
        return f"id: {self.id}\nevent: {self.type}\ndata: {self.data_json}\n\n".encode("utf-8")

    def to_dict(self) -> dict:
        return {"id": self.id, "type": self.type, "ts": self.ts, "session_id": self.session_id,
                "data": self.data}

    @classmethod
    def from_row(cls, row: tuple) -> Event:
        event_id, type_, session_id, data_json, ts = row
        return cls(int(event_id), type_, None, float(ts), session_id, data_json)


class EventBus:
    """Thread-safe publish/subscribe with replay from the ring or, when it no longer reaches back
    far enough, from the database. Memory is bounded: the ring by count and bytes, the writer's
    pending list by count (overflow is counted and reported), each subscriber queue by count."""

    def __init__(self, db: Database | None, *, ring_size: int = 20000, clock: Callable[[], float] = time.time,
                 ring_bytes: int = 64 << 20, flush_interval: float = 0.1, flush_at: int = 2000,
                 max_pending: int = 100_000):
        if ring_size < 1 or max_pending < 1 or flush_at < 1:
            raise ValueError("ring_size, flush_at and max_pending must be at least 1")
        self._db = db
        self._clock = clock
        self._ring_size = ring_size
        self._ring_bytes_max = ring_bytes
        self._flush_interval = flush_interval
        self._flush_at = flush_at
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._writer_cond = threading.Condition(self._lock)
        self._flush_lock = threading.Lock()
        self._last_id = db.max_event_id() if db is not None else 0
        self._flushed_id = self._last_id
        self._ring: deque[Event] = deque()
        self._ring_bytes = 0
        self._pending: deque[Event] = deque()
        self._unsaved_bytes = 0  # JSON of the events published and not written yet
        self._inflight: list[Event] = []
        self._subs: list[Subscription] = []
        self._known_types = set(EVENT_TYPES)
        self._failing = False
        self._lost = 0
        self._closed = False
        self._writer: threading.Thread | None = None
        if db is not None:
            self._writer = threading.Thread(target=self._run_writer, name="event-writer", daemon=True)
            self._writer.start()

    @property
    def last_id(self) -> int:
        with self._lock:
            return self._last_id

    # publishing -----------------------------------------------------------------------------

    def publish(self, type: str, data: dict, *, session_id: int | None = None,
                data_json: str | None = None) -> Event:
        """`data_json`, when the caller already has it, must be exactly encode_data(data); the
        event then keeps only the JSON (see Event)."""
        if type not in self._known_types:
            if not _TYPE_RE.match(type):
                raise ValueError(f"invalid event type {type!r}")
            self._known_types.add(type)
        payload = data_json or encode_data(data)
        with self._lock:
            self._last_id = event_id = self._last_id + 1
            event = Event(event_id, type, None if data_json else data, self._clock(), session_id, payload)
            subs = self._subs
            if subs:
                frame = event.sse_frame = event._frame()  # built once, shared by every client
                size = event.cost = len(payload) + len(frame)
            else:
                size = event.cost = len(payload)
            ring = self._ring
            if len(ring) >= self._ring_size:
                self._ring_bytes -= ring.popleft().cost
            ring.append(event)
            self._ring_bytes += size
            if self._ring_bytes > self._ring_bytes_max:
                while self._ring_bytes > self._ring_bytes_max and len(ring) > 1:
                    self._ring_bytes -= ring.popleft().cost
            if self._db is not None:
                pending = self._pending
                # a notice (e.g. that events were lost) is never the one dropped
                if len(pending) < self._max_pending or type == "notice":
                    pending.append(event)
                    self._unsaved_bytes += len(payload)
                    waiting = len(pending)
                    if waiting == 1 or waiting == self._flush_at or \
                            self._unsaved_bytes > UNSAVED_FLUSH_BYTES:
                        self._writer_cond.notify()
                else:
                    self._lost += 1
            if subs:
                gone = False
                for sub in subs:
                    if not sub._offer(event):
                        gone = True
                if gone:
                    self._subs = [sub for sub in subs if sub._active]
        return event

    # replay ---------------------------------------------------------------------------------

    def subscribe(self, *, last_id: int | None = None, max_queue: int = 5000) -> Subscription:
        """Live events from now on; with last_id, first every event after it (ring, else db)."""
        with self._lock:
            live_start = self._last_id + 1
            cursor = None
            if last_id is not None and 0 <= int(last_id) < self._last_id:
                cursor = int(last_id) + 1
            sub = Subscription(self, cursor=cursor, live_start=live_start, max_queue=max_queue)
            if self._closed:
                sub._shutdown()
            else:
                self._subs.append(sub)
        return sub

    def since(self, last_id: int, limit: int = 1000, *, until: int | None = None) -> list[Event]:
        """Up to `limit` events with last_id < id (<= until), oldest first, without gaps other than
        events that were lost (never written because the database failed)."""
        out: list[Event] = []
        cursor = max(0, int(last_id)) + 1
        limit = max(1, int(limit))
        while len(out) < limit:
            with self._lock:
                end = self._last_id if until is None else min(int(until), self._last_id)
                if cursor > end:
                    break
                want = min(limit - len(out), end - cursor + 1)
                if self._ring and self._ring[0].id <= cursor:
                    start = cursor - self._ring[0].id
                    out.extend(itertools.islice(self._ring, start, start + want))
                    break
                flushed = self._flushed_id
                if self._db is None or cursor > flushed:
                    out.extend(self._memory_slice(cursor, end, want))
                    break
            bound = min(end, flushed)
            asked = min(want, bound - cursor + 1)
            rows = [r for r in self._db.events_after(cursor - 1, asked) if r[0] <= bound]
            out.extend(Event.from_row(r) for r in rows)
            cursor = rows[-1][0] + 1 if len(rows) == asked else bound + 1
        return out

    def _memory_slice(self, cursor: int, end: int, want: int) -> list[Event]:
        out: list[Event] = []
        for event in itertools.chain(self._inflight, self._pending):
            if event.id > end or len(out) >= want:
                break
            if event.id >= cursor:
                out.append(event)
        if len(out) < want and self._ring:
            following = out[-1].id + 1 if out else cursor
            start = max(0, following - self._ring[0].id)
            for event in itertools.islice(self._ring, start, None):
                if event.id > end or len(out) >= want:
                    break
                out.append(event)
        return out

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s is not sub]

    # persistence ----------------------------------------------------------------------------

    def _run_writer(self) -> None:
        backoff = 0.0
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._writer_cond.wait()
                deadline = time.monotonic() + (backoff or self._flush_interval)
                while not self._closed and (backoff or (len(self._pending) < self._flush_at
                                                        and self._unsaved_bytes <= UNSAVED_FLUSH_BYTES)):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._writer_cond.wait(remaining)
                if self._closed:
                    return
            try:
                ok = self._write_pending()
            except Exception:
                log.exception("event writer: unexpected error")
                ok = False
            backoff = 0.0 if ok else min(max(backoff * 2, 1.0), 30.0)

    def _write_pending(self) -> bool:
        if self._db is None:
            return True
        with self._flush_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
                self._inflight = batch
            if not batch:
                return True
            try:
                self._db.insert_events([(e.id, e.type, e.session_id, e.data_json, e.ts) for e in batch])
            except Exception as exc:
                with self._lock:
                    self._inflight = []
                    self._pending.extendleft(reversed(batch))
                    first_failure = not self._failing
                    self._failing = True
                if first_failure:
                    log.error("cannot save events to the session history: %s", exc)
                    self.publish("notice", {
                        "level": "error",
                        "message": f"cannot save events to the session history ({exc}); "
                                   "live events continue, saving is retried"})
                return False
            with self._lock:
                self._inflight = []
                self._unsaved_bytes -= sum(len(e.data_json) for e in batch)
                self._flushed_id = max(self._flushed_id, batch[-1].id)
                recovered, self._failing = self._failing, False
                lost, self._lost = self._lost, 0
        if recovered or lost:
            message = "saving events to the session history works again" if recovered else \
                "the session history fell behind"
            if lost:
                message += f"; {lost} events could not be saved and are missing from it"
            log.warning(message)
            self.publish("notice", {"level": "warning", "message": message})
        return True

    def behind(self) -> bool:
        """The database writer is far behind: more than BACKLOG_PAUSE_BYTES of events, or half
        of max_pending events (many small ones), wait for it. The agents' output is not read
        meanwhile (sessions.py), so memory does not grow with the output and nothing is dropped.
        Never while the database refuses writes: events beyond max_pending are dropped then (and
        reported) rather than holding the agents."""
        return not self._failing and (self._unsaved_bytes > BACKLOG_PAUSE_BYTES
                                      or len(self._pending) > self._max_pending // 2)

    def flush(self) -> bool:
        """Write every pending event now; False when the database refused them (reported)."""
        return self._write_pending()

    def close(self) -> None:
        """Stop the writer, persist what is pending, end every subscription. Idempotent."""
        with self._lock:
            self._closed = True
            self._writer_cond.notify_all()
            subs, self._subs = self._subs, []
            for sub in subs:
                sub._shutdown()
        if self._writer is not None and self._writer is not threading.current_thread():
            self._writer.join()
        if not self._write_pending():
            with self._lock:
                missing = len(self._pending)
            log.error("%d events could not be saved to the session history at shutdown", missing)


class Subscription:
    """One consumer (an SSE client). Either get() is called from one thread (it waits), or the
    consumer registers a callback with set_on_ready() and drains the queue with poll()."""

    def __init__(self, bus: EventBus, *, cursor: int | None, live_start: int, max_queue: int):
        self._bus = bus
        # _offer takes the bare lock (cheap) and signals the condition only when get() waits
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = False
        self._queue: deque[Event] = deque()
        self._max_queue = max(1, int(max_queue))
        self._cursor = cursor
        self._live_start = live_start
        self._dropped = False
        self._closed = False
        self._on_ready: Callable[[], None] | None = None
        self.last_id = (cursor - 1) if cursor is not None else live_start - 1

    @property
    def dropped(self) -> bool:
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def _active(self) -> bool:
        return not (self._dropped or self._closed)

    @property
    def replaying(self) -> bool:
        """True while get() still has missed events (before the live ones) to return."""
        return self._cursor is not None

    def _signal(self) -> None:
        """Wake the consumer; called with the lock held."""
        self._waiting = False
        if self._on_ready is not None:
            self._on_ready()
        else:
            self._cond.notify_all()

    def _offer(self, event: Event) -> bool:
        with self._lock:
            if self._dropped or self._closed:
                return False
            if len(self._queue) >= self._max_queue:
                self._dropped = True
                self._queue.clear()
                self._signal()
                return False
            self._queue.append(event)
            if self._waiting:
                self._signal()
            return True

    def _shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._signal()

    def _raise_if_inactive(self) -> None:
        if self._dropped:
            raise SubscriptionDropped(
                f"the event stream fell more than {self._max_queue} events behind and was dropped "
                f"(last id delivered: {self.last_id})",
                "reconnect with Last-Event-ID set to the last id received")
        if self._closed:
            raise SubscriptionClosed("the event stream is closed", "reconnect when the daemon is back")

    def get(self, timeout: float) -> list[Event]:
        """The next batch (missed events first, then live ones); [] after `timeout` seconds.
        Raises SubscriptionDropped when the queue overflowed, SubscriptionClosed after close()."""
        if self._cursor is not None:
            self._raise_if_inactive()
            batch = self._bus.since(self._cursor - 1, REPLAY_PAGE, until=self._live_start - 1)
            if batch:
                self.last_id = batch[-1].id
                self._cursor = self.last_id + 1 if self.last_id + 1 < self._live_start else None
                return batch
            self._cursor = None
        with self._cond:
            if not self._queue and self._active:
                self._waiting = True
                self._cond.wait(timeout)
                self._waiting = False
            self._raise_if_inactive()
            batch = list(self._queue)
            self._queue.clear()
        if batch:
            self.last_id = batch[-1].id
        return batch

    def set_on_ready(self, callback: Callable[[], None]) -> None:
        """Instead of waiting in get(): `callback()` is called when an event arrives after poll()
        found the queue empty, and when the subscription is dropped or closed. It is called from
        the publishing thread with the bus's locks held, so it must only signal (no I/O that can
        block, no call back into the bus). It is called once now when something is already due."""
        if self.replaying:
            raise RuntimeError("set_on_ready() after the replay: call get() until replaying is False")
        with self._lock:
            self._on_ready = callback
            due = bool(self._queue) or not self._active
            self._waiting = not due
        if due:
            callback()

    def poll(self) -> list[Event]:
        """The live events queued now, without waiting (see set_on_ready). Raises like get()."""
        with self._lock:
            self._raise_if_inactive()
            batch = list(self._queue)
            self._queue.clear()
            self._waiting = True
        if batch:
            self.last_id = batch[-1].id
        return batch

    def close(self) -> None:
        self._shutdown()
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
