"""Run every ``bench/bench_*.py`` and print one table of the ratios they measured.

Each benchmark module exposes ``main(argv) -> list[dict]``; a row has at least ``metric`` and
``ratio`` (measured side by side in one run, since these machines are noisy) and may carry
``note``. ``python -m bench [--quick] [NAME ...]``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
from pathlib import Path


def _discover() -> list[str]:
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    names = args.names or _discover()
    table: list[tuple[str, str, str, str]] = []
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        sub_argv = ["--quick"] if args.quick else []
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            params = inspect.signature(module.main).parameters
            rows = module.main(sub_argv) if params else module.main()
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"   failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        for row in rows or []:
            ratio = row.get("ratio")
            table.append((name, str(row.get("metric", "")),
                          f"{ratio:.3g}" if isinstance(ratio, (int, float)) else str(ratio),
                          str(row.get("note", ""))))
        print(f"   done in {time.perf_counter() - t0:.1f} s", flush=True)
    widths = [max(len(r[i]) for r in table + [("benchmark", "metric", "ratio", "note")]) for i in range(4)]
    header = ("benchmark", "metric", "ratio", "note")
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in table:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
