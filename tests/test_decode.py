"""decode_ip: totality on any input, and the fields of well-formed packets."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw

from agent.core.decision import DecodeFailureReason
from agent.core.decode import (
    TCP_ACK,
    TCP_PSH,
    TCP_SYN,
    DecodeFailure,
    Packet,
    _decode_general,
    decode_ip,
    proto_name,
)

REQUEST = b"GET /api/totals/last/1%20or%201=1 HTTP/1.1\r\nHost: x\r\n\r\n"


def ok(data: bytes) -> Packet:
    result = decode_ip(data)
    assert isinstance(result, Packet), result
    return result


def failure(data: bytes) -> DecodeFailureReason:
    result = decode_ip(data)
    assert isinstance(result, DecodeFailure), result
    assert result.detail
    return result.reason


def test_ipv4_tcp_with_options() -> None:
    pkt = ok(bytes(
        IP(src="10.0.0.2", dst="78.135.73.140", ttl=17, options=b"\x01\x01\x01\x00")
        / TCP(sport=40000, dport=8080, flags="PA", seq=123, ack=456,
              options=[("MSS", 1460), ("Timestamp", (1, 2))])
        / Raw(REQUEST)
    ))  # fmt: skip
    assert (pkt.version, pkt.proto, pkt.ttl) == (4, 6, 17)
    assert (pkt.src_text, pkt.dst_text) == ("10.0.0.2", "78.135.73.140")
    assert (pkt.sport, pkt.dport, pkt.seq, pkt.ack) == (40000, 8080, 123, 456)
    assert pkt.tcp_flags == TCP_PSH | TCP_ACK
    assert pkt.payload == REQUEST and not pkt.fragment
    assert pkt.proto_name == "TCP"


def test_ipv4_trailing_padding_ignored() -> None:
    raw = bytes(IP(dst="1.2.3.4") / TCP(flags="S"))
    pkt = ok(raw + b"\x00" * 6)  # Ethernet minimum-size padding
    assert pkt.payload == b"" and pkt.tcp_flags == TCP_SYN


def test_ipv6_extension_header_chain() -> None:
    pkt = ok(bytes(
        IPv6(src="2001:db8::2", dst="2001:db8::1", hlim=9)
        / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
        / AH(nh=6, payloadlen=4, icv=b"\x00" * 12)
        / TCP(sport=1, dport=80) / Raw(REQUEST)
    ))  # fmt: skip
    assert (pkt.version, pkt.proto, pkt.ttl) == (6, 6, 9)
    assert (pkt.src_text, pkt.dst_text) == ("2001:db8::2", "2001:db8::1")
    assert (pkt.sport, pkt.dport, pkt.payload) == (1, 80, REQUEST)


def test_ipv6_udp_and_icmpv6() -> None:
    udp = ok(bytes(IPv6() / UDP(sport=5353, dport=53) / Raw(b"query")))
    assert (udp.proto_name, udp.sport, udp.dport, udp.payload) == ("UDP", 5353, 53, b"query")
    icmp = ok(bytes(IPv6() / ICMPv6EchoRequest(data=b"ping")))
    assert (icmp.proto_name, icmp.sport, icmp.dport) == ("IPv6-ICMP", 0, 0)
    assert icmp.payload.endswith(b"ping")


def test_ipv4_icmp_and_other_protocols() -> None:
    icmp = ok(bytes(IP() / ICMP() / Raw(b"x")))
    assert (icmp.proto_name, icmp.sport, icmp.dport, icmp.payload[:1]) == ("ICMP", 0, 0, b"\x08")
    gre = ok(bytes(IP(proto=47) / Raw(b"gre!")))
    assert (gre.proto_name, gre.payload) == ("47", b"gre!")
    assert proto_name(132) == "132"


def test_esp_and_no_next_header_stop_the_walk() -> None:
    esp = ok(bytes(IPv6(nh=50) / Raw(b"\x00" * 16)))
    assert esp.proto == 50 and esp.payload == b"\x00" * 16
    none = ok(bytes(IPv6(nh=59)))
    assert none.proto == 59 and none.payload == b""


def test_ipv4_fragments() -> None:
    frags = fragment(IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=7, dport=9)  # type: ignore[no-untyped-call]
                     / Raw(b"a" * 3000), 1000)  # fmt: skip
    first, *rest = (ok(bytes(f)) for f in frags)
    assert first.fragment and (first.sport, first.dport) == (7, 9)
    for pkt in rest:
        assert pkt.fragment and (pkt.sport, pkt.dport, pkt.proto) == (0, 0, 17)
        assert pkt.payload and set(pkt.payload) == {ord("a")}


def test_ipv6_fragments() -> None:
    first = ok(bytes(IPv6() / IPv6ExtHdrFragment(nh=6, offset=0, m=1)
                     / TCP(sport=3, dport=80) / Raw(b"x" * 8)))  # fmt: skip
    assert first.fragment and (first.proto, first.sport, first.dport) == (6, 3, 80)
    later = ok(bytes(IPv6() / IPv6ExtHdrFragment(nh=6, offset=100) / Raw(b"y" * 16)))
    assert later.fragment and (later.proto, later.sport, later.payload) == (6, 0, b"y" * 16)


def test_tiny_first_fragment_has_no_ports_but_decodes() -> None:
    # A first fragment too short for the TCP header: the header continues later.
    raw = bytes(IP(flags="MF", proto=6) / Raw(b"\x00\x50\x00\x50\x00\x00\x00\x01"))
    pkt = ok(raw)
    assert pkt.fragment and (pkt.sport, pkt.dport) == (0, 0)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DecodeFailureReason.TRUNCATED_IP),
        (b"\x45" + b"\x00" * 10, DecodeFailureReason.TRUNCATED_IP),
        (b"\x60" + b"\x00" * 30, DecodeFailureReason.TRUNCATED_IP),
        (b"\x55" + b"\x00" * 30, DecodeFailureReason.BAD_IP_VERSION),
        (bytes(IP(ihl=4) / TCP()), DecodeFailureReason.BAD_IP_HEADER_LENGTH),
        (bytes(IP(len=100) / TCP()), DecodeFailureReason.BAD_IP_TOTAL_LENGTH),
        (bytes(IP(len=19) / TCP()), DecodeFailureReason.BAD_IP_TOTAL_LENGTH),
        (bytes(IP(ihl=15) / TCP()), DecodeFailureReason.BAD_IP_TOTAL_LENGTH),
        (bytes(IPv6(plen=500) / TCP()), DecodeFailureReason.BAD_IP_TOTAL_LENGTH),
        (bytes(IP(proto=6) / Raw(b"\x00" * 10)), DecodeFailureReason.TRUNCATED_TRANSPORT),
        (bytes(IP() / TCP(dataofs=4)), DecodeFailureReason.BAD_TCP_OFFSET),
        (bytes(IP() / TCP(dataofs=15)), DecodeFailureReason.BAD_TCP_OFFSET),
        (bytes(IP() / UDP(len=4)), DecodeFailureReason.BAD_UDP_LENGTH),
        (bytes(IP() / UDP(len=200)), DecodeFailureReason.BAD_UDP_LENGTH),
        (bytes(IP(proto=1) / Raw(b"\x08")), DecodeFailureReason.TRUNCATED_TRANSPORT),
        (bytes(IPv6(nh=0) / Raw(b"\x06\x05")), DecodeFailureReason.TRUNCATED_EXTENSION_HEADER),
        (bytes(IPv6(nh=0) / Raw(b"\x06\x05" + b"\x00" * 6)),
         DecodeFailureReason.TRUNCATED_EXTENSION_HEADER),
        (bytes(IPv6(nh=44) / Raw(b"\x06\x00")), DecodeFailureReason.TRUNCATED_EXTENSION_HEADER),
    ],
)
def test_malformed_packets_are_typed_failures(data: bytes, reason: DecodeFailureReason) -> None:
    assert failure(data) == reason


def test_extension_header_loop_is_bounded() -> None:
    chain = b"".join(b"\x3c\x00" + b"\x00" * 6 for _ in range(40))  # 40 destination options
    data = struct.pack("!IHBB16s16s", 0x60000000, len(chain), 60, 64, b"\x00" * 16, b"\x00" * 16)
    assert failure(data + chain) == DecodeFailureReason.TRUNCATED_EXTENSION_HEADER


def test_udp_length_bounds_the_payload() -> None:
    # Bytes inside the IP datagram but past the UDP length are not UDP payload.
    pkt = ok(bytes(IP() / UDP(sport=1, dport=2, len=11) / Raw(b"abczz")))
    assert pkt.payload == b"abc"


VALID: list[ScapyPacket] = [
    IP(src="10.0.0.2", dst="78.135.73.140") / TCP(sport=40000, dport=80, flags="PA")
    / Raw(REQUEST),
    IP(options=b"\x01\x01\x01\x00") / UDP(sport=53000, dport=53) / Raw(b"dns"),
    IP() / ICMP(),
    IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(nh=6, m=1) / TCP(dport=8080)
    / Raw(REQUEST),
    IPv6() / IPv6ExtHdrRouting() / UDP() / Raw(b"x"),
    IPv6() / ICMPv6EchoRequest(),
]
VALID_BYTES = [bytes(p) for p in VALID]


def test_valid_corpus_decodes() -> None:
    for data in VALID_BYTES:
        ok(data)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(decode_ip(data), Packet | DecodeFailure)


@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=1, max_size=120).map(lambda tail: b"\x45" + tail)
       | st.binary(min_size=1, max_size=200).map(lambda tail: b"\x60" + tail))  # fmt: skip
def test_random_ip_looking_bytes_never_raise(data: bytes) -> None:
    result = decode_ip(data)
    assert isinstance(result, Packet | DecodeFailure)
    if isinstance(result, Packet):
        assert len(result.src) == len(result.dst) == (4 if result.version == 4 else 16)
        assert len(result.payload) <= len(data)


@settings(max_examples=3000, deadline=None)
@given(
    which=st.integers(0, len(VALID_BYTES) - 1),
    edits=st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 200),
    extra=st.binary(max_size=8),
)
def test_mutated_valid_packets_never_raise(which: int, edits: list[tuple[int, int]], cut: int,
                                           extra: bytes) -> None:  # fmt: skip
    data = bytearray(VALID_BYTES[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    mutated = bytes(data[: max(cut, 1)]) + extra if cut < len(data) else bytes(data) + extra
    result = decode_ip(mutated)
    assert isinstance(result, Packet | DecodeFailure)
    if isinstance(result, DecodeFailure):
        assert isinstance(result.reason, DecodeFailureReason)


def test_packet_is_a_frozen_dataclass_with_fields_in_order() -> None:
    values: dict[str, Any] = {"version": 4, "proto": 6, "src": b"\x01\x02\x03\x04", "dst": b"\x05\x06\x07\x08",
              "sport": 1, "dport": 2, "tcp_flags": 3, "seq": 4, "ack": 5, "payload": b"p",
              "fragment": True, "ttl": 9}  # fmt: skip
    pkt = Packet(**values)
    assert [f.name for f in dataclasses.fields(Packet)] == list(values)
    assert {name: getattr(pkt, name) for name in values} == values
    assert pkt == Packet(*values.values()) and hash(pkt) == hash(Packet(*values.values()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        pkt.sport = 80  # type: ignore[misc]
    assert dataclasses.replace(pkt, sport=80).sport == 80


@settings(max_examples=3000, deadline=None)
@given(
    which=st.sampled_from([0, 3]),
    edits=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=4),
    extra=st.binary(max_size=8),
)
def test_fast_path_agrees_with_general_path(which: int, edits: list[tuple[int, int]],
                                            extra: bytes) -> None:  # fmt: skip
    base = VALID_BYTES[0] if which == 0 else bytes(
        IPv6(src="2001:db8::2", dst="2001:db8::1") / TCP(sport=1, dport=80) / Raw(REQUEST))
    data = bytearray(base + extra)
    for pos, value in edits:
        data[pos % len(data)] = value
    assert decode_ip(bytes(data)) == _decode_general(bytes(data), len(data))
