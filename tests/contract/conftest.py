"""Contract tests: the orchestrator with the genuine Claude Code, Codex and Gemini CLIs.

The CLIs come from tests/contract/node_modules (`npm ci --prefix tests/contract`, pinned by
package.json and package-lock.json). Missing or not the pinned versions is a failure, not a skip:
the only way to skip these tests is to ask for it with AO_SKIP_CONTRACT=1.
"""
from __future__ import annotations

import os

import pytest

from .harness import INSTALL_HINT, SKIP_VARIABLE, install_problems, pinned_versions
from .mock_server import MockModelServer

SKIP_REASON = (f"contract tests skipped because {SKIP_VARIABLE}=1: the genuine agent CLIs were not run "
               "(unset it and run `npm ci --prefix tests/contract` to run them)")


def _skipping() -> bool:
    return os.environ.get(SKIP_VARIABLE, "") not in ("", "0")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "contract: runs the genuine agent CLIs (tests/contract/node_modules) against a local "
                   f"mock model server; skipped only with {SKIP_VARIABLE}=1")


def pytest_report_header(config) -> str:
    pins = ", ".join(f"{cli} {version}" for cli, version in pinned_versions().items())
    if _skipping():
        return SKIP_REASON
    return f"contract tests: genuine CLIs pinned at {pins}"


def pytest_terminal_summary(terminalreporter) -> None:
    if _skipping():
        terminalreporter.write_line(SKIP_REASON, yellow=True, bold=True)


def pytest_collection_modifyitems(config, items) -> None:
    if not _skipping():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("contract") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def genuine_clis() -> None:
    problems = install_problems()
    if problems:
        pytest.fail("the genuine agent CLIs are not installed as pinned:\n  " + "\n  ".join(problems)
                    + f"\n{INSTALL_HINT}", pytrace=False)


@pytest.fixture
def server(genuine_clis):
    with MockModelServer() as mock:
        yield mock


@pytest.fixture
def state(tmp_path):
    """Where the CLIs keep their state (CLAUDE_CONFIG_DIR, CODEX_HOME, GEMINI_CLI_HOME) and TMPDIR."""
    path = tmp_path / "cli-state"
    path.mkdir()
    return path
