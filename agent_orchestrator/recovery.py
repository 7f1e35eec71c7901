"""Crash recovery: reconcile what a killed daemon left behind before any new work starts.

In order: end the processes the dead daemon started (agents, checks; its git commands are allowed
to finish first), mark its sessions interrupted, remove lock files a killed git left (only when no
live process can be holding them), undo half-done merges so the base branch and every checkout are
consistent, prune worktrees the user deleted, commit what interrupted agents left uncommitted to
their feature branches, and queue the interrupted features again with the context of the attempt.

Every process the daemon starts carries OWNER_ENV=<state dir> in its environment; that is how the
processes of a dead daemon are found again (only one daemon per project can hold the lock).
"""
from __future__ import annotations

import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from . import git

log = logging.getLogger(__name__)

OWNER_ENV = "AGENT_ORCHESTRATOR_OWNER"
PROC = Path("/proc")
LOCK_MIN_AGE = 2.0        # a lock younger than this may belong to a git that just started
GIT_FINISH_WAIT = 30.0    # how long a dead daemon's git commands may take to finish
LOCK_NAMES = ("index.lock", "HEAD.lock", "ORIG_HEAD.lock", "FETCH_HEAD.lock", "config.lock",
              "packed-refs.lock", "shallow.lock", "AUTO_MERGE.lock")
DAEMON_MERGE_PREFIXES = ("Merge feature #",)
_FEATURE_BRANCH = re.compile(r"feature/(\d+)-")


# ================================================================ processes
@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str
    comm: str
    start: int  # start time in clock ticks since boot (tells a reused pid apart)

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def read_process(pid: int, proc_dir: Path = PROC) -> ProcInfo | None:
    try:
        stat = (proc_dir / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    left, right = stat.find("("), stat.rfind(")")
    fields = stat[right + 2:].split()
    if left < 0 or len(fields) < 20:
        return None
    return ProcInfo(pid, int(fields[1]), int(fields[2]), fields[0], stat[left + 1:right],
                    int(fields[19]))


def process_table(proc_dir: Path = PROC) -> dict[int, ProcInfo]:
    table = {}
    try:
        entries = list(proc_dir.iterdir())
    except OSError:
        return table
    for entry in entries:
        if entry.name.isdigit():
            info = read_process(int(entry.name), proc_dir)
            if info is not None:
                table[info.pid] = info
    return table


def process_env(pid: int, proc_dir: Path = PROC) -> dict[str, str] | None:
    """The environment a process started with; None when it cannot be read (another user's)."""
    try:
        raw = (proc_dir / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def process_cwd(pid: int, proc_dir: Path = PROC) -> Path | None:
    try:
        return Path(os.readlink(proc_dir / str(pid) / "cwd"))
    except OSError:
        return None


def open_files(pid: int, proc_dir: Path = PROC) -> set[str] | None:
    folder = proc_dir / str(pid) / "fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    out = set()
    for name in names:
        try:
            out.add(os.readlink(folder / name))
        except OSError:
            continue
    return out


def ancestors(pid: int, table: Mapping[int, ProcInfo]) -> set[int]:
    out: set[int] = set()
    while pid in table and pid not in out and pid > 1:
        out.add(pid)
        pid = table[pid].ppid
    return out


def owned_processes(table: Mapping[int, ProcInfo], owner: str, *, exclude: set[int],
                    env_of: Callable[[int], Mapping[str, str] | None]) -> list[ProcInfo]:
    """Live processes whose environment says a daemon of this project started them."""
    out = []
    for info in table.values():
        if info.pid in exclude or not info.alive:
            continue
        env = env_of(info.pid)
        if env is not None and env.get(OWNER_ENV) == owner:
            out.append(info)
    return out


def is_git(comm: str) -> bool:
    return comm == "git" or comm.startswith("git-")


def end_orphans(owner: str, *, grace: float, git_wait: float = GIT_FINISH_WAIT,
                proc_dir: Path = PROC, self_pid: int | None = None,
                signal_group: Callable[[int, int], None] = os.killpg,
                signal_pid: Callable[[int, int], None] = os.kill,
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> list[int]:
    """End every process a dead daemon of this project left running; returns their pids.

    Process groups led by git (the daemon's git commands) may finish first (up to `git_wait`
    seconds), so a merge is not cut in the middle; the rest gets SIGTERM, then SIGKILL after
    `grace`. Groups this process or its ancestors belong to are never signalled as a whole."""
    self_pid = os.getpid() if self_pid is None else self_pid
    table = process_table(proc_dir)
    mine = ancestors(self_pid, table) | {self_pid}
    # this process's own children (e.g. a git command of the web API) are not orphans
    children = {pid for pid in table if self_pid in ancestors(pid, table) - {pid}}
    orphans = owned_processes(table, owner, exclude=mine | children,
                              env_of=lambda pid: process_env(pid, proc_dir))
    if not orphans:
        return []
    protected_groups = {table[p].pgid for p in mine if p in table}
    ids = {(p.pid, p.start) for p in orphans}

    def living() -> list[ProcInfo]:
        now = [read_process(pid, proc_dir) for pid, _ in ids]
        return [p for p in now if p is not None and p.alive and (p.pid, p.start) in ids]

    def git_led(p: ProcInfo) -> bool:
        leader = table.get(p.pgid)
        return leader is not None and is_git(leader.comm) and (leader.pid, leader.start) in ids

    deadline = clock() + git_wait
    while clock() < deadline and any(git_led(p) for p in living()):
        sleep(0.05)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = living()
        if not left:
            break
        for group in {p.pgid for p in left} - protected_groups:
            _quietly(signal_group, group, sig)
        for p in left:
            if p.pgid in protected_groups:
                _quietly(signal_pid, p.pid, sig)
        end = clock() + (grace if sig == signal.SIGTERM else 5.0)
        while clock() < end and living():
            sleep(0.02)
    return sorted(pid for pid, _ in ids)


def _quietly(send: Callable[[int, int], None], target: int, sig: int) -> None:
    try:
        send(target, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ================================================================ stale git locks
def lock_files(common_dir: Path) -> list[Path]:
    """Lock files git may leave behind in the repository's metadata (all worktrees)."""
    dirs = [common_dir, *sorted(p for p in (common_dir / "worktrees").glob("*") if p.is_dir())]
    found = [d / name for d in dirs for name in LOCK_NAMES if (d / name).is_file()]
    for folder in ("refs", "logs"):
        root = common_dir / folder
        if root.is_dir():
            found += sorted(p for p in root.rglob("*.lock") if p.is_file())
    for d in dirs[1:]:
        for folder in ("refs", "logs"):
            if (d / folder).is_dir():
                found += sorted(p for p in (d / folder).rglob("*.lock") if p.is_file())
    return found


def lock_holders(lock: Path, repo_dirs: Iterable[Path], table: Mapping[int, ProcInfo], *,
                 files_of: Callable[[int], set[str] | None],
                 cwd_of: Callable[[int], Path | None], self_pid: int) -> list[str]:
    """Why a lock may still be in use: a live process has it open, or a git process works in the
    repository (or one whose directory cannot be read, to be safe)."""
    dirs = [Path(d).resolve() for d in repo_dirs]
    target = str(lock)
    holders = []
    for info in table.values():
        if info.pid == self_pid or not info.alive:
            continue
        files = files_of(info.pid)
        if files is not None and target in files:
            holders.append(f"pid {info.pid} ({info.comm}) has it open")
            continue
        if is_git(info.comm):
            cwd = cwd_of(info.pid)
            if cwd is None:
                holders.append(f"git process {info.pid} may be using it")
            elif any(cwd == d or d in cwd.parents for d in dirs):
                holders.append(f"git process {info.pid} runs in {cwd}")
    return holders


def clear_stale_locks(common_dir: Path, repo_dirs: Iterable[Path], *,
                      min_age: float = LOCK_MIN_AGE, proc_dir: Path = PROC,
                      now: Callable[[], float] = time.time,
                      sleep: Callable[[float], None] = time.sleep,
                      ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Remove lock files no live process can hold; returns (removed, [(kept, why)]).

    A lock is removed only when no process has it open, no git process works in the repository,
    it is at least `min_age` seconds old (waiting for that when it is younger), and it is still
    the same file at the moment of removal."""
    repo_dirs = list(repo_dirs)
    removed: list[Path] = []
    kept: list[tuple[Path, str]] = []
    locks = lock_files(common_dir)
    if not locks:
        return removed, kept
    stats = {}
    for lock in locks:
        try:
            stats[lock] = lock.stat()
        except FileNotFoundError:
            continue
    wait = max(min_age - (now() - st.st_mtime) for st in stats.values()) if stats else 0.0
    if wait > 0:
        sleep(min(wait, min_age))
    table = process_table(proc_dir)
    self_pid = os.getpid()
    for lock, st in stats.items():
        holders = lock_holders(lock, repo_dirs, table, self_pid=self_pid,
                               files_of=lambda pid: open_files(pid, proc_dir),
                               cwd_of=lambda pid: process_cwd(pid, proc_dir))
        if holders:
            kept.append((lock, "; ".join(holders)))
            continue
        try:
            again = lock.stat()
        except FileNotFoundError:
            continue
        if (again.st_ino, again.st_mtime_ns) != (st.st_ino, st.st_mtime_ns):
            kept.append((lock, "it changed while it was checked"))
            continue
        if now() - again.st_mtime < min_age:
            kept.append((lock, f"it is younger than {min_age:g} s"))
            continue
        lock.unlink()
        removed.append(lock)
    return removed, kept


# ================================================================ half-done operations
def _pseudo_ref(repo: Path, name: str) -> str | None:
    done = git.git(repo, "rev-parse", "-q", "--verify", f"{name}^{{commit}}", check=False)
    return done.stdout.strip() if done.ok else None


def _git_path(repo: Path, name: str) -> Path:
    out = git.git(repo, "rev-parse", "--git-path", name).stdout.strip()
    return (Path(repo) / out).resolve()


def operation_in_progress(repo: Path) -> str | None:
    """"merge", "revert", "cherry-pick", "rebase" or None."""
    for name, op in (("MERGE_HEAD", "merge"), ("REVERT_HEAD", "revert"),
                     ("CHERRY_PICK_HEAD", "cherry-pick")):
        if _pseudo_ref(repo, name):
            return op
    if any(_git_path(repo, d).is_dir() for d in ("rebase-merge", "rebase-apply")):
        return "rebase"
    return None


def started_by_daemon(repo: Path, op: str) -> bool:
    """Whether the merge/revert in progress in a user's checkout is one the daemon started."""
    if op == "merge":
        try:
            first = _git_path(repo, "MERGE_MSG").read_text(encoding="utf-8").splitlines()[:1]
        except OSError:
            return False
        return bool(first) and first[0].startswith(DAEMON_MERGE_PREFIXES)
    if op == "revert":
        sha = _pseudo_ref(repo, "REVERT_HEAD")
        subject = git.git(repo, "log", "-1", "--format=%s", sha, "--").stdout.strip() if sha else ""
        return subject.startswith(DAEMON_MERGE_PREFIXES)
    return False


def _merge_completed(repo: Path) -> bool:
    """MERGE_HEAD is already part of HEAD: git committed the merge, then died (e.g. of SIGPIPE
    writing to a dead daemon) before it cleaned up its merge state."""
    sha = _pseudo_ref(repo, "MERGE_HEAD")
    return bool(sha) and git.is_ancestor(repo, sha, "HEAD")


def undo_operation(repo: Path, op: str) -> None:
    """Abort a merge/revert/cherry-pick/rebase; the branch stays where it was before it."""
    if op == "merge":
        git.abort_merge(repo)
        return
    git.git(repo, op, "--abort", check=False)
    if operation_in_progress(repo) is not None:
        git.git(repo, "reset", "--merge")


def staged_merge_of(repo: Path, candidates: Iterable[str]) -> str | None:
    """The branch whose merge into HEAD is what the index holds, when a merge was killed after it
    staged its result and before it committed (no MERGE_HEAD then, e.g. in a pre-merge-commit
    hook). Unstaged changes do not matter; anything else staged makes this None."""
    done = git.git(repo, "write-tree", check=False)
    head = git.git(repo, "rev-parse", "-q", "--verify", "HEAD^{tree}", check=False)
    if not done.ok or not head.ok or done.stdout.strip() == head.stdout.strip():
        return None
    index_tree = done.stdout.strip()
    for branch in candidates:
        if not git.valid_branch_name(branch):
            continue
        merged = git.git(repo, "merge-tree", "--write-tree", "HEAD", git.check_ref(branch),
                         check=False)
        if merged.returncode == 0 and merged.stdout.split("\n", 1)[0].strip() == index_tree:
            return branch
    return None


def feature_branches(repo: Path, limit: int = 500) -> list[str]:
    out = git.git(repo, "for-each-ref", f"--count={limit}", "--sort=-committerdate",
                  "--format=%(refname:short)", "refs/heads/feature/").stdout
    return [line for line in out.splitlines() if line]


# ================================================================ the whole recovery
@dataclass
class RecoveryReport:
    orphans: list[int] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)
    removed_locks: list[str] = field(default_factory=list)
    kept_locks: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    committed: dict[str, str] = field(default_factory=dict)
    requeued: list[int] = field(default_factory=list)

    def summary(self) -> str | None:
        parts = []
        if self.orphans:
            parts.append(f"ended {len(self.orphans)} process(es) left running")
        if self.sessions:
            parts.append(f"marked {len(self.sessions)} session(s) interrupted")
        if self.removed_locks:
            parts.append(f"removed stale git lock(s) {', '.join(self.removed_locks)}")
        if self.undone:
            parts.append(f"undid {', '.join(self.undone)}")
        if self.committed:
            parts.append("committed uncommitted work on " + ", ".join(self.committed))
        if self.requeued:
            parts.append("queued again feature(s) " + ", ".join(f"#{i}" for i in self.requeued))
        return "recovered from an interrupted run: " + "; ".join(parts) if parts else None


def mark_owner(state_dir: Path) -> str:
    """Tag this process's environment so every child it starts can be found again."""
    owner = str(Path(state_dir).resolve())
    os.environ[OWNER_ENV] = owner
    return owner


def recover(orch) -> RecoveryReport:
    """Reconcile what a crash or kill left behind; called before a run starts taking work."""
    report = RecoveryReport()
    cfg = orch.config
    owner = mark_owner(orch.project.state_dir)
    report.orphans = end_orphans(owner, grace=float(cfg["agent.killGraceSeconds"]))
    interrupted = orch.db.mark_interrupted(orch.clock())
    report.sessions = [s["id"] for s in interrupted]
    wt = orch.worktrees
    wt.prune()
    infos = wt.list()
    common = git.common_dir(orch.root)
    removed, kept = clear_stale_locks(common, [orch.root, common, *(i.path for i in infos)])
    report.removed_locks = [str(p) for p in removed]
    for lock, why in kept:
        report.kept_locks.append(str(lock))
        orch.notice("warning", f"git lock {lock} was left in place: {why}. If no git command is "
                    "running, delete it by hand.")
    _settle_checkouts(orch, infos, report)
    _requeue(orch, interrupted, report)
    message = report.summary()
    if message:
        orch.notice("info", message)
    return report


def _settle_checkouts(orch, infos, report: RecoveryReport) -> None:
    """Undo what an interrupted merge or revert left in each checkout the daemon merges in, then
    commit what interrupted agents left in their feature worktrees."""
    wt = orch.worktrees
    base = orch.config["baseBranch"]
    root = Path(orch.root).resolve()
    for info in infos:
        path = Path(info.path)
        if not path.is_dir():
            continue
        resolved = path.resolve()
        if wt.worktrees_dir in resolved.parents:
            kind = "feature"
        elif resolved == wt.integration_dir:
            kind = "integration"
        elif info.branch == base:
            kind = "base"  # the user's checkout of the base branch: the daemon merges there
        else:
            continue
        op = operation_in_progress(path)
        if op is not None:
            if kind != "base" or started_by_daemon(path, op):
                done = op == "merge" and _merge_completed(path)
                undo_operation(path, op)
                report.undone.append(f"the leftover state of a completed merge in {path}" if done
                                     else f"a half-done {op} in {path}")
            else:
                orch.notice("warning", f"a {op} is in progress in {path}; finish or abort it "
                            f"(the daemon cannot merge into {info.branch} meanwhile)")
        else:
            candidates = [base] if kind == "feature" else feature_branches(root)
            branch = staged_merge_of(path, candidates)
            if branch is not None:
                git.git(path, "reset", "-q", "--merge", "HEAD")
                report.undone.append(f"the staged merge of {branch} in {path}")
        if kind == "integration" and git.dirty_paths(path):
            git.git(path, "reset", "-q", "--hard")
            git.git(path, "clean", "-q", "-fd")
        if kind != "feature":
            continue
        if _FEATURE_BRANCH.match(info.branch or "") is None:
            if git.dirty_paths(path):
                orch.notice("warning", f"worktree {path} is not on a feature branch ("
                            f"{info.branch or 'detached HEAD'}); its changes were left as they are")
            continue
        sha = git.commit_all(path, "orchestrator: commit work left by an interrupted session",
                             exclude=orch.protected_paths())
        if sha:
            report.committed[info.branch] = sha


def _requeue(orch, interrupted: list[dict], report: RecoveryReport) -> None:
    by_feature = {s["feature_id"]: s for s in interrupted}
    latest = orch.db.latest_session_by_feature()
    for feature in orch.features():
        session = by_feature.get(feature.id)
        if feature.status in ("in_progress", "verifying"):
            orch._retry_context[feature.id] = retry_context(
                orch, feature, session, crashed=True, status=feature.status)
            orch.set_status(feature.id, "open")
            report.requeued.append(feature.id)
        elif feature.status == "open" and feature.id not in orch._retry_context:
            last = latest.get(feature.id)
            if last is not None and last.get("status") == "interrupted":
                orch._retry_context[feature.id] = retry_context(
                    orch, feature, last, crashed=False, status="open")


def retry_context(orch, feature, session: dict | None, *, crashed: bool, status: str) -> dict:
    """What the next attempt starts from: a note about the interrupted attempt, and the agent's
    own session to resume when the CLI reported its id before it was interrupted."""
    context = {"context": interrupted_context(orch, feature, session, crashed=crashed,
                                              status=status)}
    if session is not None and session.get("agent_session_id"):
        context["resume"] = {"agent": session["agent"], "phase": session["phase"],
                             "session_id": session["agent_session_id"]}
    return context


def interrupted_context(orch, feature, session: dict | None, *, crashed: bool,
                        status: str) -> str:
    """The note given to the next attempt: what was interrupted and what the branch holds."""
    base = orch.config["baseBranch"]
    branch = feature.raw.get("branch")
    how = "the orchestrator was killed" if crashed else "the run was stopped"
    if session is not None:
        what = (f"The previous {session['phase']} session (agent {session['agent']}, attempt "
                f"{session.get('attempt') or '?'}) was interrupted before it finished ({how}).")
    else:
        what = f"The previous attempt was interrupted while the feature was {status} ({how})."
    lines = ["## The previous attempt was interrupted", what]
    if isinstance(branch, str) and git.valid_branch_name(branch) and \
            git.branch_exists(orch.root, branch):
        log_text = git.git(orch.root, "log", "--oneline", "-n", "15", f"{base}..{branch}", "--",
                           check=False).stdout.strip()
        if log_text:
            lines += [f"Its work so far is committed on {branch}:", "```", log_text, "```"]
        elif git.is_ancestor(orch.root, branch, base):
            lines.append(f"Its work on {branch} is already merged into {base}.")
    lines.append("Continue from the current state of the branch: check what is already done, "
                 "finish what is missing, and commit.")
    return "\n".join(lines)
