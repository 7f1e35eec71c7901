"""Verdicts come from the final answer; prompts render placeholders and overrides."""
from __future__ import annotations

from agent_orchestrator.prompts import PLACEHOLDERS, PromptSet, render_template
from agent_orchestrator.verdict import parse_verdict


def test_verdict_pass_with_steps():
    v = parse_verdict("Checked.\nSTEP 1: PASS\nSTEP 2: PASS\nVERDICT: PASS\n")
    assert v.passed is True and v.steps == {1: (True, ""), 2: (True, "")}


def test_verdict_fail_names_steps():
    v = parse_verdict("STEP 1: PASS\nSTEP 2: FAIL - button missing\nVERDICT: FAIL")
    assert v.passed is False and v.failed_steps == [2] and v.steps[2][1] == "button missing"


def test_last_verdict_wins_and_markdown_is_tolerated():
    assert parse_verdict("VERDICT: FAIL\n...retried...\n**VERDICT: PASS**").passed is True
    assert parse_verdict("- STEP 1: FAIL\n\nVERDICT: **FAIL**").passed is False


def test_no_verdict():
    v = parse_verdict("I looked around and everything seems fine.")
    assert v.passed is None
    assert parse_verdict("").passed is None
    assert parse_verdict("the verdict: pass is what I'd say").passed is None


def test_render_template_leaves_unknown_placeholders_visible():
    out = render_template("a {{feature_name}} b {{ nope }} c", {"feature_name": "Login"})
    assert out == "a Login b {{ nope }} c"


def _values(**extra):
    values = {name: f"<{name}>" for name in PLACEHOLDERS}
    values.update(feature_id=7, feature_name="Login page", **extra)
    return values


def test_builtin_prompts_have_header_and_verdict_protocol(tmp_path):
    prompts = PromptSet.load(tmp_path)
    impl = prompts.render("implement", _values())
    assert impl.startswith("# Implement feature #7: Login page\n")
    assert "<feature_steps>" in impl and "<instructions_file>" in impl and "{{" not in impl
    verify = prompts.render("verify", _values())
    assert verify.startswith("# Verify feature #7: Login page\n")
    assert "VERDICT: PASS" in verify and "{{" not in verify
    assert prompts.render("fix", _values()).startswith("# Fix feature #7: Login page\n")
    assert prompts.render("conflict", _values()).startswith(
        "# Resolve merge conflict for feature #7: Login page\n")


def test_project_prompt_overrides_builtin(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "verification.md").write_text("Check {{feature_name}} at {{app_url}}.")
    prompts = PromptSet.load(tmp_path)
    assert prompts.sources["verify"].endswith("prompts/verification.md")
    assert prompts.sources["implement"] == "built-in"
    text = prompts.render("verify", _values(app_url="http://localhost:8000"))
    assert "Check Login page at http://localhost:8000." in text
    assert text.rstrip().endswith("otherwise VERDICT: FAIL)")
