"""Reading a verifier's verdict from its final answer (never from tool output in its transcript)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_STEP = re.compile(r"^\W*STEP\s+(\d+)\s*[:\-]\s*(PASS|FAIL)\b[ \t:\-–—*]*(.*)$", re.I | re.M)
_VERDICT = re.compile(r"^\W*VERDICT\s*[:\-]\s*\**\s*(PASS|FAIL)\b", re.I | re.M)


@dataclass
class Verdict:
    passed: bool | None  # None: the answer carried no verdict
    steps: dict[int, tuple[bool, str]] = field(default_factory=dict)

    @property
    def failed_steps(self) -> list[int]:
        return [n for n, (ok, _) in sorted(self.steps.items()) if not ok]


def parse_verdict(final_text: str) -> Verdict:
    verdicts = _VERDICT.findall(final_text or "")
    steps: dict[int, tuple[bool, str]] = {}
    for number, result, note in _STEP.findall(final_text or ""):
        steps[int(number)] = (result.upper() == "PASS", note.strip())
    if not verdicts:
        return Verdict(None, steps)
    return Verdict(verdicts[-1].upper() == "PASS", steps)
