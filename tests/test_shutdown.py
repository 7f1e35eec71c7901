"""Shutdown: SIGINT/SIGTERM stop taking work, end the agents' process groups (TERM, then KILL),
record everything; a second Ctrl-C exits at once. No orphan process in any case."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from processes import agent_log, alive_with_env, output, sessions, start_run, wait_for
from projects import FAKES_DIR, REPO_ROOT, feature, load_features, make_project, run_cli

TWO_TRACKS = [{"name": "a", "categories": ["a"], "isDefault": True},
              {"name": "b", "categories": ["b"]}]


def hanging(tmp_path, scenario: str = "hang_ignore_term") -> tuple[str, dict]:
    token = uuid.uuid4().hex
    return token, {"FAKE_AGENT_SCENARIO": scenario, "FAKE_SHUTDOWN_TOKEN": token,
                   "FAKE_AGENT_LOG": str(tmp_path / "agents.jsonl")}


def two_agents_hanging(tmp_path, token) -> None:
    wait_for(lambda: len(agent_log(tmp_path / "agents.jsonl")) == 2
             and len(alive_with_env("FAKE_SHUTDOWN_TOKEN", token)) >= 4,
             what="two agents and their children running")


def test_ctrl_c_never_leaves_an_orphan(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1, "a"), feature(2, "b")], tracks=TWO_TRACKS,
                        agent={"killGraceSeconds": 0.5})
    token, env = hanging(tmp_path)
    proc = start_run(repo, tmp_path, env=env)
    two_agents_hanging(tmp_path, token)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130, output(tmp_path)
    wait_for(lambda: alive_with_env("FAKE_SHUTDOWN_TOKEN", token) == [], timeout=5,
             what="no process of the agents left")


def test_a_cancelled_stop_kills_the_group_at_once():
    """When the event loop goes away while an agent is being stopped (its grace period not over),
    the whole group gets SIGKILL instead of being left running."""
    from agent_orchestrator import proc as proc_mod

    code = ("import signal, subprocess, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "subprocess.Popen(['sleep', '300'])\n"
            "print('ready', flush=True)\n"
            "time.sleep(300)\n")

    async def start():
        ready = asyncio.Event()
        child = await proc_mod.AgentProcess.start(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=None,
            on_stdout=lambda line: ready.set(), on_stderr=lambda line: None)
        await asyncio.wait_for(ready.wait(), 10)
        return child

    loop = asyncio.new_event_loop()
    try:
        child = loop.run_until_complete(start())
        loop.create_task(child.terminate(grace=60))
        loop.run_until_complete(asyncio.sleep(0.2))
        pending = asyncio.all_tasks(loop)
        for task in pending:  # what asyncio.run does on its way out
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(asyncio.wait_for(child._exited, 5))  # not the 60 s grace
        child._transport.close()
        pgid = child.pid
    finally:
        loop.close()
    wait_for(lambda: not proc_mod._group_alive(pgid), timeout=3, what="the group killed")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_agents_records_and_exits(git_repo, tmp_path, sig):
    repo = make_project(git_repo, [feature(1, "a"), feature(2, "b"), feature(3, "a")],
                        tracks=TWO_TRACKS, agent={"killGraceSeconds": 0.5})
    token, env = hanging(tmp_path)
    proc = start_run(repo, tmp_path, env=env)
    two_agents_hanging(tmp_path, token)
    started = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout=30)
    took = time.monotonic() - started
    assert code == 130, output(tmp_path)
    assert took < 10
    assert alive_with_env("FAKE_SHUTDOWN_TOKEN", token) == []
    assert "stopping: ending the agents" in output(tmp_path)
    rows = sessions(repo)
    # the two tracks start their agents at the same time: either may be recorded first
    assert sorted((r["feature_id"], r["status"], r["exit_reason"]) for r in rows) == [
        (1, "interrupted", "stopped"), (2, "interrupted", "stopped")]
    assert all(r["ended_at"] for r in rows)
    feats = load_features(repo)
    assert [feats[i]["status"] for i in (1, 2, 3)] == ["open", "open", "open"]
    assert "Traceback" not in output(tmp_path)


def test_second_ctrl_c_exits_at_once_and_leaves_no_orphan(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1, "a"), feature(2, "b")], tracks=TWO_TRACKS,
                        agent={"killGraceSeconds": 60})
    token, env = hanging(tmp_path)
    proc = start_run(repo, tmp_path, env=env)
    two_agents_hanging(tmp_path, token)
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping" in output(tmp_path), what="the first Ctrl-C taken")
    time.sleep(0.3)
    assert proc.poll() is None, "the agents ignore SIGTERM: the graceful stop should be waiting"
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert time.monotonic() - started < 3
    wait_for(lambda: alive_with_env("FAKE_SHUTDOWN_TOKEN", token) == [], timeout=5,
             what="no process of the agents left")

    # nothing was recorded on the way out; the next run recovers it and completes
    result = run_cli("run", "--project", str(repo), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "recovered from an interrupted run" in result.stdout
    assert {f["status"] for f in load_features(repo).values()} == {"passed"}
    assert [r["status"] for r in sessions(repo)][:2] == ["interrupted", "interrupted"]


def test_stop_during_a_verify_command_ends_its_process_group(git_repo, tmp_path):
    token = uuid.uuid4().hex
    script = tmp_path / "slow_check.py"
    script.write_text("import subprocess, time\nsubprocess.Popen(['sleep', '300'])\n"
                      f"open({str(tmp_path / 'check-started')!r}, 'w').close()\ntime.sleep(300)\n")
    repo = make_project(git_repo, [feature(1)], verification={
        "disabled": False, "delayMs": 0, "commands": [[sys.executable, str(script)]]},
        agent={"killGraceSeconds": 0.5})
    proc = start_run(repo, tmp_path, env={"FAKE_SHUTDOWN_TOKEN": token})
    wait_for((tmp_path / "check-started").exists, what="the verify command")
    assert len(alive_with_env("FAKE_SHUTDOWN_TOKEN", token)) >= 2
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert alive_with_env("FAKE_SHUTDOWN_TOKEN", token) == []
    assert load_features(repo)[1]["status"] == "open"


def test_daemon_sigterm_stops_agents_and_exits_0(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1, "a"), feature(2, "b")], tracks=TWO_TRACKS,
                        agent={"killGraceSeconds": 0.5})
    token, env = hanging(tmp_path)
    full_env = {**os.environ, "PATH": f"{FAKES_DIR}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": str(REPO_ROOT), **env}
    with open(tmp_path / "daemon.out", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent_orchestrator", "start", "--project",
                                 str(repo), "--port", "0", "--autostart"], env=full_env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        two_agents_hanging(tmp_path, token)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "daemon.out").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert alive_with_env("FAKE_SHUTDOWN_TOKEN", token) == []
    assert [r["status"] for r in sessions(repo)] == ["interrupted", "interrupted"]
    assert {f["status"] for f in load_features(repo).values()} == {"open"}
    assert not (repo / ".orchestrator" / "daemon.json").exists() or \
        json.loads((repo / ".orchestrator" / "daemon.json").read_text()).get("pid") != proc.pid


def test_second_run_on_the_same_project_exits_2_naming_the_first(git_repo, tmp_path):
    repo = make_project(git_repo, [feature(1)])
    token, env = hanging(tmp_path, "hang")
    first = start_run(repo, tmp_path, env=env)
    try:
        wait_for(lambda: agent_log(tmp_path / "agents.jsonl"), what="the first run working")
        second = run_cli("run", "--project", str(repo), timeout=30)
        assert second.returncode == 2
        assert f"another agent-orchestrator `run` (pid {first.pid}) is already running" in \
            second.stderr
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=30)
    assert alive_with_env("FAKE_SHUTDOWN_TOKEN", token) == []
