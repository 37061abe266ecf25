"""Floods against the decision core (issue 8): what hostile traffic costs and what stays bounded.

Run from the repo root (each flood in a fresh process gives a clean RSS figure):

    .venv/bin/python -m bench.bench_floods syn --flows 100000
    .venv/bin/python -m bench.bench_floods slowloris --flows 70000 --head 16000 --segments 8
    .venv/bin/python -m bench.bench_floods garbage --packets 1000000
    .venv/bin/python -m bench.bench_floods linear --sizes 1000 16000
    .venv/bin/python -m bench.bench_floods all

`--json` prints one JSON object per flood (the CI tests in
tests/test_hostile_floods.py run the small versions that way). The live
flood through the lab gateway is tests/test_hostile_lab.py (`RF_FLOOD_SCALE`
multiplies its packet counts); figures for both are in docs/reliability.md.

- syn: half-open flows (one SYN each, distinct sources), then a fresh
  handshake + SQLi request on `num` that must still be flagged.
- slowloris: established flows that each send an unfinished request head in
  several segments, round-robin (every flow stays open and incomplete), then
  the fresh SQLi request.
- garbage: random and malformed packets (random bytes, mutated IPv4/IPv6/TCP/
  UDP headers, truncations, HTTP garbage on port 80); every packet must come
  back as a Decision, counted by its decode failure or as decoded.
- linear: worst time per byte over the request places x regex units of
  tests/test_fuzz_linear.py, at the given sizes.
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import os
import random
import resource
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.core.decision import Decision, PacketMeta
from agent.core.engine import DecisionCore

CLIENT = socket.inet_aton("10.211.1.2")
SERVER = socket.inet_aton("10.211.2.2")
SERVER6 = socket.inet_pton(socket.AF_INET6, "fd00:211:2::2")
CLIENT6 = socket.inet_pton(socket.AF_INET6, "fd00:211:1::2")
SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04
SQLI_REQUEST = b"GET /api/totals/last/1%20OR%201=1 HTTP/1.1\r\nHost: metrics\r\n\r\n"
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_IPV6 = struct.Struct("!IHBB16s16s")


def tcp4(
    src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int, ack: int = 0,
    payload: bytes = b"",
) -> bytes:  # fmt: skip
    """An IPv4/TCP packet (checksums zero: the core does not check them)."""
    ip = _IPV4.pack(0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    return ip + _TCP.pack(sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload


def source(i: int) -> bytes:
    """A distinct client address per flow number (10.100.0.0/14, 262144 addresses)."""
    return bytes((10, 100 + (i >> 16 & 3), i >> 8 & 255, i & 255))


def rss_mb() -> float:
    """Current resident set size (Linux /proc), MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_core() -> DecisionCore:
    from tests.helpers import default_core  # the shipped campaign and config

    return default_core()


@dataclass(frozen=True, slots=True)
class FreshRequest:
    verdict: str
    sqli_reasons: int


def fresh_sqli(core: DecisionCore, now: float, port: int = 40000) -> FreshRequest:
    """A legitimate-looking new flow carrying the SQLi on `num`: is it still inspected?"""
    src = socket.inet_aton("10.211.1.2")
    meta = PacketMeta(timestamp=now)
    core.decide(tcp4(src, SERVER, port, 80, SYN, 1000), meta)
    core.decide(tcp4(SERVER, src, 80, port, SYN | ACK, 5000, 1001), meta)
    decision = core.decide(tcp4(src, SERVER, port, 80, PSH | ACK, 1001, 5001, SQLI_REQUEST), meta)
    sqli = [r for r in decision.reasons if r.evidence.kind.value == "sqli"]
    return FreshRequest(decision.verdict.value, len(sqli))


@dataclass(frozen=True, slots=True)
class FloodFigures:
    flood: str
    packets: int
    seconds: float
    packets_per_second: float
    flows_now: int
    flows_max_seen: int
    max_flows: int
    evictions: int
    buffered_bytes_max_seen: int
    max_buffered_bytes: int
    rss_before_mb: float
    rss_after_mb: float
    rss_peak_mb: float
    fresh_verdict: str
    fresh_sqli_reasons: int


def _figures(
    flood: str, core: DecisionCore, packets: int, seconds: float, rss_before: float,
    flows_max: int, buffered_max: int, fresh: FreshRequest,
) -> FloodFigures:  # fmt: skip
    table = core.flows
    return FloodFigures(
        flood, packets, round(seconds, 3), round(packets / seconds), len(table), flows_max,
        table.max_flows, table.evictions, buffered_max, table.max_buffered_bytes,
        round(rss_before, 1), round(rss_mb(), 1), round(peak_rss_mb(), 1),
        fresh.verdict, fresh.sqli_reasons,
    )  # fmt: skip


def syn_flood(core: DecisionCore, flows: int, sample_every: int = 1000) -> FloodFigures:
    """`flows` half-open flows (SYN only), then the fresh SQLi request."""
    gc.collect()
    before = rss_mb()
    flows_max = 0
    start = time.perf_counter()
    for i in range(flows):
        packet = tcp4(source(i), SERVER, 1024 + i % 60000, 80, SYN, i * 7919 & 0xFFFFFFFF)
        core.decide(packet, PacketMeta(timestamp=1000.0 + i * 1e-5))
        if i % sample_every == 0:
            flows_max = max(flows_max, len(core.flows))
    seconds = time.perf_counter() - start
    flows_max = max(flows_max, len(core.flows))
    fresh = fresh_sqli(core, 1000.0 + flows * 1e-5)
    return _figures("syn", core, flows, seconds, before, flows_max, core.flows.buffered_bytes, fresh)


def slowloris(
    core: DecisionCore, flows: int, head: int, segments: int, sample_every: int = 1000
) -> FloodFigures:
    """`flows` established flows each trickling `head` bytes of a never-finished request head."""
    gc.collect()
    before = rss_mb()
    piece = max(1, head // segments)
    line = b"X-Slow: " + b"a" * 60 + b"\r\n"
    body = (b"GET /api/totals/last/1 HTTP/1.1\r\nHost: metrics\r\n" + line * (head // len(line) + 1))
    body = body[: piece * segments]
    packets = 0
    flows_max = buffered_max = 0
    now = 1000.0
    start = time.perf_counter()
    for i in range(flows):
        meta = PacketMeta(timestamp=now)
        core.decide(tcp4(source(i), SERVER, 1024 + i % 60000, 80, SYN, 0), meta)
        core.decide(tcp4(SERVER, source(i), 80, 1024 + i % 60000, SYN | ACK, 0, 1), meta)
        packets += 2
        now += 1e-5
    for round_no in range(segments):
        chunk = body[round_no * piece : (round_no + 1) * piece]
        for i in range(flows):
            packet = tcp4(source(i), SERVER, 1024 + i % 60000, 80, PSH | ACK, 1 + round_no * piece, 1, chunk)
            core.decide(packet, PacketMeta(timestamp=now))
            packets += 1
            now += 1e-5
            if packets % sample_every == 0:
                flows_max = max(flows_max, len(core.flows))
                buffered_max = max(buffered_max, core.flows.buffered_bytes)
    seconds = time.perf_counter() - start
    flows_max = max(flows_max, len(core.flows))
    buffered_max = max(buffered_max, core.flows.buffered_bytes)
    fresh = fresh_sqli(core, now)
    return _figures("slowloris", core, packets, seconds, before, flows_max, buffered_max, fresh)


# -- random and malformed packets -------------------------------------------------------------


def _random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randrange(0, 80))


def _mutated_ipv4(rng: random.Random) -> bytes:
    proto = rng.choice((6, 17, 1, 47, rng.randrange(256)))
    payload = rng.randbytes(rng.randrange(0, 60))
    ihl = rng.choice((5, 5, 5, rng.randrange(16)))
    options = rng.randbytes(max(0, ihl - 5) * 4)
    total = 20 + len(options) + len(payload)
    total = rng.choice((total, total, rng.randrange(0x10000), total + rng.randrange(1, 50)))
    frag = rng.choice((0x4000, 0, 0x2000, rng.randrange(0x10000)))
    version = rng.choice((4, 4, 4, rng.randrange(16)))
    header = _IPV4.pack(version << 4 | ihl, 0, total & 0xFFFF, 1, frag, 64, proto, 0, CLIENT, SERVER)
    return header + options + payload


def _mutated_tcp(rng: random.Random) -> bytes:
    payload = rng.choice((b"", rng.randbytes(rng.randrange(1, 200)), _http_garbage(rng)))
    doff = rng.choice((5, 5, rng.randrange(16)))
    options = rng.randbytes(max(0, doff - 5) * 4)
    tcp = _TCP.pack(rng.randrange(1024, 65536), rng.choice((80, 8080, 443, rng.randrange(65536))),
                    rng.randrange(1 << 32), rng.randrange(1 << 32), doff << 4,
                    rng.randrange(256), 65535, 0, 0) + options + payload  # fmt: skip
    cut = rng.choice((len(tcp), len(tcp), rng.randrange(len(tcp) + 1)))
    tcp = tcp[:cut]
    return _IPV4.pack(0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, CLIENT, SERVER) + tcp


def _mutated_udp(rng: random.Random) -> bytes:
    payload = rng.randbytes(rng.randrange(0, 60))
    length = rng.choice((8 + len(payload), rng.randrange(0x10000)))
    udp = _UDP.pack(rng.randrange(65536), rng.choice((53, rng.randrange(65536))), length, 0) + payload
    udp = udp[: rng.choice((len(udp), rng.randrange(len(udp) + 1)))]
    return _IPV4.pack(0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, CLIENT, SERVER) + udp


def _mutated_ipv6(rng: random.Random) -> bytes:
    chain = b""
    next_header = rng.choice((6, 17, 58, 0, 43, 44, 60, 51, rng.randrange(256)))
    first = next_header
    for _ in range(rng.randrange(0, 20)):
        following = rng.choice((0, 43, 44, 60, 51, 6, 17))
        chain += bytes((following, rng.randrange(4))) + rng.randbytes(6 + 8 * rng.randrange(2))
    body = chain + rng.randbytes(rng.randrange(0, 60))
    plen = rng.choice((len(body), rng.randrange(0x10000)))
    packet = _IPV6.pack(6 << 28, plen, first, 64, CLIENT6, SERVER6) + body
    return packet[: rng.choice((len(packet), rng.randrange(len(packet) + 1)))]


_HTTP_PIECES = (
    b"GET ", b"POST ", b"/api/totals/last/", b"1' OR 1=1--", b"<script>", b" HTTP/1.1\r\n",
    b"Host: x\r\n", b"Content-Length: 99999999999999999999\r\n", b"Transfer-Encoding: chunked\r\n",
    b"\r\n", b"\n", b"\x00", b"\xff\xfe", b"%", b"%u", b"?num=", b"&num[]=", b"\x1b[31m",
)  # fmt: skip


def _http_garbage(rng: random.Random) -> bytes:
    return b"".join(rng.choice(_HTTP_PIECES) for _ in range(rng.randrange(1, 24)))


_GENERATORS: tuple[Callable[[random.Random], bytes], ...] = (
    _random_bytes, _mutated_ipv4, _mutated_tcp, _mutated_udp, _mutated_ipv6,
)  # fmt: skip


def garbage_packets(count: int, seed: int = 8) -> Iterator[bytes]:
    """`count` random and malformed packets, reproducible from `seed`."""
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.choice(_GENERATORS)(rng)


@dataclass(frozen=True, slots=True)
class GarbageFigures:
    flood: str
    packets: int
    decisions: int
    seconds: float
    packets_per_second: float
    decoded: int
    decode_failures: dict[str, int]
    anomalies: dict[str, int]
    verdicts: dict[str, int]
    flows_now: int
    rss_before_mb: float
    rss_after_mb: float
    rss_peak_mb: float


def garbage_flood(
    core: DecisionCore, packets: int, seed: int = 8,
    on_decision: Callable[[Decision], None] | None = None,
) -> GarbageFigures:  # fmt: skip
    """Every packet through `decide`; tallies by decode failure (or decoded) and verdict."""
    gc.collect()
    before = rss_mb()
    failures: Counter[str] = Counter()
    anomalies: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    decided = decoded = 0
    start = time.perf_counter()
    for n, data in enumerate(garbage_packets(packets, seed)):
        decision = core.decide(data, PacketMeta(timestamp=1000.0 + n * 1e-5))
        decided += 1
        verdicts[decision.verdict.value] += 1
        if decision.decode_failure is not None:
            failures[decision.decode_failure.value] += 1
        else:
            decoded += 1
        for kind, _ in decision.anomalies:
            anomalies[kind.value] += 1
        if on_decision is not None:
            on_decision(decision)
    seconds = time.perf_counter() - start
    return GarbageFigures(
        "garbage", packets, decided, round(seconds, 3), round(packets / seconds), decoded,
        dict(failures), dict(anomalies), dict(verdicts), len(core.flows),
        round(before, 1), round(rss_mb(), 1), round(peak_rss_mb(), 1),
    )  # fmt: skip


def linear_scan(sizes: tuple[int, int]) -> list[dict[str, Any]]:
    """Per-byte time at both sizes for every family of tests/test_fuzz_linear.py, worst first."""
    from tests.test_fuzz_linear import Timer, families, growth

    timer = Timer(make_core())
    measured = []
    for place, label, unit in families():
        ratio, per_byte = growth(timer, place, unit, sizes[0], sizes[1])
        measured.append((per_byte, ratio, place, label))
    measured.sort(reverse=True)
    return [
        {"place": place, "unit": label, "growth": round(ratio, 2), "us_per_byte": round(per_byte, 3)}
        for per_byte, ratio, place, label in measured
    ]


# -- the live flood through the lab gateway ------------------------------------------------------

HALF_OPEN_HEAD = b"GET /api/totals/last/1 HTTP/1.1\r\nHost: metrics\r\nX-Slow: " + b"a" * 200
# Spoofed flows use source ports below the client's ephemeral range (curl stays apart).
FLOOD_SPORTS = range(1024, 32768)
FLOOD_DPORTS = (80, 8000, 8080, 6862, 6870)


def _checksum(data: bytes) -> int:
    """Internet checksum, in native byte order (pack it with "=H")."""
    if len(data) % 2:
        data += b"\0"
    total = sum(array.array("H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def raw_tcp4(
    src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int, ack: int, payload: bytes
) -> bytes:
    """IPv4/TCP with a valid TCP checksum (conntrack checks it; the kernel fills the IP one)."""
    header = _TCP.pack(sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(header) + len(payload))
    csum = _checksum(pseudo + header + payload)
    tcp = header[:16] + struct.pack("=H", csum) + header[18:]
    return _IPV4.pack(0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst) + tcp + payload


def flood_packets(kind: str, count: int, src: bytes, dst: bytes, seed: int) -> Iterator[bytes]:
    """`halfopen`: one unfinished request head per new 5-tuple (no handshake: conntrack picks
    the flow up mid-stream); `garbage`: random flags, sequence numbers and payloads."""
    rng = random.Random(seed)
    tuples = len(FLOOD_SPORTS) * len(FLOOD_DPORTS)
    for i in range(count):
        sport = FLOOD_SPORTS[i % tuples % len(FLOOD_SPORTS)]
        dport = FLOOD_DPORTS[i % tuples // len(FLOOD_SPORTS)]
        if kind == "halfopen":
            yield raw_tcp4(src, dst, sport, dport, PSH | ACK, rng.randrange(1 << 32), 1, HALF_OPEN_HEAD)
        else:
            flags = rng.choice((PSH | ACK, ACK, PSH | ACK | FIN, rng.randrange(256)))
            payload = rng.choice((rng.randbytes(rng.randrange(1, 400)), _http_garbage(rng)))
            yield raw_tcp4(src, dst, sport, dport, flags, rng.randrange(1 << 32), rng.randrange(1 << 32), payload)


@dataclass(frozen=True, slots=True)
class SendFigures:
    sent: int
    errors: int
    seconds: float


def send_raw(kind: str, count: int, src: str, dst: str, rate: float, seed: int, limit: float) -> SendFigures:
    """Send the flood from this namespace at about `rate` packets/s; stops at `limit` seconds."""
    from tests.lab.netns import DEFAULT_PREFIX

    here = subprocess.run(["ip", "netns", "identify", str(os.getpid())],
                          capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    if not here.startswith(DEFAULT_PREFIX):
        raise SystemExit(f"send runs only inside a lab namespace, not in {here or 'the host'!r}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = errors = 0
    start = time.monotonic()
    try:
        for n, packet in enumerate(flood_packets(kind, count, socket.inet_aton(src), socket.inet_aton(dst), seed)):
            elapsed = time.monotonic() - start
            if elapsed > limit:
                break
            ahead = n / rate - elapsed
            if ahead > 0.001:
                time.sleep(ahead)
            try:
                sock.sendto(packet, (dst, 0))
                sent += 1
            except OSError:
                errors += 1
    finally:
        sock.close()
    return SendFigures(sent, errors, round(time.monotonic() - start, 3))


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Kernel view of NFQUEUE (per namespace): packets handed to the agent and lost ones."""

    waiting: int
    queue_dropped: int
    user_dropped: int
    id_sequence: int

    @staticmethod
    def parse(text: str) -> QueueStats:
        totals = [0, 0, 0, 0]
        for line in text.splitlines():
            fields = [int(f) for f in line.split()]
            # queue, portid, waiting, copy mode, copy range, queue dropped, user dropped, id seq, 1
            for slot, index in enumerate((2, 5, 6, 7)):
                totals[slot] += fields[index]
        return QueueStats(*totals)


def queue_stats(lab: Any) -> QueueStats:
    out = lab.gateway.run(["cat", "/proc/net/netfilter/nfnetlink_queue"], check=False).stdout
    return QueueStats.parse(out)


def queued_http_packets(lab: Any) -> int:
    """The agent ruleset's `queued_http` counter: packets its queue rule matched."""
    out = lab.gateway.run(["nft", "-j", "list", "counters"], check=False).stdout
    for item in json.loads(out or '{"nftables": []}')["nftables"]:
        counter = item.get("counter")
        if counter and counter.get("name") == "queued_http":
            return int(counter["packets"])
    return 0


def gateway_rss_mb(lab: Any) -> float:
    """RSS of every process in the gateway namespace (the agent and its workers), MB."""
    total = 0
    for pid in lab.gateway.pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


@dataclass(frozen=True, slots=True)
class LabFloodFigures:
    kind: str
    sent: int
    send_errors: int
    send_seconds: float
    queued_by_rule: int  # nft counter delta
    handed_to_agent: int  # NFQUEUE id sequence delta (each got a verdict unless still waiting)
    still_waiting: int
    queue_dropped: int
    user_dropped: int
    bypassed_fail_open: int  # matched the rule, never entered the full queue (fail-open accept)
    agent_rss_before_mb: float
    agent_rss_peak_mb: float
    agent_rss_after_mb: float
    during_benign_status: int | None
    during_sqli_status: int | None  # None: the request was stopped
    decision_events: int
    anomaly_events: int


def lab_flood(lab: Any, events: Callable[[], list[dict[str, Any]]], kind: str, count: int,
              rate: float, seed: int = 8) -> LabFloodFigures:  # fmt: skip
    """Flood from the client namespace through the gateway (agent running) to the server.

    Halfway through, a benign request and a SQLi on `num` go out on fresh connections from
    the client's own address; afterwards the kernel's queue figures are compared with
    what was sent. Bounded: `count` packets and count/rate + 30 s at most.
    """
    from tests.lab.netns import ADDR, python_env
    from tests.lab.traffic import http_url

    before_events = len(events())
    rule_before, queue_before = queued_http_packets(lab), queue_stats(lab)
    rss_before = gateway_rss_mb(lab)
    limit = count / rate + 30.0
    sender = lab.client.popen(
        [sys.executable, "-m", "bench.bench_floods", "send", "--kind", kind,
         "--packets", str(count), "--rate", str(rate), "--seed", str(seed),
         "--src", ADDR.client_v4, "--dst", ADDR.server_v4, "--limit", str(limit), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env(),
    )  # fmt: skip
    time.sleep(min(count / rate / 2, 10.0))
    rss_peak = gateway_rss_mb(lab)
    benign = lab.client.curl(http_url(ADDR.server_v4, 80, "/api/totals/last/2"), max_time=5.0)
    sqli = lab.client.curl(http_url(ADDR.server_v4, 80, "/api/totals/last/" + SQLI_PATH), max_time=5.0)
    out, err = sender.communicate(timeout=limit + 10.0)
    if sender.returncode != 0:
        raise RuntimeError(f"flood sender failed: {err[-2000:]}")
    sent = json.loads(out.splitlines()[-1])
    deadline = time.monotonic() + 10.0
    while queue_stats(lab).waiting and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    rss_peak = max(rss_peak, gateway_rss_mb(lab))
    rule_after, queue_after = queued_http_packets(lab), queue_stats(lab)
    handed = queue_after.id_sequence - queue_before.id_sequence
    new_events = events()[before_events:]
    decisions = [e for e in new_events if e.get("event") == "decision"]
    return LabFloodFigures(
        kind, sent["sent"], sent["errors"], sent["seconds"],
        rule_after - rule_before, handed, queue_after.waiting,
        queue_after.queue_dropped - queue_before.queue_dropped,
        queue_after.user_dropped - queue_before.user_dropped,
        rule_after - rule_before - handed,
        rss_before, rss_peak, gateway_rss_mb(lab),
        benign.status, sqli.status,
        len(decisions), sum(1 for e in decisions if e.get("anomalies")),
    )  # fmt: skip


SQLI_PATH = "1)%20UNION%20SELECT%20name,secret%20FROM%20users--"


def run_lab_flood(kind: str, count: int, rate: float, caps: bool) -> LabFloodFigures:
    """Build the lab, start the agent (SQLi dropped; reduced capabilities if `caps`), flood."""
    import tempfile

    from tests.lab.demo import wait_for_ready
    from tests.lab.netns import Lab, cleanup_stale, lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason is not None:
        raise SystemExit(f"lab flood needs the namespace lab: {reason}")
    cleanup_stale()
    workdir = Path(tempfile.mkdtemp(prefix="rf-flood-"))
    with Lab() as lab:
        lab.start_server_app()
        agent = start_reduced_agent(lab, workdir, caps=caps)
        try:
            problem = wait_for_ready(agent, workdir / "agent.log", 30.0)
            if problem is not None:
                raise RuntimeError(problem)
            from tests.lab.demo import read_events

            return lab_flood(lab, lambda: read_events(workdir / "agent.log"), kind, count, rate)
        finally:
            agent.terminate()
            agent.wait(timeout=15)
            shutil.rmtree(workdir, ignore_errors=True)


# What the unit keeps (CapabilityBoundingSet=CAP_NET_ADMIN, NoNewPrivileges=yes), nothing inheritable.
REDUCED_CAPS = ("setpriv", "--inh-caps=-all", "--bounding-set=-all,+net_admin", "--no-new-privs", "--")


def start_reduced_agent(lab: Any, workdir: Path, *, caps: bool = True,
                        prefix: tuple[str, ...] = REDUCED_CAPS) -> subprocess.Popen[Any]:  # fmt: skip
    """`rustyflag-agent run` in the gateway (enforcing, SQLi dropped) under `prefix`."""
    from tests.lab.netns import python_env
    from tests.test_live_enforcement import write_live_config

    config = write_live_config(workdir, actions={"sqli": "drop"})
    command = [*(prefix if caps else ()), sys.executable, "-m", "agent", "run", "--config", str(config)]
    with (workdir / "agent.log").open("w") as sink:
        proc: subprocess.Popen[Any] = lab.gateway.popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=python_env()
        )
    return proc


def _print(figures: object, as_json: bool) -> None:
    data = asdict(figures) if not isinstance(figures, dict | list) else figures  # type: ignore[call-overload]
    if as_json:
        print(json.dumps(data), flush=True)
    else:
        print(json.dumps(data, indent=1), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "flood", choices=("syn", "slowloris", "garbage", "linear", "all", "lab", "send")
    )
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--head", type=int, default=16000, help="slowloris bytes per flow")
    parser.add_argument("--segments", type=int, default=8, help="slowloris segments per flow")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--sizes", type=int, nargs=2, default=(1000, 16000))
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--kind", choices=("halfopen", "garbage"), default="halfopen")
    parser.add_argument("--rate", type=float, default=5000.0, help="lab/send packets per second")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--src", default="10.211.1.2")
    parser.add_argument("--dst", default="10.211.2.2")
    parser.add_argument("--limit", type=float, default=60.0, help="send: seconds at most")
    parser.add_argument("--full-caps", action="store_true", help="lab: agent with root's caps")
    args = parser.parse_args(argv)
    if args.flood == "send":  # runs inside the lab's client namespace
        sent = send_raw(args.kind, args.packets, args.src, args.dst, args.rate, args.seed, args.limit)
        _print(sent, args.json)
        return 0
    if args.flood == "lab":
        _print(run_lab_flood(args.kind, args.packets, args.rate, not args.full_caps), args.json)
        return 0
    floods = ("syn", "slowloris", "garbage", "linear") if args.flood == "all" else (args.flood,)
    for flood in floods:
        if flood == "syn":
            _print(syn_flood(make_core(), args.flows), args.json)
        elif flood == "slowloris":
            _print(slowloris(make_core(), args.flows, args.head, args.segments), args.json)
        elif flood == "garbage":
            figures = garbage_flood(make_core(), args.packets)
            assert figures.decisions == figures.packets
            assert figures.decoded + sum(figures.decode_failures.values()) == figures.packets
            _print(figures, args.json)
        else:
            rows = linear_scan((args.sizes[0], args.sizes[1]))
            _print({"flood": "linear", "sizes": args.sizes, "worst": rows[:10]}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

