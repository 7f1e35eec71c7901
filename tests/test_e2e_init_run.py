"""The first five minutes, as a new user: `init --yes` in a fresh Django project, the example
features copied in, then `run` with the fake agents: every example feature passes."""
from __future__ import annotations

import json
import shutil

from projects import REPO_ROOT, git, load_features, run_cli


def test_init_yes_then_run_processes_the_examples(tmp_path):
    repo = tmp_path / "shop"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "manage.py").write_text('if __name__ == "__main__":\n    print("ok")\n')
    (repo / "requirements.txt").write_text("Django==5.0\n")
    (repo / ".env").write_text("APP_URL=http://localhost:8123\n")
    git(repo, "add", "manage.py", "requirements.txt")
    git(repo, "commit", "-q", "-m", "django app")

    result = run_cli("init", "--yes", "--project", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Django" in result.stdout
    config = json.loads((repo / "orchestrator.config.json").read_text())
    assert config["appUrl"] == "http://localhost:8123"
    assert config["agent"]["preferred"] == "claude"  # the fake claude is first on PATH

    shutil.copy(REPO_ROOT / "examples" / "features.example.json", repo / "features.json")
    config["verification"]["delayMs"] = 0  # the only change from the defaults: no app to wait for
    (repo / "orchestrator.config.json").write_text(json.dumps(config, indent=2))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "orchestrator setup")
    git(repo, "branch", "-f", "ai-develop", "main")

    result = run_cli("run", "--project", str(repo), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = {fid: f["status"] for fid, f in load_features(repo).items()}
    assert statuses == {1: "passed", 2: "passed", 3: "passed", 4: "passed", 5: "passed"}
    order = [line for line in result.stdout.splitlines() if "PASSED" in line]
    assert order.index(next(l for l in order if "#1 " in l)) < order.index(
        next(l for l in order if "#2 " in l)), "dependsOn order not respected"
    assert (repo / ".env").read_text() == "APP_URL=http://localhost:8123\n"
    assert "Django" not in git(repo, "status", "--porcelain")
    import sqlite3
    con = sqlite3.connect(repo / ".orchestrator" / "orchestrator.db")
    agents = {fid: agent for fid, agent in con.execute(
        "SELECT feature_id, agent FROM sessions WHERE phase = 'implement'")}
    con.close()
    assert agents[4] == "codex" and agents[1] == "claude"  # feature 4 names its own agent
