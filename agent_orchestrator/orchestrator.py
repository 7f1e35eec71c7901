"""The scheduler: one asyncio task per track, the one place feature statuses and track phases
change (each change is written and published as an event), and the control surface the API uses."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import signal
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from . import recovery, scheduler
from .errors import FeaturesError, OrchestratorError
from .pipeline import FeatureJob, Interrupted, feature_branch
from .prompts import PromptSet
from .concurrency import AgentSlots
from .conflicts import ConflictWatcher
from .pipeline import budget_level
from .ratelimits import AgentLimits
from .sandbox import sandbox_for
from .sessions import SessionRunner
from .states import can_transition
from .worktrees import Worktrees

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# Git work runs in threads (asyncio.to_thread). The default pool has min(32, CPUs + 4) threads:
# 6 on a 2-core machine, so 16 tracks finishing at once would queue their git calls behind 6.
MIN_WORKER_THREADS = 16


@dataclass
class TrackState:
    name: str
    color: str
    phase: str = "idle"
    paused: bool = False
    paused_reason: str | None = None
    feature_id: int | None = None
    feature_name: str | None = None
    session_id: int | None = None
    agent: str | None = None
    phase_started_at: float | None = None
    env_strikes: int = 0
    done: int = 0

    def public(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "env_strikes"}


class Orchestrator:
    def __init__(self, project, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] | None = None, env=None,
                 adapter_factory=None):
        self.project = project
        self.config = project.config
        self.root: Path = project.root
        self.store = project.store
        self.db = project.db
        self.bus = project.bus
        self.clock = clock
        self._sleep = sleep
        cfg = self.config
        self.rules = [scheduler.TrackRule(t.name, tuple(t.categories), t.is_default)
                      for t in cfg.tracks]
        self.tracks = {t.name: TrackState(t.name, t.color) for t in cfg.tracks}
        self.worktrees = Worktrees(project.root, project.state_dir,
                                   symlink_dirs=cfg["worktree.symlinkDirs"],
                                   copy_files=cfg["worktree.copyFiles"])
        self.prompts = PromptSet.load(project.root)
        self.limits = AgentLimits(base_wait=cfg["agent.rateLimitWaitMs"] / 1000.0,
                                  max_wait=cfg["agent.rateLimitMaxWaitMs"] / 1000.0, clock=clock)
        kwargs = {"adapter_factory": adapter_factory} if adapter_factory else {}
        self.sessions = SessionRunner(db=self.db, bus=self.bus, config=cfg, clock=clock,
                                      env=env, on_event=self._on_agent_event,
                                      sandbox=sandbox_for(cfg, env=env), **kwargs)
        self.slots = AgentSlots(
            maximum=lambda agent: cfg["agent.maxConcurrent"] or len(self.tracks),
            quiet_seconds=float(cfg["agent.pressureQuietSeconds"]), clock=clock,
            on_change=self._concurrency_changed)
        self.budget_announced: set = set()
        self._announced: frozenset = frozenset()
        self._jobs: dict[int, FeatureJob] = {}
        self.rate_limit_waits = 0
        self._stopping: asyncio.Future | None = None
        self.merge_lock = asyncio.Lock()
        self.state = "idle"
        self.started_at: float | None = None
        self._lock = threading.RLock()
        self._features: list | None = None
        self._status: dict[int, str] = {}
        self._names: dict[int, str] = {}
        self._claimed: set[int] = set()
        self._retry_context: dict[int, dict] = {}
        self._selected: set[int] | None = None
        self._only_tracks: set[str] | None = None
        self._stop = asyncio.Event()
        self._wakeups: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._children: set = set()
        self._noticed: set[str] = set()
        self._turns: dict[str, asyncio.Lock] = {}
        self._job_tasks: set[asyncio.Task] = set()
        # feature id -> (its branch, the making of its worktree): see agent_started
        self._ahead: dict[int, tuple[str, asyncio.Future]] = {}
        self._idle = asyncio.Event()
        self._exit_when_idle = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bad_features_reported = False
        self.outcomes: dict[int, str] = {}
        self._docker_wrappers: dict[str, Path] = {}
        self._executor_loop: asyncio.AbstractEventLoop | None = None

    # ================================================================ running
    async def run_until_idle(self, *, feature_ids=None, track_names=None) -> dict:
        """Headless `run`: process the open features (or the ones named) to the end."""
        self._selected = set(feature_ids) if feature_ids else None
        self._only_tracks = set(track_names) if track_names else None
        self._exit_when_idle = True
        await self.start()
        stop_task = asyncio.ensure_future(self._stop.wait())
        idle_task = asyncio.ensure_future(self._idle.wait())
        try:
            await asyncio.wait({stop_task, idle_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
            idle_task.cancel()
            await self.stop()
        return self.summary()

    async def serve(self, shutdown: asyncio.Event) -> None:
        """Daemon mode: idle until started; returns once `shutdown` is set and work is stopped."""
        self._loop = asyncio.get_running_loop()
        await shutdown.wait()
        await self.stop()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.state == "running":
            return
        if self._executor_loop is not self._loop:  # the loop shuts it down when it closes
            self._executor_loop = self._loop
            self._loop.set_default_executor(ThreadPoolExecutor(
                max_workers=max(MIN_WORKER_THREADS, 2 * len(self.tracks) + 4),
                thread_name_prefix="orchestrator"))
        self.recover()
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()
        self._stopping = None
        self.state = "running"
        self.started_at = self.clock()
        self._publish_status()
        for name, track in self.tracks.items():
            if self._only_tracks is not None and name not in self._only_tracks:
                continue
            self._wakeups[name] = asyncio.Event()
            self._turns[name] = asyncio.Lock()
            self._tasks[name] = asyncio.ensure_future(self._track_loop(track))
        if self.config["conflicts.enabled"]:
            watcher = ConflictWatcher(self.root, self.config["baseBranch"], self.active_branches,
                                      self.publish, float(self.config["conflicts.intervalSeconds"]))
            self._tasks["(conflict watcher)"] = asyncio.ensure_future(watcher.run(self._stop))

    async def stop(self) -> None:
        """Stop taking work, stop the agents, record everything. Safe to call again while a stop
        is under way: every caller returns once it is complete."""
        if self._stopping is None:
            if self.state != "running":
                return
            self._stopping = asyncio.ensure_future(self._stop_now())
        await asyncio.shield(self._stopping)

    async def _stop_now(self) -> None:
        self.state = "stopping"
        self._publish_status()
        self._stop.set()
        self.wake()
        for child in list(self._children):
            await child.terminate(grace=float(self.config["agent.killGraceSeconds"]))
        await self.sessions.stop_all()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        while self._job_tasks:  # features merging after their track went on
            await asyncio.gather(*list(self._job_tasks), return_exceptions=True)
        await self._drop_made_ahead()
        try:
            await asyncio.to_thread(self.worktrees.release_integration)
        except OrchestratorError as exc:
            self.notice("warning", f"the integration worktree was kept: {exc.message}")
        self.state = "idle"
        for track in self.tracks.values():
            self._set_track(track, phase="paused" if track.paused else "idle", feature=None)
        self._publish_status()

    async def _track_loop(self, track: TrackState) -> None:
        """Claim a feature, run it while it holds the track's turn; the turn comes back when
        the job needs no agent any more (see FeatureJob.hand_back_track), the job goes on."""
        wake = self._wakeups[track.name]
        while not self._stop.is_set():
            wake.clear()
            await self.begin_turn(track)
            feature = None if track.paused or self._stop.is_set() else self._claim_next(track)
            if feature is None:
                self.end_turn(track)
                if self._nothing_left():
                    self._announce_finished()
                    if self._exit_when_idle:
                        self._idle.set()
                        return
                await self._wait(wake, POLL_SECONDS)
                continue
            try:
                job = FeatureJob(self, feature, track)
            except Exception as exc:
                self._claimed.discard(feature.id)
                self.end_turn(track)
                self._internal_error(feature, exc)
                continue
            self._jobs[feature.id] = job
            task = asyncio.ensure_future(self._run_job(job))
            self._job_tasks.add(task)
            await job.handed_back

    async def _run_job(self, job: FeatureJob) -> None:
        feature, track = job.feature, job.track
        try:
            outcome = await job.run()
            self.outcomes[feature.id] = outcome
            track.done += 1
        except Interrupted:
            pass
        except Exception as exc:  # a bug or an unexpected git failure: report, keep the work
            self._internal_error(feature, exc)
        finally:
            self._jobs.pop(feature.id, None)
            self._claimed.discard(feature.id)
            self._job_tasks.discard(asyncio.current_task())
            job.hand_back_track()
            self.wake()

    # ---------------------------------------------------------------- the next worktree
    # While a track's agent works, the worktree of the feature the track would claim next is
    # made, so the track starts it without waiting for `git worktree add` (a checkout of the
    # whole tree). When it is claimed, its branch is fast-forwarded to the base branch as it is
    # then; a worktree made for a feature that is not claimed after all (features.json edited
    # meanwhile) is kept for when it is, and removed when the run stops.
    def agent_started(self, track: TrackState) -> None:
        if self._stop.is_set() or track.paused:
            return
        upcoming = self._peek_next(track.name)
        if upcoming is None or upcoming.id in self._ahead \
                or self.worktrees.path_for(f"feature-{upcoming.id}").exists():
            return
        branch = feature_branch(upcoming)
        self._ahead[upcoming.id] = (branch, asyncio.ensure_future(asyncio.to_thread(
            self.worktrees.create_reporting, f"feature-{upcoming.id}", branch,
            self.config["baseBranch"])))

    async def worktree_made_ahead(self, feature_id: int, branch: str) -> tuple[Path, bool] | None:
        """The worktree made ahead for the feature (the job brings it up to the base branch);
        None when there is none (the job then makes it as usual)."""
        entry = self._ahead.pop(feature_id, None)
        if entry is None:
            return None
        made_for, future = entry
        try:
            path, new_branch = await future
        except Exception as exc:  # noqa: BLE001 - the usual way reports what is wrong
            log.info("making the worktree of feature #%s ahead failed: %s", feature_id, exc)
            return None
        if made_for != branch:  # renamed in features.json meanwhile
            await asyncio.to_thread(self._remove_unused, path, made_for, new_branch)
            return None
        return path, new_branch

    async def _drop_made_ahead(self) -> None:
        while self._ahead:
            feature_id, (branch, future) = self._ahead.popitem()
            try:
                path, new_branch = await future
            except Exception:  # noqa: BLE001 - nothing was made
                continue
            await asyncio.to_thread(self._remove_unused, path, branch, new_branch)

    def _remove_unused(self, path: Path, branch: str, new_branch: bool) -> None:
        """A worktree made ahead and not used: removed, and its branch deleted when the daemon
        created it (it holds nothing of its own)."""
        try:
            self.worktrees.remove(path)
            if new_branch:
                self.worktrees.delete_branch(branch, merged_into=self.config["baseBranch"])
        except OrchestratorError as exc:
            log.warning("kept the unused worktree %s: %s", path, exc.message)

    async def begin_turn(self, track: TrackState) -> None:
        await self._turns[track.name].acquire()

    def end_turn(self, track: TrackState) -> None:
        self._set_track(track, phase="paused" if track.paused else "idle", feature=None)
        self._turns[track.name].release()

    def _internal_error(self, feature, exc: Exception) -> None:
        detail = exc.render() if isinstance(exc, OrchestratorError) else repr(exc)
        log.error("feature #%s failed with an internal error:\n%s", feature.id,
                  "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        self.notice("error", f"feature #{feature.id}: {detail}")
        try:
            self.set_status(feature.id, "failed", failure_reason=f"orchestrator error: {detail}",
                            failure_category="environment")
            self.outcomes[feature.id] = "failed"
        except Exception as store_exc:
            # the features file cannot be written (read-only, disk full): running on would pick
            # the same feature again and again; stop taking work and say why
            why = store_exc.render() if isinstance(store_exc, OrchestratorError) else repr(store_exc)
            for name, track in self.tracks.items():
                if not track.paused:
                    self.pause_track(name, f"cannot record feature statuses: {why}")

    def active_branches(self) -> dict[int, str]:
        """Branches of the features being worked on, for conflict prediction."""
        return {fid: job.branch for fid, job in list(self._jobs.items())}

    def _announce_finished(self) -> None:
        """Once per drained queue: the `run` event (and its notification)."""
        done = frozenset(self.outcomes.items())
        if not done or done == self._announced:
            return
        self._announced = done
        summary = self.summary()
        self.publish("run", {"state": "finished", "passed": summary["passed"],
                             "failed": summary["failed"], "blocked": summary["blocked"]})

    def _nothing_left(self) -> bool:
        if self._job_tasks:
            return False
        return all(track.paused or self._peek_next(name) is None
                   for name, track in self.tracks.items()
                   if self._only_tracks is None or name in self._only_tracks)

    async def _wait(self, event: asyncio.Event, timeout: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    # ================================================================ features
    def features(self) -> list:
        """The features as last read; re-read when features.json changed (a user's edit)."""
        with self._lock:
            if self._features is None or self.store.changed():
                try:
                    self._features = self.store.load()
                    self._bad_features_reported = False
                except FeaturesError as exc:
                    if not self._bad_features_reported:
                        self._bad_features_reported = True
                        self.notice("error", f"{exc.message} — keeping the last valid version "
                                    f"until it is fixed: {'; '.join(exc.problems[:5])}")
                    if self._features is None:
                        raise
                for f in self._features:
                    self._status[f.id] = f.status
                    self._names[f.id] = f.name
                self._apply_dependencies()
            return list(self._features)

    def _remember_written(self, feature_id: int, written: dict) -> None:
        """Keep the features as last read up to date with what set_status wrote, instead of
        re-reading and re-parsing features.json after every write."""
        if self._features is None:
            return
        for i, f in enumerate(self._features):
            if f.id == feature_id:
                raw = dict(f.raw)
                for key, value in written.items():
                    if value is None:
                        raw.pop(key, None)
                    else:
                        raw[key] = value
                self._features[i] = dataclasses.replace(f, status=raw.get("status", "open"),
                                                        raw=raw)
                return

    def _apply_dependencies(self) -> None:
        for fid, status, reason in scheduler.blocking_changes(self._features):
            if status == "open" and fid in self._claimed:
                continue
            self.set_status(fid, status, failure_reason=reason,
                            failure_category="dependency" if status == "blocked" else None,
                            _reload=False)

    def _peek_next(self, track_name: str):
        return scheduler.next_feature(self.features(), track_name, self.rules,
                                      claimed=self._claimed, selected=self._selected)

    def _claim_next(self, track: TrackState):
        with self._lock:
            feature = self._peek_next(track.name)
            if feature is not None:
                self._claimed.add(feature.id)
            return feature

    def known_status(self, feature_id: int) -> str:
        return self._status.get(feature_id, "open")

    def set_status(self, feature_id: int, status: str, *, _reload: bool = True, **fields) -> None:
        """The one place a feature's status changes: checked against the state machine, written
        to features.json (merged with the user's edits) and published."""
        with self._lock:
            name = self._names.get(feature_id)
            old = self._status.get(feature_id, "open")
            if not can_transition(old, status):
                raise OrchestratorError(f"internal: feature #{feature_id} cannot go from {old} "
                                        f"to {status}")
            fields = {"status": status, **fields,
                      "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            written = self.store.update(feature_id, fields)
            if "status" in written or not written:
                self._status[feature_id] = status if "status" in written else old
            if written:
                self._remember_written(feature_id, written)
                # what other features' statuses follow from this one (blocked, unblocked); a
                # change made in the file meanwhile is seen by store.changed() in features()
                if _reload and "status" in written and self._features is not None:
                    self._apply_dependencies()
        data = {"id": feature_id, "name": name, **fields}
        if written and "status" not in written:
            data["status"] = old
            data["note"] = "status kept: it was changed in the file meanwhile"
        self.publish("feature", data)

    def retry(self, feature_id: int, context: str | None = None) -> None:
        self.features()
        if feature_id not in self._status:
            from .errors import NotFound
            raise NotFound(f"no feature with id {feature_id}", "GET /api/features lists them")
        if feature_id in self._claimed:
            from .errors import Conflict
            raise Conflict(f"feature #{feature_id} is being processed right now",
                           "wait until it finishes, or stop the run first")
        self._retry_context[feature_id] = {"context": context, "reimplement": False}
        self.set_status(feature_id, "open", failure_reason=None, failure_category=None,
                        attempts=0)
        self.wake()

    def take_retry_context(self, feature_id: int) -> dict:
        return self._retry_context.pop(feature_id, {})

    # ================================================================ tracks
    def set_phase(self, track: TrackState, phase: str, feature=None) -> None:
        self._set_track(track, phase=phase, feature=feature)

    def _set_track(self, track: TrackState, *, phase: str, feature) -> None:
        changed = track.phase != phase or track.feature_id != (feature.id if feature else None)
        track.phase = phase
        track.feature_id = feature.id if feature else None
        track.feature_name = feature.name if feature else None
        if changed:
            track.phase_started_at = self.clock()
            self.publish("track", track.public())

    def pause_track(self, name: str, reason: str = "paused by user") -> None:
        track = self._track(name)
        track.paused = True
        track.paused_reason = reason
        if track.phase == "idle":
            track.phase = "paused"
        self.notice("warning", f"track {name} paused: {reason}")
        self.publish("track", track.public())
        self._save_tracks()

    def resume_track(self, name: str) -> None:
        track = self._track(name)
        track.paused = False
        track.paused_reason = None
        track.env_strikes = 0
        if track.phase == "paused":
            track.phase = "idle"
        self.publish("track", track.public())
        self._save_tracks()
        self.wake()

    def _save_tracks(self) -> None:
        """Kept for `status` after the process ended; every start begins with tracks running."""
        self.db.set_state("tracks", {n: {"paused": t.paused, "paused_reason": t.paused_reason}
                                     for n, t in self.tracks.items()})

    def _track(self, name: str) -> TrackState:
        if name not in self.tracks:
            from .errors import NotFound
            raise NotFound(f"no track named {name!r}",
                           f"tracks: {', '.join(self.tracks)}")
        return self.tracks[name]

    def check_running(self, track: TrackState) -> None:
        if self._stop.is_set() or track.paused:
            raise Interrupted()

    def wake(self) -> None:
        for event in self._wakeups.values():
            event.set()

    # ================================================================ economics
    def _on_agent_event(self, agent: str, event) -> None:
        """Rate-limit pressure an agent reports while it works shrinks its concurrency."""
        if event.kind == "retry":
            status = event.data.get("status")
            self.slots.pressure(agent, f"the CLI is retrying an API error ({status or 'error'})")
        elif event.kind == "rate_limit" and event.data.get("status") in ("allowed_warning",
                                                                         "rejected"):
            self.slots.pressure(agent, f"rate limit {event.data.get('status')}")

    def _concurrency_changed(self, agent: str, capacity: int, maximum: int, why: str) -> None:
        self.notice("info", f"{agent}: at most {capacity} of {maximum} sessions at once ({why})")

    def check_total_budget(self) -> None:
        limit = self.config["budget.totalUsd"]
        if limit is None:
            return
        spent = float(self.db.totals().get("cost_usd") or 0.0)
        level = budget_level(spent, limit, self.config["budget.warnAt"])
        if level and ("total", level) not in self.budget_announced:
            self.budget_announced.add(("total", level))
            self.publish("budget", {"scope": "total", "limit_usd": limit,
                                    "spent_usd": round(spent, 6), "level": level})
            if level == "warning":
                self.notice("warning", f"${spent:.2f} of the ${limit:.2f} budget spent "
                            "(budget.totalUsd)")
        if level == "reached":
            reason = (f"budget.totalUsd (${limit:.2f}) reached: ${spent:.2f} spent; raise it in "
                      "orchestrator.config.json and resume the tracks")
            for name, track in self.tracks.items():
                if not track.paused:
                    self.pause_track(name, reason)
            raise Interrupted()

    # ================================================================ helpers for jobs
    async def pause_point(self, seconds: float) -> None:
        """Wait `seconds` (through the injectable sleep), or less if the run is stopped."""
        if self._sleep is not None:
            await self._sleep(seconds)
        elif seconds > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), seconds)
            except asyncio.TimeoutError:
                pass
        if self._stop.is_set():
            raise Interrupted()

    def kill_now(self) -> None:
        """SIGKILL every agent and check process group at once (a second Ctrl-C: no grace)."""
        for child in [*self.sessions.active.values(), *self._children]:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def register_child(self, child) -> None:
        self._children.add(child)

    def unregister_child(self, child) -> None:
        self._children.discard(child)

    def protected_paths(self) -> list[str]:
        cfg = self.config
        paths = [cfg["featuresFile"], cfg["progressFile"], *cfg["worktree.symlinkDirs"],
                 *cfg["worktree.copyFiles"]]
        return [p for p in dict.fromkeys(paths) if p]

    def prepare_worktree(self, worktree: Path) -> None:
        if not self.config["worktree.dockerService"]:
            return
        from . import docker  # only for projects that run in a container
        path = docker.write_wrapper(worktree, self.root, self.config)
        if path is not None:
            self._docker_wrappers[str(worktree)] = path

    def docker_hint(self, worktree: Path | None) -> str:
        path = self._docker_wrappers.get(str(worktree)) if worktree else None
        if path is None:
            return ""
        from . import docker
        return docker.prompt_hint(path)

    def write_prompt_file(self, feature_id: int, phase: str, prompt: str) -> Path:
        folder = self.project.state_dir / "prompts"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"feature-{feature_id}-{phase}.md"
        path.write_text(prompt, encoding="utf-8")
        return path

    def publish(self, type_: str, data: dict) -> None:
        self.bus.publish(type_, data)

    def notice(self, level: str, message: str, *, key: str | None = None) -> None:
        """A message for the user; with `key`, reported once."""
        if key is not None:
            if key in self._noticed:
                return
            self._noticed.add(key)
        getattr(log, "error" if level == "error" else "warning")("%s", message)
        self.publish("notice", {"level": level, "message": message})

    def _publish_status(self) -> None:
        self.publish("status", {"state": self.state})

    # ================================================================ recovery
    def recover(self) -> None:
        recovery.recover(self)

    # ================================================================ reporting
    def snapshot(self) -> dict:
        """A copy of the live state, safe to call from any thread."""
        with self._lock:
            feats = self._features or []
            counts: dict[str, int] = {}
            for f in feats:
                counts[f.status] = counts.get(f.status, 0) + 1
            tracks = [t.public() for t in self.tracks.values()]
        totals = self.db.totals(since=None)
        return {"state": self.state, "started_at": self.started_at, "tracks": tracks,
                "counts": counts, "cost_usd": totals.get("cost_usd"),
                "tokens": {"input": totals.get("input_tokens"),
                           "output": totals.get("output_tokens")},
                "limits": self.limits.snapshot()}

    def summary(self) -> dict:
        feats = {f.id: f for f in self.features()}
        processed = {fid: feats[fid].status if fid in feats else out
                     for fid, out in self.outcomes.items()}
        return {"processed": processed,
                "passed": sorted(i for i, s in processed.items() if s == "passed"),
                "failed": sorted(i for i, s in processed.items() if s != "passed"),
                "paused_tracks": {n: t.paused_reason for n, t in self.tracks.items() if t.paused},
                "blocked": sorted(f.id for f in feats.values() if f.status == "blocked"
                                  and (self._selected is None or f.id in self._selected))}

