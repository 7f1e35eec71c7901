"""Notifications: real HTTP receivers on 127.0.0.1, a real EventBus, a real notify.command script."""
from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent_orchestrator.config import parse_config
from agent_orchestrator.config_sections import NOTIFY_EVENTS
from agent_orchestrator.events import EventBus
from agent_orchestrator.notify import TITLES, EventMapper, Notification, Notifier, expand_command

T0 = 1714560000.0  # 2024-05-01T10:40:00Z


class Receiver:
    """A webhook endpoint: records every POST; answers with the next status of `statuses` (then 200)."""

    def __init__(self, statuses=()):
        self.requests: list[dict] = []
        self.statuses = list(statuses)
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.cond:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers),
                                           "body": json.loads(body)})
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    outer.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[dict]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.requests) >= n, timeout)
            return list(self.requests)

    def bodies(self) -> list[dict]:
        with self.cond:
            return [r["body"] for r in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(statuses=()):
        r = Receiver(statuses)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def bus():
    b = EventBus(None)
    yield b
    b.close()


def config(tmp_path, **notify):
    cfg, warnings = parse_config({"notify": notify}, project_root=tmp_path)
    assert warnings == []
    return cfg


def refused_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/hook"


@pytest.fixture
def silent_server():
    """Accepts connections (kernel backlog) but never reads or answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    s.close()


def make_notifier(bus, cfg, **kw):
    kw.setdefault("backoff", 0.01)
    n = Notifier(bus, cfg, project_name="shop", clock=lambda: T0, **kw)
    n.start()
    return n


# ---------------------------------------------------------------- webhooks

def test_feature_passed_posts_the_documented_body_and_headers(tmp_path, bus, receivers):
    r = receivers()
    cfg = config(tmp_path, webhooks=[{"url": r.url, "headers": {"Authorization": "Bearer s3cret", "X-Team": "a"}}])
    n = make_notifier(bus, cfg)
    try:
        bus.publish("feature", {"id": 12, "status": "passed", "name": "Login form"})
        [req] = r.wait_for(1)
    finally:
        n.close()
    assert req["path"] == "/hook"
    assert req["body"] == {"event": "feature.passed", "ts": "2024-05-01T10:40:00+00:00", "project": "shop",
                           "message": "Feature #12 (Login form) passed.",
                           "data": {"id": 12, "status": "passed", "name": "Login form"}}
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-team"] == "a"
    assert headers["user-agent"].startswith("agent-orchestrator/")


def test_each_notification_name_from_its_bus_event(tmp_path, bus, receivers):
    r = receivers()
    n = make_notifier(bus, config(tmp_path, webhooks=[{"url": r.url}]))
    published = [
        ("output", {"session_id": 1, "event": {"kind": "text", "text": "hi"}}),
        ("feature", {"id": 1, "status": "in_progress"}),
        ("feature", {"id": 1, "status": "passed"}),
        ("feature", {"id": 2, "status": "failed", "failure_reason": "verifier said FAIL"}),
        ("feature", {"id": 2, "status": "failed", "note": "status kept: it was changed in the file meanwhile"}),
        ("track", {"name": "core", "phase": "implementing", "paused": False}),
        ("track", {"name": "core", "phase": "paused", "paused": True, "paused_reason": "2 environment failures"}),
        ("track", {"name": "core", "phase": "idle", "paused": True}),          # still paused: no repeat
        ("budget", {"scope": "total", "limit_usd": 5, "spent_usd": 4.1, "level": "warning"}),
        ("budget", {"scope": "feature", "feature_id": 3, "limit_usd": 1, "spent_usd": 1.02, "level": "reached"}),
        ("rate_limit", {"agent": "claude", "until": T0 + 600, "waiting": False, "reason": "429"}),
        ("rate_limit", {"agent": "claude", "agents": ["claude", "codex"], "until": T0 + 600, "waiting": True,
                        "track": "core", "reason": "every agent of the chain is rate-limited"}),
        ("conflict", {"feature_ids": [3, 4], "branches": ["feature/3-a", "feature/4-b"], "files": ["a.py"],
                      "against": "feature", "base": "ai-develop"}),
        ("conflict", {"feature_ids": [5], "branches": ["feature/5-c"], "files": ["b.py"], "against": "base",
                      "base": "ai-develop"}),
        ("run", {"state": "finished", "passed": [1], "failed": [2], "blocked": []}),
        ("session", {"id": 4, "status": "failed"}),
    ]
    for type_, data in published:
        bus.publish(type_, data)
    bodies = [req["body"] for req in r.wait_for(9)]
    time.sleep(0.1)
    n.close()
    assert len(r.bodies()) == 9
    assert [b["event"] for b in bodies] == [
        "feature.passed", "feature.failed", "track.paused", "budget.warning", "budget.reached",
        "rate_limit.waiting", "conflict.predicted", "conflict.predicted", "run.finished"]
    messages = {b["event"] + str(i): b["message"] for i, b in enumerate(bodies)}
    assert messages["feature.failed1"] == "Feature #2 failed: verifier said FAIL"
    assert messages["track.paused2"] == "Track core paused: 2 environment failures"
    assert messages["budget.warning3"] == "Budget warning: $4.10 of the $5.00 budget of the whole project spent."
    assert messages["budget.reached4"] == "Budget reached: $1.02 spent of the $1.00 budget of feature #3."
    assert messages["rate_limit.waiting5"] == ("Track core is waiting until 2024-05-01 10:50 UTC: every agent "
                                               "(claude, codex) is rate-limited.")
    assert messages["conflict.predicted6"] == "Features #3 and #4 will conflict when both are merged: a.py."
    assert messages["conflict.predicted7"] == "Feature #5 will conflict with ai-develop: b.py."
    assert messages["run.finished8"] == "Run finished: 1 passed, 1 failed, 0 blocked. Failed: #2."
    assert bodies[5]["data"]["until"] == T0 + 600


def test_events_filter(tmp_path, bus, receivers):
    only_failures, everything = receivers(), receivers()
    cfg = config(tmp_path, webhooks=[{"url": only_failures.url, "events": ["feature.failed", "run.finished"]},
                                     {"url": everything.url, "events": ["*"]}])
    n = make_notifier(bus, cfg)
    bus.publish("feature", {"id": 1, "status": "passed"})
    bus.publish("feature", {"id": 2, "status": "failed"})
    bus.publish("run", {"state": "finished", "passed": [1], "failed": [2], "blocked": []})
    everything.wait_for(3)
    only_failures.wait_for(2)
    n.close()
    assert [b["event"] for b in everything.bodies()] == ["feature.passed", "feature.failed", "run.finished"]
    assert [b["event"] for b in only_failures.bodies()] == ["feature.failed", "run.finished"]


def test_retries_on_500_then_success(tmp_path, bus, receivers):
    r = receivers(statuses=[500, 503])
    n = make_notifier(bus, config(tmp_path, webhooks=[{"url": r.url}], retries=3))
    bus.publish("feature", {"id": 1, "status": "passed"})
    reqs = r.wait_for(3)
    time.sleep(0.1)
    n.close()
    assert len(r.bodies()) == 3
    assert reqs[0]["body"] == reqs[1]["body"] == reqs[2]["body"]
    assert n.stats() == {"webhook 0": {"sent": 1, "failed": 0, "dropped": 0}}


def test_gives_up_after_the_retries_and_does_not_retry_a_client_error(tmp_path, bus, receivers, caplog):
    always_500 = receivers(statuses=[500] * 10)
    bad_request = receivers(statuses=[400] * 10)
    cfg = config(tmp_path, webhooks=[{"url": always_500.url}, {"url": bad_request.url}], retries=2)
    n = make_notifier(bus, cfg)
    with caplog.at_level(logging.WARNING, logger="agent_orchestrator.notify"):
        bus.publish("feature", {"id": 1, "status": "passed"})
        bus.publish("feature", {"id": 2, "status": "passed"})
        always_500.wait_for(6)
        bad_request.wait_for(2)
        time.sleep(0.2)
        n.close()
    assert len(always_500.bodies()) == 6       # 2 notifications x (1 + 2 retries)
    assert len(bad_request.bodies()) == 2      # no retry of a 400
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2                  # logged once per webhook
    assert any("HTTP 500" in m and "after 3 attempt" in m for m in failures)
    assert all("127.0.0.1:" in m and "/hook" not in m for m in failures)   # URL path (secrets) not logged


def test_dead_webhooks_never_slow_publishing_or_the_other_webhooks(tmp_path, bus, receivers, silent_server, caplog):
    good = receivers()
    cfg = config(tmp_path, webhooks=[{"url": refused_url()}, {"url": silent_server}, {"url": good.url}],
                 timeoutSeconds=0.3, retries=1)
    n = make_notifier(bus, cfg)
    with caplog.at_level(logging.WARNING, logger="agent_orchestrator.notify"):
        start = time.perf_counter()
        for i in range(1000):
            bus.publish("feature", {"id": i, "status": "passed"})
        elapsed = time.perf_counter() - start
        assert elapsed < 0.5, f"publishing 1000 events took {elapsed:.2f} s"
        time.sleep(0.3)
        bus.publish("run", {"state": "finished", "passed": [], "failed": [], "blocked": []})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "run.finished" not in [b["event"] for b in good.bodies()]:
            time.sleep(0.02)
        assert "run.finished" in [b["event"] for b in good.bodies()]
        assert len(good.bodies()) > 100
        closing = time.perf_counter()
        n.close(wait=0.5)
        assert time.perf_counter() - closing < 1.5
    drops = [r.getMessage() for r in caplog.records if "not keeping up" in r.getMessage()]
    labels = [d.split(" (")[0] for d in drops]
    assert {"notifications: webhook 0", "notifications: webhook 1"} <= set(labels)
    assert len(labels) == len(set(labels))     # logged once per webhook
    stats = n.stats()
    assert stats["webhook 0"]["dropped"] > 0 and stats["webhook 1"]["dropped"] > 0
    assert stats["webhook 0"]["failed"] > 0 and stats["webhook 2"]["sent"] > 100


def test_close_delivers_what_was_published_just_before(tmp_path, bus, receivers):
    r = receivers()
    n = make_notifier(bus, config(tmp_path, webhooks=[{"url": r.url}]))
    bus.publish("run", {"state": "finished", "passed": [1, 2], "failed": [], "blocked": []})
    n.close(wait=2)
    assert [b["event"] for b in r.bodies()] == ["run.finished"]


def test_nothing_configured_means_no_subscription(tmp_path, bus):
    n = Notifier(bus, config(tmp_path), project_name="shop")
    n.start()
    assert not n.enabled and n._sub is None
    n.close()


# ---------------------------------------------------------------- notify.command

RECORDER = """\
import json, os, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"argv": sys.argv[2:], "event": os.environ.get("AO_EVENT")}) + "\\n")
if "fail" in sys.argv[2]:
    sys.exit(3)
"""


def wait_lines(path: Path, n: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= n:
                return [json.loads(line) for line in lines]
        time.sleep(0.02)
    raise AssertionError(f"{path} did not get {n} lines")


def test_notify_command_runs_with_placeholders_and_the_event_in_env(tmp_path, bus):
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    out = tmp_path / "calls.jsonl"
    cfg = config(tmp_path, command=[sys.executable, str(script), str(out), "{event}", "{title}",
                                    "msg: {message}", "{other} $HOME; rm -rf /"])
    n = make_notifier(bus, cfg)
    bus.publish("feature", {"id": 7, "status": "failed", "failure_reason": "tests fail; `rm -rf /`"})
    [call] = wait_lines(out, 1)
    n.close()
    assert call["argv"] == ["feature.failed", "shop: Feature failed",
                            "msg: Feature #7 failed: tests fail; `rm -rf /`", "{other} $HOME; rm -rf /"]
    event = json.loads(call["event"])
    assert event["event"] == "feature.failed" and event["project"] == "shop"
    assert event["data"] == {"id": 7, "status": "failed", "failure_reason": "tests fail; `rm -rf /`"}


def test_failing_command_is_logged_once_and_keeps_running(tmp_path, bus, caplog):
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    out = tmp_path / "calls.jsonl"
    cfg = config(tmp_path, command=[sys.executable, str(script), str(out), "fail-{event}"])
    n = make_notifier(bus, cfg)
    with caplog.at_level(logging.WARNING, logger="agent_orchestrator.notify"):
        bus.publish("feature", {"id": 1, "status": "passed"})
        bus.publish("feature", {"id": 2, "status": "passed"})
        assert len(wait_lines(out, 2)) == 2
        time.sleep(0.2)
        n.close()
    failures = [r.getMessage() for r in caplog.records if "notify.command" in r.getMessage()]
    assert len(failures) == 1 and "exit code 3" in failures[0]


def test_missing_command_binary_does_not_break_webhooks(tmp_path, bus, receivers, caplog):
    r = receivers()
    cfg = config(tmp_path, command=["no-such-notifier-binary-xyz", "{message}"], webhooks=[{"url": r.url}])
    n = make_notifier(bus, cfg)
    with caplog.at_level(logging.WARNING, logger="agent_orchestrator.notify"):
        bus.publish("feature", {"id": 1, "status": "passed"})
        r.wait_for(1)
        time.sleep(0.2)
        n.close()
    assert len(r.bodies()) == 1
    assert any("not found" in rec.getMessage() for rec in caplog.records)


# ---------------------------------------------------------------- pure parts

def test_every_notification_name_has_a_title():
    assert set(TITLES) == set(NOTIFY_EVENTS)


def test_expand_command_replaces_only_the_known_placeholders():
    note = Notification("run.finished", "Run finished: 1 passed.", {}, T0, "shop")
    assert expand_command(["notify-send", "{title}", "{message}", "{event}", "{nope}", "{{title}}"], note) == [
        "notify-send", "shop: Run finished", "Run finished: 1 passed.", "run.finished", "{nope}",
        "{shop: Run finished}"]


def test_track_pause_is_reported_on_the_transition_only():
    m = EventMapper()
    seq = [{"name": "ui", "paused": False}, {"name": "ui", "paused": True, "paused_reason": "x"},
           {"name": "ui", "paused": True}, {"name": "core", "paused": True}, {"name": "ui", "paused": False},
           {"name": "ui", "paused": True}, {"name": "ui", "phase": "idle"}]
    assert [bool(m.map("track", d)) for d in seq] == [False, True, False, True, False, True, False]


@pytest.mark.parametrize("type_,data", [
    ("feature", {"id": 1, "status": "open"}),
    ("budget", {"level": "other"}),
    ("rate_limit", {"agent": "claude", "waiting": False}),
    ("run", {"state": "started"}),
    ("notice", {"level": "error", "message": "x"}),
    ("feature", "not a dict"),
])
def test_events_that_are_not_notifications(type_, data):
    assert EventMapper().map(type_, data) is None
