from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from agent_orchestrator.errors import FeaturesError, NotFound, OrchestratorError
from agent_orchestrator.features import (
    FeatureStore, check_references, detect_indent, dump_features, find_cycles, parse_features,
)
from agent_orchestrator.states import FEATURE_STATUSES


def feat(fid: int, name: str | None = None, **extra) -> dict:
    return {"id": fid, "category": "core", "name": name or f"Feature {fid}", "description": "", "steps": [],
            "status": "open", **extra}


def write(path: Path, data, indent=2) -> None:
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def read(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    path = tmp_path / "features.json"
    write(path, {"features": [feat(1, "Login", description="old text"), feat(2, "Signup")]})
    return FeatureStore(path, tmp_path / ".orchestrator" / "features.lock")


# ---------------------------------------------------------------- parsing

def test_parse_fields_and_defaults():
    doc = parse_features(json.dumps([
        {"id": 3, "name": "A"},
        {"id": 4, "name": "B", "category": "ui", "description": "d", "steps": ["s1", "s2"], "status": "passed",
         "priority": 5, "dependsOn": [3], "verify": [["npm", "test"], ["make"]], "agent": "codex", "track": "web",
         "touches": ["src/a.py"], "custom": {"x": 1}},
    ]))
    a, b = doc.features
    assert (a.id, a.name, a.category, a.description, a.steps, a.status, a.priority) == (3, "A", "", "", [], "open", 0)
    assert a.depends_on == [] and a.verify == [] and a.agent is None and a.track is None and a.touches == []
    assert (b.category, b.steps, b.status, b.priority, b.depends_on) == ("ui", ["s1", "s2"], "passed", 5, [3])
    assert b.verify == [["npm", "test"], ["make"]]
    assert (b.agent, b.track, b.touches) == ("codex", "web", ["src/a.py"])
    assert b.raw["custom"] == {"x": 1}
    assert doc.wrapped is False and doc.top is None


@pytest.mark.parametrize("verify,expected", [
    (["npm", "test"], [["npm", "test"]]),
    ("make", [["make"]]),
    ([["a"], ["b", "c"]], [["a"], ["b", "c"]]),
    ([], []),
])
def test_verify_forms(verify, expected):
    doc = parse_features(json.dumps([{"id": 1, "name": "x", "verify": verify}]))
    assert doc.features[0].verify == expected


MISTAKES = [
    ([feat(1), feat(1, "Again")], "feature #1 (index 1)", ["duplicate id 1", "index 0"]),
    ([{"name": "No id"}], 'feature at index 0 ("No id")', ['missing "id"']),
    ([{"id": "3", "name": "x"}], "feature at index 0", ['"id" must be a non-negative integer', '"3" (a string)']),
    ([{"id": True, "name": "x"}], "feature at index 0", ['"id" must be a non-negative integer', "true (a boolean)"]),
    ([{"id": 1.5, "name": "x"}], "feature at index 0", ['"id" must be', "1.5"]),
    ([{"id": 7}], "feature #7", ['missing "name"']),
    ([{"id": 7, "name": "  "}], "feature #7", ['"name" must be a non-empty string']),
    ([feat(2, status="done")], "feature #2", ['status "done" is not one of', ", ".join(FEATURE_STATUSES)]),
    ([feat(2, steps="do it")], "feature #2", ['"steps" must be a list of strings', '"do it"']),
    ([feat(2, steps=["a", 3])], "feature #2", ['"steps" must be a list of strings']),
    ([feat(2, description=["x"])], "feature #2", ['"description" must be a string']),
    ([feat(2, category=None)], "feature #2", ['"category" must be a string', "null"]),
    ([feat(2, priority="high")], "feature #2", ['"priority" must be an integer', '"high"']),
    ([feat(2, dependsOn=[9])], "feature #2", ['"dependsOn" names 9', "no feature has id 9"]),
    ([feat(2, dependsOn=[2])], "feature #2", ['"dependsOn" lists the feature itself']),
    ([feat(2, dependsOn=["1"])], "feature #2", ['"dependsOn" must list integer feature ids']),
    ([feat(2, dependsOn=3)], "feature #2", ['"dependsOn" must be a list of feature ids']),
    ([feat(1, dependsOn=[2]), feat(2, dependsOn=[3]), feat(3, dependsOn=[1])], "dependency cycle",
     ["#1, #2, #3", "#1 -> #2 -> #3 -> #1"]),
    ([feat(2, verify="npm test")], "feature #2", ['"verify"', 'must be an argv list, e.g. ["npm", "test"]']),
    ([feat(2, verify=[["npm", "test"], "npm run lint"])], "feature #2", ['"verify"[1]', "must be an argv list"]),
    ([feat(2, agent=5)], "feature #2", ['"agent" must be an agent name']),
    ([feat(2, track="my track")], "feature #2", ['"track" must be a track name']),
    ([feat(2, attempts=-1)], "feature #2", ['"attempts" must be a non-negative integer']),
    ([feat(1), 42], "feature at index 1", ["expected an object", "42"]),
]


@pytest.mark.parametrize("items,label,expects", MISTAKES, ids=[f"{m[0] and i}" for i, m in enumerate(MISTAKES)])
def test_features_mistake_names_feature_and_expectation(items, label, expects):
    with pytest.raises(FeaturesError) as exc:
        parse_features(json.dumps({"features": items}), source="/p/features.json")
    err = exc.value
    assert err.exit_code == 2
    assert err.message.startswith("/p/features.json: ")
    assert err.hint and "/p/features.json" in err.hint
    matching = [p for p in err.problems if p.startswith(label)]
    assert matching, err.problems
    assert any(all(e in p for e in expects) for p in matching), matching


def test_invalid_json_names_line_and_column():
    with pytest.raises(FeaturesError) as exc:
        parse_features('[\n  {"id": 1, "name": "a"}\n  {"id": 2}\n]\n', source="features.json")
    assert "not valid JSON" in exc.value.message
    assert "line 3, column 3" in exc.value.message
    assert exc.value.problems == ['line 3: {"id": 2}']


@pytest.mark.parametrize("text,expect", [
    ('"features"', "top level must be a list of features"),
    ('{"items": []}', 'an object without a "features" list'),
    ('{"features": {"1": {}}}', 'an object without a "features" list'),
    ("   \n", "is empty"),
])
def test_wrong_top_level(text, expect):
    with pytest.raises(FeaturesError) as exc:
        parse_features(text, source="features.json")
    assert expect in exc.value.message


def test_all_problems_at_once_with_ids():
    items = [feat(1, status="done"), {"name": "x"}, feat(1), feat(4, dependsOn=[99])]
    with pytest.raises(FeaturesError) as exc:
        parse_features(json.dumps(items))
    problems = exc.value.problems
    assert len(problems) == 4
    assert exc.value.message == "features.json: 4 problems in the features"
    assert problems[0].startswith("feature #1: status")
    assert problems[1].startswith('feature at index 1 ("x"): missing "id"')
    assert any(p.startswith("feature #1 (index 2): duplicate id") for p in problems)
    assert any(p.startswith('feature #4: "dependsOn" names 99') for p in problems)


def test_dependency_on_an_invalid_feature_is_not_reported_as_missing():
    items = [feat(1, dependsOn=[2]), {"id": 2}]
    with pytest.raises(FeaturesError) as exc:
        parse_features(json.dumps(items))
    assert exc.value.problems == ['feature #2: missing "name" — give it a short name']


def test_find_cycles():
    assert find_cycles({1: [2], 2: [3], 3: []}) == []
    assert find_cycles({1: [2], 2: [1], 3: [3]}) == [[1, 2], [3]]
    assert sorted(map(sorted, find_cycles({1: [2], 2: [3], 3: [2], 4: [1]}))) == [[2, 3]]


def test_check_references():
    doc = parse_features(json.dumps([feat(1, track="web", agent="codex"), feat(2, track="core", agent="aider")]))
    problems = check_references(doc.features, tracks=["core"], agents=["claude", "codex", "gemini"])
    assert problems == ['feature #1: track "web" does not exist — tracks are core',
                        'feature #2: agent "aider" is not defined — agents are claude, codex, gemini']


# ---------------------------------------------------------------- round trip

WRAPPED = """{
    "project": "demo",
    "features": [
        {
            "status": "open",
            "id": 1,
            "name": "Connexion à l'espace — 日本語",
            "category": "auth",
            "steps": [
                "Créer le formulaire"
            ],
            "x-owner": {
                "team": "web",
                "tags": []
            }
        }
    ],
    "version": 3
}"""

BARE = '[\n\t{\n\t\t"id": 5,\n\t\t"name": "A",\n\t\t"zeta": null,\n\t\t"alpha": 1.5\n\t}\n]\n'


@pytest.mark.parametrize("text", [WRAPPED, BARE, WRAPPED + "\n", json.dumps([feat(1)], indent=2)])
def test_round_trip_is_exact(text):
    doc = parse_features(text)
    assert dump_features(doc) == text


def test_round_trip_detects_form_and_indent():
    doc = parse_features(WRAPPED)
    assert doc.wrapped and doc.indent == 4 and doc.trailing_newline is False
    assert list(doc.top) == ["project", "features", "version"]
    doc = parse_features(BARE)
    assert not doc.wrapped and doc.indent == "\t" and doc.trailing_newline is True
    assert detect_indent('[{"id": 1}]') == 2


def test_dump_keeps_changes_in_place():
    doc = parse_features(WRAPPED)
    doc.features[0].raw["status"] = "passed"
    doc.features[0].raw["branch"] = "feature/1-x"
    out = dump_features(doc)
    data = json.loads(out)
    assert list(data) == ["project", "features", "version"]
    assert list(data["features"][0]) == ["status", "id", "name", "category", "steps", "x-owner", "branch"]
    assert "日本語" in out and "\\u" not in out


# ---------------------------------------------------------------- the store

def test_load_and_update_writes_only_the_given_fields(store):
    before = read(store.path)
    features = store.load()
    assert [f.id for f in features] == [1, 2]
    written = store.update(1, {"status": "in_progress", "branch": "feature/1-login", "attempts": 1})
    assert written == {"status": "in_progress", "branch": "feature/1-login", "attempts": 1}
    after = read(store.path)
    assert after["features"][1] == before["features"][1]
    assert after["features"][0] == {**before["features"][0], "status": "in_progress", "branch": "feature/1-login",
                                    "attempts": 1}
    assert not store.changed()


def test_update_none_removes_field(store):
    store.load()
    store.update(1, {"failure_reason": "boom"})
    assert read(store.path)["features"][0]["failure_reason"] == "boom"
    assert store.update(1, {"failure_reason": None}) == {"failure_reason": None}
    assert "failure_reason" not in read(store.path)["features"][0]


def test_merge_user_edit_and_added_feature_survive_our_status_write(store):
    store.load()
    data = read(store.path)
    data["features"][0]["description"] = "new text from the user"
    data["features"].append(feat(3, "Added by user"))
    write(store.path, data)
    assert store.changed()
    written = store.update(1, {"status": "passed"})
    assert written == {"status": "passed"}
    after = read(store.path)
    assert after["features"][0]["description"] == "new text from the user"
    assert after["features"][0]["status"] == "passed"
    assert [f["id"] for f in after["features"]] == [1, 2, 3]
    assert store.changed(), "the user's edit must still be reported to the pipeline"
    store.load()
    assert not store.changed()


def test_merge_user_reset_of_status_wins_over_our_write(store):
    store.load()
    store.update(1, {"status": "in_progress"})
    data = read(store.path)
    data["features"][0]["status"] = "open"
    write(store.path, data)
    written = store.update(1, {"status": "passed", "cost_usd": 0.5})
    assert written == {"cost_usd": 0.5}
    after = read(store.path)["features"][0]
    assert after["status"] == "open" and after["cost_usd"] == 0.5
    assert store.update(1, {"status": "failed"}) == {}, "stays skipped until the pipeline re-reads"
    assert read(store.path)["features"][0]["status"] == "open"
    store.load()
    assert store.update(1, {"status": "in_progress"}) == {"status": "in_progress"}


def test_update_of_a_feature_deleted_by_the_user_is_a_no_op(store):
    store.load()
    data = read(store.path)
    data["features"] = data["features"][1:]
    write(store.path, data)
    text = store.path.read_text()
    assert store.update(1, {"status": "passed"}) == {}
    assert store.path.read_text() == text


def test_update_of_a_feature_never_loaded_writes(store):
    store.load()
    data = read(store.path)
    data["features"].append(feat(9, "new"))
    write(store.path, data)
    assert store.update(9, {"status": "in_progress"}) == {"status": "in_progress"}
    assert read(store.path)["features"][2]["status"] == "in_progress"


def test_update_with_invalid_value_is_refused_and_file_untouched(store):
    store.load()
    text = store.path.read_text()
    with pytest.raises(FeaturesError) as exc:
        store.update(1, {"status": "done"})
    assert "feature #1" in exc.value.problems[0]
    assert store.path.read_text() == text
    with pytest.raises(ValueError):
        store.update(1, {"id": 5})


def test_update_keeps_form_indent_and_unknown_fields(tmp_path):
    path = tmp_path / "features.json"
    path.write_text(WRAPPED, encoding="utf-8")
    st = FeatureStore(path, tmp_path / "lock")
    st.load()
    st.update(1, {"status": "passed"})
    assert path.read_text(encoding="utf-8") == WRAPPED.replace('"status": "open"', '"status": "passed"')


def test_concurrent_updates_from_8_threads_lose_nothing(store):
    data = read(store.path)
    data["features"] = [feat(i) for i in range(1, 9)]
    write(store.path, data)
    stores = [FeatureStore(store.path, store.lock_path) for _ in range(4)] + [store]
    for s in stores:
        s.load()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            s = stores[i % len(stores)]
            for n in range(1, 11):
                s.update(i + 1, {"attempts": n, f"t{i}": n})
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    after = read(store.path)["features"]
    for i in range(8):
        assert after[i]["attempts"] == 10 and after[i][f"t{i}"] == 10


def test_read_only_file_is_a_clear_error_and_untouched(store):
    store.load()
    text = store.path.read_text()
    store.path.chmod(0o444)
    with pytest.raises(OrchestratorError) as exc:
        store.update(1, {"status": "passed"})
    assert str(store.path) in exc.value.message and "read-only" in exc.value.message
    assert "chmod u+w" in exc.value.hint
    assert store.path.read_text() == text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o444


def test_atomic_write_leaves_no_temp_files_and_keeps_mode(store):
    store.path.chmod(0o640)
    store.load()
    for n in range(5):
        store.update(1, {"attempts": n})
    assert sorted(p.name for p in store.path.parent.iterdir()) == [".orchestrator", "features.json"]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o640


def test_failed_write_removes_temp_file(store, monkeypatch):
    store.load()
    text = store.path.read_text()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.update(1, {"status": "passed"})
    assert sorted(p.name for p in store.path.parent.iterdir()) == [".orchestrator", "features.json"]
    assert store.path.read_text() == text


def test_changed_detects_same_size_edit(store):
    store.load()
    text = store.path.read_text()
    store.path.write_text(text.replace("Login", "Lugin"))
    os.utime(store.path, ns=(store.path.stat().st_atime_ns, store.path.stat().st_mtime_ns))
    assert store.changed()


def test_missing_file(tmp_path):
    s = FeatureStore(tmp_path / "features.json", tmp_path / "lock")
    with pytest.raises(FeaturesError) as exc:
        s.load()
    assert "not found" in exc.value.message


def test_invalid_file_on_load_lists_problems(store):
    write(store.path, {"features": [feat(1), feat(1)]})
    with pytest.raises(FeaturesError) as exc:
        store.load()
    assert str(store.path) in exc.value.message
    assert "duplicate id 1" in exc.value.problems[0]


# ---------------------------------------------------------------- add / edit

def test_add_assigns_next_id_and_open_status(store):
    store.load()
    f = store.add({"name": "Search", "category": "core", "steps": ["index", "query"]})
    assert (f.id, f.status, f.steps) == (3, "open", ["index", "query"])
    data = read(store.path)
    assert data["features"][2] == {"id": 3, "name": "Search", "category": "core", "steps": ["index", "query"],
                                   "status": "open"}
    assert store.changed()
    g = store.add({"id": 10, "name": "Explicit", "status": "blocked"})
    assert (g.id, g.status) == (10, "blocked")


def test_add_is_validated_against_the_whole_doc(store):
    text = store.path.read_text()
    with pytest.raises(FeaturesError) as exc:
        store.add({"name": "Bad", "dependsOn": [42]})
    assert any(p.startswith('feature #3: "dependsOn" names 42') for p in exc.value.problems)
    with pytest.raises(FeaturesError) as exc:
        store.add({"id": 1, "name": "Dup"})
    assert any("duplicate id 1" in p for p in exc.value.problems)
    with pytest.raises(FeaturesError):
        store.add({"category": "no name"})
    assert store.path.read_text() == text


def test_add_creates_a_missing_file(tmp_path):
    s = FeatureStore(tmp_path / "features.json", tmp_path / "lock")
    f = s.add({"name": "First"})
    assert f.id == 1
    assert read(tmp_path / "features.json") == {"features": [{"id": 1, "name": "First", "status": "open"}]}


def test_edit_changes_fields_and_validates(store):
    store.load()
    f = store.edit(2, {"name": "Sign up", "priority": 3, "description": None})
    assert (f.name, f.priority) == ("Sign up", 3)
    raw = read(store.path)["features"][1]
    assert raw["name"] == "Sign up" and "description" not in raw
    text = store.path.read_text()
    with pytest.raises(FeaturesError) as exc:
        store.edit(2, {"status": "done"})
    assert exc.value.problems[0].startswith('feature #2: status "done"')
    with pytest.raises(FeaturesError) as exc:
        store.edit(2, {"id": 7})
    assert "id cannot be changed" in exc.value.message
    with pytest.raises(NotFound):
        store.edit(99, {"name": "x"})
    assert store.path.read_text() == text


def test_edit_by_user_is_not_undone_by_pipeline_write(store):
    store.load()
    store.update(1, {"status": "in_progress"})
    store.edit(1, {"status": "open"})
    assert store.update(1, {"status": "passed"}) == {}
    assert read(store.path)["features"][0]["status"] == "open"
    assert store.changed()
