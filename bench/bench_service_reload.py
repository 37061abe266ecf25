"""Benchmark: `rustyflag-agent run` start and SIGHUP reload with large intel, in the lab.

The Rusty Flag campaign plus a plain list of N addresses (default 100,000;
100.64.0.0/10, lab-internal only). Figures: exec -> READY; per reload the
SIGHUP -> READY wall time and the agent's own `reload` event parts
(load / apply / workers); one reload that changes one address.

Needs root; the agent runs in the lab's gateway namespace.
Usage: bench_service_reload.py [--iocs 100000] [--reloads 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tests.test_service_lab as service_lab
from tests.lab.netns import Lab, cleanup_stale, lab_unavailable_reason
from tests.test_service_lab import ServiceRun

service_lab.RELOAD_TIMEOUT = 300.0  # large intel: measure, do not time out
service_lab.READY_TIMEOUT = 300.0


def _write_list(path: Path, count: int, offset: int = 0) -> None:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    path.write_text("".join(f"{ipaddress.IPv4Address(base + offset + i)}\n" for i in range(count)))


def _settle(run: ServiceRun, reloads: int, workers: int = 2, timeout: float = 120.0) -> None:
    """Wait until every worker finished its post-ack GC, so reloads are measured apart."""
    deadline = time.monotonic() + timeout
    while len(run.events("worker_reloaded")) < reloads * workers:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not report their reloads")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iocs", type=int, default=100_000)
    parser.add_argument("--reloads", type=int, default=5)
    args = parser.parse_args()
    if (reason := lab_unavailable_reason()) is not None:
        print(f"skipped: {reason}")
        return 0
    cleanup_stale()
    workdir = Path(tempfile.mkdtemp(prefix="rf-bench-reload-"))
    try:
        with Lab() as lab:
            run = ServiceRun(lab, workdir)
            feed = run.intel / "bulk.txt"
            _write_list(feed, args.iocs)
            started = time.monotonic()
            run.start()
            ready_s = time.monotonic() - started
            walls = []
            for done in range(1, args.reloads + 1):
                walls.append(run.reload()[1])
                _settle(run, done)
            _write_list(feed, args.iocs, offset=1)  # one address out, one in
            changed_s = run.reload()[1]
            _settle(run, args.reloads + 1)
            events = run.events("reload")
            worker_events = run.events("worker_reloaded")
            run.stop()
            run.notify.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    same, last = events[:-1], events[-1]
    print(f"intel: Rusty Flag + {args.iocs:,} plain-list IPv4 IOCs; 2 workers; lab gateway")
    print(f"exec -> READY                      {ready_s * 1000:8.0f} ms")
    print(f"SIGHUP -> READY (unchanged)  p50   {statistics.median(walls) * 1000:8.0f} ms"
          f"  max {max(walls) * 1000:.0f} ms  (n={len(walls)})")
    for part in ("load_ms", "apply_ms", "workers_ms"):
        print(f"  {part:<10} p50 {statistics.median(e[part] for e in same):8.1f} ms")
    def p50(key: str) -> float:
        return float(statistics.median(e[key] for e in worker_events))

    print(f"  per worker p50: load {p50('load_ms'):.0f} ms in a thread (still deciding), "
          f"switch {p50('switch_ms'):.0f} ms, GC {p50('gc_ms'):.0f} ms after the ack")
    print(f"SIGHUP -> READY (1 in, 1 out)      {changed_s * 1000:8.0f} ms  "
          f"(+{last['indicators_added']} -{last['indicators_removed']}; "
          f"load {last['load_ms']} / apply {last['apply_ms']} / workers {last['workers_ms']} ms)")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
