"""Cost of observability on the worker's packet path, and of a scrape (issue 6).

Prints, best of N runs, nanoseconds per call of:
- latency timing: two `time.perf_counter()` and `WorkerTally.observe_latency` (every packet);
- `WorkerTally.record` for a notable decision (two reasons);
- `DecisionLog.record` when the decision is logged (JSON line written to /dev/null),
  folded as a duplicate, and folded by the rate limit: what a flood costs per request;
- `log_decision` alone (the structlog JSON line) for comparison;
plus the pickled size of a one-second `MetricsDelta` and the time of one scrape
(`generate_latest`) of a hub fed with it.

    python bench/bench_observability.py [--runs 5] [--calls 200000]
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, generate_latest

from agent.config import LogSettings
from agent.core.decision import (
    Decision,
    Evidence,
    FlowKey,
    HttpInfo,
    IndicatorRef,
    PacketMeta,
    Reason,
    TechniqueRef,
    Verdict,
    Where,
)
from agent.intel.model import Action, Confidence, EvidenceKind
from agent.kernel.nfqueue_inspector import QueueCounters
from agent.logsetup import configure_logging, get_logger
from agent.service.decision_log import DecisionLog
from agent.service.metrics import MetricsHub, WorkerTally
from agent.service.worker import log_decision

SQLI = TechniqueRef("T1505", "Server Software Component", ("CWE-89",))


def decision(flow_id: int) -> Decision:
    reasons = tuple(
        Reason(
            "Rusty Flag",
            IndicatorRef("ioa", "ioa-num", "argument", "num", Confidence.LOW),
            SQLI,
            Evidence(kind, Where.PATH, f"1 union select {flow_id}", name="num"),
            Action.FLAG,
        )
        for kind in (EvidenceKind.SQLI, EvidenceKind.TYPE_VIOLATION)
    )
    return Decision(
        Verdict.FLAG, "v1", reasons=reasons,
        flow=FlowKey("TCP", "10.211.1.2", 40000 + flow_id % 20000, "10.211.2.2", 80),
        flow_id=flow_id,
        http=HttpInfo("GET", "metrics", f"/api/totals/last/1%20union%20select%20{flow_id}",
                      f"/api/totals/last/1 union select {flow_id}"),
    )


def best_ns(runs: int, calls: int, body: Callable[[int], None]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter_ns()
        body(calls)
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args(argv)
    runs, calls = args.runs, args.calls
    devnull = open(os.devnull, "w")  # noqa: SIM115 (lives for the whole run)
    configure_logging(fmt="json", stream=devnull)
    log = get_logger()
    meta = PacketMeta(timestamp=time.time(), queue=0)
    decisions = [decision(i) for i in range(5000)]
    tally = WorkerTally(0)

    def timing(n: int) -> None:
        for _ in range(n):
            started = time.perf_counter()
            tally.observe_latency(time.perf_counter() - started)

    def record(n: int) -> None:
        for i in range(n):
            tally.record(decisions[i % 5000])

    def emit(d: Decision, m: PacketMeta) -> None:
        log_decision(log, d, m, source="nfqueue", mode="enforce", value_limit=256)

    def gated(settings: LogSettings, warm: bool) -> Callable[[int], None]:
        gate = DecisionLog(log, emit, settings, source="nfqueue", worker=0)
        if warm:  # every decision already seen once in its flow
            for d in decisions:
                gate.record(d, meta)

        def body(n: int) -> None:
            for i in range(n):
                gate.record(decisions[i % 5000], meta)

        return body

    def plain_log(n: int) -> None:
        for i in range(n):
            emit(decisions[i % 5000], meta)

    log_calls = max(1000, calls // 20)
    rows = [
        ("latency timing per packet", best_ns(runs, calls, timing)),
        ("tally.record per decision", best_ns(runs, calls, record)),
        ("gate: logged (JSON line)",
         best_ns(runs, log_calls, gated(LogSettings(dedupe_flow=False), False))),
        ("gate: folded, duplicate", best_ns(runs, calls, gated(LogSettings(), True))),
        ("gate: folded, rate limit",
         best_ns(runs, calls, gated(LogSettings(dedupe_flow=False, rate_per_indicator=1e-9,
                                                burst_per_indicator=1), False))),
        ("log_decision alone", best_ns(runs, log_calls, plain_log)),
    ]
    for name, ns in rows:
        print(f"{name:28s} {ns:10.0f} ns")
    counters = QueueCounters(by_verdict={"accept": 1000, "flag": 200})

    class Flows:
        evictions = expirations = 0

        def __len__(self) -> int:
            return 1000

    for d in decisions[:200]:
        tally.record(d)
    delta = tally.take_delta(counters, Flows(), {"logged": 200, "rate_limit": 0, "duplicate": 0})
    print(f"{'delta pickled size':28s} {len(pickle.dumps(delta)):10d} bytes")
    hub = MetricsHub(lambda: {"ioc_v4_src": (1, 1)})
    hub.add(delta)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(hub)
    def scrapes(n: int) -> None:
        for _ in range(n):
            generate_latest(registry)

    scrape = best_ns(runs, 200, scrapes)
    print(f"{'scrape (generate_latest)':28s} {scrape / 1000:10.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
