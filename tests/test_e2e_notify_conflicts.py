"""End to end: webhooks receive a real run's notifications; a conflict between two running
features is predicted before either merges."""
from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from projects import feature, load_features, make_project, run_cli


class Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers.get("X-Token"), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_gets_feature_and_run_notifications(git_repo):
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        repo = make_project(git_repo, [feature(1), feature(2)], notify={"webhooks": [
            {"url": url, "events": ["feature.passed", "run.finished"],
             "headers": {"X-Token": "s3cret"}},
            {"url": "http://127.0.0.1:9/dead", "events": ["*"]}]})
        result = run_cli("run", "--project", str(repo))
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stdout + result.stderr
    names = [body["event"] for _, body in Receiver.received]
    assert sorted(names) == ["feature.passed", "feature.passed", "run.finished"]
    token, passed = Receiver.received[0]
    assert token == "s3cret"
    assert passed["project"] == "demo" and passed["data"]["status"] == "passed"
    assert passed["message"].startswith("Feature #1 (Feature 1) passed")
    run_body = next(b for _, b in Receiver.received if b["event"] == "run.finished")
    assert run_body["data"]["passed"] == [1, 2]


def test_conflict_between_running_features_is_predicted_before_either_merges(git_repo):
    tracks = [{"name": "a", "categories": ["a"], "isDefault": True},
              {"name": "b", "categories": ["b"]}]
    repo = make_project(git_repo, [feature(1, "a"), feature(2, "b")], tracks=tracks,
                        conflicts={"intervalSeconds": 1})
    env = {"FAKE_AGENT_FILE": "shared.txt", "FAKE_AGENT_CONTENT": "feature {id}\n",
           "FAKE_AGENT_DELAY": "2.5"}
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    con = sqlite3.connect(repo / ".orchestrator" / "orchestrator.db")
    events = [(t, json.loads(d)) for t, d in con.execute(
        "SELECT type, data FROM events WHERE type IN ('conflict', 'merge') ORDER BY id")]
    con.close()
    kinds = [t for t, _ in events]
    assert "conflict" in kinds and kinds.index("conflict") < kinds.index("merge")
    predicted = next(d for t, d in events if t == "conflict")
    assert predicted["files"] == ["shared.txt"] and sorted(predicted["feature_ids"]) == [1, 2]
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
