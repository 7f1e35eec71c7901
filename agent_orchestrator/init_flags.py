"""The options of `agent-orchestrator init`, as data: the CLI builds its parser from them without
importing the wizard (and its detection), which only `init` needs."""
from __future__ import annotations

import argparse
from typing import NamedTuple


class InitFlag(NamedTuple):
    """One `init` option: "--x" takes a value; "--x/--no-x" is yes/no (None when not given)."""

    flag: str
    dest: str
    help: str

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if "/" in self.flag:
            parser.add_argument(self.flag.split("/")[0], dest=self.dest, action=argparse.BooleanOptionalAction,
                                default=None, help=self.help)
        else:
            parser.add_argument(self.flag, dest=self.dest, default=None, metavar=self.dest.split("_")[-1].upper(),
                                help=self.help)


F = InitFlag
INIT_FLAGS: list[InitFlag] = [
    F("--project-name", "project_name", "project name shown in the dashboard (default: the directory name)"),
    F("--base-branch", "base_branch", "branch features are merged into (default: ai-develop)"),
    F("--create-branch/--no-create-branch", "create_branch",
      "create the base branch from the current branch when it does not exist (default: yes)"),
    F("--features-file", "features_file", "the backlog file (default: features.json)"),
    F("--instructions-file", "instructions_file",
      "session protocol file for the agents; a starter is written when missing (default: ORCHESTRATOR.md)"),
    F("--app-url", "app_url", "URL the app is served at (default: detected from .env or the framework)"),
    F("--docker/--no-docker", "docker", "run commands in the Docker Compose / Sail container (default: yes when detected)"),
    F("--docker-service", "docker_service", "compose service the code runs in (default: detected)"),
    F("--docker-work-dir", "docker_work_dir", "the project's directory inside the container (default: detected)"),
    F("--symlink-dirs", "symlink_dirs", "comma-separated directories symlinked into each worktree, or 'none'"),
    F("--agent", "agent", "preferred agent: claude, codex, gemini or one defined under 'agents' "
                          "(default: the first found on PATH)"),
    F("--fallback-agents", "fallback_agents", "comma-separated agents tried on a rate limit, or 'none'"),
    F("--tracks", "tracks", "tracks as 'name=cat1,cat2; name2=cat3' (the first, or the one marked '*', is the default)"),
    F("--verification/--no-verification", "verification", "verify each feature after merging (default: yes)"),
    F("--verify-commands", "verify_commands",
      "commands the daemon runs to verify, separated by ';' (e.g. 'npm test; npm run lint'), or 'none'"),
    F("--gitignore/--no-gitignore", "gitignore", "also add .orchestrator/ to .gitignore (default: no)"),
]
del F
