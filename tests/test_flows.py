"""Flow table: orientation, reassembly (splits, reordering, retransmissions), bounds."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from agent.core.decision import AnomalyKind
from agent.core.decode import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Packet, decode_ip
from agent.core.flows import FlowTable, FlowUpdate

CLIENT = bytes([10, 0, 0, 2])
SERVER = bytes([78, 135, 73, 140])
CPORT = 40000
SPORT = 8080
ISN = 1000
REQUEST = (
    b"GET /api/totals/last/1%20union%20select%201 HTTP/1.1\r\n"
    b"Host: metrics.example\r\nUser-Agent: test\r\n\r\n"
)


def tcp(
    seq: int,
    payload: bytes = b"",
    flags: int = TCP_ACK | TCP_PSH,
    *,
    to_server: bool = True,
    ack: int = 1,
    sport: int = CPORT,
    dport: int = SPORT,
) -> Packet:
    if to_server:
        return Packet(4, 6, CLIENT, SERVER, sport, dport, flags, seq & 0xFFFFFFFF, ack, payload,
                      False, 64)  # fmt: skip
    return Packet(4, 6, SERVER, CLIENT, dport, sport, flags, seq & 0xFFFFFFFF, ack, payload,
                  False, 64)  # fmt: skip


def handshake(table: FlowTable, isn: int = ISN) -> FlowUpdate:
    table.feed(tcp(isn, flags=TCP_SYN, ack=0), 1.0)
    table.feed(tcp(5000, flags=TCP_SYN | TCP_ACK, to_server=False, ack=isn + 1), 1.0)
    return table.feed(tcp(isn + 1, flags=TCP_ACK), 1.0)


def feed_segments(table: FlowTable, segments: list[tuple[int, bytes]], isn: int = ISN
                  ) -> tuple[bytes, list[FlowUpdate]]:  # fmt: skip
    """Feed (offset, bytes) segments after a handshake; return the stream and the updates."""
    handshake(table, isn)
    out = bytearray()
    updates = []
    for offset, chunk in segments:
        update = table.feed(tcp(isn + 1 + offset, chunk), 2.0)
        out += update.new_data
        updates.append(update)
    return bytes(out), updates


def splits(data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [(a, data[a:b]) for a, b in itertools.pairwise(points) if b > a]


def test_handshake_orients_and_numbers_flows() -> None:
    table = FlowTable()
    update = handshake(table)
    flow = update.flow
    assert flow.id == 1
    assert flow.key.proto == "TCP"
    assert (flow.key.src_ip, flow.key.src_port) == ("10.0.0.2", CPORT)
    assert (flow.key.dest_ip, flow.key.dest_port) == ("78.135.73.140", SPORT)
    assert update.to_server and not flow.midstream
    reply = table.feed(tcp(5001, b"HTTP/1.1 200 OK\r\n", to_server=False), 1.5)
    assert reply.flow is flow and not reply.to_server and reply.new_data == b""
    other = table.feed(tcp(1, flags=TCP_SYN, sport=40001, ack=0), 1.6)
    assert other.flow.id == 2 and len(table) == 2


def test_whole_request_in_one_segment() -> None:
    stream, updates = feed_segments(FlowTable(), [(0, REQUEST)])
    assert stream == REQUEST
    assert updates[0].new_data == REQUEST and updates[0].anomalies == ()


def test_request_split_at_every_byte() -> None:
    for cut in range(1, len(REQUEST)):
        stream, _ = feed_segments(FlowTable(), [(0, REQUEST[:cut]), (cut, REQUEST[cut:])])
        assert stream == REQUEST, cut


def test_one_segment_per_byte() -> None:
    stream, _ = feed_segments(FlowTable(), [(i, REQUEST[i : i + 1]) for i in range(len(REQUEST))])
    assert stream == REQUEST


def test_out_of_order_held_until_gap_fills() -> None:
    table = FlowTable()
    handshake(table)
    later = table.feed(tcp(ISN + 1 + 10, REQUEST[10:]), 2.0)
    assert later.new_data == b""
    first = table.feed(tcp(ISN + 1, REQUEST[:10]), 2.1)
    assert first.new_data == REQUEST
    assert first.flow.stream is not None and first.flow.stream.held is None


def test_identical_retransmission_is_silent() -> None:
    stream, updates = feed_segments(FlowTable(), [(0, REQUEST[:30]), (0, REQUEST[:30]),
                                                  (30, REQUEST[30:]), (20, REQUEST[20:40])])
    assert stream == REQUEST
    assert all(u.anomalies == () for u in updates)
    assert updates[1].new_data == b""


def test_retransmission_with_different_bytes_first_copy_wins() -> None:
    forged = REQUEST[:4] + b"/xyz" + REQUEST[8:30]
    stream, updates = feed_segments(FlowTable(), [(0, REQUEST[:30]), (0, forged),
                                                  (30, REQUEST[30:])])
    assert stream == REQUEST
    kinds = [k for k, _ in updates[1].anomalies]
    assert kinds == [AnomalyKind.RETRANSMISSION_MISMATCH]
    assert "offset 0-30" in updates[1].anomalies[0][1]


def test_overlap_mismatch_among_held_segments() -> None:
    # Both copies arrive ahead of a gap: the first held copy wins when the gap fills.
    forged = b"X" * 10
    stream, updates = feed_segments(FlowTable(), [(20, REQUEST[20:40]), (25, forged),
                                                  (0, REQUEST[:20]), (40, REQUEST[40:])])
    assert stream == REQUEST
    assert [k for k, _ in updates[1].anomalies] == [AnomalyKind.RETRANSMISSION_MISMATCH]


def test_sequence_wraparound() -> None:
    isn = 0xFFFFFFFF - 20
    table = FlowTable()
    stream, _ = feed_segments(table, splits(REQUEST, [5, 17, 21, 22, 40]), isn=isn)
    assert stream == REQUEST
    # A retransmission across the wrap is still recognised as old data.
    update = table.feed(tcp(isn + 1 + 10, REQUEST[10:30]), 3.0)
    assert update.new_data == b"" and update.anomalies == ()


def test_midstream_pickup_orients_by_server_port() -> None:
    table = FlowTable()
    # The server's reply is seen first: the side on port 8080 is still the server.
    first = table.feed(tcp(7000, b"HTTP/1.1 200 OK\r\n", to_server=False), 1.0)
    flow = first.flow
    assert flow.midstream
    assert (flow.key.dest_ip, flow.key.dest_port) == ("78.135.73.140", SPORT)
    update = table.feed(tcp(123456, REQUEST), 1.1)
    assert update.to_server and update.new_data == REQUEST


def test_midstream_unknown_ports_lower_port_is_server() -> None:
    table = FlowTable()
    update = table.feed(tcp(5, b"x", sport=2222, dport=50000), 1.0)
    assert (update.flow.key.dest_port, update.flow.key.src_port) == (2222, 50000)
    assert not update.to_server and update.new_data == b""


def test_syn_ack_first_gives_client_isn() -> None:
    table = FlowTable()
    table.feed(tcp(5000, flags=TCP_SYN | TCP_ACK, to_server=False, ack=ISN + 1), 1.0)
    # First client data arrives out of order; the SYN-ACK told us where the stream starts.
    assert table.feed(tcp(ISN + 11, REQUEST[10:]), 1.1).new_data == b""
    assert table.feed(tcp(ISN + 1, REQUEST[:10]), 1.2).new_data == REQUEST


def test_depth_reached_reported_once_and_bytes_beyond_not_buffered() -> None:
    table = FlowTable(depth=64)
    body = bytes(range(200))
    stream, updates = feed_segments(table, [(0, body[:50]), (50, body[50:100]),
                                            (100, body[100:200])])
    assert stream == body[:64]
    assert [u.depth_reached for u in updates] == [False, True, False]
    flow_stream = updates[0].flow.stream
    assert flow_stream is not None and len(flow_stream.data) == 64


def test_depth_not_reported_for_a_stray_far_segment() -> None:
    table = FlowTable(depth=64)
    _, updates = feed_segments(table, [(1000, b"stray"), (0, b"GET / HTTP/1.1\r\n")])
    assert not any(u.depth_reached for u in updates)


def test_rst_closes_once_and_later_data_reopens() -> None:
    table = FlowTable()
    handshake(table)
    table.feed(tcp(ISN + 1, REQUEST[:10]), 2.0)
    rst = table.feed(tcp(ISN + 999, flags=TCP_RST), 2.1)
    assert rst.closed and rst.flow.closed
    again = table.feed(tcp(ISN + 999, flags=TCP_RST), 2.2)
    assert not again.closed and again.flow is rst.flow
    # A forged RST must not hide the rest of the request.
    more = table.feed(tcp(ISN + 11, REQUEST[10:]), 2.3)
    assert more.flow is rst.flow and more.new_data == REQUEST[10:] and not more.flow.closed


def test_fin_both_sides_closes_and_trailing_ack_keeps_flow() -> None:
    table = FlowTable(close_linger=5.0)
    handshake(table)
    table.feed(tcp(ISN + 1, REQUEST), 2.0)
    end = ISN + 1 + len(REQUEST)
    assert not table.feed(tcp(end, flags=TCP_FIN | TCP_ACK), 2.1).closed
    fin = table.feed(tcp(5001, flags=TCP_FIN | TCP_ACK, to_server=False), 2.2)
    assert fin.closed
    last = table.feed(tcp(end + 1, flags=TCP_ACK), 2.3)
    assert last.flow is fin.flow and not last.closed
    assert len(table) == 1
    # After the linger a packet on the same tuple is a new flow.
    later = table.feed(tcp(end + 1, flags=TCP_ACK), 20.0)
    assert later.flow.id != fin.flow.id


def test_new_syn_on_reused_tuple_starts_new_flow() -> None:
    table = FlowTable()
    first = handshake(table).flow
    table.feed(tcp(ISN + 1, REQUEST), 2.0)
    again = table.feed(tcp(77777, flags=TCP_SYN, ack=0), 3.0)
    assert again.flow is not first and again.flow.id == 2
    assert table.feed(tcp(77778, REQUEST), 3.1).new_data == REQUEST
    # A plain SYN retransmission does not.
    assert table.feed(tcp(77777, flags=TCP_SYN, ack=0), 3.2).flow is again.flow


def test_max_flows_evicts_least_recently_seen() -> None:
    table = FlowTable(max_flows=3)
    flows = [table.feed(tcp(1, flags=TCP_SYN, sport=1000 + i, ack=0), float(i)).flow
             for i in range(3)]  # fmt: skip
    table.feed(tcp(2, b"a", sport=1000), 3.0)  # touch the oldest
    table.feed(tcp(1, flags=TCP_SYN, sport=2000, ack=0), 4.0)
    assert len(table) == 3 and table.evictions == 1
    assert flows[1] not in table.flows() and flows[0] in table.flows()


def test_idle_flows_expire_lazily() -> None:
    table = FlowTable(idle_timeout=10.0)
    for i in range(100):
        table.feed(tcp(1, flags=TCP_SYN, sport=1000 + i, ack=0), 1.0)
    table.feed(tcp(1, flags=TCP_SYN, sport=5000, ack=0), 5.0)
    assert len(table) == 101
    for step in range(10):  # batches: a few feeds later all stale flows are gone
        table.feed(tcp(2, b"x", sport=5000), 12.0 + step * 0.001)
    assert len(table) == 1 and table.expirations == 100
    # A stale flow found by lookup before the sweep reaches it is replaced, not reused.
    old = table.feed(tcp(2, b"y", sport=5000), 12.5).flow
    assert table.feed(tcp(3, b"z", sport=5000), 30.0).flow is not old


def test_udp_and_icmp_get_flows_without_reassembly() -> None:
    table = FlowTable()
    dns = decode_ip(bytes(IP(src="10.0.0.2", dst="10.0.0.53") / UDP(sport=53000, dport=53)
                          / Raw(b"q")))  # fmt: skip
    assert isinstance(dns, Packet)
    update = table.feed(dns, 1.0)
    assert update.flow.key.proto == "UDP" and update.flow.key.dest_port == 53
    assert update.to_server and update.new_data == b"" and update.flow.stream is None
    ping = Packet(4, 1, CLIENT, SERVER, 0, 0, 0, 0, 0, b"\x08\x00\x00\x00", False, 64)
    icmp = table.feed(ping, 1.0)
    assert icmp.flow.key.proto == "ICMP" and icmp.flow.id == 2


def test_fragments_touch_flow_but_add_no_stream_bytes() -> None:
    table = FlowTable()
    handshake(table)
    frag = Packet(4, 6, CLIENT, SERVER, CPORT, SPORT, TCP_ACK, ISN + 1, 1, REQUEST[:8], True, 64)
    update = table.feed(frag, 2.0)
    assert update.new_data == b""
    assert table.feed(tcp(ISN + 1, REQUEST), 2.1).new_data == REQUEST


def test_scapy_built_session_through_decoder() -> None:
    table = FlowTable()
    base = IP(src="10.0.0.2", dst="78.135.73.140")
    packets = [
        base / TCP(sport=40000, dport=80, flags="S", seq=ISN),
        IP(src="78.135.73.140", dst="10.0.0.2") / TCP(sport=80, dport=40000, flags="SA",
                                                       seq=9, ack=ISN + 1),
        base / TCP(sport=40000, dport=80, flags="A", seq=ISN + 1, ack=10),
        base / TCP(sport=40000, dport=80, flags="PA", seq=ISN + 1 + 20, ack=10) / REQUEST[20:],
        base / TCP(sport=40000, dport=80, flags="PA", seq=ISN + 1, ack=10) / REQUEST[:20],
    ]
    out = b""
    for p in packets:
        decoded = decode_ip(bytes(p))
        assert isinstance(decoded, Packet)
        out += table.feed(decoded, 1.0).new_data
    assert out == REQUEST


@settings(max_examples=300, deadline=None)
@given(
    cuts=st.lists(st.integers(0, len(REQUEST)), max_size=12),
    order_seed=st.integers(0, 2**32),
    duplicates=st.lists(st.integers(0, 40), max_size=5),
)
def test_reassembly_any_split_order_and_duplicates(cuts: list[int], order_seed: int,
                                                   duplicates: list[int]) -> None:  # fmt: skip
    segments = splits(REQUEST, cuts)
    segments += [segments[d % len(segments)] for d in duplicates]
    random.Random(order_seed).shuffle(segments)
    stream, updates = feed_segments(FlowTable(), segments, isn=order_seed & 0xFFFFFFFF)
    assert stream == REQUEST
    assert all(u.anomalies == () for u in updates)


@settings(max_examples=300, deadline=None)
@given(
    cuts=st.lists(st.integers(0, len(REQUEST)), max_size=8),
    order_seed=st.integers(0, 2**32),
    forged_at=st.integers(0, len(REQUEST) - 1),
    forged_len=st.integers(1, 30),
)
def test_forged_overlap_is_reported_and_first_copy_wins(
    cuts: list[int], order_seed: int, forged_at: int, forged_len: int
) -> None:
    segments = splits(REQUEST, cuts)
    rng = random.Random(order_seed)
    rng.shuffle(segments)
    original = REQUEST[forged_at : forged_at + forged_len]
    forged = bytes(b ^ 0x20 for b in original)
    # The forged copy goes after the segments that carried the same bytes.
    stream, updates = feed_segments(FlowTable(), [*segments, (forged_at, forged)],
                                    isn=order_seed & 0xFFFFFFFF)  # fmt: skip
    assert stream == REQUEST
    assert [k for k, _ in updates[-1].anomalies] == [AnomalyKind.RETRANSMISSION_MISMATCH]


@settings(max_examples=200, deadline=None)
@given(order_seed=st.integers(0, 2**32), forged_at=st.integers(0, len(REQUEST) - 10))
def test_forged_copy_first_wins_over_real_bytes(order_seed: int, forged_at: int) -> None:
    # The forged bytes arrive first (ahead of a gap): they win, and the real copy is flagged.
    forged = b"#" * 10
    segments = [(forged_at, forged), *splits(REQUEST, [forged_at, forged_at + 10, 7, 50])]
    stream, updates = feed_segments(FlowTable(), segments, isn=order_seed & 0xFFFFFFFF)
    assert stream == REQUEST[:forged_at] + forged + REQUEST[forged_at + 10 :]
    assert any(u.anomalies for u in updates[1:])


def test_flow_update_is_frozen_with_fields_in_order() -> None:
    update = handshake(FlowTable())
    assert [f.name for f in dataclasses.fields(FlowUpdate)] == [
        "flow", "to_server", "new_data", "anomalies", "depth_reached", "closed"]  # fmt: skip
    assert (update.to_server, update.new_data, update.anomalies) == (True, b"", ())
    assert (update.depth_reached, update.closed) == (False, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        update.closed = True  # type: ignore[misc]


def test_reset_depth_gives_keep_alive_requests_a_fresh_budget() -> None:
    table = FlowTable(depth=len(REQUEST) + 10)
    first = handshake(table)
    flow = first.flow
    assert table.feed(tcp(ISN + 1, REQUEST), 2.0).new_data == REQUEST
    table.reset_depth(flow)
    assert flow.stream is not None and flow.stream.data == bytearray()
    # The second request is longer than what was left of the first budget.
    second_at = ISN + 1 + len(REQUEST)
    tail = table.feed(tcp(second_at + 20, REQUEST[20:]), 2.1)
    assert tail.new_data == b""
    head = table.feed(tcp(second_at, REQUEST[:20]), 2.2)
    assert head.new_data == REQUEST and not head.depth_reached
    # Old bytes retransmitted after the reset are ignored, not compared.
    old = table.feed(tcp(ISN + 1, b"X" * len(REQUEST)), 2.3)
    assert old.new_data == b"" and old.anomalies == ()
    # The budget still applies to the new window.
    more = table.feed(tcp(second_at + len(REQUEST), b"Y" * 20), 2.4)
    assert more.new_data == b"Y" * 10 and more.depth_reached


def test_reset_depth_with_a_gap_open_keeps_held_bytes() -> None:
    table = FlowTable()
    flow = handshake(table).flow
    table.feed(tcp(ISN + 1, REQUEST[:10]), 2.0)
    assert table.feed(tcp(ISN + 1 + 20, REQUEST[20:]), 2.1).new_data == b""
    table.reset_depth(flow)
    assert table.feed(tcp(ISN + 1 + 10, REQUEST[10:20]), 2.2).new_data == REQUEST[10:]


def model_reassembly(segments: list[tuple[int, bytes]], depth: int
                     ) -> tuple[list[bytes], list[bool], list[bool]]:  # fmt: skip
    """Reference: a byte is set by its first copy; the stream is the filled prefix;
    depth is reported once, when the prefix is full and some byte came past it."""
    filled: dict[int, int] = {}
    delivered = 0
    beyond = reported = False
    outputs: list[bytes] = []
    conflicts: list[bool] = []
    depth_flags: list[bool] = []
    for offset, chunk in segments:
        conflict = False
        for i, byte in enumerate(chunk):
            pos = offset + i
            beyond = beyond or pos >= depth
            if pos < 0 or pos >= depth:
                continue
            if pos in filled:
                conflict = conflict or filled[pos] != byte
            else:
                filled[pos] = byte
        start = delivered
        while delivered in filled:
            delivered += 1
        outputs.append(bytes(filled[p] for p in range(start, delivered)))
        conflicts.append(conflict)
        depth_flags.append(beyond and delivered == depth and not reported)
        reported = reported or depth_flags[-1]
    return outputs, conflicts, depth_flags


@settings(max_examples=1500, deadline=None)
@given(
    segments=st.lists(
        st.tuples(st.integers(-6, 70), st.binary(min_size=1, max_size=24).map(
            lambda b: bytes(x % 3 + 97 for x in b))),  # a small alphabet: real conflicts
        max_size=14,
    ),
    depth=st.integers(1, 64),
    isn=st.integers(0, 2**32 - 1),
)
def test_reassembly_matches_first_copy_model(segments: list[tuple[int, bytes]], depth: int,
                                             isn: int) -> None:  # fmt: skip
    table = FlowTable(depth=depth)
    stream, updates = feed_segments(table, segments, isn=isn)
    outputs, conflicts, depth_flags = model_reassembly(segments, depth)
    assert [u.new_data for u in updates] == outputs
    assert table.buffered_bytes == sum(f.stream.footprint() for f in table.flows() if f.stream)
    assert [bool(u.anomalies) for u in updates] == conflicts
    assert [u.depth_reached for u in updates] == depth_flags
    assert stream == b"".join(outputs)
    assert all(kind == AnomalyKind.RETRANSMISSION_MISMATCH for u in updates
               for kind, _ in u.anomalies)  # fmt: skip


def buffered_in_flows(table: FlowTable) -> int:
    return sum(f.stream.footprint() for f in table.flows() if f.stream is not None)


def test_memory_budget_evicts_least_recently_seen_flows() -> None:
    table = FlowTable(max_buffered_bytes=3000, close_linger=1.0, idle_timeout=50.0)
    flows = []
    for i in range(10):
        handshake_at = 1000 + i
        table.feed(tcp(handshake_at, flags=TCP_SYN, sport=3000 + i, ack=0), float(i))
        update = table.feed(tcp(handshake_at + 1, b"a" * 500, sport=3000 + i), float(i))
        flows.append(update.flow)
        # Out of order too: held bytes count against the budget.
        table.feed(tcp(handshake_at + 1 + 600, b"b" * 100, sport=3000 + i), float(i))
        assert table.buffered_bytes == buffered_in_flows(table)
        assert table.buffered_bytes <= 3000
    assert table.evictions > 0
    live = table.flows()
    assert flows[-1] in live and flows[0] not in live
    # Closing frees held bytes; expiry frees the rest.
    last = flows[-1]
    table.feed(tcp(1009 + 1 + 500, flags=TCP_RST, sport=3009), 20.0)
    assert last.closed and table.buffered_bytes == buffered_in_flows(table)
    table.feed(tcp(1, flags=TCP_SYN, sport=9999, ack=0), 200.0)
    table.feed(tcp(2, flags=TCP_ACK, sport=9999), 200.0)
    assert len(table) == 1 and table.buffered_bytes == 0


def test_reset_depth_releases_buffered_bytes() -> None:
    table = FlowTable()
    flow = handshake(table).flow
    table.feed(tcp(ISN + 1, REQUEST), 2.0)
    assert table.buffered_bytes == len(REQUEST)
    table.reset_depth(flow)
    assert table.buffered_bytes == 0


def test_forged_rst_during_a_gap_does_not_lose_held_bytes() -> None:
    table = FlowTable()
    handshake(table)
    assert table.feed(tcp(ISN + 1 + 30, REQUEST[30:]), 2.0).new_data == b""
    assert table.feed(tcp(ISN + 5000, flags=TCP_RST), 2.1).closed
    head = table.feed(tcp(ISN + 1, REQUEST[:30]), 2.2)
    assert head.new_data == REQUEST and not head.flow.closed


def test_resync_restarts_the_stream_after_a_gap() -> None:
    table = FlowTable(depth=64)
    handshake(table)
    first = table.feed(tcp(ISN + 1, b"GET /a HTTP/1.1\r\n\r\n"), 1.1)
    assert first.new_data.startswith(b"GET /a")
    flow = first.flow
    # The bytes up to ISN + 5000 never reach the inspector (past the kernel's depth).
    later = ISN + 5000
    assert table.is_ahead(flow, later)
    held = table.feed(tcp(later, b"GET /b HTTP/1.1\r\n\r\n"), 1.2)
    assert held.new_data == b""
    table.resync(flow, later)
    assert not table.is_ahead(flow, later)
    again = table.feed(tcp(later, b"GET /b HTTP/1.1\r\n\r\n"), 1.3)
    assert again.new_data.startswith(b"GET /b")
