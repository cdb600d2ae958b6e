"""How fast the client CLI starts: median wall time of `agentruns --help` and `agentruns runs list --help`,
and the biggest imports of `agentruns.cli` (from `python -X importtime`).

    python -m bench.cli_startup [--runs 15] [--top 12]

The target is under 0.3 s on a 2-core machine; tests/test_cli_startup.py checks the import side
(no server module, no httpx/rich for help) without timing anything.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

AGENTRUNS = str(Path(sys.executable).with_name("agentruns"))
COMMANDS = (["--help"], ["runs", "list", "--help"])
TARGET_SECONDS = 0.3


def wall_times(argv: list[str], runs: int) -> list[float]:
    """Seconds per start of the installed `agentruns ARGV` (one warm-up start first, not counted)."""
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        subprocess.run([AGENTRUNS, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if i:  # the first start fills the page cache and writes .pyc files
            times.append(time.perf_counter() - started)
    return times


def import_costs(module: str = "agentruns.cli") -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, indented name) for every import `python -X importtime -c 'import MODULE'` reports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                          text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        rows.append((int(cumulative), int(own), name.rstrip()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed starts per command")
    parser.add_argument("--top", type=int, default=12, help="imports to list")
    args = parser.parse_args(argv)
    slow = False
    for command in COMMANDS:
        times = wall_times(command, args.runs)
        median = statistics.median(times)
        slow |= median > TARGET_SECONDS
        print(f"agentruns {' '.join(command):<18} median {median * 1000:6.1f} ms  "
              f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, {len(times)} runs)")
    rows = import_costs()
    total = next((c for c, _, name in rows if name.strip() == "agentruns.cli"), 0)
    print(f"\nimport agentruns.cli: {total / 1000:.1f} ms cumulative; the {args.top} biggest imports:")
    print(f"{'cumulative ms':>13} {'self ms':>8}  module (indent: imported by the one above)")
    for cumulative, own, name in sorted(rows, reverse=True)[: args.top]:
        print(f"{cumulative / 1000:13.1f} {own / 1000:8.1f}  {name}")
    if slow:
        print(f"\nslower than the {TARGET_SECONDS * 1000:.0f} ms target", file=sys.stderr)
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
