"""Benchmark: the namespace lab (tests/lab) — bring-up, teardown, request cost.

- lab up: `Lab.__enter__` (3 namespaces, 2 veth pairs, addresses, routes,
  sysctls, isolation checks); lab down: `Lab.close` (the target is < 2 s up);
- server app start until /health answers on 80 and 8080;
- HTTP through the gateway (no agent): one curl process per request, and
  N requests on one keep-alive connection (per-request cost without spawning).

Needs root; everything stays inside the lab's namespaces.
Usage: bench_lab.py [--cycles 10] [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.lab.netns import ADDR, Lab, lab_unavailable_reason
from tests.lab.traffic import Request, http_url


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    return f"p50 {p50 * 1000:7.1f} ms  max {ordered[-1] * 1000:7.1f} ms  (n={len(ordered)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    if (reason := lab_unavailable_reason()) is not None:
        print(f"skipped: {reason}")
        return 0
    ups: list[float] = []
    downs: list[float] = []
    for _ in range(max(1, args.cycles)):
        lab = Lab()
        lab.__enter__()
        ups.append(lab.setup_seconds)
        started = time.perf_counter()
        lab.close()
        downs.append(time.perf_counter() - started)
    print(f"lab up        {_ms(ups)}")
    print(f"lab down      {_ms(downs)}")

    with Lab() as lab:
        started = time.perf_counter()
        lab.start_server_app()
        print(f"app start     {(time.perf_counter() - started) * 1000:7.1f} ms")
        url = http_url(ADDR.server_v4, 80, "/api/totals/last/3")
        curls = []
        for _ in range(min(args.requests, 50)):
            result = lab.client.curl(url)
            assert result.status == 200, result
            curls.append(result.elapsed)
        print(f"curl/request  {_ms(curls)}  (includes ip netns exec + curl start)")
        requests = [Request(path="/api/totals/last/3")] * args.requests
        started = time.perf_counter()
        ka = lab.client.keepalive(ADDR.server_v4, 80, requests)
        total = time.perf_counter() - started
        assert all(s == 200 for s in ka.statuses) and ka.single_connection
        print(f"keep-alive    {args.requests} requests in {total * 1000:.1f} ms "
              f"({total / args.requests * 1e6:.0f} us/request incl. one python start)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
