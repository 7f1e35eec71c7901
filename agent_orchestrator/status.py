"""`agent-orchestrator status`: features by status, tracks, running sessions and cost — from a
running daemon when there is one, else from the project's state files."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from .config import load_config
from .db import Database
from .features import FeatureStore
from .project import STATE_DIR, owner_info

ORDER = ("in_progress", "verifying", "open", "blocked", "failed", "passed")


def collect_status(root: Path) -> dict:
    root = Path(root).expanduser().resolve()
    config, warnings = load_config(root)
    state_dir = root / STATE_DIR
    store = FeatureStore(config.path("featuresFile"), state_dir / "features.lock")
    features = store.load()
    info: dict = {"project": config["projectName"], "root": str(root),
                  "base_branch": config["baseBranch"], "warnings": warnings,
                  "daemon": None, "tracks": [], "features": [], "counts": {},
                  "sessions": {"total": 0, "running": []}, "cost_usd": 0.0, "tokens": {}}
    for f in features:
        info["counts"][f.status] = info["counts"].get(f.status, 0) + 1
        info["features"].append({"id": f.id, "name": f.name, "status": f.status,
                                 "failure_reason": f.raw.get("failure_reason"),
                                 "branch": f.raw.get("branch")})
    owner = owner_info(state_dir)
    if owner.get("url"):
        live = _ask_daemon(owner["url"], state_dir / "token")
        info["daemon"] = {"url": owner["url"], "pid": owner.get("pid"),
                          "answering": live is not None}
        if live:
            info["tracks"] = live.get("tracks", [])
            info["state"] = live.get("state")
    elif owner.get("pid"):
        info["daemon"] = {"url": None, "pid": owner.get("pid"), "command": owner.get("command")}
    saved_tracks: dict = {}
    db_path = state_dir / "orchestrator.db"
    if db_path.exists():
        db = Database(db_path)
        try:
            totals = db.totals()
            _, total = db.list_sessions(limit=1)
            info["sessions"] = {"total": total, "running": db.running_sessions()}
            info["cost_usd"] = totals.get("cost_usd") or 0.0
            info["by_agent"] = totals.get("by_agent") or {}
            info["by_track"] = totals.get("by_track") or {}
            saved_tracks = db.get_state("tracks", {}) or {}
            info["tokens"] = {"input": totals.get("input_tokens") or 0,
                              "output": totals.get("output_tokens") or 0}
        finally:
            db.close()
    if not info["tracks"]:
        info["tracks"] = [{"name": t.name, "phase": None, **saved_tracks.get(t.name, {})}
                          for t in config.tracks]
    return info


def _ask_daemon(url: str, token_file: Path) -> dict | None:
    request = urllib.request.Request(url.rstrip("/") + "/api/status")
    try:
        request.add_header("Authorization", f"Bearer {token_file.read_text().strip()}")
    except OSError:
        pass  # a loopback daemon answers without it
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def render_status(info: dict) -> str:
    lines = [f"{info['project']} — {info['root']} (base branch {info['base_branch']})"]
    daemon = info.get("daemon")
    if daemon and daemon.get("url"):
        state = "answering" if daemon.get("answering") else "NOT answering"
        lines.append(f"daemon: {daemon['url']} (pid {daemon.get('pid')}, {state})")
    elif daemon:
        lines.append(f"daemon: `{daemon.get('command')}` running (pid {daemon.get('pid')})")
    else:
        lines.append("daemon: not running")
    counts = info["counts"]
    total = sum(counts.values())
    parts = [f"{counts[s]} {s}" for s in ORDER if counts.get(s)]
    lines.append(f"features: {total} — {', '.join(parts) if parts else 'none'}")
    for f in info["features"]:
        if f["status"] in ("failed", "blocked") and f.get("failure_reason"):
            lines.append(f"  #{f['id']} {f['name']}: {f['status']} — {f['failure_reason']}")
    tracks = []
    for t in info["tracks"]:
        what = t.get("phase") or "idle"
        if t.get("feature_id") is not None:
            what += f" #{t['feature_id']} {t.get('feature_name') or ''}".rstrip()
        if t.get("paused"):
            what = f"paused ({t.get('paused_reason')})"
        tracks.append(f"{t['name']}: {what}")
    lines.append("tracks: " + "; ".join(tracks))
    sessions = info["sessions"]
    running = sessions["running"]
    lines.append(f"sessions: {sessions['total']} ({len(running)} running)")
    for s in running:
        lines.append(f"  #{s['id']} feature #{s['feature_id']} {s['phase']} with {s['agent']} "
                     f"on track {s['track']}")
    tokens = info.get("tokens") or {}
    lines.append(f"cost: ${float(info['cost_usd'] or 0):.4f}; tokens: "
                 f"{tokens.get('input', 0):,} in / {tokens.get('output', 0):,} out")
    for group in ("by_agent", "by_track"):
        for name, row in sorted((info.get(group) or {}).items()):
            lines.append(f"  {group[3:]} {name}: {row.get('sessions', 0)} sessions, "
                         f"${float(row.get('cost_usd') or 0):.4f}, "
                         f"{int(row.get('input_tokens') or 0):,} in / "
                         f"{int(row.get('output_tokens') or 0):,} out, "
                         f"{float(row.get('seconds') or 0):.0f} s")
    return "\n".join(lines)
