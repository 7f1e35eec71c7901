"""Shared machinery of the fake agent CLIs in tests/fakes (claude, codex, gemini).

Each fake parses its real CLI's argv, picks a scenario (FAKE_AGENT_SCENARIO), builds a plan of
steps (assistant text, a shell tool call that really runs in the working directory, a flood of
output) and hands the steps to a CLI-specific renderer that prints them in that CLI's exact
output format. Error scenarios replay the recorded transcripts in tests/transcripts.
See README.md in this directory for the contract.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

FAKES_DIR = os.path.dirname(os.path.abspath(__file__))
TRANSCRIPTS_DIR = os.path.join(os.path.dirname(FAKES_DIR), "transcripts")

WORK = ("implement", "fix", "resolve")
VERDICTS = ("verdict_pass", "verdict_fail", "verdict_fail_step2", "verdict_in_tool_output", "no_verdict")
SCENARIOS = (
    "default", *WORK, "leftover", "no_commit", "crash", "hang", "hang_ignore_term", "flood", "nonjson",
    "ratelimit", "usage_limit", "overloaded", "max_turns", "quota", "retry_then_implement", *VERDICTS,
)
RECORDED = {
    ("claude", "ratelimit"): "claude-ratelimit",
    ("claude", "overloaded"): "claude-overloaded",
    ("claude", "max_turns"): "claude-maxturns",
    ("codex", "ratelimit"): "codex-ratelimit",
    ("codex", "overloaded"): "codex-server-error",
    ("codex", "quota"): "codex-quota",
    ("gemini", "ratelimit"): "gemini-ratelimit",
    ("gemini", "overloaded"): "gemini-overloaded",
}
HEADING = re.compile(
    r"^#\s*(Implement|Verify|Fix|Resolve merge conflict for)\s+feature\s+#([^\s:]+)", re.IGNORECASE | re.MULTILINE
)
PHASES = {"implement": "implement", "verify": "verify", "fix": "fix", "resolve merge conflict for": "conflict"}
MERGE_IN_PROMPT = re.compile(r"\bgit merge\s+(?:-[-\w]+\s+)*([\w./@^~-]+)")
NOISE = (b"warning: something looks odd, continuing", b"Loading project configuration...", b"note: cache miss")


class UsageError(Exception):
    """A rejected command line: `message` goes to stderr verbatim, the fake exits with `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message if message.endswith("\n") else message + "\n"
        self.code = code


class StopRun(Exception):
    """Raised by a renderer after it printed a terminal event (e.g. Claude's max-turns result)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Text:
    def __init__(self, text: str) -> None:
        self.text = text


class Flood:
    pass


class Tool:
    """A shell command the agent runs. `action(allow_git)` does the real work, returns (output, exit code)."""

    def __init__(self, command: str, action, *, writes: bool, description: str = "Run shell command") -> None:
        self.command = command
        self.action = action
        self.writes = writes
        self.description = description


# ---------------------------------------------------------------- ids, time, output


def new_uuid() -> str:
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_uuid7() -> str:
    ms = int(time.time() * 1000).to_bytes(6, "big")
    b = bytearray(ms + os.urandom(10))
    b[6] = (b[6] & 0x0F) | 0x70
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_hex(n: int = 24) -> str:
    return os.urandom(n // 2).hex()


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def is_uuid(text: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", text) is not None


class Output:
    """stdout writer: one line per event, flushed at once; optional plain-text noise between lines."""

    def __init__(self) -> None:
        self.noise = False
        self._count = 0

    def raw(self, data: bytes) -> None:
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.buffer.flush()

    def json(self, obj: dict) -> None:
        self.raw(dumps(obj).encode("utf-8"))
        if self.noise:
            self.raw(NOISE[self._count % len(NOISE)])
            self._count += 1


STDERR_PREAMBLE: list[str] = []


def preamble(line: str) -> None:
    """A stderr line the CLI prints at start-up; a replay does not print its recorded copy again."""
    STDERR_PREAMBLE.append(line)
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def load_transcript(name: str) -> list[dict]:
    with open(os.path.join(TRANSCRIPTS_DIR, name + ".jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def find_line(lines: list[dict], **match) -> dict:
    """A deep copy of the first line whose top-level fields equal `match`."""
    for obj in lines:
        if all(obj.get(key) == value for key, value in match.items()):
            return json.loads(json.dumps(obj))
    raise KeyError(f"no line with {match} in transcript")


# ---------------------------------------------------------------- the run


class Run:
    """One invocation: who, where, what prompt, which scenario."""

    def __init__(self, agent: str, argv: list[str], prompt: str, cwd: str, session_id: str, model: str | None) -> None:
        self.agent = agent
        self.argv = argv
        self.prompt = prompt
        self.cwd = cwd
        self.session_id = session_id
        self.model = model
        self.start = time.time()
        self.out = Output()
        match = HEADING.search(prompt)
        self.phase = PHASES[match.group(1).lower()] if match else "implement"
        self.feature_id = match.group(2) if match else "unknown"
        self.scenario = "default"

    @property
    def feature_file(self) -> str:
        return os.environ.get("FAKE_AGENT_FILE") or f"feature-{self.feature_id}.txt"

    def git(self, *args: str) -> tuple[int, str]:
        proc = subprocess.run(
            ["git", *args], cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
        )
        return proc.returncode, proc.stdout


def select_scenario(agent: str, prompt: str, env=os.environ) -> str:
    """FAKE_AGENT_SCENARIO: a scenario name, or a path to a JSON rules file (first matching rule wins)."""
    value = env.get("FAKE_AGENT_SCENARIO", "").strip()
    if not value:
        return "default"
    if value in SCENARIOS:
        return value
    if not os.path.isfile(value):
        raise UsageError(
            f"fake {agent}: FAKE_AGENT_SCENARIO={value!r} is neither a scenario ({', '.join(SCENARIOS)}) "
            "nor an existing rules file", 3)
    try:
        with open(value, encoding="utf-8") as f:
            rules = json.load(f)
    except ValueError as exc:
        raise UsageError(f"fake {agent}: rules file {value} is not valid JSON: {exc}", 3) from None
    if not isinstance(rules, list):
        raise UsageError(f"fake {agent}: rules file {value} must hold a JSON list of rules", 3)
    for index, rule in enumerate(rules):
        scenario = rule.get("scenario", "default") if isinstance(rule, dict) else None
        if scenario not in SCENARIOS:
            raise UsageError(f"fake {agent}: rule {index} in {value}: unknown scenario {scenario!r}", 3)
        if rule.get("agent") not in (None, agent):
            continue
        if not re.search(rule.get("match", ""), prompt, re.MULTILINE):
            continue
        if "times" in rule and not _take_turn(value, index, int(rule["times"]), env):
            continue
        return scenario
    return "default"


def _take_turn(rules_path: str, index: int, times: int, env) -> bool:
    """True (and counts the run) while rule `index` has been used fewer than `times` times."""
    import fcntl

    state_dir = env.get("FAKE_AGENT_STATE_DIR") or rules_path + ".state"
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, f"rule-{index}.count"), "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        used = int(f.read().strip() or 0)
        if used >= times:
            return False
        f.seek(0)
        f.truncate()
        f.write(str(used + 1))
        return True


def effective(run: Run) -> str:
    """The scenario after applying the prompt's phase (see README: work and verdict scenarios)."""
    scenario = run.scenario
    work = {"implement": "implement", "fix": "fix", "conflict": "resolve", "verify": "verdict_pass"}[run.phase]
    if scenario in ("default", *WORK):
        return work
    if run.phase == "verify" and scenario in ("leftover", "no_commit"):
        return "verdict_pass"
    if run.phase != "verify" and scenario in VERDICTS:
        return work
    return scenario


# ---------------------------------------------------------------- plans


def plan(run: Run, scenario: str) -> list:
    """Steps of a normal (non-replayed) run; the last step is always the final answer Text."""
    fid = run.feature_id
    if scenario in ("flood", "nonjson"):
        steps = plan(run, "verdict_pass" if run.phase == "verify" else effective_work(run))
        if scenario == "flood":
            steps.insert(1, Flood())
        return steps
    if scenario in ("implement", "fix"):
        verb = "Fixed" if run.phase == "fix" else "Implemented"
        return [Text(f"I'll work on feature {fid} now."), _write_tool(run, commit=True),
                Text(f"{verb} feature {fid} and committed the change.")]
    if scenario == "leftover":
        return [Text(f"I'll work on feature {fid} now."), _write_tool(run, commit=False),
                Text(f"Implemented feature {fid}.")]
    if scenario == "no_commit":
        return [Text(f"I looked at feature {fid}; nothing needs to change.")]
    if scenario == "resolve":
        return [Text(f"I'll resolve the merge conflict for feature {fid}."), _resolve_tool(run),
                Text(f"Resolved the conflict for feature {fid} and committed the merge.")]
    return _verdict_plan(run, scenario)


def effective_work(run: Run) -> str:
    return {"implement": "implement", "fix": "fix", "conflict": "resolve"}.get(run.phase, "implement")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _write_tool(run: Run, *, commit: bool) -> Tool:
    path = run.feature_file
    content = os.environ.get("FAKE_AGENT_CONTENT")
    line = f"feature {run.feature_id}: {run.phase} by {run.agent}"
    message = f"{'fix' if run.phase == 'fix' else 'feat'}: feature {run.feature_id}"
    if content is not None:
        content = content.replace("{id}", run.feature_id)
        command = f"printf '%s' {_quote(content)} > {path}"
    else:
        command = f"echo {_quote(line)} >> {path}"
    if commit:
        command += f" && git add -A && git commit -q -m {_quote(message)}"

    def action(allow_git: bool = True) -> tuple[str, int]:
        full = os.path.join(run.cwd, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if content is not None:
            with open(full, "w", encoding="utf-8") as f:
                f.write(content)
        else:
            header = "" if os.path.exists(full) else f"feature {run.feature_id}\n"
            with open(full, "a", encoding="utf-8") as f:
                f.write(f"{header}{line}\n")
        if not commit:
            return "", 0
        if not allow_git:
            return f"fatal: Unable to create '{run.cwd}/.git/index.lock': Read-only file system\n", 128
        code, out = run.git("add", "-A")
        if code:
            return out, code
        code, out = run.git("commit", "-q", "-m", message)
        return out, code

    return Tool(command, action, writes=True)


def _resolve_tool(run: Run) -> Tool:
    match = MERGE_IN_PROMPT.search(run.prompt)
    ref = match.group(1) if match else None
    command = (f"git merge --no-edit {ref}; " if ref else "") + "resolve conflict markers && git add -A && git commit --no-edit"

    def action(allow_git: bool = True) -> tuple[str, int]:
        if not allow_git:
            return f"fatal: Unable to create '{run.cwd}/.git/index.lock': Read-only file system\n", 128
        output = ""
        if run.git("rev-parse", "-q", "--verify", "MERGE_HEAD")[0] != 0:
            if ref is None:
                return _write_tool(run, commit=True).action(True)
            code, output = run.git("merge", "--no-edit", ref)
            if code == 0:
                return output, 0
        code, names = run.git("diff", "--name-only", "--diff-filter=U")
        if code:
            return output + names, code
        for name in filter(None, names.splitlines()):
            full = os.path.join(run.cwd, name)
            if os.path.isfile(full):
                with open(full, encoding="utf-8", errors="surrogateescape") as f:
                    text = f.read()
                with open(full, "w", encoding="utf-8", errors="surrogateescape") as f:
                    f.write(strip_conflict_markers(text))
        code, out = run.git("add", "-A")
        if code:
            return output + out, code
        code, out = run.git("commit", "--no-edit", "-q")
        return output + out, code

    return Tool(command, action, writes=True)


def strip_conflict_markers(text: str) -> str:
    """Resolve every conflict hunk by keeping both sides (ours, then theirs); drop a diff3 base section."""
    kept: list[str] = []
    state = "out"
    for line in text.splitlines(keepends=True):
        if line.startswith("<<<<<<< ") or line.rstrip("\n") == "<<<<<<<":
            state = "ours"
        elif state in ("ours", "base") and line.startswith("|||||||"):
            state = "base"
        elif state in ("ours", "base") and line.rstrip("\n") == "=======":
            state = "theirs"
        elif state == "theirs" and (line.startswith(">>>>>>> ") or line.rstrip("\n") == ">>>>>>>"):
            state = "out"
        elif state != "base":
            kept.append(line)
    return "".join(kept)


def _verdict_plan(run: Run, scenario: str) -> list:
    fid, path = run.feature_id, run.feature_file
    full = os.path.join(run.cwd, path)

    def read(allow_git: bool = True) -> tuple[str, int]:
        try:
            with open(full, encoding="utf-8", errors="replace") as f:
                return f.read(), 0
        except OSError:
            return f"cat: {path}: No such file or directory\n", 1

    intro = Text(f"I'll verify feature {fid} step by step.")
    head = f"Verification of feature {fid}:\n"
    if scenario == "verdict_in_tool_output":
        echoed = "STEP 1: FAIL\nVERDICT: FAIL\n"
        tool = Tool("cat verification-notes.txt", lambda allow_git=True: (echoed, 0), writes=False)
        return [intro, tool, Text(head + "STEP 1: PASS\nSTEP 2: PASS\nVERDICT: PASS")]
    steps = [intro, Tool(f"cat {path}", read, writes=False)]
    fixed = False
    if scenario == "verdict_fail_step2":
        text, code = read()
        fixed = code == 0 and re.search(rf"^feature {re.escape(fid)}: fix by ", text, re.MULTILINE) is not None
    if scenario == "verdict_pass" or (scenario == "verdict_fail_step2" and fixed):
        final = head + "STEP 1: PASS\nSTEP 2: PASS\nVERDICT: PASS"
    elif scenario in ("verdict_fail", "verdict_fail_step2"):
        final = head + f"STEP 1: PASS\nSTEP 2: FAIL - {path} does not show the expected result\nVERDICT: FAIL"
    else:
        final = f"I looked at feature {fid} but could not tell whether it works."
    return [*steps, Text(final)]


# ---------------------------------------------------------------- special outputs


def flood_lines(make_line, env=os.environ):
    """Yield FAKE_FLOOD_BYTES bytes (default 10 MiB) as lines of FAKE_FLOOD_LINE_BYTES (default 1 MiB),
    newline included: JSON text events when the line is long enough, with a few invalid UTF-8 bytes."""
    total = int(env.get("FAKE_FLOOD_BYTES") or 10 * 1024 * 1024)
    per = max(2, int(env.get("FAKE_FLOOD_LINE_BYTES") or 1024 * 1024))
    overhead = len(make_line("").encode("utf-8")) + 1
    pattern = b"flood output line " * 64
    written = 0
    while written < total:
        size = min(per, total - written)
        n = size - overhead
        if n >= 16:
            line = b""
            while len(line) + 1 != size and n >= 16:
                n -= len(line) + 1 - size if line else 0
                filler = (pattern * (n // len(pattern) + 1))[:n]
                line = make_line(filler.decode("ascii")).encode("utf-8")
            start = line.index(filler)
            body = bytearray(line)
            for pos in (n // 3, 2 * n // 3):
                body[start + pos] = 0xFF
            line = bytes(body)
        else:
            line = (b"\xfe" + b"x" * size)[: size - 1]
        written += len(line) + 1
        yield line


def replay(run: Run, name: str) -> int:
    """Print a recorded transcript (ids, cwd and prompt rewritten for this run) and its stderr;
    return the recorded exit code."""
    with open(os.path.join(TRANSCRIPTS_DIR, "index.json"), encoding="utf-8") as f:
        code = json.load(f)[name]["exit_code"]
    stderr_path = os.path.join(TRANSCRIPTS_DIR, name + ".stderr.txt")
    if os.path.exists(stderr_path):
        with open(stderr_path, encoding="utf-8") as f:
            recorded = f.read().splitlines(keepends=True)
        while recorded and (recorded[0].rstrip("\n") in STDERR_PREAMBLE or recorded[0].startswith("WARNING: proceeding")):
            recorded.pop(0)
        sys.stderr.write("".join(recorded))
        sys.stderr.flush()
    lines = load_transcript(name)
    for index, obj in enumerate(lines):
        for key in ("session_id", "thread_id"):
            if key in obj:
                obj[key] = run.session_id
        for key in ("cwd", "original_cwd"):
            if key in obj:
                obj[key] = run.cwd
        if obj.get("type") == "message" and obj.get("role") == "user":
            obj["content"] = run.prompt
        if index == len(lines) - 1:
            delay()
        run.out.json(obj)
    return code


def hang(run: Run, begin, *, ignore_term: bool) -> None:
    import signal

    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL)
    begin()
    log_invocation(run, None, end=False)
    while True:
        time.sleep(3600)


def delay() -> None:
    seconds = float(os.environ.get("FAKE_AGENT_DELAY") or 0)
    if seconds > 0:
        time.sleep(seconds)


def next_utc(hour: int, minute: int) -> float:
    """Epoch seconds of the next hour:minute UTC."""
    now = time.time()
    midnight = now - now % 86400
    at = midnight + hour * 3600 + minute * 60
    return at if at > now else at + 86400


LOG_ENV = re.compile(r"^(FAKE_|IS_SANDBOX$|TZ$|HOME$|LANG$|ANTHROPIC_|CLAUDE_|OPENAI_|CODEX_|GEMINI_|GOOGLE_)")


def log_invocation(run: Run | None, exit_code: int | None, *, end: bool = True, agent: str = "", argv=()) -> None:
    path = os.environ.get("FAKE_AGENT_LOG")
    if not path:
        return
    import fcntl

    record = {
        "agent": run.agent if run else agent,
        "argv": [run.agent if run else agent, *(run.argv if run else argv)],
        "cwd": run.cwd if run else os.getcwd(),
        "env": {k: v for k, v in os.environ.items() if LOG_ENV.match(k)},
        "env_keys": sorted(os.environ),
        "scenario": effective(run) if run else None,
        "phase": run.phase if run else None,
        "feature_id": run.feature_id if run else None,
        "session_id": run.session_id if run else None,
        "pid": os.getpid(),
        "start": run.start if run else time.time(),
        "end": time.time() if end else None,
        "exit_code": exit_code,
    }
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- argv parsing


def parse_argv(args: list[str], *, values: dict, flags: dict, variadic=(), multi=(), unknown, dash_values=False):
    """Parse options the way commander/clap/yargs do for the flags given (alias -> canonical name).
    `--opt=value` and `--opt value`; a variadic option eats arguments up to the next option;
    `--` ends options; a value may start with '-' only if `dash_values` (commander) and the option
    is not variadic. `unknown(arg)` returns the UsageError for an unknown option."""
    opts: dict = {}
    positionals: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positionals.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in flags:
            if eq:
                raise unknown(arg)
            opts[flags[name]] = True
            continue
        if name not in values:
            raise unknown(arg)
        canon = values[name]
        if eq:
            taken = [inline]
        elif i < len(args) and (not args[i].startswith("-") or (dash_values and canon not in variadic)):
            taken = [args[i]]
            i += 1
            while canon in variadic and i < len(args) and not args[i].startswith("-"):
                taken.append(args[i])
                i += 1
        else:
            raise UsageError(f"error: option '{name}' argument missing")
        if canon in multi:
            opts.setdefault(canon, []).extend(taken)
        else:
            opts[canon] = " ".join(taken) if canon in variadic else taken[0]
    return opts, positionals


def read_stdin_if_piped() -> str:
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return ""
        return sys.stdin.buffer.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""


# ---------------------------------------------------------------- main


def main(agent: str, setup) -> None:
    """setup(args) -> (Run, renderer); raises UsageError for a rejected command line."""
    run = None
    code = 0
    try:
        run, renderer = setup(sys.argv[1:])
        run.scenario = select_scenario(agent, run.prompt)
        os.chdir(run.cwd)
        code = execute(run, renderer)
    except UsageError as exc:
        sys.stderr.write(exc.message)
        sys.stderr.flush()
        code = exc.code
    except StopRun as exc:
        code = exc.code
    except BrokenPipeError:
        code = 141
    log_invocation(run, code, agent=agent, argv=sys.argv[1:])
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            pass
    os._exit(code)


def execute(run: Run, r) -> int:
    scenario = effective(run)
    if scenario in ("hang", "hang_ignore_term"):
        hang(run, r.begin, ignore_term=scenario == "hang_ignore_term")
    if scenario == "crash":
        r.begin()
        r.text(f"I'll start working on feature {run.feature_id}.")
        return r.crash()
    if (run.agent, scenario) in RECORDED:
        return replay(run, RECORDED[(run.agent, scenario)])
    if scenario in ("ratelimit", "overloaded", "max_turns", "quota", "usage_limit"):
        return r.special(scenario)
    run.out.noise = scenario == "nonjson"
    retrying = scenario == "retry_then_implement"
    steps = plan(run, effective_work(run) if retrying else scenario)
    r.begin()
    if retrying:
        r.retry()
    for step in steps[:-1]:
        if isinstance(step, Text):
            r.text(step.text)
        elif isinstance(step, Tool):
            r.tool(step)
        else:
            for line in flood_lines(r.flood_line):
                run.out.raw(line)
    delay()
    r.text(steps[-1].text)
    return r.finish(steps[-1].text)
