"""Server-Sent Events at /api/events over real sockets: events during a real run with the fake
agents, reconnect with Last-Event-ID (from memory, and from the database after a restart) with no
gap and no duplicate, heartbeats, many clients, a stuck client that is dropped without slowing the
publisher, and the session filter."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from projects import feature, load_features, make_project
from test_server import TWO_TRACKS, Daemon

from agent_orchestrator.events import EventBus
from agent_orchestrator.server import WebServer


class SseClient:
    """A minimal EventSource: raw socket, parses `id:`/`event:`/`data:` frames and comments."""

    def __init__(self, port: int, *, last_id: int | None = None, query: str = "", timeout: float = 20,
                 token: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        headers = [f"GET /api/events{query} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        if last_id is not None:
            headers.append(f"Last-Event-ID: {last_id}")
        if token:
            headers.append(f"Authorization: Bearer {token}")
        self.sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        self.status_line = self.file.readline().decode()
        self.headers = {}
        while True:
            line = self.file.readline().decode().strip()
            if not line:
                break
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.comments: list[str] = []

    def next(self) -> dict | None:
        """The next event frame ({id, event, data}); comments are collected; None at end of stream."""
        frame: dict = {}
        while True:
            raw = self.file.readline()
            if not raw.endswith(b"\n"):
                return None  # end of stream (a cut-off last line is dropped, as EventSource does)
            line = raw.decode("utf-8").rstrip("\n")
            if line == "":
                if "data" in frame:
                    return frame
                frame = {}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            if name == "id":
                frame["id"] = int(value)
            elif name == "event":
                frame["event"] = value
            elif name == "data":
                frame["data"] = json.loads(value)

    def read_until(self, predicate, *, limit: int = 100000) -> list[dict]:
        got = []
        for _ in range(limit):
            frame = self.next()
            assert frame is not None, f"stream ended early after {got[-1:] if got else 'nothing'}"
            got.append(frame)
            if predicate(frame):
                return got
        raise AssertionError("predicate never true")

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.file.close()
        self.sock.close()


@pytest.fixture
def run_project(git_repo, fakes_on_path, monkeypatch):
    monkeypatch.setenv("FAKE_AGENT_SCENARIO", "implement")
    monkeypatch.setenv("FAKE_AGENT_DELAY", "0.3")
    return make_project(git_repo, [feature(1), feature(2), feature(3, category="ui")], tracks=TWO_TRACKS)


def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(run_project):
    d = Daemon(run_project).start()
    try:
        first = SseClient(d.port)
        assert first.status_line.startswith("HTTP/1.1 200")
        assert first.headers["content-type"].startswith("text/event-stream")
        assert d.request("POST", "/api/start")[0] == 200
        seen = first.read_until(lambda f: f["event"] == "output")
        ids = [f["id"] for f in seen]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert {"status", "output"} <= {f["event"] for f in seen}
        last_seen = ids[-1]
        first.close()  # disconnect in the middle of the run

        d.wait_for(lambda: all(f["status"] == "passed" for f in load_features(run_project).values()),
                   what="the run to finish")
        d.wait_for(lambda: not d.request("GET", "/api/sessions?status=running")[2]["sessions"], what="sessions to end")
        time.sleep(0.3)
        last = d.request("GET", "/api/status")[2]["last_event_id"]
        assert last > last_seen + 10

        again = SseClient(d.port, last_id=last_seen)
        missed = again.read_until(lambda f: f["id"] == last)
        again.close()
        assert [f["id"] for f in missed] == list(range(last_seen + 1, last + 1))  # no gap, no duplicate

        everything = SseClient(d.port, query="?last_id=0")
        full = everything.read_until(lambda f: f["id"] == last)
        everything.close()
        assert [f["id"] for f in full] == list(range(1, last + 1))
        assert full[last_seen:] == missed
        assert {"status", "feature", "session", "output", "track", "merge"} <= {f["event"] for f in full}
    finally:
        d.stop()

    # after a restart the ring is empty: the replay comes from the database
    d2 = Daemon(run_project).start()
    try:
        replay = SseClient(d2.port, last_id=last_seen)
        from_db = replay.read_until(lambda f: f["id"] == last)
        replay.close()
        assert from_db == missed
    finally:
        d2.stop()


def test_heartbeats_and_many_clients(run_project):
    d = Daemon(run_project, heartbeat=0.2).start()
    try:
        quiet = SseClient(d.port)
        deadline = time.monotonic() + 5
        while "heartbeat" not in quiet.comments and time.monotonic() < deadline:
            quiet.sock.settimeout(1)
            line = quiet.file.readline().decode().strip()
            if line.startswith(":"):
                quiet.comments.append(line[1:].strip())
        assert "heartbeat" in quiet.comments
        quiet.close()

        clients = [SseClient(d.port) for _ in range(6)]
        assert d.request("POST", "/api/tracks/core/pause", {"reason": "many"})[0] == 200
        assert d.request("POST", "/api/tracks/core/resume")[0] == 200
        streams = []
        for client in clients:
            got = client.read_until(lambda f: f["event"] == "track" and f["data"]["paused"] is False)
            streams.append([(f["id"], f["event"]) for f in got])
            client.close()
        assert all(s == streams[0] for s in streams)
        assert [e for _, e in streams[0]].count("track") == 2
    finally:
        d.stop()


def test_session_filter_only_streams_that_session(run_project):
    d = Daemon(run_project).start()
    try:
        watcher = SseClient(d.port, query="?session=1")
        assert d.request("POST", "/api/start")[0] == 200
        got = watcher.read_until(lambda f: f["event"] == "session" and f["data"]["status"] != "running")
        watcher.close()
        assert got[0]["event"] == "session" and got[0]["data"] == {**got[0]["data"], "id": 1, "status": "running"}
        assert all(f["data"].get("session_id", f["data"].get("id")) == 1 for f in got)
        assert any(f["event"] == "output" for f in got)
        assert d.request("GET", "/api/events?session=x", token=False)[0] == 400
    finally:
        d.stop()


def test_stuck_client_is_dropped_without_slowing_the_publisher(tmp_path):
    """A client that stops reading: its bounded queue overflows, it is dropped, publish() never
    waits for it; a healthy client alongside gets everything; the stuck one catches up by
    reconnecting with the last id it got."""
    bus = EventBus(None, ring_size=100000)
    web = WebServer(None, bus, token="t" * 40, host="127.0.0.1", port=0, sse_queue=200, socket_timeout=2)
    web.start()
    try:
        stuck = SseClient(web.port)
        healthy = SseClient(web.port)
        received: list[int] = []

        def read_healthy() -> None:
            while not received or received[-1] < 3000:
                frame = healthy.next()
                if frame is None:
                    return
                received.append(frame["id"])

        reader = threading.Thread(target=read_healthy)
        reader.start()
        deadline = time.monotonic() + 5
        while web.sse_clients < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        payload = {"text": "x" * 8000}
        slowest = 0.0
        for i in range(1, 3001):
            started = time.perf_counter()
            bus.publish("output", {"n": i, **payload})
            slowest = max(slowest, time.perf_counter() - started)
            if i % 50 == 0:  # a healthy client keeps up; the stuck one never reads
                catch_up = time.monotonic() + 10
                while (not received or received[-1] < i - 50) and time.monotonic() < catch_up:
                    time.sleep(0.001)
        assert slowest < 0.5, f"one publish() took {slowest:.2f}s: a client slowed the bus"
        reader.join(20)
        assert received == list(range(1, 3001))
        healthy.close()

        # the stuck client's stream ends (dropped); what it got is a prefix without gaps
        got: list[int] = []
        while True:
            frame = stuck.next()
            if frame is None:
                break
            got.append(frame["id"])
        stuck.close()
        assert got == list(range(1, len(got) + 1)) and len(got) < 3000
        again = SseClient(web.port, last_id=got[-1] if got else 0)
        rest = [f["id"] for f in again.read_until(lambda f: f["id"] == 3000)]
        again.close()
        assert got + rest == list(range(1, 3001))
    finally:
        web.shutdown()
        bus.close()


def test_shutdown_ends_open_streams(tmp_path):
    bus = EventBus(None)
    web = WebServer(None, bus, token="t" * 40, host="127.0.0.1", port=0, heartbeat=30)
    web.start()
    client = SseClient(web.port)
    deadline = time.monotonic() + 5
    while web.sse_clients < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    web.shutdown()
    assert time.monotonic() - started < 5
    assert client.next() is None
    client.close()
    web.shutdown()  # again: nothing left to do, no error
    bus.publish("output", {"text": "after the shutdown"})  # the hub's loop is gone: no error
    bus.close()


def test_unknown_last_event_id_gets_a_reset_event():
    bus = EventBus(None)
    bus.publish("notice", {"level": "info", "message": "one"})
    web = WebServer(None, bus, token="t" * 40, host="127.0.0.1", port=0)
    web.start()
    try:
        client = SseClient(web.port, last_id=999)
        frame = client.next()
        assert frame == {"id": 1, "event": "reset", "data": {"last_id": 1}}
        bus.publish("notice", {"level": "info", "message": "two"})
        assert client.next()["id"] == 2
        client.close()
    finally:
        web.shutdown()
        bus.close()
