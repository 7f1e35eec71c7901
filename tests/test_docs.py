"""The README is the user's manual: every command, flag, setting, event type and placeholder is
in it, its JSON examples are valid, and CI runs exactly its test command."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent_orchestrator import cli
from agent_orchestrator.config import SETTINGS, parse_config
from agent_orchestrator.features import parse_features
from agent_orchestrator.prompts import PLACEHOLDERS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_first_lines_give_install_and_test_commands():
    head = README.split("\n## ", 1)[0]
    assert "pip install . && agent-orchestrator start" in head
    assert "python -m pip install -e '.[test]' && python -m pytest" in head


def test_ci_runs_exactly_the_readme_test_command():
    command = "python -m pip install -e '.[test]' && python -m pytest"
    ci_lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()
                if l.strip() and not l.strip().startswith("#")]
    assert ci_lines[-1].replace(" -q", "") == command


def test_every_setting_is_documented():
    missing = [s.key for s in SETTINGS if f"`{s.key}`" not in README]
    assert not missing, f"settings missing from README: {missing}"


def test_every_command_and_flag_is_documented():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = []
    for name, subparser in sub.choices.items():
        if f"agent-orchestrator {name}" not in README:
            missing.append(name)
        for action in subparser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in ("--help",) and flag not in README:
                    missing.append(f"{name} {flag}")
    assert not missing, f"missing from README: {missing}"


def _published_event_types() -> set[str]:
    types = set()
    for path in (ROOT / "agent_orchestrator").rglob("*.py"):
        types |= set(re.findall(r"""publish\(\s*["']([a-z_]+)["']""", path.read_text()))
    return types


def test_every_event_type_is_documented():
    types = _published_event_types()
    assert {"feature", "track", "session", "output", "merge", "notice", "status"} <= types
    missing = [t for t in types if f"| `{t}` |" not in README]
    assert not missing, f"event types missing from the README's event table: {missing}"


def test_every_placeholder_is_documented():
    missing = [p for p in PLACEHOLDERS if "{{" + p + "}}" not in README]
    assert not missing


def _json_blocks():
    return re.findall(r"```json\n(.*?)```", README, re.S)


@pytest.mark.parametrize("block", _json_blocks())
def test_json_examples_are_valid(block, tmp_path):
    data = json.loads(block)
    if isinstance(data, dict) and "id" in data and "name" in data:  # one feature
        parse_features(json.dumps([data]), source="README example")
    elif isinstance(data, list) or "features" in data:
        parse_features(block, source="README example")
    else:
        parse_config(data, source="README example", project_root=tmp_path)


def test_every_http_route_is_documented():
    from agent_orchestrator.server import ROUTES
    missing = []
    for route in ROUTES:
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route.pattern.pattern.strip("^$"))
        for method in route.methods:
            if path.startswith("/static/") or path in ("/", "/index.html"):
                continue
            if f"{method} {path}" not in README and f"`{path}`" not in README:
                missing.append(f"{method} {path}")
    assert not missing, f"routes missing from README: {missing}"
