"""Agent adapters: one per CLI (argv, environment, output parser) and the lookup by name."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import PHASES, Adapter, AgentEvent, AgentRequest, OutputParser, RunOutcome
from .claude import ClaudeAdapter, ClaudeParser
from .codex import CodexAdapter, CodexParser
from .command import CommandAdapter, PlainTextParser
from .gemini import GeminiAdapter, GeminiParser

BUILTIN_ADAPTERS: dict[str, type[Adapter]] = {"claude": ClaudeAdapter, "codex": CodexAdapter, "gemini": GeminiAdapter}
BUILTIN_AGENTS = tuple(BUILTIN_ADAPTERS)

__all__ = [
    "PHASES", "Adapter", "AgentEvent", "AgentRequest", "OutputParser", "RunOutcome", "ClaudeAdapter", "ClaudeParser",
    "CodexAdapter", "CodexParser", "CommandAdapter", "PlainTextParser", "GeminiAdapter", "GeminiParser",
    "BUILTIN_AGENTS", "get_adapter", "parser_for",
]


def get_adapter(name: str, config: Any) -> Adapter:
    """The adapter for agent `name`: a builtin (claude/codex/gemini), overridden by `config.agents[name]`,
    or a user-defined agent from `config.agents`. `config` needs `.agents` and `config[key]` for
    "agent.envPassthrough" and "agent.model"."""
    definition = (config.agents or {}).get(name)
    passthrough = tuple(config["agent.envPassthrough"] or ())
    default_model = config["agent.model"]
    project_root = getattr(config, "project_root", None)
    if definition is None:
        if name not in BUILTIN_ADAPTERS:
            raise ConfigError(
                f"unknown agent {name!r}",
                hint=f"use one of {', '.join(BUILTIN_AGENTS)} or define it under \"agents\" in "
                     "orchestrator.config.json")
        return BUILTIN_ADAPTERS[name](name, default_model=default_model, passthrough=passthrough,
                                      project_root=project_root)
    kind = definition.kind or (name if name in BUILTIN_ADAPTERS else "command")
    common = {"command": definition.command, "env": dict(definition.env or {}), "model": definition.model,
              "args": tuple(definition.args or ()), "passthrough": passthrough, "default_model": default_model,
              "project_root": project_root}
    if kind == "command":
        return CommandAdapter(name, **common)
    if kind not in BUILTIN_ADAPTERS:
        raise ConfigError(f"agent {name!r} has unknown kind {kind!r}",
                          hint=f"set agents.{name}.kind to one of {', '.join((*BUILTIN_AGENTS, 'command'))}")
    return BUILTIN_ADAPTERS[kind](name, **common)


def parser_for(kind: str) -> OutputParser:
    """A fresh parser for an output format by agent kind (used to re-parse stored transcripts)."""
    parsers = {"claude": ClaudeParser, "codex": CodexParser, "gemini": GeminiParser, "command": PlainTextParser}
    if kind not in parsers:
        raise ValueError(f"no parser for agent kind {kind!r}")
    return parsers[kind]()
