"""The composition root of `agent-orchestrator start`: one process with the orchestrator on an asyncio
loop and the HTTP server (API, SSE, dashboard) in threads.

Lifecycle: open the project (lock) -> token -> orchestrator -> HTTP server -> daemon.json -> print
the URL -> `orchestrator.serve(shutdown)`. Signals only set the shutdown event (a second SIGINT
exits at once). Shutdown order: stop taking work and stop the agents (serve returns), stop the
HTTP server from this thread (not the serving one), flush events, close the database.
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from .api import Api
from .notify import Notifier
from .errors import UsageError
from .features import atomic_write_text
from .project import write_owner as write_daemon_file
from .server import WebServer

TOKEN_FILE = "token"
DAEMON_FILE = "daemon.json"


def ensure_token(state_dir: Path) -> str:
    """The project's API token: `.orchestrator/token` (0600), created once, reused afterwards."""
    path = state_dir / TOKEN_FILE
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if len(token) >= 32 and token.isalnum():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return token
    token = secrets.token_hex(24)
    atomic_write_text(path, token + "\n", mode=0o600)
    return token


def read_token(project_root: Path) -> str | None:
    try:
        return (Path(project_root) / ".orchestrator" / TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def read_daemon_file(project_root: Path) -> dict | None:
    """{pid, host, port, url, started_at} of the daemon that runs (or ran) for this project."""
    try:
        data = json.loads((Path(project_root) / ".orchestrator" / DAEMON_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _bind(api: Api, bus: Any, *, token: str, host: str, port: int,
          loop: asyncio.AbstractEventLoop | None = None) -> WebServer:
    try:
        # the live event streams are written from the orchestrator's loop: the thread that
        # publishes the agents' output (see sse_hub.SseHub)
        return WebServer(api, bus, token=token, host=host, port=port, loop=loop)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is already in use",
                             "pass another one with --port N (or set PORT)") from exc
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES) or isinstance(exc, socket.gaierror):
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                             "pass an address of this machine with --host (default 127.0.0.1)") from exc
        raise


class _Signals:
    """Signal handlers that only record: the first SIGINT/SIGTERM sets `shutdown`, a second SIGINT exits."""

    def __init__(self, loop: asyncio.AbstractEventLoop, shutdown: asyncio.Event, orchestrator: Any,
                 out: TextIO):
        self.loop = loop
        self.shutdown = shutdown
        self.orchestrator = orchestrator
        self.out = out
        self.installed: list[int] = []

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self._on_signal, sig)
            self.installed.append(sig)

    def remove(self) -> None:
        for sig in self.installed:
            self.loop.remove_signal_handler(sig)
        self.installed.clear()

    def _on_signal(self, sig: int) -> None:
        if self.shutdown.is_set():
            if sig == signal.SIGINT:
                self.orchestrator.kill_now()
                print("agent-orchestrator: interrupted again, exiting now", file=self.out, flush=True)
                os._exit(130)
            return
        self.shutdown.set()
        print("agent-orchestrator: stopping (agents are being stopped; press Ctrl-C again to exit at once)",
              file=self.out, flush=True)


def run_daemon(project_root: Path, *, host: str, port: int, autostart: bool,
               shutdown: asyncio.Event | None = None, ready: Callable[[str], None] | None = None,
               out: TextIO | None = None, heartbeat: float = 15.0) -> int:
    """Run the daemon until `shutdown` is set (or SIGINT/SIGTERM); returns the exit code (0).

    `ready(url)` is called on the daemon's event loop thread once the server listens, so a caller
    may take `asyncio.get_running_loop()` there to set `shutdown` thread-safely later.
    Errors opening the project or binding the port are raised as OrchestratorError.
    """
    return asyncio.run(_main(Path(project_root), host=host, port=port, autostart=autostart,
                             shutdown=shutdown, ready=ready, out=out or sys.stdout, heartbeat=heartbeat))


async def _main(root: Path, *, host: str, port: int, autostart: bool, shutdown: asyncio.Event | None,
                ready: Callable[[str], None] | None, out: TextIO, heartbeat: float) -> int:
    from .orchestrator import Orchestrator
    from .project import Project

    shutdown = shutdown or asyncio.Event()
    loop = asyncio.get_running_loop()
    project = Project.open(root, lock=True, command="start")
    web: WebServer | None = None
    notifier: Notifier | None = None
    signals: _Signals | None = None
    try:
        for warning in project.warnings:
            print(f"warning: {warning}", file=out, flush=True)
        token = ensure_token(project.state_dir)
        orchestrator = Orchestrator(project)
        notifier = Notifier(project.bus, project.config,
                            project_name=project.config["projectName"])
        notifier.start()
        api = Api(project, orchestrator, loop=loop, notifier=notifier)
        web = _bind(api, project.bus, token=token, host=host, port=port, loop=loop)
        web.heartbeat = heartbeat
        write_daemon_file(project.state_dir, {"pid": os.getpid(), "command": "start", "host": host,
                                              "port": web.port, "url": web.url, "started_at": time.time()})
        web.start()
        signals = _Signals(loop, shutdown, orchestrator, out)
        signals.install()
        print(f"agent-orchestrator: dashboard at {web.dashboard_url}", file=out, flush=True)
        if not autostart:
            print("agent-orchestrator: press Start in the dashboard (or POST /api/start) to begin",
                  file=out, flush=True)
        if ready is not None:
            ready(web.url)
        serve = asyncio.ensure_future(orchestrator.serve(shutdown))
        if autostart:
            try:
                await orchestrator.start()
            except BaseException:
                shutdown.set()
                await serve
                raise
        await serve
        print("agent-orchestrator: stopped", file=out, flush=True)
        return 0
    finally:
        if signals is not None:
            signals.remove()
        if web is not None:
            await loop.run_in_executor(None, web.shutdown)
        if notifier is not None:
            await loop.run_in_executor(None, notifier.close)
        try:
            project.bus.flush()
        finally:
            project.close()


__all__ = ["run_daemon", "ensure_token", "read_token", "read_daemon_file", "write_daemon_file"]
