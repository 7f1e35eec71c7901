"""The Docker/Sail wrapper: its text, and running it with a fake `docker` that records its argv."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent_orchestrator import docker
from agent_orchestrator.config import parse_config
from agent_orchestrator.errors import OrchestratorError

FAKE_DOCKER = """#!{python}
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd()}}) + "\\n")
sys.exit(int(os.environ.get("FAKE_DOCKER_EXIT", "0")))
"""

SAIL_COMPOSE = ("services:\n    laravel.test:\n        image: sail-8.3/app\n        volumes:\n"
                "            - '.:/var/www/html'\n    mysql:\n        image: mysql\n")


@pytest.fixture
def fake_docker(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def run_script(path: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(path), *args], cwd=cwd, capture_output=True, text=True, timeout=20)


def test_wrapper_runs_docker_compose_exec_at_the_worktree_path(tmp_path, fake_docker):
    project = tmp_path / "my project"
    worktree = project / ".orchestrator" / "worktrees" / "core"
    worktree.mkdir(parents=True)
    text = docker.wrapper_script(compose_file=project / "docker-compose.yml", service="laravel.test",
                                 work_dir_in_container="/var/www/html", worktree_rel=".orchestrator/worktrees/core",
                                 user="sail")
    script = worktree / docker.WRAPPER_NAME
    script.write_text(text)
    script.chmod(0o755)
    result = run_script(script, "php", "artisan", "test", "--filter", "it's a \"name\" $HOME", cwd=worktree)
    assert result.returncode == 0, result.stderr
    assert calls(fake_docker) == [{"cwd": str(worktree), "argv": [
        "compose", "-f", str(project / "docker-compose.yml"), "exec", "-T", "-u", "sail",
        "-w", "/var/www/html/.orchestrator/worktrees/core", "laravel.test",
        "php", "artisan", "test", "--filter", "it's a \"name\" $HOME"]}]


def test_wrapper_passes_the_exit_code_and_needs_a_command(tmp_path, fake_docker, monkeypatch):
    script = tmp_path / docker.WRAPPER_NAME
    script.write_text(docker.wrapper_script(compose_file=None, service="app", work_dir_in_container="/app",
                                            worktree_rel=""))
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "3")
    assert run_script(script, "npm", "test", cwd=tmp_path).returncode == 3
    assert calls(fake_docker)[0]["argv"] == ["compose", "exec", "-T", "-w", "/app", "app", "npm", "test"]
    usage = run_script(script, cwd=tmp_path)
    assert usage.returncode == 64 and "usage" in usage.stderr
    assert len(calls(fake_docker)) == 1


def test_container_path():
    assert docker.container_path("/var/www/html", ".orchestrator/worktrees/ui") == \
        "/var/www/html/.orchestrator/worktrees/ui"
    assert docker.container_path("/app/", "") == "/app/"
    assert docker.container_path("/app", "./x/") == "/app/x"


def test_write_wrapper_for_a_sail_project_worktree(git_repo, fake_docker):
    (git_repo / "docker-compose.yml").write_text(SAIL_COMPOSE)
    (git_repo / "composer.json").write_text(json.dumps({"require": {"laravel/framework": "^11"},
                                                        "require-dev": {"laravel/sail": "^1"}}))
    worktree = git_repo / ".orchestrator" / "worktrees" / "core"
    subprocess.run(["git", "-C", str(git_repo), "worktree", "add", "-q", str(worktree), "ai-develop"], check=True)
    config, _ = parse_config({"worktree": {"dockerService": "laravel.test", "dockerWorkDir": "/var/www/html"}},
                             project_root=git_repo)

    path = docker.write_wrapper(worktree, git_repo, config)

    assert path == worktree.resolve() / "orchestrator-exec"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert run_script(path, "php", "artisan", "migrate", cwd=worktree).returncode == 0
    assert calls(fake_docker)[0]["argv"] == [
        "compose", "-f", str(git_repo.resolve() / "docker-compose.yml"), "exec", "-T", "-u", "sail",
        "-w", "/var/www/html/.orchestrator/worktrees/core", "laravel.test", "php", "artisan", "migrate"]
    status = subprocess.run(["git", "-C", str(worktree), "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == ""
    hint = docker.prompt_hint(path)
    assert str(path) in hint and "container" in hint


def test_write_wrapper_reads_work_dir_from_compose_when_not_configured(git_repo, fake_docker):
    (git_repo / "compose.yaml").write_text(
        "services:\n  app:\n    build: .\n    working_dir: /srv/backend\n    volumes: ['./:/srv']\n")
    worktree = git_repo / ".orchestrator" / "worktrees" / "t1"
    worktree.mkdir(parents=True)
    config, _ = parse_config({"worktree": {"dockerService": "app"}}, project_root=git_repo)
    path = docker.write_wrapper(worktree, git_repo, config)
    assert "-w /srv/.orchestrator/worktrees/t1 app" in path.read_text()
    assert " -u " not in path.read_text()


def test_write_wrapper_is_none_without_docker_and_errors_clearly(git_repo, tmp_path):
    none_config, _ = parse_config({}, project_root=git_repo)
    assert docker.write_wrapper(git_repo, git_repo, none_config) is None
    config, _ = parse_config({"worktree": {"dockerService": "app", "dockerWorkDir": "/app"}}, project_root=git_repo)
    with pytest.raises(OrchestratorError, match="no compose file"):
        docker.write_wrapper(git_repo, git_repo, config)
    (git_repo / "compose.yaml").write_text("services:\n  app:\n    image: x\n")
    with pytest.raises(OrchestratorError, match="outside the project"):
        docker.write_wrapper(tmp_path, git_repo, config)
    no_dir, _ = parse_config({"worktree": {"dockerService": "app"}}, project_root=git_repo)
    with pytest.raises(OrchestratorError, match="dockerWorkDir"):
        docker.write_wrapper(git_repo, git_repo, no_dir)
