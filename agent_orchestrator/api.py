"""Service layer of the HTTP API: plain methods returning JSON-able dicts, raising errors.py exceptions.

Used by server.py (one call per route) and usable by the CLI (`status` without a daemon: no
orchestrator, reads the project's stores). Calls into the orchestrator are made on its event loop
(`asyncio.run_coroutine_threadsafe`), because HTTP handlers run in their own threads.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import inspect
import json
import os
import threading
import time
from typing import Any, Callable

from . import __version__
from .errors import Conflict, NotFound, UsageError
from .features import parse_features
from .metrics import render_metrics
from .scheduler import route, waiting_on
from .states import FEATURE_STATUSES, SessionPhase, SessionStatus

SESSION_SUMMARY_KEYS = (
    "id", "feature_id", "track", "phase", "agent", "attempt", "status", "started_at", "ended_at",
    "exit_code", "exit_reason", "model", "cost_usd", "input_tokens", "output_tokens", "num_turns",
    "error", "failure_category",
)
USER_SETTABLE_STATUSES = ("open", "passed", "failed", "blocked")
MAX_PAGE = 500
MAX_EVENTS_PAGE = 1000


def json_body(payload: Any) -> bytes:
    """A JSON response body, exactly as the server encodes one."""
    return json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")


def _int_arg(value: Any, name: str, *, default: int, low: int, high: int | None = None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"query parameter '{name}' must be an integer, got {value!r}",
                         f"send e.g. {name}={default}") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise UsageError(f"query parameter '{name}' must be {bound}, got {number}",
                         f"send e.g. {name}={default}")
    return number


def _choice_arg(value: Any, name: str, choices: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    if value not in choices:
        raise UsageError(f"query parameter '{name}' must be one of {', '.join(choices)}, got {value!r}",
                         f"leave '{name}' out to list all")
    return str(value)


def _require_object(body: Any, what: str) -> dict:
    if not isinstance(body, dict):
        raise UsageError(f"{what}: the request body must be a JSON object, got {type(body).__name__}",
                         'send e.g. {"name": "..."} with Content-Type: application/json')
    return body


def session_summary(row: dict | None) -> dict | None:
    if row is None:
        return None
    return {key: row.get(key) for key in SESSION_SUMMARY_KEYS if key in row}


def feature_to_dict(feature: Any) -> dict:
    """The feature as it is in features.json (unknown fields kept), with the parsed fields on top."""
    out = dict(getattr(feature, "raw", None) or {})
    out["id"] = feature.id
    out["name"] = feature.name
    out["status"] = feature.status
    out.setdefault("category", feature.category)
    return out


class Api:
    def __init__(self, project: Any, orchestrator: Any = None, *,
                 loop: asyncio.AbstractEventLoop | None = None, call_timeout: float = 30.0,
                 clock: Callable[[], float] = time.time, notifier: Any = None):
        self.project = project
        self.orchestrator = orchestrator
        self.notifier = notifier
        self._loop = loop
        self._call_timeout = call_timeout
        self._clock = clock
        self._eta_cache: tuple[float, float | None] | None = None
        self._features_cache: tuple[tuple, list] | None = None
        self._counts_cache: tuple[tuple, tuple] | None = None
        self._features_json: tuple[tuple, bytes] | None = None
        self._item_json: dict[int, tuple[dict, str]] = {}
        self._features_lock = threading.Lock()

    # ----------------------------------------------------------------- plumbing
    def _on_loop(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run fn(*args) on the orchestrator's loop (awaiting it when it is a coroutine) and return its result."""
        if self._loop is None:
            result = fn(*args)
            if inspect.isawaitable(result):
                raise RuntimeError("Api needs the orchestrator's event loop to call coroutines")
            return result

        async def invoke() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        try:
            future = asyncio.run_coroutine_threadsafe(invoke(), self._loop)
        except RuntimeError:  # the loop is closed: the daemon is on its way out
            raise Conflict("the daemon is shutting down", "start it again with `agent-orchestrator start`") from None
        return future.result(self._call_timeout if timeout is None else timeout)

    def _control(self) -> Any:
        if self.orchestrator is None:
            raise Conflict("no daemon is running for this project, so nothing can be controlled",
                           "start it with `agent-orchestrator start`")
        return self.orchestrator

    def _features(self) -> list:
        return list(self._feature_state()[1])

    def _feature_state(self) -> tuple[tuple, list]:
        """(version, features) of features.json as it is now. Parsed once per version of the file
        (2,000 features take ~20 ms to parse and validate) and read-only: unlike store.load() it
        leaves the store's merge base to the orchestrator."""
        store = self.project.store
        path = store.path
        try:
            with open(path, "rb") as handle:
                st = os.fstat(handle.fileno())
                data = handle.read()
        except OSError:
            return ("unreadable", time.monotonic()), list(store.load())  # the store says what is wrong
        key = (st.st_ino, st.st_size, st.st_mtime_ns, hashlib.blake2b(data, digest_size=16).digest())
        cached = self._features_cache
        if cached is not None and cached[0] == key:
            return cached
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return ("unreadable", time.monotonic()), list(store.load())
        state = (key, parse_features(text, source=str(path)).features)
        self._features_cache = state
        return state

    def _find_feature(self, feature_id: int) -> Any:
        for feature in self._features():
            if feature.id == feature_id:
                return feature
        raise NotFound(f"no feature with id {feature_id} in {self.project.store.path.name}",
                       "GET /api/features lists the ids")

    def _track_names(self) -> list[str]:
        return [track.name for track in self.project.config.tracks]

    def _check_track(self, name: str) -> None:
        if name not in self._track_names():
            raise NotFound(f"no track named {name!r}",
                           f"configured tracks: {', '.join(self._track_names())}")

    def _route(self, feature: Any) -> str:
        return route(feature, self.project.config.tracks)

    # -------------------------------------------------------------------- reads
    def health(self) -> dict:
        return {"ok": True, "version": __version__}

    def metrics(self) -> str:
        """The Prometheus text page of GET /metrics."""
        snap = self.status()
        _, per_track = self._feature_counts()
        extra = {"project": self.project.config["projectName"],
                 "agents": self.project.config.agent_names(),
                 "queue": {track: counts.get("open", 0) for track, counts in per_track.items()},
                 "rate_limit_waits_total": getattr(self.orchestrator, "rate_limit_waits", 0)}
        if self.notifier is not None:
            extra["notifications"] = self.notifier.stats()
        return render_metrics(snap, self.project.db.totals(), self.project.db.session_counts(),
                              extra)

    def status(self) -> dict:
        bus = getattr(self.project, "bus", None)
        last_event_id = bus.last_id if bus is not None else self.project.db.max_event_id()
        if self.orchestrator is None:
            snap = self._offline_status()
        else:
            snap = dict(self.orchestrator.snapshot())
            self._complete_snapshot(snap)
        snap.setdefault("project", self.project.config["projectName"])
        snap.setdefault("version", __version__)
        snap["daemon"] = self.orchestrator is not None
        snap["last_event_id"] = last_event_id
        snap["server_time"] = self._clock()
        return snap

    def _feature_counts(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        key, features = self._feature_state()
        cached = self._counts_cache
        if cached is None or cached[0] != key:
            counts = {status: 0 for status in FEATURE_STATUSES}
            per_track: dict[str, dict[str, int]] = {name: dict.fromkeys(FEATURE_STATUSES, 0)
                                                    for name in self._track_names()}
            for feature in features:
                counts[feature.status] = counts.get(feature.status, 0) + 1
                bucket = per_track.setdefault(self._route(feature), dict.fromkeys(FEATURE_STATUSES, 0))
                bucket[feature.status] = bucket.get(feature.status, 0) + 1
            cached = self._counts_cache = (key, (counts, per_track))
        counts, per_track = cached[1]
        return dict(counts), {track: dict(c) for track, c in per_track.items()}

    def _complete_snapshot(self, snap: dict) -> None:
        """Fill what the dashboard shows and the orchestrator's snapshot may leave out."""
        counts, per_track = self._feature_counts()
        snap["counts"] = counts
        running = {row.get("track"): row for row in self.project.db.running_sessions()}
        for track in snap.get("tracks") or []:
            track.setdefault("counts", per_track.get(track.get("name"), {}))
            row = running.get(track.get("name"))
            if row is not None and not track.get("session_id"):
                track["session_id"] = row.get("id")
                track.setdefault("agent", row.get("agent"))
        if snap.get("eta_seconds") is None:
            active = sum(1 for t in snap.get("tracks") or [] if not t.get("paused")) or 1
            snap["eta_seconds"] = self._eta(snap["counts"], active) if snap.get("state") == "running" else None

    def _eta(self, counts: dict[str, int], active_tracks: int) -> float | None:
        """Remaining features x mean wall time per finished feature / tracks working in parallel."""
        now = self._clock()
        cached = self._eta_cache
        if cached is None or now - cached[0] > 5:
            rows, _ = self.project.db.list_sessions(limit=1000)
            spans: dict[int, list[float]] = {}
            for row in rows:
                if row.get("ended_at") and row.get("started_at"):
                    span = spans.setdefault(row["feature_id"], [row["started_at"], row["ended_at"]])
                    span[0] = min(span[0], row["started_at"])
                    span[1] = max(span[1], row["ended_at"])
            durations = [end - start for start, end in spans.values()]
            self._eta_cache = (now, sum(durations) / len(durations) if durations else None)
        mean = self._eta_cache[1]
        remaining = counts.get("open", 0) + counts.get("in_progress", 0) + counts.get("verifying", 0)
        if mean is None or remaining == 0:
            return None
        return round(remaining * mean / max(1, active_tracks), 1)

    def _offline_status(self) -> dict:
        counts, per_track = self._feature_counts()
        running = self.project.db.running_sessions()
        by_track = {row.get("track"): row for row in running}
        tracks = []
        for track in self.project.config.tracks:
            row = by_track.get(track.name)
            tracks.append({
                "name": track.name, "color": track.color, "phase": "idle", "paused": False,
                "paused_reason": None, "feature_id": row.get("feature_id") if row else None,
                "feature_name": None, "session_id": row.get("id") if row else None,
                "agent": row.get("agent") if row else None, "phase_started_at": None,
                "counts": per_track.get(track.name, {}),
            })
        totals = self.project.db.totals()
        return {"state": "offline", "tracks": tracks, "counts": counts,
                "cost_usd": totals.get("cost_usd") or 0.0,
                "tokens": {"input": totals.get("input_tokens") or 0,
                           "output": totals.get("output_tokens") or 0},
                "running_sessions": [session_summary(r) for r in running],
                "started_at": None, "eta_seconds": None}

    def _feature_item(self, feature: Any, latest: dict | None, by_id: dict) -> dict:
        """One feature of GET /api/features."""
        item = feature_to_dict(feature)
        item["route_track"] = self._route(feature)
        item["latest_session"] = session_summary(latest)
        item["waiting_on"] = waiting_on(feature, by_id) if feature.status == "open" else []
        return item

    def features(self) -> dict:
        latest = self.project.db.latest_session_by_feature()
        features = self._features()
        by_id = {f.id: f for f in features}
        items = [self._feature_item(feature, latest.get(feature.id), by_id) for feature in features]
        return {"features": items, "count": len(items)}

    def features_json(self) -> bytes:
        """GET /api/features as sent: exactly json_body(features()) - 2 MB with 2,000 features.
        Kept while neither features.json nor the sessions change; after a change the items are
        made again but only those that differ are encoded again (encoding is most of the work)."""
        key, features = self._feature_state()
        version = (key, self.project.db.sessions_version())
        with self._features_lock:
            cached = self._features_json
            if cached is not None and cached[0] == version:
                return cached[1]
            latest = self.project.db.latest_session_by_feature()
            by_id = {f.id: f for f in features}
            before = self._item_json
            kept: dict[int, tuple[dict, str]] = {}
            parts = []
            for feature in features:
                item = self._feature_item(feature, latest.get(feature.id), by_id)
                old = before.get(feature.id)
                text = old[1] if old is not None and old[0] == item else json.dumps(item, ensure_ascii=False,
                                                                                     default=str)
                kept[feature.id] = (item, text)
                parts.append(text)
            # the separators json.dumps uses by default: this is json_body(features())
            body = ('{"features": [' + ", ".join(parts) + f'], "count": {len(parts)}}}').encode("utf-8")
            self._item_json = kept
            self._features_json = (version, body)
            return body

    def feature(self, feature_id: int) -> dict:
        feature = self._find_feature(feature_id)
        item = feature_to_dict(feature)
        item["route_track"] = self._route(feature)
        item["latest_session"] = session_summary(
            self.project.db.latest_session_by_feature().get(feature_id))
        return {"feature": item}

    def sessions(self, query: dict[str, str]) -> dict:
        feature = query.get("feature")
        feature_id = _int_arg(feature, "feature", default=0, low=0) if feature not in (None, "") else None
        track = query.get("track") or None
        status = _choice_arg(query.get("status"), "status", tuple(s.value for s in SessionStatus))
        phase = _choice_arg(query.get("phase"), "phase", tuple(p.value for p in SessionPhase))
        limit = _int_arg(query.get("limit"), "limit", default=50, low=1, high=MAX_PAGE)
        offset = _int_arg(query.get("offset"), "offset", default=0, low=0)
        rows, total = self.project.db.list_sessions(feature_id=feature_id, track=track, status=status,
                                                    phase=phase, limit=limit, offset=offset)
        return {"sessions": [session_summary(r) for r in rows], "total": total,
                "limit": limit, "offset": offset}

    def _get_session(self, session_id: int) -> dict:
        row = self.project.db.get_session(session_id)
        if row is None:
            raise NotFound(f"no session with id {session_id}", "GET /api/sessions lists them")
        return row

    def session(self, session_id: int) -> dict:
        row = dict(self._get_session(session_id))
        row["live"] = row.get("status") == SessionStatus.RUNNING.value
        return {"session": row}

    def session_events(self, session_id: int, query: dict[str, str]) -> dict:
        row = self._get_session(session_id)
        after = _int_arg(query.get("after"), "after", default=0, low=0)
        limit = _int_arg(query.get("limit"), "limit", default=500, low=1, high=MAX_EVENTS_PAGE)
        events = self.project.db.session_events(session_id, after=after, limit=limit)
        next_after = events[-1]["id"] if events else after
        return {"session_id": session_id, "events": events, "after": after, "next_after": next_after,
                "more": len(events) == limit,
                "live": row.get("status") == SessionStatus.RUNNING.value}

    def config(self) -> dict:
        cfg = self.project.config
        source = getattr(cfg, "source", None)
        from .config import SETTINGS

        settings = [{"key": s.key, "type": s.type, "help": s.help, "secret": s.secret,
                     "choices": list(s.choices) if s.choices else None} for s in SETTINGS]
        return {"config": cfg.to_public_dict(), "source": str(source) if source else None,
                "warnings": list(getattr(self.project, "warnings", []) or []), "settings": settings}

    # ---------------------------------------------------------------- mutations
    def add_feature(self, body: Any) -> dict:
        data = _require_object(body, "POST /api/features")
        self._check_status_change(data.get("status"), None)
        feature = self.project.store.add(data)
        self._wake()
        return {"feature": feature_to_dict(feature)}

    def edit_feature(self, feature_id: int, body: Any) -> dict:
        changes = _require_object(body, f"PATCH /api/features/{feature_id}")
        if not changes:
            raise UsageError("PATCH with an empty object changes nothing",
                             'send the fields to change, e.g. {"description": "..."}')
        if "id" in changes and changes["id"] != feature_id:
            raise UsageError("a feature's id cannot be changed", "leave 'id' out of the body")
        current = self._find_feature(feature_id)
        self._check_status_change(changes.get("status"), current.status)
        feature = self.project.store.edit(feature_id, changes)
        self._wake()
        return {"feature": feature_to_dict(feature)}

    @staticmethod
    def _check_status_change(new: Any, old: str | None) -> None:
        if new is None or new == old:
            return
        if new not in USER_SETTABLE_STATUSES:
            raise UsageError(f"status {new!r} cannot be set from the API",
                             f"allowed: {', '.join(USER_SETTABLE_STATUSES)}; "
                             "use POST /api/features/{id}/retry to queue a feature again")

    def retry(self, feature_id: int, body: Any) -> dict:
        data = _require_object(body if body is not None else {}, f"POST /api/features/{feature_id}/retry")
        context = data.get("context")
        if context is not None and not isinstance(context, str):
            raise UsageError("'context' must be a string", '{"context": "the login test needs a db"}')
        self._find_feature(feature_id)
        control = self._control()
        self._on_loop(control.retry, feature_id, context or None)
        return {"ok": True, "feature_id": feature_id}

    def start(self) -> dict:
        control = self._control()
        self._on_loop(control.start)
        return {"ok": True, "state": control.snapshot().get("state")}

    def stop(self) -> dict:
        control = self._control()
        try:
            self._on_loop(control.stop)
        except concurrent.futures.TimeoutError:
            pass  # agents still stopping; the state says "stopping" and events follow
        return {"ok": True, "state": control.snapshot().get("state")}

    def pause_track(self, name: str, body: Any) -> dict:
        data = _require_object(body if body is not None else {}, f"POST /api/tracks/{name}/pause")
        reason = data.get("reason") or "paused by user"
        if not isinstance(reason, str):
            raise UsageError("'reason' must be a string", '{"reason": "waiting for the db"}')
        self._check_track(name)
        self._on_loop(self._control().pause_track, name, reason)
        return {"ok": True, "track": name, "paused": True}

    def resume_track(self, name: str) -> dict:
        self._check_track(name)
        self._on_loop(self._control().resume_track, name)
        return {"ok": True, "track": name, "paused": False}

    def _wake(self) -> None:
        if self.orchestrator is not None:
            self._on_loop(self.orchestrator.wake)


__all__ = ["Api", "feature_to_dict", "json_body", "session_summary"]
