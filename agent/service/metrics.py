"""Prometheus metrics: workers count in plain dicts, the main process owns the registry.

Workers are forked processes. Instead of prometheus-client's multiprocess mode
(an mmap file per process and metric, a directory to manage), each worker
counts into a `WorkerTally` (dict increments, no lock, no syscall per packet)
and ships a `MetricsDelta` over its control pipe about once a second. The main
process adds the deltas into `MetricsHub`, a custom collector that also reads
the kernel's figures (nft named counters, /proc NFQUEUE stats) at scrape time.
"""

from __future__ import annotations

import select
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from agent.config import MetricsSettings
from agent.core.decision import Decision
from agent.kernel.nfqueue_config import QueueStats

PREFIX = "rustyflag"
# Seconds; decide() on one packet is tens of microseconds, a reassembled request more.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
)
SET_DIRECTIONS = ("src", "dst")

ReasonKey = tuple[str, str, str, str, str]  # action, technique, campaign, kind, type


@dataclass(frozen=True, slots=True)
class MetricsDelta:
    """What one worker counted since its last delta (picklable, sent over the pipe)."""

    queue: int
    decisions: dict[str, int] = field(default_factory=dict)  # verdict -> n
    reasons: dict[ReasonKey, int] = field(default_factory=dict)
    decode_failures: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    log_outcomes: dict[str, int] = field(default_factory=dict)  # logged/duplicate/rate_limit
    packets: dict[str, int] = field(default_factory=dict)  # verdict -> n (every packet)
    errors: int = 0
    flows_blocked: int = 0
    evictions: int = 0
    expirations: int = 0
    flows: int = 0  # a gauge: flow-table size now
    fast_lane: dict[str, int] = field(default_factory=dict)  # hits/handoffs of the C fast lane
    latency_buckets: tuple[int, ...] = ()  # per LATENCY_BUCKETS + the +Inf bucket
    latency_sum: float = 0.0

    @property
    def empty(self) -> bool:
        return not (
            self.decisions or self.packets or self.errors or self.evictions or self.expirations
            or any(self.latency_buckets) or self.log_outcomes or self.fast_lane
        )


class _QueueCountersLike(Protocol):
    errors: int
    flows_blocked: int

    def verdict_counts(self) -> dict[str, int]: ...


class _FlowTableLike(Protocol):
    evictions: int
    expirations: int

    def __len__(self) -> int: ...


def _add(into: dict[Any, int], key: Any, n: int = 1) -> None:
    into[key] = into.get(key, 0) + n


def count_decision(
    decision: Decision,
    decisions: dict[str, int],
    reasons: dict[ReasonKey, int],
    decode_failures: dict[str, int],
    anomalies: dict[str, int],
) -> None:
    verdict = decision.verdict.value
    _add(decisions, verdict)
    for reason in decision.reasons:
        technique = "" if reason.technique is None else reason.technique.attack_id
        ref = reason.indicator
        _add(reasons, (verdict, technique, reason.campaign, ref.kind, ref.type))
    if decision.decode_failure is not None:
        _add(decode_failures, decision.decode_failure.value)
    for kind, _detail in decision.anomalies:
        _add(anomalies, kind.value)


class WorkerTally:
    """Counts in one worker process; `take_delta` empties it."""

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self._reset()
        self._last: dict[str, int] = {}
        self._last_packets: dict[str, int] = {}
        self._last_lane: dict[str, int] = {}
        self._last_log: dict[str, int] = {}

    def _reset(self) -> None:
        self.decisions: dict[str, int] = {}
        self.reasons: dict[ReasonKey, int] = {}
        self.decode_failures: dict[str, int] = {}
        self.anomalies: dict[str, int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe_latency(self, seconds: float) -> None:
        self.latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def record(self, decision: Decision) -> None:
        """A decision handed to the decision log (the same set the log accounts for)."""
        count_decision(
            decision, self.decisions, self.reasons, self.decode_failures, self.anomalies
        )

    def _since_last(self, name: str, value: int) -> int:
        delta = value - self._last.get(name, 0)
        self._last[name] = value
        return delta

    @staticmethod
    def _dict_delta(now: dict[str, int], last: dict[str, int]) -> dict[str, int]:
        out = {k: v - last.get(k, 0) for k, v in now.items() if v != last.get(k, 0)}
        last.update(now)
        return out

    def take_delta(
        self,
        counters: _QueueCountersLike,
        flows: _FlowTableLike,
        log_outcomes: dict[str, int],
        lane: dict[str, int] | None = None,
    ) -> MetricsDelta:
        """Everything since the last call; `counters`, `flows`, `log_outcomes` and `lane`
        are cumulative (the inspector's, the flow table's, the decision log's, the fast
        lane's `stats()`)."""
        delta = MetricsDelta(
            queue=self.queue,
            decisions=self.decisions,
            reasons=self.reasons,
            decode_failures=self.decode_failures,
            anomalies=self.anomalies,
            log_outcomes=self._dict_delta(log_outcomes, self._last_log),
            packets=self._dict_delta(counters.verdict_counts(), self._last_packets),
            errors=self._since_last("errors", counters.errors),
            flows_blocked=self._since_last("flows_blocked", counters.flows_blocked),
            evictions=self._since_last("evictions", flows.evictions),
            expirations=self._since_last("expirations", flows.expirations),
            flows=len(flows),
            latency_buckets=tuple(self.latency),
            latency_sum=self.latency_sum,
            fast_lane=self._dict_delta(
                {what: lane[what] for what in ("hits", "handoffs")}, self._last_lane
            )
            if lane
            else {},
        )
        self._reset()
        return delta


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What the main process knows about itself, for the info and intel gauges."""

    intel_version: str = ""
    mode: str = ""
    backend: str = ""
    campaigns: int = 0
    iocs: int = 0
    ioas: int = 0
    queues: tuple[int, ...] = ()


class MetricsHub(Collector):
    """Totals of every process plus kernel figures read at scrape time (thread-safe:
    the HTTP server thread collects while the main loop adds)."""

    def __init__(
        self,
        kernel_counters: Callable[[], dict[str, tuple[int, int]]] | None = None,
        queue_stats: Callable[[], list[QueueStats]] | None = None,
    ) -> None:
        self.kernel_counters = kernel_counters
        self.queue_stats = queue_stats
        self._lock = threading.Lock()
        self._decisions: dict[tuple[str, str], int] = {}  # (source, verdict)
        self._reasons: dict[tuple[str, ...], int] = {}  # (source, *ReasonKey)
        self._decode_failures: dict[str, int] = {}
        self._anomalies: dict[str, int] = {}
        self._log_outcomes: dict[tuple[str, str], int] = {}  # (source, outcome)
        self._packets: dict[tuple[int, str], int] = {}
        self._queue_totals: dict[tuple[str, int], int] = {}  # (what, queue)
        self._flows: dict[int, int] = {}
        self._fast_lane: dict[tuple[int, str], int] = {}  # (queue, hits | handoffs)
        self._latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._scrape_errors: dict[str, int] = {}
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload_success = 0.0
        self.started = time.time()
        self.worker_restarts = 0
        self.info = AgentInfo()
        self._server: Any = None

    # -- feeding ----------------------------------------------------------------------------

    def add(self, delta: MetricsDelta, source: str = "nfqueue") -> None:
        with self._lock:
            for verdict, n in delta.decisions.items():
                _add(self._decisions, (source, verdict), n)
            for key, n in delta.reasons.items():
                _add(self._reasons, (source, *key), n)
            for reason, n in delta.decode_failures.items():
                _add(self._decode_failures, reason, n)
            for kind, n in delta.anomalies.items():
                _add(self._anomalies, kind, n)
            for outcome, n in delta.log_outcomes.items():
                _add(self._log_outcomes, (source, outcome), n)
            for verdict, n in delta.packets.items():
                _add(self._packets, (delta.queue, verdict), n)
            for what, n in (
                ("errors", delta.errors),
                ("flows_blocked", delta.flows_blocked),
                ("evictions", delta.evictions),
                ("expirations", delta.expirations),
            ):
                _add(self._queue_totals, (what, delta.queue), n)
            self._flows[delta.queue] = delta.flows
            for what, n in delta.fast_lane.items():
                _add(self._fast_lane, (delta.queue, what), n)
            for index, n in enumerate(delta.latency_buckets):
                self._latency[index] += n
            self._latency_sum += delta.latency_sum

    def record_main(self, decision: Decision, source: str, log_outcome: str) -> None:
        """A decision made in the main process (NFLOG: a kernel drop of a new flow)."""
        decisions: dict[str, int] = {}
        reasons: dict[ReasonKey, int] = {}
        failures: dict[str, int] = {}
        anomalies: dict[str, int] = {}
        count_decision(decision, decisions, reasons, failures, anomalies)
        self.add(
            MetricsDelta(
                queue=-1,
                decisions=decisions,
                reasons=reasons,
                decode_failures=failures,
                anomalies=anomalies,
                log_outcomes={log_outcome: 1},
            ),
            source=source,
        )

    def reload_succeeded(self, info: AgentInfo) -> None:
        with self._lock:
            self.reloads += 1
            self.last_reload_success = time.time()
            self.info = info

    def reload_failed(self) -> None:
        with self._lock:
            self.reload_failures += 1

    def set_info(self, info: AgentInfo) -> None:
        with self._lock:
            self.info = info

    def worker_restarted(self) -> None:
        with self._lock:
            self.worker_restarts += 1

    # -- serving ----------------------------------------------------------------------------

    def serve(self, settings: MetricsSettings) -> None:
        """Start the HTTP endpoint (a daemon thread); raises OSError if the port is taken."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        self._server, _thread = start_http_server(settings.port, settings.host, registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- collecting -------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        kernel = self._read_kernel()
        with self._lock:
            return list(self._families(*kernel))

    def _read_kernel(self) -> tuple[dict[str, tuple[int, int]] | None, list[QueueStats] | None]:
        counters: dict[str, tuple[int, int]] | None = None
        queues: list[QueueStats] | None = None
        if self.kernel_counters is not None:
            try:
                counters = self.kernel_counters()
            except Exception:  # a failed nft call must not fail the scrape
                _add(self._scrape_errors, "nft_counters")
        if self.queue_stats is not None:
            try:
                queues = self.queue_stats()
            except Exception:
                _add(self._scrape_errors, "queue_stats")
        return counters, queues

    def _families(
        self, counters: dict[str, tuple[int, int]] | None, queues: list[QueueStats] | None
    ) -> Iterator[Metric]:
        p = PREFIX
        decisions = CounterMetricFamily(
            f"{p}_decisions", "Notable decisions made (each is logged or counted as suppressed)",
            labels=["source", "action"],
        )
        for (source, verdict), n in sorted(self._decisions.items()):
            decisions.add_metric([source, verdict], n)
        yield decisions
        reasons = CounterMetricFamily(
            f"{p}_decision_reasons", "Reasons in decisions, by technique, campaign and indicator",
            labels=["source", "action", "technique", "campaign", "indicator_kind",
                    "indicator_type"],
        )
        for key, n in sorted(self._reasons.items()):
            reasons.add_metric(list(key), n)
        yield reasons
        outcomes = CounterMetricFamily(
            f"{p}_decision_events",
            "Decisions by what the log did with them: logged, or folded (duplicate, rate_limit)",
            labels=["source", "outcome"],
        )
        for (source, outcome), n in sorted(self._log_outcomes.items()):
            outcomes.add_metric([source, outcome], n)
        yield outcomes
        yield _by_label(f"{p}_decode_failures", "Packets that could not be decoded", "reason",
                        self._decode_failures)
        yield _by_label(f"{p}_anomalies", "Protocol anomalies reported", "kind", self._anomalies)
        packets = CounterMetricFamily(
            f"{p}_queue_packets", "Packets the inspector gave a verdict, per NFQUEUE",
            labels=["queue", "verdict"],
        )
        for (queue, verdict), n in sorted(self._packets.items()):
            packets.add_metric([str(queue), verdict], n)
        yield packets
        for what, help_text in (
            ("errors", "Packets whose inspection raised (verdict by fail policy)"),
            ("flows_blocked", "Flows the inspector handed to the kernel to block"),
            ("evictions", "Flows dropped from the flow table for room"),
            ("expirations", "Idle flows expired from the flow table"),
        ):
            name = f"{p}_flow_{what}" if what in ("evictions", "expirations") else f"{p}_queue_{what}"
            family = CounterMetricFamily(name, help_text, labels=["queue"])
            for (kind, queue), n in sorted(self._queue_totals.items()):
                if kind == what:
                    family.add_metric([str(queue)], n)
            yield family
        lane = CounterMetricFamily(
            f"{p}_fast_lane_packets",
            "Queued packets the C fast lane accepted (accepted) or handed back to the Python "
            "path (handed_back)",
            labels=["queue", "outcome"],
        )
        for (queue, what), n in sorted(self._fast_lane.items()):
            lane.add_metric([str(queue), "accepted" if what == "hits" else "handed_back"], n)
        yield lane
        flows = GaugeMetricFamily(f"{p}_flows", "Flows in the flow table", labels=["queue"])
        for queue, n in sorted(self._flows.items()):
            flows.add_metric([str(queue)], n)
        yield flows
        buckets = []
        running = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self._latency, strict=True):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        yield HistogramMetricFamily(
            f"{p}_inspection_latency_seconds", "Time to decide one queued packet",
            buckets=buckets, sum_value=self._latency_sum,
        )
        yield from self._kernel_families(counters, queues)
        yield from self._service_families()

    def _kernel_families(
        self, counters: dict[str, tuple[int, int]] | None, queues: list[QueueStats] | None
    ) -> Iterator[Metric]:
        p = PREFIX
        set_drops = CounterMetricFamily(
            f"{p}_kernel_set_packets",
            "Packets matching an IOC set in the kernel (dropped, or only counted in dry-run)",
            labels=["set", "direction"],
        )
        named = CounterMetricFamily(
            f"{p}_nft_counter_packets", "Named nft counters of the agent's table",
            labels=["counter"],
        )
        named_bytes = CounterMetricFamily(
            f"{p}_nft_counter_bytes", "Bytes of the named nft counters", labels=["counter"]
        )
        for name, (packets, nbytes) in sorted((counters or {}).items()):
            named.add_metric([name], packets)
            named_bytes.add_metric([name], nbytes)
            set_name, _, direction = name.rpartition("_")
            if set_name.startswith("ioc_") and direction in SET_DIRECTIONS:
                set_drops.add_metric([set_name, direction], packets)
        yield set_drops
        yield named
        yield named_bytes
        kernel_dropped = CounterMetricFamily(
            f"{p}_queue_kernel_dropped",
            "Packets the kernel dropped (or failed open) before the inspector saw them",
            labels=["queue", "cause"],
        )
        waiting = GaugeMetricFamily(
            f"{p}_queue_waiting", "Packets waiting for a verdict", labels=["queue"]
        )
        for stat in queues or []:
            queue = str(stat.queue_num)
            kernel_dropped.add_metric([queue, "queue_full"], stat.queue_dropped)
            kernel_dropped.add_metric([queue, "socket_overrun"], stat.user_dropped)
            waiting.add_metric([queue], stat.queue_total)
        yield kernel_dropped
        yield waiting
        yield _by_label(f"{p}_scrape_errors", "Kernel reads that failed during a scrape",
                        "source", self._scrape_errors)

    def _service_families(self) -> Iterator[Metric]:
        p = PREFIX
        info = self.info
        yield InfoMetricFamily(
            f"{p}_intel", "Intel and mode in force",
            value={"intel_version": info.intel_version, "mode": info.mode,
                   "queue_backend": info.backend},
        )
        indicators = GaugeMetricFamily(
            f"{p}_intel_indicators", "Indicators loaded", labels=["kind"]
        )
        indicators.add_metric(["ioc"], info.iocs)
        indicators.add_metric(["ioa"], info.ioas)
        yield indicators
        yield GaugeMetricFamily(f"{p}_intel_campaigns", "Campaigns loaded", value=info.campaigns)
        yield GaugeMetricFamily(f"{p}_workers", "Inspector workers", value=len(info.queues))
        yield CounterMetricFamily(f"{p}_worker_restarts", "Workers restarted after dying",
                                  value=self.worker_restarts)
        yield CounterMetricFamily(f"{p}_reloads", "Successful reloads", value=self.reloads)
        yield CounterMetricFamily(f"{p}_reload_failures", "Reloads that kept the old state",
                                  value=self.reload_failures)
        yield GaugeMetricFamily(
            f"{p}_last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload (or of the start)",
            value=self.last_reload_success or self.started,
        )
        yield GaugeMetricFamily(f"{p}_start_time_seconds", "Unix time the agent started",
                                value=self.started)


def _by_label(name: str, help_text: str, label: str, values: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def exported_metric_names() -> set[str]:
    """Every sample name a scrape can contain (for the dashboard test)."""
    hub = MetricsHub(
        lambda: {"ioc_v4_src": (0, 0)},
        lambda: [QueueStats(0, 1, 0, 2, 65535, 0, 0, 0)],
    )
    hub.add(MetricsDelta(queue=0, decisions={"drop": 1}, flows=1, log_outcomes={"logged": 1}))
    names: set[str] = set()
    for family in hub.collect():
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


METRICS_MESSAGE = "metrics"
SHIP_INTERVAL_S = 1.0


class _Sender(Protocol):
    def fileno(self) -> int: ...

    def send(self, obj: Any) -> None: ...


def ship_delta(control: _Sender, take_delta: Callable[[], MetricsDelta], *, wait: bool) -> bool:
    """Send `(METRICS_MESSAGE, queue, take_delta())` to the main process. Unless `wait`,
    only when the pipe has room (the delta is taken only then, so nothing is lost): a
    busy main process (a long reload) must never block the packet path."""
    if not wait:
        _, writable, _ = select.select([], [control.fileno()], [], 0)
        if not writable:
            return False
    delta = take_delta()
    try:
        control.send((METRICS_MESSAGE, delta.queue, delta))
    except OSError:
        return False
    return True


def is_metrics_message(message: object) -> bool:
    return isinstance(message, tuple) and len(message) == 3 and message[0] == METRICS_MESSAGE
