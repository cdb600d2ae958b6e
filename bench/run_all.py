"""Run every benchmark (`make bench`): API throughput, run latency/throughput/capacity, live viewers,
and the list at a million runs.

    python -m bench.run_all [--json results.json]

Each benchmark starts and stops its own services, one after the other, and prints its tables when
it ends; the summaries are printed again at the end. Missed targets are reported, not fatal; the
exit status is 1 only when a benchmark could not complete.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback

from bench import api_throughput, list_scale, run_latency, sse_viewers
from bench._stack import write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", dest="json_path", help="write both results as one JSON document here")
    args = parser.parse_args(argv)
    results, failed, started = {}, [], time.monotonic()
    for name, module in (("api_throughput", api_throughput), ("run_latency", run_latency),
                         ("sse_viewers", sse_viewers), ("list_scale", list_scale)):
        print(f"\n=== {name} ===", flush=True)
        try:
            results[name] = module.main([])
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=sys.stderr)
            raise
        except Exception:  # noqa: BLE001 - report it and go on with the next benchmark
            traceback.print_exc()
            failed.append(name)
    print(f"\n=== summary (all benchmarks took {time.monotonic() - started:.0f} s) ===")
    if "api_throughput" in results:
        api_throughput.print_report(results["api_throughput"])
    if "run_latency" in results:
        run_latency.print_report(results["run_latency"])
    if "sse_viewers" in results:
        sse_viewers.print_report(results["sse_viewers"])
    if "list_scale" in results:
        list_scale.print_report(results["list_scale"])
    if failed:
        print(f"\nbenchmarks that did not complete: {', '.join(failed)}", file=sys.stderr)
    write_json(args.json_path, results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
