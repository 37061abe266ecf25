"""The namespace lab: it is isolated, it forwards, and its app is truly vulnerable."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import assert_valid_event
from tests.lab.demo import decision_rows, start_agent, write_demo_config
from tests.lab.netns import (
    ADDR,
    NETNS_DIR,
    Lab,
    LabSafetyError,
    Netns,
    check_links,
    check_no_route_out,
    check_routes,
    lab_unavailable_reason,
)
from tests.lab.server_app import SECRET
from tests.lab.traffic import Request, http_url

pytestmark = pytest.mark.lab

SQLI_UNION = "1)%20UNION%20SELECT%20name,secret%20FROM%20users--"


@pytest.fixture(scope="module")
def served(lab: Lab) -> Lab:
    lab.start_server_app()
    return lab


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


# ---------------------------------------------------------------- bring-up and safety


def test_lab_comes_up_fast_and_isolated(lab: Lab) -> None:
    assert lab.setup_seconds < 2.0
    assert {ns.name for ns in lab.namespaces} <= _namespaces()
    assert lab.isolation_problems() == []


def test_gateway_cannot_route_to_the_internet(lab: Lab) -> None:
    res = lab.gateway.run(["ip", "route", "get", "8.8.8.8"], check=False)
    assert res.returncode != 0
    assert check_no_route_out(lab.gateway) == []


def test_no_veth_end_in_host_namespace(lab: Lab) -> None:
    host_links = subprocess.run(
        ["ip", "-j", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    names = {link["ifname"] for link in json.loads(host_links)}
    assert not names & {"cli0", "gw-cli", "gw-srv", "srv0"}


def test_gateway_forwards_only_inside_its_namespace(lab: Lab) -> None:
    inside = lab.gateway.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
    assert inside == "1"
    client = lab.client.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
    assert client == "0"


@pytest.fixture
def throwaway_pair() -> Iterator[tuple[Netns, Netns]]:
    """Two fresh namespaces joined by a veth: a scratch place for unsafe setups."""
    if (reason := lab_unavailable_reason()) is not None:
        pytest.skip(reason)
    tag = f"rf-neg-{secrets.token_hex(4)}"
    a, b = Netns(f"{tag}-a"), Netns(f"{tag}-b")
    try:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "add", ns.name], check=True)
        subprocess.run(["ip", "-n", a.name, "link", "add", "a0", "type", "veth",
                        "peer", "name", "b0", "netns", b.name], check=True)
        subprocess.run(["ip", "-n", a.name, "addr", "add", "10.99.0.1/30", "dev", "a0"],
                       check=True)
        subprocess.run(["ip", "-n", b.name, "addr", "add", "10.99.0.2/30", "dev", "b0"],
                       check=True)
        for ns, dev in ((a, "a0"), (b, "b0")):
            subprocess.run(["ip", "-n", ns.name, "link", "set", dev, "up"], check=True)
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "delete", ns.name], check=False)


def test_safety_check_catches_a_default_route_out(throwaway_pair: tuple[Netns, Netns]) -> None:
    a, _ = throwaway_pair
    assert check_routes(a, ["10.99.0.0/30"]) == []
    assert check_no_route_out(a, probes=["8.8.8.8"]) == []
    subprocess.run(["ip", "-n", a.name, "route", "add", "default", "via", "10.99.0.2"],
                   check=True)
    problems = check_routes(a, ["10.99.0.0/30"])
    assert any("default route" in p for p in problems)
    assert any("8.8.8.8" in p for p in check_no_route_out(a, probes=["8.8.8.8"]))


def test_safety_check_catches_a_foreign_link(throwaway_pair: tuple[Netns, Netns]) -> None:
    a, b = throwaway_pair
    assert check_links(a, {"a0": b.name}) == []
    subprocess.run(["ip", "-n", a.name, "link", "add", "stray0", "type", "veth",
                    "peer", "name", "stray1"], check=True)
    assert any("stray0" in p for p in check_links(a, {"a0": b.name}))
    # A veth whose peer is not where the plan says is caught too.
    assert any("peer" in p for p in check_links(a, {"a0": "some-other-ns", "stray0": ""}))


def test_lab_refuses_to_start_when_isolation_breaks() -> None:
    if (reason := lab_unavailable_reason()) is not None:
        pytest.skip(reason)
    lab = Lab()
    with lab:
        lab.gateway.run(["ip", "route", "add", "default", "via", ADDR.server_v4])
        with pytest.raises(LabSafetyError, match="default route"):
            lab.assert_isolated()
    assert not {ns.name for ns in lab.namespaces} & _namespaces()


# ---------------------------------------------------------------- reachability (no agent)


@pytest.mark.parametrize("addr", [ADDR.server_v4, ADDR.server_v6, ADDR.ioc_v4, ADDR.ioc_v6])
def test_ping_through_gateway(lab: Lab, addr: str) -> None:
    result = lab.client.ping(addr, count=2, timeout=3.0)
    assert result.received == 2


@pytest.mark.parametrize("port", [80, 8080])
@pytest.mark.parametrize("addr", [ADDR.server_v4, ADDR.server_v6, ADDR.ioc_v4, ADDR.ioc_v6])
def test_http_through_gateway(served: Lab, addr: str, port: int) -> None:
    result = served.client.curl(http_url(addr, port, "/health"))
    assert (result.status, result.body) == (200, "ok")


@pytest.mark.parametrize("addr", [ADDR.server_v4, ADDR.ioc_v4, ADDR.ioc_v6])
def test_udp_and_tcp_echo(served: Lab, addr: str) -> None:
    udp = served.client.udp_probe(addr, 9999, payload=b"udp-hello")
    assert udp.ok and udp.reply == b"udp-hello"
    tcp = served.client.tcp_connect(addr, 7777, payload=b"tcp-hello")
    assert tcp.ok and tcp.reply == b"tcp-hello"


def test_closed_port_is_refused_not_hung(served: Lab) -> None:
    res = served.client.tcp_connect(ADDR.server_v4, 7778, timeout=2.0)
    assert not res.ok and res.error == "refused"


def test_keepalive_shares_one_connection(served: Lab) -> None:
    requests = [
        Request(path="/health"),
        Request(path="/api/totals/last/2"),
        Request("POST", "/api/diffs", body="num=1"),
    ]
    result = served.client.keepalive(ADDR.server_v4, 80, requests)
    assert result.statuses == (200, 200, 200)
    assert result.single_connection


def test_server_sees_the_client_address(served: Lab) -> None:
    served.client.curl(http_url(ADDR.server_v4, 80, "/health?who"))
    app = served.start_server_app()
    assert f"{ADDR.client_v4} " in app.log() or f"::ffff:{ADDR.client_v4} " in app.log()


# ---------------------------------------------------------------- the app is truly vulnerable


def test_benign_totals(served: Lab) -> None:
    res = served.client.curl(http_url(ADDR.ioc_v4, 80, "/api/totals/last/3"))
    assert res.status == 200
    rows = json.loads(res.body)["rows"]
    assert [r[0] for r in rows] == ["2015-01-08", "2015-01-09", "2015-01-10"]


@pytest.mark.parametrize("endpoint", ["totals", "diffs"])
def test_union_injection_in_path_reads_the_secret(served: Lab, endpoint: str) -> None:
    res = served.client.curl(http_url(ADDR.ioc_v4, 80, f"/api/{endpoint}/last/{SQLI_UNION}"))
    assert res.status == 200
    assert ["admin", SECRET] in json.loads(res.body)["rows"]


def test_injection_via_query_and_form(served: Lab) -> None:
    q = served.client.curl(http_url(ADDR.server_v6, 8080, f"/api/totals?num={SQLI_UNION}"))
    assert q.status == 200 and SECRET in q.body
    form = served.client.curl(
        http_url(ADDR.server_v4, 80, "/api/totals"),
        method="POST",
        data="num=1)+UNION+SELECT+name,secret+FROM+users--",
    )
    assert form.status == 200 and SECRET in form.body


def test_boolean_injection_changes_the_results(served: Lab) -> None:
    one = served.client.curl(http_url(ADDR.server_v4, 80, "/api/totals/last/1"))
    # LIMIT takes an expression: a subquery decides how many rows come back.
    probe = (
        "(SELECT%20CASE%20WHEN%20substr(secret,1,4)='flag'%20THEN%205%20ELSE%201%20END"
        "%20FROM%20users)"
    )
    leaked = served.client.curl(http_url(ADDR.server_v4, 80, f"/api/totals/last/{probe}"))
    assert len(json.loads(one.body)["rows"]) == 1
    assert len(json.loads(leaked.body)["rows"]) == 5


def test_sql_error_text_is_returned(served: Lab) -> None:
    res = served.client.curl(http_url(ADDR.server_v4, 80, "/api/totals/last/1'"))
    assert res.status == 500
    assert "sql:" in json.loads(res.body)["error"]


def test_ioa_file_and_xss_sink(served: Lab) -> None:
    src = served.client.curl(http_url(ADDR.server_v4, 80, "/metrics-ui/server/srv.go"))
    assert src.status == 200 and 'LIMIT " + num' in src.body
    xss = served.client.curl(http_url(ADDR.server_v4, 80, "/api/echo?q=<script>alert(1)</script>"))
    assert xss.status == 200 and "<script>alert(1)</script>" in xss.body


# ---------------------------------------------------------------- crafted segments (scapy)


def test_request_split_across_segments_out_of_order(served: Lab) -> None:
    request = (
        f"GET /api/totals/last/2 HTTP/1.1\r\nHost: {ADDR.server_v4}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    result = served.client.send_segments(
        ADDR.server_v4, 80, request, cuts=[5, 18], order=[0, 2, 1])
    assert result.error is None
    assert result.handshake
    assert result.status == 200
    assert b"2015-01-10" in result.response


def test_crafted_segments_over_ipv6(served: Lab) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    result = served.client.send_segments(ADDR.ioc_v6, 8080, request, cuts=[1, 2, 3, 10])
    assert result.error is None and result.handshake
    assert result.status == 200 and result.response.endswith(b"ok")
    assert not result.rst_received


def test_crafted_retransmission_first_copy_wins_at_the_server(served: Lab) -> None:
    """An in-order copy is kept; a later "retransmission" of those bytes with other
    content is discarded: the conflicting-retransmission evasion an inspector must model."""
    request = b"GET /api/totals/last/2 HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    end = request.index(b"/2 ") + 2
    first = (0, request[: end - 1] + b"9")  # same bytes, but num=9
    result = served.client.send_segments(ADDR.server_v4, 80, request, cuts=[end], extra=[first])
    assert result.status == 200
    assert len(json.loads(result.response.split(b"\r\n\r\n", 1)[1])["rows"]) == 9


# ---------------------------------------------------------------- cleanup


def test_cleanup_leaves_no_namespace_and_no_process() -> None:
    if (reason := lab_unavailable_reason()) is not None:
        pytest.skip(reason)
    with Lab() as lab:
        lab.start_server_app()
        proc = lab.client.popen(["sleep", "60"])
        names = {ns.name for ns in lab.namespaces}
        assert names <= _namespaces()
    assert not names & _namespaces()
    assert proc.poll() is not None
    assert not any((NETNS_DIR / n).exists() for n in names)


def test_failed_build_leaves_nothing_behind() -> None:
    if (reason := lab_unavailable_reason()) is not None:
        pytest.skip(reason)

    class BrokenLab(Lab):
        def _build(self) -> None:
            super()._build()
            self.client.run(["ip", "link", "set", "lo", "down"])  # real work, then a failure
            raise RuntimeError("simulated failure after the namespaces exist")

    lab = BrokenLab()
    with pytest.raises(RuntimeError, match="simulated"), lab:
        pytest.fail("the body must not run")
    assert not {ns.name for ns in lab.namespaces} & _namespaces()


def test_cleanup_stale_spares_live_and_foreign_namespaces(lab: Lab) -> None:
    # A dead creator pid (pid_max is at most 4194304); random tags: runs may overlap.
    stale = f"rf-9999999-{secrets.token_hex(3)}-gw"
    foreign = f"rf-someone-elses-{secrets.token_hex(3)}"
    for name in (stale, foreign):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        time.sleep(1.1)  # /proc/stat btime has 1 s resolution: be clearly older
        # A process started after they were made sees them as left by older runs.
        code = (
            "import json; from tests.lab.netns import cleanup_stale; "
            "print(json.dumps(cleanup_stale()))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        deleted = json.loads(out.stdout)
        remaining = _namespaces()
        # A concurrent run's cleanup may have removed it first: gone is what matters.
        assert stale not in remaining
        assert foreign in remaining and foreign not in deleted
        assert all(ns.name not in deleted for ns in lab.namespaces)
        assert {ns.name for ns in lab.namespaces} <= remaining
    finally:
        for name in (stale, foreign):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


# ---------------------------------------------------------------- the demo's pieces


def test_demo_config_is_accepted_by_the_agent(tmp_path: Path) -> None:
    config = write_demo_config(tmp_path, dry_run=False)
    enrichment = (tmp_path / "intel" / "rusty-flag.enrich.toml").read_text()
    assert 'sqli = "drop"' in enrichment
    res = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    assert summary["usable"] and [c["campaign"] for c in summary["campaigns"]] == ["Rusty Flag"]


def test_decision_rows_render_http_and_flow_events() -> None:
    reason: dict[str, Any] = {
        "indicator": {"kind": "ioa", "value": "num"},
        "evidence": {"kind": "sqli", "where": "path"},
        "technique": {"id": "T1505", "cwe": ["CWE-89"]},
    }
    events: list[dict[str, Any]] = [
        {"event": "ready"},
        {"event": "decision", "timestamp": "2026-01-01T10:00:00.123456+00:00",
         "src_ip": "10.211.1.2", "src_port": 40000, "proto": "TCP", "action": "drop",
         "source": "nfqueue", "http": {"http_method": "GET", "url": "/api/totals/last/1"},
         "reasons": [reason, reason]},
    ]
    icmp = {"event": "decision", "src_ip": "10.211.1.2", "proto": "ICMP",
            "dest_ip": "78.135.73.140", "action": "drop", "source": "nflog", "reasons": []}
    events += [icmp, icmp, icmp]
    rows = decision_rows(events)
    assert len(rows) == 2
    assert rows[0] == ["10:00:00.123", "10.211.1.2:40000", "GET /api/totals/last/1",
                       "drop (nfqueue)", "ioa:num", "sqli@path", "T1505 CWE-89"]
    assert rows[1][1:4] == ["10.211.1.2", "ICMP -> 78.135.73.140", "drop (nflog) x3"]


# ---------------------------------------------------------------- the agent in the lab


def test_agent_blocks_in_the_lab(served: Lab, tmp_path: Path) -> None:
    """End to end: benign keep-alive requests pass, the SQLi resets the connection, IOC drops."""
    agent = start_agent(served, write_demo_config(tmp_path, dry_run=False), tmp_path / "out")
    try:
        result = served.client.keepalive(ADDR.server_v4, 80, [
            Request(path="/health"),
            Request(path="/api/totals/last/2"),
            Request(path=f"/api/totals/last/{SQLI_UNION}"),
            Request(path="/health"),
        ])
        assert result.statuses[:2] == (200, 200)
        assert result.statuses[2:] == (None, None)
        assert result.exchanges[2].error in ("reset", "closed")
        assert served.client.ping(ADDR.ioc_v4, count=1, timeout=1.0).received == 0
        assert served.client.ping(ADDR.server_v4, count=1, timeout=1.0).received == 1
        fresh = served.client.curl(http_url(ADDR.server_v4, 80, "/api/totals/last/1"))
        assert fresh.status == 200
    finally:
        assert agent.stop() == 0
    decisions = [e for e in agent.events() if e.get("event") == "decision"]
    assert any(e["action"] == "drop" and "UNION" in e.get("http", {}).get("url", "")
               for e in decisions)
    for event in decisions:
        assert_valid_event(event)
    # Stopped: the agent removed its table and the IOC is reachable again.
    assert "rustyflag" not in served.gateway.run(["nft", "list", "tables"]).stdout
    assert served.client.ping(ADDR.ioc_v4, count=1, timeout=1.0).received == 1


def test_agent_dry_run_only_logs(served: Lab, tmp_path: Path) -> None:
    agent = start_agent(served, write_demo_config(tmp_path, dry_run=True), tmp_path / "out")
    try:
        attack = served.client.curl(http_url(ADDR.server_v4, 80, f"/api/totals/last/{SQLI_UNION}"))
        assert attack.status == 200 and SECRET in attack.body  # audit mode: it gets through
        assert served.client.ping(ADDR.ioc_v4, count=1, timeout=1.0).received == 1
        time.sleep(0.5)  # NFLOG events reach the log
    finally:
        assert agent.stop() == 0
    decisions = [e for e in agent.events() if e.get("event") == "decision"]
    assert decisions and all(e["mode"] == "dry-run" for e in decisions)
    assert not any(e["action"] == "drop" for e in decisions)
    assert any("UNION" in e.get("http", {}).get("url", "") for e in decisions)


def _sqli_request() -> bytes:
    return (
        f"GET /api/diffs/last/{SQLI_UNION} HTTP/1.1\r\nHost: {ADDR.server_v4}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


# Was an agent bug (2026-11-28): the SYN was not queued, so the stream start was a guess.
def test_agent_blocks_sqli_whose_first_segment_arrives_last(served: Lab, tmp_path: Path) -> None:
    agent = start_agent(served, write_demo_config(tmp_path, dry_run=False), tmp_path / "out")
    try:
        result = served.client.send_segments(
            ADDR.server_v4, 80, _sqli_request(), cuts=[21], order=[1, 0], cpus=[0]
        )
        assert result.handshake
        assert SECRET.encode() not in result.response
        assert result.status is None
    finally:
        agent.stop()


# Was an agent bug (2026-11-28): CPU fanout split a flow across workers; the queues now
# balance by flow hash.
def test_agent_blocks_sqli_segments_sent_from_alternating_cpus(
    served: Lab, tmp_path: Path
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    agent = start_agent(served, write_demo_config(tmp_path, dry_run=False), tmp_path / "out")
    try:
        # In order, nothing evasive: only the CPU each segment is sent from changes.
        for cpus in ([0], [0, 1]):
            result = served.client.send_segments(
                ADDR.server_v4, 80, _sqli_request(), cuts=[4, 21, 30], cpus=cpus
            )
            assert result.handshake
            assert SECRET.encode() not in result.response, f"leaked with cpus={cpus}"
    finally:
        agent.stop()
