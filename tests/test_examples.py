"""Every file in examples/ is loaded by the code that reads it in a real project."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from agent_orchestrator import config as config_mod
from agent_orchestrator import prompts
from agent_orchestrator.config import load_config
from agent_orchestrator.features import parse_features
from agent_orchestrator.init_wizard import feature_categories, propose_tracks



EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_wrapped_features_example_parses_with_categories_dependencies_and_verify():
    text = (EXAMPLES / "features.example.json").read_text()
    doc = parse_features(text, source="examples/features.example.json")
    assert doc.wrapped and doc.top is not None and "project" in doc.top
    features = doc.features
    assert len({f.category for f in features}) >= 3
    assert any(f.depends_on for f in features)
    assert any(f.verify for f in features)
    assert all(f.status == "open" and f.steps for f in features)
    assert all(isinstance(argv, list) and argv for f in features for argv in f.verify)


def test_array_features_example_parses():
    doc = parse_features((EXAMPLES / "features.array.example.json").read_text(), source="array example")
    assert not doc.wrapped
    assert [f.id for f in doc.features] == [1, 2, 3]
    assert doc.features[1].depends_on == [1]


def test_example_config_is_valid_and_sets_every_setting(tmp_path):
    shutil.copy(EXAMPLES / "orchestrator.config.json", tmp_path / "orchestrator.config.json")
    config, warnings = load_config(tmp_path)
    assert warnings == []
    assert {s.key for s in config_mod.SETTINGS} <= config.explicit
    assert [t.name for t in config.tracks] == ["core", "ui"]
    assert "aider" in config.agents


def test_example_config_routes_every_example_category_to_a_named_track(tmp_path):
    config = json.loads((EXAMPLES / "orchestrator.config.json").read_text())
    routed = {c for t in config["tracks"] for c in t["categories"]}
    categories = feature_categories((EXAMPLES / "features.example.json").read_text())
    assert set(categories) == routed
    assert [t[0] for t in propose_tracks(categories)] == ["core", "ui", "marketing"]


def test_example_prompts_use_only_known_placeholders_and_render(tmp_path):
    shutil.copytree(EXAMPLES / "prompts", tmp_path / "prompts")
    used = set()
    for path in (EXAMPLES / "prompts").glob("*.md"):
        used |= set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", path.read_text()))
    assert used and used <= set(prompts.PLACEHOLDERS)
    loaded = prompts.PromptSet.load(tmp_path)
    assert {loaded.sources[k] for k in ("implement", "verify", "fix")} == {
        str(tmp_path / "prompts" / name) for name in ("implementation.md", "verification.md", "fix.md")}
    values = {name: f"<{name}>" for name in prompts.PLACEHOLDERS}
    values.update(feature_id=7, feature_name="Cart")
    for kind in ("implement", "verify", "fix"):
        text = loaded.render(kind, values)
        assert text.splitlines()[0].endswith("feature #7: Cart")
        assert "{{" not in text


def test_example_instructions_file_is_a_protocol():
    text = (EXAMPLES / "ORCHESTRATOR.md").read_text()
    assert text.startswith("# Session protocol")
    assert "## Before you commit" in text
