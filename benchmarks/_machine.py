"""What the machine's CPUs did, for the benchmarks (Linux: read from /proc)."""

from __future__ import annotations

import os
from pathlib import Path


def machine_busy_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        line = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal; guest time is already in user/nice.
    values = [int(v) for v in line.split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick
