"""Every attack on the HTTP side is refused with the right status, and nothing changes: no feature
added or edited, no processing started, no file served from outside static/."""
from __future__ import annotations

import hashlib
import http.client
import json

import pytest

from projects import feature, make_project
from test_server import Daemon, assert_error


@pytest.fixture
def daemon(git_repo, fakes_on_path):
    repo = make_project(git_repo, [feature(1), feature(2)])
    d = Daemon(repo).start()
    yield d
    d.stop()


def fingerprint(daemon) -> tuple:
    """What an attack must not change: features.json, the run state, the session count."""
    features = hashlib.sha256((daemon.root / "features.json").read_bytes()).hexdigest()
    _, _, status = daemon.request("GET", "/api/status")
    _, _, sessions = daemon.request("GET", "/api/sessions")
    return features, status["state"], sessions["total"]


def test_every_attack_is_refused_and_changes_nothing(daemon):
    before = fingerprint(daemon)
    add = {"name": "injected", "category": "x"}
    # no token, wrong token
    assert_error(daemon.request("POST", "/api/features", add, token=False), 401, "unauthorized")
    assert_error(daemon.request("POST", "/api/start", token="0" * 48), 401, "unauthorized")
    # DNS rebinding: a foreign Host header, even with the token
    assert_error(daemon.request("POST", "/api/start", headers={"Host": "evil.example:80"}), 403,
                 "forbidden_host")
    # CSRF: a cross-origin POST, even with the token
    assert_error(daemon.request("POST", "/api/features", add,
                                headers={"Origin": "http://evil.example"}), 403, "forbidden_origin")
    # a body of 10 MB
    status, _, body = daemon.request("POST", "/api/features", raw=b"{" + b" " * (10 << 20) + b"}")
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    # invalid JSON
    assert_error(daemon.request("POST", "/api/features", raw=b"{\"name\": "), 400, "bad_json")
    # a feature whose fields try to become command options or escape a directory
    status, _, body = daemon.request("POST", "/api/features", {
        "name": "--upload-pack=touch /tmp/pwned", "category": "../../etc", "track": "--help"})
    assert status == 400, body
    assert fingerprint(daemon) == before


@pytest.mark.parametrize("path", [
    "/static/../pyproject.toml", "/static/%2e%2e/pyproject.toml", "/static/%2E%2E%2Fpyproject.toml",
    "/static/..%2f..%2fetc%2fpasswd", "/static//etc/passwd", "/static/.%2e/README.md",
])
def test_static_traversal_is_refused(daemon, path):
    status, _, body = daemon.request("GET", path)
    assert status in (400, 403, 404), (path, status)
    assert b"[build-system]" not in (body if isinstance(body, bytes) else json.dumps(body).encode())


def test_non_loopback_bind_needs_the_token_for_everything(git_repo, fakes_on_path):
    """Bound to every address (0.0.0.0); reached here through 127.0.0.1 only."""
    repo = make_project(git_repo, [feature(1)])
    d = Daemon(repo, host="0.0.0.0").start()
    try:
        for path in ("/api/status", "/api/features", "/api/config", "/api/events", "/",
                     "/metrics"):
            assert d.request("GET", path, token=False)[0] == 401, path
        assert d.request("GET", "/api/status")[0] == 200  # with the token
        assert d.request("GET", "/healthz", token=False)[0] == 200
    finally:
        d.stop()
