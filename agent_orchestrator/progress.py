"""The progress file: one human-readable block per feature outcome, appended atomically."""
from __future__ import annotations

import fcntl
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import OrchestratorError

MAX_REASON_CHARS = 2000


def _field(feature: Any, name: str) -> Any:
    if isinstance(feature, dict):
        return feature.get(name)
    return getattr(feature, name, None)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def format_outcome(*, feature: Any, outcome: str, reason: str | None, branch: str, attempts: int,
                   sessions: int, cost_usd: float | None, when: datetime) -> str:
    """The block for one outcome; pure. A naive `when` is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    stamp = when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = _one_line(_field(feature, "name") or "")
    title = f"#{_field(feature, 'id')} {name}".rstrip()
    cost = "n/a" if cost_usd is None else f"${cost_usd:.2f}"
    lines = [f"## {stamp} — {title} — {outcome.upper()}",
             f"branch: {branch} · attempts: {attempts} · sessions: {sessions} · cost: {cost}"]
    if reason and reason.strip():
        text = reason.strip()
        if len(text) > MAX_REASON_CHARS:
            text = text[:MAX_REASON_CHARS].rstrip() + " …"
        body = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
        lines.append(f"reason: {body[0]}")
        lines += [f"  {ln}" for ln in body[1:]]
    return "\n".join(lines) + "\n\n"


def append_outcome(path: Path, *, feature: Any, outcome: str, reason: str | None, branch: str,
                   attempts: int, sessions: int, cost_usd: float | None, when: datetime) -> None:
    """Append one block with a single O_APPEND write under an exclusive flock, then fsync.
    Creates the file (0644) when missing; starts on a new line if the file does not end with one."""
    block = format_outcome(feature=feature, outcome=outcome, reason=reason, branch=branch,
                           attempts=attempts, sessions=sessions, cost_usd=cost_usd, when=when)
    data = block.encode("utf-8")
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OrchestratorError(f"cannot open the progress file {path}: {exc.strerror}",
                                "check that the file and its directory are writable") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as exc:
        raise OrchestratorError(f"cannot append to the progress file {path}: {exc.strerror}",
                                "check free disk space and that the file is writable") from exc
    finally:
        os.close(fd)
