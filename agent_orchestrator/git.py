"""Git plumbing over proc.run: pure helpers (names, parsers) and the operations the daemon needs.

Every ref and path that comes from a user is validated and put after `--` (or given as literal
pathspec), so it can never become an option.
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from . import proc
from .errors import GitError, ProcessError

FALLBACK_NAME = "agent-orchestrator"
FALLBACK_EMAIL = "agent-orchestrator@localhost"
EXCLUDE_BEGIN = "# agent-orchestrator: managed block (entries the daemon keeps out of git)"
EXCLUDE_END = "# end agent-orchestrator"

_exclude_lock = threading.Lock()


# ---------------------------------------------------------------- pure helpers

def slugify(name: str, max_len: int = 40) -> str:
    """A branch-safe slug of any text: ascii [a-z0-9-], no leading/trailing '-', never empty."""
    if max_len < 1:
        raise ValueError("max_len must be >= 1")
    ascii_text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:max_len].rstrip("-")
    return slug or "feature"[:max_len]


def branch_name(feature_id: int, name: str) -> str:
    return f"feature/{int(feature_id)}-{slugify(name)}"


_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def valid_branch_name(name: str) -> bool:
    """The rules of `git check-ref-format --branch`, without running git."""
    if not isinstance(name, str) or not name or name.startswith("-") or name == "HEAD":
        return False
    if name == "@" or "@{" in name or ".." in name or "//" in name:
        return False
    if name.startswith("/") or name.endswith("/") or name.endswith("."):
        return False
    if _BAD_REF_CHARS.search(name):
        return False
    return all(c and not c.startswith(".") and not c.endswith(".lock") for c in name.split("/"))


def check_ref(ref: str) -> str:
    """Refuse refs that could be taken for an option or split into several arguments."""
    if not isinstance(ref, str) or not ref or ref.startswith("-") or re.search(r"[\x00-\x20\x7f]", ref):
        raise GitError(f"invalid git ref {ref!r}", "use a branch name, tag or commit sha")
    return ref


def check_path(path: str) -> str:
    """A relative path inside the repository (no absolute paths, no '..', never an option)."""
    p = str(path)
    parts = Path(p).parts
    if not p or os.path.isabs(p) or ".." in parts or p.startswith("-") or "\n" in p or "\x00" in p:
        raise GitError(f"invalid repository path {p!r}",
                       "use a path relative to the project root, without '..'")
    return p.rstrip("/") or p


def literal(path: str) -> str:
    return f":(literal){check_path(path)}"


@dataclass(frozen=True)
class StatusEntry:
    code: str  # two characters of `git status --porcelain`, e.g. " M", "??", "UU"
    path: str
    orig_path: str | None = None


def parse_status_z(text: str) -> list[StatusEntry]:
    """Parse `git status --porcelain=v1 -z` output."""
    items = text.split("\0")
    entries: list[StatusEntry] = []
    i = 0
    while i < len(items):
        item = items[i]
        i += 1
        if len(item) < 4:
            continue
        code, path = item[:2], item[3:]
        orig = None
        if code[0] in "RC" or code[1] in "RC":
            orig = items[i] if i < len(items) else None
            i += 1
        entries.append(StatusEntry(code, path, orig))
    return entries


def parse_z_list(text: str) -> list[str]:
    return [p for p in text.split("\0") if p]


_OVERWRITE_HEADERS = (
    "would be overwritten by merge",
    "untracked working tree files would be overwritten",
    "untracked working tree files would be removed by merge",
    "would be overwritten by revert",
)


def parse_overwritten_files(output: str) -> list[str]:
    """Files git names when it refuses to merge because of local changes (indented lines after the
    "... would be overwritten by merge:" header). Empty when git did not refuse for that reason."""
    files: list[str] = []
    collecting = False
    for line in output.splitlines():
        if any(h in line for h in _OVERWRITE_HEADERS):
            collecting = True
            continue
        if collecting and line[:1] in ("\t", " ") and line.strip():
            name = line.strip()
            if name not in files:
                files.append(name)
        else:
            collecting = False
    return files


@dataclass
class MergeResult:
    ok: bool
    sha: str | None = None
    conflicts: list[str] = field(default_factory=list)
    blocked_by_local_changes: list[str] = field(default_factory=list)
    output: str = ""
    up_to_date: bool = False


# ---------------------------------------------------------------- running git

def git_env() -> dict[str, str]:
    env = proc.clean_env()
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_MERGE_AUTOEDIT="no")
    return env


def git(repo: Path, *args: str, check: bool = True, timeout: float | None = 120) -> proc.Completed:
    argv = ["git", "-c", "core.quotepath=off", *args]
    if not Path(repo).is_dir():
        raise GitError(f"repository directory {repo} does not exist", argv=argv)
    try:
        done = proc.run(argv, cwd=Path(repo), env=git_env(), timeout=timeout)
    except ProcessError as exc:
        raise GitError(exc.message, exc.hint or "install git (2.25 or newer)", argv=argv) from None
    if check and not done.ok:
        raise GitError(f"git {args[0] if args else ''} failed in {repo}: {_tail(done)}",
                       argv=argv, stderr=done.stderr)
    return done


def _tail(done: proc.Completed) -> str:
    if done.timed_out:
        return "timed out"
    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return " | ".join(lines[-4:]) or f"exit code {done.returncode}"


def identity_args(repo: Path) -> list[str]:
    """The `-c user.*` options commits in `repo` need (none when it has an identity)."""
    return _identity_args(repo)


def _identity_args(repo: Path) -> list[str]:
    """`-c user.*` options when the repository has no identity configured (one git call)."""
    done = git(repo, "config", "--get-regexp", r"^user\.(name|email)$", check=False)
    values: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        values[key.lower()] = value.strip()  # the last value wins, as with `git config KEY`
    args: list[str] = []
    if not values.get("user.name"):
        args += ["-c", f"user.name={FALLBACK_NAME}"]
    if not values.get("user.email"):
        args += ["-c", f"user.email={FALLBACK_EMAIL}"]
    return args


# ---------------------------------------------------------------- queries

def is_repo(path: Path) -> bool:
    if not Path(path).is_dir():
        return False
    done = git(path, "rev-parse", "--is-inside-work-tree", check=False)
    return done.ok and done.stdout.strip() == "true"


def toplevel(repo: Path) -> Path:
    return Path(git(repo, "rev-parse", "--show-toplevel").stdout.strip())


def common_dir(repo: Path) -> Path:
    out = git(repo, "rev-parse", "--git-common-dir").stdout.strip()
    return (Path(repo) / out).resolve()


def git_dir(repo: Path) -> Path:
    """The repository's (per-worktree) git directory: read from `.git` at the top of a checkout
    (a directory, or the `gitdir:` file of a linked worktree) without starting git; asked from
    git otherwise (a path below the top)."""
    dot = Path(repo) / ".git"
    try:
        if dot.is_dir():
            return dot
        text = dot.read_text(encoding="utf-8")
    except OSError:
        text = ""
    if text.startswith("gitdir: "):
        target = Path(text[len("gitdir: "):].strip())
        return target if target.is_absolute() else (Path(repo) / target).resolve()
    return Path(git(repo, "rev-parse", "--absolute-git-dir").stdout.strip())


def current_branch(repo: Path) -> str | None:
    # HEAD is a file naming the branch ("ref: refs/heads/NAME") in a checkout with the files
    # ref backend; anything else (a detached sha, a reftable stub) is left to git
    try:
        head = (git_dir(repo) / "HEAD").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError, GitError):
        head = ""
    if head.startswith("ref: refs/heads/"):
        name = head[len("ref: refs/heads/"):]
        if valid_branch_name(name) and name != ".invalid":
            return name
    done = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if not done.ok:
        return None
    return done.stdout.strip() or None


def branch_exists(repo: Path, name: str) -> bool:
    if not valid_branch_name(name):
        return False
    return git(repo, "show-ref", "--verify", "--quiet", f"refs/heads/{name}", check=False).ok


def rev_parse(repo: Path, ref: str) -> str | None:
    """The commit sha `ref` names, or None."""
    done = git(repo, "rev-parse", "--verify", "--quiet", f"{check_ref(ref)}^{{commit}}", check=False)
    if not done.ok:
        return None
    return done.stdout.strip() or None


def commits_ahead(repo: Path, base: str, head: str) -> int:
    done = git(repo, "rev-list", "--count", f"{check_ref(base)}..{check_ref(head)}", "--")
    return int(done.stdout.strip())


def status(repo: Path) -> list[StatusEntry]:
    return parse_status_z(git(repo, "status", "--porcelain=v1", "-z").stdout)


def branch_status(repo: Path) -> tuple[str | None, list[StatusEntry]]:
    """The checked-out branch (None when HEAD is detached) and the `status` entries, in one call."""
    out = git(repo, "status", "--porcelain=v1", "-z", "--branch").stdout
    head, _, rest = out.partition("\0")
    branch = None
    if head.startswith("## ") and not head.startswith("## HEAD (no branch)"):
        name = head[3:]
        for prefix in ("No commits yet on ", "Initial commit on "):
            if name.startswith(prefix):
                name = name[len(prefix):]
        branch = name.split("...", 1)[0].split(" ", 1)[0] or None
    return branch, parse_status_z(rest)


def dirty_paths(repo: Path) -> list[str]:
    return [e.path for e in status(repo)]


def merge_in_progress(repo: Path) -> bool:
    return (git_dir(repo) / "MERGE_HEAD").is_file()


def _sequencer_in_progress(repo: Path) -> bool:
    folder = git_dir(repo)
    return any((folder / head).is_file() for head in ("MERGE_HEAD", "REVERT_HEAD", "CHERRY_PICK_HEAD"))


def _index_clean(repo: Path) -> bool:
    return git(repo, "diff", "--cached", "--quiet", check=False).returncode == 0


def has_upstream(repo: Path, branch: str) -> bool:
    _require_branch_name(branch)
    done = git(repo, "for-each-ref", "--format=%(upstream)", f"refs/heads/{branch}")
    return bool(done.stdout.strip())


def _require_branch_name(name: str) -> None:
    if not valid_branch_name(name):
        raise GitError(f"invalid branch name {name!r}",
                       "branch names follow `git check-ref-format --branch` rules")


# ---------------------------------------------------------------- changes

def create_branch(repo: Path, name: str, start: str) -> None:
    _require_branch_name(name)
    git(repo, "branch", "--no-track", "--", name, check_ref(start))


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    done = git(repo, "merge-base", "--is-ancestor", check_ref(ancestor), check_ref(descendant),
               check=False)
    if done.returncode not in (0, 1):
        raise GitError(f"git merge-base failed in {repo}: {_tail(done)}", argv=done.argv,
                       stderr=done.stderr)
    return done.returncode == 0


def fast_forward(repo: Path, ref: str) -> bool:
    """Bring the checked-out branch of `repo` up to `ref` when that is a fast-forward (nothing
    of its own to merge); False, with nothing changed, when it is not."""
    return git(repo, "merge", "--ff-only", "--quiet", "--no-autostash", check_ref(ref),
               check=False).ok


def delete_branch(repo: Path, name: str, *, force: bool = False,
                  merged_into: str | None = None) -> None:
    """Delete a local branch. With `merged_into`, it is deleted only when fully merged into that
    branch (whatever the current checkout is); force deletes unconditionally."""
    _require_branch_name(name)
    if merged_into is not None and not force:
        if not is_ancestor(repo, name, merged_into):
            raise GitError(f"branch {name} is not fully merged into {merged_into}; not deleted",
                           "merge it first or delete it by hand with `git branch -D`")
        force = True
    git(repo, "branch", "-D" if force else "-d", "--", name)


def commit_all(repo: Path, message: str, *, exclude: Sequence[str] = ()) -> str | None:
    """Stage every change except `exclude` paths and commit; the new sha, or None if nothing changed."""
    excluded = [f":(exclude,literal){check_path(p)}" for p in exclude]
    if not status(repo):  # nothing changed, nothing staged, nothing untracked: one git call
        return None
    git(repo, "add", "-A", "--", ".", *excluded)
    head = rev_parse(repo, "HEAD")
    if excluded and head is not None:
        git(repo, "reset", "-q", "HEAD", "--", *(literal(p) for p in exclude))
    elif excluded:
        git(repo, "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", *(literal(p) for p in exclude))
    if _index_clean(repo) and head is not None:
        return None
    if head is None and not git(repo, "ls-files", "-z").stdout:
        return None
    git(repo, *_identity_args(repo), "commit", "-q", "-m", message)
    return rev_parse(repo, "HEAD")


def merge(repo: Path, ref: str, *, message: str, no_ff: bool = True,
          identity: list[str] | None = None, want_sha: bool = True) -> MergeResult:
    """Merge `ref` into the checked-out branch of `repo`. Never leaves the repository mid-merge:
    on a conflict the merge is aborted and the conflicting files are reported; when git refuses
    because of local changes, nothing is changed and the files are reported."""
    check_ref(ref)
    if _sequencer_in_progress(repo):
        return MergeResult(False, blocked_by_local_changes=dirty_paths(repo) or ["MERGE_HEAD"],
                           output=f"a merge, revert or cherry-pick is already in progress in {repo}; "
                                  "finish it (git commit) or abort it first")
    args = ["merge", "--no-autostash", "-m", message]
    if no_ff:
        args.insert(1, "--no-ff")
    if identity is None:
        identity = _identity_args(repo)
    done = git(repo, *identity, *args, "--", ref, check=False, timeout=600)
    output = (done.stdout + done.stderr).strip()
    if done.ok:
        # LC_ALL=C: "Already up to date." (git < 2.17: "Already up-to-date.") when nothing moved
        up_to_date = "Already up to date" in done.stdout or "Already up-to-date" in done.stdout
        sha = rev_parse(repo, "HEAD") if want_sha else None
        return MergeResult(True, sha=sha, output=output, up_to_date=up_to_date)
    if merge_in_progress(repo):
        conflicts = parse_z_list(git(repo, "diff", "--name-only", "-z", "--diff-filter=U").stdout)
        abort_merge(repo)
        return MergeResult(False, conflicts=conflicts, output=output)
    blocked = parse_overwritten_files(output)
    if blocked:
        return MergeResult(False, blocked_by_local_changes=blocked, output=output)
    raise GitError(f"git merge of {ref} failed in {repo}: {_tail(done)}",
                   argv=done.argv, stderr=done.stderr)


def abort_merge(repo: Path) -> None:
    if merge_in_progress(repo):
        git(repo, "merge", "--abort")
    if merge_in_progress(repo):
        raise GitError(f"could not abort the merge in {repo}",
                       f"run `git merge --abort` in {repo} by hand")


def revert_merge(repo: Path, sha: str, message: str) -> bool:
    """Revert merge commit `sha` (mainline 1) with one commit. False (and nothing changed) when it
    conflicts or local changes are in the way."""
    return _revert(repo, sha, message, ["-m", "1"], f"This reverts merge commit {sha}.")


def revert_commit(repo: Path, sha: str, message: str) -> bool:
    """Revert ordinary commit `sha` with one commit (used to re-apply a reverted feature). False
    (and nothing changed) when it conflicts or local changes are in the way."""
    return _revert(repo, sha, message, [], f"This reverts commit {sha}.")


def _revert(repo: Path, sha: str, message: str, mainline: list[str], note: str) -> bool:
    check_ref(sha)
    if _sequencer_in_progress(repo) or not _index_clean(repo):
        return False
    done = git(repo, "revert", "--no-commit", *mainline, sha, check=False, timeout=600)
    in_revert = git(repo, "rev-parse", "-q", "--verify", "REVERT_HEAD", check=False).ok
    if not done.ok:
        if in_revert:
            git(repo, "revert", "--abort")
            return False
        if parse_overwritten_files(done.stdout + done.stderr) or "local changes" in done.stderr:
            return False
        raise GitError(f"git revert of {sha} failed in {repo}: {_tail(done)}",
                       argv=done.argv, stderr=done.stderr)
    if _index_clean(repo):
        if in_revert:
            git(repo, "revert", "--abort")
        return True
    git(repo, *_identity_args(repo), "commit", "-q", "-m", f"{message}\n\n{note}")
    return True


def restore_paths_from(repo: Path, ref: str, paths: Sequence[str], message: str, *,
                       worktree_clean: bool = False) -> str | None:
    """Make `paths` in HEAD equal to their version in `ref` (absent there: removed from the index,
    the working tree file stays) and commit. The new sha, or None when nothing differed.
    worktree_clean: the caller just saw `git status` empty (no need to look again)."""
    check_ref(ref)
    if not paths:
        return None
    specs = [literal(p) for p in paths]
    # the usual case, in one or two git calls: HEAD already has ref's version of every path, and
    # the index and the working tree have no change to any of them
    same = git(repo, "diff", "--quiet", ref, "HEAD", "--", *specs, check=False).returncode == 0
    if same and (worktree_clean or not parse_status_z(
            git(repo, "status", "--porcelain=v1", "-z", "--", *specs).stdout)):
        return None
    for path in paths:
        spec = literal(path)
        git(repo, "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", spec)
        if git(repo, "ls-tree", "-z", "--full-tree", "--name-only", ref, "--", check_path(path)).stdout:
            git(repo, "checkout", ref, "--", spec)
    if _index_clean(repo):
        return None
    git(repo, *_identity_args(repo), "commit", "-q", "-m", message)
    return rev_parse(repo, "HEAD")


def ensure_excluded(repo: Path, patterns: Iterable[str], *, common: Path | None = None) -> list[str]:
    """Add missing `patterns` to <git-common-dir>/info/exclude inside the agent-orchestrator block
    (`common`: that directory when the caller knows it). Returns the patterns added."""
    wanted = [p.strip() for p in patterns]
    for p in wanted:
        if not p or "\n" in p or "\r" in p:
            raise GitError(f"invalid exclude pattern {p!r}")
    exclude = (common or common_dir(repo)) / "info" / "exclude"
    with _exclude_lock:
        text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        present = {line.strip() for line in text.splitlines()}
        added = [p for p in dict.fromkeys(wanted) if p not in present]
        if not added:
            return []
        lines = text.splitlines()
        if EXCLUDE_BEGIN in lines and EXCLUDE_END in lines[lines.index(EXCLUDE_BEGIN):]:
            end = lines.index(EXCLUDE_END, lines.index(EXCLUDE_BEGIN))
            lines[end:end] = added
        else:
            lines += [EXCLUDE_BEGIN, *added, EXCLUDE_END]
        _write_atomic(exclude, "\n".join(lines) + "\n")
    return added


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def push(repo: Path, remote: str, branch: str, *, timeout: float = 300) -> proc.Completed:
    _require_branch_name(branch)
    if not remote or remote.startswith("-") or _BAD_REF_CHARS.search(remote):
        raise GitError(f"invalid git remote {remote!r}", "set git.remote to a remote name such as origin")
    done = git(repo, "push", "--", remote, f"refs/heads/{branch}:refs/heads/{branch}",
               check=False, timeout=timeout)
    if not done.ok:
        raise GitError(f"git push of {branch} to {remote} failed: {_tail(done)}",
                       "check the remote and your credentials (the daemon never prompts); "
                       "set git.push to \"never\" to stop pushing",
                       argv=done.argv, stderr=done.stderr)
    return done


def merge_commits_of(repo: Path, base: str, branch: str) -> list[str]:
    """Merge commits on `base`'s first-parent history whose second parent is reachable from
    `branch`, newest first."""
    lines = git(repo, "rev-list", "--first-parent", "--merges", "--parents",
                check_ref(base), "--").stdout.split("\n")
    merges = [line.split() for line in lines if line.strip()]
    if not merges or rev_parse(repo, branch) is None:
        return []
    oldest_first_parent = merges[-1][1]
    reachable = set(git(repo, "rev-list", check_ref(branch), f"^{oldest_first_parent}", "--")
                    .stdout.split())
    return [m[0] for m in merges if len(m) > 2 and m[2] in reachable]
