"""Invariants checked after a load run, on the database the stack wrote to.

- **No oversold slot**: for every slot, the seats of its bookings that hold seats
  (pending holds still live, confirmed, completed, no-show) never exceed its capacity —
  counted from the bookings themselves, not from the `seats_taken` counter (which is
  checked against that count too).
- **A balanced ledger**: every ledger transaction's lines sum to zero per currency.

`check(url)` returns `{name: [offending rows as strings]}` (empty lists when all hold);
the gate fails the run on any offending row.
"""

from __future__ import annotations

from typing import Any

import psycopg

OVERSOLD = """
SELECT s.id, s.capacity, s.seats_taken, coalesce(sum(b.seats), 0) AS held
FROM availability_slots s
LEFT JOIN bookings b ON b.slot_id = s.id
 AND (b.status IN ('confirmed', 'completed', 'no_show')
      OR (b.status = 'pending' AND b.hold_expires_at > now()))
GROUP BY s.id
HAVING coalesce(sum(b.seats), 0) > s.capacity OR s.seats_taken > s.capacity
"""

COUNTER_DRIFT = """
SELECT s.id, s.seats_taken, coalesce(sum(b.seats), 0)
FROM availability_slots s
LEFT JOIN bookings b ON b.slot_id = s.id
 AND b.status IN ('pending', 'confirmed', 'completed', 'no_show')
GROUP BY s.id
HAVING s.seats_taken <> coalesce(sum(b.seats), 0)
"""

UNBALANCED = """
SELECT txn_id::text, currency, sum(amount_minor) FROM ledger_entries
GROUP BY txn_id, currency HAVING sum(amount_minor) <> 0
UNION ALL
SELECT 'all', currency, sum(amount_minor) FROM ledger_entries
GROUP BY currency HAVING sum(amount_minor) <> 0
"""


def _table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def check(database_url: str) -> dict[str, list[str]]:
    """The broken invariants (name → offending rows); every list empty when all hold."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    out: dict[str, list[str]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        if _table_exists(conn, "bookings"):
            out["oversold_slots"] = [str(r) for r in conn.execute(OVERSOLD)]
            out["seats_counter_drift"] = [str(r) for r in conn.execute(COUNTER_DRIFT)]
        if _table_exists(conn, "ledger_entries"):
            out["unbalanced_ledger"] = [str(r) for r in conn.execute(UNBALANCED)]
    return out
