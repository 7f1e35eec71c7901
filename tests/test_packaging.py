"""`pip install .` into a fresh virtual environment installs the package and nothing else, with
its console script, its prompt templates and the dashboard's static files."""
from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

from agent_orchestrator import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_pip_install_in_fresh_venv(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    before = _installed(py)
    # exactly what a user runs: pip builds the package in an isolated environment
    build = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], cwd=tmp_path,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    added = set(_installed(py)) - set(before)
    assert added == {"agent-orchestrator"}, f"installed more than the package: {added}"

    script = env_dir / "bin" / "agent-orchestrator"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"agent-orchestrator {__version__}"
    out = subprocess.run([str(py), "-m", "agent_orchestrator", "--help"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.returncode == 0 and "run" in out.stdout

    probe = ("import agent_orchestrator, pathlib, json; p = pathlib.Path(agent_orchestrator.__file__)"
             ".parent; print(json.dumps(sorted(x.relative_to(p).as_posix() for x in p.rglob('*')"
             " if x.suffix in ('.md', '.html', '.js', '.css', '.svg'))))")
    files = json.loads(subprocess.run([str(py), "-c", probe], capture_output=True, text=True,
                                      cwd=tmp_path, check=True).stdout)
    assert "prompt_templates/implementation.md" in files
    static = sorted(p.name for p in (ROOT / "static").glob("*") if p.is_file())
    assert static, "static/ is empty"
    for name in static:
        assert f"static/{name}" in files, f"static/{name} is not shipped in the package"


def _installed(py: Path) -> list[str]:
    out = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True,
                         text=True, check=True)
    return [p["name"] for p in json.loads(out.stdout)]
