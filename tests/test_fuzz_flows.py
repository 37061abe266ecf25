"""Flow reassembly under arbitrary hostile segment sequences (issue 8).

test_flows.py checks the cases by hand and one forged-copy property; here
hypothesis drives whole sequences: overlapping, duplicated, out-of-order,
before-the-start, past-the-depth and sequence-wrapping segments, and on many
flows at once with RSTs, FINs, SYNs and replies mixed in, against
- a model of the client stream (first copy of each byte wins, bytes past
  `depth` dropped, release only up to the first gap), and
- the table's bounds: flows <= max_flows, each stream <= depth, the
  `buffered_bytes` counter equal to what the flows hold and near the budget.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.decision import PacketMeta
from agent.core.decode import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Packet
from agent.core.flows import FlowTable
from bench.bench_floods import tcp4
from tests.helpers import default_core
from tests.test_flows import CLIENT, SERVER, handshake, tcp

DEPTH = 64

segment = st.tuples(
    st.integers(min_value=-20, max_value=DEPTH + 20),  # stream offset (negative: before the start)
    st.binary(min_size=1, max_size=40),
)


def model_stream(segments: list[tuple[int, bytes]], depth: int) -> bytes:
    """First copy of each offset wins; bytes outside [0, depth) vanish; stop at the first gap."""
    first: dict[int, int] = {}
    for offset, data in segments:
        for i, byte in enumerate(data):
            position = offset + i
            if 0 <= position < depth and position not in first:
                first[position] = byte
    out = bytearray()
    while len(out) in first:
        out.append(first[len(out)])
    return bytes(out)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(segment, max_size=25),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_any_segment_sequence_matches_the_first_copy_model(
    segments: list[tuple[int, bytes]], isn: int
) -> None:
    table = FlowTable(depth=DEPTH)
    handshake(table, isn)
    delivered = bytearray()
    for offset, data in segments:
        update = table.feed(tcp(isn + 1 + offset, data), 2.0)
        delivered += update.new_data
        (flow,) = table.flows()
        assert flow.stream is not None
        assert len(flow.stream.data) <= DEPTH
        assert table.buffered_bytes == flow.stream.footprint()
        assert flow.stream.footprint() <= 3 * DEPTH
    assert bytes(delivered) == model_stream(segments, DEPTH)


packet_event = st.tuples(
    st.integers(min_value=0, max_value=11),  # flow number (more flows than the table holds)
    st.booleans(),  # client -> server?
    st.sampled_from([TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, TCP_ACK | TCP_PSH, TCP_FIN | TCP_ACK,
                     TCP_RST, TCP_RST | TCP_ACK, 0, 0xFF]),
    st.integers(min_value=0, max_value=2**32 - 1),  # sequence number
    st.binary(max_size=60),
    st.floats(min_value=0.0, max_value=5.0),  # time step
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet_event, max_size=60))
def test_table_bounds_hold_under_mixed_hostile_packets(
    events: list[tuple[int, bool, int, int, bytes, float]],
) -> None:
    budget = 200
    table = FlowTable(max_flows=8, depth=DEPTH, idle_timeout=10.0, close_linger=1.0,
                      max_buffered_bytes=budget)  # fmt: skip
    now = 0.0
    for flow_no, to_server, flags, seq, data, step in events:
        now += step
        port = 40000 + flow_no
        packet = (
            Packet(4, 6, CLIENT, SERVER, port, 8080, flags, seq, 1, data, False, 64)
            if to_server
            else Packet(4, 6, SERVER, CLIENT, 8080, port, flags, seq, 1, data, False, 64)
        )
        table.feed(packet, now)
        flows = table.flows()
        assert len(table) == len(flows) <= 8
        held = sum(f.stream.footprint() for f in flows if f.stream is not None)
        assert table.buffered_bytes == held
        # "About" the budget: the packet that crosses it is stored before shedding.
        assert held <= budget + 3 * DEPTH
        for flow in flows:
            assert flow.stream is None or len(flow.stream.data) <= DEPTH


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-30, 300), st.binary(min_size=1, max_size=120),
                          st.sampled_from([TCP_ACK | TCP_PSH, TCP_ACK, TCP_RST, TCP_FIN | TCP_ACK])),
                max_size=30))  # fmt: skip
def test_decision_core_survives_hostile_http_streams(
    events: list[tuple[int, int, bytes, int]],
) -> None:
    # The whole core (flows + HTTP parser + params + classifiers) on the same kind of input.
    core = default_core()
    meta = PacketMeta(timestamp=1.0)
    for port in range(4):
        core.decide(tcp4(CLIENT, SERVER, 50000 + port, 80, TCP_SYN, 0), meta)
    for port, offset, data, flags in events:
        decision = core.decide(tcp4(CLIENT, SERVER, 50000 + port, 80, flags, (1 + offset) & 0xFFFFFFFF, 1, data), meta)
        assert decision.flow is not None
        assert all(r.evidence.value is not None for r in decision.reasons)
