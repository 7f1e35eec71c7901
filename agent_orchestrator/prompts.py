"""Prompts for each kind of agent session: built-in templates, overridden by the project's prompts/*.md.

Every prompt starts with a fixed header line (`# Implement feature #12: Name`, ...) and the
verification prompt always ends with the verdict protocol, whatever a user template says: the
pipeline depends on both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TEMPLATES_DIR = Path(__file__).parent / "prompt_templates"

# kind -> (template file name, header)
KINDS = {
    "implement": ("implementation.md", "# Implement feature #{id}: {name}"),
    "verify": ("verification.md", "# Verify feature #{id}: {name}"),
    "fix": ("fix.md", "# Fix feature #{id}: {name}"),
    "conflict": ("conflict.md", "# Resolve merge conflict for feature #{id}: {name}"),
}

VERDICT_PROTOCOL = """
## How to answer
End your final answer with one line per acceptance step and a verdict, exactly in this form:
STEP 1: PASS
STEP 2: FAIL - <what is wrong>
VERDICT: PASS   (only if every step and every check passed; otherwise VERDICT: FAIL)
"""

PLACEHOLDERS = {
    "project_name": "the project's name (config projectName)",
    "feature_id": "the feature's id",
    "feature_name": "the feature's name",
    "feature_category": "the feature's category",
    "feature_description": "the feature's description",
    "feature_steps": "the feature's steps, numbered",
    "branch": "the feature branch, e.g. feature/3-login-page",
    "base_branch": "the base branch (config baseBranch)",
    "worktree": "the path of the feature's worktree",
    "app_url": "the URL the app is served at (config appUrl, or the verification server)",
    "instructions_file": "the session protocol file (config instructionsFile)",
    "features_file": "the features file (config featuresFile)",
    "progress_file": "the progress file (config progressFile)",
    "attempt": "the current verification attempt, from 1",
    "max_attempts": "config verification.maxAttempts",
    "previous_attempt": "what went wrong in the previous attempt (empty on the first)",
    "verification_report": "the failed verification's report (fix prompt)",
    "command_results": "exit codes and output tails of the verify commands (verification prompt)",
    "conflict_files": "files in conflict with the base branch (conflict prompt)",
    "docker_hint": "how to run commands in the Docker container, when configured",
    "extra_context": "context given with a retry from the API or dashboard",
}

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


@dataclass(frozen=True)
class PromptSet:
    """The templates in force for a project: the project's prompts/ override the built-ins."""

    templates: dict[str, str]
    sources: dict[str, str]

    @classmethod
    def load(cls, project_root: Path) -> "PromptSet":
        templates, sources = {}, {}
        for kind, (filename, _header) in KINDS.items():
            override = project_root / "prompts" / filename
            if override.is_file():
                templates[kind] = override.read_text(encoding="utf-8")
                sources[kind] = str(override)
            else:
                templates[kind] = (TEMPLATES_DIR / filename).read_text(encoding="utf-8")
                sources[kind] = "built-in"
        return cls(templates, sources)

    def render(self, kind: str, values: dict[str, object]) -> str:
        header = KINDS[kind][1].format(id=values["feature_id"], name=values["feature_name"])
        body = render_template(self.templates[kind], values)
        text = f"{header}\n\n{body.strip()}\n"
        if kind == "verify":
            text += VERDICT_PROTOCOL
        return text


def render_template(template: str, values: dict[str, object]) -> str:
    """Replace {{name}} placeholders; unknown names are left as written so a typo is visible."""

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        return "" if value is None else str(value)

    rendered = _PLACEHOLDER.sub(sub, template)
    return re.sub(r"\n{3,}", "\n\n", rendered)


def numbered(steps: list[str]) -> str:
    if not steps:
        return "(no explicit steps: verify the description)"
    return "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))
