"""The fake agent CLIs in tests/fakes: real subprocesses in real git repos, checked against the recorded transcripts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import FAKES_DIR, TRANSCRIPTS_DIR, git

CLIS = ("claude", "codex", "gemini")
INDEX = json.loads((TRANSCRIPTS_DIR / "index.json").read_text(encoding="utf-8"))
IMPLEMENT = "# Implement feature #12: Login form\n\nBuild the login form. Commit when done."
VERIFY = "# Verify feature #12: Login form\n\nSteps:\n1. open /login\n2. log in"
FIX = "# Fix feature #12: Login form\n\nThe verifier said: STEP 2: FAIL"


def argv(cli: str, prompt: str, repo: Path) -> list[str]:
    """The command lines the product's adapters use (DESIGN.md, agents/)."""
    exe = str(FAKES_DIR / cli)
    if cli == "claude":
        return [exe, "-p", prompt, "--output-format", "stream-json", "--verbose", "--max-turns", "5",
                "--dangerously-skip-permissions"]
    if cli == "codex":
        return [exe, "exec", "--json", "--skip-git-repo-check", "-C", str(repo),
                "--dangerously-bypass-approvals-and-sandbox", prompt]
    return [exe, "-p", prompt, "--output-format", "stream-json", "--approval-mode", "yolo", "--skip-trust"]


def run(cmd: list[str], cwd: Path, timeout: float = 20, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "IS_SANDBOX": "1", **env}
    return subprocess.run(cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def events(proc: subprocess.CompletedProcess) -> list[dict]:
    out = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def event_type(cli: str, obj: dict) -> str:
    if cli == "claude" and obj.get("subtype") and obj["type"] in ("system", "result"):
        return f"{obj['type']}/{obj['subtype']}"
    if cli == "codex" and isinstance(obj.get("item"), dict):
        return f"{obj['type']}/{obj['item']['type']}"
    return obj["type"]


def first_seen(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def recorded(name: str) -> list[dict]:
    return [json.loads(line) for line in (TRANSCRIPTS_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]


def shape(cli: str, obj: dict) -> tuple:
    """What kind of line this is, for comparing key sets with the recorded lines of the same kind."""
    if cli == "claude" and obj["type"] in ("assistant", "user"):
        return obj["type"], obj["message"]["content"][0]["type"], obj["message"].get("model") == "<synthetic>"
    if cli == "gemini" and obj["type"] == "message":
        return obj["type"], obj["role"]
    return (event_type(cli, obj),)


def key_sets(obj: dict) -> tuple:
    keys = [frozenset(obj)]
    for nested in ("message", "item", "stats", "usage", "error"):
        if isinstance(obj.get(nested), dict):
            keys.append((nested, frozenset(obj[nested])))
    if isinstance(obj.get("message"), dict) and isinstance(obj["message"].get("content"), list):
        keys.append(("block", frozenset(obj["message"]["content"][0])))
    return tuple(keys)


def recorded_shapes(cli: str) -> dict:
    shapes: dict = {}
    for name, entry in INDEX.items():
        if entry["cli"] == cli and (TRANSCRIPTS_DIR / f"{name}.jsonl").exists():
            for obj in recorded(name):
                shapes.setdefault(shape(cli, obj), set()).add(key_sets(obj))
    return shapes


def final_answer(cli: str, evs: list[dict]) -> str:
    if cli == "claude":
        texts = [e["message"]["content"][0]["text"] for e in evs
                 if e["type"] == "assistant" and e["message"]["content"][0]["type"] == "text"]
        result = [e for e in evs if e["type"] == "result"][-1]
        assert result["result"] == texts[-1]
        return texts[-1]
    if cli == "codex":
        return [e["item"]["text"] for e in evs if e["type"] == "item.completed"
                and e["item"]["type"] == "agent_message"][-1]
    last_tool = max((i for i, e in enumerate(evs) if e["type"] == "tool_result"), default=-1)
    return "".join(e["content"] for e in evs[last_tool + 1:] if e["type"] == "message" and e["role"] == "assistant")


def tool_outputs(cli: str, evs: list[dict]) -> str:
    if cli == "claude":
        return "".join(e["message"]["content"][0]["content"] for e in evs if e["type"] == "user")
    if cli == "codex":
        return "".join(e["item"]["aggregated_output"] for e in evs
                       if e["type"] == "item.completed" and e["item"]["type"] == "command_execution")
    return "".join(e["output"] for e in evs if e["type"] == "tool_result")


def commits(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s").splitlines()


# ------------------------------------------------------------------ success path and formats


@pytest.mark.parametrize("cli", CLIS)
def test_implement_commits_the_feature_file(cli, git_repo):
    proc = run(argv(cli, IMPLEMENT, git_repo), git_repo)
    assert proc.returncode == 0, proc.stderr
    assert commits(git_repo) == ["feat: feature 12", "initial commit"]
    assert (git_repo / "feature-12.txt").read_text() == f"feature 12\nfeature 12: implement by {cli}\n"
    assert git(git_repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("cli", CLIS)
def test_event_types_equal_the_recorded_success_run(cli, git_repo):
    proc = run(argv(cli, IMPLEMENT, git_repo), git_repo)
    evs = events(proc)
    assert len(evs) == len(proc.stdout.splitlines())
    assert first_seen([event_type(cli, e) for e in evs]) == INDEX[f"{cli}-success"]["event_types"]


@pytest.mark.parametrize("cli", CLIS)
def test_every_line_has_the_recorded_keys(cli, git_repo):
    shapes = recorded_shapes(cli)
    seen = set()
    for prompt, scenario in ((IMPLEMENT, "implement"), (VERIFY, "verdict_fail"), (IMPLEMENT, "usage_limit")):
        if (cli, scenario) == ("codex", "usage_limit"):
            scenario = "ratelimit"
        proc = run(argv(cli, prompt, git_repo), git_repo, FAKE_AGENT_SCENARIO=scenario)
        for obj in events(proc):
            kind = shape(cli, obj)
            if kind[0] == "rate_limit_event":
                continue
            assert kind in shapes, f"{cli} prints {kind}, never recorded"
            assert key_sets(obj) in shapes[kind], f"{cli} {kind}: keys differ from the recordings: {sorted(obj)}"
            seen.add(kind)
    assert len(seen) >= 4


def test_claude_result_keys_equal_the_success_transcript(git_repo):
    proc = run(argv("claude", IMPLEMENT, git_repo), git_repo)
    result = events(proc)[-1]
    expected = recorded("claude-success")[-1]
    assert list(result) == list(expected)
    assert result["subtype"] == "success" and result["is_error"] is False and result["num_turns"] == 2
    assert result["total_cost_usd"] > 0 and result["usage"]["input_tokens"] > 0
    assert result["session_id"] == events(proc)[0]["session_id"]


def test_claude_json_output_is_one_result_object(git_repo):
    cmd = [str(FAKES_DIR / "claude"), "-p", IMPLEMENT, "--output-format", "json", "--max-turns", "5",
           "--dangerously-skip-permissions"]
    proc = run(cmd, git_repo)
    assert proc.returncode == 0
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1
    assert list(json.loads(lines[0])) == list(recorded("claude-json-output")[0])
    assert commits(git_repo)[0] == "feat: feature 12"


def test_session_ids_are_fresh_uuids_or_the_requested_ones(git_repo):
    first = events(run(argv("claude", IMPLEMENT, git_repo), git_repo))[0]["session_id"]
    second = events(run(argv("claude", FIX, git_repo), git_repo))[0]["session_id"]
    assert first != second and len(first) == 36
    resumed = "0ee1bba9-b99d-4c72-a3a9-c40b4f2c17f5"
    evs = events(run(argv("claude", FIX, git_repo) + ["--resume", resumed], git_repo))
    assert {e["session_id"] for e in evs} == {resumed}
    codex = argv("codex", FIX, git_repo)
    evs = events(run(codex[:-1] + ["resume", "thread-7", FIX], git_repo))
    assert evs[0] == {"type": "thread.started", "thread_id": "thread-7"}
    evs = events(run(argv("gemini", FIX, git_repo) + ["--session-id", resumed], git_repo))
    assert evs[0]["session_id"] == resumed
    assert commits(git_repo)[:2] == ["fix: feature 12", "fix: feature 12"]


# ------------------------------------------------------------------ rejected command lines


def test_claude_stream_json_without_verbose_is_rejected(git_repo):
    cmd = [c for c in argv("claude", IMPLEMENT, git_repo) if c != "--verbose"]
    proc = run(cmd, git_repo)
    assert proc.returncode == 1
    assert proc.stderr.decode() == "Error: When using --print, --output-format=stream-json requires --verbose\n"
    assert proc.stdout == b"" and commits(git_repo) == ["initial commit"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the check applies to root only")
@pytest.mark.parametrize("sandbox", [None, "yes"])
def test_claude_skip_permissions_as_root_needs_is_sandbox_1(git_repo, sandbox):
    env = {k: v for k, v in os.environ.items() if k != "IS_SANDBOX"}
    if sandbox:
        env["IS_SANDBOX"] = sandbox
    proc = subprocess.run(argv("claude", IMPLEMENT, git_repo), cwd=git_repo, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=20)
    assert proc.returncode == 1
    assert "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons" in \
        proc.stderr.decode()
    assert commits(git_repo) == ["initial commit"]


def test_codex_full_auto_gives_the_recorded_error(git_repo):
    cmd = argv("codex", IMPLEMENT, git_repo)
    cmd[cmd.index("--dangerously-bypass-approvals-and-sandbox")] = "--full-auto"
    proc = run(cmd, git_repo, CODEX_HOME="/tmp/run/state/codex")
    assert proc.returncode == INDEX["codex-full-auto-flag"]["exit_code"] == 2
    assert proc.stderr.decode() == (TRANSCRIPTS_DIR / "codex-full-auto-flag.stderr.txt").read_text(encoding="utf-8")
    assert proc.stdout == b""


@pytest.mark.parametrize("cli, message", [
    ("claude", "error: unknown option '--bogus'"),
    ("codex", "error: unexpected argument '--bogus' found"),
    ("gemini", "Unknown argument: bogus"),
])
def test_unknown_flags_exit_2(cli, message, git_repo):
    cmd = argv(cli, IMPLEMENT, git_repo)
    proc = run(cmd + ["--bogus"], git_repo)
    assert proc.returncode == 2
    assert message in proc.stderr.decode()
    assert commits(git_repo) == ["initial commit"]


def test_claude_allowed_tools_is_variadic_like_commander(git_repo):
    cmd = [str(FAKES_DIR / "claude"), "-p", "--output-format", "stream-json", "--verbose",
           "--allowedTools", "Bash,Read", VERIFY]
    proc = run(cmd, git_repo)
    assert proc.returncode == 1
    assert "Input must be provided either through stdin or as a prompt argument" in proc.stderr.decode()


def test_codex_needs_a_git_repo_or_the_skip_flag(tmp_path):
    cmd = [c for c in argv("codex", IMPLEMENT, tmp_path) if c != "--skip-git-repo-check"]
    proc = run(cmd, tmp_path)
    assert proc.returncode == 1
    assert "Not inside a trusted directory and --skip-git-repo-check was not specified." in proc.stderr.decode()


def test_gemini_rejects_yolo_with_approval_mode(git_repo):
    proc = run(argv("gemini", IMPLEMENT, git_repo) + ["--yolo"], git_repo)
    assert proc.returncode == 1
    assert "Cannot use both --yolo (-y) and --approval-mode together" in proc.stderr.decode()


# ------------------------------------------------------------------ permissions and sandboxes


def test_claude_without_permission_flags_gets_its_write_denied(git_repo):
    cmd = [c for c in argv("claude", IMPLEMENT, git_repo) if c != "--dangerously-skip-permissions"]
    proc = run(cmd, git_repo)
    evs = events(proc)
    assert proc.returncode == 0
    denied = [e for e in evs if e["type"] == "user"][0]["message"]["content"][0]
    assert denied["is_error"] is True and "permissions to use Bash" in denied["content"]
    assert evs[-1]["permission_denials"][0]["tool_name"] == "Bash"
    assert commits(git_repo) == ["initial commit"] and not (git_repo / "feature-12.txt").exists()


@pytest.mark.parametrize("mode, file_written", [("read-only", False), ("workspace-write", True)])
def test_codex_sandbox_modes_cannot_commit(git_repo, mode, file_written):
    cmd = argv("codex", IMPLEMENT, git_repo)
    at = cmd.index("--dangerously-bypass-approvals-and-sandbox")
    cmd[at:at + 1] = ["-s", mode]
    proc = run(cmd, git_repo)
    assert proc.returncode == 0
    assert first_seen([event_type("codex", e) for e in events(proc)]) == INDEX["codex-workspace-write"]["event_types"]
    assert commits(git_repo) == ["initial commit"]
    assert (git_repo / "feature-12.txt").exists() is file_written


def test_claude_partial_messages_follow_the_recording(git_repo):
    proc = run(argv("claude", IMPLEMENT, git_repo) + ["--include-partial-messages"], git_repo)
    evs = events(proc)
    assert first_seen([event_type("claude", e) for e in evs]) == INDEX["claude-partial-messages"]["event_types"]
    shapes = recorded_shapes("claude")
    for obj in evs:
        assert key_sets(obj) in shapes[shape("claude", obj)]
    def stream_types(lines):
        return [e["event"]["type"] for e in lines if e["type"] == "stream_event"]

    assert first_seen(stream_types(evs)) == first_seen(stream_types(recorded("claude-partial-messages")))
    text = "".join(e["event"]["delta"].get("text", "") for e in evs if e["type"] == "stream_event"
                   and e["event"]["type"] == "content_block_delta")
    assert text == "".join(e["message"]["content"][0].get("text", "") for e in evs if e["type"] == "assistant")
    assert evs[-1]["begun_message_ids"] == list(dict.fromkeys(e["message"]["id"] for e in evs if e["type"] == "assistant"))


def test_gemini_without_yolo_cannot_run_shell_commands(git_repo):
    cmd = argv("gemini", IMPLEMENT, git_repo)
    cmd[cmd.index("yolo")] = "default"
    proc = run(cmd, git_repo)
    assert proc.returncode == 0
    assert "tool_use" not in [e["type"] for e in events(proc)]
    assert "YOLO" not in proc.stderr.decode()
    assert commits(git_repo) == ["initial commit"] and not (git_repo / "feature-12.txt").exists()


def test_claude_max_turns_stops_the_run(git_repo):
    cmd = argv("claude", IMPLEMENT, git_repo)
    cmd[cmd.index("--max-turns") + 1] = "1"
    proc = run(cmd, git_repo)
    result = events(proc)[-1]
    assert proc.returncode == 1
    assert (result["subtype"], result["is_error"], result["terminal_reason"]) == ("error_max_turns", True, "max_turns")
    assert result["errors"] == ["Reached maximum number of turns (1)"]
    assert list(result) == list(recorded("claude-maxturns")[-1])


# ------------------------------------------------------------------ scenarios


def test_rules_file_with_times_and_agent(git_repo, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([
        {"match": "^# Implement feature #12", "scenario": "no_commit", "times": 1},
        {"agent": "codex", "scenario": "crash"},
    ]))
    env = {"FAKE_AGENT_SCENARIO": str(rules), "FAKE_AGENT_STATE_DIR": str(tmp_path / "state")}
    assert run(argv("claude", IMPLEMENT, git_repo), git_repo, **env).returncode == 0
    assert commits(git_repo) == ["initial commit"]
    assert run(argv("claude", IMPLEMENT, git_repo), git_repo, **env).returncode == 0
    assert commits(git_repo)[0] == "feat: feature 12"
    assert run(argv("codex", IMPLEMENT, git_repo), git_repo, **env).returncode == 1
    assert (tmp_path / "state" / "rule-0.count").read_text() == "1"


def test_bad_scenario_is_a_setup_error(git_repo):
    proc = run(argv("claude", IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO="no_such_thing")
    assert proc.returncode == 3 and "fake claude" in proc.stderr.decode()


@pytest.mark.parametrize("cli", CLIS)
def test_verdicts_are_in_the_final_answer(cli, git_repo):
    proc = run(argv(cli, VERIFY, git_repo), git_repo, FAKE_AGENT_SCENARIO="verdict_fail")
    assert proc.returncode == 0
    answer = final_answer(cli, events(proc))
    assert answer.endswith("STEP 1: PASS\nSTEP 2: FAIL - feature-12.txt does not show the expected result\nVERDICT: FAIL")
    assert final_answer(cli, events(run(argv(cli, VERIFY, git_repo), git_repo))).endswith("VERDICT: PASS")
    assert "VERDICT" not in final_answer(cli, events(run(argv(cli, VERIFY, git_repo), git_repo,
                                                         FAKE_AGENT_SCENARIO="no_verdict")))
    evs = events(run(argv(cli, VERIFY, git_repo), git_repo, FAKE_AGENT_SCENARIO="verdict_in_tool_output"))
    assert "STEP 1: FAIL\nVERDICT: FAIL" in tool_outputs(cli, evs)
    assert final_answer(cli, evs).endswith("VERDICT: PASS")
    assert commits(git_repo) == ["initial commit"]


def test_verdict_fail_step2_passes_once_a_fix_landed(git_repo):
    env = {"FAKE_AGENT_SCENARIO": "verdict_fail_step2"}
    run(argv("claude", IMPLEMENT, git_repo), git_repo, **env)
    assert "VERDICT: FAIL" in final_answer("claude", events(run(argv("claude", VERIFY, git_repo), git_repo, **env)))
    run(argv("codex", FIX, git_repo), git_repo, **env)
    assert commits(git_repo)[:2] == ["fix: feature 12", "feat: feature 12"]
    assert "VERDICT: PASS" in final_answer("claude", events(run(argv("claude", VERIFY, git_repo), git_repo, **env)))


@pytest.mark.parametrize("cli, scenario, name", [
    ("claude", "ratelimit", "claude-ratelimit"), ("claude", "overloaded", "claude-overloaded"),
    ("claude", "max_turns", "claude-maxturns"), ("codex", "ratelimit", "codex-ratelimit"),
    ("codex", "quota", "codex-quota"), ("codex", "overloaded", "codex-server-error"),
    ("gemini", "ratelimit", "gemini-ratelimit"), ("gemini", "overloaded", "gemini-overloaded"),
])
def test_error_scenarios_replay_the_recordings(cli, scenario, name, git_repo):
    proc = run(argv(cli, IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO=scenario)
    assert proc.returncode == INDEX[name]["exit_code"]
    evs = events(proc)
    assert [event_type(cli, e) for e in evs] == [event_type(cli, e) for e in recorded(name)]
    expected = (TRANSCRIPTS_DIR / f"{name}.stderr.txt").read_text(encoding="utf-8")
    assert [mask_codex_home(line) for line in proc.stderr.decode().splitlines()] == [
        mask_codex_home(line) for line in expected.splitlines()]
    assert commits(git_repo) == ["initial commit"]


def mask_codex_home(line: str) -> str:
    return "WARNING: <codex home under /tmp>" if line.startswith("WARNING: proceeding") else line


def test_usage_limit_claude_and_codex(git_repo):
    proc = run(argv("claude", IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO="usage_limit")
    evs = events(proc)
    assert proc.returncode == 1
    limit = [e for e in evs if e["type"] == "rate_limit_event"][0]["rate_limit_info"]
    assert limit["status"] == "rejected" and 0 < limit["resetsAt"] - time.time() <= 86400
    assert time.gmtime(limit["resetsAt"])[3:5] == (4, 49)
    assert evs[-1]["result"] == "You've hit your 5-hour limit · resets 4:49am (UTC)" and evs[-1]["is_error"]
    proc = run(argv("codex", IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO="usage_limit")
    assert proc.returncode == 1
    assert "try again at 2:51 AM." in events(proc)[-1]["error"]["message"]


@pytest.mark.parametrize("cli", CLIS)
def test_crash_has_no_result(cli, git_repo):
    proc = run(argv(cli, IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO="crash")
    types = [event_type(cli, e) for e in events(proc)]
    assert proc.returncode == 1
    assert len(types) >= 2 and not {"result", "result/success", "turn.completed"} & set(types)
    assert proc.stderr


def test_leftover_and_no_commit(git_repo):
    assert run(argv("gemini", IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO="no_commit").returncode == 0
    assert git(git_repo, "status", "--porcelain") == ""
    assert run(argv("gemini", IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO="leftover").returncode == 0
    assert git(git_repo, "status", "--porcelain") == "?? feature-12.txt"
    assert commits(git_repo) == ["initial commit"]


def test_custom_file_and_content(git_repo):
    proc = run(argv("codex", IMPLEMENT, git_repo), git_repo, FAKE_AGENT_FILE="src/app.txt",
               FAKE_AGENT_CONTENT="feature {id} was here\n")
    assert proc.returncode == 0
    assert (git_repo / "src" / "app.txt").read_text() == "feature 12 was here\n"
    assert git(git_repo, "status", "--porcelain") == ""


def test_conflict_prompt_merges_and_keeps_both_sides(git_repo):
    git(git_repo, "checkout", "-q", "-b", "feature/3-x")
    (git_repo / "README.md").write_text("# demo project\nfeature side\n")
    git(git_repo, "commit", "-qam", "feature side")
    git(git_repo, "checkout", "-q", "main")
    (git_repo / "README.md").write_text("# demo project\nmain side\n")
    git(git_repo, "commit", "-qam", "main side")
    git(git_repo, "checkout", "-q", "feature/3-x")
    prompt = "# Resolve merge conflict for feature #3: X\n\nRun `git merge main`, resolve the conflicts, commit."
    proc = run(argv("claude", prompt, git_repo), git_repo)
    assert proc.returncode == 0, proc.stderr
    assert (git_repo / "README.md").read_text() == "# demo project\nfeature side\nmain side\n"
    assert len(git(git_repo, "log", "-1", "--format=%P").split()) == 2
    assert git(git_repo, "status", "--porcelain") == ""


def test_nonjson_lines_between_json_lines(git_repo):
    proc = run(argv("claude", IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO="nonjson")
    lines = proc.stdout.decode().splitlines()
    plain = [line for line in lines if not line.startswith("{")]
    assert proc.returncode == 0 and len(plain) >= 3 and not lines[1].startswith("{")
    assert first_seen([event_type("claude", e) for e in events(proc)]) == INDEX["claude-success"]["event_types"]
    assert commits(git_repo)[0] == "feat: feature 12"


@pytest.mark.parametrize("cli", CLIS)
def test_flood_prints_the_requested_bytes(cli, git_repo):
    proc = run(argv(cli, IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO="flood",
               FAKE_FLOOD_BYTES="250000", FAKE_FLOOD_LINE_BYTES="100000")
    assert proc.returncode == 0
    flood = [line for line in proc.stdout.split(b"\n") if b"flood output line" in line]
    assert [len(line) + 1 for line in flood] == [100000, 100000, 50000]
    for line in flood:
        with pytest.raises(UnicodeDecodeError):
            line.decode("utf-8")
        assert event_type(cli, json.loads(line.decode("utf-8", "replace"))) in (
            "assistant", "item.completed/agent_message", "message")
    assert commits(git_repo)[0] == "feat: feature 12"


def test_flood_default_size_and_tiny_lines(git_repo):
    proc = run(argv("codex", IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO="flood")
    flood = [line for line in proc.stdout.split(b"\n") if b"flood output line" in line]
    assert sum(len(line) + 1 for line in flood) == 10 * 1024 * 1024
    proc = run(argv("codex", IMPLEMENT, git_repo), git_repo, FAKE_AGENT_SCENARIO="flood",
               FAKE_FLOOD_BYTES="100", FAKE_FLOOD_LINE_BYTES="10")
    lines = proc.stdout.split(b"\n")
    assert sum(1 for line in lines if len(line) == 9 and not line.startswith(b"{")) == 10
    assert proc.returncode == 0


def _group_members(pgid: int) -> list[str]:
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            names.append(text[text.index("(") + 1:text.rindex(")")])
    return names


@pytest.mark.parametrize("scenario", ["hang", "hang_ignore_term"])
def test_hang_scenarios(scenario, git_repo):
    env = {**os.environ, "IS_SANDBOX": "1", "FAKE_AGENT_SCENARIO": scenario}
    proc = subprocess.Popen(argv("claude", IMPLEMENT, git_repo), cwd=git_repo, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert (first["type"], first["subtype"]) == ("system", "init")
        os.killpg(proc.pid, signal.SIGTERM)
        if scenario == "hang":
            assert proc.wait(timeout=5) == -signal.SIGTERM
            return
        time.sleep(0.3)
        assert proc.poll() is None
        assert "sleep" in _group_members(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=5) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while _group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _group_members(proc.pid) == []
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)
        proc.stdout.close()


def test_delay_and_invocation_log(git_repo, tmp_path):
    log = tmp_path / "calls.jsonl"
    started = time.monotonic()
    proc = run(argv("gemini", IMPLEMENT, git_repo), git_repo, FAKE_AGENT_DELAY="0.3", FAKE_AGENT_LOG=str(log),
               GEMINI_API_KEY="k", UNRELATED_SECRET="s")
    assert proc.returncode == 0 and time.monotonic() - started >= 0.3
    run(argv("claude", IMPLEMENT, git_repo) + ["--nope"], git_repo, FAKE_AGENT_LOG=str(log))
    first, second = [json.loads(line) for line in log.read_text().splitlines()]
    assert first["agent"] == "gemini" and first["argv"][0] == "gemini" and first["argv"][2] == IMPLEMENT
    assert (first["scenario"], first["phase"], first["feature_id"], first["exit_code"]) == ("implement", "implement",
                                                                                              "12", 0)
    assert first["cwd"] == str(git_repo) and first["end"] - first["start"] >= 0.3
    assert first["env"]["GEMINI_API_KEY"] == "k" and "UNRELATED_SECRET" not in first["env"]
    assert "UNRELATED_SECRET" in first["env_keys"] and first["pid"] > 0
    assert (second["agent"], second["exit_code"], second["scenario"]) == ("claude", 2, None)


def test_default_scenario_is_fast(git_repo):
    best = 10.0
    for _ in range(3):
        started = time.monotonic()
        assert run(argv("claude", IMPLEMENT, git_repo), git_repo).returncode == 0
        best = min(best, time.monotonic() - started)
    assert best < 0.3
