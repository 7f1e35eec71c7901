"""End to end: dependency order across tracks, budgets, usage-aware concurrency and resuming an
agent's own session."""
from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time

from projects import (fake_rules as rules, feature, git, load_features, make_project, run_cli,
                      session_rows as sessions)

TWO_TRACKS = [{"name": "a", "categories": ["a"], "isDefault": True},
              {"name": "b", "categories": ["b"]}]






def test_dependency_chain_runs_in_order_across_tracks_and_failure_blocks(git_repo, tmp_path):
    feats = [feature(1, "a"), feature(2, "b", dependsOn=[1]), feature(3, "a", dependsOn=[2]),
             feature(5, "a", name="Breaks"), feature(4, "b", dependsOn=[5])]
    repo = make_project(git_repo, feats, tracks=TWO_TRACKS, agent={"maxRetries": 0})
    env = rules(tmp_path, {"match": "feature #5", "scenario": "no_commit"})
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    statuses = {fid: f["status"] for fid, f in load_features(repo).items()}
    assert statuses == {1: "passed", 2: "passed", 3: "passed", 5: "failed", 4: "blocked"}
    assert load_features(repo)[4]["failure_reason"] == "dependency #5 (Breaks) failed"
    rows = {r["feature_id"]: r for r in sessions(repo)}
    assert 4 not in rows, "a blocked feature must not run"
    assert rows[1]["ended_at"] <= rows[2]["started_at"] and rows[2]["ended_at"] <= rows[3]["started_at"]
    assert {rows[1]["track"], rows[2]["track"]} == {"a", "b"}


def test_total_budget_pauses_the_run_and_status_says_why(git_repo):
    repo = make_project(git_repo, [feature(1), feature(2)], budget={"totalUsd": 0.000001})
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 1
    assert "budget.totalUsd ($0.00) reached" in result.stdout
    feats = load_features(repo)
    assert feats[1]["status"] == "open" and feats[2]["status"] == "open"
    assert git(repo, "show", "feature/1-feature-1:feature-1.txt"), "the spent work is kept"
    assert len(sessions(repo)) == 1, "no session may start once the budget is reached"
    status = run_cli("status", "--project", str(repo))
    assert "paused (budget.totalUsd" in status.stdout
    # raise the budget: the kept work is merged without implementing again
    config = json.loads((repo / "orchestrator.config.json").read_text())
    config["budget"]["totalUsd"] = 100
    (repo / "orchestrator.config.json").write_text(json.dumps(config))
    result = run_cli("run", "--project", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r["feature_id"] for r in sessions(repo)] == [1, 2]


def test_feature_budget_fails_the_feature_and_is_passed_to_claude(git_repo, tmp_path):
    log = tmp_path / "agents.log"
    repo = make_project(git_repo, [feature(1)], budget={"perFeatureUsd": 0.000001},
                        verification={"disabled": False, "delayMs": 0})
    result = run_cli("run", "--project", str(repo), env={"FAKE_AGENT_LOG": str(log)})
    assert result.returncode == 1
    f = load_features(repo)[1]
    assert f["status"] == "failed" and f["failure_category"] == "budget"
    assert "budget.perFeatureUsd" in f["failure_reason"]
    argv = json.loads(log.read_text().splitlines()[0])["argv"]
    assert argv[argv.index("--max-budget-usd") + 1] == "0.01"


def _most_at_once(rows):
    points = sorted([(r["started_at"], 1) for r in rows] + [(r["ended_at"], -1) for r in rows])
    level = peak = 0
    for _, step in points:
        level += step
        peak = max(peak, level)
    return peak


def _notices(repo):
    con = sqlite3.connect(repo / ".orchestrator" / "orchestrator.db")
    try:
        return [(ts, json.loads(data)["message"]) for ts, data in con.execute(
            "SELECT ts, data FROM events WHERE type = 'notice' ORDER BY id")]
    finally:
        con.close()


def test_never_more_sessions_of_an_agent_than_max_concurrent(git_repo):
    tracks = [{"name": f"t{i}", "categories": [f"c{i}"], "isDefault": i == 0} for i in range(4)]
    repo = make_project(git_repo, [feature(i + 1, f"c{i}") for i in range(4)], tracks=tracks,
                        agent={"maxConcurrent": 2})
    result = run_cli("run", "--project", str(repo), env={"FAKE_AGENT_DELAY": "0.5"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert _most_at_once(sessions(repo)) == 2


def test_concurrency_shrinks_under_429s_and_grows_back(git_repo, tmp_path):
    tracks = [{"name": f"t{i}", "categories": [f"c{i}"], "isDefault": i == 0} for i in range(4)]
    feats = [feature(i + 1, f"c{i % 4}") for i in range(8)]
    repo = make_project(git_repo, feats, tracks=tracks, agent={"pressureQuietSeconds": 0.5})
    env = rules(tmp_path, {"match": "^# Implement", "scenario": "retry_then_implement",
                           "times": 4})
    env["FAKE_AGENT_DELAY"] = "0.6"
    result = run_cli("run", "--project", str(repo), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    notices = _notices(repo)
    changes = [(ts, int(re.match(r"claude: at most (\d+) of 4", m).group(1)))
               for ts, m in notices if m.startswith("claude: at most ")]
    assert any(cap == 1 for _, cap in changes), notices
    assert any("quiet period without pressure" in m for _, m in notices), notices

    def capacity_at(t):  # a slot is acquired just before the session row is written: allow 0.1 s
        before = [cap for ts, cap in changes if ts <= t - 0.1]
        window = [cap for ts, cap in changes if t - 0.1 < ts <= t]
        return max([before[-1] if before else 4, *window])

    rows = sessions(repo)
    for row in rows:
        running = sum(1 for r in rows if r["started_at"] <= row["started_at"] < r["ended_at"])
        assert running <= capacity_at(row["started_at"]), (row["feature_id"], changes)
    assert _most_at_once(rows[4:]) < 4


def test_interrupted_claude_session_is_resumed_with_its_id(git_repo, tmp_path, monkeypatch,
                                                          fakes_on_path):
    from agent_orchestrator.orchestrator import Orchestrator
    from agent_orchestrator.project import Project

    repo = make_project(git_repo, [feature(1)])
    log = tmp_path / "agents.log"
    for key, value in rules(tmp_path, {"agent": "claude", "match": ".", "scenario": "usage_limit",
                                       "times": 1}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FAKE_AGENT_LOG", str(log))
    now = [time.time()]

    async def fake_sleep(seconds):
        now[0] += seconds

    project = Project.open(repo)
    try:
        summary = asyncio.run(Orchestrator(project, clock=lambda: now[0],
                                           sleep=fake_sleep).run_until_idle())
    finally:
        project.close()
    assert summary["passed"] == [1]
    first, second = sessions(repo)
    assert first["failure_category"] == "rate_limit" and first["agent_session_id"]
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert "--resume" not in runs[0]["argv"]
    argv = runs[1]["argv"]
    assert argv[argv.index("--resume") + 1] == first["agent_session_id"]
