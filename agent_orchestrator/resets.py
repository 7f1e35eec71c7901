"""When does a rate limit end? Parse the reset time out of an agent's own message (pure)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}

# Claude Code legacy: "Claude AI usage limit reached|1759123456"
LEGACY_RE = re.compile(r"usage limit reached\|(\d{9,13})")
# Claude Code: "resets 4:49am (UTC)", "resets 4pm (Europe/Paris)", "resets Apr 23 at 4pm (Europe/Paris)"
CLAUDE_RE = re.compile(
    r"\bresets\s+(?:(?P<mon>[A-Za-z]{3,9})\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?:at\s+)?)?"
    r"(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)?(?:\s*\((?P<tz>[^)]+)\))?", re.IGNORECASE)
# Codex (local time of the process; the child runs with TZ=UTC):
# "try again at 2:51 AM.", "try again at Sep 29th, 2026 12:55 AM."
CODEX_RE = re.compile(
    r"\btry again at\s+(?:(?P<mon>[A-Za-z]{3,9})\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<year>\d{4}),?\s+)?"
    r"(?P<h>\d{1,2}):(?P<m>\d{2})\s*(?P<ampm>[AP]M)?", re.IGNORECASE)
# Relative: Gemini "Suggested retry after 60s.", "Your quota will reset after 2h30m0s.";
# OpenAI "Please try again in 1.5s.", "retry in 23.4s".
RELATIVE_RE = re.compile(
    r"\b(?:retry|try again|reset)\s+(?:after|in)\s+(?P<dur>(?:\d+(?:\.\d+)?\s*(?:ms|h|m|s)(?![a-z])\s*)+"
    r"|\d+(?:\.\d+)?\s*(?:milliseconds?|seconds?|secs?|minutes?|mins?|hours?|hrs?)\b)", re.IGNORECASE)
DURATION_PART_RE = re.compile(
    r"(\d+(?:\.\d+)?)\s*(ms|milliseconds?|h|hours?|hrs?|m|minutes?|mins?|s|seconds?|secs?)(?![a-z])", re.IGNORECASE)
UNIT_SECONDS = {"ms": 0.001, "millisecond": 0.001, "h": 3600, "hour": 3600, "hr": 3600, "m": 60, "minute": 60,
                "min": 60, "s": 1, "second": 1, "sec": 1}


def zone(name: str | None) -> tzinfo:
    """The IANA zone `name`; UTC when it is missing, unknown or tzdata is not installed."""
    if not name or name.strip().upper() in ("UTC", "GMT", "Z"):
        return timezone.utc
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def _hour24(hour: int, ampm: str | None) -> int | None:
    if ampm:
        if not 1 <= hour <= 12:
            return None
        pm = ampm.lower().startswith("p")
        return (hour % 12) + (12 if pm else 0)
    return hour if 0 <= hour <= 23 else None


def _month(name: str | None) -> int | None:
    return MONTHS.get(name[:3].lower()) if name else None


def _wall_time(now: datetime, tz: tzinfo, *, hour: int, minute: int, month: int | None, day: int | None,
               year: int | None) -> datetime | None:
    """The wall-clock time in `tz`: a full date as given (the year inferred when absent), or the
    next occurrence of the time of day after `now`."""
    local_now = now.astimezone(tz)
    try:
        if month is None:
            candidate = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if candidate <= local_now:
                candidate = (candidate.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=tz)
            return candidate
        candidate = datetime(year or local_now.year, month, day or 1, hour, minute, tzinfo=tz)
        if year is None and candidate < local_now - timedelta(days=1):
            candidate = candidate.replace(year=candidate.year + 1)
        return candidate
    except ValueError:
        return None


def parse_duration(text: str) -> float | None:
    """Seconds in "2h30m0s", "60s", "1.5s", "500ms", "20 seconds"; None when nothing matches."""
    parts = DURATION_PART_RE.findall(text)
    if not parts:
        return None
    total = 0.0
    for number, unit in parts:
        unit = unit.lower()
        key = unit if unit in UNIT_SECONDS else unit.rstrip("s")
        total += float(number) * UNIT_SECONDS[key]
    return total


def parse_reset(text: str, *, now: datetime) -> datetime | None:
    """The time a rate limit resets, from any format the agent CLIs print (see agent-clis.md), as an
    aware UTC datetime; None when the text names no reset time. A naive `now` is taken as UTC."""
    if not text:
        return None
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    found = _parse_absolute(text, now)
    if found is None:
        match = RELATIVE_RE.search(text)
        seconds = parse_duration(match.group("dur")) if match else None
        found = now + timedelta(seconds=seconds) if seconds is not None else None
    return found.astimezone(timezone.utc) if found is not None else None


def _parse_absolute(text: str, now: datetime) -> datetime | None:
    match = LEGACY_RE.search(text)
    if match:
        epoch = int(match.group(1))
        return datetime.fromtimestamp(epoch / 1000 if epoch > 10**11 else epoch, timezone.utc)
    for regex in (CLAUDE_RE, CODEX_RE):
        for match in regex.finditer(text):
            if regex is CLAUDE_RE and not (match.group("ampm") or match.group("m")):
                continue
            hour = _hour24(int(match.group("h")), match.group("ampm"))
            minute = int(match.group("m") or 0)
            month = _month(match.group("mon"))
            if hour is None or minute > 59 or (match.group("mon") and month is None):
                continue
            tz = zone(match.groupdict().get("tz"))
            year = int(match.group("year")) if match.groupdict().get("year") else None
            day = int(match.group("day")) if match.group("day") else None
            found = _wall_time(now, tz, hour=hour, minute=minute, month=month, day=day, year=year)
            if found is not None:
                return found
    return None
