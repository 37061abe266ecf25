"""The live path in the lab: `rustyflag-agent run` in the gateway namespace, real traffic.

IOC traffic in both directions is dropped by nftables and logged from NFLOG;
HTTP attacks through the IOA argument `num` (path, query, form body) and
requests for the IOA file are flagged (default) or blocked with a reset
(actions set to drop); dry-run drops nothing and logs `would_drop`.
Every decision event is validated against the JSON schema.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import assert_valid_event
from tests.lab.demo import CAMPAIGN_DIR, RunningAgent, start_agent
from tests.lab.netns import ADDR, Lab, Netns
from tests.lab.server_app import SECRET
from tests.lab.traffic import Request, http_url

pytestmark = pytest.mark.lab

IOC = ADDR.ioc_v4
CAMPAIGN = "Rusty Flag"
SQLI_UNION = "1)%20UNION%20SELECT%20name,secret%20FROM%20users--"
SQLI_FORM = "1)+UNION+SELECT+name,secret+FROM+users--"
# No "/" in it: a slash inside {num} is the bug test_sqli_with_a_slash_in_num_... shows.
XSS = "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"
CLIENT_TCP_PORT = 7070  # listeners the test runs in the client namespace
CLIENT_UDP_PORT = 7071
EVENT_WAIT = 5.0  # NFLOG and worker events reach the log within this


def write_live_config(
    workdir: Path,
    *,
    mode: str = "enforce",
    actions: dict[str, str] | None = None,
    fail_closed: bool = False,
) -> Path:
    """agent.toml plus the shipped campaign and enrichment; [actions] beat the enrichment."""
    intel = workdir / "intel"
    intel.mkdir(exist_ok=True)
    shutil.copy(CAMPAIGN_DIR / "rusty-flag.md", intel)
    shutil.copy(CAMPAIGN_DIR / "rusty-flag.enrich.toml", intel)
    lines = [
        f'mode = "{mode}"',
        f"[intel]\nsources = [{json.dumps(str(intel))}]",
        '[nft]\nhooks = ["forward"]',
        f"[queue]\nfail_closed = {'true' if fail_closed else 'false'}",
        '[log]\noutput = "stdout"\nformat = "json"',
    ]
    if actions:
        lines.append("[actions]\n" + "\n".join(f'{k} = "{v}"' for k, v in actions.items()))
    config = workdir / "agent.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def decisions(agent: RunningAgent) -> list[dict[str, Any]]:
    return [e for e in agent.events() if e.get("event") == "decision"]


def wait_for_decisions(
    agent: RunningAgent,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = EVENT_WAIT,
) -> list[dict[str, Any]]:
    """Decision events once `done(events)` holds, or whatever arrived by `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        events = decisions(agent)
        if done(events) or time.monotonic() >= deadline:
            return events
        time.sleep(0.1)


def nonce() -> str:
    return secrets.token_hex(6)


@pytest.fixture(scope="module")
def served(lab: Lab) -> Lab:
    lab.start_server_app()
    return lab


@pytest.fixture
def agent_factory(served: Lab, tmp_path: Path) -> Iterator[Callable[..., RunningAgent]]:
    """Start agents with a given config; each is stopped (SIGTERM) after the test."""
    started: list[RunningAgent] = []

    def start(**config: Any) -> RunningAgent:
        workdir = tmp_path / f"agent{len(started)}"
        workdir.mkdir()
        agent = start_agent(served, write_live_config(workdir, **config), workdir / "out.jsonl")
        started.append(agent)
        return agent

    yield start
    for agent in started:
        assert agent.stop() == 0, agent.output.read_text()[-2000:]


# ---------------------------------------------------------------- IOC: both directions

# Runs in a namespace: a bounded TCP/UDP echo listener on the client.
_LISTENER = f"""
import socket, threading, time
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", {CLIENT_TCP_PORT})); tcp.listen(16); tcp.settimeout(1.0)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", {CLIENT_UDP_PORT})); udp.settimeout(1.0)
def udp_echo():
    while True:
        try:
            data, peer = udp.recvfrom(2048); udp.sendto(data, peer)
        except OSError:
            pass
threading.Thread(target=udp_echo, daemon=True).start()
print("READY", flush=True)
end = time.monotonic() + 120
while time.monotonic() < end:
    try:
        conn, _ = tcp.accept()
    except OSError:
        continue
    conn.settimeout(1.0)
    try:
        conn.sendall(conn.recv(2048))
    except OSError:
        pass
    conn.close()
"""

# Runs in a namespace: one TCP or UDP exchange from a chosen source address; prints JSON.
_SEND_FROM = """
import json, socket, sys
proto, src, dst, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind); s.settimeout(1.5); s.bind((src, 0))
try:
    if proto == "tcp":
        s.connect((dst, port)); s.sendall(b"hello"); reply = s.recv(64)
    else:
        s.sendto(b"hello", (dst, port)); reply = s.recvfrom(64)[0]
    print(json.dumps({"ok": reply == b"hello", "sport": s.getsockname()[1]}))
except OSError as exc:
    print(json.dumps({"ok": False, "sport": s.getsockname()[1], "error": str(exc)}))
"""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One flow attempt and what the sender saw."""

    proto: str  # as in decision events: ICMP, TCP, UDP
    src: str
    dst: str
    dport: int | None
    answered: bool


def send_from(ns: Netns, proto: str, src: str, dst: str, port: int) -> Attempt:
    out = json.loads(ns.python(_SEND_FROM, proto, src, dst, str(port), timeout=15.0).stdout)
    return Attempt(proto.upper(), src, dst, port, bool(out["ok"]))


def ping_from(ns: Netns, src: str, dst: str) -> Attempt:
    res = ns.run(["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", src, dst], check=False)
    return Attempt("ICMP", src, dst, None, res.returncode == 0)


def start_client_listener(lab: Lab) -> None:
    proc = lab.client.popen([sys.executable, "-c", _LISTENER], stdout=-1, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"


def ioc_events_for(events: list[dict[str, Any]], attempt: Attempt) -> list[dict[str, Any]]:
    return [
        e for e in events
        if e.get("source") == "nflog" and e.get("proto") == attempt.proto
        and e.get("src_ip") == attempt.src and e.get("dest_ip") == attempt.dst
        and (attempt.dport is None or e.get("dest_port") == attempt.dport)
    ]


def test_ioc_traffic_both_ways_is_dropped_and_logged_benign_passes(
    served: Lab, agent_factory: Callable[..., RunningAgent]
) -> None:
    start_client_listener(served)
    agent = agent_factory()
    client, server = served.client, served.server
    cli, srv = ADDR.client_v4, ADDR.server_v4
    blocked = [
        # client -> IOC
        ping_from(client, cli, IOC),
        send_from(client, "tcp", cli, IOC, 7777),
        send_from(client, "udp", cli, IOC, 9999),
        # IOC -> client: the server's IOC address as the source
        ping_from(server, IOC, cli),
        send_from(server, "tcp", IOC, cli, CLIENT_TCP_PORT),
        send_from(server, "udp", IOC, cli, CLIENT_UDP_PORT),
    ]
    benign = [
        ping_from(client, cli, srv),
        send_from(client, "tcp", cli, srv, 7777),
        send_from(client, "udp", cli, srv, 9999),
        ping_from(server, srv, cli),
        send_from(server, "tcp", srv, cli, CLIENT_TCP_PORT),
        send_from(server, "udp", srv, cli, CLIENT_UDP_PORT),
    ]
    assert [a for a in blocked if a.answered] == []
    assert [a for a in benign if not a.answered] == []

    events = wait_for_decisions(
        agent, lambda evs: all(ioc_events_for(evs, a) for a in blocked)
    )
    for attempt in blocked:
        found = ioc_events_for(events, attempt)
        assert found, f"no nflog decision for {attempt}"
        ioc_side = "dest_ip" if attempt.dst == IOC else "src_ip"
        for event in found:
            assert event["action"] == "drop" and event["mode"] == "enforce"
            assert any(
                r["campaign"] == CAMPAIGN and r["indicator"]["value"] == IOC
                and r["indicator"]["kind"] == "ioc" and r["evidence"]["where"] == ioc_side
                for r in event["reasons"]
            ), event
    for attempt in benign:
        assert ioc_events_for(events, attempt) == [], f"benign flow logged: {attempt}"
    for event in events:
        assert_valid_event(event)


# ---------------------------------------------------------------- HTTP: IOA evidence


@dataclass(frozen=True, slots=True)
class HttpCase:
    """One malicious request; `{n}` in path marks where the per-run nonce goes."""

    label: str
    method: str
    path: str  # must contain "t={n}" so the server log names this very request
    body: str
    kind: str  # evidence kind expected in a reason
    where: str
    technique: str
    cwe: str


SQLI, TYPE, XSS_T, FILE_T = ("T1505", "CWE-89"), ("T1505", "CWE-89"), (
    "T1059.007", "CWE-79"), ("T1222", "CWE-275")

HTTP_CASES = [
    HttpCase("sqli-path", "GET", f"/api/totals/last/{SQLI_UNION}?t={{n}}", "", "sqli", "path",
             *SQLI),
    HttpCase("sqli-query", "GET", f"/api/totals?num={SQLI_UNION}&t={{n}}", "", "sqli", "query",
             *SQLI),
    HttpCase("sqli-form", "POST", "/api/totals?t={n}", f"num={SQLI_FORM}", "sqli", "body",
             *SQLI),
    HttpCase("xss-path", "GET", f"/api/diffs/last/{XSS}?t={{n}}", "", "xss", "path", *XSS_T),
    HttpCase("xss-query", "GET", f"/api/diffs?num={XSS}&t={{n}}", "", "xss", "query", *XSS_T),
    HttpCase("xss-form", "POST", "/api/diffs?t={n}", f"num={XSS}", "xss", "body", *XSS_T),
    HttpCase("type-path", "GET", "/api/diffs/last/abc?t={n}", "", "type_violation", "path",
             *TYPE),
    HttpCase("type-query", "GET", "/api/diffs?num=abc&t={n}", "", "type_violation", "query",
             *TYPE),
    HttpCase("type-form", "POST", "/api/diffs?t={n}", "num=abc", "type_violation", "body",
             *TYPE),
    HttpCase("ioa-file", "GET", "/metrics-ui/server/srv.go?t={n}", "", "file", "path", *FILE_T),
]
DROP_ACTIONS = {"sqli": "drop", "xss": "drop", "type_violation": "drop", "file": "drop"}


def matching_reason(event: dict[str, Any], case: HttpCase) -> bool:
    return any(
        r["evidence"]["kind"] == case.kind and r["evidence"]["where"] == case.where
        and r["campaign"] == CAMPAIGN and r["technique"] is not None
        and r["technique"]["id"] == case.technique and case.cwe in r["technique"]["cwe"]
        for r in event["reasons"]
    )


def http_events(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return [e for e in events
            if e.get("source") == "nfqueue" and tag in (e.get("http") or {}).get("url", "")]


def server_saw(lab: Lab, tag: str) -> bool:
    return tag in lab.start_server_app().log()


def test_http_attacks_are_flagged_and_reach_the_server_by_default(
    served: Lab, agent_factory: Callable[..., RunningAgent]
) -> None:
    agent = agent_factory()
    tags = {}
    for case in HTTP_CASES:
        tag = nonce()
        tags[case.label] = tag
        res = served.client.curl(
            http_url(ADDR.server_v4, 80, case.path.format(n=tag)),
            method=case.method, data=case.body or None,
        )
        assert res.status is not None, f"{case.label}: {res.error}"  # flag only: it passes
        assert server_saw(served, tag), case.label
    events = wait_for_decisions(
        agent, lambda evs: all(http_events(evs, t) for t in tags.values())
    )
    for case in HTTP_CASES:
        found = http_events(events, tags[case.label])
        assert found, f"{case.label}: no decision event"
        assert all(e["action"] == "flag" for e in found), case.label
        assert any(matching_reason(e, case) for e in found), (case.label, found)
    for event in events:
        assert_valid_event(event)


# ---------------------------------------------------------------- dry-run


def test_dry_run_drops_nothing_and_logs_would_drop(
    served: Lab, agent_factory: Callable[..., RunningAgent]
) -> None:
    agent = agent_factory(mode="dry-run", actions=DROP_ACTIONS)
    tag = nonce()
    assert served.client.ping(IOC, count=1, timeout=1.0).received == 1
    reverse = ping_from(served.server, IOC, ADDR.client_v4)
    assert reverse.answered
    attack = served.client.curl(
        http_url(ADDR.server_v4, 80, f"/api/totals/last/{SQLI_UNION}?t={tag}"))
    assert attack.status == 200 and SECRET in attack.body
    ping_out = Attempt("ICMP", ADDR.client_v4, IOC, None, True)
    events = wait_for_decisions(
        agent,
        lambda evs: bool(http_events(evs, tag))
        and bool(ioc_events_for(evs, ping_out)) and bool(ioc_events_for(evs, reverse)),
    )
    for would in (http_events(events, tag), ioc_events_for(events, ping_out),
                  ioc_events_for(events, reverse)):
        assert would and all(e["action"] == "would_drop" for e in would), would
    assert all(e["mode"] == "dry-run" for e in events)
    assert not [e for e in events if e["action"] == "drop"]
    for event in events:
        assert_valid_event(event)


# ---------------------------------------------------------------- HTTP: drop actions
# (after the tests that start their own agent: two agents cannot share NFLOG group 7)


@pytest.fixture(scope="module")
def dropping_agent(served: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    """One agent for every drop case (start-up once): HTTP evidence actions set to drop."""
    workdir = tmp_path_factory.mktemp("dropping")
    agent = start_agent(
        served, write_live_config(workdir, actions=DROP_ACTIONS), workdir / "out.jsonl"
    )
    yield agent
    assert agent.stop() == 0


@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda c: c.label)
def test_http_attack_with_drop_action_resets_after_benign_keepalive_requests(
    served: Lab, dropping_agent: RunningAgent, case: HttpCase
) -> None:
    first, second, attack = nonce(), nonce(), nonce()
    result = served.client.keepalive(ADDR.server_v4, 80, [
        Request(path=f"/health?t={first}"),
        Request(path=f"/api/totals/last/2?t={second}"),
        Request(case.method, case.path.format(n=attack), body=case.body),
        Request(path="/health"),
    ])
    assert result.statuses[:2] == (200, 200)
    assert result.statuses[2:] == (None, None)
    assert result.exchanges[2].error == "reset", result.exchanges[2]
    assert server_saw(served, first) and server_saw(served, second)
    assert not server_saw(served, attack), f"{case.label} reached the server app"
    events = wait_for_decisions(dropping_agent, lambda evs: bool(http_events(evs, attack)))
    found = http_events(events, attack)
    assert found and any(
        e["action"] == "drop" and e.get("flow_blocked") and matching_reason(e, case)
        for e in found
    ), found
    assert not http_events(events, first) and not http_events(events, second)
    for event in found:
        assert_valid_event(event)


# Was an agent bug (2026-11-28): a {num} holding a slash did not match the route; the
# route's last parameter now takes the rest of the path.
@pytest.mark.parametrize("num", [
    "1)%20UNION%20SELECT%20name,secret%20FROM%20users%2F*",
    "1)%20UNION%20SELECT%20name,secret%20FROM%20users/*",
    # The classic comment-for-space evasion: every comment holds slashes.
    "1)/**/UNION/**/SELECT/**/name,secret/**/FROM/**/users--",
], ids=["encoded-slash", "slash", "comment-spaces"])
def test_sqli_with_a_slash_in_num_is_blocked(
    served: Lab, dropping_agent: RunningAgent, num: str
) -> None:
    tag = nonce()
    res = served.client.curl(http_url(ADDR.server_v4, 80, f"/api/totals/last/{num}?t={tag}"))
    assert res.status is None and SECRET not in res.body
    assert not server_saw(served, tag)
