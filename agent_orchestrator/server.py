"""The daemon's HTTP side: route table, token/Host/Origin checks, body limits, JSON errors, static files, SSE.

One `ThreadingHTTPServer` (daemon threads); every request - including each SSE client - runs in its
own thread. Handlers call `api.Api`; errors from errors.py become `{"error": {code, message, hint}}`.
`WebServer.shutdown()` must be called from a thread other than the serving one (STYLE.md).
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import agent_orchestrator

from .errors import OrchestratorError
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .sse_hub import SseHub, session_events

log = logging.getLogger("agent_orchestrator.server")

MAX_BODY = 1 << 20
DRAIN_LIMIT = 16 << 20
MUTATING = frozenset({"POST", "PATCH", "PUT", "DELETE"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
TOKEN_META = '<meta name="ao-token" content="">'
TOKEN_COOKIE = "ao_token"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".ico": "image/x-icon",
    ".png": "image/png", ".json": "application/json",
}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def static_dir() -> Path:
    """The dashboard's files: inside the installed package, else the repository's top-level static/."""
    packaged = Path(agent_orchestrator.__file__).parent / "static"
    if (packaged / "index.html").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "static"


class HttpError(OrchestratorError):
    """An HTTP-level refusal (auth, method, size, ...) rendered in the one JSON error shape."""

    def __init__(self, status: int, code: str, message: str, hint: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message, hint)
        self.http_status = status
        self.code = code
        self.headers = headers or {}


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern
    methods: dict[str, str]  # method -> handler method name on _Handler


def _route(path: str, **methods: str) -> Route:
    regex = re.sub(r"\{(\w+)}", lambda m: r"(?P<%s>%s)" % (
        m.group(1), r"\d+" if m.group(1) == "id" else r"[^/]+"), path)
    return Route(re.compile(f"^{regex}$"), methods)


ROUTES = (
    _route("/healthz", GET="h_health"),
    _route("/", GET="h_index"),
    _route("/index.html", GET="h_index"),
    _route("/static/{name}", GET="h_static"),
    _route("/api/status", GET="h_status"),
    _route("/api/features", GET="h_features", POST="h_add_feature"),
    _route("/api/features/{id}", GET="h_feature", PATCH="h_edit_feature"),
    _route("/api/features/{id}/retry", POST="h_retry"),
    _route("/api/start", POST="h_start"),
    _route("/api/stop", POST="h_stop"),
    _route("/api/tracks/{name}/pause", POST="h_pause"),
    _route("/api/tracks/{name}/resume", POST="h_resume"),
    _route("/api/sessions", GET="h_sessions"),
    _route("/api/sessions/{id}", GET="h_session"),
    _route("/api/sessions/{id}/events", GET="h_session_events"),
    _route("/api/config", GET="h_config"),
    _route("/api/events", GET="h_events"),
    _route("/metrics", GET="h_metrics"),
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, str | None]:
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        rest = value[end + 1:]
        return value[:end + 1], rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        name, port = value.split(":")
        return name, port
    return value, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    web: "WebServer"


class WebServer:
    """The HTTP server of one daemon. `start()` binds and serves in a thread; `shutdown()` from another thread."""

    def __init__(self, api: Any, bus: Any, *, token: str, host: str = "127.0.0.1", port: int = 3001,
                 static_root: Path | None = None, heartbeat: float = 15.0, max_body: int = MAX_BODY,
                 sse_queue: int = 5000, socket_timeout: float = 30.0,
                 loop: asyncio.AbstractEventLoop | None = None):
        self.api = api
        self.bus = bus
        self.token = token
        self.host = host
        self.static_root = (static_root or static_dir()).resolve()
        self.heartbeat = heartbeat
        self.max_body = max_body
        self.sse_queue = sse_queue
        self.socket_timeout = socket_timeout
        self.loopback = is_loopback(host)
        self.closing = threading.Event()
        self._subs: set[Any] = set()
        self._conns: set[socket.socket] = set()
        self._subs_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) \
            if ":" in host.strip("[]") else _Server
        handler = type("Handler", (_Handler,), {"timeout": socket_timeout})
        self.httpd = server_cls((host.strip("[]"), port), handler)
        self.httpd.web = self
        self.hub = SseHub(self, loop)
        self.port: int = self.httpd.server_address[1]
        self.allowed_hosts = self._allowed_hosts()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        shown = self.host if not self.wildcard else "127.0.0.1"
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}/"

    @property
    def dashboard_url(self) -> str:
        """What the daemon prints: on a non-loopback bind it carries the token (the page sets a cookie)."""
        return self.url if self.loopback else f"{self.url}?token={self.token}"

    @property
    def wildcard(self) -> bool:
        return self.host.strip("[]") in ("0.0.0.0", "::", "")

    def _allowed_hosts(self) -> set[str]:
        names = set(LOOPBACK_NAMES)
        bound = self.host.strip("[]").lower()
        names.add(f"[{bound}]" if ":" in bound else bound)
        if self.wildcard:
            names.add(socket.gethostname().lower())
            names.add(socket.getfqdn().lower())
        return names

    def host_allowed(self, header: str | None) -> bool:
        if not header:
            return False
        name, port = _split_host(header)
        if port is not None and port != str(self.port):
            return False
        return name in self.allowed_hosts or (self.wildcard and _is_ip_literal(name))

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="ao-http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving and end every SSE stream. Never call from the serving thread."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("WebServer.shutdown() called from the serving thread")
        self.closing.set()
        with self._subs_lock:
            subs = list(self._subs)
        for sub in subs:
            sub.close()
        self.hub.close()
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
        self.httpd.server_close()
        with self._subs_lock:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive connections would otherwise outlive the server
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer

    def add_sub(self, sub: Any) -> None:
        with self._subs_lock:
            self._subs.add(sub)
        if self.closing.is_set():
            sub.close()

    def add_conn(self, conn: socket.socket) -> None:
        with self._subs_lock:
            self._conns.add(conn)

    def remove_conn(self, conn: socket.socket) -> None:
        with self._subs_lock:
            self._conns.discard(conn)

    def remove_sub(self, sub: Any) -> None:
        with self._subs_lock:
            self._subs.discard(sub)

    @property
    def sse_clients(self) -> int:
        with self._subs_lock:
            return len(self._subs)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"agent-orchestrator/{agent_orchestrator.__version__}"
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    # every method goes through one dispatcher
    def do_GET(self) -> None: self._dispatch("GET")
    def do_HEAD(self) -> None: self._dispatch("HEAD")
    def do_POST(self) -> None: self._dispatch("POST")
    def do_PATCH(self) -> None: self._dispatch("PATCH")
    def do_PUT(self) -> None: self._dispatch("PUT")
    def do_DELETE(self) -> None: self._dispatch("DELETE")
    def do_OPTIONS(self) -> None: self._dispatch("OPTIONS")

    @property
    def web(self) -> WebServer:
        return self.server.web

    def setup(self) -> None:
        super().setup()
        try:  # no Nagle delay: a response or an SSE batch leaves as soon as it is written
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (e.g. a socketpair in a test)
        self.server.web.add_conn(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.web.remove_conn(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    # ---------------------------------------------------------------- dispatch
    def _dispatch(self, method: str) -> None:
        self._body_read = False
        self._extra_headers: dict[str, str] = {}
        try:
            split = urlsplit(self.path)
            self.query = dict(parse_qsl(split.query, keep_blank_values=True))
            path = unquote(split.path)
            if self.web.closing.is_set():
                self.close_connection = True
                raise HttpError(503, "shutting_down", "the daemon is shutting down",
                                "start it again with `agent-orchestrator start`; the dashboard reconnects by itself")
            if not self.web.host_allowed(self.headers.get("Host")):
                raise HttpError(403, "forbidden_host",
                                f"Host header {self.headers.get('Host')!r} is not this daemon's address",
                                f"open the dashboard at {self.web.url}")
            handler_name, params = self._match(method, path)
            self._check_auth(method, path)
            if method in MUTATING:
                self._check_origin()
            getattr(self, handler_name)(**params)
        except HttpError as exc:
            self._send_error(exc, exc.headers)
        except OrchestratorError as exc:
            self._send_error(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # the one place that turns a bug into a 500 instead of a dropped socket
            log.exception("unhandled error in %s %s", method, self.path)
            self._send_error(HttpError(500, "internal_error", f"internal error: {type(exc).__name__}: {exc}",
                                       "this is a bug; the daemon's log has the traceback"))
        finally:
            if self._has_body() and not self._body_read:
                self.close_connection = True

    def _match(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        for route in ROUTES:
            match = route.pattern.match(path)
            if not match:
                continue
            allowed = dict(route.methods)
            if "GET" in allowed:
                allowed["HEAD"] = allowed["GET"]
            if method not in allowed:
                allow = ", ".join(sorted(allowed))
                raise HttpError(405, "method_not_allowed", f"{method} is not allowed on {path}",
                                f"allowed: {allow}", headers={"Allow": allow})
            params: dict[str, Any] = {}
            for key, value in match.groupdict().items():
                params[key] = int(value) if key == "id" else value
            return allowed[method], params
        raise HttpError(404, "not_found", f"no such route: {path}",
                        "see the API list in the README; the dashboard is at /")

    # -------------------------------------------------------------------- auth
    def _presented_token(self, *, allow_cookie: bool) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        if allow_cookie:
            for part in self.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == TOKEN_COOKIE:
                    return value
        return None

    def _token_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.web.token.encode())

    def _check_auth(self, method: str, path: str) -> None:
        if path == "/healthz":
            return
        if method in MUTATING:
            if not self._token_ok(self._presented_token(allow_cookie=False)):
                raise HttpError(401, "unauthorized", f"{method} {path} needs the project token",
                                "send 'Authorization: Bearer <token>' with the token from .orchestrator/token",
                                headers={"WWW-Authenticate": 'Bearer realm="agent-orchestrator"'})
            return
        if self.web.loopback:
            return
        if self._token_ok(self._presented_token(allow_cookie=True)):
            return
        if path in ("/", "/index.html") and self._token_ok(self.query.get("token")):
            self._extra_headers["Set-Cookie"] = (
                f"{TOKEN_COOKIE}={self.web.token}; HttpOnly; SameSite=Strict; Path=/")
            return
        raise HttpError(401, "unauthorized", f"{path} needs the project token on a non-loopback address",
                        "open the URL the daemon printed (it carries ?token=...), or send "
                        "'Authorization: Bearer <token>' with the token from .orchestrator/token",
                        headers={"WWW-Authenticate": 'Bearer realm="agent-orchestrator"'})

    def _check_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin is None:
            return
        own = f"http://{self.headers.get('Host', '')}".lower()
        if origin.lower().rstrip("/") != own:
            raise HttpError(403, "forbidden_origin", f"cross-origin request from {origin} refused",
                            "call the API from the dashboard itself or from a client without an Origin header")

    # -------------------------------------------------------------------- body
    def _has_body(self) -> bool:
        return bool(self.headers.get("Content-Length", "0").strip() not in ("", "0")
                    or "chunked" in self.headers.get("Transfer-Encoding", "").lower())

    def _json_body(self) -> Any:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise HttpError(411, "length_required", "chunked request bodies are not accepted",
                            "send the body with a Content-Length header")
        raw_length = self.headers.get("Content-Length", "0").strip() or "0"
        try:
            length = int(raw_length)
        except ValueError:
            raise HttpError(400, "bad_request", f"invalid Content-Length {raw_length!r}",
                            "send a decimal Content-Length") from None
        if length < 0:
            raise HttpError(400, "bad_request", f"invalid Content-Length {length}", "send a decimal Content-Length")
        if length > self.web.max_body:
            self._discard(length)
            raise HttpError(413, "payload_too_large",
                            f"request body of {length} bytes is larger than the limit of {self.web.max_body} bytes",
                            "send a smaller body")
        data = self.rfile.read(length) if length else b""
        self._body_read = True
        if len(data) != length:
            raise HttpError(400, "bad_request", "request body ended early", "send the whole body")
        if not data.strip():
            return None
        try:
            return json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise HttpError(400, "bad_json", f"request body is not UTF-8: {exc}", "send UTF-8 encoded JSON") from None
        except json.JSONDecodeError as exc:
            raise HttpError(400, "bad_json", f"request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                            f"column {exc.colno}", 'send a JSON object, e.g. {"name": "Login page"}') from None

    def _discard(self, length: int) -> None:
        """Read and drop an oversized body (up to a cap) so the client can read the 413 reply."""
        if length > DRAIN_LIMIT:
            return
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)
        self.close_connection = True

    # --------------------------------------------------------------- responses
    def _common_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for name, value in self._extra_headers.items():
            self.send_header(name, value)

    def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection or (self._has_body() and not self._body_read):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
        self._send_bytes(status, body, "application/json; charset=utf-8", headers)

    def _send_json_body(self, body: bytes) -> None:
        self._send_bytes(200, body, "application/json; charset=utf-8")

    def _send_error(self, exc: OrchestratorError, headers: dict[str, str] | None = None) -> None:
        payload = exc.to_json()
        payload["error"].setdefault("hint", None)
        try:
            self._send_json(payload, exc.http_status, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ---------------------------------------------------------------- handlers
    def h_health(self) -> None:
        self._send_json(self.web.api.health())

    def h_index(self) -> None:
        page = (self.web.static_root / "index.html").read_text(encoding="utf-8")
        token_meta = f'<meta name="ao-token" content="{self.web.token}">'
        page = page.replace(TOKEN_META, token_meta, 1)
        self._send_bytes(200, page.encode("utf-8"), CONTENT_TYPES[".html"],
                         {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"})

    def h_static(self, name: str) -> None:
        root = self.web.static_root
        candidate = (root / name).resolve()
        if (name.startswith(".") or "\\" in name or "\0" in name or candidate.parent != root
                or not candidate.is_file() or candidate.name == "__init__.py"):
            raise HttpError(404, "not_found", f"no static file {name!r}", "the dashboard is at /")
        content_type = CONTENT_TYPES.get(candidate.suffix, "application/octet-stream")
        self._send_bytes(200, candidate.read_bytes(), content_type)

    def h_status(self) -> None:
        self._send_json(self.web.api.status())

    def h_features(self) -> None:
        api = self.web.api
        if hasattr(api, "features_json"):
            self._send_json_body(api.features_json())
        else:
            self._send_json(api.features())

    def h_feature(self, id: int) -> None:  # noqa: A002
        self._send_json(self.web.api.feature(id))

    def h_add_feature(self) -> None:
        self._send_json(self.web.api.add_feature(self._json_body()), 201)

    def h_edit_feature(self, id: int) -> None:  # noqa: A002
        self._send_json(self.web.api.edit_feature(id, self._json_body()))

    def h_retry(self, id: int) -> None:  # noqa: A002
        self._send_json(self.web.api.retry(id, self._json_body()))

    def h_start(self) -> None:
        self._json_body()
        self._send_json(self.web.api.start())

    def h_stop(self) -> None:
        self._json_body()
        self._send_json(self.web.api.stop())

    def h_pause(self, name: str) -> None:
        self._send_json(self.web.api.pause_track(name, self._json_body()))

    def h_resume(self, name: str) -> None:
        self._json_body()
        self._send_json(self.web.api.resume_track(name))

    def h_sessions(self) -> None:
        self._send_json(self.web.api.sessions(self.query))

    def h_session(self, id: int) -> None:  # noqa: A002
        self._send_json(self.web.api.session(id))

    def h_session_events(self, id: int) -> None:  # noqa: A002
        self._send_json(self.web.api.session_events(id, self.query))

    def h_metrics(self) -> None:
        self._send_bytes(200, self.web.api.metrics().encode("utf-8"), METRICS_CONTENT_TYPE)

    def h_config(self) -> None:
        self._send_json(self.web.api.config())

    def h_events(self) -> None:
        from .events import SubscriptionDropped

        last_id = self._last_event_id()
        only_session = self._session_filter()
        web = self.web
        sub = web.bus.subscribe(last_id=last_id, max_queue=web.sse_queue)
        web.add_sub(sub)
        try:
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Connection", "close")
            self.send_header("X-Accel-Buffering", "no")
            self._common_headers()
            self.end_headers()
            if self.command == "HEAD":
                return
            self.wfile.write(b"retry: 2000\n: connected\n\n")
            current = web.bus.last_id
            if last_id is not None and last_id > current:
                # the client knows ids this daemon never issued (a new database): tell it to start over
                self.wfile.write(f"id: {current}\nevent: reset\ndata: {{\"last_id\": {current}}}\n\n".encode())
            self.wfile.flush()
            last_write = time.monotonic()
            # the missed events (from the ring or the database) are sent from this thread ...
            while sub.replaying and not web.closing.is_set():
                try:
                    events = sub.get(timeout=0)
                except SubscriptionDropped as exc:
                    if not web.closing.is_set() and sub.dropped:
                        log.info("SSE client %s dropped: %s", self.address_string(), exc.message)
                    return
                if only_session is not None:
                    events = session_events(events, only_session)
                if events:
                    self.wfile.write(b"".join([e.sse() for e in events]))
                    last_write = time.monotonic()
            # ... then the live ones by the hub, while this thread waits for the stream to end
            if not web.closing.is_set():
                sub.close()  # the hub has its own subscription for every client
                stream = web.hub.attach(self.connection, sub.last_id, only_session, last_write,
                                        self.address_string())
                web.hub.wait(stream)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, socket.timeout):
            log.debug("SSE client %s went away", self.address_string())
        finally:
            web.remove_sub(sub)
            sub.close()

    def _session_filter(self) -> int | None:
        raw = self.query.get("session")
        if raw in (None, ""):
            return None
        if not raw.isdigit():
            raise HttpError(400, "bad_request", f"query parameter 'session' must be a session id, got {raw!r}",
                            "leave it out to receive every event")
        return int(raw)

    def _last_event_id(self) -> int | None:
        raw = self.headers.get("Last-Event-ID") or self.query.get("last_id")
        if raw is None or raw.strip() == "":
            return None
        try:
            value = int(raw.strip())
        except ValueError:
            raise HttpError(400, "bad_request", f"Last-Event-ID must be an integer event id, got {raw!r}",
                            "reconnect without it to receive only new events") from None
        if value < 0:
            raise HttpError(400, "bad_request", f"Last-Event-ID must be >= 0, got {value}",
                            "reconnect without it to receive only new events")
        return value

