"""Plots of a Locust run from its `*_stats_history.csv` (`--csv-full-history`).

`latency.png`: P50/P95/P99 of all requests over time and the P95 of each search endpoint,
with the search SLO lines; `throughput.png`: requests/s and failures/s over time, per
endpoint, with the number of users. Locust's history percentiles are those of a sliding
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
    return [lat, thr]
