"""Confinement of agent sessions with bubblewrap (`agent.sandbox: "bwrap"`).

Inside the sandbox the whole filesystem is read-only except the session's checkout, the
repository's git metadata and the agent CLIs' own state directories; the home directory's secret
folders and files are hidden; /tmp is private; the network is cut when `agent.network` is false.
The sandbox shares the agent's process group (no `--new-session`), so stopping a session (TERM, then
KILL to the group) reaches everything inside, and `--die-with-parent` plus a private pid namespace
end it all if the daemon itself dies.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

from . import git, proc
from .errors import AgentUnavailable, OrchestratorError

log = logging.getLogger(__name__)

SandboxWrapper = Callable[[Sequence[str], Path], list[str]]

SECRET_DIRS = (
    ".ssh", ".aws", ".azure", ".config/gcloud", ".kube", ".docker", ".gnupg", ".password-store",
    ".config/gh", ".config/hub", ".local/share/keyrings", ".terraform.d", ".config/op",
    ".config/rclone", ".oci", ".mozilla", ".config/google-chrome", ".config/chromium",
)
SECRET_FILES = (
    ".netrc", ".git-credentials", ".npmrc", ".pypirc", ".vault-token", ".pgpass", ".my.cnf",
    ".bash_history", ".zsh_history", ".python_history", ".psql_history", ".mysql_history",
    ".config/git/credentials",
)
# What the agent CLIs write while they run (session state, logs, credentials refresh).
AGENT_STATE = (".claude", ".claude.json", ".local/state/claude", ".codex", ".gemini")
AGENT_STATE_VARS = ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_CLI_HOME")
# Files under the git common dir that make git run programs: never writable from inside.
GIT_PROTECTED = ("config", "hooks", "info")
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


class SandboxUnavailable(OrchestratorError):
    """agent.sandbox asks for a sandbox this machine cannot provide: refuse to run unconfined."""

    exit_code = 2
    http_status = 500
    code = "sandbox_unavailable"


def bwrap_argv(command: Sequence[str], *, bwrap: str, cwd: Path, writable: Sequence[Path],
               readable: Sequence[Path] = (), read_only: Sequence[Path] = (),
               hidden_dirs: Sequence[Path] = (), hidden_files: Sequence[Path] = (),
               network: bool = True, setenv: Mapping[str, str] | None = None) -> list[str]:
    """The bwrap command line (pure). Mount order matters: later mounts cover earlier ones, so the
    read-only root comes first, then the private /tmp, paths made visible again (they may live
    under /tmp), hidden secrets, writable paths, and last the git files that must stay read-only."""
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in _unique(readable):
        argv += ["--ro-bind", str(path), str(path)]
    for path in _unique(hidden_dirs):
        argv += ["--tmpfs", str(path)]
    for path in _unique(hidden_files):
        argv += ["--ro-bind", "/dev/null", str(path)]
    for path in _unique(writable):
        argv += ["--bind", str(path), str(path)]
    for path in _unique(read_only):
        argv += ["--ro-bind", str(path), str(path)]
    argv += ["--unshare-pid", "--die-with-parent", "--cap-drop", "ALL"]
    if not network:
        argv.append("--unshare-net")
    for key, value in (setenv or {}).items():
        argv += ["--setenv", key, value]
    argv += ["--chdir", str(cwd), "--", *command]
    return argv


def _program_dirs(program: str) -> list[Path]:
    """The agent's own program (and what it links to) stays runnable when it lives under /tmp,
    which the sandbox replaces with a private one (a CI checkout, an unpacked tool)."""
    dirs = {Path(program).parent, Path(os.path.realpath(program)).parent}
    return sorted(d for d in dirs if d == Path("/tmp") or Path("/tmp") in d.parents)


def _unique(paths: Sequence[Path]) -> list[Path]:
    return list(dict.fromkeys(Path(p) for p in paths))


class BwrapSandbox:
    """Callable `(argv, cwd) -> argv` given to SessionRunner: wraps one agent command line.

    `worktree` fixes the writable checkout; by default it is each session's cwd (a feature
    worktree, or the integration checkout for verification)."""

    def __init__(self, *, bwrap: str, project_root: Path, git_common_dir: Path, home: Path | None,
                 network: bool = True, shared_dirs: Sequence[str] = (), docker: bool = False,
                 worktree: Path | None = None, env: Mapping[str, str] | None = None,
                 extra_readable: Sequence[Path] = ()):
        self.bwrap = bwrap
        self.project_root = Path(project_root)
        self.git_common_dir = Path(git_common_dir)
        self.home = Path(home) if home else None
        self.network = network
        self.shared_dirs = list(shared_dirs)
        self.docker = docker
        self.worktree = Path(worktree) if worktree else None
        self.env = os.environ if env is None else env
        self.extra_readable = [Path(p) for p in extra_readable]

    def __call__(self, argv: Sequence[str], cwd: Path) -> list[str]:
        command = list(argv)
        command[0] = self._resolve(command[0])
        checkout = Path(self.worktree or cwd)
        return bwrap_argv(
            command, bwrap=self.bwrap, cwd=Path(cwd),
            readable=[p for p in (self.home, self.project_root, *self.extra_readable)
                      if p and p.exists()] + _program_dirs(command[0]),
            hidden_dirs=self._existing(SECRET_DIRS, dirs=True),
            hidden_files=self._existing(SECRET_FILES, dirs=False) + self._docker_sockets(),
            writable=[checkout, self.git_common_dir, *self._shared(), *self._agent_state()],
            read_only=[p for p in (self.git_common_dir / n for n in GIT_PROTECTED) if p.exists()],
            network=self.network, setenv=self._setenv())

    def _resolve(self, binary: str) -> str:
        if os.sep in binary:
            return binary
        found = proc.which(binary, self.env)
        if found is None:
            raise AgentUnavailable(
                f"agent binary '{binary}' not found on PATH",
                f"install '{binary}' or put its directory on PATH, or set its full path as the "
                "agent's \"command\" in orchestrator.config.json")
        return found

    def _existing(self, names: Sequence[str], *, dirs: bool) -> list[Path]:
        if self.home is None:
            return []
        out = []
        for name in names:
            path = self.home / name
            if path.is_symlink():
                continue  # a mount would follow the link; its target stays as it is
            if (path.is_dir() if dirs else path.is_file()):
                out.append(path)
        return out

    def _docker_sockets(self) -> list[Path]:
        """Whoever can talk to the Docker daemon can leave any sandbox: hidden, unless the
        project runs its tools in a container (worktree.dockerService)."""
        if self.docker:
            return []
        return [Path(s) for s in DOCKER_SOCKETS if os.path.exists(s)]

    def _shared(self) -> list[Path]:
        """worktree.symlinkDirs live in the project root (read-only otherwise): installing
        dependencies into node_modules & co must keep working."""
        out = []
        for rel in self.shared_dirs:
            path = (self.project_root / rel)
            if path.is_dir() and not path.is_symlink():
                out.append(path)
        return out

    def _agent_state(self) -> list[Path]:
        paths = [self.home / name for name in AGENT_STATE] if self.home else []
        paths += [Path(self.env[v]) for v in AGENT_STATE_VARS if self.env.get(v)]
        return [p for p in paths if p.exists() and not p.is_symlink()]

    def _setenv(self) -> dict[str, str]:
        tmpdir = self.env.get("TMPDIR")
        if tmpdir and not (tmpdir == "/tmp" or tmpdir.startswith("/tmp/")):
            return {"TMPDIR": "/tmp"}
        return {}


def check_available(config, *, env: Mapping[str, str] | None = None,
                    runner: Callable = proc.run) -> str | None:
    """The bwrap binary when agent.sandbox is "bwrap" and it works here; None when no sandbox is
    asked for. Raises SandboxUnavailable (exit 2) with the reason otherwise: the daemon never runs
    an agent unconfined when a sandbox was asked for."""
    if config["agent.sandbox"] != "bwrap":
        return None
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(
            f"agent.sandbox is \"bwrap\" but bubblewrap only exists on Linux (this is "
            f"{sys.platform})",
            "set agent.sandbox to \"none\" in orchestrator.config.json, or run the daemon on Linux")
    bwrap = proc.which("bwrap", env)
    if bwrap is None:
        raise SandboxUnavailable(
            "agent.sandbox is \"bwrap\" but the bwrap program (bubblewrap) is not installed",
            "install it (`apt-get install bubblewrap`, `dnf install bubblewrap`, `pacman -S "
            "bubblewrap`), or set agent.sandbox to \"none\" to run agents unconfined")
    probe = bwrap_argv(["true"], bwrap=bwrap, cwd=Path("/"), writable=[],
                       network=bool(config["agent.network"]))
    done = runner(probe, cwd=Path("/"), env=proc.clean_env(env), timeout=30)
    if not done.ok:
        detail = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}")
        raise SandboxUnavailable(
            f"agent.sandbox is \"bwrap\" but bubblewrap cannot create its namespaces here: "
            f"{detail.splitlines()[-1] if detail else ''}",
            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on "
            "Ubuntu 23.10+ kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile "
            "for bwrap; in Docker --security-opt seccomp=unconfined --cap-add SYS_ADMIN), or set "
            "agent.sandbox to \"none\"")
    return bwrap


def bwrap_wrapper(config, *, worktree: Path | None = None, git_common_dir: Path | None = None,
                  home: Path | None = None, env: Mapping[str, str] | None = None,
                  bwrap: str = "bwrap") -> BwrapSandbox:
    env = os.environ if env is None else env
    root = Path(config.project_root).resolve()
    if git_common_dir is None:
        git_common_dir = git.common_dir(root)
    if home is None and env.get("HOME"):
        home = Path(env["HOME"])
    return BwrapSandbox(bwrap=bwrap, project_root=root, git_common_dir=Path(git_common_dir),
                        home=home, network=bool(config["agent.network"]),
                        shared_dirs=config["worktree.symlinkDirs"],
                        docker=bool(config["worktree.dockerService"]), worktree=worktree, env=env,
                        extra_readable=[root / p for p in config["agent.sandboxReadable"]])


def sandbox_for(config, *, env: Mapping[str, str] | None = None) -> BwrapSandbox | None:
    """What Orchestrator gives SessionRunner: None without a sandbox, else a checked wrapper."""
    bwrap = check_available(config, env=env)
    if bwrap is None:
        if not config["agent.network"]:
            log.warning("agent.network is false but agent.sandbox is \"none\": the network can "
                        "only be cut inside the sandbox; set agent.sandbox to \"bwrap\"")
        return None
    return bwrap_wrapper(config, env=env, bwrap=bwrap)
