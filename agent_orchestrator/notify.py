"""Notifications: webhooks (JSON POST) and a user command on notable events of the bus.

Off the pipeline's path: a dispatcher thread reads a bus subscription (publishing never waits for
it), turns events into notifications and drops each into the bounded queue of every destination
that wants it; one worker thread per destination sends, with a timeout and retries. A full queue
drops the notification (logged once per destination until it delivers again), so a dead or
hanging webhook never slows a run or the other destinations.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import threading
import time
from urllib.parse import urlsplit
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import __version__, proc
from .errors import ProcessError
from .events import EventBus, SubscriptionClosed, SubscriptionDropped

log = logging.getLogger(__name__)

QUEUE_SIZE = 200
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF = 30.0
_STOP = object()

TITLES = {
    "feature.passed": "Feature passed",
    "feature.failed": "Feature failed",
    "track.paused": "Track paused",
    "budget.warning": "Budget warning",
    "budget.reached": "Budget reached",
    "rate_limit.waiting": "Waiting for a rate-limit reset",
    "conflict.predicted": "Merge conflict predicted",
    "run.finished": "Run finished",
}


@dataclass(frozen=True)
class Notification:
    name: str
    message: str
    data: dict
    ts: float
    project: str

    @property
    def title(self) -> str:
        return f"{self.project}: {TITLES.get(self.name, self.name)}"

    def body(self) -> dict:
        return {"event": self.name, "ts": iso_utc(self.ts), "project": self.project,
                "message": self.message, "data": self.data}


def iso_utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- pure mapping

def _feature_label(data: dict) -> str:
    fid = data.get("id", data.get("feature_id"))
    name = data.get("name") or data.get("feature_name")
    return f"Feature #{fid}" + (f" ({name})" if name else "")


def _money(v: Any) -> str:
    return f"${float(v):.2f}" if isinstance(v, (int, float)) else "$?"


def _list_ids(ids: Any) -> str:
    ids = list(ids or [])
    return ", ".join(f"#{i}" for i in ids) if ids else "none"


def _files(files: Any, limit: int = 5) -> str:
    files = [str(f) for f in files or []]
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


class EventMapper:
    """Bus events -> (notification name, message). Keeps the little state needed to report a
    track pause only on the transition (a track event repeats `paused: true` on each phase change)."""

    def __init__(self) -> None:
        self._paused: dict[str, bool] = {}

    def map(self, type_: str, data: dict) -> tuple[str, str] | None:
        if not isinstance(data, dict):
            return None
        if type_ == "feature":
            status = data.get("status")
            if status not in ("passed", "failed") or data.get("note"):
                return None
            if status == "passed":
                return "feature.passed", f"{_feature_label(data)} passed."
            reason = data.get("failure_reason") or data.get("reason")
            return "feature.failed", f"{_feature_label(data)} failed" + (f": {reason}" if reason else ".")
        if type_ == "track":
            name = data.get("name")
            if "paused" not in data or not isinstance(name, str):
                return None
            paused = bool(data["paused"])
            was = self._paused.get(name, False)
            self._paused[name] = paused
            if not paused or was:
                return None
            reason = data.get("paused_reason") or data.get("reason")
            return "track.paused", f"Track {name} paused" + (f": {reason}" if reason else ".")
        if type_ == "budget":
            level = data.get("level")
            if level not in ("warning", "reached"):
                return None
            scope = f"feature #{data.get('feature_id')}" if data.get("scope") == "feature" else "the whole project"
            spent, limit = _money(data.get("spent_usd")), _money(data.get("limit_usd"))
            if level == "warning":
                return "budget.warning", f"Budget warning: {spent} of the {limit} budget of {scope} spent."
            return "budget.reached", f"Budget reached: {spent} spent of the {limit} budget of {scope}."
        if type_ == "rate_limit":
            if data.get("waiting") is not True:
                return None
            until = data.get("until")
            when = (dt.datetime.fromtimestamp(until, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                    if isinstance(until, (int, float)) else "an unknown time")
            agents = data.get("agents") or [data.get("agent")]
            who = f"Track {data['track']}" if data.get("track") else "A track"
            return "rate_limit.waiting", (f"{who} is waiting until {when}: every agent "
                                          f"({', '.join(str(a) for a in agents if a)}) is rate-limited.")
        if type_ == "conflict":
            ids = list(data.get("feature_ids") or [])
            files = _files(data.get("files"))
            if data.get("against") == "feature" and len(ids) >= 2:
                return "conflict.predicted", (f"Features #{ids[0]} and #{ids[1]} will conflict when both "
                                              f"are merged: {files}.")
            base = data.get("base") or "the base branch"
            first = f"#{ids[0]}" if ids else "?"
            return "conflict.predicted", f"Feature {first} will conflict with {base}: {files}."
        if type_ == "run":
            if data.get("state") != "finished":
                return None
            passed, failed, blocked = (list(data.get(k) or []) for k in ("passed", "failed", "blocked"))
            msg = f"Run finished: {len(passed)} passed, {len(failed)} failed, {len(blocked)} blocked."
            if failed:
                msg += f" Failed: {_list_ids(failed)}."
            return "run.finished", msg
        return None


def wants(events: list[str], name: str) -> bool:
    return "*" in events or name in events


def expand_command(argv: list[str], note: Notification) -> list[str]:
    """{event}, {title} and {message} replaced in each argument (no shell, no other braces)."""
    out = []
    for arg in argv:
        for key, value in (("{event}", note.name), ("{title}", note.title), ("{message}", note.message)):
            arg = arg.replace(key, value)
        out.append(arg)
    return out


# ---------------------------------------------------------------- destinations

@dataclass
class _Sink:
    label: str
    events: list[str]
    send: Callable[[Notification], None]
    queue: queue.Queue
    thread: threading.Thread | None = None
    dropping: bool = False
    failing: bool = False
    sent: int = 0
    failed: int = 0
    dropped: int = 0


class DeliveryError(Exception):
    def __init__(self, message: str, *, retry: bool):
        super().__init__(message)
        self.retry = retry


class Notifier:
    """Webhooks and notify.command for the notable events of `bus`. start() subscribes from now."""

    def __init__(self, bus: EventBus, config, *, project_name: str, clock: Callable[[], float] = time.time,
                 opener: Callable[..., Any] | None = None, runner: Callable[..., Any] = proc.run,
                 backoff: float = 1.0, queue_size: int = QUEUE_SIZE):
        self.bus = bus
        self.project_name = project_name
        self.clock = clock
        self.opener = opener  # None: urllib.request.urlopen (imported when a webhook is sent)
        self.runner = runner
        self.backoff = backoff
        self.timeout = float(config["notify.timeoutSeconds"])
        self.retries = int(config["notify.retries"])
        self.cwd = Path(getattr(config, "project_root", None) or os.getcwd())
        self._mapper = EventMapper()
        self._stopping = threading.Event()
        self._sub = None
        self._dispatcher: threading.Thread | None = None
        self.sinks: list[_Sink] = []
        for i, hook in enumerate(config["notify.webhooks"] or []):
            self.sinks.append(_Sink(f"webhook {i} ({_redact(hook['url'])})", list(hook.get("events") or ["*"]),
                                    self._poster(hook), queue.Queue(queue_size)))
        command = config["notify.command"]
        if command:
            self.sinks.append(_Sink(f"notify.command ({command[0]})", ["*"], self._commander(list(command)),
                                    queue.Queue(queue_size)))

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per destination ("webhook 0", ..., "command"): notifications sent, failed and dropped."""
        return {("command" if s.label.startswith("notify.command") else s.label.split(" (")[0]):
                {"sent": s.sent, "failed": s.failed, "dropped": s.dropped} for s in self.sinks}

    # lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.sinks or self._dispatcher is not None:
            return
        self._sub = self.bus.subscribe()
        for i, sink in enumerate(self.sinks):
            sink.thread = threading.Thread(target=self._work, args=(sink,), daemon=True, name=f"notify-{i}")
            sink.thread.start()
        self._dispatcher = threading.Thread(target=self._dispatch, name="notify-dispatch", daemon=True)
        self._dispatcher.start()

    def close(self, wait: float = 2.0) -> None:
        """Deliver what is already published, for at most `wait` seconds (no retries after close),
        then leave the rest; worker threads are daemons and never hold up the exit."""
        if self._dispatcher is None:
            return
        deadline = time.monotonic() + wait
        self._stopping.set()
        self._dispatcher.join(max(0.0, deadline - time.monotonic()))
        for sink in self.sinks:
            try:
                sink.queue.put_nowait(_STOP)
            except queue.Full:
                log.debug("notifications: %s is full at shutdown; its worker is left behind", sink.label)
        for sink in self.sinks:
            if sink.thread is not None:
                sink.thread.join(max(0.0, deadline - time.monotonic()))
            left = sink.queue.qsize()
            if sink.thread is not None and sink.thread.is_alive() and left:
                log.warning("notifications: %s still had %d notification(s) to send at shutdown",
                            sink.label, left)
        self._dispatcher = None

    # dispatching ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        sub = self._sub
        while True:
            try:
                events = sub.get(0.0 if self._stopping.is_set() else 0.2)
            except SubscriptionClosed:
                return
            except SubscriptionDropped:
                log.warning("notifications fell behind the event stream; catching up from event %d", sub.last_id)
                sub = self._sub = self.bus.subscribe(last_id=sub.last_id)
                continue
            for event in events:
                if event.type != "output":  # most events, never a notification: not decoded
                    self.handle(event.type, event.data)
            if not events and self._stopping.is_set():
                sub.close()
                return

    def handle(self, type_: str, data: dict) -> Notification | None:
        """Map one bus event and queue the notification for every destination that wants it."""
        try:
            mapped = self._mapper.map(type_, data)
        except Exception:
            log.exception("notifications: cannot describe a %s event: %r", type_, data)
            return None
        if mapped is None:
            return None
        note = Notification(mapped[0], mapped[1], data, self.clock(), self.project_name)
        for sink in self.sinks:
            if not wants(sink.events, note.name):
                continue
            try:
                sink.queue.put_nowait(note)
            except queue.Full:
                sink.dropped += 1
                if not sink.dropping:
                    sink.dropping = True
                    log.warning("notifications: %s is not keeping up (queue of %d full); dropping "
                                "notifications until it delivers again", sink.label, sink.queue.maxsize)
        return note

    def _work(self, sink: _Sink) -> None:
        while True:
            item = sink.queue.get()
            if item is _STOP:
                return
            try:
                sink.send(item)
            except DeliveryError as exc:
                sink.failed += 1
                if not sink.failing:
                    sink.failing = True
                    log.warning("notifications: %s failed: %s (further failures are not logged "
                                "until it works again)", sink.label, exc)
            except Exception:
                sink.failed += 1
                log.exception("notifications: %s: unexpected error", sink.label)
            else:
                sink.sent += 1
                if sink.failing or sink.dropping:
                    log.info("notifications: %s works again", sink.label)
                sink.failing = sink.dropping = False

    # senders --------------------------------------------------------------------------------

    def _poster(self, hook: dict) -> Callable[[Notification], None]:
        url = hook["url"]
        headers = {"Content-Type": "application/json", "User-Agent": f"agent-orchestrator/{__version__}"}
        for name, value in (hook.get("headers") or {}).items():
            for existing in [k for k in headers if k.lower() == name.lower()]:
                del headers[existing]
            headers[name] = value

        def post(note: Notification) -> None:
            payload = json.dumps(note.body(), ensure_ascii=False, default=str).encode("utf-8")
            attempt = 0
            while True:
                try:
                    self._post_once(url, payload, headers)
                    return
                except DeliveryError as exc:
                    if not exc.retry or attempt >= self.retries or self._stopping.is_set():
                        raise DeliveryError(f"{exc} (after {attempt + 1} attempt(s))", retry=False) from None
                delay = min(self.backoff * (2 ** attempt), MAX_BACKOFF)
                attempt += 1
                if self._stopping.wait(delay):
                    raise DeliveryError("shutting down before the retry", retry=False)

        return post

    def _post_once(self, url: str, payload: bytes, headers: dict) -> None:
        import urllib.error  # only a project with webhooks pays for importing http and ssl
        import urllib.request
        from http.client import HTTPException
        request = urllib.request.Request(url, data=payload, headers=headers, method="POST")
        try:
            with (self.opener or urllib.request.urlopen)(request, timeout=self.timeout) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise DeliveryError(f"HTTP {exc.code} {exc.reason}", retry=exc.code in RETRY_STATUSES) from None
        except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"cannot reach it: {reason}", retry=not isinstance(exc, ValueError)) from None

    def _commander(self, argv: list[str]) -> Callable[[Notification], None]:
        def run(note: Notification) -> None:
            env = dict(os.environ)
            env["AO_EVENT"] = json.dumps(note.body(), ensure_ascii=False, default=str)
            try:
                done = self.runner(expand_command(argv, note), cwd=self.cwd, env=env,
                                   timeout=self.timeout, max_output=64 << 10)
            except ProcessError as exc:
                raise DeliveryError(exc.message, retry=False) from None
            if done.timed_out:
                raise DeliveryError(f"timed out after {self.timeout:g} s", retry=False)
            if done.returncode != 0:
                tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
                raise DeliveryError(f"exit code {done.returncode}" + (f": {tail[0]}" if tail else ""),
                                    retry=False)

        return run


def _redact(url: str) -> str:
    """Scheme and host only: webhook URLs often carry their secret in the path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"
