"""Describe the machine a benchmark ran on (CPU, cores, memory, PostgreSQL version)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def describe(conn: Any | None = None) -> dict[str, Any]:
    """CPU model, logical cores, total memory (GiB), OS, Python and, given a psycopg
    connection, the PostgreSQL server version."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    if conn is not None:
        info["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
    return info


def one_line(info: dict[str, Any]) -> str:
    """`describe()` as one human-readable line."""
    pg = f", PostgreSQL {info['postgres']}" if "postgres" in info else ""
    return f"{info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB RAM{pg}"
