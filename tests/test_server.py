"""The daemon's HTTP API over real HTTP on port 0: every route, auth, Host/Origin checks, limits,
the one JSON error shape, static files, and a real run with the fake agents.

`Daemon` (used by test_sse.py and test_dashboard_browser.py too) runs the real `run_daemon` in a
thread with its own shutdown event; the agents are the fakes from tests/fakes on PATH."""
from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from projects import FAKES_DIR, REPO_ROOT, feature, load_features, make_project

from agent_orchestrator import server as server_mod
from agent_orchestrator.daemon import ensure_token, run_daemon

TWO_TRACKS = [{"name": "core", "categories": ["core"], "isDefault": True},
              {"name": "ui", "categories": ["ui"]}]


class Daemon:
    """`run_daemon` in a thread, stopped through its shutdown event (as tests must, not signals)."""

    def __init__(self, root: Path, *, host: str = "127.0.0.1", autostart: bool = False,
                 heartbeat: float = 15.0, port: int = 0):
        self.root = root
        self.host = host
        self.requested_port = port
        self.autostart = autostart
        self.heartbeat = heartbeat
        self.out = io.StringIO()
        self.shutdown = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.url = ""
        self.port = 0
        self.error: BaseException | None = None
        self.exit_code: int | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-daemon", daemon=True)

    def _on_ready(self, url: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.url = url
        self.port = int(url.rstrip("/").rsplit(":", 1)[1])
        self._ready.set()

    def _run(self) -> None:
        try:
            self.exit_code = run_daemon(self.root, host=self.host, port=self.requested_port, autostart=self.autostart,
                                        shutdown=self.shutdown, ready=self._on_ready, out=self.out,
                                        heartbeat=self.heartbeat)
        except BaseException as exc:  # re-raised in the test thread by start()/stop()
            self.error = exc
        finally:
            self._ready.set()

    def start(self) -> "Daemon":
        self._thread.start()
        assert self._ready.wait(60), "daemon did not become ready within 60 s"
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.shutdown.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "daemon did not stop within 60 s"
        if self.error is not None:
            raise self.error
        assert self.exit_code == 0

    @property
    def token(self) -> str:
        return (self.root / ".orchestrator" / "token").read_text().strip()

    def request(self, method: str, path: str, body=None, *, token: bool | str = True,
                headers: dict | None = None, raw: bytes | None = None, timeout: float = 30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        hdrs = {"Host": f"127.0.0.1:{self.port}"}
        if token:
            hdrs["Authorization"] = f"Bearer {self.token if token is True else token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        ctype = resp.getheader("Content-Type", "")
        parsed = json.loads(payload) if ctype.startswith("application/json") else payload
        return resp.status, resp, parsed

    def wait_for(self, predicate, timeout: float = 30, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; daemon output:\n{self.out.getvalue()}")


def assert_error(status_body, status: int, code: str):
    got_status, _, body = status_body
    assert got_status == status, body
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert "hint" in body["error"]
    return body["error"]


@pytest.fixture
def project(git_repo, fakes_on_path, monkeypatch):
    monkeypatch.setenv("FAKE_AGENT_SCENARIO", "implement")
    features = [feature(1), feature(2), feature(3, category="ui")]
    return make_project(git_repo, features, tracks=TWO_TRACKS,
                        agents={"claude": {"env": {"ANTHROPIC_API_KEY": "sk-ant-very-secret"}}})


@pytest.fixture
def daemon(project):
    d = Daemon(project).start()
    yield d
    d.stop()


# ----------------------------------------------------------------------------- reads
def test_healthz_and_index_with_token(daemon):
    status, _, body = daemon.request("GET", "/healthz", token=False)
    assert status == 200 and body["ok"] is True
    status, resp, page = daemon.request("GET", "/", token=False)
    assert status == 200
    assert resp.getheader("Content-Type").startswith("text/html")
    assert f'<meta name="ao-token" content="{daemon.token}">'.encode() in page
    assert "script-src 'self'" in resp.getheader("Content-Security-Policy")
    assert resp.getheader("Access-Control-Allow-Origin") is None
    assert "dashboard at http://127.0.0.1:" in daemon.out.getvalue()


def test_token_file_is_private_random_and_reused(daemon, project):
    path = project / ".orchestrator" / "token"
    assert path.stat().st_mode & 0o777 == 0o600
    token = daemon.token
    assert len(token) >= 32
    assert ensure_token(project / ".orchestrator") == token
    info = json.loads((project / ".orchestrator" / "daemon.json").read_text())
    assert info["pid"] == os.getpid() and info["port"] == daemon.port and info["url"] == daemon.url


def test_static_files_served_and_confined(daemon):
    status, resp, body = daemon.request("GET", "/static/app.js", token=False)
    assert status == 200 and resp.getheader("Content-Type").startswith("text/javascript")
    assert b"import" in body
    status, resp, _ = daemon.request("GET", "/static/style.css", token=False)
    assert status == 200 and resp.getheader("Content-Type").startswith("text/css")
    for path in ("/static/../agent_orchestrator/server.py", "/static/%2e%2e/pyproject.toml",
                 "/static/..%2fpyproject.toml", "/static/.hidden", "/static/nope.js", "/static//etc/passwd"):
        assert_error(daemon.request("GET", path, token=False), 404, "not_found")


def test_static_dir_is_the_package_or_repo_static():
    root = server_mod.static_dir()
    assert (root / "index.html").is_file() and (root / "app.js").is_file()


def test_status_features_config(daemon):
    status, _, body = daemon.request("GET", "/api/status", token=False)
    assert status == 200
    assert body["state"] == "idle" and body["daemon"] is True and body["project"] == "demo"
    assert [t["name"] for t in body["tracks"]] == ["core", "ui"]
    assert body["counts"]["open"] == 3
    assert body["tracks"][0]["counts"]["open"] == 2

    status, _, body = daemon.request("GET", "/api/features", token=False)
    assert status == 200
    assert [f["id"] for f in body["features"]] == [1, 2, 3]
    assert body["features"][2]["route_track"] == "ui"
    assert body["features"][0]["latest_session"] is None

    status, _, body = daemon.request("GET", "/api/features/2", token=False)
    assert status == 200 and body["feature"]["name"] == "Feature 2"
    assert_error(daemon.request("GET", "/api/features/99", token=False), 404, "not_found")

    status, _, body = daemon.request("GET", "/api/config", token=False)
    assert status == 200
    assert body["config"]["baseBranch"] == "ai-develop"
    assert body["config"]["agents"]["claude"]["env"]["ANTHROPIC_API_KEY"] == "***"
    assert "sk-ant-very-secret" not in json.dumps(body)
    assert any(s["key"] == "agent.maxRetries" and s["help"] for s in body["settings"])


def test_sessions_empty_and_query_validation(daemon):
    status, _, body = daemon.request("GET", "/api/sessions", token=False)
    assert status == 200 and body == {"sessions": [], "total": 0, "limit": 50, "offset": 0}
    assert_error(daemon.request("GET", "/api/sessions?limit=abc", token=False), 400, "bad_request")
    assert_error(daemon.request("GET", "/api/sessions?limit=0", token=False), 400, "bad_request")
    assert_error(daemon.request("GET", "/api/sessions?status=bogus", token=False), 400, "bad_request")
    assert_error(daemon.request("GET", "/api/sessions/5", token=False), 404, "not_found")
    assert_error(daemon.request("GET", "/api/sessions/5/events", token=False), 404, "not_found")
    assert_error(daemon.request("GET", "/api/events?last_id=x", token=False), 400, "bad_request")


# ----------------------------------------------------------------------------- errors
def test_unknown_route_404_and_wrong_method_405(daemon):
    assert_error(daemon.request("GET", "/api/nope"), 404, "not_found")
    assert_error(daemon.request("GET", "/api/features/abc"), 404, "not_found")
    status, resp, body = daemon.request("DELETE", "/api/features")
    assert_error((status, resp, body), 405, "method_not_allowed")
    assert resp.getheader("Allow") == "GET, HEAD, POST"
    status, resp, body = daemon.request("GET", "/api/start")
    assert_error((status, resp, body), 405, "method_not_allowed")
    assert resp.getheader("Allow") == "POST"
    status, resp, _ = daemon.request("OPTIONS", "/api/features", headers={"Origin": "http://evil.example"})
    assert status == 405 and resp.getheader("Access-Control-Allow-Origin") is None


def test_mutations_need_the_token(daemon):
    for method, path in (("POST", "/api/start"), ("POST", "/api/stop"), ("POST", "/api/features"),
                         ("PATCH", "/api/features/1"), ("POST", "/api/features/1/retry"),
                         ("POST", "/api/tracks/core/pause"), ("POST", "/api/tracks/core/resume")):
        err = assert_error(daemon.request(method, path, {"name": "x"}, token=False), 401, "unauthorized")
        assert "Bearer" in err["hint"]
        assert_error(daemon.request(method, path, {"name": "x"}, token="wrong-token"), 401, "unauthorized")
    assert load_features(daemon.root)[1]["name"] == "Feature 1"


def test_bad_json_400_and_body_too_large_413(daemon):
    err = assert_error(daemon.request("POST", "/api/features", raw=b'{"name": '), 400, "bad_json")
    assert "line 1" in err["message"]
    assert_error(daemon.request("POST", "/api/features", raw=b"\xff\xfe"), 400, "bad_json")
    assert_error(daemon.request("POST", "/api/features", ["a list"]), 400, "bad_request")
    big = b'{"name": "' + b"x" * (1 << 20) + b'"}'
    assert_error(daemon.request("POST", "/api/features", raw=big), 413, "payload_too_large")
    # the connection was closed after the 413; the daemon still answers
    assert daemon.request("GET", "/healthz")[0] == 200
    assert 4 not in load_features(daemon.root)


def test_host_and_origin_checks(daemon):
    assert_error(daemon.request("GET", "/api/status", headers={"Host": "evil.example"}), 403, "forbidden_host")
    assert_error(daemon.request("GET", "/", headers={"Host": f"evil.example:{daemon.port}"}), 403, "forbidden_host")
    assert_error(daemon.request("GET", "/api/status", headers={"Host": "127.0.0.1:1"}), 403, "forbidden_host")
    for host in (f"localhost:{daemon.port}", f"127.0.0.1:{daemon.port}", f"[::1]:{daemon.port}"):
        assert daemon.request("GET", "/api/status", headers={"Host": host})[0] == 200
    err = assert_error(daemon.request("POST", "/api/tracks/core/pause", {},
                                      headers={"Origin": "http://evil.example"}), 403, "forbidden_origin")
    assert "evil.example" in err["message"]
    own = {"Origin": f"http://127.0.0.1:{daemon.port}"}
    assert daemon.request("POST", "/api/tracks/core/pause", {}, headers=own)[0] == 200


# ----------------------------------------------------------------------------- mutations
def test_add_and_edit_features_through_the_store(daemon):
    status, _, body = daemon.request("POST", "/api/features",
                                     {"name": "Login page", "category": "ui", "steps": ["open /login"]})
    assert status == 201, body
    assert body["feature"]["id"] == 4 and body["feature"]["status"] == "open"
    on_disk = load_features(daemon.root)
    assert on_disk[4]["name"] == "Login page" and on_disk[4]["steps"] == ["open /login"]
    assert json.loads((daemon.root / "features.json").read_text())["project"] == "demo"

    err = assert_error(daemon.request("POST", "/api/features", {"name": "Dup", "id": 1}), 400, "features_invalid")
    assert any("1" in p for p in err["problems"])
    assert_error(daemon.request("POST", "/api/features", {"name": "x", "dependsOn": [42]}), 400, "features_invalid")

    status, _, body = daemon.request("PATCH", "/api/features/2", {"description": "Better text", "priority": 5})
    assert status == 200 and body["feature"]["description"] == "Better text"
    assert load_features(daemon.root)[2]["priority"] == 5
    assert_error(daemon.request("PATCH", "/api/features/2", {"steps": "not a list"}), 400, "features_invalid")
    assert_error(daemon.request("PATCH", "/api/features/2", {"status": "in_progress"}), 400, "bad_request")
    assert_error(daemon.request("PATCH", "/api/features/2", {}), 400, "bad_request")
    assert_error(daemon.request("PATCH", "/api/features/77", {"name": "x"}), 404, "not_found")
    assert load_features(daemon.root)[2]["steps"] == ["Do it", "Test it"]


def test_pause_resume_unknown_track(daemon):
    status, _, body = daemon.request("POST", "/api/tracks/ui/pause", {"reason": "db down"})
    assert status == 200 and body["paused"] is True
    track = next(t for t in daemon.request("GET", "/api/status")[2]["tracks"] if t["name"] == "ui")
    assert track["paused"] is True and track["paused_reason"] == "db down"
    status, _, body = daemon.request("POST", "/api/tracks/ui/resume")
    assert status == 200 and body["paused"] is False
    assert_error(daemon.request("POST", "/api/tracks/nope/pause"), 404, "not_found")
    assert_error(daemon.request("POST", "/api/tracks/ui/pause", {"reason": 5}), 400, "bad_request")


def test_run_start_sessions_events_retry_stop(git_repo, fakes_on_path, monkeypatch, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"match": "feature #2:", "scenario": "crash"}]))
    monkeypatch.setenv("FAKE_AGENT_SCENARIO", str(rules))
    monkeypatch.setenv("FAKE_AGENT_STATE_DIR", str(tmp_path / "fake-state"))
    make_project(git_repo, [feature(1), feature(2)], agent={"maxRetries": 0})
    d = Daemon(git_repo).start()
    try:
        status, _, body = d.request("POST", "/api/start")
        assert status == 200 and body["state"] == "running"
        d.wait_for(lambda: {f["status"] for f in load_features(git_repo).values()} <= {"passed", "failed"},
                   what="both features to finish")
        feats = load_features(git_repo)
        assert feats[1]["status"] == "passed" and feats[2]["status"] == "failed"

        status, _, body = d.request("GET", "/api/sessions?limit=1")
        assert status == 200 and body["total"] == 2 and len(body["sessions"]) == 1
        failed = d.request("GET", "/api/sessions?feature=2&status=failed")[2]["sessions"]
        assert len(failed) == 1 and failed[0]["failure_category"]
        ok = d.request("GET", "/api/sessions?feature=1&phase=implement")[2]["sessions"][0]
        status, _, body = d.request("GET", f"/api/sessions/{ok['id']}")
        assert status == 200 and body["session"]["status"] == "succeeded" and "prompt" in body["session"]
        assert body["session"]["live"] is False

        d.wait_for(lambda: d.request("GET", f"/api/sessions/{ok['id']}/events")[2]["events"], what="events saved")
        status, _, page1 = d.request("GET", f"/api/sessions/{ok['id']}/events?limit=2")
        assert status == 200 and len(page1["events"]) == 2 and page1["more"] is True
        status, _, page2 = d.request("GET", f"/api/sessions/{ok['id']}/events?after={page1['next_after']}&limit=1000")
        ids = [e["id"] for e in page1["events"] + page2["events"]]
        assert ids == sorted(set(ids)) and page2["more"] is False
        kinds = {e["kind"] for e in page1["events"] + page2["events"]}
        assert {"text", "tool_call", "tool_result", "result"} <= kinds

        listed = {f["id"]: f for f in d.request("GET", "/api/features")[2]["features"]}
        assert listed[2]["latest_session"]["status"] == "failed"
        assert listed[2]["failure_reason"]

        monkeypatch.setenv("FAKE_AGENT_SCENARIO", "implement")
        status, _, body = d.request("POST", "/api/features/2/retry", {"context": "try harder"})
        assert status == 200, body
        d.wait_for(lambda: load_features(git_repo)[2]["status"] == "passed", what="feature 2 to pass on retry")
        assert_error(d.request("POST", "/api/features/99/retry"), 404, "not_found")
        assert_error(d.request("POST", "/api/features/2/retry", {"context": 3}), 400, "bad_request")

        status, _, body = d.request("GET", "/api/status")
        assert body["counts"]["passed"] == 2 and body["cost_usd"] > 0
        status, _, body = d.request("POST", "/api/stop")
        assert status == 200 and body["state"] in ("idle", "stopping")
        d.wait_for(lambda: d.request("GET", "/api/status")[2]["state"] == "idle", what="idle after stop")
    finally:
        d.stop()


def test_non_loopback_bind_needs_the_token_everywhere(project):
    d = Daemon(project, host="0.0.0.0").start()
    try:
        assert "?token=" in d.out.getvalue()
        assert d.request("GET", "/healthz", token=False)[0] == 200
        for path in ("/", "/api/status", "/api/features", "/static/app.js", "/api/events"):
            assert_error(d.request("GET", path, token=False), 401, "unauthorized")
        assert d.request("GET", "/api/status")[0] == 200
        status, resp, page = d.request("GET", f"/?token={d.token}", token=False)
        assert status == 200 and d.token.encode() in page
        cookie = resp.getheader("Set-Cookie")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        cookie_header = {"Cookie": cookie.split(";")[0]}
        assert d.request("GET", "/api/status", token=False, headers=cookie_header)[0] == 200
        # a cookie never authorises a state change
        assert_error(d.request("POST", "/api/tracks/core/pause", token=False, headers=cookie_header), 401, "unauthorized")
        assert_error(d.request("GET", "/", token=False, headers={"Cookie": "ao_token=wrong"}), 401, "unauthorized")
    finally:
        d.stop()


def test_second_daemon_on_the_same_project_is_refused(daemon):
    from agent_orchestrator.errors import AlreadyRunning

    with pytest.raises(AlreadyRunning) as info:
        Daemon(daemon.root).start()
    assert daemon.url in info.value.message


def test_sigterm_stops_the_daemon_subprocess_cleanly(project):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PATH=f"{FAKES_DIR}{os.pathsep}{os.environ['PATH']}")
    code = ("import sys; from pathlib import Path; from agent_orchestrator.daemon import run_daemon; "
            "sys.exit(run_daemon(Path(sys.argv[1]), host='127.0.0.1', port=0, autostart=False))")
    child = subprocess.Popen([sys.executable, "-c", code, str(project)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert "dashboard at http://127.0.0.1:" in line, line + child.stderr.read()
        url = line.split("dashboard at ", 1)[1].strip()
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert "stopped" in out
    assert not (project / ".orchestrator" / "daemon.json").exists()


def _readme_block(containing: str) -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = readme.split("```")[1::2]
    for block in blocks:
        if containing in block:
            return block.split("\n", 1)[1] if not block.startswith("\n") else block
    pytest.fail(f"README.md has no code block with {containing!r} (merge the web section: "
                "how to watch a run with curl -N and how to call a mutation with the token)")


def test_readme_curl_commands_work_as_written(git_repo, fakes_on_path, monkeypatch):
    curl = subprocess.run(["which", "curl"], capture_output=True, text=True).stdout.strip()
    assert curl, "curl is needed by the README's examples"
    monkeypatch.setenv("FAKE_AGENT_SCENARIO", "implement")
    monkeypatch.setenv("FAKE_AGENT_DELAY", "1")
    make_project(git_repo, [feature(11), feature(12)])
    d = Daemon(git_repo).start()
    try:
        watch = _readme_block("curl -N http://127.0.0.1:3001/api/events")
        line = next(x for x in watch.splitlines() if x.strip() == "curl -N http://127.0.0.1:3001/api/events")
        watcher = subprocess.Popen(["bash", "-c", line.replace(":3001", f":{d.port}") + " --max-time 6"],
                                   stdout=subprocess.PIPE, text=True)
        mutate = _readme_block('TOKEN=$(cat .orchestrator/token)')
        script = "\n".join(x for x in mutate.splitlines() if not x.startswith("cd "))
        assert "Authorization: Bearer $TOKEN" in script and "/api/start" in script
        done = subprocess.run(["bash", "-ec", script.replace(":3001", f":{d.port}")], cwd=git_repo,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert '"ok": true' in done.stdout and '"state": "running"' in done.stdout, done.stdout
        streamed, _ = watcher.communicate(timeout=30)
        assert "event: status" in streamed and '"state":"running"' in streamed
        assert "event: output" in streamed
    finally:
        d.stop()


def _spawn_daemon(project: Path, tmp_path: Path, scenario: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "agents.log"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PATH=f"{FAKES_DIR}{os.pathsep}{os.environ['PATH']}",
               FAKE_AGENT_SCENARIO=scenario, FAKE_AGENT_LOG=str(log))
    code = ("import sys; from pathlib import Path; from agent_orchestrator.daemon import run_daemon; "
            "sys.exit(run_daemon(Path(sys.argv[1]), host='127.0.0.1', port=0, autostart=True))")
    child = subprocess.Popen([sys.executable, "-c", code, str(project)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    return child, log


def _agent_pid(log: Path, child: subprocess.Popen) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().strip():
            return json.loads(log.read_text().splitlines()[0])["pid"]
        assert child.poll() is None, child.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the fake agent never started")


def _group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the process group (the agent and its children)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_sigint_stops_running_agents_and_exits_0(git_repo, tmp_path):
    make_project(git_repo, [feature(1)])
    child, log = _spawn_daemon(git_repo, tmp_path, "hang")
    try:
        pid = _agent_pid(log, child)
        assert _group_alive(pid)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert "stopping" in out and "stopped" in out
    assert not _group_alive(pid)
    from agent_orchestrator.db import Database

    db = Database(git_repo / ".orchestrator" / "orchestrator.db")
    try:
        assert [s["status"] for s in db.list_sessions()[0]] == ["interrupted"]
    finally:
        db.close()


def test_second_sigint_exits_at_once_without_orphans(git_repo, tmp_path):
    make_project(git_repo, [feature(1)], agent={"killGraceSeconds": 60})
    child, log = _spawn_daemon(git_repo, tmp_path, "hang_ignore_term")
    try:
        pid = _agent_pid(log, child)
        time.sleep(0.3)  # let the agent start its own child, which ignores nothing but hangs too
        child.send_signal(signal.SIGINT)
        assert "dashboard at" in child.stdout.readline()
        while "stopping" not in (line := child.stdout.readline()):
            assert line, child.stderr.read()
        started = time.monotonic()
        child.send_signal(signal.SIGINT)
        child.wait(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130
    deadline = time.monotonic() + 5
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(pid), "the agent's process group survived the forced exit"


def test_api_without_a_daemon_reads_the_project_files(project):
    """The service layer as the CLI can use it: no orchestrator, no lock, state from the files."""
    from agent_orchestrator.api import Api
    from agent_orchestrator.errors import Conflict
    from agent_orchestrator.project import Project

    proj = Project.open(project, lock=False)
    try:
        api = Api(proj)
        status = api.status()
        assert status["state"] == "offline" and status["daemon"] is False
        assert status["counts"]["open"] == 3
        assert {t["name"]: t["counts"]["open"] for t in status["tracks"]} == {"core": 2, "ui": 1}
        assert [f["id"] for f in api.features()["features"]] == [1, 2, 3]
        assert api.sessions({})["total"] == 0
        with pytest.raises(Conflict):
            api.start()
    finally:
        proj.close()


def test_features_json_is_the_encoded_features_through_every_change(project):
    """GET /api/features is kept and partly re-encoded between changes: it must always be
    byte for byte what encoding features() gives, and follow features.json and the sessions."""
    from agent_orchestrator.api import Api, json_body
    from agent_orchestrator.project import Project

    proj = Project.open(project, lock=False)
    try:
        api = Api(proj)
        db = proj.db

        def check():
            body = api.features_json()
            assert body == json_body(api.features())
            return json.loads(body)

        assert [f["latest_session"] for f in check()["features"]] == [None, None, None]
        sid = db.create_session(feature_id=2, track="core", phase="implement", agent="claude", attempt=1,
                                prompt="p", cwd="/tmp", started_at=1.0)
        assert check()["features"][1]["latest_session"]["id"] == sid
        db.update_session(sid, status="failed", error="bad é 😀", cost_usd=0.5)
        assert check()["features"][1]["latest_session"]["status"] == "failed"
        time.sleep(0.01)
        doc = json.loads((project / "features.json").read_text())
        doc["features"][0]["description"] = "changed by hand, ünïcode"
        doc["features"].append(feature(9, category="ui"))
        (project / "features.json").write_text(json.dumps(doc, indent=2))
        got = check()
        assert got["count"] == 4 and got["features"][0]["description"].startswith("changed by hand")
        assert api.features_json() is api.features_json()  # nothing changed: the same bytes
    finally:
        proj.close()


def test_shutdown_closes_idle_keep_alive_connections(project):
    d = Daemon(project).start()
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Connection") != "close"
        resp.read()
        d.stop()
        assert conn.sock.recv(1) == b"", "a kept-alive connection survived the server"
    finally:
        conn.close()


def test_metrics_is_prometheus_text(daemon):
    from test_metrics import parse_exposition, sample
    status, resp, body = daemon.request("GET", "/metrics")
    assert status == 200
    assert resp.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    families = parse_exposition(body.decode())
    assert sample(families, "ao_features", status="open") == 3
    assert sample(families, "ao_queue_length", track="core") == 2
    assert sample(families, "ao_state", state="idle") == 1


def test_features_say_what_a_waiting_feature_waits_for(git_repo, fakes_on_path):
    repo = make_project(git_repo, [feature(1), feature(2, dependsOn=[1]),
                                   feature(3, dependsOn=[1, 2], status="passed")])
    d = Daemon(repo).start()
    try:
        _, _, body = d.request("GET", "/api/features")
        waits = {f["id"]: f["waiting_on"] for f in body["features"]}
        assert waits == {1: [], 2: [1], 3: []}
    finally:
        d.stop()
