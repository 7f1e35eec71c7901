"""Pure helpers for reading user-written values: how a value is shown in a message, argv lists
(never shell strings), git branch-name rules, "did you mean" suggestions, and masking secrets."""
from __future__ import annotations

import difflib
import json
import re
from typing import Any

MASK = "***"
ARGV_HINT = 'must be an argv list, e.g. ["npm", "test"] — shell strings are not run'


def branch_name_problem(name: str) -> str | None:
    """Why `name` is not a valid branch name (the rules of `git check-ref-format --branch`), or None."""
    if not name:
        return "is empty"
    if name in ("@", "HEAD"):
        return f"cannot be {name!r}"
    if name.startswith("-"):
        return "cannot start with '-'"
    if ".." in name:
        return "cannot contain '..'"
    if "@{" in name:
        return "cannot contain '@{'"
    bad = sorted({c for c in name if c in " ~^:?*[\\" or ord(c) < 32 or ord(c) == 127})
    if bad:
        shown = ", ".join("space" if c == " " else repr(c) for c in bad)
        return f"cannot contain {shown}"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "cannot start or end with '/' or contain '//'"
    if name.endswith("."):
        return "cannot end with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return "no path component may start with '.'"
        if part.endswith(".lock"):
            return "no path component may end with '.lock'"
    return None


def valid_branch_name(name: str) -> bool:
    return isinstance(name, str) and branch_name_problem(name) is None


def show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def found(value: Any) -> str:
    return f"{show(value)} ({kind_of(value)})"


def parse_argv(value: Any) -> tuple[list[str] | None, str | None]:
    """One command: an argv list of non-empty strings, or a single word. Returns (argv, problem)."""
    if isinstance(value, str):
        if not value.strip():
            return None, "is an empty command"
        if any(c.isspace() for c in value):
            return None, f"{show(value)} {ARGV_HINT}"
        return [value], None
    if not isinstance(value, list):
        return None, f"expected an argv list of strings, found {found(value)}"
    if not value:
        return None, "is an empty command"
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            return None, f"element {i} must be a non-empty string, found {found(item)}"
    if len(value) == 1 and any(c.isspace() for c in value[0]):
        return None, f"{show(value)} {ARGV_HINT}"
    return list(value), None


def parse_argv_list(value: Any) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Several commands: a list of argv lists, or one argv list (flat list of strings), or one word.
    Returns (commands, problems); a problem is (suffix naming the element, e.g. "[1]" or "", text)."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        argv, problem = parse_argv(value)
        return ([argv] if argv else []), ([("", problem)] if problem else [])
    if not isinstance(value, list):
        return [], [("", f"expected a list of argv lists such as [[\"npm\", \"test\"]], found {found(value)}")]
    commands: list[list[str]] = []
    problems: list[tuple[str, str]] = []
    for i, item in enumerate(value):
        argv, problem = parse_argv(item)
        if problem:
            problems.append((f"[{i}]", problem))
        else:
            commands.append(argv)
    return commands, problems


def suggest(name: str, candidates: list[str]) -> str | None:
    """The closest known key to `name` (difflib), comparing whole dotted paths and last components."""
    best, best_score = None, 0.0
    leaf = name.rsplit(".", 1)[-1].lower()
    for cand in candidates:
        cand_leaf = cand.rsplit(".", 1)[-1].lower()
        score = max(difflib.SequenceMatcher(None, name.lower(), cand.lower()).ratio(),
                    0.95 * difflib.SequenceMatcher(None, leaf, cand_leaf).ratio())
        if len(leaf) >= 4 and cand_leaf.startswith(leaf):
            score = max(score, 0.9)
        if score > best_score:
            best, best_score = cand, score
    return best if best_score >= 0.6 else None


def unknown_key(path: str, candidates: list[str], prefix: str = "") -> str:
    guess = suggest(path[len(prefix):], [c[len(prefix):] for c in candidates])
    hint = f" — did you mean '{prefix}{guess}'?" if guess else " — it is ignored"
    return f"unknown key '{path}'{hint}"


def ignored_key(key: str) -> bool:
    return key.startswith(("$", "_"))


_SECRET_WORDS = ("token", "secret", "password", "passwd", "credential", "authorization", "apikey",
                 "privatekey", "accesskey", "cookie")


def looks_secret(name: str) -> bool:
    norm = re.sub(r"[^a-z0-9]", "", name.lower())
    return any(w in norm for w in _SECRET_WORDS) or norm.endswith("key")


def _mask_argv(argv: list) -> list:
    out, hide_next = [], False
    for a in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
        elif isinstance(a, str) and a.startswith("-") and looks_secret(a.split("=", 1)[0]):
            if "=" in a:
                out.append(a.split("=", 1)[0] + "=" + MASK)
            else:
                out.append(a)
                hide_next = True
        else:
            out.append(a)
    return out


def _mask_url(url: str) -> str:
    """Webhook URLs (Slack, Discord, ...) carry their secret in the path or query: keep only
    the scheme and host."""
    match = re.match(r"([a-z][a-z0-9+.-]*://)(?:[^@/]*@)?([^/?#]*)(.*)", url, re.I)
    if not match:
        return MASK
    return match.group(1) + match.group(2) + ("/" + MASK if match.group(3) not in ("", "/") else "")


def mask_secrets(obj: Any) -> Any:
    """A copy with the values of secret-looking keys, `env` and `headers` objects and secret argv flags masked."""
    if isinstance(obj, list):
        if obj and all(isinstance(a, str) for a in obj):
            return _mask_argv(obj)
        return [mask_secrets(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if k in ("env", "headers") and isinstance(v, dict):
            out[k] = {name: MASK for name in v}
        elif k == "url" and isinstance(v, str):
            out[k] = _mask_url(v)
        elif looks_secret(k) and v not in (None, "", [], {}):
            out[k] = MASK
        else:
            out[k] = mask_secrets(v)
    return out
