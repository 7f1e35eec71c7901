from __future__ import annotations

import fcntl
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from agent_orchestrator.errors import OrchestratorError
from agent_orchestrator.progress import append_outcome, format_outcome

WHEN = datetime(2026, 11, 24, 3, 12, 45, tzinfo=timezone.utc)


@dataclass
class FakeFeature:
    id: int
    name: str


def args(**overrides):
    base = dict(feature=FakeFeature(3, "Login page"), outcome="passed", reason=None,
                branch="feature/3-login-page", attempts=1, sessions=2, cost_usd=0.0512, when=WHEN)
    base.update(overrides)
    return base


def test_passed_block_format():
    assert format_outcome(**args()) == (
        "## 2026-11-24 03:12 UTC — #3 Login page — PASSED\n"
        "branch: feature/3-login-page · attempts: 1 · sessions: 2 · cost: $0.05\n\n")


def test_failed_block_with_reason_and_unknown_cost():
    block = format_outcome(**args(
        feature={"id": 12, "name": "Export\nCSV"}, outcome="failed", cost_usd=None, attempts=3,
        reason="verifier gave no verdict\n\nSTEP 2: FAIL button missing\n",
        when=datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))))
    assert block == (
        "## 2026-01-02 03:00 UTC — #12 Export CSV — FAILED\n"
        "branch: feature/3-login-page · attempts: 3 · sessions: 2 · cost: n/a\n"
        "reason: verifier gave no verdict\n"
        "  STEP 2: FAIL button missing\n\n")


def test_long_reason_is_cut_and_naive_time_is_utc():
    block = format_outcome(**args(reason="x" * 5000, when=datetime(2026, 3, 4, 5, 6)))
    assert block.startswith("## 2026-03-04 05:06 UTC")
    assert len(block) < 2300 and "x …\n\n" in block


def test_append_creates_file_and_keeps_existing_content(tmp_path):
    path = tmp_path / "orchestrator-progress.txt"
    append_outcome(path, **args())
    assert path.read_text() == format_outcome(**args())
    path.write_text(path.read_text() + "a note typed by the user without newline")
    append_outcome(path, **args(outcome="failed", reason="no commits"))
    text = path.read_text()
    assert "without newline\n## 2026-11-24 03:12 UTC — #3 Login page — FAILED\n" in text
    assert text.endswith("reason: no commits\n\n")


def test_unwritable_location_is_a_clear_error(tmp_path):
    with pytest.raises(OrchestratorError) as info:
        append_outcome(tmp_path / "missing-dir" / "progress.txt", **args())
    assert "progress file" in info.value.message and "missing-dir" in info.value.message


def test_concurrent_appends_stay_whole(tmp_path):
    path = tmp_path / "progress.txt"
    reason = "line of reason text " * 150 + "\nsecond line"

    def work(n):
        for i in range(10):
            append_outcome(path, **args(feature=FakeFeature(n * 100 + i, f"feature {n}-{i}"),
                                        outcome="failed", reason=reason))

    torn = []
    done = threading.Event()

    def read_with_shared_lock():
        while not done.is_set():
            with open(path, "a+") as f:
                fcntl.flock(f, fcntl.LOCK_SH)
                f.seek(0)
                text = f.read()
            if text and not text.endswith("\n\n"):
                torn.append(text[-80:])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    reader = threading.Thread(target=read_with_shared_lock)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert torn == []
    blocks = path.read_text().split("\n\n")
    assert blocks[-1] == ""
    blocks = blocks[:-1]
    assert len(blocks) == 80
    expected = {format_outcome(**args(feature=FakeFeature(n * 100 + i, f"feature {n}-{i}"),
                                      outcome="failed", reason=reason)).rstrip("\n")
                for n in range(8) for i in range(10)}
    assert set(blocks) == expected
    assert all(re.match(r"## \d{4}-\d\d-\d\d \d\d:\d\d UTC — #\d+ ", b) for b in blocks)
