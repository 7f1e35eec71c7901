"""Every reset-time format the agent CLIs print (agent-clis.md)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent_orchestrator.resets import parse_duration, parse_reset, zone

UTC = timezone.utc


def at(text):
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NOW = at("2026-11-24T01:00:00")  # Paris is UTC+1 in November, UTC+2 in April

CASES = [
    # Claude Code, time of day within 24 h: the next occurrence after now
    ("You've hit your 5-hour limit · resets 4:49am (UTC)", NOW, at("2026-11-24T04:49:00")),
    ("You've hit your 5-hour limit · resets 4:49am (UTC)", at("2026-11-24T05:00:00"), at("2026-11-25T04:49:00")),
    ("You've hit your weekly limit · resets 4pm (Europe/Paris)", NOW, at("2026-11-24T15:00:00")),
    ("You've hit your Opus limit · resets 12am (UTC)", NOW, at("2026-11-25T00:00:00")),
    ("You've hit your session limit · resets 12:30pm (America/New_York)", NOW, at("2026-11-24T17:30:00")),
    ("You've hit your Sonnet limit · resets 4:49am (Mars/Olympus)", NOW, at("2026-11-24T04:49:00")),
    ("You've hit your usage credit limit · resets 3am", NOW, at("2026-11-24T03:00:00")),
    # Claude Code, with a date
    ("You've hit your weekly limit · resets Apr 23 at 4pm (Europe/Paris)", at("2026-04-01T00:00:00"),
     at("2026-04-23T14:00:00")),
    ("You've hit your weekly limit · resets Apr 23 at 4pm (Europe/Paris)", NOW, at("2027-04-23T14:00:00")),
    ("You've hit your weekly limit · resets Nov 30 at 9:15am (UTC)", NOW, at("2026-11-30T09:15:00")),
    # Claude Code legacy
    ("Claude AI usage limit reached|1795500000", NOW, datetime.fromtimestamp(1795500000, UTC)),
    ("Claude AI usage limit reached|1795500000000", NOW, datetime.fromtimestamp(1795500000, UTC)),
    # Codex (the child runs with TZ=UTC)
    ("You\u2019ve hit your usage limit. Upgrade to Pro, or try again at 2:51 AM.", NOW, at("2026-11-24T02:51:00")),
    ("You\u2019ve hit your usage limit. try again at 12:55 AM.", NOW, at("2026-11-25T00:55:00")),
    ("You've hit your usage limit. try again at 1:05 PM.", NOW, at("2026-11-24T13:05:00")),
    ("You\u2019ve hit your usage limit. ... try again at Sep 29th, 2026 12:55 AM.", NOW, at("2026-09-29T00:55:00")),
    ("try again at Dec 1st, 2026 3:07 PM.", NOW, at("2026-12-01T15:07:00")),
    # Gemini and OpenAI, relative
    ("[API Error: Resource has been exhausted (e.g. check quota).\nSuggested retry after 60s.]", NOW,
     NOW + timedelta(seconds=60)),
    ("Your quota will reset after 2h30m0s.", NOW, NOW + timedelta(hours=2, minutes=30)),
    ("Your quota will reset after 45m.", NOW, NOW + timedelta(minutes=45)),
    ("Please try again in 1.5s. Visit https://platform.openai.com", NOW, NOW + timedelta(seconds=1.5)),
    ("Suggested retry after 500ms.", NOW, NOW + timedelta(milliseconds=500)),
    ("Please retry in 20 seconds", NOW, NOW + timedelta(seconds=20)),
]


@pytest.mark.parametrize("text,now,expected", CASES)
def test_parse_reset(text, now, expected):
    result = parse_reset(text, now=now)
    assert result == expected
    assert result.tzinfo is not None and result.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", [
    "", "API Error: Request rejected (429) · try again later", "the tests reset the database", "resets soon",
    "resets 25:00 (UTC)", "try again at 13:61 PM.",
])
def test_no_reset_time(text):
    assert parse_reset(text, now=NOW) is None


def test_naive_now_is_utc():
    assert parse_reset("resets 4:49am (UTC)", now=datetime(2026, 11, 24, 1, 0)) == at("2026-11-24T04:49:00")


def test_absolute_time_wins_over_relative_hint():
    text = "You've hit your 5-hour limit · resets 4:49am (UTC). Suggested retry after 60s."
    assert parse_reset(text, now=NOW) == at("2026-11-24T04:49:00")


@pytest.mark.parametrize("text,seconds", [("2h30m0s", 9000), ("60s", 60), ("1.5s", 1.5), ("500ms", 0.5),
                                          ("3 minutes", 180), ("1 hour", 3600), ("soon", None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_unknown_zone_falls_back_to_utc():
    assert zone("Not/AZone") is UTC
    assert zone(None) is UTC
    assert zone("Europe/Paris").utcoffset(datetime(2026, 1, 1)) == timedelta(hours=1)
