"""`rustyflag-agent status`: the running agent at a glance, from its metrics and the kernel.

Two readings: the agent's own `/metrics` endpoint (loopback, `[metrics] listen`)
and the table's named nft counters (through agent/kernel, so it also answers
when the agent is down but left its rules in). `summarize` is pure: it turns
the scraped text and the counters into one dict; `render` prints it.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent.config import Settings
from agent.kernel.commands import CommandRunner
from agent.kernel.errors import KernelError
from agent.kernel.nftables import NftablesAdapter

SCRAPE_TIMEOUT_S = 3.0

Samples = dict[str, list[tuple[dict[str, str], float]]]


def metrics_url(settings: Settings) -> str:
    host = settings.metrics.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.metrics.port}/metrics"


def parse_samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def _sum_by(samples: Samples, name: str, *labels: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for sample_labels, value in samples.get(name, []):
        key = "/".join(sample_labels.get(label, "") for label in labels)
        out[key] = out.get(key, 0) + int(value)
    return out


def _one(samples: Samples, name: str, default: float = 0.0) -> float:
    values = samples.get(name)
    return values[0][1] if values else default


def summarize(
    metrics_text: str | None,
    counters: dict[str, tuple[int, int]] | None,
    *,
    now: float,
    endpoint: str,
    problems: list[str],
) -> dict[str, Any]:
    """The status document (also the `--json` output)."""
    report: dict[str, Any] = {"endpoint": endpoint, "running": metrics_text is not None}
    if metrics_text is not None:
        samples = parse_samples(metrics_text)
        info = samples.get("rustyflag_intel_info", [({}, 0.0)])[0][0]
        started = _one(samples, "rustyflag_start_time_seconds")
        last_reload = _one(samples, "rustyflag_last_reload_success_timestamp_seconds")
        latency_count = _one(samples, "rustyflag_inspection_latency_seconds_count")
        latency_sum = _one(samples, "rustyflag_inspection_latency_seconds_sum")
        report |= {
            "mode": info.get("mode"),
            "queue_backend": info.get("queue_backend"),
            "intel_version": info.get("intel_version"),
            "campaigns": int(_one(samples, "rustyflag_intel_campaigns")),
            "indicators": _sum_by(samples, "rustyflag_intel_indicators", "kind"),
            "workers": int(_one(samples, "rustyflag_workers")),
            "worker_restarts": int(_one(samples, "rustyflag_worker_restarts_total")),
            "uptime_s": round(now - started, 1) if started else None,
            "reloads": int(_one(samples, "rustyflag_reloads_total")),
            "reload_failures": int(_one(samples, "rustyflag_reload_failures_total")),
            # The gauge holds the start time until a reload succeeds.
            "last_reload_age_s": round(now - last_reload, 1)
            if last_reload and _one(samples, "rustyflag_reloads_total")
            else None,
            "decisions": _sum_by(samples, "rustyflag_decisions_total", "source", "action"),
            "techniques": _sum_by(samples, "rustyflag_decision_reasons_total", "technique"),
            "decision_log": _sum_by(samples, "rustyflag_decision_events_total", "outcome"),
            "decode_failures": _sum_by(samples, "rustyflag_decode_failures_total", "reason"),
            "queue_packets": _sum_by(samples, "rustyflag_queue_packets_total", "queue",
                                     "verdict"),
            "queue_kernel_dropped": _sum_by(samples, "rustyflag_queue_kernel_dropped_total",
                                            "queue", "cause"),
            "flows": _sum_by(samples, "rustyflag_flows", "queue"),
            "flow_evictions": _sum_by(samples, "rustyflag_flow_evictions_total", "queue"),
            "inspection_mean_us": round(latency_sum / latency_count * 1e6, 1)
            if latency_count
            else None,
        }
    if counters is not None:
        report["kernel_counters"] = {
            name: {"packets": packets, "bytes": nbytes}
            for name, (packets, nbytes) in sorted(counters.items())
        }
    report["problems"] = problems
    return report


def gather(settings: Settings, runner: CommandRunner | None = None) -> dict[str, Any]:
    """Read the endpoint and the kernel; problems are listed, never raised."""
    problems: list[str] = []
    endpoint = metrics_url(settings)
    text: str | None = None
    try:
        # The URL is always http:// built from validated settings (no file: scheme).
        with urllib.request.urlopen(endpoint, timeout=SCRAPE_TIMEOUT_S) as response:  # noqa: S310
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        problems.append(f"agent metrics not reachable at {endpoint}: {reason}")
    counters: dict[str, tuple[int, int]] | None = None
    try:
        counters = NftablesAdapter(runner or CommandRunner(), settings.nft.table).counters()
    except (KernelError, OSError) as exc:
        problems.append(f"nft table inet {settings.nft.table}: {str(exc).splitlines()[0]}")
    return summarize(text, counters, now=time.time(), endpoint=endpoint, problems=problems)


def _pairs(values: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "none"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    if report["running"]:
        indicators = report["indicators"]
        lines += [
            f"agent:        running (metrics {report['endpoint']}), up "
            f"{_age(report['uptime_s']).removesuffix(' ago')}",
            f"mode:         {report['mode']}; queue backend {report['queue_backend']}; "
            f"{report['workers']} workers ({report['worker_restarts']} restarts)",
            f"intel:        {report['intel_version']}: {report['campaigns']} campaigns, "
            f"{indicators.get('ioc', 0)} IOC, {indicators.get('ioa', 0)} IOA",
            f"reloads:      {report['reloads']} ok, {report['reload_failures']} failed; "
            f"last success {_age(report['last_reload_age_s'])}",
            f"decisions:    {_pairs(report['decisions'])}",
            f"reasons:      {_pairs(report['techniques'])} (by technique)",
            f"decision log: {_pairs(report['decision_log'])}",
            f"queues:       {_pairs(report['queue_packets'])}",
            f"queue drops:  {_pairs(report['queue_kernel_dropped'])}",
            f"flows:        {_pairs(report['flows'])}; evictions {_pairs(report['flow_evictions'])}",
            f"decode fail:  {_pairs(report['decode_failures'])}",
            "inspection:   "
            + ("no packets yet" if report["inspection_mean_us"] is None
               else f"{report['inspection_mean_us']} us mean per packet"),
        ]
    else:
        lines.append("agent:        NOT RUNNING (no metrics endpoint)")
    counters = report.get("kernel_counters")
    if counters is not None:
        shown = ", ".join(f"{name}={c['packets']}" for name, c in counters.items())
        lines.append(f"kernel:       {shown or 'no named counters'}")
    lines += [f"problem:      {p}" for p in report["problems"]]
    return "\n".join(lines)
