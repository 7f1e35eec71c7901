"""Builders of scratch projects for end-to-end tests: a git repo, features.json and config."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKES_DIR = REPO_ROOT / "tests" / "fakes"


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip()


def feature(fid: int, category: str = "core", **extra) -> dict:
    data = {"id": fid, "category": category, "name": f"Feature {fid}",
            "description": f"Implement feature {fid}.", "steps": ["Do it", "Test it"],
            "status": "open"}
    data.update(extra)
    return data


def make_project(repo: Path, features: list[dict], *, tracks=None, wrapped: bool = True,
                 **config) -> Path:
    cfg = {"projectName": "demo", "baseBranch": "ai-develop",
           "tracks": tracks or [{"name": "core", "categories": [], "isDefault": True}],
           "verification": {"disabled": True, "delayMs": 0},
           "agent": {"preferred": "claude", "killGraceSeconds": 1, "envPassthrough": ["FAKE_*"]}}
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    (repo / "orchestrator.config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    doc = {"project": "demo", "features": features} if wrapped else features
    (repo / "features.json").write_text(json.dumps(doc, indent=2) + "\n")
    git(repo, "add", "orchestrator.config.json", "features.json")
    git(repo, "commit", "-q", "-m", "add orchestrator files")
    git(repo, "branch", "-f", "ai-develop", "HEAD")
    return repo


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PATH"] = f"{FAKES_DIR}{os.pathsep}{full_env.get('PATH', '')}"
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "agent_orchestrator", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def load_features(repo: Path) -> dict[int, dict]:
    doc = json.loads((repo / "features.json").read_text())
    items = doc["features"] if isinstance(doc, dict) else doc
    return {f["id"]: f for f in items}


def fake_rules(tmp_path: Path, *rules: dict) -> dict:
    """Environment choosing the fake agents' scenarios by rules (see tests/fakes/README.md)."""
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(list(rules)))
    return {"FAKE_AGENT_SCENARIO": str(path), "FAKE_AGENT_STATE_DIR": str(tmp_path / "fake-state")}


def session_rows(repo: Path) -> list[dict]:
    """Every recorded session, oldest first, with the number of its output events."""
    con = sqlite3.connect(repo / ".orchestrator" / "orchestrator.db")
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute("SELECT * FROM sessions ORDER BY id")]
        for row in rows:
            row["events"] = con.execute(
                "SELECT count(*) FROM events WHERE session_id = ? AND type = 'output'",
                (row["id"],)).fetchone()[0]
        return rows
    finally:
        con.close()
