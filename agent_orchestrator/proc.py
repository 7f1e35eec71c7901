"""The only place that spawns processes: short commands (`run`) and streaming children (`AgentProcess`).

Every child gets stdin=/dev/null and its own process group, so stopping it (SIGTERM, then SIGKILL
after a grace period) reaches everything it started.
"""
from __future__ import annotations

import asyncio
import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .errors import AgentUnavailable, ProcessError

CHUNK = 64 * 1024
TRUNCATION_MARKER = " …[line truncated: {n} bytes]"
RUN_KILL_GRACE = 2.0
PIPE_DRAIN_SECONDS = 2.0
_GROUP_POLL = 0.02
HOLD_CHECK_SECONDS = 0.01

REPO_POINTING_GIT_VARS = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_INDEX_VERSION", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_PREFIX", "GIT_COMMON_DIR", "GIT_NAMESPACE",
    "GIT_QUARANTINE_PATH", "GIT_SHALLOW_FILE", "GIT_GRAFT_FILE", "GIT_REPLACE_REF_BASE",
    "GIT_NO_REPLACE_OBJECTS", "GIT_LITERAL_PATHSPECS", "GIT_GLOB_PATHSPECS",
    "GIT_NOGLOB_PATHSPECS", "GIT_ICASE_PATHSPECS", "GIT_REFLOG_ACTION", "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR", "GIT_INTERNAL_SUPER_PREFIX",
})


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    output_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class ExitInfo:
    returncode: int | None
    reason: str  # "exited" | "timeout" | "stalled" | "stopped"
    duration: float


def clean_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) without inherited GIT_* variables that point git elsewhere."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if k not in REPO_POINTING_GIT_VARS}


def which(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """Resolve `name` the way exec would with `env` (its PATH), or None when it is not runnable."""
    path = os.environ.get("PATH", os.defpath) if env is None else env.get("PATH", os.defpath)
    return shutil.which(name, path=path)


def _check_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, (str, bytes)):
        raise TypeError(f"argv must be a list of strings, not a string: {argv!r}")
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("argv is empty")
    for a in args:
        if not isinstance(a, str):
            raise TypeError(f"argv elements must be str, got {type(a).__name__}: {a!r}")
    return args


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in the group. Zombies are ignored: in a container
    without an init that reaps orphans they would otherwise keep the group "alive" forever."""
    if not _signal_group(pgid, 0):
        return False
    proc_dir = Path("/proc")
    if not (proc_dir / "self" / "stat").exists():
        return True
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


class _TailBuffer:
    """Keeps at most `limit` bytes: the newest ones."""

    def __init__(self, limit: int):
        self.limit = max(0, limit)
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def run(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None,
        timeout: float | None = 120, check: bool = False, max_output: int = 16 << 20) -> Completed:
    """Run a short command to completion and capture its output (each stream capped at max_output
    bytes, keeping the tail). On timeout the whole process group gets SIGTERM, then SIGKILL."""
    args = _check_argv(argv)
    if not Path(cwd).is_dir():
        raise ProcessError(f"cannot run '{args[0]}': working directory {cwd} does not exist")
    try:
        proc = subprocess.Popen(
            args, cwd=cwd, env=None if env is None else dict(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        raise ProcessError(f"command '{args[0]}' not found on PATH",
                           f"install '{args[0]}' or put its directory on PATH") from None
    except PermissionError:
        raise ProcessError(f"command '{args[0]}' is not executable",
                           f"check the permissions of '{args[0]}'") from None
    with proc:
        out, err, timed_out = _collect(proc, timeout, max_output)
        if _group_alive(proc.pid):
            _stop_group_sync(proc, RUN_KILL_GRACE)
    completed = Completed(args, proc.returncode, out.text(), err.text(), timed_out,
                          bool(out.dropped or err.dropped))
    if check and not completed.ok:
        raise ProcessError(describe_failure(completed))
    return completed


def _collect(proc: subprocess.Popen, timeout: float | None,
             max_output: int) -> tuple[_TailBuffer, _TailBuffer, bool]:
    buffers = {proc.stdout: _TailBuffer(max_output), proc.stderr: _TailBuffer(max_output)}
    deadline = None if timeout is None else time.monotonic() + timeout
    drain_deadline: float | None = None
    timed_out = False
    with selectors.DefaultSelector() as sel:
        for stream in buffers:
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            now = time.monotonic()
            if deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                _stop_group_sync(proc, RUN_KILL_GRACE)
                drain_deadline = time.monotonic() + PIPE_DRAIN_SECONDS
            if drain_deadline is None and proc.poll() is not None:
                if _group_alive(proc.pid):
                    _stop_group_sync(proc, RUN_KILL_GRACE)
                drain_deadline = time.monotonic() + PIPE_DRAIN_SECONDS
            if drain_deadline is not None and now >= drain_deadline:
                break
            limits = [t for t in (deadline if not timed_out else None, drain_deadline) if t is not None]
            wait = min(0.1, *(t - now for t in limits)) if limits else 0.1
            for key, _ in sel.select(max(0.0, wait)):
                chunk = os.read(key.fd, CHUNK)
                if chunk:
                    buffers[key.fileobj].add(chunk)
                else:
                    sel.unregister(key.fileobj)
    if proc.poll() is None:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            _wait_exit(proc, remaining)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop_group_sync(proc, RUN_KILL_GRACE)
    return buffers[proc.stdout], buffers[proc.stderr], timed_out


def _wait_exit(proc: subprocess.Popen, timeout: float | None) -> None:
    """proc.wait(timeout), without its polling: with a timeout, Popen.wait sleeps in steps (from
    0.5 ms, doubling), which costs every short command (a git call) a millisecond or more after
    its pipes closed. A pidfd (Linux 5.3+) becomes readable the moment the child exits."""
    if timeout is None or not hasattr(os, "pidfd_open"):
        proc.wait(timeout)
        return
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # already reaped, or pidfds not supported by the kernel
        proc.wait(timeout)
        return
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(pidfd)
    proc.wait()


def _stop_group_sync(proc: subprocess.Popen, grace: float) -> None:
    if not _signal_group(proc.pid, signal.SIGTERM):
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        proc.poll()
        if not _group_alive(proc.pid):
            return
        time.sleep(_GROUP_POLL)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def describe_failure(c: Completed) -> str:
    what = " ".join(c.argv[:3]) + (" ..." if len(c.argv) > 3 else "")
    if c.timed_out:
        return f"'{what}' timed out"
    tail = (c.stderr.strip() or c.stdout.strip()).splitlines()[-5:]
    detail = (": " + " | ".join(tail)) if tail else ""
    return f"'{what}' exited with code {c.returncode}{detail}"


def _utf8_cut(data: bytes | bytearray, limit: int) -> int:
    """Largest cut position <= limit that does not split a UTF-8 sequence."""
    if limit >= len(data):
        return len(data)
    cut = limit
    for back in range(1, 4):
        i = limit - back
        if i < 0:
            break
        b = data[i]
        if b & 0xC0 == 0x80:
            continue
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            if i + need > limit:
                cut = i
        break
    return cut


class LineSplitter:
    """Turns chunks of bytes into decoded lines without a length limit on the input; a line longer
    than max_line bytes is cut and marked. Holds at most max_line bytes of one unfinished line."""

    def __init__(self, emit: Callable[[str], None], max_line: int):
        if max_line < 1:
            raise ValueError("max_line must be >= 1")
        self._emit = emit
        self._max_line = max_line
        self._pending = bytearray()
        self._line_size = 0

    def feed(self, chunk: bytes) -> None:
        start = 0
        while start < len(chunk):
            nl = chunk.find(b"\n", start)
            end = len(chunk) if nl < 0 else nl
            self._take(chunk[start:end])
            if nl < 0:
                return
            self._flush()
            start = nl + 1

    def close(self) -> None:
        if self._line_size:
            self._flush()

    def _take(self, piece: bytes) -> None:
        room = self._max_line - len(self._pending)
        if room > 0:
            self._pending += piece[:room]
        self._line_size += len(piece)

    def _flush(self) -> None:
        data, size = self._pending, self._line_size
        self._pending, self._line_size = bytearray(), 0
        if size > self._max_line:
            text = bytes(data[:_utf8_cut(data, self._max_line)]).decode("utf-8", errors="replace")
            self._emit(text + TRUNCATION_MARKER.format(n=size))
            return
        if data.endswith(b"\r"):
            del data[-1:]
        self._emit(data.decode("utf-8", errors="replace"))


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, owner: AgentProcess):
        self._owner = owner

    def connection_made(self, transport) -> None:
        self._owner._transport = transport

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._owner._on_data(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._owner._on_pipe_closed(fd)

    def process_exited(self) -> None:
        self._owner._on_exit()


class AgentProcess:
    """A long-lived child whose stdout and stderr lines are streamed to callbacks on the event loop.

    Built on loop.subprocess_exec (what asyncio.create_subprocess_exec wraps) with a protocol, so
    output arrives as chunks from both pipes as soon as it is written, and the exit of the child
    is seen even while a grandchild still holds the pipes open.
    """

    def __init__(self, argv: list[str], on_stdout: Callable[[str], None],
                 on_stderr: Callable[[str], None], max_line: int,
                 clock: Callable[[], float] = time.monotonic):
        if max_line < 1:
            raise ValueError("max_line must be >= 1")
        loop = asyncio.get_running_loop()
        self.argv = argv
        self.pid = 0
        self._clock = clock
        self.started_at = clock()
        self.last_output_at = self.started_at
        self._transport: asyncio.SubprocessTransport | None = None
        self._splitters = {1: LineSplitter(self._guard(on_stdout), max_line),
                           2: LineSplitter(self._guard(on_stderr), max_line)}
        self._open_pipes = {1, 2}
        self._exited: asyncio.Future = loop.create_future()
        self._pipes_closed: asyncio.Future = loop.create_future()
        self._callback_error: BaseException | None = None
        self._stop_requested = False
        self._kill_task: asyncio.Task | None = None
        self._hold_output: Callable[[], bool] | None = None
        self._held = False

    @classmethod
    async def start(cls, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None,
                    on_stdout: Callable[[str], None], on_stderr: Callable[[str], None],
                    max_line: int = 8 << 20,
                    hold_output: Callable[[], bool] | None = None) -> AgentProcess:
        """hold_output: checked after each chunk read; while it returns True the child's pipes
        are not read (the child blocks writing, its output waits in the pipe): backpressure
        from a consumer that fell behind, so memory does not grow with the output."""
        args = _check_argv(argv)
        binary = args[0]
        hint = (f"install '{binary}' or put its directory on PATH, or set its full path as the "
                f"agent's \"command\" in orchestrator.config.json")
        if os.sep in binary:
            if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
                raise AgentUnavailable(f"agent binary '{binary}' not found or not executable", hint)
        elif which(binary, env) is None:
            raise AgentUnavailable(f"agent binary '{binary}' not found on PATH", hint)
        if not Path(cwd).is_dir():
            raise ProcessError(f"cannot start '{binary}': working directory {cwd} does not exist")
        self = cls(args, on_stdout, on_stderr, max_line)
        self._hold_output = hold_output
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: _Protocol(self), *args, cwd=cwd, env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True)
        except (FileNotFoundError, PermissionError) as exc:
            raise AgentUnavailable(f"agent binary '{binary}' could not be started: {exc.strerror}",
                                   hint) from None
        self._transport = transport
        self.pid = transport.get_pid()
        return self

    @property
    def returncode(self) -> int | None:
        return None if self._transport is None else self._transport.get_returncode()

    # -- protocol events (event loop thread)
    def _on_data(self, fd: int, data: bytes) -> None:
        self.last_output_at = self._clock()
        self._splitters[fd].feed(data)
        if self._hold_output is not None and not self._held and self._hold_output():
            self._set_held(True)

    def _set_held(self, held: bool) -> None:
        self._held = held
        for fd in (1, 2):
            pipe = self._transport.get_pipe_transport(fd) if self._transport else None
            if pipe is not None and not pipe.is_closing():
                (pipe.pause_reading if held else pipe.resume_reading)()
        if held:
            asyncio.get_running_loop().call_later(HOLD_CHECK_SECONDS, self._check_hold)

    def _check_hold(self) -> None:
        if not self._held:
            return
        # a held child is not stalled: its output is waiting in the pipe
        self.last_output_at = self._clock()
        if not self._exited.done() and self._hold_output is not None and self._hold_output():
            asyncio.get_running_loop().call_later(HOLD_CHECK_SECONDS, self._check_hold)
        else:
            self._set_held(False)

    def _on_pipe_closed(self, fd: int) -> None:
        if fd not in self._open_pipes:
            return
        self._open_pipes.discard(fd)
        self._splitters[fd].close()
        if not self._open_pipes and not self._pipes_closed.done():
            self._pipes_closed.set_result(None)

    def _on_exit(self) -> None:
        if not self._exited.done():
            self._exited.set_result(self.returncode)

    def _guard(self, callback: Callable[[str], None]) -> Callable[[str], None]:
        def deliver(line: str) -> None:
            if self._callback_error is not None:
                return
            try:
                callback(line)
            except Exception as exc:  # re-raised from wait(); the child is stopped meanwhile
                self._callback_error = exc
                self._start_kill(0)
        return deliver

    # -- public
    async def wait(self, *, timeout: float | None = None, stall_timeout: float | None = None,
                   grace: float = 10) -> ExitInfo:
        """Wait for the child to end; a wall-clock `timeout` or `stall_timeout` seconds without any
        output stop the whole group (SIGTERM, SIGKILL after `grace`)."""
        reason = "exited"
        while not self._exited.done():
            now = self._clock()
            limits = []
            if timeout is not None:
                limits.append((self.started_at + timeout, "timeout"))
            if stall_timeout is not None:
                limits.append((self.last_output_at + stall_timeout, "stalled"))
            due = [r for t, r in limits if t <= now]
            if due:
                reason = due[0]
                await self._kill(grace)
                break
            delay = min(t for t, _ in limits) - now if limits else None
            await asyncio.wait({self._exited}, timeout=delay)
        await self._exited
        await self._finish(grace)
        if self._stop_requested and reason == "exited":
            reason = "stopped"
        if self._callback_error is not None:
            raise self._callback_error
        return ExitInfo(self.returncode, reason, self._clock() - self.started_at)

    async def _finish(self, grace: float) -> None:
        """After the leader exited: stop what is left of its group, drain the pipes, close."""
        if _group_alive(self.pid):
            await self._kill(grace)
        if not self._pipes_closed.done():
            await asyncio.wait({self._pipes_closed}, timeout=PIPE_DRAIN_SECONDS)
        for fd in sorted(self._open_pipes):
            self._on_pipe_closed(fd)
        if self._transport is not None:
            self._transport.close()

    async def terminate(self, grace: float = 10) -> None:
        """Stop the child and its whole process group. Idempotent; harmless after it exited."""
        self._stop_requested = True
        await self._kill(grace)

    def _start_kill(self, grace: float) -> asyncio.Task:
        if self._kill_task is None:
            self._kill_task = asyncio.ensure_future(self._kill_group(grace))
        return self._kill_task

    async def _kill(self, grace: float) -> None:
        await asyncio.shield(self._start_kill(grace))

    async def _kill_group(self, grace: float) -> None:
        if not _signal_group(self.pid, signal.SIGTERM):
            await self._exited
            return
        end = self._clock() + grace
        try:
            while self._clock() < end:
                if self._exited.done() and not _group_alive(self.pid):
                    return
                await asyncio.sleep(_GROUP_POLL)
        except asyncio.CancelledError:
            # the loop is going away (e.g. the daemon exits): nobody will wait out the grace
            # period, so the group is killed now rather than left running
            _signal_group(self.pid, signal.SIGKILL)
            raise
        _signal_group(self.pid, signal.SIGKILL)
        await self._exited
