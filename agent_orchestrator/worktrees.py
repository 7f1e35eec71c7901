"""Worktree lifecycle: one worktree per feature branch under <state_dir>/worktrees/, and the
integration checkout where feature branches are merged into the base branch.

The user's checkout (the project root) is never switched, stashed, reset or cleaned.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import git
from .errors import GitError, OrchestratorError

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class WorktreeInfo:
    path: Path
    branch: str | None  # short name; None when detached
    head: str | None
    prunable: bool = False


def parse_worktree_list(text: str) -> list[WorktreeInfo]:
    """Parse `git worktree list --porcelain`."""
    infos: list[WorktreeInfo] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        if "worktree" not in fields:
            continue
        branch = fields.get("branch")
        if branch and branch.startswith("refs/heads/"):
            branch = branch[len("refs/heads/"):]
        infos.append(WorktreeInfo(Path(fields["worktree"]), branch or None, fields.get("HEAD"),
                                  "prunable" in fields))
    return infos


def _shared_entry(entry: str, setting: str) -> str:
    p = str(entry).strip().rstrip("/")
    if not p or os.path.isabs(p) or ".." in Path(p).parts or p.startswith("-") or p == ".":
        raise OrchestratorError(f"invalid entry {entry!r} in {setting}",
                                "use a path relative to the project root, without '..'")
    return p


class Worktrees:
    def __init__(self, project_root: Path, state_dir: Path, *, symlink_dirs: Sequence[str] = (),
                 copy_files: Sequence[str] = ()):
        self.project_root = Path(project_root).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.worktrees_dir = self.state_dir / "worktrees"
        self.integration_dir = self.state_dir / "integration"
        self.symlink_dirs = [_shared_entry(d, "worktree.symlinkDirs") for d in symlink_dirs]
        self.copy_files = [_shared_entry(f, "worktree.copyFiles") for f in copy_files]
        # git commands that add or remove worktrees read every worktree's administrative files
        # and fail on one being added meanwhile ("failed to read .../commondir"): they run one
        # at a time
        self._lock = threading.RLock()
        self._common_dir: Path | None = None
        # base branch -> the checkout merges went into last time, re-checked cheaply on each use
        self._checkouts: dict[str, Path] = {}

    # ------------------------------------------------------------ queries
    def list(self) -> list[WorktreeInfo]:
        out = git.git(self.project_root, "worktree", "list", "--porcelain").stdout
        return parse_worktree_list(out)

    def prune(self) -> None:
        git.git(self.project_root, "worktree", "prune")

    def path_for(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise OrchestratorError(f"invalid worktree name {name!r}",
                                    "use letters, digits, '.', '_' and '-' only")
        return self.worktrees_dir / name

    # ------------------------------------------------------------ feature worktrees
    def create(self, name: str, branch: str, base: str) -> Path:
        """The worktree for `branch` (reused when one exists under the state dir), creating the
        branch from `base` when missing; shared dirs/files linked or copied in, never committable."""
        return self.create_reporting(name, branch, base)[0]

    def create_reporting(self, name: str, branch: str, base: str) -> tuple[Path, bool]:
        """create(), and whether the branch was new: created from `base` just now, so without
        any commit of its own."""
        target = self.path_for(name)
        if not git.valid_branch_name(branch):
            raise OrchestratorError(f"invalid branch name {branch!r} for worktree {name}")
        self._exclude_state_dir()
        if not (target.exists() or target.is_symlink()):
            # The usual case, in one git call: a new branch from base in a new worktree. Anything
            # unusual (the branch exists or is checked out elsewhere, base is missing, a stale
            # registration) makes git refuse, and the careful way below sorts it out.
            with self._lock:
                done = git.git(self.project_root, "worktree", "add", "--quiet", "--no-track",
                               "-b", branch, "--", str(target), git.check_ref(base), check=False)
                if done.ok:
                    self._share_files(target)
                    return target, True
        with self._lock:
            existing = self._worktree_of(branch)
            if existing is not None:
                if not self._owned(existing.path):
                    raise OrchestratorError(
                        f"branch {branch} is checked out in {existing.path}",
                        f"switch that checkout to another branch so the daemon can use {branch}")
                self._share_files(existing.path)
                return existing.path, False
            if target.exists() or target.is_symlink():
                self._refuse_foreign_dir(target)
            new_branch = not git.branch_exists(self.project_root, branch)
            if new_branch:
                if git.rev_parse(self.project_root, base) is None:
                    raise GitError(f"base branch {base!r} does not exist in {self.project_root}",
                                   f"create it, e.g. `git branch {base}`, or set baseBranch")
                git.create_branch(self.project_root, branch, base)
            target.parent.mkdir(parents=True, exist_ok=True)
            git.git(self.project_root, "worktree", "add", "--quiet", "--", str(target), branch)
            self._share_files(target)
            return target, new_branch

    def _worktree_of(self, branch: str) -> WorktreeInfo | None:
        infos = self.list()
        if any(i.prunable or not i.path.exists() for i in infos):
            self.prune()
            infos = self.list()
        return next((i for i in infos if i.branch == branch), None)

    def _owned(self, path: Path) -> bool:
        resolved = Path(path).resolve()
        return resolved != self.project_root and (
            self.worktrees_dir in resolved.parents or resolved == self.integration_dir)

    def _refuse_foreign_dir(self, target: Path) -> None:
        registered = {i.path.resolve(): i for i in self.list()}
        info = registered.get(target.resolve())
        if info is not None:
            raise OrchestratorError(
                f"worktree {target} is in use for {info.branch or 'a detached HEAD'}",
                "remove that worktree first or use another worktree name")
        if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
            target.rmdir()
            return
        raise OrchestratorError(f"{target} exists but is not a git worktree",
                                "move it away or delete it, then retry")

    def _exclude_state_dir(self) -> None:
        if self.project_root in self.state_dir.parents:
            rel = self.state_dir.relative_to(self.project_root).as_posix()
            if self._common_dir is None:
                self._common_dir = git.common_dir(self.project_root)
            git.ensure_excluded(self.project_root, [f"/{rel}"], common=self._common_dir)

    def _share_files(self, worktree: Path) -> None:
        shared = [(p, True) for p in self.symlink_dirs] + [(p, False) for p in self.copy_files]
        present = [(p, link) for p, link in shared
                   if (self.project_root / p).exists() and not self._tracked(p)]
        if not present:
            return
        git.ensure_excluded(worktree, [f"/{p}" for p, _ in present])
        for rel, link in present:
            src, dst = self.project_root / rel, worktree / rel
            if dst.exists() or dst.is_symlink():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if link:
                # relative, so the link also resolves inside a container that mounts the project
                os.symlink(os.path.relpath(src, dst.parent), dst,
                           target_is_directory=src.is_dir())
            elif src.is_dir():
                shutil.copytree(src, dst, symlinks=True)
            else:
                shutil.copy2(src, dst)

    def _tracked(self, rel: str) -> bool:
        out = git.git(self.project_root, "ls-files", "-z", "--", git.literal(rel)).stdout
        return bool(out)

    def _shared_names(self) -> set[str]:
        return set(self.symlink_dirs) | set(self.copy_files)

    def remove(self, path: Path, *, force: bool = False) -> None:
        """Remove a worktree the daemon created. Refuses (OrchestratorError) when it has
        uncommitted changes, unless force."""
        path = Path(path)
        if not self._owned(path):
            raise OrchestratorError(f"refusing to remove {path}: not a worktree of the daemon",
                                    f"the daemon only removes worktrees under {self.state_dir}")
        if not path.exists():
            with self._lock:
                self.prune()
            return
        with self._lock:
            if not force:
                dirty = [p for p in git.dirty_paths(path)
                         if p.rstrip("/") not in self._shared_names()]
                if dirty:
                    shown = ", ".join(dirty[:10]) + (" ..." if len(dirty) > 10 else "")
                    raise OrchestratorError(
                        f"worktree {path} has uncommitted changes: {shown}",
                        "commit them on the branch, or remove the worktree with force")
            for rel in self.symlink_dirs:
                link = path / rel
                if link.is_symlink():
                    link.unlink()
            # `worktree remove` deletes the worktree's administrative files too: no prune needed
            git.git(self.project_root, "worktree", "remove", "--force", "--", str(path))

    def delete_branch(self, branch: str, *, merged_into: str) -> None:
        """git.delete_branch, one at a time with worktree additions and removals: `git branch -D`
        reads every worktree's administrative files too (is the branch checked out there?)."""
        with self._lock:
            git.delete_branch(self.project_root, branch, merged_into=merged_into)

    # ------------------------------------------------------------ integration checkout
    def integration_checkout(self, base: str, *, discard_changes: bool = False) -> Path:
        """Where feature branches are merged into `base`: the project root when it has `base`
        checked out, else the checkout that has it, else a daemon-owned worktree on `base`.
        discard_changes=True resets and cleans a dirty daemon-owned integration worktree (never
        the user's checkout); otherwise a dirty one raises OrchestratorError."""
        if not git.valid_branch_name(base):
            raise OrchestratorError(f"invalid base branch {base!r}")
        known = self._checkouts.get(base)
        if known is not None:
            # without the lock: this adds or removes no worktree (so it need not wait for one
            # being added), and the checkout itself is the callers' to use one at a time (the
            # orchestrator's merge lock)
            try:
                if self._still_checkout(known, base, discard_changes):
                    return known
            except GitError:
                pass
        with self._lock:
            self._checkouts.pop(base, None)
            path = self._find_checkout(base, discard_changes)
            self._checkouts[base] = path
            return path

    def _still_checkout(self, path: Path, base: str, discard_changes: bool) -> bool:
        """Whether the checkout found last time still is the one to merge `base` into (two git
        calls instead of five or more); a daemon-owned one is cleaned as _require_clean does."""
        on_base = git.current_branch(self.project_root) == base
        if path == self.project_root or on_base:
            return path == self.project_root and on_base
        if not path.is_dir():
            return False
        branch, entries = git.branch_status(path)
        if branch != base:
            return False
        if path.resolve() == self.integration_dir:
            if git.merge_in_progress(path):
                git.abort_merge(path)
                entries = git.status(path)
            self._clean(path, [e.path for e in entries], discard_changes)
        return True

    def _find_checkout(self, base: str, discard_changes: bool) -> Path:
        if git.current_branch(self.project_root) == base:
            return self.project_root
        if not git.branch_exists(self.project_root, base):
            raise GitError(f"base branch {base!r} does not exist in {self.project_root}",
                           f"create it, e.g. `git branch {base} main`, or set baseBranch")
        existing = self._worktree_of(base)
        if existing is not None and existing.path.resolve() != self.integration_dir:
            return existing.path
        target = self.integration_dir
        if existing is None and target.exists():
            if git.is_repo(target) and git.toplevel(target).resolve() == target:
                self._switch_integration(target, base, discard_changes)
                return target
            self._refuse_foreign_dir(target)
        if existing is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._exclude_state_dir()
            git.git(self.project_root, "worktree", "add", "--quiet", "--", str(target), base)
        self._require_clean(target, discard_changes)
        return target

    def _switch_integration(self, target: Path, base: str, discard_changes: bool) -> None:
        self._require_clean(target, discard_changes)
        if git.merge_in_progress(target):
            git.abort_merge(target)
        git.git(target, "checkout", "--quiet", base, "--")

    def _require_clean(self, target: Path, discard_changes: bool) -> None:
        if git.merge_in_progress(target):
            git.abort_merge(target)
        self._clean(target, git.dirty_paths(target), discard_changes)

    def _clean(self, target: Path, dirty: list[str], discard_changes: bool) -> None:
        if not dirty:
            return
        if discard_changes:
            git.git(target, "reset", "--quiet", "--hard")
            git.git(target, "clean", "-q", "-fd")
            return
        shown = ", ".join(dirty[:10]) + (" ..." if len(dirty) > 10 else "")
        raise OrchestratorError(
            f"the integration worktree {target} has uncommitted changes: {shown}",
            "commit or discard them there (it belongs to the daemon), then retry")

    def release_integration(self) -> bool:
        """Remove the daemon's integration worktree if it exists and is clean (frees the base
        branch so the user can check it out). True when removed."""
        with self._lock:
            self._checkouts.clear()
            target = self.integration_dir
            if not target.exists():
                self.prune()
                return False
            if git.dirty_paths(target) or git.merge_in_progress(target):
                return False
            git.git(self.project_root, "worktree", "remove", "--", str(target))
            self.prune()
            return True
