"""The genuine CLIs are pinned exactly, and the lock file agrees with the manifest (no CLIs needed)."""
from __future__ import annotations

import json
import re

from .harness import CONTRACT_DIR, PACKAGES, pinned_versions


def test_versions_pinned_exactly_and_locked():
    manifest = json.loads((CONTRACT_DIR / "package.json").read_text())
    lock = json.loads((CONTRACT_DIR / "package-lock.json").read_text())
    pins = pinned_versions()
    assert set(manifest["dependencies"]) == set(PACKAGES.values())
    for cli, version in pins.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{PACKAGES[cli]} must be pinned exactly, not {version!r}"
        assert lock["packages"][f"node_modules/{PACKAGES[cli]}"]["version"] == version, (
            f"package-lock.json is stale for {PACKAGES[cli]}: run `npm install --prefix tests/contract`")
    assert lock["packages"][""]["dependencies"] == manifest["dependencies"]
