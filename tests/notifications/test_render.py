"""Times in notifications carry their zone's offset (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

from notifications.render import when


def test_times_name_their_offset_in_the_recipients_language() -> None:
    at = datetime(2026, 12, 8, 13, 0, tzinfo=UTC)
    assert when(at, "fr", "Europe/Paris") == "mardi 8 décembre 2026, 14:00 UTC+01:00"
    assert when(at, "en", "America/New_York") == "Tuesday 8 December 2026, 08:00 GMT-05:00"
    assert when(at, "en", "UTC") == "Tuesday 8 December 2026, 13:00 GMT+00:00"
