"""Re-vendor the fixtures the stand-in needs from Stripe's `fixtures3.json`.

Usage: `python -m standins.stripe.vendor ../shared/stripe-openapi/fixtures3.json`
(writes `standins/stripe/fixtures.json`; see FIXTURES.md for the source).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESOURCES = (
    "payment_intent", "refund", "transfer", "charge", "event",
    "customer", "product", "price", "subscription", "invoice",
)  # fmt: skip
TARGET = Path(__file__).with_name("fixtures.json")


def main(argv: list[str]) -> None:
    """Copy `RESOURCES` of the fixtures file named in `argv[0]` into `TARGET`."""
    source = json.loads(Path(argv[0]).read_text())["resources"]
    kept = {name: source[name] for name in RESOURCES}
    TARGET.write_text(json.dumps({"resources": kept}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
