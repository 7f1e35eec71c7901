"""GET /metrics: the orchestrator's state in the Prometheus text exposition format 0.0.4. Pure."""
from __future__ import annotations

import math
from typing import Any, Iterable

from . import __version__
from .states import FeatureStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RUN_STATES = ("idle", "running", "stopping")


def escape_label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    v = float(value or 0)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, Any], Any]]) -> None:
        self.lines.append(f"# HELP {name} {escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
                self.lines.append(f"{name}{{{inner}}} {format_value(value)}")
            else:
                self.lines.append(f"{name} {format_value(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def render_metrics(snapshot: dict, totals: dict, counts: dict, extra: dict) -> str:
    """The metrics page.

    snapshot: Orchestrator.snapshot() — state, tracks [{name, paused, ...}], counts {feature status: n},
              limits {"limited": {agent: {until, reason}}, ...}.
    totals:   Database.totals() — by_agent {agent: {sessions, cost_usd, input_tokens, output_tokens}}.
    counts:   sessions by agent and status {agent: {status: n}}.
    extra:    queue {track: open features waiting}, rate_limit_waits_total (int), agents [names the
              config knows], project (name); optional running_sessions (else counts' "running"),
              notifications (Notifier.stats()).
    """
    w = _Writer()
    w.family("ao_info", "gauge", "agent-orchestrator version and project (always 1).",
             [({"project": extra.get("project") or "", "version": __version__}, 1)])
    state = snapshot.get("state") or "idle"
    states = list(RUN_STATES) + ([state] if state not in RUN_STATES else [])
    w.family("ao_state", "gauge", "Processing state of the orchestrator: 1 for the current one.",
             [({"state": s}, int(s == state)) for s in states])

    features = dict(snapshot.get("counts") or {})
    statuses = [s.value for s in FeatureStatus] + sorted(k for k in features if k not in
                                                         {s.value for s in FeatureStatus})
    w.family("ao_features", "gauge", "Features in features.json by status.",
             [({"status": s}, int(_num(features.get(s)))) for s in statuses])

    session_rows = [({"agent": agent, "status": status}, int(_num(n)))
                    for agent, by_status in sorted((counts or {}).items(), key=lambda kv: str(kv[0]))
                    for status, n in sorted((by_status or {}).items())]
    w.family("ao_sessions_total", "counter", "Agent sessions recorded, by agent and status (running, succeeded, failed, interrupted).", session_rows)
    running = extra.get("running_sessions")
    if running is None:
        running = sum(_num((by or {}).get("running")) for by in (counts or {}).values())
    w.family("ao_running_sessions", "gauge", "Agent sessions running now.", [({}, int(_num(running)))])

    by_agent = sorted(((str(a), v or {}) for a, v in (totals.get("by_agent") or {}).items()))
    w.family("ao_cost_usd_total", "counter", "Cost reported by the agents, in US dollars.",
             [({"agent": a}, _num(v.get("cost_usd"))) for a, v in by_agent])
    w.family("ao_tokens_total", "counter", "Tokens reported by the agents, by direction.",
             [({"agent": a, "direction": d}, int(_num(v.get(f"{d}_tokens"))))
              for a, v in by_agent for d in ("input", "output")])

    queue = extra.get("queue") or {}
    w.family("ao_queue_length", "gauge", "Open features waiting for each track.",
             [({"track": t}, int(_num(n))) for t, n in queue.items()])

    limited = (snapshot.get("limits") or {}).get("limited") or {}
    agents = list(dict.fromkeys([*(extra.get("agents") or []), *(a for a, _ in by_agent), *limited]))
    w.family("ao_rate_limited", "gauge", "1 while the agent is rate-limited (not used until its reset).",
             [({"agent": a}, int(a in limited)) for a in agents])
    w.family("ao_rate_limit_reset_timestamp_seconds", "gauge",
             "When a rate-limited agent may be used again (Unix time).",
             [({"agent": a}, _num((limited[a] or {}).get("until"))) for a in agents if a in limited])
    w.family("ao_rate_limit_waits_total", "counter",
             "Times a track waited because every agent of its chain was rate-limited.",
             [({}, int(_num(extra.get("rate_limit_waits_total"))))])

    tracks = [t for t in snapshot.get("tracks") or [] if isinstance(t, dict) and t.get("name")]
    notes = extra.get("notifications") or {}
    w.family("ao_notifications_total", "counter",
             "Notifications by destination (webhook N, command) and result (sent, failed, dropped).",
             [({"destination": d, "result": r}, int(_num((v or {}).get(r))))
              for d, v in notes.items() for r in ("sent", "failed", "dropped")])
    w.family("ao_track_paused", "gauge", "1 while the track is paused.",
             [({"track": t["name"]}, int(bool(t.get("paused")))) for t in tracks])
    w.family("ao_tracks_paused", "gauge", "Number of paused tracks.",
             [({}, sum(1 for t in tracks if t.get("paused")))])
    return w.text()
