"""One feature's way through the pipeline: implement → merge → verify → fix, until it passes, fails,
or has to wait (track paused, daemon stopping)."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import git, proc
from .agents.base import AgentRequest
from .appserver import AppServer
from .errors import OrchestratorError
from .failures import Failure
from .progress import append_outcome
from .prompts import numbered
from .ratelimits import agent_chain
from .sessions import SessionResult
from .verdict import parse_verdict

log = logging.getLogger(__name__)

CHECK_TAIL = 4000
BLOCKED_RETRY_SECONDS = 10.0


class Interrupted(Exception):
    """The feature must stop here and stay queued (daemon stopping, track paused)."""


class BudgetExceeded(Exception):
    """The feature's own budget is spent: it fails, its work stays on its branch."""


def budget_level(spent: float, limit: float, warn_at: float) -> str | None:
    if spent >= limit:
        return "reached"
    if spent >= limit * warn_at:
        return "warning"
    return None


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%H:%M:%S UTC")


@dataclass
class CheckResult:
    argv: list[str]
    exit_code: int | None
    reason: str
    tail: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        status = "passed" if self.ok else f"FAILED (exit {self.exit_code}, {self.reason})"
        return f"$ {' '.join(self.argv)}\n{status}\n{self.tail.strip()}".strip()


@dataclass
class VerifyReport:
    passed: bool
    summary: str
    text: str
    checks: list[CheckResult] = field(default_factory=list)


@dataclass
class MergeOutcome:
    kind: str  # merged | conflict | blocked
    files: list[str] = field(default_factory=list)
    sha: str | None = None


def feature_branch(feature) -> str:
    """The feature's branch: the one features.json records (a retry), else a new name."""
    existing = feature.raw.get("branch")
    if isinstance(existing, str) and git.valid_branch_name(existing) \
            and existing.startswith("feature/"):
        return existing
    return git.branch_name(feature.id, feature.name)


class FeatureJob:
    def __init__(self, orch, feature, track):
        self.orch = orch
        self.feature = feature
        self.track = track
        cfg = orch.config
        self.cfg = cfg
        self.base = cfg["baseBranch"]
        self.branch = feature_branch(feature)
        self.worktree: Path | None = None
        self.attempts = 0
        self.sessions = 0
        self.cost = float(feature.raw.get("cost_usd") or 0.0) if _is_number(
            feature.raw.get("cost_usd")) else 0.0
        self.retry_context = orch.take_retry_context(feature.id)
        self.resume: dict | None = self.retry_context.get("resume")
        self._last_wait: tuple | None = None
        self._new_branch = False  # the branch was created from the base branch by this job
        self._older_base = False  # see ensure_worktree
        self._identity: list[str] | None = None  # `-c user.*` options for the merges
        # commit_leftovers found nothing uncommitted in the worktree: the next merge attempt may
        # skip looking again (one-shot; an agent session in between clears it)
        self._clean_worktree = False
        # the track's turn (see hand_back_track): held from the claim until only git work is left
        self.background = False
        self.handed_back: asyncio.Future = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------------ entry point
    async def run(self) -> str:
        f, o = self.feature, self.orch
        o.set_status(f.id, "in_progress", branch=self.branch, failure_reason=None,
                     failure_category=None)
        await self.ensure_worktree()
        try:
            has_work = await asyncio.to_thread(self._has_work, self._new_branch)
            if not has_work and self._older_base:
                await asyncio.to_thread(self._catch_up_with_base)
            if not has_work or self.retry_context.get("reimplement"):
                if not await self.implement():
                    return self.feature_status()
            if self.cfg["verification.disabled"]:
                self.hand_back_track()  # merging needs no agent unless it conflicts
            max_attempts = int(self.cfg["verification.maxAttempts"])
            attempt = 0
            while True:
                attempt += 1
                if not await self.merge():
                    return self.feature_status()
                if self.cfg["verification.disabled"]:
                    return await self.finish_passed()
                report = await self.verify(attempt)
                if report.passed:
                    return await self.finish_passed()
                if attempt >= max_attempts:
                    return await self.finish_failed(
                        "verification", f"verification failed {attempt} time(s): {report.summary}")
                if not await self.fix(report, attempt, max_attempts):
                    return self.feature_status()
        except Interrupted:
            await self.requeue("interrupted")
            return "open"
        except BudgetExceeded as exc:
            return await self.finish_failed("budget", str(exc))

    async def ensure_worktree(self) -> None:
        """Create the worktree, or recreate it from the branch when the user deleted it."""
        if self.worktree is not None and self.worktree.exists():
            return
        # named by id: always a valid directory name, whatever branch features.json records
        first = self.worktree is None
        made = await self.orch.worktree_made_ahead(self.feature.id, self.branch) if first else None
        if made is not None:
            self.worktree, new_branch = made
        else:
            self.worktree, new_branch = await asyncio.to_thread(
                self.orch.worktrees.create_reporting, f"feature-{self.feature.id}", self.branch,
                self.base)
        self._new_branch = first and new_branch
        # not branched from the base branch just now: made while the previous agent worked, or
        # left by an earlier run (a stop, a crash) before any commit
        self._older_base = first and (made is not None or not new_branch)
        self.orch.prepare_worktree(self.worktree)

    def _catch_up_with_base(self) -> None:
        """A branch with no work of its own starts from the base branch as it is now."""
        if not git.fast_forward(self.worktree, self.base):
            log.info("feature #%s: %s could not be fast-forwarded to %s; the agent starts from "
                     "where it is", self.feature.id, self.branch, self.base)

    def _has_work(self, new_branch: bool = False) -> bool:
        """The branch has the agent's work: commits not on the base branch yet, or merged (or
        merged and reverted) before — an interrupted verification, a retry: implementing again
        would redo it. new_branch: the branch was just created from the base branch (no commit
        to count)."""
        if not new_branch and git.commits_ahead(self.orch.root, self.base, self.branch) > 0:
            return True
        return bool(self._applied() or self.orch.db.get_state(f"reverted:{self.feature.id}"))

    def feature_status(self) -> str:
        return self.orch.known_status(self.feature.id)

    # ------------------------------------------------------------------ the track's turn
    # A track runs one agent at a time: its turn. The job holds it from the claim while it may
    # need an agent; once only git work is left (merging with verification disabled, the cleanup
    # after a verdict) it hands the turn back and the track starts its next feature meanwhile.
    # Should the job need an agent again (a merge conflict), it waits for the turn first.
    def hand_back_track(self) -> None:
        if not self.background:
            self.background = True
            self.orch.end_turn(self.track)
        if not self.handed_back.done():
            self.handed_back.set_result(None)

    async def take_track(self) -> None:
        if self.background:
            await self.orch.begin_turn(self.track)
            self.background = False

    def phase(self, name: str) -> None:
        """Show what the job does on its track: only while it has the track's turn."""
        if not self.background:
            self.orch.set_phase(self.track, name, self.feature)

    # ------------------------------------------------------------------ phases
    async def implement(self) -> bool:
        retries = 0
        previous = self.retry_context.get("previous") or ""
        while True:
            await self.ensure_worktree()
            self.phase("implementing")
            prompt = self.render("implement", previous_attempt=previous)
            result = await self.agent_session("implement", prompt, self.worktree)
            failure = result.failure
            if result.ok:
                if self.cfg["verification.disabled"]:
                    self.hand_back_track()  # checking the commits and merging need no agent
                await self.commit_leftovers("implementation")
                if await asyncio.to_thread(self._has_work):
                    self.track.env_strikes = 0
                    return True
                failure = Failure("implementation",
                                  "the agent finished without committing any change", None, True)
            if not await self.handle_failure(failure, result):
                return False
            retries += 1
            if retries > int(self.cfg["agent.maxRetries"]):
                await self.finish_failed(failure.category, f"{failure.reason} (after "
                                         f"{retries} attempts)")
                return False
            previous = self.failure_context(failure, result)

    async def fix(self, report: VerifyReport, attempt: int, max_attempts: int) -> bool:
        retries = 0
        extra = ""
        while True:
            await self.ensure_worktree()
            self.orch.set_status(self.feature.id, "in_progress")
            self.phase("fixing")
            prompt = self.render("fix", verification_report=report.text, attempt=attempt,
                                 max_attempts=max_attempts, previous_attempt=extra)
            result = await self.agent_session("fix", prompt, self.worktree)
            if result.ok:
                await self.commit_leftovers("fix")
                self.track.env_strikes = 0
                return True
            if not await self.handle_failure(result.failure, result):
                return False
            retries += 1
            if retries > int(self.cfg["agent.maxRetries"]):
                await self.finish_failed(result.failure.category, result.failure.reason)
                return False
            extra = self.failure_context(result.failure, result)

    async def merge(self) -> bool:
        o = self.orch
        conflicts_fixed = 0
        while True:
            await self.ensure_worktree()
            self.phase("merging")
            # the feature's own worktree needs no lock: only the merge into the base branch does
            outcome = await asyncio.to_thread(self._merge_base_into_feature)
            if outcome is None:
                async with o.merge_lock:
                    outcome = await asyncio.to_thread(self._merge_locked)
            o.publish("merge", {"feature_id": self.feature.id, "branch": self.branch,
                                "base": self.base, "result": outcome.kind, "sha": outcome.sha,
                                "files": outcome.files})
            if outcome.kind == "merged":
                return True
            self._clean_worktree = False
            if outcome.kind == "blocked":
                self.phase("waiting")
                o.notice("warning", f"feature #{self.feature.id} waits to merge: your uncommitted "
                         f"changes in {', '.join(outcome.files)} would be overwritten by the "
                         f"merge into {self.base}. Commit or stash them; the merge is retried "
                         f"every {int(BLOCKED_RETRY_SECONDS)} s.", key=f"blocked-{self.feature.id}")
                await o.pause_point(BLOCKED_RETRY_SECONDS)
                continue
            if conflicts_fixed >= 1:
                await self.finish_failed(
                    "conflict", f"merge conflict with {self.base} in {', '.join(outcome.files)} "
                    "was not resolved")
                return False
            conflicts_fixed += 1
            self.phase("fixing")
            prompt = self.render("conflict", conflict_files="\n".join(
                f"- {name}" for name in outcome.files))
            result = await self.agent_session("conflict", prompt, self.worktree)
            await asyncio.to_thread(self._leave_no_merge_in_progress)
            if result.ok:
                await self.commit_leftovers("conflict resolution")

    def _merge_base_into_feature(self) -> MergeOutcome | None:
        """In the feature's worktree, without the merge lock (other tracks merge meanwhile): drop
        the agent's edits of the files the orchestrator owns, then merge the base branch into the
        feature branch, so that its conflicts are found and resolved there. None when it merged."""
        o = self.orch
        known_clean, self._clean_worktree = self._clean_worktree, False
        git.restore_paths_from(self.worktree, self.base, o.protected_paths(),
                               "orchestrator: drop changes to files the orchestrator owns",
                               worktree_clean=known_clean)
        self._identity = git.identity_args(self.worktree)
        outcome = self._merge_base_once()
        if outcome is None:
            self._clean_worktree = known_clean  # a merge into a clean worktree leaves it clean
        return outcome

    def _merge_base_once(self) -> MergeOutcome | None:
        o = self.orch
        into_feature = git.merge(self.worktree, self.base, no_ff=False, identity=self._identity,
                                 want_sha=False, message=f"Merge {self.base} into {self.branch}")
        if into_feature.ok:
            return None
        if into_feature.blocked_by_local_changes:
            git.commit_all(self.worktree, "wip: uncommitted agent changes",
                           exclude=o.protected_paths())
            return MergeOutcome("conflict", into_feature.blocked_by_local_changes)
        return MergeOutcome("conflict", into_feature.conflicts or ["(unknown files)"])

    def _merge_locked(self) -> MergeOutcome:
        """Runs in a worker thread while holding the project's merge lock: the merge into the base
        branch. The base branch may have moved since it was merged into the feature branch (other
        tracks merged meanwhile). In the daemon's own integration worktree git then merges three
        ways, and a conflict found there is aborted and handled like one found in the feature
        branch. A checkout of the user's never gets a merge that can conflict (`git merge
        --abort` may not give back uncommitted changes): there the base branch that moved is
        merged into the feature branch first, as always."""
        o = self.orch
        checkout = o.worktrees.integration_checkout(self.base, discard_changes=True)
        if Path(checkout).resolve() != o.worktrees.integration_dir \
                and not git.is_ancestor(self.worktree, self.base, "HEAD"):
            outcome = self._merge_base_once()
            if outcome is not None:
                return outcome
        if not self._reapply_reverted(checkout):
            return MergeOutcome("conflict", ["(re-applying the reverted earlier attempt)"])
        into_base = git.merge(checkout, self.branch, no_ff=True, identity=self._identity,
                              message=f"Merge feature #{self.feature.id}: {self.feature.name}")
        if into_base.ok:
            if into_base.sha and not into_base.up_to_date:
                self._record_applied(into_base.sha, "merge")
            return MergeOutcome("merged", sha=into_base.sha)
        if into_base.blocked_by_local_changes:
            return MergeOutcome("blocked", into_base.blocked_by_local_changes)
        return MergeOutcome("conflict", into_base.conflicts or ["(unknown files)"])

    # What this feature put on the base branch is recorded as it happens (state "applied:<id>"),
    # so that a failure reverts exactly that, and a retry re-applies exactly what was reverted.
    def _applied(self) -> list:
        return self.orch.db.get_state(f"applied:{self.feature.id}") or []

    def _record_applied(self, sha: str, kind: str) -> None:
        self.orch.db.set_state(f"applied:{self.feature.id}", [*self._applied(), [sha, kind]])

    def _reapply_reverted(self, checkout: Path) -> bool:
        """A failed attempt was reverted on the base branch; merging the branch again would not
        bring that back (git sees it as merged). Revert the reverts first, newest first."""
        key = f"reverted:{self.feature.id}"
        reverts = self.orch.db.get_state(key) or []
        while reverts:
            if not git.revert_commit(checkout, reverts[-1], f"Reapply feature #{self.feature.id}:"
                                     f" {self.feature.name} (retry)"):
                return False
            self._record_applied(git.rev_parse(checkout, "HEAD"), "commit")
            reverts.pop()
            self.orch.db.set_state(key, reverts)
        return True

    def _leave_no_merge_in_progress(self) -> None:
        if git.merge_in_progress(self.worktree):
            git.abort_merge(self.worktree)

    async def verify(self, attempt: int) -> VerifyReport:
        o, f = self.orch, self.feature
        o.set_status(f.id, "verifying")
        self.phase("verifying")
        await o.pause_point(float(self.cfg["verification.delayMs"]) / 1000.0)
        async with o.merge_lock:  # it may reset the checkout: never under another track's merge
            checkout = await asyncio.to_thread(o.worktrees.integration_checkout, self.base,
                                               discard_changes=True)
        o.prepare_worktree(checkout)
        server_command = self.cfg["verification.serverCommand"]
        if not server_command or checkout == o.root:
            return await self._verify_in(checkout, attempt, self.cfg["appUrl"])
        server = AppServer(list(server_command), checkout,
                           start_seconds=float(self.cfg["verification.serverStartSeconds"]),
                           grace=float(self.cfg["agent.killGraceSeconds"]))
        try:
            async with server:
                o.notice("info", f"feature #{f.id}: app for verification at {server.url}")
                return await self._verify_in(checkout, attempt, server.url)
        except OrchestratorError as exc:
            return VerifyReport(False, exc.message, exc.render())

    async def _verify_in(self, checkout: Path, attempt: int, app_url: str) -> VerifyReport:
        f = self.feature
        checks = []
        for argv in [*f.verify, *self.cfg["verification.commands"]]:
            checks.append(await self.run_check(list(argv), checkout))
        command_results = "\n\n".join(c.describe() for c in checks) or "(none configured)"
        prompt = self.render("verify", command_results=command_results, attempt=attempt,
                             app_url=app_url)
        result = await self.agent_session("verify", prompt, checkout)
        answer = (result.outcome.final_text if result.outcome else "") or ""
        verdict = parse_verdict(answer)
        failed_checks = [c for c in checks if not c.ok]
        if not result.ok:
            summary = f"the verifier failed: {result.failure.reason}"
        elif verdict.passed is None:
            summary = "verifier gave no verdict"
        elif not verdict.passed:
            steps = ", ".join(
                f"step {n}" + (f" ({verdict.steps[n][1]})" if verdict.steps[n][1] else "")
                for n in verdict.failed_steps)
            summary = f"verdict FAIL{': ' + steps if steps else ''}"
        elif failed_checks:
            summary = "verify command failed: " + "; ".join(
                f"{' '.join(c.argv)} (exit {c.exit_code})" for c in failed_checks)
        else:
            return VerifyReport(True, "verdict PASS", answer, checks)
        if failed_checks and "verify command failed" not in summary:
            summary += "; verify command failed: " + "; ".join(
                f"{' '.join(c.argv)} (exit {c.exit_code})" for c in failed_checks)
        text = f"{summary}\n\nVerifier's answer:\n{answer.strip() or '(empty)'}"
        if checks:
            text += f"\n\nChecks run by the orchestrator:\n{command_results}"
        return VerifyReport(False, summary, text, checks)

    async def run_check(self, argv: list[str], cwd: Path) -> CheckResult:
        tail: list[str] = []
        size = 0

        def keep(line: str) -> None:
            nonlocal size
            tail.append(line)
            size += len(line) + 1
            while size > CHECK_TAIL and len(tail) > 1:
                size -= len(tail.pop(0)) + 1

        started = time.monotonic()
        try:
            child = await proc.AgentProcess.start(argv, cwd=cwd, env=None, on_stdout=keep,
                                                  on_stderr=keep)
        except Exception as exc:  # a missing binary is a failed check, with its reason
            result = CheckResult(argv, None, "could not start", str(exc), 0.0)
        else:
            self.orch.register_child(child)
            try:
                info = await child.wait(timeout=float(self.cfg["verification.commandTimeoutSeconds"]),
                                        grace=float(self.cfg["agent.killGraceSeconds"]))
            finally:
                self.orch.unregister_child(child)
            if info.reason == "stopped":
                raise Interrupted()
            result = CheckResult(argv, info.returncode, info.reason, "\n".join(tail),
                                 time.monotonic() - started)
        self.orch.publish("check", {"feature_id": self.feature.id, "argv": argv,
                                    "exit_code": result.exit_code, "reason": result.reason,
                                    "duration": round(result.duration, 3),
                                    "tail": result.tail[-CHECK_TAIL:]})
        return result

    # ------------------------------------------------------------------ endings
    async def finish_passed(self) -> str:
        o, f = self.orch, self.feature
        self.hand_back_track()  # no agent from here on
        o.db.set_state(f"applied:{f.id}", [])  # kept for good: nothing left to revert or resume
        o.db.set_state(f"reverted:{f.id}", [])
        # pushing the base branch and removing the feature's worktree are independent
        push = asyncio.ensure_future(asyncio.to_thread(self._push_if_configured))
        try:
            await self.cleanup(delete_branch=bool(self.cfg["git.deleteMergedBranches"]))
        finally:
            await push
        o.set_status(f.id, "passed", attempts=self.attempts, cost_usd=round(self.cost, 6),
                     failure_reason=None, failure_category=None)
        self.record_progress("PASSED", None)
        return "passed"

    async def finish_failed(self, category: str, reason: str) -> str:
        o, f = self.orch, self.feature
        self.hand_back_track()  # no agent from here on
        if self.cfg["verification.revertOnFailure"]:
            async with o.merge_lock:
                reverted = await asyncio.to_thread(self._revert_merges)
            if reverted is False:
                o.notice("error", f"feature #{f.id}: its merge into {self.base} could not be "
                         "reverted automatically (conflict); revert it by hand")
        await self.cleanup(delete_branch=False)
        o.set_status(f.id, "failed", attempts=self.attempts, cost_usd=round(self.cost, 6),
                     failure_reason=reason, failure_category=category)
        self.record_progress("FAILED", reason)
        return "failed"

    def _revert_merges(self) -> bool | None:
        """Revert what this feature put on the base branch, newest first. None: nothing to do;
        False: a revert conflicted (aborted, reported)."""
        applied = self._applied()
        if not applied:
            return None
        checkout = self.orch.worktrees.integration_checkout(self.base, discard_changes=True)
        reverts = self.orch.db.get_state(f"reverted:{self.feature.id}") or []
        message = f"Revert feature #{self.feature.id}: {self.feature.name} (verification failed)"
        while applied:
            sha, kind = applied[-1]
            undo = git.revert_merge if kind == "merge" else git.revert_commit
            if not undo(checkout, sha, message):
                return False
            reverts.append(git.rev_parse(checkout, "HEAD"))
            applied.pop()
            self.orch.db.set_state(f"reverted:{self.feature.id}", reverts)
            self.orch.db.set_state(f"applied:{self.feature.id}", applied)
        return True

    def _push_if_configured(self) -> None:
        mode = self.cfg["git.push"]
        root = self.orch.root
        if mode == "never" or (mode == "auto" and not git.has_upstream(root, self.base)):
            return
        try:
            git.push(root, self.cfg["git.remote"], self.base)
        except Exception as exc:
            self.orch.notice("warning", f"push of {self.base} failed: {exc}")

    async def cleanup(self, *, delete_branch: bool) -> None:
        if self.worktree is None:
            return
        if self.worktree.exists():
            await asyncio.to_thread(self._commit_and_remove_worktree)
        else:
            await asyncio.to_thread(self._remove_worktree)
        self.worktree = None
        if delete_branch:
            await asyncio.to_thread(self.orch.worktrees.delete_branch, self.branch,
                                    merged_into=self.base)

    def _commit_and_remove_worktree(self) -> None:
        """commit_leftovers("final") then _remove_worktree, with one `git status` when the
        worktree is clean (the usual case)."""
        if git.merge_in_progress(self.worktree):
            git.abort_merge(self.worktree)
        known_clean, self._clean_worktree = self._clean_worktree, False
        if known_clean:
            self.orch.worktrees.remove(self.worktree, force=True)
            return
        protected = set(self.orch.protected_paths())
        leftovers = git.dirty_paths(self.worktree)
        if any(p.rstrip("/") not in protected for p in leftovers):
            git.commit_all(self.worktree, "orchestrator: commit changes left by the agent (final)",
                           exclude=self.orch.protected_paths())
            leftovers = git.dirty_paths(self.worktree)
        # clean, or only the agent's copies of files the orchestrator owns: those are disposable
        force = all(p.rstrip("/") in protected for p in leftovers)
        self.orch.worktrees.remove(self.worktree, force=force)

    def _remove_worktree(self) -> None:
        # What is left uncommitted now can only be the agent's copies of files the orchestrator
        # owns (commit_leftovers excludes them); those are disposable.
        protected = set(self.orch.protected_paths())
        leftovers = git.dirty_paths(self.worktree)
        force = bool(leftovers) and all(p.rstrip("/") in protected for p in leftovers)
        self.orch.worktrees.remove(self.worktree, force=force)

    async def requeue(self, why: str) -> None:
        """Keep everything the agent did on the branch; the feature goes back to the queue."""
        if self.worktree is not None and self.worktree.exists():
            await self.commit_leftovers(why)
        self.orch.set_status(self.feature.id, "open")

    def record_progress(self, outcome: str, reason: str | None) -> None:
        append_outcome(self.orch.config.path("progressFile"), feature=self.feature,
                       outcome=outcome, reason=reason, branch=self.branch,
                       attempts=self.attempts, sessions=self.sessions,
                       cost_usd=round(self.cost, 6) if self.cost else None,
                       when=dt.datetime.now(dt.timezone.utc))

    # ------------------------------------------------------------------ helpers
    async def agent_session(self, phase: str, prompt: str, cwd: Path) -> SessionResult:
        """Run one session with the first agent of the chain that is not rate-limited or
        unavailable; a rate limit moves on to the next agent or waits, and never counts as an
        attempt. Budgets are checked before and after; a slot of the agent's concurrency is held
        while it runs."""
        o, cfg, f = self.orch, self.cfg, self.feature
        chain = agent_chain(cfg["agent.preferred"], cfg["agent.fallbackAgents"], f.agent)
        self._clean_worktree = False
        await self.take_track()
        while True:
            o.check_running(self.track)
            self.check_budgets()
            agent, until = o.limits.pick(chain)
            if agent is None:
                await self.wait_for_agents(chain, until)
                continue
            if not o.slots.available(agent):
                self.phase("waiting")
            await o.slots.acquire(agent)
            try:
                result = await self._run_session(agent, phase, prompt, cwd)
            finally:
                o.slots.release(agent)
            if result.exit_reason == "stopped":
                raise Interrupted()
            if result.unavailable:
                if phase != "verify":
                    self.attempts -= 1
                reason = result.tail[-1] if result.tail else "not found"
                if o.limits.mark_unavailable(agent, reason):
                    o.notice("error", f"agent '{agent}' is unavailable: {reason}; skipping it")
                continue
            if result.failure and result.failure.category == "rate_limit":
                if phase != "verify":
                    self.attempts -= 1
                if result.outcome and result.outcome.session_id:
                    self.resume = {"agent": agent, "phase": phase,
                                   "session_id": result.outcome.session_id}
                o.slots.pressure(agent, f"rate limit: {result.failure.reason}")
                until = o.limits.mark_limited(agent, resets_at=result.failure.resets_at,
                                              reason=result.failure.reason)
                o.publish("rate_limit", {"agent": agent, "until": until, "waiting": False,
                                         "reason": result.failure.reason,
                                         "track": self.track.name})
                o.notice("warning", f"{agent} is rate-limited ({result.failure.reason}); "
                         f"not used until {_utc(until)}")
                continue
            o.limits.clear(agent)
            self.check_budgets()
            return result

    async def _run_session(self, agent: str, phase: str, prompt: str, cwd: Path) -> SessionResult:
        o, cfg, f = self.orch, self.cfg, self.feature
        if phase in ("implement", "fix", "conflict"):
            self.phase({"implement": "implementing"}.get(phase, "fixing"))
        if phase != "verify":
            self.attempts += 1
        resume = None
        if self.resume and self.resume["agent"] == agent and self.resume["phase"] == phase \
                and o.sessions.adapter_factory(agent, cfg).supports_resume:
            resume, self.resume = self.resume["session_id"], None
        per_feature = cfg["budget.perFeatureUsd"]
        request = AgentRequest(
            phase=phase, prompt=prompt, cwd=Path(cwd),
            max_turns=int(cfg["agent.maxTurnsVerification" if phase == "verify"
                              else "agent.maxTurnsImplementation"]),
            allowed_tools=cfg["agent.allowedToolsVerification"] if phase == "verify" else None,
            model=cfg["agent.model"], resume_session_id=resume,
            prompt_file=o.write_prompt_file(f.id, phase, prompt),
            max_budget_usd=round(max(per_feature - self.cost, 0.01), 4)
            if per_feature is not None else None)
        self.track.agent = agent
        o.agent_started(self.track)
        result = await o.sessions.run(agent=agent, request=request, feature_id=f.id,
                                      track=self.track.name, attempt=self.attempts)
        self.track.session_id = None
        self.sessions += 1
        if result.outcome and result.outcome.cost_usd:
            self.cost += result.outcome.cost_usd
        return result

    async def wait_for_agents(self, chain: list[str], until: float | None) -> None:
        o = self.orch
        if until is None:
            reasons = "; ".join(f"{a}: {o.limits.snapshot()['unavailable'].get(a, '?')}"
                                for a in chain)
            o.pause_track(self.track.name, f"no agent available ({reasons})")
            raise Interrupted()
        self.phase("waiting")
        if ("wait", until) != self._last_wait:
            self._last_wait = ("wait", until)
            o.rate_limit_waits += 1
            o.publish("rate_limit", {"agent": chain[0], "agents": chain, "until": until,
                                     "waiting": True, "track": self.track.name,
                                     "reason": "every agent of the chain is rate-limited"})
            o.notice("warning", f"all agents ({', '.join(chain)}) are rate-limited; track "
                     f"{self.track.name} waits until {_utc(until)}")
        await o.pause_point(max(0.0, until - o.clock()))

    def check_budgets(self) -> None:
        """Total budget reached: every track pauses, this feature goes back to the queue.
        Feature budget reached: the feature fails (BudgetExceeded)."""
        o, cfg = self.orch, self.cfg
        o.check_total_budget()
        limit = cfg["budget.perFeatureUsd"]
        if limit is None:
            return
        level = budget_level(self.cost, limit, cfg["budget.warnAt"])
        if level and (self.feature.id, level) not in o.budget_announced:
            o.budget_announced.add((self.feature.id, level))
            o.publish("budget", {"scope": "feature", "feature_id": self.feature.id,
                                 "limit_usd": limit, "spent_usd": round(self.cost, 6),
                                 "level": level})
            o.notice("warning" if level == "warning" else "error",
                     f"feature #{self.feature.id} has spent ${self.cost:.2f} of its "
                     f"${limit:.2f} budget (budget.perFeatureUsd)")
        if level == "reached":
            raise BudgetExceeded(f"budget.perFeatureUsd (${limit:.2f}) reached: "
                                 f"${self.cost:.2f} spent")

    async def handle_failure(self, failure: Failure, result: SessionResult) -> bool:
        """False when the feature must stop here (track paused: feature back to open)."""
        if failure.category == "environment":
            self.track.env_strikes += 1
            if self.track.env_strikes >= 2:
                reason = (f"2 environment failures in a row (last: {failure.reason}); fix the "
                          "environment, then resume the track")
                self.orch.pause_track(self.track.name, reason)
                await self.requeue("environment failure")
                self.orch.set_status(self.feature.id, "open", failure_reason=failure.reason,
                                     failure_category=failure.category)
                return False
        else:
            self.track.env_strikes = 0
        return True

    def failure_context(self, failure: Failure, result: SessionResult) -> str:
        tail = "\n".join(result.tail[-30:])
        state = "\n".join(f"{e.code} {e.path}" for e in git.status(self.worktree)[:40]) \
            if self.worktree and self.worktree.exists() else ""
        return ("## The previous attempt failed\n"
                f"Category: {failure.category}\nReason: {failure.reason}\n"
                + (f"\nLast output:\n```\n{tail}\n```\n" if tail else "")
                + (f"\nRepository state:\n```\n{state}\n```\n" if state else "")
                + "Continue from the current state of the branch and fix the cause.")

    def render(self, kind: str, **extra) -> str:
        o, f, cfg = self.orch, self.feature, self.cfg
        values = {
            "project_name": cfg["projectName"], "feature_id": f.id, "feature_name": f.name,
            "feature_category": f.category or "(none)",
            "feature_description": f.description or f.name,
            "feature_steps": numbered(f.steps), "branch": self.branch, "base_branch": self.base,
            "worktree": str(self.worktree or ""), "app_url": cfg["appUrl"],
            "instructions_file": self.instructions_path(), "features_file": cfg["featuresFile"],
            "progress_file": cfg["progressFile"], "attempt": 1,
            "max_attempts": cfg["verification.maxAttempts"], "previous_attempt": "",
            "verification_report": "", "command_results": "", "conflict_files": "",
            "docker_hint": o.docker_hint(self.worktree),
            "extra_context": self.retry_context.get("context") or "",
        }
        values.update(extra)
        return o.prompts.render(kind, values)

    def instructions_path(self) -> str:
        """The instructions file as the agent can reach it: relative when its checkout has it,
        else the project root's copy (e.g. written by init but not committed yet)."""
        name = self.cfg["instructionsFile"]
        if self.worktree is not None and not (self.worktree / name).exists() \
                and (self.orch.root / name).exists():
            return str(self.orch.root / name)
        return name

    async def commit_leftovers(self, why: str) -> None:
        if self.worktree is None or not self.worktree.exists():
            return
        await asyncio.to_thread(self._commit_leftovers_sync, why)

    def _commit_leftovers_sync(self, why: str) -> None:
        if git.merge_in_progress(self.worktree):
            git.abort_merge(self.worktree)
        if not git.status(self.worktree):
            # nothing to commit; and the merge that follows need not look at the worktree again
            self._clean_worktree = True
            return
        git.commit_all(self.worktree, f"orchestrator: commit changes left by the agent ({why})",
                       exclude=self.orch.protected_paths())



def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
