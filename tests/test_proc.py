from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from agent_orchestrator import proc
from agent_orchestrator.errors import AgentUnavailable, ProcessError
from agent_orchestrator.proc import AgentProcess, LineSplitter

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
        return state[state.rfind(")") + 2] not in "ZX"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_dead(pid: int, within: float = 2.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


class Collector:
    def __init__(self):
        self.out: list[str] = []
        self.err: list[str] = []


def start(argv, tmp_path, col: Collector, **kw):
    return AgentProcess.start(argv, cwd=tmp_path, env=None, on_stdout=col.out.append,
                              on_stderr=col.err.append, **kw)


def run_agent(argv, tmp_path, **wait_kw):
    col = Collector()

    async def main():
        child = await start(argv, tmp_path, col, **wait_kw.pop("start_kw", {}))
        info = await child.wait(**wait_kw)
        return child, info

    child, info = asyncio.run(main())
    return col, child, info


# ------------------------------------------------------------------ run()

def test_run_captures_both_streams(tmp_path):
    done = proc.run(py("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"),
                    cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr, done.timed_out) == (3, "out\n", "err\n", False)
    assert not done.ok


def test_run_stdin_is_devnull(tmp_path):
    done = proc.run(py("import sys; print(repr(sys.stdin.read()))"), cwd=tmp_path, timeout=5)
    assert done.stdout.strip() == "''"


def test_run_rejects_string_argv(tmp_path):
    with pytest.raises(TypeError):
        proc.run("echo hi", cwd=tmp_path)


def test_run_missing_binary(tmp_path):
    with pytest.raises(ProcessError, match="'no-such-binary-xyz' not found"):
        proc.run(["no-such-binary-xyz"], cwd=tmp_path)


def test_run_missing_cwd(tmp_path):
    with pytest.raises(ProcessError, match="does not exist"):
        proc.run(["true"], cwd=tmp_path / "nope")


def test_run_check_raises_with_stderr(tmp_path):
    with pytest.raises(ProcessError, match="exited with code 2.*boom"):
        proc.run(py("import sys; sys.stderr.write('boom'); sys.exit(2)"), cwd=tmp_path, check=True)


def test_run_timeout_kills_group(tmp_path):
    code = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '30']); "
            "print(p.pid, flush=True); time.sleep(30)")
    t0 = time.monotonic()
    done = proc.run(py(code), cwd=tmp_path, timeout=0.5)
    assert done.timed_out and not done.ok
    assert time.monotonic() - t0 < 4
    assert wait_dead(int(done.stdout.split()[0]))


def test_run_returns_when_leader_exits_and_stops_leftovers(tmp_path):
    code = "import subprocess; p = subprocess.Popen(['sleep', '30']); print(p.pid, flush=True)"
    t0 = time.monotonic()
    done = proc.run(py(code), cwd=tmp_path, timeout=20)
    assert done.returncode == 0 and time.monotonic() - t0 < 5
    assert wait_dead(int(done.stdout.split()[0]))


def test_run_caps_output_keeping_tail(tmp_path):
    code = "import sys; sys.stdout.write('a' * 1_000_000 + 'THE-END')"
    done = proc.run(py(code), cwd=tmp_path, max_output=1000)
    assert len(done.stdout) == 1000 and done.stdout.endswith("aaaTHE-END")
    assert done.output_truncated


def test_run_decodes_invalid_utf8(tmp_path):
    done = proc.run(py("import sys; sys.stdout.buffer.write(b'a\\xffb')"), cwd=tmp_path)
    assert done.stdout == "a\ufffdb"


def test_run_uses_path_of_given_env(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text(f"#!{PY}\nprint('mine')\n")
    tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert proc.run(["mytool"], cwd=tmp_path, env=env).stdout == "mine\n"
    assert proc.which("mytool", env) == str(tool)
    assert proc.which("mytool", {"PATH": str(tmp_path)}) is None


def test_clean_env_drops_repo_pointing_git_vars():
    env = proc.clean_env({"GIT_DIR": "/x", "GIT_WORK_TREE": "/y", "GIT_INDEX_FILE": "i",
                          "GIT_SSH_COMMAND": "ssh", "PATH": "/bin"})
    assert env == {"GIT_SSH_COMMAND": "ssh", "PATH": "/bin"}


# ------------------------------------------------------------------ line splitting (pure)

def test_line_splitter_joins_chunks_and_handles_crlf_and_final_line():
    lines: list[str] = []
    s = LineSplitter(lines.append, max_line=100)
    for chunk in (b"he", b"llo\r\nwor", b"ld\n\npartial"):
        s.feed(chunk)
    assert lines == ["hello", "world", ""]
    s.close()
    assert lines[-1] == "partial"


def test_line_splitter_truncates_on_utf8_boundary():
    lines: list[str] = []
    s = LineSplitter(lines.append, max_line=4)
    s.feed("abé€xyz\n".encode())  # a b é(2) €(3) ...: cut after 'abé'
    s.feed(b"ok\n")
    assert lines == ["ab\u00e9 \u2026[line truncated: 10 bytes]", "ok"]


# ------------------------------------------------------------------ AgentProcess

def test_agent_huge_line_is_delivered_truncated_with_marker(tmp_path):
    code = ("import sys; w = sys.stdout.write; w('first\\n'); w('x' * 10_485_760 + '\\n'); "
            "w('after\\n')")
    col, child, info = run_agent(py(code), tmp_path, start_kw={"max_line": 1 << 20})
    assert info.reason == "exited" and info.returncode == 0
    assert col.out[0] == "first" and col.out[2] == "after"
    assert col.out[1] == "x" * (1 << 20) + " …[line truncated: 10485760 bytes]"


def test_agent_long_line_below_max_is_delivered_whole(tmp_path):
    col, _, info = run_agent(py("print('y' * 3_000_000)"), tmp_path)
    assert info.returncode == 0 and col.out == ["y" * 3_000_000]


def test_agent_invalid_utf8_and_final_line_without_newline(tmp_path):
    code = "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end\\nlast words')"
    col, _, _ = run_agent(py(code), tmp_path)
    assert col.out == ["ok \ufffd\ufffd end", "last words"]


def test_agent_reads_stdout_and_stderr_concurrently(tmp_path):
    code = ("import sys\n"
            "for i in range(1024):\n"
            "    sys.stdout.write('o' * 1023 + '\\n'); sys.stdout.flush()\n"
            "    sys.stderr.write('e' * 1023 + '\\n'); sys.stderr.flush()\n")
    col, _, info = run_agent(py(code), tmp_path, timeout=20)
    assert info.reason == "exited" and info.returncode == 0
    assert len(col.out) == 1024 and len(col.err) == 1024
    assert sum(len(x) + 1 for x in col.out) == 1 << 20


def test_agent_stdin_is_devnull(tmp_path):
    col, _, _ = run_agent(py("import sys; print(repr(sys.stdin.read()))"), tmp_path, timeout=5)
    assert col.out == ["''"]


def test_agent_timeout_kills_the_group_including_grandchild(tmp_path):
    code = ("import subprocess, time; p = subprocess.Popen(['sleep', '30']); "
            "print(p.pid, flush=True); time.sleep(30)")
    col, child, info = run_agent(py(code), tmp_path, timeout=0.5, grace=1)
    assert info.reason == "timeout"
    assert 0.4 < info.duration < 3
    assert not pid_alive(child.pid)
    assert wait_dead(int(col.out[0]))


def test_agent_ignoring_sigterm_is_killed_after_grace(tmp_path):
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(30)")
    col, _, info = run_agent(py(code), tmp_path, timeout=0.5, grace=0.2)
    assert col.out == ["ready"]
    assert info.reason == "timeout" and info.returncode == -9
    assert info.duration < 3


def test_agent_stall_detection(tmp_path):
    code = "import time; print('hello', flush=True); time.sleep(30)"
    col, _, info = run_agent(py(code), tmp_path, stall_timeout=0.3, grace=0.5)
    assert col.out == ["hello"]
    assert info.reason == "stalled" and info.duration < 3


def test_agent_steady_output_is_not_a_stall(tmp_path):
    code = "import time\nfor i in range(6):\n    print(i, flush=True); time.sleep(0.1)\n"
    col, _, info = run_agent(py(code), tmp_path, stall_timeout=0.4, timeout=10)
    assert info.reason == "exited" and col.out == [str(i) for i in range(6)]


def test_agent_terminate_is_idempotent_and_reports_stopped(tmp_path):
    col = Collector()

    async def main():
        child = await start(py("import time; print('up', flush=True); time.sleep(30)"), tmp_path, col)
        while not col.out:
            await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(child.wait())
        await asyncio.gather(child.terminate(grace=0.5), child.terminate(grace=0.5))
        info = await waiter
        await child.terminate()
        return info

    info = asyncio.run(main())
    assert info.reason == "stopped" and info.returncode == -15


def test_agent_terminate_after_exit_is_harmless(tmp_path):
    async def main():
        child = await start(["true"], tmp_path, Collector())
        info = await child.wait()
        await child.terminate(grace=0.2)
        return info

    assert asyncio.run(main()).reason == "exited"


def test_agent_leftover_grandchild_is_stopped_when_leader_exits(tmp_path):
    code = ("import subprocess; p = subprocess.Popen(['sleep', '30'], stdout=subprocess.DEVNULL); "
            "print(p.pid, flush=True)")
    col, _, info = run_agent(py(code), tmp_path, grace=0.5)
    assert info.reason == "exited" and info.returncode == 0
    assert wait_dead(int(col.out[0]))


def test_agent_missing_binary_is_unavailable(tmp_path):
    with pytest.raises(AgentUnavailable, match="agent binary 'no-such-agent-xyz' not found on PATH") as e:
        asyncio.run(start(["no-such-agent-xyz", "-p", "hi"], tmp_path, Collector()))
    assert e.value.hint


def test_agent_rejects_string_argv(tmp_path):
    with pytest.raises(TypeError):
        asyncio.run(start("claude -p hi", tmp_path, Collector()))


def test_agent_callback_error_stops_child_and_is_raised(tmp_path):
    def boom(line: str) -> None:
        raise ValueError(f"bad line {line}")

    async def main():
        child = await AgentProcess.start(
            py("import time; print('x', flush=True); time.sleep(30)"), cwd=tmp_path, env=None,
            on_stdout=boom, on_stderr=lambda line: None)
        return await child.wait(timeout=10)

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="bad line x"):
        asyncio.run(main())
    assert time.monotonic() - t0 < 3


def test_held_output_blocks_the_child_until_released(tmp_path):
    """Backpressure: while hold_output() says so, the pipes are not read and the child blocks on
    its writes; released, every line arrives, in order, and the child finishes."""
    lines = 20_000  # ~2 MB: far more than a pipe holds
    code = f"import sys\nfor i in range({lines}): sys.stdout.write('%06d' % i + 'x' * 94 + '\\n')"
    col = Collector()
    hold = {"on": True}

    async def main():
        child = await start(py(code), tmp_path, col, hold_output=lambda: hold["on"])
        await asyncio.sleep(1.5)
        seen_while_held = len(col.out)
        still_running = pid_alive(child.pid)
        hold["on"] = False
        info = await child.wait(timeout=30)
        return seen_while_held, still_running, info

    seen_while_held, still_running, info = asyncio.run(main())
    assert still_running, "the child should be blocked writing into a full pipe"
    assert seen_while_held < 2_000, seen_while_held  # one chunk read, then held
    assert info.returncode == 0
    assert len(col.out) == lines and col.out[-1].startswith(f"{lines - 1:06d}")
