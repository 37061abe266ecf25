"""`rustyflag-agent status`: summary of a scrape and the kernel counters (pure parts)."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest

from agent.config import Settings
from agent.kernel.nfqueue_config import QueueStats
from agent.service.metrics import AgentInfo, MetricsDelta, MetricsHub
from agent.service.status import metrics_url, render, summarize


def scraped_text() -> str:
    hub = MetricsHub(
        lambda: {"ioc_v4_src": (3, 300), "queued_http": (40, 4000)},
        lambda: [QueueStats(0, 1, 0, 2, 65535, 7, 0, 10)],
    )
    hub.started = 1000.0
    hub.set_info(AgentInfo("abc123", "dry-run", "nft", 1, 1, 2, (0, 1)))
    hub.add(MetricsDelta(queue=0, decisions={"flag": 5}, log_outcomes={"logged": 4,
                         "rate_limit": 1}, packets={"accept": 9, "flag": 5}, flows=3,
                         latency_buckets=(0, 14) + (0,) * 11, latency_sum=0.00042))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(hub)
    return generate_latest(registry).decode()


def test_summary_of_a_running_agent() -> None:
    report = summarize(scraped_text(), {"ioc_v4_src": (3, 300)}, now=1060.0,
                       endpoint="http://127.0.0.1:9816/metrics", problems=[])
    assert report["running"] and report["mode"] == "dry-run"
    assert report["intel_version"] == "abc123" and report["indicators"] == {"ioc": 1, "ioa": 2}
    assert report["uptime_s"] == 60.0 and report["last_reload_age_s"] is None
    assert report["decisions"] == {"nfqueue/flag": 5}
    assert report["decision_log"] == {"logged": 4, "rate_limit": 1}
    assert report["queue_packets"] == {"0/accept": 9, "0/flag": 5}
    assert report["queue_kernel_dropped"]["0/queue_full"] == 7
    assert report["inspection_mean_us"] == 30.0
    assert report["kernel_counters"]["ioc_v4_src"] == {"packets": 3, "bytes": 300}
    json.dumps(report)  # the --json output
    text = render(report)
    assert "mode:         dry-run; queue backend nft; 2 workers" in text
    assert "last success never" in text and "decision log: logged=4, rate_limit=1" in text


def test_summary_when_not_running() -> None:
    report = summarize(None, None, now=0.0, endpoint="x", problems=["refused"])
    assert not report["running"] and "kernel_counters" not in report
    assert "NOT RUNNING" in render(report) and "problem:      refused" in render(report)


def test_metrics_url_brackets_ipv6() -> None:
    settings = Settings.model_validate({"metrics": {"listen": "[::1]:9900"}})
    assert metrics_url(settings) == "http://[::1]:9900/metrics"
    assert metrics_url(Settings()) == "http://127.0.0.1:9816/metrics"
