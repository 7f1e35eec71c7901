"""One project's files and stores, opened together: config, features store, database, event bus,
and the lock that keeps a second daemon off the same project."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from . import git
from .config import Config, load_config
from .db import Database
from .errors import AlreadyRunning, ConfigError, FeaturesError
from .events import EventBus
from .features import FeatureStore, atomic_write_text, check_references

STATE_DIR = ".orchestrator"


class Project:
    def __init__(self, root: Path, config: Config, warnings: list[str], store: FeatureStore,
                 db: Database, bus: EventBus, lock_fd: int | None):
        self.root = root
        self.state_dir = root / STATE_DIR
        self.config = config
        self.warnings = warnings
        self.store = store
        self.db = db
        self.bus = bus
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, root: Path, *, lock: bool = True, command: str = "run") -> "Project":
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"project directory {root} does not exist",
                              "pass --project DIR or set PROJECT_ROOT to your repository")
        if not git.is_repo(root):
            raise ConfigError(f"{root} is not a git repository",
                              "run the orchestrator in a git repository (`git init` first)")
        config, warnings = load_config(root)
        base = config["baseBranch"]
        if not git.branch_exists(root, base):
            raise ConfigError(
                f"orchestrator.config.json: baseBranch: branch '{base}' does not exist in {root}",
                f"create it with `git branch {base}` (from your current branch), or set "
                "baseBranch to an existing branch, or run `agent-orchestrator init`")
        features_path = config.path("featuresFile")
        if not features_path.is_file():
            raise FeaturesError(
                f"features file {features_path} not found (config featuresFile)",
                "create it (see examples/features.example.json in the agent-orchestrator "
                "package) or set featuresFile in orchestrator.config.json")
        state_dir = root / STATE_DIR
        state_dir.mkdir(exist_ok=True)
        git.ensure_excluded(root, [f"/{STATE_DIR}/"])
        lock_fd = acquire_lock(state_dir, command) if lock else None
        try:
            store = FeatureStore(features_path, state_dir / "features.lock")
            problems = check_references(store.load(), tracks=[t.name for t in config.tracks],
                                        agents=config.agent_names())
            if problems:
                raise FeaturesError(f"{features_path.name}: {len(problems)} problem(s) with "
                                    "track or agent overrides", "fix the feature's `track` or "
                                    "`agent`, or define it in orchestrator.config.json",
                                    problems=problems)
            db = Database(state_dir / "orchestrator.db")
        except BaseException:
            release_lock(lock_fd, state_dir)
            raise
        return cls(root, config, warnings, store, db, EventBus(db), lock_fd)

    def close(self) -> None:
        try:
            self.bus.close()
        finally:
            self.db.close()
            release_lock(self._lock_fd, self.state_dir)
            self._lock_fd = None


def owner_info(state_dir: Path) -> dict:
    try:
        return json.loads((state_dir / "daemon.json").read_text())
    except (OSError, ValueError):
        return {}


def write_owner(state_dir: Path, info: dict) -> Path:
    """`.orchestrator/daemon.json`: who holds the project's lock (pid, command, url)."""
    path = state_dir / "daemon.json"
    atomic_write_text(path, json.dumps(info, indent=2) + "\n", mode=0o600)
    return path


def acquire_lock(state_dir: Path, command: str) -> int:
    fd = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = owner_info(state_dir)
        where = f" at {info['url']}" if info.get("url") else ""
        who = f"`{info.get('command', 'agent-orchestrator')}` (pid {info.get('pid', '?')})"
        raise AlreadyRunning(
            f"another agent-orchestrator {who} is already running on this project{where}",
            "use that one (or `agent-orchestrator status`), or stop it first")
    write_owner(state_dir, {"pid": os.getpid(), "command": command, "url": None})
    return fd


def release_lock(fd: int | None, state_dir: Path) -> None:
    if fd is None:
        return
    try:
        (state_dir / "daemon.json").unlink(missing_ok=True)
    finally:
        os.close(fd)
