"""Holes in a client stream: a request after a hole is inspected at once, the hole's bytes
in order on a stream of their own when they come.

A hole appears when the kernel lets a queued segment past the inspector (fail-open on
overload) or when segments are reordered. Waiting for the hole would leave every later
request of the flow uninspected; skipping it must not hide the hole's own requests.
"""

from __future__ import annotations

from agent.core.decision import AnomalyKind, Decision, PacketMeta, Verdict
from agent.core.engine import MAX_OPEN_GAPS, DecisionCore
from tests.helpers import default_core
from tests.test_fast_lane import ACK, CLIENT4, PSH, SERVER4, SYN, tcp_packet

BENIGN = b"GET /api/totals/last/%d HTTP/1.1\r\nHost: lab\r\n\r\n"
ATTACK = b"GET /api/totals/last/1%%20or%%201=1--%d HTTP/1.1\r\nHost: lab\r\n\r\n"


def open_flow(core: DecisionCore, sport: int = 42000) -> int:
    """Handshake; returns the first client sequence number."""
    meta = PacketMeta(timestamp=1.0)
    core.decide(tcp_packet(CLIENT4, SERVER4, sport, 80, 999, SYN), meta)
    core.decide(tcp_packet(SERVER4, CLIENT4, 80, sport, 5000, SYN | ACK, ack=1000), meta)
    return 1000


def send(core: DecisionCore, seq: int, data: bytes, sport: int = 42000) -> Decision:
    packet = tcp_packet(CLIENT4, SERVER4, sport, 80, seq, ACK | PSH, data)
    return core.decide(packet, PacketMeta(timestamp=2.0))


def test_a_request_after_a_hole_is_inspected_at_once() -> None:
    core = default_core()
    seq = open_flow(core)
    first, lost, third = BENIGN % 1, BENIGN % 2, ATTACK % 3
    assert send(core, seq, first).verdict == Verdict.ACCEPT
    # `lost` went past the queue: its bytes never reach the inspector.
    decision = send(core, seq + len(first) + len(lost), third)
    assert decision.verdict == Verdict.FLAG
    assert any(r.evidence.kind.value == "sqli" for r in decision.reasons)
    # And the flow goes on being inspected.
    after = seq + len(first) + len(lost) + len(third)
    assert send(core, after, ATTACK % 4).verdict == Verdict.FLAG


def test_reordered_attack_in_the_hole_is_still_inspected() -> None:
    core = default_core()
    seq = open_flow(core)
    attack, benign = ATTACK % 1, BENIGN % 2
    # The benign request overtakes the attack: the stream moves past the hole...
    assert send(core, seq + len(attack), benign).verdict == Verdict.ACCEPT
    # ...and the attack, arriving late, is parsed on the hole's own stream.
    late = send(core, seq, attack)
    assert late.verdict == Verdict.FLAG
    assert late.http is not None and "1%20or%201=1" in late.http.target
    state = core.flows.flows()[0].inspector_state
    assert getattr(state, "gaps", None) == []  # the hole is filled


def test_hole_bytes_split_and_in_order_are_reassembled() -> None:
    core = default_core()
    seq = open_flow(core)
    attack, benign = ATTACK % 1, BENIGN % 2
    send(core, seq + len(attack), benign)
    head = send(core, seq, attack[:20])
    assert head.verdict == Verdict.ACCEPT  # an unfinished request line: nothing yet
    rest = send(core, seq + 20, attack[20:])
    assert rest.verdict == Verdict.FLAG


def test_out_of_order_bytes_inside_a_hole_are_an_anomaly() -> None:
    core = default_core()
    seq = open_flow(core)
    attack, benign = ATTACK % 1, BENIGN % 2
    send(core, seq + len(attack), benign)
    decision = send(core, seq + 20, attack[20:])
    assert [kind for kind, _ in decision.anomalies] == [AnomalyKind.STREAM_GAP]
    assert decision.verdict == Verdict.FLAG


def test_a_hole_inside_a_request_still_waits() -> None:
    """Mid-request (head open) a later segment does not start a request: it is held."""
    core = default_core()
    seq = open_flow(core)
    request = BENIGN % 1
    send(core, seq, request[:10])
    decision = send(core, seq + 20, request[20:])
    assert decision.verdict == Verdict.ACCEPT and decision.http is None
    assert send(core, seq + 10, request[10:20]).http is not None  # the hole filled: parsed


def test_open_holes_are_bounded_the_oldest_given_up() -> None:
    core = default_core()
    seq = open_flow(core)
    request = BENIGN % 7
    for _ in range(MAX_OPEN_GAPS + 2):
        seq += 2 * len(request)  # skip one request each time
        assert send(core, seq - len(request), request).verdict == Verdict.ACCEPT
    send(core, seq, request[:5])  # not a whole request: the fast lane hands the flow back
    state = core.flows.flows()[0].inspector_state
    gaps = getattr(state, "gaps", [])
    assert len(gaps) == MAX_OPEN_GAPS
    assert gaps[0].next == 1000 + 4 * len(request)  # the two oldest holes were given up


def test_a_hole_the_fast_lane_moved_past_is_still_inspected() -> None:
    core = default_core()
    assert core.lane is not None
    seq = open_flow(core)
    first, attack, third = BENIGN % 1, ATTACK % 2, BENIGN % 3
    send(core, seq, first)  # Python inspects it and admits the flow to the lane
    assert send(core, seq + len(first) + len(attack), third).verdict == Verdict.ACCEPT
    assert core.lane.stats()["holes"] == 1  # the lane moved past the hole
    late = send(core, seq + len(first), attack)  # the hole's bytes come: Python parses them
    assert late.verdict == Verdict.FLAG
