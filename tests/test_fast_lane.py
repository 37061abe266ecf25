"""The C fast lane (agent/core/_lane.c) decides exactly as the Python path.

Differential: the same packets go through a core with the lane and one without;
every Decision must agree (verdict, reasons, anomalies, flow, block). The lane
returns only plain accepts, so any request it let through that the Python
path would flag shows up here as a difference.
"""

from __future__ import annotations

import itertools
import socket
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.decision import Decision, PacketMeta, Verdict
from agent.core.engine import DecisionCore
from agent.pcap import iter_frames
from tests.helpers import REPO, default_core


def test_the_extension_is_built() -> None:
    """`make venv` compiles it; without it the core silently takes the Python path only."""
    from agent.core import _lane

    assert _lane.Lane(16384).stats()["flows"] == 0


CLIENT4, SERVER4 = "10.211.1.2", "10.211.2.2"
CLIENT6, SERVER6 = "fd00:211:1::2", "fd00:211:2::2"
SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def tcp_packet(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    flags: int,
    payload: bytes = b"",
    ack: int = 1,
) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, 5 << 4, flags, 65535, 0, 0)
    if ":" in src:
        header = struct.pack("!IHBB", 6 << 28, 20 + len(payload), 6, 64)
        return (
            header
            + socket.inet_pton(socket.AF_INET6, src)
            + socket.inet_pton(socket.AF_INET6, dst)
            + tcp
            + payload
        )
    total = 20 + 20 + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0,
        0x4000,
        64,
        6,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return ip + tcp + payload


def both_cores() -> tuple[DecisionCore, DecisionCore]:
    fast = default_core()
    assert fast.lane is not None
    slow = DecisionCore(fast.detector, replace(fast.limits, fast_lane=False))
    assert slow.lane is None
    return fast, slow


def summary(decision: Decision) -> tuple[object, ...]:
    return (
        decision.verdict,
        decision.reasons,
        decision.anomalies,
        decision.decode_failure,
        decision.block_flow,
        decision.flow,
        decision.flow_id,
    )


def run_both(packets: list[tuple[bytes, bool]]) -> tuple[DecisionCore, list[Decision]]:
    fast, slow = both_cores()
    decided = []
    for number, (packet, past_depth) in enumerate(packets):
        meta = PacketMeta(timestamp=1_700_000_000.0 + number * 0.001, past_depth=past_depth)
        got, want = fast.decide(packet, meta), slow.decide(packet, meta)
        assert summary(got) == summary(want), (number, packet)
        decided.append(want)
    return fast, decided


def keep_alive(requests: list[bytes], *, v6: bool = False, sport: int = 40000) -> list[bytes]:
    src, dst = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    packets = [
        tcp_packet(src, dst, sport, 80, 999, SYN),
        tcp_packet(dst, src, 80, sport, 5000, SYN | ACK, ack=1000),
    ]
    seq = 1000
    for request in requests:
        packets.append(tcp_packet(src, dst, sport, 80, seq, ACK | PSH, request))
        seq += len(request)
    return packets


GET = b"GET /api/totals/last/%s HTTP/1.1\r\nHost: lab\r\nUser-Agent: curl/8\r\n\r\n"


def test_lane_takes_benign_keep_alive_requests_and_hands_back_an_attack() -> None:
    requests = [GET % b"1", GET % b"2", GET % b"33", GET % b"1%20or%201=1", GET % b"4"]
    fast, decided = run_both([(p, False) for p in keep_alive(requests)])
    verdicts = [d.verdict for d in decided[2:]]
    assert verdicts[:3] == [Verdict.ACCEPT] * 3
    assert verdicts[3] == Verdict.FLAG
    assert fast.lane is not None
    stats = fast.lane.stats()
    # Request 1 by Python (admits the flow), 2 and 3 in C, the attack handed back and
    # flagged by Python, request 5 by Python again, which re-admits the flow.
    assert (stats["hits"], stats["handoffs"], stats["admitted"], stats["flows"]) == (2, 1, 2, 1)
    assert stats["back_request"] == 1, stats  # handed back for what the request holds


@pytest.mark.parametrize("v6", [False, True])
def test_lane_engages_on_both_families(v6: bool) -> None:
    fast, _ = run_both([(p, False) for p in keep_alive([GET % b"1"] * 5, v6=v6)])
    assert fast.lane is not None and fast.lane.stats()["hits"] == 4


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /metrics-ui/server/srv.go HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET /x/SRV.GO HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET /api/totals/last/3/x HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET /api/totals/last/x HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET /API/Diffs/Last/-1 HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET /q?num=1' HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET /q?NUM=abc HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET /q?num= HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET /q?a.num=1 HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET /q HTTP/1.1\r\nHost: lab\r\nCookie: a=b, num=x'\r\n\r\n",
        b"GET /q HTTP/1.1\r\nHost: lab\r\nHost: lab\r\n\r\n",
        b"GET /q HTTP/1.1\r\n\r\n",
        b"GET /q HTTP/1.1\r\nHost: lab\r\nTransfer_Encoding: chunked\r\n\r\n",
        b"GET /q HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n",
        b"GET /%2e%2e/srv.go HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET /a/./b HTTP/1.1\r\nHost: lab\r\n\r\n",
        b"GET //srv.go HTTP/1.1\r\nHost: lab\r\n\r\n",
    ],
)
def test_screen_refuses_what_it_cannot_prove_clean(request_bytes: bytes) -> None:
    fast, _ = both_cores()
    assert fast.lane is not None
    assert not fast.lane.request_clean(request_bytes)
    run_both([(p, False) for p in keep_alive([GET % b"1", request_bytes, GET % b"2"])])


@pytest.mark.parametrize(
    "request_bytes",
    [
        GET % b"12345",
        b"GET /index.html?q=rusty&page=2 HTTP/1.1\r\nHost: lab\r\nCookie: sid=abc; theme=dark\r\n\r\n",
        b"HEAD /api/diffs/last/7/ HTTP/1.1\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n",
        b"GET /q?num=42 HTTP/1.1\r\nhost: lab\r\nAccept: */*;q=0.8\r\n\r\n",
    ],
)
def test_screen_passes_plain_benign_requests(request_bytes: bytes) -> None:
    fast, _ = both_cores()
    assert fast.lane is not None
    assert fast.lane.request_clean(request_bytes)


def test_past_depth_segments_and_retransmissions_go_to_python() -> None:
    packets = [(p, False) for p in keep_alive([GET % b"1", GET % b"2"])]
    first = packets[2][0]
    packets.append((first, False))  # a retransmission of an already accepted request
    packets.append((packets[3][0], True))  # the kernel's past-depth mark
    fast, _ = run_both(packets)
    assert fast.lane is not None and fast.lane.stats()["handoffs"] >= 1


def test_swapped_intel_empties_the_lane() -> None:
    fast, _ = both_cores()
    for number, packet in enumerate(keep_alive([GET % b"1"] * 3)):
        fast.decide(packet, PacketMeta(timestamp=1.0 + number))
    assert fast.lane is not None and fast.lane.stats()["flows"] == 1
    fast.swap_detector(fast.detector)
    assert fast.lane.stats()["flows"] == 0


def test_forgotten_flows_leave_the_lane() -> None:
    fast = default_core()
    fast.flows.max_flows = 4
    for flow in range(10):
        for number, packet in enumerate(keep_alive([GET % b"1"] * 2, sport=41000 + flow)):
            fast.decide(packet, PacketMeta(timestamp=1.0 + number))
    assert fast.lane is not None and fast.lane.stats()["flows"] <= 4


# -- differential, generated ------------------------------------------------------------

_SEGMENT = st.sampled_from(
    [
        "api",
        "totals",
        "diffs",
        "last",
        "API",
        "Last",
        "metrics-ui",
        "server",
        "srv.go",
        "SRV.GO",
        "srv.go.",
        "index.html",
        "1",
        "42",
        "-1",
        "x",
        "1'",
        "..",
        ".",
        "",
        "%2e",
        "a;b",
        "a%2fb",
        "num",
        "srv.go::$DATA",
        "~",
        "a+b",
        "(1)",
        "1 or 1=1",
        "<script>",
        "srv~1.go",
    ]
)
_PATH = st.lists(_SEGMENT, min_size=0, max_size=6).map(lambda parts: "/" + "/".join(parts))
_PAIR = st.tuples(
    st.sampled_from(["num", "NUM", "number", "q", "n%75m", "num[]", "a.num", "x", "", "Num"]),
    st.sampled_from(["1", "42", "", "1'", "abc", "1+or+1=1", "%31", "<b>", "1.5"]),
    st.booleans(),
)
_QUERY = st.lists(_PAIR, max_size=3).map(
    lambda pairs: "&".join(f"{n}={v}" if eq else n for n, v, eq in pairs)
)
_HEADER = st.sampled_from(
    [
        "Host: lab",
        "Host: lab",
        "Host: lab",
        "Cookie: sid=1",
        "Cookie: num=1",
        "Cookie: a=b, num=x'",
        "Cookie: NUM=2; x=%27",
        "Connection: keep-alive",
        "Connection: close",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Content-Length: 0",
        "Transfer-Encoding: chunked",
        "X_Forwarded: 1",
        "User-Agent: Mozilla/5.0 (X11)",
        "Accept: */*",
        "Content-Type: text/plain",
        "X-A:\tb",
        "Expect: 100-continue",
        "Content-Type: application/octet-stream",
        "Content-Type: image/gif",
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "get", "OPTIONS"]))
    target = draw(_PATH)
    if draw(st.booleans()):
        target += "?" + draw(_QUERY)
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    headers = draw(st.lists(_HEADER, max_size=4))
    body = b""
    if method == "POST":
        body = draw(st.sampled_from([b"num=1", b"num=1'", b"a=b", b"x" * 700, b"num=1'&" * 90]))
        headers = [*headers, f"Content-Length: {len(body)}"]
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return head.encode() + body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(requests(), min_size=1, max_size=6),
    st.lists(
        st.sampled_from(
            ["whole", "pair", "split", "retransmit", "ack", "past_depth", "lost", "late"]
        ),
        min_size=6,
        max_size=6,
    ),
    st.booleans(),
)
def test_lane_decides_as_python(batch: list[bytes], shapes: list[str], v6: bool) -> None:
    src, dst = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    packets: list[tuple[bytes, bool]] = [
        (tcp_packet(src, dst, 40000, 80, 999, SYN), False),
        (tcp_packet(dst, src, 80, 40000, 5000, SYN | ACK, ack=1000), False),
    ]
    seq = 1000
    last = b""
    index = 0
    held_back: list[tuple[bytes, bool]] = []  # "late": sent after the next request
    while index < len(batch):
        shape = shapes[index % len(shapes)]
        data = batch[index]
        if shape in ("lost", "late"):
            # A hole: the queue let the segment past (lost), or it is overtaken (late).
            if shape == "late":
                held_back.append((tcp_packet(src, dst, 40000, 80, seq, ACK | PSH, data), False))
            seq += len(data)
            index += 1
            continue
        if shape == "pair" and index + 1 < len(batch):
            data += batch[index + 1]
            index += 1
        if shape == "split" and len(data) > 4:
            # Halves, or thirds for a long request (a body in several segments).
            parts = 3 if len(data) > 300 else 2
            cuts = [len(data) * k // parts for k in range(parts + 1)]
            for begin, end in itertools.pairwise(cuts):
                flags = ACK | PSH if end == len(data) else ACK
                packets.append(
                    (tcp_packet(src, dst, 40000, 80, seq + begin, flags, data[begin:end]), False)
                )
        else:
            packets.append(
                (tcp_packet(src, dst, 40000, 80, seq, ACK | PSH, data), shape == "past_depth")
            )
        if shape == "retransmit" and last:
            packets.append((last, False))
        if shape == "ack":
            packets.append((tcp_packet(src, dst, 40000, 80, seq + len(data), ACK), False))
            packets.append(
                (tcp_packet(dst, src, 80, 40000, 5001, ACK, b"HTTP/1.1 200 OK\r\n\r\n"), False)
            )
        packets.extend(held_back)
        held_back.clear()
        last = packets[-1][0]
        seq += len(data)
        index += 1
    packets.extend(held_back)
    packets.append((tcp_packet(src, dst, 40000, 80, seq, ACK | FIN), False))
    run_both(packets)


def pcap_differential(path: Path) -> tuple[int, dict[str, int]]:
    """Every frame of a capture through both cores; (packets, the lane's counters)."""
    fast, slow = both_cores()
    count = 0
    for frame in iter_frames(path):
        if frame.l3 is None:
            continue
        meta = PacketMeta(timestamp=frame.timestamp)
        got, want = fast.decide(frame.l3, meta), slow.decide(frame.l3, meta)
        assert summary(got) == summary(want), (path.name, frame.number)
        count += 1
    assert fast.lane is not None
    return count, fast.lane.stats()


def test_scenario_capture_decides_the_same() -> None:
    count, stats = pcap_differential(REPO / "tests" / "data" / "rusty-flag-scenario.pcap")
    assert count > 0 and stats["admitted"] > 0


def test_many_holes_decide_as_python() -> None:
    """More holes than a flow keeps: C and Python give up the same (oldest) ones."""
    requests = [GET % str(i).encode() for i in range(40)]
    requests[2] = GET % b"1%20or%201=1"  # in a hole given up by the time it comes
    requests[36] = GET % b"2%20or%202=2"  # in a hole still awaited
    packets = keep_alive([])
    offsets = [1000]
    for request in requests:
        offsets.append(offsets[-1] + len(request))
    for index in range(1, 40, 2):  # the odd ones first: every even one is a hole
        packets.append(
            tcp_packet(CLIENT4, SERVER4, 40000, 80, offsets[index], ACK | PSH, requests[index])
        )
    for index in range(0, 40, 2):  # then the holes' bytes, late
        packets.append(
            tcp_packet(CLIENT4, SERVER4, 40000, 80, offsets[index], ACK | PSH, requests[index])
        )
    fast, decided = run_both([(p, False) for p in packets])
    late = decided[2 + 20 :]
    assert late[18].verdict == Verdict.FLAG  # request 36: its hole was still open
    assert late[1].verdict == Verdict.ACCEPT  # request 2: its hole had been given up
    assert fast.lane is not None and fast.lane.stats()["holes"] > 0


UPLOAD_HEAD = (
    b"POST /upload HTTP/1.1\r\nHost: lab\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
)


def upload(size: int, media: bytes = b"application/octet-stream") -> tuple[bytes, bytes]:
    return UPLOAD_HEAD % (media, size), bytes(range(256)) * (size // 256) + b"x" * (size % 256)


def segments(data: bytes, start: int, size: int) -> list[tuple[int, bytes]]:
    return [(start + at, data[at : at + size]) for at in range(0, len(data), size)]


@pytest.mark.parametrize(
    ("body_size", "segment", "media"),
    [
        (5000, 500, b"application/octet-stream"),
        (15000, 1000, b"image/png"),
        (40000, 1400, b"application/octet-stream"),  # past the depth
        (3000, 300, b"application/x-www-form-urlencoded"),  # read: stays in Python
        (3000, 300, b"application/octet-stream; charset=utf-16"),
    ],
)
def test_upload_bodies_decide_as_python(body_size: int, segment: int, media: bytes) -> None:
    head, body = upload(body_size, media)
    then = GET % b"1%20or%201=1"  # the attack after the upload is still flagged
    seq = 1000
    packets = keep_alive([])
    for at, data in [(seq, head), *segments(body, seq + len(head), segment)]:
        packets.append(tcp_packet(CLIENT4, SERVER4, 40000, 80, at, ACK | PSH, data))
    packets.append(
        tcp_packet(CLIENT4, SERVER4, 40000, 80, seq + len(head) + len(body), ACK | PSH, then)
    )
    fast, decided = run_both([(p, False) for p in packets])
    assert decided[-1].verdict == Verdict.FLAG
    assert fast.lane is not None
    if media == b"application/octet-stream" and body_size < 16384:
        assert fast.lane.stats()["body_hits"] == len(segments(body, 0, segment))


def test_upload_interrupted_by_a_retransmission_a_hole_and_a_reload() -> None:
    head, body = upload(8000)
    parts = segments(body, 1000 + len(head), 500)
    packets: list[tuple[bytes, bool]] = [(p, False) for p in keep_alive([])]
    packets.append((tcp_packet(CLIENT4, SERVER4, 40000, 80, 1000, ACK | PSH, head), False))
    for index, (at, data) in enumerate(parts):
        if index == 5:
            continue  # a hole in the body
        packets.append((tcp_packet(CLIENT4, SERVER4, 40000, 80, at, ACK | PSH, data), False))
        if index == 3:
            packets.append(packets[-2])  # a retransmission
    fast, slow = both_cores()
    for number, (packet, past_depth) in enumerate(packets):
        if number == 8:
            fast.swap_detector(fast.detector)  # a reload mid-body: kept bytes go back first
            slow.swap_detector(slow.detector)
        meta = PacketMeta(timestamp=1.0 + number, past_depth=past_depth)
        assert summary(fast.decide(packet, meta)) == summary(slow.decide(packet, meta)), number
    # The hole's bytes come last: both streams complete the upload the same way.
    at, data = parts[5]
    late = tcp_packet(CLIENT4, SERVER4, 40000, 80, at, ACK | PSH, data)
    meta = PacketMeta(timestamp=99.0)
    assert summary(fast.decide(late, meta)) == summary(slow.decide(late, meta))


@pytest.mark.parametrize("lose_every", [2, 3, 7])
@pytest.mark.parametrize("body_size", [6000, 30000])
def test_upload_with_lost_segments_decides_as_python(lose_every: int, body_size: int) -> None:
    """Segments of an opaque body fail-open let past: only where the body ends matters."""
    head, body = upload(body_size)
    parts = segments(body, 1000 + len(head), 700)
    packets: list[tuple[bytes, bool]] = [(p, False) for p in keep_alive([])]
    packets.append((tcp_packet(CLIENT4, SERVER4, 40000, 80, 1000, ACK | PSH, head), False))
    for index, (at, data) in enumerate(parts):
        if index % lose_every == 1 and index != len(parts) - 1:
            continue
        packets.append((tcp_packet(CLIENT4, SERVER4, 40000, 80, at, ACK | PSH, data), False))
    after = 1000 + len(head) + len(body)
    for request in (GET % b"5", GET % b"1%20or%201=1"):
        packets.append((tcp_packet(CLIENT4, SERVER4, 40000, 80, after, ACK | PSH, request), False))
        after += len(request)
    fast, decided = run_both(packets)
    assert decided[-2].verdict == Verdict.ACCEPT and decided[-1].verdict == Verdict.FLAG
    assert fast.lane is not None and fast.lane.stats()["holes"] > 0


def with_ip_options(packet: bytes) -> bytes:
    """The same IPv4 packet with 4 bytes of NOP options (the lane does not parse those)."""
    total = int.from_bytes(packet[2:4], "big") + 4
    header = bytes([0x46]) + packet[1:2] + total.to_bytes(2, "big") + packet[4:20] + b"\x01" * 4
    return header + packet[20:]


def with_hop_by_hop(packet: bytes) -> bytes:
    """The same IPv6 packet behind a hop-by-hop header (the lane does not walk those)."""
    length = int.from_bytes(packet[4:6], "big") + 8
    header = packet[:4] + length.to_bytes(2, "big") + b"\x00" + packet[7:40]
    return header + b"\x06\x00\x01\x04\x00\x00\x00\x00" + packet[40:]


@pytest.mark.parametrize("v6", [False, True])
def test_segments_the_lane_cannot_parse_take_the_flow_back(v6: bool) -> None:
    requests = [GET % b"1", GET % b"2", GET % b"3", GET % b"1%20or%201=1", GET % b"5"]
    packets = keep_alive(requests, v6=v6)
    wrap = with_hop_by_hop if v6 else with_ip_options
    packets[4] = wrap(packets[4])  # request 3 in a packet the lane cannot parse
    packets[6] = wrap(packets[6])
    # Then request 2's bytes again, altered: already delivered, they are not inspected
    # again, on either path (a flow taken back late would see them as a hole's bytes).
    src, dst = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    altered = tcp_packet(src, dst, 40000, 80, 1000 + len(requests[0]), ACK | PSH, GET % b"'")
    packets.insert(5, altered)
    fast, decided = run_both([(p, False) for p in packets])
    verdicts = [d.verdict for d in decided[2:]]
    assert verdicts == [Verdict.ACCEPT] * 4 + [Verdict.FLAG, Verdict.ACCEPT], verdicts
    assert fast.lane is not None and fast.lane.stats()["hits"] >= 1
