"""Layer 3/4 decoding of raw IP packets (as NFQUEUE or a pcap reader hands them over).

Owns: `decode_ip(data) -> Packet | DecodeFailure`. Pure and total: any byte string
gives a `Packet` or a typed `DecodeFailure`, never an exception. Hot path: one
precompiled `struct` unpack per header, one frozen `Packet` per packet.

Fragments (IPv4 MF/offset, IPv6 fragment header) decode to a `Packet` with
`fragment=True`, not to a failure, so address checks still see them:
- a first fragment has its ports when its transport header is complete
  (its payload is then only the first piece of the transport payload);
- a non-first fragment has no transport header: ports, flags, seq and ack are 0
  and `payload` is the raw fragment data.
Callers that need whole datagrams report them (e.g. as `DecodeFailureReason.FRAGMENT`);
the flow table does not reassemble fragments.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from agent.core.decision import DecodeFailureReason

# TCP flag bits (the low byte of the flags field).
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

_PROTO_NAMES: dict[int, str] = {
    PROTO_TCP: "TCP",
    PROTO_UDP: "UDP",
    PROTO_ICMP: "ICMP",
    PROTO_ICMPV6: "IPv6-ICMP",
}

# ver/ihl, tos, total length, id, flags/fragment offset, ttl, proto, checksum, src, dst
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
# ver/class/flow, payload length, next header, hop limit, src, dst
_IPV6 = struct.Struct("!IHBB16s16s")
# sport, dport, seq, ack, data offset byte, flags byte
_TCP = struct.Struct("!HHIIBB")
# sport, dport, length
_UDP = struct.Struct("!HHH")
_U16 = struct.Struct("!H")
# Fast paths: an IP header without options or extension headers followed by TCP.
_IPV4_TCP = struct.Struct("!BBHHHBBH4s4sHHIIBB")
_IPV6_TCP = struct.Struct("!IHBB16s16sHHIIBB")
_ICMP_PROTOS = frozenset({PROTO_ICMP, PROTO_ICMPV6})

# IPv6 extension headers whose length byte counts 8-octet units beyond the first 8.
_IPV6_EXT_8 = frozenset({0, 43, 60})
_IPV6_FRAGMENT = 44
_IPV6_AH = 51
# Real packets carry a handful of extension headers; more is an evasion attempt.
_MAX_IPV6_EXT_HEADERS = 16


@dataclass(frozen=True, slots=True, init=False)
class Packet:
    """One decoded IP packet. Addresses are packed (4 or 16 bytes)."""

    version: int
    proto: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    tcp_flags: int
    seq: int
    ack: int
    payload: bytes
    fragment: bool
    ttl: int

    # One Packet per packet: the generated frozen __init__ costs about twice this one,
    # which stores through the slot descriptors directly (still frozen afterwards).
    def __init__(  # noqa: PLR0917
        self,
        version: int,
        proto: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        tcp_flags: int,
        seq: int,
        ack: int,
        payload: bytes,
        fragment: bool,
        ttl: int,
    ) -> None:
        _set_version(self, version)
        _set_proto(self, proto)
        _set_src(self, src)
        _set_dst(self, dst)
        _set_sport(self, sport)
        _set_dport(self, dport)
        _set_tcp_flags(self, tcp_flags)
        _set_seq(self, seq)
        _set_ack(self, ack)
        _set_payload(self, payload)
        _set_fragment(self, fragment)
        _set_ttl(self, ttl)

    @property
    def src_text(self) -> str:
        return socket.inet_ntop(socket.AF_INET if self.version == 4 else socket.AF_INET6, self.src)

    @property
    def dst_text(self) -> str:
        return socket.inet_ntop(socket.AF_INET if self.version == 4 else socket.AF_INET6, self.dst)

    @property
    def proto_name(self) -> str:
        return proto_name(self.proto)


(
    _set_version, _set_proto, _set_src, _set_dst, _set_sport, _set_dport,
    _set_tcp_flags, _set_seq, _set_ack, _set_payload, _set_fragment, _set_ttl,
) = (Packet.__dict__[name].__set__ for name in Packet.__slots__)  # fmt: skip


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Why a packet could not be decoded; `detail` says where, for the event log."""

    reason: DecodeFailureReason
    detail: str


def proto_name(proto: int) -> str:
    """Name as in FlowKey: "TCP", "UDP", "ICMP", "IPv6-ICMP" or the protocol number as text."""
    name = _PROTO_NAMES.get(proto)
    return name if name is not None else str(proto)


def decode_ip(data: bytes) -> Packet | DecodeFailure:
    """Decode an IPv4 or IPv6 packet with its TCP/UDP/ICMP header. Never raises."""
    size = len(data)
    if size < 1:
        return DecodeFailure(DecodeFailureReason.TRUNCATED_IP, "empty packet")
    # The fast paths only return what the general path would; anything else falls through.
    if size >= 40 and data[0] == 0x45 and data[9] == PROTO_TCP:
        # Fast path for the common case, IPv4 without options carrying TCP: one unpack.
        (_vi, _tos, total, _ident, frag, ttl, _proto, _csum, src, dst,
         sport, dport, seq, ack, doff, flags) = _IPV4_TCP.unpack_from(data)  # fmt: skip
        doff = (doff >> 4) << 2
        if 40 <= total <= size and not frag & 0x3FFF and 20 <= doff <= total - 20:
            return Packet(4, 6, src, dst, sport, dport, flags, seq, ack, data[20 + doff : total],
                          False, ttl)  # fmt: skip
    elif size >= 60 and data[0] >> 4 == 6 and data[6] == PROTO_TCP:
        (_vcf, plen, _nh, hlim, src, dst,
         sport, dport, seq, ack, doff, flags) = _IPV6_TCP.unpack_from(data)  # fmt: skip
        doff = (doff >> 4) << 2
        end = 40 + plen
        if end <= size and 20 <= doff <= plen:
            return Packet(6, 6, src, dst, sport, dport, flags, seq, ack, data[40 + doff : end],
                          False, hlim)  # fmt: skip
    return _decode_general(data, size)


def _decode_general(data: bytes, size: int) -> Packet | DecodeFailure:
    """Every packet the fast paths do not take (and the reference they must agree with)."""
    version = data[0] >> 4
    if version == 4:
        if size < 20:
            return DecodeFailure(DecodeFailureReason.TRUNCATED_IP, f"{size} bytes < IPv4 header")
        ver_ihl, _tos, total, _ident, frag, ttl, proto, _csum, src, dst = _IPV4.unpack_from(data)
        ihl = (ver_ihl & 0x0F) << 2
        if ihl < 20:
            return DecodeFailure(DecodeFailureReason.BAD_IP_HEADER_LENGTH, f"IHL {ihl} < 20")
        if total > size:
            return DecodeFailure(
                DecodeFailureReason.BAD_IP_TOTAL_LENGTH, f"total length {total} > {size} captured"
            )
        if ihl > total:
            # Covers total < 20 too, since ihl >= 20 here.
            return DecodeFailure(
                DecodeFailureReason.BAD_IP_TOTAL_LENGTH, f"total length {total} < IHL {ihl}"
            )
        # Bytes past the total length are link padding: ignored.
        if frag & 0x1FFF:
            return Packet(4, proto, src, dst, 0, 0, 0, 0, 0, data[ihl:total], True, ttl)
        return _transport(4, proto, src, dst, ttl, data, ihl, total, bool(frag & 0x2000))
    if version == 6:
        return _decode_ipv6(data, size)
    return DecodeFailure(DecodeFailureReason.BAD_IP_VERSION, f"IP version {version}")


def _decode_ipv6(data: bytes, size: int) -> Packet | DecodeFailure:
    if size < 40:
        return DecodeFailure(DecodeFailureReason.TRUNCATED_IP, f"{size} bytes < IPv6 header")
    _vcf, plen, nh, hlim, src, dst = _IPV6.unpack_from(data)
    end = 40 + plen
    if end > size:
        return DecodeFailure(
            DecodeFailureReason.BAD_IP_TOTAL_LENGTH, f"payload length {plen} > {size - 40} captured"
        )
    if plen == 0 and nh != 59 and size > 40:
        # Jumbogram / BIG TCP: the length lives elsewhere (or nowhere); trust the capture.
        end = size
    off = 40
    fragment = False
    for _ in range(_MAX_IPV6_EXT_HEADERS):
        if nh in _IPV6_EXT_8:
            if off + 8 > end:
                return DecodeFailure(
                    DecodeFailureReason.TRUNCATED_EXTENSION_HEADER, f"header {nh} at {off}"
                )
            hlen = (data[off + 1] + 1) << 3
            nh = data[off]
            off += hlen
        elif nh == _IPV6_FRAGMENT:
            if off + 8 > end:
                return DecodeFailure(
                    DecodeFailureReason.TRUNCATED_EXTENSION_HEADER, f"fragment header at {off}"
                )
            fragment = True
            offset_field = _U16.unpack_from(data, off + 2)[0]
            nh = data[off]
            off += 8
            if offset_field & 0xFFF8:
                return Packet(6, nh, src, dst, 0, 0, 0, 0, 0, data[off:end], True, hlim)
        elif nh == _IPV6_AH:
            if off + 8 > end:
                return DecodeFailure(
                    DecodeFailureReason.TRUNCATED_EXTENSION_HEADER, f"AH header at {off}"
                )
            hlen = (data[off + 1] + 2) << 2
            nh = data[off]
            off += hlen
        else:
            break
        if off > end:
            return DecodeFailure(
                DecodeFailureReason.TRUNCATED_EXTENSION_HEADER, f"header ends at {off} > {end}"
            )
    else:
        return DecodeFailure(
            DecodeFailureReason.TRUNCATED_EXTENSION_HEADER,
            f"more than {_MAX_IPV6_EXT_HEADERS} extension headers",
        )
    # ESP (50), no next header (59) and unknown protocols end the walk here.
    return _transport(6, nh, src, dst, hlim, data, off, end, fragment)


# Positional parameters on purpose: this runs per packet and keyword calls cost more.
def _transport(  # noqa: PLR0917
    version: int,
    proto: int,
    src: bytes,
    dst: bytes,
    ttl: int,
    data: bytes,
    off: int,
    end: int,
    fragment: bool,
) -> Packet | DecodeFailure:
    """Decode the transport header at data[off:end]."""
    avail = end - off
    if proto == PROTO_TCP:
        if avail < 20:
            if fragment:  # the header continues in the next fragment
                return Packet(version, proto, src, dst, 0, 0, 0, 0, 0, data[off:end], True, ttl)
            return DecodeFailure(DecodeFailureReason.TRUNCATED_TRANSPORT, f"TCP: {avail} bytes")
        sport, dport, seq, ack, doff, flags = _TCP.unpack_from(data, off)
        doff = (doff >> 4) << 2
        if doff < 20 or doff > avail:
            if fragment and doff >= 20:
                return Packet(version, proto, src, dst, 0, 0, 0, 0, 0, data[off:end], True, ttl)
            return DecodeFailure(
                DecodeFailureReason.BAD_TCP_OFFSET, f"data offset {doff}, {avail} bytes"
            )
        return Packet(
            version, proto, src, dst, sport, dport, flags, seq, ack,
            data[off + doff:end], fragment, ttl,
        )  # fmt: skip
    if proto == PROTO_UDP:
        if avail < 8:
            if fragment:
                return Packet(version, proto, src, dst, 0, 0, 0, 0, 0, data[off:end], True, ttl)
            return DecodeFailure(DecodeFailureReason.TRUNCATED_TRANSPORT, f"UDP: {avail} bytes")
        sport, dport, ulen = _UDP.unpack_from(data, off)
        if fragment:
            # The UDP length covers the whole datagram, not this fragment.
            ulen = avail
        elif ulen < 8 or ulen > avail:
            return DecodeFailure(
                DecodeFailureReason.BAD_UDP_LENGTH, f"UDP length {ulen}, {avail} bytes"
            )
        return Packet(
            version,
            proto,
            src,
            dst,
            sport,
            dport,
            0,
            0,
            0,
            data[off + 8 : off + ulen],
            fragment,
            ttl,
        )
    if proto in _ICMP_PROTOS and avail < 4 and not fragment:
        return DecodeFailure(DecodeFailureReason.TRUNCATED_TRANSPORT, f"ICMP: {avail} bytes")
    # ICMP, ICMPv6, ESP, no-next-header and anything else: no ports, the rest is payload.
    return Packet(version, proto, src, dst, 0, 0, 0, 0, 0, data[off:end], fragment, ttl)
