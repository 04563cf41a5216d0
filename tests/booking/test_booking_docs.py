"""docs/booking.md names the state machine the code enforces: the same transitions as
`booking.service.TRANSITIONS`, and every status the database allows."""

from __future__ import annotations

import re
from pathlib import Path

from booking.models import STATUSES
from booking.service import TRANSITIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "booking.md"


def _documented() -> dict[str, frozenset[str]]:
    text = DOC.read_text("utf-8")
    section = text[text.index("## State machine") :]
    block = section[section.index("```") + 3 : section.index("```", section.index("```") + 3)]
    out: dict[str, frozenset[str]] = {}
    for line in block.strip().splitlines():
        m = re.match(r"^(\w+)\s+->\s+([\w |]+?)\s*(?:\(.*\))?$", line.strip())
        assert m, line
        out[m.group(1)] = frozenset(t.strip() for t in m.group(2).split("|"))
    return out


def test_the_documented_transitions_are_the_codes() -> None:
    assert _documented() == TRANSITIONS


def test_every_status_is_named_in_the_state_machine_section() -> None:
    named = set(_documented()) | {t for ts in _documented().values() for t in ts}
    assert named == set(STATUSES)
    section = DOC.read_text("utf-8").split("## State machine", 1)[1].split("\n## ", 1)[0]
    for status in ("completed", "no_show"):
        assert f"`confirmed` → `{status}`" in section
