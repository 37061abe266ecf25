"""Metrics, status and the decision log of a running agent, in the namespace lab (root only).

SQL injection through `num` (CVE-2015-10023) is sent from the client namespace
to the lab's vulnerable app; the agent runs in the gateway namespace and its
metrics endpoint (127.0.0.1:9816 there) is scraped with curl inside that
namespace. Every request carries a different value, so each one is a distinct
decision.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.service.worker import LATENCY_SAMPLE
from tests.lab.demo import CAMPAIGN_DIR, RunningAgent, start_agent
from tests.lab.netns import ADDR, Lab, python_env

METRICS_URL = "http://127.0.0.1:9816/metrics"
SETTLE_TIMEOUT = 15.0
# Distinct SQLi requests, one TCP connection each, alternating the app's two ports
# (20,000 connections from one address would otherwise reuse TIME_WAIT tuples).
ATTACKER = """
import json, socket, sys, threading, time
host, total, threads, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + limit
sent, failed = [0] * threads, [0] * threads
def attack(t):
    for i in range(t, total, threads):
        if time.monotonic() > deadline:
            return
        try:
            with socket.create_connection((host, (80, 8080)[i % 2]), timeout=5) as s:
                s.sendall(("GET /api/totals/last/1%%20union%%20select%%20%d HTTP/1.1\\r\\n"
                           "Host: metrics\\r\\nConnection: close\\r\\n\\r\\n" % i).encode())
                while s.recv(65536):
                    pass
            sent[t] += 1
        except OSError:
            failed[t] += 1
workers = [threading.Thread(target=attack, args=(t,)) for t in range(threads)]
started = time.monotonic()
for w in workers: w.start()
for w in workers: w.join()
print(json.dumps({"sent": sum(sent), "failed": sum(failed),
                  "seconds": round(time.monotonic() - started, 2)}))
"""


def write_config(workdir: Path, log_extra: str = "") -> Path:
    intel = workdir / "intel"
    intel.mkdir()
    shutil.copy(CAMPAIGN_DIR / "rusty-flag.md", intel)
    shutil.copy(CAMPAIGN_DIR / "rusty-flag.enrich.toml", intel)
    config = workdir / "agent.toml"
    config.write_text(
        'mode = "enforce"\n'
        f"[intel]\nsources = [{json.dumps(str(intel))}]\n"
        "[http]\nports = [80, 8080]\n"
        '[nft]\nhooks = ["forward"]\n'
        f'[log]\noutput = "stdout"\nformat = "json"\n{log_extra}'
        '[metrics]\nlisten = "127.0.0.1:9816"\n'
    )
    return config


Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(lab: Lab) -> Scrape:
    text = lab.gateway.run(["curl", "-sf", "--max-time", "5", METRICS_URL]).stdout
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(scraped: Scrape, name: str, **labels: str) -> float:
    return sum(
        value for (n, got), value in scraped.items()
        if n == name and all(dict(got).get(k) == v for k, v in labels.items())
    )


def settled(lab: Lab) -> Scrape:
    """A scrape once the workers' deltas stopped changing (they ship every second)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last = scrape(lab)
    while time.monotonic() < deadline:
        time.sleep(1.5)
        now = scrape(lab)
        if total(now, "rustyflag_decisions_total") == total(last, "rustyflag_decisions_total"):
            return now
        last = now
    raise AssertionError("decision counters still moving")


def attack(lab: Lab, requests: int, threads: int, limit: float) -> subprocess.Popen[str]:
    return lab.client.popen(
        [sys.executable, "-c", ATTACKER, ADDR.server_v4, str(requests), str(threads), str(limit)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env(),
    )


def finished(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def decisions(events: list[dict[str, Any]], source: str = "nfqueue") -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == "decision" and e.get("source") == source]


def suppressed_sum(events: list[dict[str, Any]]) -> int:
    return sum(int(e["count"]) for e in events if e.get("event") == "suppressed")


@pytest.fixture
def running(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningAgent]:
    lab.start_server_app()
    config = write_config(tmp_path, getattr(request, "param", ""))
    agent = start_agent(lab, config, tmp_path / "agent.jsonl")
    yield agent
    agent.stop()


def test_counters_equal_the_decisions_logged(lab: Lab, running: RunningAgent) -> None:
    proc = attack(lab, 400, 4, 60.0)
    during = []
    while proc.poll() is None:
        during.append(total(scrape(lab), "rustyflag_decisions_total"))
        time.sleep(0.3)
    result = finished(proc, 10)
    assert result["sent"] == 400, result
    assert during, "no scrape while the attack ran"
    after = settled(lab)
    events = running.events()
    logged = decisions(events)
    # Defaults: every distinct decision is logged, nothing is folded.
    assert suppressed_sum(events) == 0
    assert total(after, "rustyflag_decisions_total", source="nfqueue") == len(logged)
    assert total(after, "rustyflag_decision_events_total", outcome="logged") == len(logged)
    assert len(logged) >= 400
    by_technique = total(after, "rustyflag_decision_reasons_total", technique="T1505")
    assert by_technique == sum(
        1 for e in logged for r in e["reasons"] if (r["technique"] or {}).get("id") == "T1505"
    )
    assert by_technique >= 400
    assert total(after, "rustyflag_queue_packets_total") >= len(logged)
    # One packet in LATENCY_SAMPLE is timed, counted per worker from its first packet.
    timed = total(after, "rustyflag_inspection_latency_seconds_count")
    queued = total(after, "rustyflag_queue_packets_total")
    assert queued / LATENCY_SAMPLE <= timed <= queued / LATENCY_SAMPLE + 8, (timed, queued)
    assert total(after, "rustyflag_nft_counter_packets_total", counter="queued_http") > 0
    assert max(during) <= total(after, "rustyflag_decisions_total")
    info = [dict(k[1]) for k in after if k[0] == "rustyflag_intel_info"]
    assert info and info[0]["mode"] == "enforce" and info[0]["intel_version"]


def test_kernel_drops_nflog_decisions_and_reloads(lab: Lab, running: RunningAgent) -> None:
    assert lab.client.ping(ADDR.ioc_v4, count=3, timeout=3.0).received == 0
    proc = attack(lab, 50, 2, 30.0)  # metrics deltas flow while the reload waits for acks
    running.proc.send_signal(signal.SIGHUP)
    assert finished(proc, 40)["sent"] == 50
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not any(e.get("event") == "reload" for e in running.events()):
        assert time.monotonic() < deadline, running.events()[-5:]
        time.sleep(0.2)
    after = settled(lab)
    events = running.events()
    # The kernel dropped the pings (IOC set, destination side); NFLOG made them decisions.
    assert total(after, "rustyflag_kernel_set_packets_total", set="ioc_v4", direction="dst") >= 3
    nflog = decisions(events, "nflog")
    made_nflog = total(after, "rustyflag_decisions_total", source="nflog")
    assert nflog and made_nflog >= 3
    assert total(after, "rustyflag_decision_events_total", source="nflog",
                 outcome="logged") == len(nflog)
    assert total(after, "rustyflag_decisions_total", source="nfqueue") == len(decisions(events))
    assert total(after, "rustyflag_reloads_total") == 1
    assert total(after, "rustyflag_reload_failures_total") == 0
    assert total(after, "rustyflag_worker_restarts_total") == 0  # acks were not lost
    assert not [e for e in events if e.get("event") == "worker_reload_failed"]
    # Echo requests of one ping share an ICMP flow: identical repeats are folded, and
    # the count comes out at stop at the latest.
    assert running.stop() == 0
    events = running.events()
    folded = sum(int(e["count"]) for e in events
                 if e.get("event") == "suppressed" and e["source"] == "nflog")
    assert len(decisions(events, "nflog")) + folded == made_nflog


@pytest.mark.parametrize(
    "running",
    ["rate_per_indicator = 20.0\nburst_per_indicator = 50\nsuppressed_interval = 1.0\n"],
    indirect=True,
)
def test_20000_attacks_bounded_log_exact_suppressed(
    lab: Lab, running: RunningAgent, tmp_path: Path
) -> None:
    started = time.monotonic()
    result = finished(attack(lab, 20000, 16, 240.0), 300)
    assert result["sent"] == 20000, result
    after = settled(lab)
    made = total(after, "rustyflag_decisions_total", source="nfqueue")
    config = str(tmp_path / "agent.toml")
    status = lab.gateway.run(
        [sys.executable, "-m", "agent", "status", "--config", config], env=python_env()
    ).stdout
    status_json = json.loads(
        lab.gateway.run(
            [sys.executable, "-m", "agent", "status", "--json", "--config", config],
            env=python_env(),
        ).stdout
    )
    (tmp_path / "status.txt").write_text(status)
    print(f"\nattack: {result}\nstatus:\n{status}")
    assert running.stop() == 0
    stopped = lab.gateway.run(
        [sys.executable, "-m", "agent", "status", "--config", config],
        env=python_env(), check=False,
    )
    assert stopped.returncode == 3 and "NOT RUNNING" in stopped.stdout, stopped
    elapsed = time.monotonic() - started
    events = running.events()
    logged = decisions(events)
    folded = suppressed_sum(events)
    suppressed_events = [e for e in events if e.get("event") == "suppressed"]
    print(f"decisions made {made:.0f}, logged {len(logged)}, suppressed {folded} "
          f"in {len(suppressed_events)} events, {elapsed:.1f}s")
    assert made >= 20000
    assert len(logged) + folded == made  # nothing silently lost
    assert {e["reason"] for e in suppressed_events} == {"rate_limit"}
    # Bounded: per worker and indicator, the burst plus the rate over the run.
    indicators = {(e["worker"], e["indicator"]["value"], e["action"]) for e in suppressed_events}
    assert len(logged) <= len(indicators) * (50 + 20 * elapsed)
    assert len(suppressed_events) <= len(indicators) * (elapsed + 2)
    assert len(logged) < made / 4
    assert status_json["running"] and status_json["mode"] == "enforce"
    assert sum(status_json["decisions"].values()) == made
    assert "decision log:" in status and "rate_limit=" in status
