"""render_metrics: Prometheus text format 0.0.4, checked by a strict parser written here."""
from __future__ import annotations

import re

import pytest

from agent_orchestrator import __version__
from agent_orchestrator.metrics import CONTENT_TYPE, escape_label, format_value, render_metrics

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|NaN|[+-]Inf)"
HELP_RE = re.compile(rf"# HELP ({NAME}) ((?:[^\\\n]|\\[\\n])*)\Z")
TYPE_RE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)\Z")
SAMPLE_RE = re.compile(rf"({NAME})(?:\{{((?:{LABEL_NAME}={LABEL_VALUE})(?:,{LABEL_NAME}={LABEL_VALUE})*)?,?\}})? "
                       rf"({VALUE})(?: (-?\d+))?\Z")
PAIR_RE = re.compile(rf"({LABEL_NAME})=({LABEL_VALUE})")


def _unescape(quoted: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), quoted[1:-1])


def parse_exposition(text: str) -> dict[str, dict]:
    """Strict 0.0.4 parser: every line is HELP, TYPE or a sample; HELP/TYPE at most once per family
    and before its samples; samples of a family contiguous; no duplicate series; ends with \\n."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, dict] = {}
    closed: set[str] = set()
    current = None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        assert line, f"line {n}: empty line"
        if line.startswith("#"):
            m = HELP_RE.match(line) or TYPE_RE.match(line)
            assert m, f"line {n}: bad comment line {line!r}"
            name = m.group(1)
            fam = families.setdefault(name, {"help": None, "type": None, "samples": {}})
            key = "help" if line.startswith("# HELP") else "type"
            assert fam[key] is None, f"line {n}: second {key.upper()} for {name}"
            assert not fam["samples"], f"line {n}: {key.upper()} after samples of {name}"
            fam[key] = m.group(2)
            if current != name:
                assert name not in closed, f"line {n}: family {name} is split"
                if current:
                    closed.add(current)
                current = name
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"line {n}: bad sample line {line!r}"
        name, labels_text, value = m.group(1), m.group(2) or "", m.group(3)
        assert name == current, f"line {n}: sample {name} outside its family ({current})"
        labels = {k: _unescape(v) for k, v in PAIR_RE.findall(labels_text)}
        assert len(labels) == len(PAIR_RE.findall(labels_text)), f"line {n}: duplicate label"
        series = tuple(sorted(labels.items()))
        fam = families[name]
        assert series not in fam["samples"], f"line {n}: duplicate series {name}{labels}"
        fam["samples"][series] = float(value.replace("Inf", "inf"))
    for name, fam in families.items():
        assert fam["type"] is not None, f"{name} has no TYPE"
        assert fam["help"] is not None, f"{name} has no HELP"
    return families


def sample(families: dict, name: str, **labels) -> float:
    return families[name]["samples"][tuple(sorted(labels.items()))]


SNAPSHOT = {
    "state": "running",
    "tracks": [{"name": "core", "paused": False, "phase": "implementing", "session_id": 7},
               {"name": "ui", "paused": True, "paused_reason": "2 environment failures", "phase": "paused"}],
    "counts": {"open": 3, "passed": 2, "failed": 1},
    "limits": {"limited": {"claude": {"until": 1714560000.0, "reason": "usage limit"}},
               "unavailable": {"gemini": "not installed"}},
}
TOTALS = {"sessions": 9, "cost_usd": 1.75, "input_tokens": 1200, "output_tokens": 340,
          "by_agent": {"claude": {"sessions": 6, "cost_usd": 1.5, "input_tokens": 1000, "output_tokens": 300},
                       "codex": {"sessions": 3, "cost_usd": 0.25, "input_tokens": 200, "output_tokens": 40}}}
COUNTS = {"claude": {"succeeded": 4, "failed": 1, "running": 1}, "codex": {"succeeded": 3}}
EXTRA = {"queue": {"core": 2, "ui": 1}, "rate_limit_waits_total": 4, "agents": ["claude", "codex", "gemini"],
         "project": "shop", "notifications": {"webhook 0": {"sent": 5, "failed": 1, "dropped": 0},
                                              "command": {"sent": 6, "failed": 0, "dropped": 0}}}


def test_output_parses_and_carries_every_number():
    text = render_metrics(SNAPSHOT, TOTALS, COUNTS, EXTRA)
    fams = parse_exposition(text)
    assert sample(fams, "ao_info", project="shop", version=__version__) == 1
    assert sample(fams, "ao_state", state="running") == 1
    assert sample(fams, "ao_state", state="idle") == 0
    assert sample(fams, "ao_features", status="open") == 3
    assert sample(fams, "ao_features", status="passed") == 2
    assert sample(fams, "ao_features", status="blocked") == 0
    assert sample(fams, "ao_sessions_total", agent="claude", status="failed") == 1
    assert sample(fams, "ao_sessions_total", agent="codex", status="succeeded") == 3
    assert sample(fams, "ao_running_sessions") == 1
    assert sample(fams, "ao_cost_usd_total", agent="claude") == 1.5
    assert sample(fams, "ao_cost_usd_total", agent="codex") == 0.25
    assert sample(fams, "ao_tokens_total", agent="claude", direction="input") == 1000
    assert sample(fams, "ao_tokens_total", agent="codex", direction="output") == 40
    assert sample(fams, "ao_queue_length", track="core") == 2
    assert sample(fams, "ao_rate_limited", agent="claude") == 1
    assert sample(fams, "ao_rate_limited", agent="gemini") == 0
    assert sample(fams, "ao_rate_limit_reset_timestamp_seconds", agent="claude") == 1714560000
    assert sample(fams, "ao_rate_limit_waits_total") == 4
    assert sample(fams, "ao_track_paused", track="ui") == 1
    assert sample(fams, "ao_track_paused", track="core") == 0
    assert sample(fams, "ao_tracks_paused") == 1
    assert sample(fams, "ao_notifications_total", destination="webhook 0", result="failed") == 1
    assert sample(fams, "ao_notifications_total", destination="command", result="sent") == 6
    types = {n: f["type"] for n, f in fams.items()}
    assert types["ao_sessions_total"] == types["ao_cost_usd_total"] == types["ao_tokens_total"] == "counter"
    assert types["ao_rate_limit_waits_total"] == "counter"
    assert types["ao_features"] == types["ao_queue_length"] == types["ao_rate_limited"] == "gauge"
    assert all(n.endswith("_total") for n, t in types.items() if t == "counter")


def test_empty_state_still_parses():
    text = render_metrics({}, {}, {}, {})
    fams = parse_exposition(text)
    assert sample(fams, "ao_state", state="idle") == 1
    assert sample(fams, "ao_running_sessions") == 0
    assert fams["ao_cost_usd_total"]["samples"] == {}
    assert sample(fams, "ao_features", status="open") == 0


def test_awkward_label_values_are_escaped_and_round_trip():
    weird = 'tr"ack\\with\nnewline'
    snapshot = {"tracks": [{"name": weird, "paused": True}], "counts": {"strange status": 1}}
    text = render_metrics(snapshot, {"by_agent": {"my agent": {"cost_usd": 0.1}}}, {}, {"queue": {weird: 5},
                                                                                        "project": 'a"b'})
    fams = parse_exposition(text)
    assert sample(fams, "ao_queue_length", track=weird) == 5
    assert sample(fams, "ao_track_paused", track=weird) == 1
    assert sample(fams, "ao_features", status="strange status") == 1
    assert sample(fams, "ao_cost_usd_total", agent="my agent") == 0.1
    assert "\n" not in escape_label(weird)


def test_running_sessions_can_be_given():
    fams = parse_exposition(render_metrics({}, {}, COUNTS, {"running_sessions": 3}))
    assert sample(fams, "ao_running_sessions") == 3


@pytest.mark.parametrize("value,expected", [
    (3, "3"), (True, "1"), (False, "0"), (1.5, "1.5"), (2.0, "2"), (None, "0"),
    (float("nan"), "NaN"), (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (1e-7, "1e-07"),
])
def test_format_value(value, expected):
    assert format_value(value) == expected


def test_the_parser_rejects_malformed_text():
    good = render_metrics(SNAPSHOT, TOTALS, COUNTS, EXTRA)
    bad_variants = [
        good.rstrip("\n"),                                                     # no final newline
        good.replace('ao_queue_length{track="core"} 2', 'ao_queue_length{track=core} 2'),   # unquoted
        good.replace('ao_queue_length{track="core"} 2', 'ao_queue_length{track="core"} two'),
        good + 'ao_queue_length{track="core"} 9\n',                           # split family / duplicate
        good.replace("# TYPE ao_features gauge", "# TYPE ao_features gauges"),
        good.replace('ao_tracks_paused 1', 'ao_tracks_paused{} 1 2 3'),
        "# TYPE x gauge\nx 1\n# TYPE x gauge\n",
    ]
    for text in bad_variants:
        assert text != good
        with pytest.raises(AssertionError):
            parse_exposition(text)


def test_content_type_names_the_format_version():
    assert "version=0.0.4" in CONTENT_TYPE
