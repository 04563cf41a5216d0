"""Plots of a Locust run from its `*_stats_history.csv` (`--csv-full-history`).

`latency.png`: P50/P95/P99 of all requests over time and the P95 of each search endpoint,
with the search SLO lines; `throughput.png`: requests/s and failures/s over time, per
endpoint, with the number of users; `steps.png`: P50/P95 of each step of the student journey
(search, slots, hold, payment intent, webhook ingest, booking read, session token, cancel,
hold → confirmed, a provider adding a slot) with its SLO. Locust's history percentiles are those of a sliding
window (the last ~10 s), so the curves show how latency moves with the load.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

SEARCH = (
    "GET /api/v1/search/tutors",
    "GET /api/v1/search/tutors/map",
    "GET /api/v1/search/coaches",
)


# The steps of the student journey, each plotted on its own (steps.png), with its SLO.
JOURNEY_STEPS: tuple[tuple[str, str, float | None], ...] = (
    ("search tutors", "GET /api/v1/search/tutors", 200.0),
    ("slots", "GET /api/v1/providers/{provider_id}/availability", 100.0),
    ("hold", "POST /api/v1/bookings", 150.0),
    ("payment intent", "POST /api/v1/bookings/{booking_id}/payment-intent", 300.0),
    ("webhook ingest", "POST /api/v1/payments/webhooks/stripe", 100.0),
    ("booking read", "GET /api/v1/bookings/{booking_id}", 150.0),
    ("session token", "POST /api/v1/bookings/{booking_id}/session-token", 120.0),
    ("cancel", "POST /api/v1/bookings/{booking_id}/cancel", 150.0),
    ("hold → confirmed", "JOURNEY hold -> confirmed", 2000.0),
    ("provider adds a slot", "POST /api/v1/availability", 250.0),
)

NAN = float("nan")


def _f(v: str | None) -> float:
    """A CSV number; NaN (a gap in the plot) when Locust wrote none."""
    if v is None or v in ("", "N/A"):
        return NAN
    try:
        return float(v)
    except ValueError:
        return NAN


def read_history(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Rows of the history CSV grouped by "METHOD name" ('Aggregated' for the total)."""
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            key = row["Name"] if row["Name"] == "Aggregated" else f"{row['Type']} {row['Name']}"
            series[key].append(row)
    return series


def _ms(v: str | None) -> float:
    """A latency value for a log axis (no data and 0 are gaps, not drops to zero)."""
    x = _f(v)
    return x if x > 0 else NAN


def plot_history(
    history_csv: Path, out_dir: Path, slo_ms: tuple[float, ...] = (25.0, 200.0)
) -> list[Path]:
    """Write `latency.png` and `throughput.png` into `out_dir`; returns their paths
    ([] when the history is empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_history(history_csv)
    agg = series.get("Aggregated", [])
    if not agg:
        return []
    t0 = min(int(r["Timestamp"]) for r in agg)

    def xs(rows: list[dict[str, Any]]) -> list[int]:
        return [int(r["Timestamp"]) - t0 for r in rows]

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for col, style in (("50%", "-"), ("95%", "-"), ("99%", ":")):
        ax.plot(xs(agg), [_ms(r[col]) for r in agg], style, lw=2, label=f"all requests P{col[:-1]}")
    for name in SEARCH:
        rows = series.get(name, [])
        if rows:
            ax.plot(xs(rows), [_ms(r["95%"]) for r in rows], "--", lw=1, label=f"{name} P95")
    for ms, color in zip(slo_ms, ("red", "darkred", "black"), strict=False):
        ax.axhline(ms, color=color, lw=0.8, ls="-.", label=f"search P95 SLO {ms:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("response time (ms, log scale)")
    ax.set_title("Latency percentiles over time (Locust, sliding window)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    lat = out_dir / "latency.png"
    fig.tight_layout()
    fig.savefig(lat, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(11, 5.5))
    ax.plot(xs(agg), [_f(r["Requests/s"]) for r in agg], lw=2, label="all requests/s")
    ax.plot(xs(agg), [_f(r["Failures/s"]) for r in agg], lw=1.5, color="red", label="failures/s")
    for name, rows in sorted(series.items()):
        if name != "Aggregated" and rows:
            ax.plot(xs(rows), [_f(r["Requests/s"]) for r in rows], lw=0.8, label=name)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("requests/s")
    ax2 = ax.twinx()
    ax2.plot(xs(agg), [_f(r["User Count"]) for r in agg], color="grey", ls=":", label="users")
    ax2.set_ylabel("users")
    ax.set_title("Throughput over time")
    ax.grid(True, alpha=0.3)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    thr = out_dir / "throughput.png"
    fig.tight_layout()
    fig.savefig(thr, dpi=110)
    plt.close(fig)
    paths = [lat, thr]

    present = [(label, key, slo) for label, key, slo in JOURNEY_STEPS if series.get(key)]
    if present:
        cols = 2
        rows_n = (len(present) + cols - 1) // cols
        fig, axes = plt.subplots(rows_n, cols, figsize=(12, 2.8 * rows_n), squeeze=False)
        for ax, (label, key, slo) in zip(axes.flat, present, strict=False):
            rows = series[key]
            for col, style in (("50%", "-"), ("95%", "-")):
                ax.plot(xs(rows), [_ms(r[col]) for r in rows], style, lw=1.5, label=f"P{col[:-1]}")
            if slo is not None:
                ax.axhline(slo, color="red", lw=0.8, ls="-.", label=f"P95 SLO {slo:g} ms")
            ax.set_title(f"{label}: {key}", fontsize=9)
            ax.set_ylabel("ms")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
        for ax in list(axes.flat)[len(present) :]:
            ax.axis("off")
        fig.suptitle("The journey step by step (Locust, sliding window)")
        fig.tight_layout()
        steps = out_dir / "steps.png"
        fig.savefig(steps, dpi=100)
        plt.close(fig)
        paths.append(steps)
    return paths
