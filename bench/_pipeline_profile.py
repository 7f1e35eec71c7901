"""`python bench/_pipeline_profile.py run --project DIR`: agent-orchestrator's `run`, with the steps
of each feature timed (wall clock, per feature id) and every git command the daemon starts timed
by subcommand; written as JSON to $BENCH_PROFILE_OUT at exit. Used by `bench/pipeline.py --profile`.
Instrumentation only wraps functions: the product runs unchanged."""
from __future__ import annotations

import atexit
import collections
import json
import os
import sys
import time

from agent_orchestrator import features, pipeline, proc, worktrees

steps: dict[int, dict[str, float]] = collections.defaultdict(dict)
git_times: dict[str, list[float]] = collections.defaultdict(list)
writes: list[float] = []


def _timed_method(cls, name: str, key: str) -> None:
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        feature = getattr(self, "feature", None)
        fid = feature.id if feature is not None else int(str(args[0]).rsplit("-", 1)[-1])
        record = steps[fid]
        record.setdefault(f"{key}_start", time.time())
        try:
            return original(self, *args, **kwargs)
        finally:
            record[f"{key}_end"] = time.time()
    setattr(cls, name, wrapper)


_timed_method(pipeline.FeatureJob, "_commit_leftovers_sync", "commit_check")
_timed_method(pipeline.FeatureJob, "_merge_base_into_feature", "merge_into_feature")
_timed_method(pipeline.FeatureJob, "_merge_locked", "merge_into_base")
_timed_method(pipeline.FeatureJob, "_commit_and_remove_worktree", "worktree_remove")
_timed_method(worktrees.Worktrees, "create_reporting", "worktree_add")

_run = proc.run


def _timed_run(argv, **kwargs):
    started = time.perf_counter()
    try:
        return _run(argv, **kwargs)
    finally:
        if argv and os.path.basename(argv[0]) == "git":
            words = list(argv[1:])
            while len(words) >= 2 and words[0] == "-c":
                words = words[2:]
            name = " ".join(words[:2]) if words[:1] == ["worktree"] else (words[0] if words else "?")
            git_times[name].append(time.perf_counter() - started)


proc.run = _timed_run

_update = features.FeatureStore.update


def _timed_update(self, *args, **kwargs):
    started = time.perf_counter()
    try:
        return _update(self, *args, **kwargs)
    finally:
        writes.append(time.perf_counter() - started)


features.FeatureStore.update = _timed_update


@atexit.register
def _save() -> None:
    out = os.environ.get("BENCH_PROFILE_OUT")
    if out:
        with open(out, "w") as fh:
            json.dump({"steps": steps, "git": git_times, "features_json_writes": writes}, fh)


if __name__ == "__main__":
    from agent_orchestrator.cli import main
    sys.exit(main(sys.argv[1:]))
