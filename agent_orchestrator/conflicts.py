"""Merge conflicts seen before they happen: `git merge-tree` of each running feature branch against
the base branch and of each pair of running branches, and a watcher that announces new ones.
Also the pure overlap test of features' `touches` globs used by the scheduler."""
from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Sequence

from . import git
from .errors import GitError

log = logging.getLogger(__name__)

MIN_GIT = (2, 38)
_OID_RE = re.compile(r"(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
_WILDCARDS = "*?["


@dataclass(frozen=True)
class MergeTreeResult:
    tree: str
    clean: bool
    files: tuple[str, ...]


@dataclass(frozen=True)
class Prediction:
    feature_ids: tuple[int, ...]
    branches: tuple[str, ...]
    files: tuple[str, ...]
    against: str  # "base" | "feature"

    @property
    def key(self) -> tuple:
        return (frozenset(self.feature_ids), self.against, self.files)

    def to_event(self, base: str) -> dict:
        return {"feature_ids": list(self.feature_ids), "branches": list(self.branches),
                "files": list(self.files), "against": self.against, "base": base}


# ---------------------------------------------------------------- pure parsing

def parse_merge_tree(output: str, returncode: int) -> MergeTreeResult:
    """Parse `git merge-tree --write-tree --name-only --no-messages [-z]` output: the tree oid, then
    the conflicted paths (NUL- or newline-separated). Exit 0 = clean, 1 = conflicts; anything else,
    or output without a tree oid (git also exits 1 for a ref it cannot resolve), is an error."""
    sep = "\0" if "\0" in output else "\n"
    fields = output.split(sep)
    tree = fields[0].strip() if fields else ""
    if returncode not in (0, 1) or not _OID_RE.match(tree):
        raise ValueError(f"unexpected git merge-tree output (exit {returncode}): {output[:200]!r}")
    files = tuple(dict.fromkeys(f for f in fields[1:] if f))
    return MergeTreeResult(tree, returncode == 0, files if returncode == 1 else ())


def parse_git_version(text: str) -> tuple[int, ...]:
    """`git version 2.39.5` -> (2, 39, 5); () when unrecognised."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in m.groups() if g is not None) if m else ()


def _parents(paths: Iterable[str]) -> set[str]:
    return {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}


def paths_overlap(a: Iterable[str], b: Iterable[str]) -> bool:
    """Whether two sets of changed paths share a path, or one holds a directory of the other's."""
    sa, sb = set(a), set(b)
    return bool(sa & sb or sa & _parents(sb) or sb & _parents(sa))


# ---------------------------------------------------------------- touches (pure)

def _norm_glob(glob: str) -> str:
    g = glob.strip()
    while g.startswith("./"):
        g = g[2:]
    return g.rstrip("/")


def _literal_prefix(glob: str) -> str:
    idx = [glob.find(c) for c in _WILDCARDS if c in glob]
    return glob[: min(idx)] if idx else glob


def _literal_suffix(glob: str) -> str:
    idx = [glob.rfind(c) for c in "*?]" if c in glob]
    return glob[max(idx) + 1:] if idx else glob


def _is_glob(glob: str) -> bool:
    return any(c in glob for c in _WILDCARDS)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory + "/")


def glob_overlap(a: str, b: str) -> bool:
    """Could some path be touched by both? fnmatch semantics (`*` also crosses '/'). A plain path
    whose last part has no '.' may be a directory and also stands for everything under it. Globs
    are compared by their literal start and end, so the answer errs towards "overlap"."""
    a, b = _norm_glob(a), _norm_glob(b)
    if not a or not b:
        return not a and not b
    if a == b:
        return True
    wild_a, wild_b = _is_glob(a), _is_glob(b)
    if not wild_a and not wild_b:
        return _inside(a, b) or _inside(b, a)
    if not wild_b:
        a, b, wild_a, wild_b = b, a, wild_b, wild_a
    if not wild_a:  # a plain path against a glob
        if fnmatch.fnmatchcase(a, b):
            return True
        return _dir_like(a) and _globs_may_meet(a + "/*", b)
    return _globs_may_meet(a, b)


def _dir_like(path: str) -> bool:
    return "." not in path.rsplit("/", 1)[-1]


def _globs_may_meet(a: str, b: str) -> bool:
    pa, pb = _literal_prefix(a), _literal_prefix(b)
    sa, sb = _literal_suffix(a), _literal_suffix(b)
    return (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa))


def touches_overlap(a_globs: Sequence[str], b_globs: Sequence[str]) -> bool:
    """Whether two features' `touches` lists may name a common file. Empty lists never overlap."""
    return any(glob_overlap(a, b) for a in a_globs for b in b_globs)


def blocked_by_touches(feature, running_features: Iterable) -> int | None:
    """The id of a running feature whose `touches` overlap this feature's (the lowest such id), so
    the scheduler can hold this one back; None when nothing overlaps or it declares no touches."""
    mine = list(getattr(feature, "touches", None) or [])
    if not mine:
        return None
    hits = [f.id for f in running_features
            if f.id != feature.id and touches_overlap(mine, list(getattr(f, "touches", None) or []))]
    return min(hits) if hits else None


# ---------------------------------------------------------------- git

def git_supports_merge_tree(repo: Path) -> bool:
    return parse_git_version(git.git(repo, "version").stdout) >= MIN_GIT


def merge_tree(repo: Path, a: str, b: str) -> MergeTreeResult:
    """What merging `b` into `a` would give, computed without touching any checkout."""
    done = git.git(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", "-z",
                   git.check_ref(a), git.check_ref(b), check=False)
    if done.timed_out or done.returncode not in (0, 1):
        raise GitError(f"git merge-tree {a} {b} failed in {repo}: "
                       f"{(done.stderr.strip() or done.stdout.strip())[-300:] or done.returncode}")
    try:
        return parse_merge_tree(done.stdout, done.returncode)
    except ValueError:
        raise GitError(f"git merge-tree {a} {b} failed in {repo}: "
                       f"{done.stderr.strip()[-300:] or 'no tree in its output'}") from None


def changed_paths(repo: Path, base: str, branch: str) -> set[str]:
    """Paths the branch changed since it forked from base (no rename detection)."""
    done = git.git(repo, "diff", "--name-only", "--no-renames", "-z",
                   f"{git.check_ref(base)}...{git.check_ref(branch)}", "--")
    return set(git.parse_z_list(done.stdout))


def predict(repo: Path, base: str, branches: dict[int, str]) -> list[Prediction]:
    """Conflicts that merging the running branches would cause: each branch against the base
    branch, then each pair of branches against each other. Branches without commits ahead of base
    (or that no longer exist) are skipped. A pair's files already predicted against the base for
    one of the two are left out: two branches forked from different base commits see the base's
    changes as the other's, and the base conflict is what needs resolving first."""
    active: dict[int, str] = {}
    for fid, branch in sorted(branches.items()):
        if git.rev_parse(repo, branch) is not None and git.commits_ahead(repo, base, branch) > 0:
            active[fid] = branch
    predictions: list[Prediction] = []
    against_base: dict[int, set[str]] = {}
    for fid, branch in active.items():
        result = merge_tree(repo, base, branch)
        against_base[fid] = set(result.files)
        if result.files:
            predictions.append(Prediction((fid,), (branch,), result.files, "base"))
    ids = list(active)
    changed = {fid: changed_paths(repo, base, active[fid]) for fid in ids} if len(ids) > 1 else {}
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if not paths_overlap(changed[a], changed[b]):
                continue
            result = merge_tree(repo, active[a], active[b])
            files = tuple(f for f in result.files if f not in against_base[a] | against_base[b])
            if files:
                predictions.append(Prediction((a, b), (active[a], active[b]), files, "feature"))
    return predictions


# ---------------------------------------------------------------- the watcher

class ConflictWatcher:
    """Runs `predict` every `interval` seconds (in a worker thread) and publishes a `conflict`
    event for each prediction not announced yet; a prediction that disappears is forgotten, so it
    is announced again if it comes back."""

    def __init__(self, repo: Path, base: str, active_branches: Callable[[], dict[int, str]],
                 publish: Callable[[str, dict], None], interval: float,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 predictor: Callable[[Path, str, dict[int, str]], list[Prediction]] = predict):
        self.repo = Path(repo)
        self.base = base
        self.active_branches = active_branches
        self.publish = publish
        self.interval = interval
        self._sleep = sleep
        self._predict = predictor
        self._announced: dict[tuple, Prediction] = {}
        self._reported_errors: set[str] = set()
        self._supported: bool | None = None
        self._problem: str | None = None

    @property
    def current(self) -> list[Prediction]:
        return list(self._announced.values())

    def _compute(self, branches: dict[int, str]) -> list[Prediction] | None:
        """The predictions, or None when they could not be computed (reported once)."""
        if not branches:
            return []
        try:
            if self._supported is None:
                self._supported = git_supports_merge_tree(self.repo)
            if not self._supported:
                self._problem = ("conflict prediction needs git 2.38 or newer (git merge-tree "
                                 "--write-tree); it stays off until git is upgraded")
                return None
            return self._predict(self.repo, self.base, branches)
        except GitError as exc:
            self._problem = f"conflict prediction failed: {exc.message}"
            return None

    def _report(self) -> None:
        message, self._problem = self._problem, None
        if message and message not in self._reported_errors:
            self._reported_errors.add(message)
            log.warning("%s", message)
            self.publish("notice", {"level": "warning", "message": message})

    def _announce(self, predictions: list[Prediction] | None) -> list[Prediction]:
        self._report()
        if predictions is None:
            return []
        now = {p.key: p for p in predictions}
        new = [p for k, p in now.items() if k not in self._announced]
        self._announced = now
        for p in new:
            self.publish("conflict", p.to_event(self.base))
        return new

    def check_once(self) -> list[Prediction]:
        """One synchronous check; returns (and publishes) the predictions that are new."""
        return self._announce(self._compute(dict(self.active_branches())))

    async def run(self, stop_event: asyncio.Event) -> None:
        """Check every `interval` seconds until `stop_event` is set. git runs in a worker thread;
        events are published from the caller's loop."""
        while not stop_event.is_set():
            branches = dict(self.active_branches())
            predictions = await asyncio.to_thread(self._compute, branches) if branches else []
            if stop_event.is_set():
                break
            self._announce(predictions)
            await self._wait(stop_event)

    async def _wait(self, stop_event: asyncio.Event) -> None:
        if self._sleep is not asyncio.sleep:
            await self._sleep(self.interval)
            return
        try:
            await asyncio.wait_for(stop_event.wait(), self.interval)
        except asyncio.TimeoutError:
            pass
