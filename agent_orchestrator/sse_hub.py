"""Live SSE streams: one asyncio loop writes every connected client's socket (see SseHub)."""
from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
import time
from collections import deque
from typing import Any

from .events import SubscriptionDropped

log = logging.getLogger("agent_orchestrator.server")


class _Stream:
    """One live SSE client handed to the hub: its socket, the id of the last event it was given
    and what is left to send."""

    __slots__ = ("sock", "last_id", "only_session", "done", "out", "last_write", "last_progress",
                 "peer", "want_write")

    def __init__(self, sock: socket.socket, last_id: int, only_session: int | None, last_write: float,
                 peer: str):
        self.sock = sock
        self.last_id = last_id
        self.only_session = only_session
        self.done = threading.Event()
        self.out: memoryview | None = None
        self.last_write = last_write
        self.last_progress = last_write
        self.peer = peer
        self.want_write = False


def session_events(events: list, only: int) -> list:
    return [e for e in events if e.session_id == only or (e.type == "session" and e.data.get("id") == only)]


class SseHub:
    """Writes every live SSE stream from one asyncio event loop, with one subscription to the bus.

    A client's handler thread sends the headers and the replay (Last-Event-ID), then hands its
    socket and the id of the last event it sent to the hub, and waits until the stream ends.

    The hub runs on the daemon's own event loop when it is given one - the thread that reads the
    agents' output and publishes it - else on a loop of its own in a thread. When events are
    published it is scheduled once (`call_soon` from the loop's thread: no thread wakeup, no
    handoff of the GIL; `call_soon_threadsafe` from other threads). A pass takes the new events
    once, joins their frames once, and sends the same bytes to every client that is up to date,
    with non-blocking writes. Publishing costs the same whatever the number of clients.

    A client whose socket is full is sent nothing more until it has taken what it was given; it
    then catches up from the events the hub keeps (the last `sse_queue`). One that falls more
    than `sse_queue` events behind is disconnected, as is one that takes nothing for
    `socket_timeout` seconds; it reconnects with Last-Event-ID and catches up from the history.
    """

    def __init__(self, web: Any, loop: asyncio.AbstractEventLoop | None = None):
        self.web = web
        self._loop = loop
        self._own_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._scheduled = False
        self._closed = False
        # state below is only touched on the loop
        self._streams: set[_Stream] = set()
        self._sub: Any = None
        self._cursor = 0                     # id of the last event the hub took from the bus
        self._recent: deque = deque()        # the last `sse_queue` events taken, for catching up
        self._ticker: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ other threads
    def attach(self, sock: socket.socket, last_id: int, only_session: int | None, last_write: float,
               peer: str) -> _Stream:
        """Hand a live stream (everything up to `last_id` sent) to the hub; then wait(stream)."""
        stream = _Stream(sock, last_id, only_session, last_write, peer)
        with self._lock:
            if self._closed:
                stream.done.set()
                return stream
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._own_thread = threading.Thread(target=self._loop.run_forever, name="ao-sse",
                                                    daemon=True)
                self._own_thread.start()
            loop = self._loop
        try:
            loop.call_soon_threadsafe(self._add, stream)
        except RuntimeError:  # the loop is closed: the daemon is on its way out
            stream.done.set()
        return stream

    def wait(self, stream: _Stream) -> None:
        """Block (a handler thread) until the hub is done with the stream, or its loop is gone."""
        loop = self._loop
        while not stream.done.wait(0.5):
            if loop is None or loop.is_closed() or not loop.is_running():
                return

    def _wake(self) -> None:
        """Events were published. Called from the publishing thread with the bus's locks held: it
        only schedules a pass."""
        with self._lock:
            if self._scheduled or self._closed:
                return
            self._scheduled = True
            loop = self._loop
        try:
            if self._on_loop_thread(loop):
                loop.call_soon(self._run)
            else:
                loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed (shutdown): nothing more to send
            pass

    @staticmethod
    def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
        try:
            return asyncio.get_running_loop() is loop
        except RuntimeError:
            return False

    def close(self) -> None:
        """End every stream (from a thread other than the loop's, or from the loop itself).
        Idempotent."""
        with self._lock:
            already, self._closed = self._closed, True
            loop = self._loop
        if loop is None or already:
            return
        finished = threading.Event()

        def finish() -> None:
            for stream in list(self._streams):
                self._detach(stream)
            self._unsubscribe()
            finished.set()

        if self._on_loop_thread(loop):
            finish()
        else:
            try:
                loop.call_soon_threadsafe(finish)
                finished.wait(5)
            except RuntimeError:  # the loop is already closed
                pass
        if self._own_thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._own_thread.join(5)
            loop.close()

    # ------------------------------------------------------------ on the loop
    def _add(self, stream: _Stream) -> None:
        if self._closed:
            stream.done.set()
            return
        if self._sub is None:
            self._subscribe()
        self._streams.add(stream)
        stream.sock.setblocking(False)
        self._loop.add_reader(stream.sock.fileno(), self._on_readable, stream)
        self._feed(stream, [])  # what was published since its handler's last event
        if self._ticker is None:
            self._tick()

    def _subscribe(self) -> None:
        bus = self.web.bus
        self._sub = bus.subscribe(max_queue=max(4 * self.web.sse_queue, 20000))
        self._cursor = self._sub.last_id
        self._recent.clear()
        self._sub.set_on_ready(self._wake)

    def _unsubscribe(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        self._recent.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def _run(self) -> None:
        with self._lock:
            self._scheduled = False
        if self._sub is None:
            return
        try:
            events = self._sub.poll()
        except SubscriptionDropped as exc:  # the loop was held up for too long, or the bus closed
            if not self.web.closing.is_set():
                log.warning("live event streams fell behind (%s); clients reconnect", exc.message)
            for stream in list(self._streams):
                self._detach(stream)
            self._unsubscribe()
            return
        if not events:
            return
        self._cursor = events[-1].id
        recent = self._recent
        recent.extend(events)
        while len(recent) > self.web.sse_queue:
            recent.popleft()
        joined: bytes | None = None
        for stream in list(self._streams):
            if stream.out is None and stream.only_session is None and stream.last_id == events[0].id - 1:
                if joined is None:
                    joined = b"".join([e.sse() for e in events])
                stream.last_id = self._cursor
                self._write(stream, joined)
            else:
                self._feed(stream, events)

    def _feed(self, stream: _Stream, events: list) -> None:
        """Send a stream what it has not had yet, up to the hub's cursor, if it can take it."""
        if stream not in self._streams:
            return
        behind = self._cursor - stream.last_id
        if behind > self.web.sse_queue:
            if not self.web.closing.is_set():
                log.info("SSE client %s dropped: it fell more than %d events behind (last id delivered: %d)",
                         stream.peer, self.web.sse_queue, stream.last_id)
            self._detach(stream)
            return
        if stream.out is not None or behind <= 0:
            return
        first = stream.last_id + 1
        if events and events[0].id <= first:
            batch = events[first - events[0].id:]
        elif self._recent and self._recent[0].id <= first:
            batch = list(itertools.islice(self._recent, first - self._recent[0].id, None))
        else:  # the start of its stream (events published while it was handed over)
            try:
                batch = self.web.bus.since(stream.last_id, behind, until=self._cursor)
            except Exception as exc:  # noqa: BLE001 - the history cannot be read: it reconnects
                log.warning("SSE client %s dropped: %s", stream.peer, exc)
                batch = []
            if not batch or batch[0].id != first:
                log.info("SSE client %s dropped: the events after %d are no longer in memory",
                         stream.peer, stream.last_id)
                self._detach(stream)
                return
        stream.last_id = self._cursor
        if stream.only_session is not None:
            batch = session_events(batch, stream.only_session)
        if batch:
            self._write(stream, b"".join([e.sse() for e in batch]))

    def _tick(self) -> None:
        """Heartbeats for quiet streams; streams that took nothing for socket_timeout end."""
        self._ticker = None
        if not self._streams:
            self._unsubscribe()  # nobody listens: publishing costs nothing again
            return
        now = time.monotonic()
        heartbeat, stuck_after = self.web.heartbeat, self.web.socket_timeout
        for stream in list(self._streams):
            if stream.out is None:
                if now - stream.last_write >= heartbeat:
                    self._write(stream, b": heartbeat\n\n")
            elif now - stream.last_progress >= stuck_after:
                log.info("SSE client %s dropped: it read nothing for %.0f s", stream.peer, stuck_after)
                self._detach(stream)
        due = min((st.last_write + heartbeat if st.out is None else st.last_progress + stuck_after
                   for st in self._streams), default=now + heartbeat)
        self._ticker = self._loop.call_later(max(0.02, due - time.monotonic()), self._tick)

    def _on_readable(self, stream: _Stream) -> None:
        """The client sent something: EOF (it went away) ends the stream; other bytes are ignored."""
        try:
            alive = bool(stream.sock.recv(4096))
        except BlockingIOError:
            alive = True
        except OSError:
            alive = False
        if not alive:
            log.debug("SSE client %s went away", stream.peer)
            self._detach(stream)

    def _on_writable(self, stream: _Stream) -> None:
        if self._send(stream):
            self._feed(stream, [])  # it took everything: what was published meanwhile

    def _write(self, stream: _Stream, data: bytes) -> None:
        stream.out = memoryview(data)
        stream.last_write = stream.last_progress = time.monotonic()
        self._send(stream)

    def _send(self, stream: _Stream) -> bool:
        """Send what is left for this client; True when all of it left."""
        out = stream.out
        try:
            while out is not None and len(out):
                sent = stream.sock.send(out)
                out = out[sent:]
                stream.last_progress = time.monotonic()
        except BlockingIOError:
            stream.out = out
            if not stream.want_write:
                stream.want_write = True
                self._loop.add_writer(stream.sock.fileno(), self._on_writable, stream)
            return False
        except OSError:
            log.debug("SSE client %s went away", stream.peer)
            self._detach(stream)
            return False
        stream.out = None
        if stream.want_write:
            stream.want_write = False
            self._loop.remove_writer(stream.sock.fileno())
        return True

    def _detach(self, stream: _Stream) -> None:
        if stream not in self._streams:
            return
        self._streams.discard(stream)
        try:
            fd = stream.sock.fileno()
            if fd >= 0:
                self._loop.remove_reader(fd)
                if stream.want_write:
                    self._loop.remove_writer(fd)
        except (OSError, ValueError, RuntimeError):
            pass
        stream.out = None
        stream.done.set()
