"""Decision log gate (dedupe, rate limit, exact suppressed counts) and the metrics hub."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import LogSettings, MetricsSettings
from agent.core.decision import (
    Decision,
    DecodeFailureReason,
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
from agent.kernel.nfqueue_config import QueueStats
from agent.kernel.nfqueue_inspector import QueueCounters
from agent.service.decision_log import DUPLICATE, LOGGED, RATE_LIMIT, DecisionLog
from agent.service.metrics import (
    LATENCY_BUCKETS,
    AgentInfo,
    MetricsHub,
    WorkerTally,
    exported_metric_names,
    is_metrics_message,
    ship_delta,
)

SQLI = TechniqueRef("T1505", "Server Software Component", ("CWE-89",))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A structlog-shaped logger that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, name: str, **fields: Any) -> None:
        self.events.append((name, fields))

    info = warning


def sqli_decision(flow_id: int, value: str = "1 union select 1", *, arg: str = "num") -> Decision:
    reason = Reason(
        campaign="Rusty Flag",
        indicator=IndicatorRef("ioa", "ioa-num", "argument", arg, Confidence.LOW),
        technique=SQLI,
        evidence=Evidence(EvidenceKind.SQLI, Where.QUERY, value, name=arg),
        action=Action.DROP,
    )
    return Decision(
        Verdict.DROP,
        "v1",
        reasons=(reason,),
        flow=FlowKey("TCP", "10.0.0.2", 40000 + flow_id % 20000, "10.0.1.2", 8000),
        flow_id=flow_id,
        http=HttpInfo("GET", "h", f"/api/totals/last/{value}", "/api/totals/last"),
    )


def gate(settings_: LogSettings, clock: FakeClock) -> tuple[DecisionLog, list[Decision], Recorder]:
    emitted: list[Decision] = []
    log = Recorder()
    return (
        DecisionLog(log, lambda d, _m: emitted.append(d), settings_, source="nfqueue",
                    worker=0, clock=clock),
        emitted,
        log,
    )


META = PacketMeta(timestamp=1.0)


def suppressed_sum(log: Recorder) -> int:
    return sum(f["count"] for name, f in log.events if name == "suppressed")


def test_defaults_keep_every_distinct_decision_and_fold_identical_repeats() -> None:
    clock = FakeClock()
    log_gate, emitted, log = gate(LogSettings(), clock)
    assert log_gate.record(sqli_decision(1), META) == LOGGED
    assert log_gate.record(sqli_decision(1), META) == DUPLICATE  # same flow, same everything
    assert log_gate.record(sqli_decision(1, "2 or 1=1"), META) == LOGGED  # other value
    assert log_gate.record(sqli_decision(2), META) == LOGGED  # other flow
    assert len(emitted) == 3
    log_gate.flush(force=True)
    [(name, fields)] = log.events
    assert name == "suppressed" and fields["count"] == 1 and fields["reason"] == DUPLICATE
    assert fields["indicator"] == {"kind": "ioa", "type": "argument", "value": "num"}
    assert fields["flows"] == 1 and fields["action"] == "drop" and fields["worker"] == 0


def test_dedupe_off_logs_repeats() -> None:
    log_gate, emitted, _ = gate(LogSettings(dedupe_flow=False), FakeClock())
    for _ in range(5):
        log_gate.record(sqli_decision(1), META)
    assert len(emitted) == 5 and log_gate.suppressed == 0


def test_rate_limit_per_indicator_with_burst_and_refill() -> None:
    clock = FakeClock()
    log_gate, emitted, log = gate(
        LogSettings(rate_per_indicator=2.0, burst_per_indicator=3), clock
    )
    outcomes = [log_gate.record(sqli_decision(i), META) for i in range(10)]
    assert outcomes == [LOGGED] * 3 + [RATE_LIMIT] * 7
    # Another indicator has its own bucket.
    assert log_gate.record(sqli_decision(99, arg="id"), META) == LOGGED
    clock.now += 1.0  # 2 tokens back
    outcomes = [log_gate.record(sqli_decision(100 + i), META) for i in range(3)]
    assert outcomes == [LOGGED, LOGGED, RATE_LIMIT]
    assert log_gate.flush() == 0  # interval (10 s) not over
    clock.now += 10.0
    assert log_gate.flush() == 1
    assert suppressed_sum(log) == 8 == log_gate.suppressed
    assert len(emitted) + suppressed_sum(log) == log_gate.recorded == 14


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from(["a", "b"]), st.sampled_from(["num", "id"]),
                  st.floats(0, 0.7)),
        max_size=300,
    ),
    st.floats(0.0, 5.0),
    st.integers(1, 4),
    st.booleans(),
)
def test_logged_plus_suppressed_equals_decisions(
    stream: list[tuple[int, str, str, float]], rate: float, burst: int, dedupe: bool
) -> None:
    clock = FakeClock()
    log_gate, emitted, log = gate(
        LogSettings(rate_per_indicator=rate, burst_per_indicator=burst, dedupe_flow=dedupe,
                    suppressed_interval=1.0),
        clock,
    )
    for flow, value, arg, step in stream:
        clock.now += step
        log_gate.record(sqli_decision(flow, value, arg=arg), META)
        log_gate.flush()
    log_gate.flush(force=True)
    assert len(emitted) + suppressed_sum(log) == len(stream)
    assert log_gate.logged == len(emitted)


def test_decisions_without_flow_are_never_deduped() -> None:
    log_gate, emitted, _ = gate(LogSettings(), FakeClock())
    failure = Decision(Verdict.ACCEPT, "v1", decode_failure=DecodeFailureReason.TRUNCATED_IP)
    for _ in range(3):
        log_gate.record(failure, META)
    assert len(emitted) == 3


def scrape(hub: MetricsHub) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(hub)
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class Flows:
    def __init__(self) -> None:
        self.evictions = 0
        self.expirations = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size


def test_worker_deltas_add_up_in_the_hub() -> None:
    tally = WorkerTally(3)
    counters = QueueCounters()
    flows = Flows()
    outcomes = {LOGGED: 0, DUPLICATE: 0, RATE_LIMIT: 0}
    hub = MetricsHub(
        lambda: {"ioc_v4_src": (7, 700), "ioc_v4_dst": (2, 200), "queued_http": (50, 5000)},
        lambda: [QueueStats(3, 1, 4, 2, 65535, 5, 6, 100)],
    )
    for round_ in range(3):
        for _ in range(4):
            tally.record(sqli_decision(1))
            tally.observe_latency(0.00003)
        counters.by_verdict["drop"] = counters.by_verdict.get("drop", 0) + 4
        counters.by_verdict["accept"] = counters.by_verdict.get("accept", 0) + 10
        flows.evictions += 2
        flows.size = 10 + round_
        outcomes[LOGGED] += 3
        outcomes[DUPLICATE] += 1
        lane = {"hits": 100 * (round_ + 1), "handoffs": round_, "flows": 5}
        hub.add(tally.take_delta(counters, flows, outcomes, lane))
    got = scrape(hub)
    assert got[("rustyflag_fast_lane_packets_total",
                (("outcome", "accepted"), ("queue", "3")))] == 300
    assert got[("rustyflag_fast_lane_packets_total",
                (("outcome", "handed_back"), ("queue", "3")))] == 2
    assert got[("rustyflag_decisions_total", (("action", "drop"), ("source", "nfqueue")))] == 12
    reason_labels = (("action", "drop"), ("campaign", "Rusty Flag"), ("indicator_kind", "ioa"),
                     ("indicator_type", "argument"), ("source", "nfqueue"),
                     ("technique", "T1505"))
    assert got[("rustyflag_decision_reasons_total", reason_labels)] == 12
    assert got[("rustyflag_decision_events_total",
                (("outcome", "logged"), ("source", "nfqueue")))] == 9
    assert got[("rustyflag_decision_events_total",
                (("outcome", "duplicate"), ("source", "nfqueue")))] == 3
    assert got[("rustyflag_queue_packets_total", (("queue", "3"), ("verdict", "accept")))] == 30
    assert got[("rustyflag_flow_evictions_total", (("queue", "3"),))] == 6
    assert got[("rustyflag_flows", (("queue", "3"),))] == 12
    assert got[("rustyflag_inspection_latency_seconds_count", ())] == 12
    assert got[("rustyflag_inspection_latency_seconds_bucket", (("le", "5e-05"),))] == 12
    assert got[("rustyflag_inspection_latency_seconds_bucket", (("le", "2.5e-05"),))] == 0
    assert got[("rustyflag_kernel_set_packets_total", (("direction", "src"), ("set", "ioc_v4")))] == 7
    assert got[("rustyflag_queue_kernel_dropped_total",
                (("cause", "queue_full"), ("queue", "3")))] == 5
    assert got[("rustyflag_queue_waiting", (("queue", "3"),))] == 4
    assert len(LATENCY_BUCKETS) + 1 == len(tally.take_delta(counters, flows, outcomes)
                                           .latency_buckets)


def test_reloads_info_and_kernel_failure_do_not_break_the_scrape() -> None:
    def broken() -> dict[str, tuple[int, int]]:
        raise OSError("nft missing")

    hub = MetricsHub(broken)
    hub.set_info(AgentInfo("abc123", "enforce", "nft", 1, 1, 2, (0, 1)))
    hub.reload_succeeded(AgentInfo("def456", "dry-run", "nft", 1, 1, 2, (0, 1)))
    hub.reload_failed()
    got = scrape(hub)
    info = [k for k in got if k[0] == "rustyflag_intel_info"]
    assert dict(info[0][1])["intel_version"] == "def456"
    assert got[("rustyflag_reloads_total", ())] == 1
    assert got[("rustyflag_reload_failures_total", ())] == 1
    assert got[("rustyflag_scrape_errors_total", (("source", "nft_counters"),))] == 1
    assert got[("rustyflag_last_reload_success_timestamp_seconds", ())] > 0


def test_ship_delta_waits_for_room_and_takes_nothing_otherwise() -> None:
    import multiprocessing

    reader, writer = multiprocessing.Pipe(duplex=False)
    tally = WorkerTally(0)
    tally.record(sqli_decision(1))
    taken: list[int] = []

    def take() -> Any:
        taken.append(1)
        return tally.take_delta(QueueCounters(), Flows(), {})

    assert ship_delta(writer, take, wait=False)
    message = reader.recv()
    assert is_metrics_message(message) and message[2].decisions == {"drop": 1}
    # Fill the pipe: the next non-waiting ship must not take (and lose) a delta.
    import os

    os.set_blocking(writer.fileno(), False)
    try:
        while True:
            os.write(writer.fileno(), b"x" * 4096)
    except BlockingIOError:
        pass
    assert not ship_delta(writer, take, wait=False)
    assert len(taken) == 1


def test_metrics_endpoint_serves_on_loopback() -> None:
    hub = MetricsHub()
    hub.serve(MetricsSettings(listen="127.0.0.1:0"))
    try:
        port = hub._server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert "rustyflag_decisions_total" in body or "rustyflag_decisions " in body
        assert "rustyflag_intel_info" in body
    finally:
        hub.close()


def test_dashboard_queries_only_exported_metrics() -> None:
    import re

    dashboard = json.loads(
        (Path(__file__).parent.parent / "configs" / "grafana-dashboard.json").read_text()
    )
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard)
    assert len(exprs) >= 10
    exported = exported_metric_names()
    used = {m for e in exprs for m in re.findall(r"\brustyflag_[a-z0-9_]+", e)}
    assert used, exprs
    assert used <= exported, sorted(used - exported)
