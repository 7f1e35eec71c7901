"""agent-orchestrator: run AI coding agent CLIs in parallel git worktrees over a features backlog."""

__version__ = "0.1.0"
