"""Printing a py-spy CPU attribution, shared by the in-process CPU benchmarks
(`loadtests.bench_search_cpu`, `loadtests.bench_booking_cpu`)."""

from __future__ import annotations

from collections.abc import Mapping


def print_attribution(
    unit: str,
    cpu_s: float,
    share: Mapping[str, int],
    top: Mapping[str, int],
    top_n: int,
    width: int = 36,
) -> None:
    """Print the CPU per `unit` (`cpu_s`, seconds) split by component (`share`: samples
    per component name), then the `top_n` most sampled lines (`top`: samples per frame),
    each in µs per `unit` (samples / all samples * `cpu_s`)."""
    total = sum(share.values()) or 1
    print(f"py-spy attribution of {cpu_s * 1e6:.0f} µs CPU per {unit} ({total} samples):")
    for name, k in sorted(share.items(), key=lambda kv: -kv[1]):
        print(f"  {name:{width}} {k / total * cpu_s * 1e6:7.0f} µs  {k / total * 100:5.1f} %")
    print("top sampled lines:")
    for frame, k in sorted(top.items(), key=lambda kv: -kv[1])[:top_n]:
        print(f"  {k / total * cpu_s * 1e6:7.0f} µs  {frame}")
