"""features.json: the backlog model, a pure parse/validate/dump, and the store the daemon writes through."""
from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .config_sections import NAME_RE
from .values import found, parse_argv_list, show
from .errors import FeaturesError, NotFound, OrchestratorError
from .states import FEATURE_STATUSES

DAEMON_FIELDS = ("status", "failure_reason", "failure_category", "branch", "attempts", "cost_usd", "updated_at")
_MISSING = object()
_HINT = "Fix the features listed above in {source}; the format is described in the README (features.json)."


@dataclass
class Feature:
    id: int
    category: str
    name: str
    description: str
    steps: list[str]
    status: str
    priority: int = 0
    depends_on: list[int] = field(default_factory=list)
    verify: list[list[str]] = field(default_factory=list)
    agent: str | None = None
    track: str | None = None
    touches: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict, repr=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    @property
    def attempts(self) -> int:
        return self.raw.get("attempts") or 0

    def to_dict(self) -> dict:
        return copy.deepcopy(self.raw)


@dataclass
class FeatureDoc:
    features: list[Feature]
    wrapped: bool
    top: dict | None
    indent: str | int | None = 2
    trailing_newline: bool = True

    def by_id(self) -> dict[int, Feature]:
        return {f.id: f for f in self.features}


# ---------------------------------------------------------------- pure parse / dump

def detect_indent(text: str) -> str | int:
    """The indentation unit of the first indented line: "\\t" or a number of spaces; 2 when there is none."""
    for line in text.splitlines()[1:]:
        body = line.lstrip(" \t")
        if body and len(body) < len(line):
            ws = line[: len(line) - len(body)]
            return "\t" if ws.startswith("\t") else len(ws)
    return 2


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_optional(p: list[str], label: str, raw: dict, key: str, what: str, ok) -> Any:
    if key not in raw:
        return _MISSING
    v = raw[key]
    if not ok(v):
        p.append(f"{label}: \"{key}\" must be {what}, found {found(v)}")
        return _MISSING
    return v


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _parse_item(p: list[str], index: int, raw: Any) -> Feature | None:
    if not isinstance(raw, dict):
        p.append(f"feature at index {index}: expected an object {{\"id\": ..., \"name\": ...}}, found {found(raw)}")
        return None
    name = raw.get("name")
    fid = raw.get("id", _MISSING)
    named = f" ({show(name, 40)})" if isinstance(name, str) and name else ""
    label = f"feature at index {index}{named}"
    ok = True
    if fid is _MISSING:
        p.append(f"{label}: missing \"id\" — give every feature a unique integer id")
        ok = False
    elif not _is_int(fid) or fid < 0:
        p.append(f"{label}: \"id\" must be a non-negative integer, found {found(fid)}")
        ok = False
    else:
        label = f"feature #{fid}"
    n = len(p)
    if "name" not in raw:
        p.append(f"{label}: missing \"name\" — give it a short name")
    elif not isinstance(name, str) or not name.strip():
        p.append(f"{label}: \"name\" must be a non-empty string, found {found(name)}")
    category = _check_optional(p, label, raw, "category", "a string", lambda v: isinstance(v, str))
    description = _check_optional(p, label, raw, "description", "a string", lambda v: isinstance(v, str))
    steps = _check_optional(p, label, raw, "steps", "a list of strings", _str_list)
    status = raw.get("status", "open")
    if status not in FEATURE_STATUSES:
        p.append(f"{label}: status {show(status)} is not one of {', '.join(FEATURE_STATUSES)}")
    priority = _check_optional(p, label, raw, "priority", "an integer (higher runs first)", _is_int)
    depends = _check_optional(p, label, raw, "dependsOn", "a list of feature ids", lambda v: isinstance(v, list))
    if depends is not _MISSING:
        for d in depends:
            if not _is_int(d):
                p.append(f"{label}: \"dependsOn\" must list integer feature ids, found {found(d)}")
                depends = _MISSING
                break
    verify: Any = _MISSING
    if "verify" in raw:
        verify, problems = parse_argv_list(raw["verify"])
        for suffix, text in problems:
            p.append(f"{label}: \"verify\"{suffix} {text}")
    agent = _check_optional(p, label, raw, "agent", "an agent name (string) or null",
                            lambda v: v is None or (isinstance(v, str) and bool(NAME_RE.match(v))))
    track = _check_optional(p, label, raw, "track", "a track name (string) or null",
                            lambda v: v is None or (isinstance(v, str) and bool(NAME_RE.match(v))))
    touches = _check_optional(p, label, raw, "touches", "a list of paths (strings)", _str_list)
    for key, what, check in (
        ("attempts", "a non-negative integer or null", lambda v: v is None or (_is_int(v) and v >= 0)),
        ("cost_usd", "a number or null", lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))),
        ("failure_reason", "a string or null", lambda v: v is None or isinstance(v, str)),
        ("failure_category", "a string or null", lambda v: v is None or isinstance(v, str)),
        ("branch", "a string or null", lambda v: v is None or isinstance(v, str)),
        ("updated_at", "a string or null", lambda v: v is None or isinstance(v, str)),
    ):
        _check_optional(p, label, raw, key, what, check)
    if not ok or len(p) > n:
        return None

    def val(v: Any, default: Any) -> Any:
        return default if v is _MISSING else v

    return Feature(id=fid, category=val(category, ""), name=name, description=val(description, ""),
                   steps=list(val(steps, [])), status=status, priority=val(priority, 0),
                   depends_on=list(val(depends, [])), verify=val(verify, []), agent=val(agent, None),
                   track=val(track, None), touches=list(val(touches, [])), raw=raw)


def find_cycles(graph: dict[int, list[int]]) -> list[list[int]]:
    """Dependency cycles (each as the ids along it), one per set of ids; iterative DFS."""
    color = dict.fromkeys(graph, 0)
    cycles: list[list[int]] = []
    seen: set[frozenset[int]] = set()
    for start in graph:
        if color[start]:
            continue
        color[start] = 1
        path, stack = [start], [iter(graph[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                color[path.pop()] = 2
            elif color[nxt] == 0:
                color[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph[nxt]))
            elif color[nxt] == 1:
                cycle = path[path.index(nxt):]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append(cycle)
    return cycles


def _check_graph(p: list[str], items: list) -> None:
    """dependsOn problems over every item with a valid id (even items with other problems)."""
    deps: dict[int, list[int]] = {}
    for raw in items:
        fid = raw.get("id") if isinstance(raw, dict) else None
        if _is_int(fid) and fid not in deps:
            d = raw.get("dependsOn", [])
            deps[fid] = [x for x in d if _is_int(x)] if isinstance(d, list) else []
    graph: dict[int, list[int]] = {}
    for fid, depends in deps.items():
        edges = []
        for d in depends:
            if d == fid:
                p.append(f"feature #{fid}: \"dependsOn\" lists the feature itself — remove {d}")
            elif d not in deps:
                p.append(f"feature #{fid}: \"dependsOn\" names {d}, but no feature has id {d}")
            elif d not in edges:
                edges.append(d)
        graph[fid] = edges
    for cycle in find_cycles(graph):
        path = " -> ".join(f"#{i}" for i in cycle + cycle[:1])
        p.append(f"dependency cycle between features {', '.join(f'#{i}' for i in cycle)}: {path} — remove one of these dependsOn entries")


def parse_features(text: str, *, source: str = "features.json") -> FeatureDoc:
    """Parse and validate features.json text; raises FeaturesError listing every problem at once."""
    hint = _HINT.format(source=source)
    if not text.strip():
        raise FeaturesError(f"{source} is empty", hint='Write [] for an empty backlog, or {"features": [...]}.')
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        lines = text.splitlines()
        line = lines[e.lineno - 1].strip()[:120] if 0 < e.lineno <= len(lines) else ""
        raise FeaturesError(f"{source} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}",
                            hint="Fix the JSON syntax (a trailing comma, a missing comma or quote are the usual causes).",
                            problems=[f"line {e.lineno}: {line}"] if line else []) from None
    if isinstance(data, list):
        wrapped, top, items = False, None, data
    elif isinstance(data, dict) and isinstance(data.get("features"), list):
        wrapped, top, items = True, data, data["features"]
    else:
        what = "an object without a \"features\" list" if isinstance(data, dict) else found(data)
        raise FeaturesError(f"{source}: the top level must be a list of features or {{\"features\": [...]}}, found {what}",
                            hint=hint)
    problems: list[str] = []
    parsed = [_parse_item(problems, i, raw) for i, raw in enumerate(items)]
    first_index: dict[int, int] = {}
    for i, raw in enumerate(items):
        fid = raw.get("id") if isinstance(raw, dict) else None
        if _is_int(fid):
            if fid in first_index:
                problems.append(f"feature #{fid} (index {i}): duplicate id {fid} — also used by the feature at index {first_index[fid]}")
            else:
                first_index[fid] = i
    features = [f for f in parsed if f is not None]
    _check_graph(problems, items)
    if problems:
        n = len(problems)
        raise FeaturesError(f"{source}: {n} problem{'s' if n > 1 else ''} in the features", hint=hint, problems=problems)
    return FeatureDoc(features=features, wrapped=wrapped, top=top, indent=detect_indent(text),
                      trailing_newline=text.endswith("\n"))


def dump_features(doc: FeatureDoc) -> str:
    """Serialise in the form found: same wrapper, top-level keys, key order, indentation and final newline."""
    items = [f.raw for f in doc.features]
    if doc.wrapped:
        top = doc.top if doc.top is not None else {"features": []}
        data: Any = {k: (items if k == "features" else v) for k, v in top.items()}
    else:
        data = items
    text = json.dumps(data, indent=doc.indent if doc.indent is not None else 2, ensure_ascii=False)
    return text + "\n" if doc.trailing_newline else text


class DumpCache:
    """dump_features() for a document of which only a few features change between two dumps:
    each feature's JSON text is kept (keyed by its raw dict, held so its id is not reused) and
    made again only for the features forget() was told about. The output is exactly
    dump_features(doc): the indented encoder is pure Python, about 5 µs per feature field, and
    features.json is written twice per feature run."""

    def __init__(self) -> None:
        self._texts: dict[int, tuple[dict, str]] = {}

    def forget(self, raw: dict) -> None:
        self._texts.pop(id(raw), None)

    def dump(self, doc: FeatureDoc) -> str:
        indent = doc.indent if doc.indent is not None else 2
        unit = indent if isinstance(indent, str) else " " * indent
        level = 2 if doc.wrapped else 1
        texts: dict[int, tuple[dict, str]] = {}
        parts = []
        for f in doc.features:
            known = self._texts.get(id(f.raw))
            if known is None or known[0] is not f.raw:
                text = json.dumps(f.raw, indent=indent, ensure_ascii=False)
                known = (f.raw, text.replace("\n", "\n" + unit * level))
            texts[id(f.raw)] = known
            parts.append(known[1])
        self._texts = texts
        if parts:
            inner = "\n" + unit * level
            listing = "[" + inner + ("," + inner).join(parts) + "\n" + unit * (level - 1) + "]"
        else:
            listing = "[]"
        if doc.wrapped:
            top = doc.top if doc.top is not None else {"features": []}
            if top:
                entries = []
                for key, value in top.items():
                    text = listing if key == "features" else \
                        json.dumps(value, indent=indent, ensure_ascii=False).replace("\n", "\n" + unit)
                    entries.append(json.dumps(key, ensure_ascii=False) + ": " + text)
                text = "{\n" + unit + (",\n" + unit).join(entries) + "\n}"
            else:
                text = "{}"
        else:
            text = listing
        return text + "\n" if doc.trailing_newline else text


def check_references(features: list[Feature], *, tracks: list[str], agents: list[str]) -> list[str]:
    """Problems of `track` / `agent` overrides naming a track or agent the configuration does not have."""
    problems = []
    for f in features:
        if f.track is not None and f.track not in tracks:
            problems.append(f"feature #{f.id}: track {show(f.track)} does not exist — tracks are {', '.join(tracks)}")
        if f.agent is not None and f.agent not in agents:
            problems.append(f"feature #{f.id}: agent {show(f.agent)} is not defined — agents are {', '.join(agents)}")
    return problems


# ---------------------------------------------------------------- I/O

def atomic_write_text(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write via a temp file in the same directory, fsync, rename; `mode` defaults to the existing file's."""
    path = Path(path)
    if mode is None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _signature(data: bytes, st: os.stat_result) -> tuple[int, int, str]:
    return (st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest())


class FeatureStore:
    """features.json shared by the user and the daemon: re-read and merged under a lock on every write.

    The store remembers, per feature and field, the value the pipeline last read (load) or wrote
    (update): the base of a 3-way merge. update() writes a field only if the file still holds the
    base value, i.e. the user did not change it in between. add()/edit() are user actions (API):
    they do not move the base, so the pipeline's later writes never undo them."""

    def __init__(self, path: Path, lock_path: Path):
        self.path = Path(path)
        self.lock_path = Path(lock_path)
        self._mutex = threading.RLock()
        self._base: dict[int, dict] = {}
        self._sig: tuple | None = None
        self._stale = False
        # the document update() last wrote, and the file's signature then: reused by the next
        # update() while the file is unchanged, instead of parsing it again
        self._doc: FeatureDoc | None = None
        self._doc_sig: tuple | None = None
        self._dumps = DumpCache()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _read(self) -> tuple[str, tuple] | None:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
                st = os.fstat(fh.fileno())
        except FileNotFoundError:
            return None
        except OSError as e:
            raise OrchestratorError(f"cannot read {self.path}: {e.strerror}", hint="Check the file's permissions.") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise FeaturesError(f"{self.path} is not UTF-8 text (byte {e.start})", hint="Save the file as UTF-8.") from None
        return text, _signature(data, st)

    def _read_doc(self, *, cached: bool = False) -> tuple[FeatureDoc, tuple]:
        """The parsed file and its signature. cached=True: the document update() wrote last, if
        the file still holds exactly that (same mtime, size and sha256), without parsing it."""
        got = self._read()
        if cached and self._doc is not None and got is not None and got[1] == self._doc_sig:
            return self._doc, got[1]
        self._doc = None
        if got is None:
            raise FeaturesError(f"{self.path} not found",
                                hint="Create it (e.g. {\"features\": []}) or set featuresFile in orchestrator.config.json.")
        text, sig = got
        return parse_features(text, source=str(self.path)), sig

    def _write(self, doc: FeatureDoc, *, changed: Feature | None = None) -> None:
        """Validate and write `doc`. `changed`: the only feature that differs from the valid file
        just read, in daemon-owned fields only — validating that one item is then enough."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        if st is not None and (not st.st_mode & stat.S_IWUSR or not os.access(self.path, os.W_OK)):
            raise OrchestratorError(f"{self.path} is read-only — the daemon cannot record feature statuses in it",
                                    hint=f"Make it writable (chmod u+w {self.path}); nothing was changed.")
        text = self._dumps.dump(doc) if changed is not None else dump_features(doc)
        if changed is None:
            parse_features(text, source=str(self.path))
        else:
            problems: list[str] = []
            index = next(i for i, f in enumerate(doc.features) if f is changed)
            _parse_item(problems, index, json.loads(json.dumps(changed.raw)))
            if problems:
                n = len(problems)
                raise FeaturesError(f"{self.path}: {n} problem{'s' if n > 1 else ''} in the features",
                                    hint=_HINT.format(source=self.path), problems=problems)
        try:
            atomic_write_text(self.path, text, mode=stat.S_IMODE(st.st_mode) if st else 0o644)
        except PermissionError as e:
            raise OrchestratorError(f"cannot write {self.path}: {e.strerror} ({e.filename})",
                                    hint=f"Make {self.path.parent} writable for the daemon's user; nothing was changed.") from None
        self._sig = _signature(text.encode("utf-8"), os.stat(self.path))

    def load(self) -> list[Feature]:
        """Re-read the file; what it holds becomes the base of later merges."""
        return self.load_doc().features

    def load_doc(self) -> FeatureDoc:
        with self._locked():
            doc, sig = self._read_doc()
            self._base = {f.id: copy.deepcopy(f.raw) for f in doc.features}
            self._sig = sig
            self._stale = False
            return doc

    def changed(self) -> bool:
        """Whether the file differs from what the pipeline last loaded (edits by the user or via add/edit)."""
        with self._mutex:
            if self._stale:
                return True
            got = self._read()
            return (got[1] if got else None) != self._sig

    def update(self, feature_id: int, fields: dict) -> dict:
        """Write daemon-owned fields of one feature; returns {field: value} actually written.
        A field the user changed since the store last saw it keeps the user's value; a value of None
        removes the field; a feature deleted by the user makes this a no-op ({})."""
        if "id" in fields:
            raise ValueError("update() cannot change a feature's id")
        with self._locked():
            doc, sig = self._read_doc(cached=True)
            if sig != self._sig:
                self._stale = True
            feature = next((f for f in doc.features if f.id == feature_id), None)
            if feature is None:
                return {}
            raw = feature.raw
            base = self._base.setdefault(feature_id, copy.deepcopy(raw))
            written: dict = {}
            for key, value in fields.items():
                current = raw.get(key, _MISSING)
                target = _MISSING if value is None else value
                if current != base.get(key, _MISSING) and current != target:
                    continue
                written[key] = value
            if not written:
                return {}
            before = copy.deepcopy(raw)
            self._doc = None  # `doc` is changed below: cached again only once it is written
            self._dumps.forget(raw)
            for key, value in written.items():
                if value is None:
                    raw.pop(key, None)
                else:
                    raw[key] = copy.deepcopy(value)
            if raw != before:
                self._write(doc, changed=feature if set(written) <= set(DAEMON_FIELDS) else None)
                self._doc, self._doc_sig = doc, self._sig
            else:
                self._doc, self._doc_sig = doc, sig
            for key, value in written.items():
                if value is None:
                    base.pop(key, None)
                else:
                    base[key] = copy.deepcopy(value)
            return written

    def add(self, data: dict) -> Feature:
        """Append a feature (a user action): id = max id + 1 when missing, status "open" by default;
        the whole document is validated before anything is written."""
        if not isinstance(data, dict):
            raise FeaturesError("a feature must be a JSON object", problems=[f"found {found(data)}"],
                                hint="Send an object such as {\"name\": \"Login\", \"category\": \"core\"}.")
        with self._locked():
            got = self._read()
            if got is None:
                doc = FeatureDoc(features=[], wrapped=True, top={"features": []}, indent=2)
            else:
                doc, _ = self._read_doc()
            fid = data.get("id")
            if fid is None:
                fid = max((f.id for f in doc.features), default=0) + 1
            raw = {"id": fid, **{k: copy.deepcopy(v) for k, v in data.items() if k != "id"}}
            raw.setdefault("status", "open")
            new_doc = FeatureDoc(features=doc.features + [_raw_feature(raw)], wrapped=doc.wrapped, top=doc.top,
                                 indent=doc.indent, trailing_newline=doc.trailing_newline)
            checked = parse_features(dump_features(new_doc), source=str(self.path))
            self._write(new_doc)
            self._stale = True
            return checked.features[-1]

    def edit(self, feature_id: int, changes: dict) -> Feature:
        """A user edit (API): fields set as given (None removes one), validated like the file; the id cannot change."""
        if not isinstance(changes, dict):
            raise FeaturesError("an edit must be a JSON object of fields", problems=[f"found {found(changes)}"])
        if "id" in changes and changes["id"] != feature_id:
            raise FeaturesError(f"feature #{feature_id}: the id cannot be changed",
                                problems=[f"feature #{feature_id}: \"id\" {show(changes['id'])} given — ids are permanent"],
                                hint="Add a new feature instead, or leave \"id\" out of the edit.")
        with self._locked():
            doc, _ = self._read_doc()
            feature = doc.by_id().get(feature_id)
            if feature is None:
                raise NotFound(f"feature #{feature_id} not found in {self.path}", hint="List the features with GET /api/features.")
            for key, value in changes.items():
                if value is None:
                    feature.raw.pop(key, None)
                else:
                    feature.raw[key] = copy.deepcopy(value)
            checked = parse_features(dump_features(doc), source=str(self.path))
            self._write(doc)
            self._stale = True
            return checked.by_id()[feature_id]


def _raw_feature(raw: dict) -> Feature:
    """A placeholder carrying only `raw`, for dumping before validation."""
    return Feature(id=-1, category="", name="", description="", steps=[], status="open", raw=raw)
