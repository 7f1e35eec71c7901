"""agent.sandbox "bwrap": an agent can commit in its worktree and nothing else — it cannot write
outside it, read the home directory's secrets or reach the network when it is cut — and stopping
or killing the daemon still ends everything inside the sandbox.

bubblewrap is required (.ci/run installs it): without it these tests fail, unless
AO_SKIP_SANDBOX=1, which skips them with the reason."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from agent_orchestrator.sandbox import (SandboxUnavailable, bwrap_argv, bwrap_wrapper,
                                        check_available)
from processes import alive_with_env, output, start_run, wait_for
from projects import REPO_ROOT, feature, git, load_features, make_project, run_cli

PROBE = r'''
import json, os, socket, subprocess, sys
env = os.environ
results = {}

def attempt(name, action):
    try:
        value = action()
        results[name] = "allowed" if value is None else f"allowed: {value}"
    except Exception as exc:
        results[name] = f"denied: {type(exc).__name__}"

def write(path):
    with open(path, "w") as f:
        f.write("escaped\n")

attempt("write_project_root", lambda: write(os.path.join(env["FAKE_PROBE_ROOT"], "escape.txt")))
attempt("write_home", lambda: write(os.path.join(env["HOME"], "escape.txt")))
attempt("write_outside", lambda: write(os.path.join(env["FAKE_PROBE_OUTSIDE"], "escape.txt")))
attempt("write_etc", lambda: write("/etc/ao-escape.txt"))
attempt("write_var_tmp", lambda: write(env["FAKE_PROBE_VAR_TMP"]))
attempt("write_git_hook", lambda: write(os.path.join(env["FAKE_PROBE_ROOT"], ".git", "hooks",
                                                     "post-merge")))
attempt("write_git_config", lambda: open(os.path.join(env["FAKE_PROBE_ROOT"], ".git", "config"),
                                         "a").write("[core]\n\tfsmonitor = evil\n"))
attempt("write_claude_state", lambda: write(os.path.join(env["HOME"], ".claude", "state.json")))
attempt("write_tmp", lambda: write("/tmp/scratch.txt"))
attempt("read_ssh_key", lambda: open(os.path.join(env["HOME"], ".ssh", "id_rsa")).read()[:20])
attempt("read_netrc", lambda: open(os.path.join(env["HOME"], ".netrc")).read()[:20])
attempt("connect", lambda: socket.create_connection(("127.0.0.1", int(env["FAKE_PROBE_PORT"])),
                                                    timeout=3).close())
with open("probe.json", "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
subprocess.run(["git", "add", "probe.json"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "probe results"], check=True)
print("probe done")
'''


@pytest.fixture
def bwrap():
    path = shutil.which("bwrap")
    if path is None:
        reason = "bubblewrap (bwrap) is not installed: the sandbox cannot be tested"
        if os.environ.get("AO_SKIP_SANDBOX") == "1":
            print(f"SKIPPED: {reason} (AO_SKIP_SANDBOX=1)")
            pytest.skip(reason)
        pytest.fail(f"{reason}; install it (apt-get install -y bubblewrap) or set "
                    "AO_SKIP_SANDBOX=1 to skip these tests")
    return path


@pytest.fixture
def listener():
    """A TCP server on the host's loopback; records whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    seen = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            seen.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join(2)
    server.close()


def sandboxed_project(git_repo, tmp_path, *, network: bool, probe: bool = True):
    """The probe agent's script lives in the project root (readable in the sandbox, which
    hides the host's /tmp behind a private one), untracked."""
    # the fake CLIs read their output templates from tests/transcripts, which the private /tmp
    # hides when this checkout lives under /tmp: made visible as a user would, by configuration
    agent = {"sandbox": "bwrap", "network": network, "killGraceSeconds": 0.5,
             "sandboxReadable": [str(REPO_ROOT / "tests")]}
    extra = {}
    script = git_repo / "probe_agent.py"
    if probe:
        agent["preferred"] = "probe"
        extra["agents"] = {"probe": {"kind": "command",
                                     "command": [sys.executable, str(script), "{prompt_file}"]}}
    repo = make_project(git_repo, [feature(1)], agent=agent, **extra)
    if probe:
        script.write_text(PROBE)
    return repo


def plant_secrets(home: Path) -> None:
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY----- secret\n")
    (home / ".netrc").write_text("machine example.com password hunter2\n")
    (home / ".claude").mkdir()


@pytest.mark.parametrize("network", [False, True])
def test_agent_in_the_sandbox_commits_and_cannot_escape(git_repo, tmp_path, isolated_home, bwrap,
                                                         listener, network):
    port, connections = listener
    plant_secrets(isolated_home)
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = sandboxed_project(git_repo, tmp_path, network=network)
    var_tmp = Path("/var/tmp") / f"ao-escape-{uuid.uuid4().hex}.txt"
    env = {"FAKE_PROBE_ROOT": str(repo), "FAKE_PROBE_OUTSIDE": str(outside),
           "FAKE_PROBE_PORT": str(port), "FAKE_PROBE_VAR_TMP": str(var_tmp)}
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_features(repo)[1]["status"] == "passed"
    probe = json.loads(git(repo, "show", "ai-develop:probe.json"))
    for name in ("write_project_root", "write_home", "write_outside", "write_etc", "write_var_tmp",
                 "write_git_hook", "write_git_config", "read_ssh_key", "read_netrc"):
        assert probe[name].startswith("denied"), (name, probe[name])
    assert probe["write_claude_state"] == "allowed"
    assert probe["write_tmp"] == "allowed"
    assert not (repo / "escape.txt").exists() and not (isolated_home / "escape.txt").exists()
    assert not (outside / "escape.txt").exists() and not Path("/etc/ao-escape.txt").exists()
    assert not var_tmp.exists()
    assert not (repo / ".git" / "hooks" / "post-merge").exists()
    assert "fsmonitor" not in (repo / ".git" / "config").read_text()
    assert (isolated_home / ".claude" / "state.json").exists()
    assert not Path("/tmp/scratch.txt").exists()
    if network:
        assert probe["connect"] == "allowed" and connections
    else:
        assert probe["connect"].startswith("denied") and not connections


def test_stopping_the_run_ends_everything_inside_the_sandbox(git_repo, tmp_path, bwrap):
    repo = sandboxed_project(git_repo, tmp_path, network=True, probe=False)
    token = uuid.uuid4().hex
    proc = start_run(repo, tmp_path, env={"FAKE_AGENT_SCENARIO": "hang_ignore_term",
                                          "FAKE_SANDBOX_TOKEN": token})
    wait_for(lambda: len(alive_with_env("FAKE_SANDBOX_TOKEN", token)) >= 3,
             what="bwrap, the agent and its child")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130, output(tmp_path)
    wait_for(lambda: alive_with_env("FAKE_SANDBOX_TOKEN", token) == [], timeout=5,
             what="nothing left of the sandbox")


def test_killing_the_daemon_ends_the_sandboxed_agent_at_once(git_repo, tmp_path, bwrap):
    repo = sandboxed_project(git_repo, tmp_path, network=True, probe=False)
    token = uuid.uuid4().hex
    proc = start_run(repo, tmp_path, env={"FAKE_AGENT_SCENARIO": "hang",
                                          "FAKE_SANDBOX_TOKEN": token})
    wait_for(lambda: len(alive_with_env("FAKE_SANDBOX_TOKEN", token)) >= 2,
             what="bwrap and the agent")
    proc.kill()
    proc.wait(timeout=10)
    # --die-with-parent and the sandbox's own pid namespace: no recovery needed for this
    wait_for(lambda: alive_with_env("FAKE_SANDBOX_TOKEN", token) == [], timeout=5,
             what="the sandboxed agent gone with the daemon")


def test_fake_claude_works_in_the_sandbox(git_repo, tmp_path, bwrap):
    repo = sandboxed_project(git_repo, tmp_path, network=False, probe=False)
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "feature 1: implement by claude" in git(repo, "show", "ai-develop:feature-1.txt")


# ---------------------------------------------------------------- refusing to run unconfined
def test_missing_bwrap_refuses_to_run(git_repo, tmp_path):
    repo = sandboxed_project(git_repo, tmp_path, network=True, probe=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "python3"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = run_cli("run", "--project", str(repo), env={"PATH": f"{bin_dir}"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the bwrap program (bubblewrap) is not installed" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert load_features(repo)[1]["status"] == "open"
    assert not (repo / ".orchestrator" / "worktrees").exists()


def test_bwrap_that_cannot_create_namespaces_refuses_to_run(git_repo, tmp_path):
    repo = sandboxed_project(git_repo, tmp_path, network=False, probe=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace, likely "
                    "because the kernel does not allow non-privileged user namespaces.' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    result = run_cli("run", "--project", str(repo),
                     env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 2
    assert "cannot create its namespaces here" in result.stderr
    assert "non-privileged user namespaces" in result.stderr
    assert load_features(repo)[1]["status"] == "open"


class FakeConfig(dict):
    """The settings a test names; every other key has its registry default."""
    project_root = Path("/nonexistent")

    def __missing__(self, key):
        from agent_orchestrator.config import SETTINGS_BY_KEY
        return SETTINGS_BY_KEY[key].default


def test_no_sandbox_asked_means_no_check():
    calls = []
    cfg = FakeConfig({"agent.sandbox": "none", "agent.network": True})
    assert check_available(cfg, runner=lambda *a, **k: calls.append(a)) is None
    assert calls == []


def test_check_reports_the_probe_failure(tmp_path):
    class Done:
        ok, returncode, stdout = False, 1, ""
        stderr = "bwrap: setting up uid map: Permission denied"

    (tmp_path / "bwrap").write_text("#!/bin/sh\n")
    (tmp_path / "bwrap").chmod(0o755)
    cfg = FakeConfig({"agent.sandbox": "bwrap", "agent.network": False})
    with pytest.raises(SandboxUnavailable) as err:
        check_available(cfg, env={"PATH": str(tmp_path)}, runner=lambda *a, **k: Done())
    assert "setting up uid map: Permission denied" in err.value.message
    assert err.value.exit_code == 2


# ---------------------------------------------------------------- the command line (pure)
def test_bwrap_argv_mount_order_and_flags():
    argv = bwrap_argv(["claude", "-p", "hi"], bwrap="/usr/bin/bwrap", cwd=Path("/w/t"),
                      writable=[Path("/w/t"), Path("/w/.git")], readable=[Path("/home/u")],
                      read_only=[Path("/w/.git/hooks")], hidden_dirs=[Path("/home/u/.ssh")],
                      hidden_files=[Path("/home/u/.netrc")], network=False,
                      setenv={"TMPDIR": "/tmp"})
    text = " ".join(argv)
    assert argv[0] == "/usr/bin/bwrap" and argv[-4:] == ["--", "claude", "-p", "hi"]
    order = [text.index(s) for s in ("--ro-bind / /", "--tmpfs /tmp", "--ro-bind /home/u /home/u",
                                     "--tmpfs /home/u/.ssh", "--ro-bind /dev/null /home/u/.netrc",
                                     "--bind /w/t /w/t", "--bind /w/.git /w/.git",
                                     "--ro-bind /w/.git/hooks /w/.git/hooks")]
    assert order == sorted(order)
    for flag in ("--unshare-pid", "--die-with-parent", "--cap-drop ALL", "--unshare-net",
                 "--chdir /w/t", "--setenv TMPDIR /tmp"):
        assert flag in text
    assert "--new-session" not in argv  # the runner ends the agent's process group
    assert "--unshare-net" not in bwrap_argv(["x"], bwrap="b", cwd=Path("/"), writable=[],
                                             network=True)


def test_wrapper_hides_only_existing_secrets_and_keeps_cli_state_writable(tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".aws").mkdir()
    (home / ".config" / "gcloud").mkdir(parents=True)
    (home / ".netrc").write_text("x")
    (home / ".codex").mkdir()
    (home / ".claude.json").write_text("{}")
    (tmp_path / "project" / "node_modules").mkdir(parents=True)
    cfg = FakeConfig({"agent.network": True, "worktree.symlinkDirs": ["node_modules"],
                      "worktree.dockerService": None})
    cfg.project_root = tmp_path / "project"
    wrap = bwrap_wrapper(cfg, git_common_dir=tmp_path / "project" / ".git", home=home,
                         env={"PATH": os.environ["PATH"], "HOME": str(home),
                              "TMPDIR": "/var/tmp/x"}, bwrap="/usr/bin/bwrap")
    worktree = tmp_path / "project" / ".orchestrator" / "worktrees" / "feature-1-x"
    argv = wrap(["python3", "-c", "pass"], worktree)
    pairs = list(zip(argv, argv[1:]))
    assert ("--tmpfs", str(home / ".ssh")) in pairs and ("--tmpfs", str(home / ".aws")) in pairs
    assert ("--tmpfs", str(home / ".config" / "gcloud")) in pairs
    assert ("/dev/null", str(home / ".netrc")) in pairs
    assert not any(str(home / ".kube") in a for a in argv)
    for writable in (worktree, tmp_path / "project" / ".git", home / ".codex",
                     home / ".claude.json", tmp_path / "project" / "node_modules"):
        assert ("--bind", str(writable)) in pairs, writable
    assert argv[argv.index("--") + 1] == shutil.which("python3")
    assert ("--setenv", "TMPDIR") in pairs


def test_wrapper_reports_a_missing_agent_binary_as_unavailable(tmp_path):
    from agent_orchestrator.errors import AgentUnavailable

    cfg = FakeConfig({"agent.network": True, "worktree.symlinkDirs": [],
                      "worktree.dockerService": None})
    cfg.project_root = tmp_path
    wrap = bwrap_wrapper(cfg, git_common_dir=tmp_path / ".git", home=tmp_path,
                         env={"PATH": str(tmp_path)})
    with pytest.raises(AgentUnavailable):
        wrap(["no-such-agent-cli"], tmp_path)


@pytest.mark.parametrize("docker", [False, True])
def test_docker_socket_is_hidden_unless_the_project_uses_docker(tmp_path, monkeypatch, bwrap,
                                                                docker):
    from agent_orchestrator import sandbox

    sock_path = Path("/var/tmp") / f"ao-docker-{uuid.uuid4().hex[:8]}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen(1)
    monkeypatch.setattr(sandbox, "DOCKER_SOCKETS", (str(sock_path),))
    cfg = FakeConfig({"agent.network": True, "worktree.symlinkDirs": [],
                      "worktree.dockerService": "app" if docker else None})
    cfg.project_root = tmp_path
    wrap = bwrap_wrapper(cfg, git_common_dir=tmp_path, home=None, bwrap=bwrap)
    code = (f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(sock_path)!r}); "
            "print('connected')")
    try:
        done = subprocess.run(wrap([sys.executable, "-c", code], tmp_path), capture_output=True,
                              text=True, timeout=30)
    finally:
        server.close()
        sock_path.unlink()
    assert ("connected" in done.stdout) is docker, done.stderr


def test_an_agent_program_under_tmp_stays_runnable(tmp_path):
    """/tmp is private in the sandbox; a program installed there (a CI checkout) is made visible."""
    tool = Path("/tmp") / f"ao-tool-{os.getpid()}"
    real = tool / "pkg"
    real.mkdir(parents=True, exist_ok=True)
    (real / "cli").write_text("#!/bin/sh\n")
    link = tool / "bin"
    link.mkdir(exist_ok=True)
    if not (link / "agent").exists():
        (link / "agent").symlink_to(real / "cli")
    try:
        cfg = FakeConfig({"agent.network": True, "worktree.symlinkDirs": [],
                          "worktree.dockerService": None})
        cfg.project_root = tmp_path / "project"
        wrap = bwrap_wrapper(cfg, git_common_dir=tmp_path / "project" / ".git", home=None,
                             env={"PATH": os.environ["PATH"]}, bwrap="/usr/bin/bwrap")
        argv = wrap([str(link / "agent")], tmp_path)
        pairs = list(zip(argv, argv[1:], argv[2:]))
        assert ("--ro-bind", str(link), str(link)) in pairs
        assert ("--ro-bind", str(real), str(real)) in pairs
        assert argv.index(str(link)) > argv.index("/tmp")  # after the private /tmp
        outside = wrap(["/usr/bin/env"], tmp_path)
        assert "/usr/bin" not in outside[:outside.index("--")]
    finally:
        shutil.rmtree(tool)
