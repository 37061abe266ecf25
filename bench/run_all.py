"""`make bench`: every benchmark in turn, each printing its own table.

Offline benchmarks always run; those that need root and the namespace lab run
when this is root (all their traffic stays inside lab namespaces). Select some
with `--only intel,core`; `--list` shows the names. Figures and methods are in
docs/performance.md, docs/reliability.md and docs/detection.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# (name, script and arguments, needs root + lab)
BENCHMARKS: list[tuple[str, list[str], bool]] = [
    ("intel", ["bench_intel.py"], False),
    ("decode", ["bench_decode.py"], False),
    ("http", ["bench_http.py"], False),
    ("detection", ["bench_detection.py"], False),
    ("core", ["bench_core.py"], False),
    ("nft-sets", ["bench_nft_sets.py"], True),
    ("nflog", ["bench_nflog.py"], True),
    ("live", ["bench_live.py"], True),
    ("reload", ["bench_service_reload.py"], True),
    ("feeds", ["bench_feeds.py"], False),
    ("floods", ["bench_floods.py", "syn"], False),
    ("attack-tools", ["bench_attack_tools.py"], True),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated names")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        for name, argv, root in BENCHMARKS:
            print(f"{name:<14} {' '.join(argv)}{'  (root, lab)' if root else ''}")
        return 0
    wanted = set(args.only.split(",")) if args.only else None
    is_root = os.geteuid() == 0
    failed = []
    for name, argv, needs_root in BENCHMARKS:
        if wanted is not None and name not in wanted:
            continue
        if needs_root and not is_root:
            print(f"== {name}: skipped (needs root for the namespace lab)")
            continue
        print(f"\n== {name}: {' '.join(argv)}", flush=True)
        started = time.monotonic()
        code = subprocess.run([sys.executable, str(BENCH / argv[0]), *argv[1:]], check=False).returncode
        print(f"== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
