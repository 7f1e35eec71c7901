"""The app served for a verification: `verification.serverCommand` started in the integration
checkout on a free port, waited for until it answers HTTP, and stopped (its process group)."""
from __future__ import annotations

import asyncio
import collections
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import proc
from .errors import OrchestratorError

POLL_SECONDS = 0.2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    """True once anything answers HTTP at `url` (any status, even 404 or 500)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


class AppServer:
    def __init__(self, argv_template: list[str], cwd: Path, *, start_seconds: float,
                 grace: float):
        self.port = free_port()
        self.argv = [part.replace("{port}", str(self.port)) for part in argv_template]
        self.cwd = cwd
        self.start_seconds = start_seconds
        self.grace = grace
        self.url = f"http://127.0.0.1:{self.port}"
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.child: proc.AgentProcess | None = None

    async def __aenter__(self) -> "AppServer":
        self.child = await proc.AgentProcess.start(self.argv, cwd=self.cwd, env=None,
                                                   on_stdout=self.tail.append,
                                                   on_stderr=self.tail.append)
        deadline = time.monotonic() + self.start_seconds
        waiter = asyncio.ensure_future(self.child.wait())
        try:
            while not await asyncio.to_thread(answers, self.url):
                if waiter.done():
                    raise OrchestratorError(
                        f"verification.serverCommand exited with {waiter.result().returncode} "
                        f"before answering at {self.url}: {' | '.join(list(self.tail)[-5:])}",
                        "check the command in orchestrator.config.json; it must serve on {port}")
                if time.monotonic() > deadline:
                    raise OrchestratorError(
                        f"verification.serverCommand did not answer at {self.url} within "
                        f"{self.start_seconds:g} s", "raise verification.serverStartSeconds or "
                        "check that the app listens on the {port} it is given")
                await asyncio.sleep(POLL_SECONDS)
        except BaseException:
            waiter.cancel()
            await self.child.terminate(grace=self.grace)
            raise
        waiter.cancel()
        return self

    async def __aexit__(self, *exc) -> None:
        if self.child is not None:
            await self.child.terminate(grace=self.grace)
