"""The Rusty Flag demo: `python -m tests.lab.demo` (root; everything stays in the lab).

Builds the namespace lab, starts the vulnerable metrics-ui app on the server,
runs `rustyflag-agent run` in the gateway namespace, sends benign and
malicious traffic from the client (curl, sockets, keep-alive, scapy),
then prints what the client saw and the agent's decision events, and tears
the lab down. Exit status: 0 when every scenario went as expected, 3 when
some did not (the table marks them MISS), 1 when the agent did not start.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lab.netns import (
    ADDR,
    REPO_ROOT,
    Lab,
    cleanup_stale,
    lab_unavailable_reason,
    python_env,
)
from tests.lab.server_app import SECRET
from tests.lab.traffic import CraftedResult, Request, http_url

CAMPAIGN_DIR = REPO_ROOT / "configs" / "campaigns"
AGENT_READY_TIMEOUT = 20.0
AGENT_STOP_TIMEOUT = 10.0
SQLI_UNION = "1)%20UNION%20SELECT%20name,secret%20FROM%20users--"
XSS = "%3Cscript%3Ealert(1)%3C/script%3E"


@dataclass(frozen=True, slots=True)
class Seen:
    """What the client saw, and whether the traffic was stopped (no answer, reset, no leak)."""

    text: str
    stopped: bool


@dataclass(frozen=True, slots=True)
class Scenario:
    label: str
    should_stop: bool  # with the agent enforcing; in dry-run mode nothing should stop
    send: Callable[[Lab], Seen]


def write_demo_config(workdir: Path, dry_run: bool) -> Path:
    """The demo's agent.toml and intel: the shipped campaign, SQLi and type violations dropped."""
    intel = workdir / "intel"
    intel.mkdir()
    shutil.copy(CAMPAIGN_DIR / "rusty-flag.md", intel)
    enrichment = (CAMPAIGN_DIR / "rusty-flag.enrich.toml").read_text()
    # The shipped enrichment only flags SQLi; the demo blocks it to show resets.
    for kind in ("sqli", "type_violation"):
        enrichment = enrichment.replace(f'{kind} = "flag"', f'{kind} = "drop"')
    (intel / "rusty-flag.enrich.toml").write_text(enrichment)
    config = workdir / "agent.toml"
    config.write_text(
        f'mode = "{"dry-run" if dry_run else "enforce"}"\n'
        f"[intel]\nsources = [{json.dumps(str(intel))}]\n"
        '[nft]\nhooks = ["forward"]\n'
        '[log]\noutput = "stdout"\nformat = "json"\n'
    )
    return config


def read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            events.append(obj)
    return events


def wait_for_ready(proc: subprocess.Popen[Any], out: Path, timeout: float) -> str | None:
    """None once the agent logged `ready`; else why it did not (exited, timed out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == "ready" for e in read_events(out)):
            return None
        if proc.poll() is not None:
            return f"agent exited with {proc.returncode}"
        time.sleep(0.1)
    return f"agent not ready after {timeout:g}s"


_CURL_FAILURES = {7: "refused", 28: "timeout", 52: "empty reply", 56: "reset"}


def _http(lab: Lab, addr: str, port: int, path: str, **kwargs: Any) -> Seen:
    res = lab.client.curl(http_url(addr, port, path), **kwargs)
    if res.status is not None:
        return Seen(f"HTTP {res.status} {res.body[:40]!r}", stopped=False)
    why = _CURL_FAILURES.get(res.exit_code, res.error or "")
    return Seen(f"no response: {why} (curl {res.exit_code})", stopped=True)


def scenarios() -> list[Scenario]:
    srv4, srv6, ioc4 = ADDR.server_v4, ADDR.server_v6, ADDR.ioc_v4

    def keepalive(lab: Lab) -> Seen:
        result = lab.client.keepalive(srv4, 80, [
            Request(path="/health"),
            Request(path="/api/totals/last/2"),
            Request(path=f"/api/totals/last/{SQLI_UNION}"),
            Request(path="/health"),
        ])
        seen = ", ".join(
            str(e.status) if e.status is not None else (e.error or "none")
            for e in result.exchanges
        )
        benign_passed = result.statuses[:2] == (200, 200)
        return Seen(f"[{seen}] one connection: {result.single_connection}",
                    stopped=benign_passed and result.statuses[2] is None)

    def crafted_result(res: CraftedResult) -> Seen:
        if res.error:
            return Seen(f"error: {res.error}"[:80], stopped=False)
        leaked = SECRET.encode() in res.response
        return Seen(f"status={res.status} rst={res.rst_received} secret leaked={leaked}",
                    stopped=not leaked and res.status is None)

    def crafted(
        cuts: list[int], order: list[int] | None = None, cpus: tuple[int, ...] = (0,)
    ) -> Callable[[Lab], Seen]:
        def send(lab: Lab) -> Seen:
            request = (
                f"GET /api/diffs/last/{SQLI_UNION} HTTP/1.1\r\nHost: {srv4}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            return crafted_result(
                lab.client.send_segments(srv4, 80, request, cuts=cuts, order=order, cpus=cpus)
            )

        return send

    def conflicting_retransmission(lab: Lab) -> Seen:
        # The server keeps the FIRST copy (the SQLi); the "retransmission" looks benign.
        benign = f"GET /api/totals/last/{'1' * len(SQLI_UNION)} HTTP/1.1\r\n".encode()
        attack = f"GET /api/totals/last/{SQLI_UNION} HTTP/1.1\r\n".encode()
        rest = f"Host: {srv4}\r\nConnection: close\r\n\r\n".encode()
        return crafted_result(lab.client.send_segments(
            srv4, 80, benign + rest, cuts=[len(benign)], extra=[(0, attack)], cpus=[0]
        ))

    def ioc_probes(lab: Lab) -> Seen:
        ping = lab.client.ping(ioc4, count=2, timeout=2.0)
        tcp = lab.client.tcp_connect(ioc4, 7777, timeout=1.5, payload=b"x")
        udp = lab.client.udp_probe(ioc4, 9999, timeout=1.5)
        return Seen(f"ping {ping.received}/{ping.sent}, tcp ok={tcp.ok}, udp ok={udp.ok}",
                    stopped=not (ping.ok or tcp.ok or udp.ok))

    def control_ping(lab: Lab) -> Seen:
        ping = lab.client.ping(srv4, count=2)
        return Seen(f"ping {ping.received}/{ping.sent}", stopped=not ping.ok)

    return [
        Scenario("benign totals (v4)", False,
                 lambda lab: _http(lab, srv4, 80, "/api/totals/last/3")),
        Scenario("benign totals (v6, 8080)", False,
                 lambda lab: _http(lab, srv6, 8080, "/api/totals/last/3")),
        Scenario("keep-alive: benign, benign, SQLi, benign", True, keepalive),
        Scenario("SQLi UNION in path {num}", True,
                 lambda lab: _http(lab, srv4, 80, f"/api/totals/last/{SQLI_UNION}")),
        Scenario("SQLi in query ?num= (v6)", True,
                 lambda lab: _http(lab, srv6, 8080, f"/api/totals?num={SQLI_UNION}")),
        Scenario("SQLi in form POST num=", True,
                 lambda lab: _http(lab, srv4, 80, "/api/totals", method="POST",
                                   data="num=1)+UNION+SELECT+name,secret+FROM+users--")),
        Scenario("type violation num=abc", True,
                 lambda lab: _http(lab, srv4, 80, "/api/diffs/last/abc")),
        Scenario("SQLi in 4 segments, out of order", True, crafted([4, 21, 30], [0, 2, 1, 3])),
        Scenario("SQLi in 2 segments, first one last", True, crafted([21], [1, 0])),
        Scenario("SQLi in 4 segments from CPUs 0,1,0,1", True,
                 crafted([4, 21, 30], cpus=(0, 1))),
        Scenario("SQLi first copy, benign retransmission", True, conflicting_retransmission),
        Scenario("IOA file srv.go (flag only)", False,
                 lambda lab: _http(lab, srv4, 80, "/metrics-ui/server/srv.go")),
        Scenario("XSS through num", True, lambda lab: _http(lab, srv4, 80, f"/api/diffs?num={XSS}")),
        Scenario("XSS in q (not an IOA argument)", False,
                 lambda lab: _http(lab, srv4, 80, f"/api/echo?q={XSS}")),
        Scenario("IOC 78.135.73.140 ping/tcp/udp", True, ioc_probes),
        Scenario("IOC 78.135.73.140 HTTP", True, lambda lab: _http(lab, ioc4, 80, "/health")),
        Scenario("control: ping server 10.211.2.2", False, control_ping),
    ]


def _clip(text: object, width: int) -> str:
    s = str(text)
    return s if len(s) <= width else s[: width - 1] + "…"


def print_table(headers: list[str], widths: list[int], rows: list[list[str]]) -> None:
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(_clip(c, w).ljust(w) for c, w in zip(row, widths, strict=True)))


def _unique(items: list[str]) -> str:
    return "; ".join(dict.fromkeys(i for i in items if i))


def decision_rows(events: list[dict[str, Any]]) -> list[list[str]]:
    """One table row per decision event; identical consecutive rows collapse into "(xN)"."""
    rows: list[list[str]] = []
    repeats: list[int] = []
    for e in events:
        if e.get("event") != "decision":
            continue
        http = e.get("http") or {}
        proto = str(e.get("proto", ""))
        if http.get("http_method"):
            what = f"{http.get('http_method', '')} {http.get('url', '')}".strip()
        elif proto in ("TCP", "UDP"):
            what = f"{proto} -> {e.get('dest_ip', '')}:{e.get('dest_port', '')}"
        else:
            what = f"{proto} -> {e.get('dest_ip', '')}"
        reasons = e.get("reasons") or []
        indicator = _unique([f"{r['indicator']['kind']}:{r['indicator']['value']}"
                             for r in reasons])
        evidence = _unique([f"{r['evidence']['kind']}@{r['evidence']['where']}"
                            for r in reasons if r.get("evidence")]
                           + [f"anomaly:{a['kind']}" for a in e.get("anomalies") or []])
        technique = _unique([f"{r['technique']['id']} {'/'.join(r['technique']['cwe'])}"
                             for r in reasons if r.get("technique")])
        port = e.get("src_port")
        client = f"{e.get('src_ip', '?')}:{port}" if proto in ("TCP", "UDP") and port else str(
            e.get("src_ip", "?"))
        row = [str(e.get("timestamp", ""))[11:23], client, what,
               f"{e.get('action', '')} ({e.get('source', '')})", indicator, evidence, technique]
        if rows and rows[-1][1:] == row[1:]:
            repeats[-1] += 1
            continue
        rows.append(row)
        repeats.append(1)
    for row, count in zip(rows, repeats, strict=True):
        if count > 1:
            row[3] += f" x{count}"
    return rows


@dataclass(slots=True)
class RunningAgent:
    """`rustyflag-agent run` in the gateway namespace; its JSON log goes to `output`."""

    proc: subprocess.Popen[Any]
    output: Path

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.output)

    def stop(self, timeout: float = AGENT_STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; None if it did not exit (the lab kills it on close)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


def start_agent(lab: Lab, config: Path, output: Path) -> RunningAgent:
    """Start the agent in `lab`'s gateway; raises RuntimeError unless it logs `ready`."""
    with output.open("w") as sink:
        proc = lab.gateway.popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            stdout=sink, stderr=subprocess.STDOUT, env=python_env(),
        )
    agent = RunningAgent(proc, output)
    problem = wait_for_ready(proc, output, AGENT_READY_TIMEOUT)
    if problem is not None:
        agent.stop()
        raise RuntimeError(f"{problem}; its output:\n{output.read_text(errors='replace')[-4000:]}")
    return agent


def run_demo(dry_run: bool) -> int:
    reason = lab_unavailable_reason()
    if reason is not None:
        print(f"demo needs the namespace lab: {reason}", file=sys.stderr)
        return 2
    cleanup_stale()
    workdir = Path(tempfile.mkdtemp(prefix="rf-demo-"))
    config = write_demo_config(workdir, dry_run)
    with Lab() as lab:
        print(f"lab up in {lab.setup_seconds:.2f}s: {', '.join(n.name for n in lab.namespaces)}")
        lab.start_server_app()
        try:
            agent = start_agent(lab, config, workdir / "agent.jsonl")
        except RuntimeError as exc:
            print(exc)
            return 1
        print(f"agent ready in the gateway namespace (config {config})\n")
        outcomes = []
        misses = 0
        for scenario in scenarios():
            started = time.monotonic()
            seen = scenario.send(lab)
            should_stop = scenario.should_stop and not dry_run
            met = seen.stopped == should_stop
            misses += not met
            outcomes.append([scenario.label, "stopped" if should_stop else "passes", seen.text,
                             "ok" if met else "MISS", f"{time.monotonic() - started:.2f}s"])
        time.sleep(1.0)  # NFLOG and worker events reach the log
        if agent.stop() is None:
            print("agent did not stop on SIGTERM; the lab kills it")
    print("What the client saw")
    print_table(["scenario", "expected", "client saw", "", "took"], [40, 8, 62, 4, 6], outcomes)
    events = agent.events()
    print(f"\nAgent decision events ({agent.output})")
    print_table(
        ["time", "client", "request / flow", "action", "indicator", "evidence", "technique / CWE"],
        [12, 20, 44, 20, 28, 30, 24], decision_rows(events),
    )
    for e in events:
        if e.get("level") == "error":
            print(f"agent error: {json.dumps(e)[:300]}")
    print(f"\n{len(outcomes) - misses}/{len(outcomes)} scenarios as expected")
    return 3 if misses else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="agent in audit mode")
    args = parser.parse_args()
    return run_demo(args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
