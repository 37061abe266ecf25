"""Reading capture files into L3 frames (pcap and pcapng), and writing small raw-IP pcaps.

Owns: `iter_frames(path) -> Iterator[Frame]`, `write_pcap(path, frames, linktype)`.
A struct-based reader (no per-packet dissection): the link header is stripped
here, IP decoding is left to `agent.core.decode`.

- pcap: both byte orders, microsecond and nanosecond magic.
- pcapng: SHB (byte order per section), IDB (per-interface link type, if_tsresol,
  if_tsoffset), EPB, SPB (no timestamp: takes the previous frame's), the obsolete
  Packet Block; other blocks are skipped.
- Link types: Ethernet (1; 802.1Q/802.1ad/QinQ tags), raw IP (101, 228, 229, 12, 14),
  Linux SLL (113) and SLL2 (276), BSD loopback NULL (0) and LOOP (108).
  A frame that is not IP (ARP, LLDP...) or whose link header is cut short yields
  a `Frame` with a `DecodeFailure` instead of bytes (UNSUPPORTED_LINK_TYPE /
  TRUNCATED_IP, with a detail); an unknown link type does the same per frame.
- A corrupt or truncated file raises `PcapError(path, offset, message)` once the
  frames before the damage have been yielded.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.core.decision import DecodeFailureReason
from agent.core.decode import DecodeFailure

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
# DLT_RAW values some systems write instead of 101.
_RAW_LINKTYPES = frozenset({LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, 12, 14})

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_NAMES = {0x0806: "ARP", 0x88CC: "LLDP", 0x8035: "RARP", 0x8863: "PPPoE discovery",
                    0x8864: "PPPoE session", 0x888E: "EAPOL", 0x88F7: "PTP"}  # fmt: skip
_VLAN_ETHERTYPES = frozenset({0x8100, 0x88A8, 0x9100})
_MAX_VLAN_TAGS = 4
# BSD address families in the NULL/LOOP header (IPv6 differs per OS).
_AF_INET = 2
_AF_INET6 = frozenset({10, 24, 28, 30})

# A record bigger than this is corruption, not a packet (pcapng allows 256 KiB snaplen).
_MAX_RECORD = 1 << 20

_PCAP_MAGIC_US = 0xA1B2C3D4
_PCAP_MAGIC_NS = 0xA1B23C4D
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BYTE_ORDER = 0x1A2B3C4D
_PCAPNG_IDB = 1
_PCAPNG_PB = 2
_PCAPNG_SPB = 3
_PCAPNG_EPB = 6
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14

_U16_BE = struct.Struct(">H")
_U32_LE = struct.Struct("<I")
_U32_BE = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame: its L3 bytes, or why there are none."""

    number: int  # 1-based position in the file
    timestamp: float
    l3: bytes | None
    failure: DecodeFailure | None


class PcapError(Exception):
    """The capture file is unreadable from `offset` on."""

    def __init__(self, path: Path | str, offset: int, message: str) -> None:
        # The caller names the file; the text says where and what.
        super().__init__(f"offset {offset}: {message}")
        self.path = str(path)
        self.offset = offset
        self.message = message


def iter_frames(path: Path) -> Iterator[Frame]:
    """Yield every frame of a pcap or pcapng file; raise PcapError at the first damage."""
    try:
        with open(path, "rb") as handle:
            try:
                buf: bytes | mmap.mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError):
                buf = handle.read()  # empty file, pipe or a filesystem without mmap
    except OSError as err:
        raise PcapError(path, 0, err.strerror or str(err)) from None
    try:
        if len(buf) < 4:
            raise PcapError(path, 0, f"{len(buf)} bytes: not a capture file")
        magic_le = _U32_LE.unpack_from(buf)[0]
        if magic_le == _PCAPNG_SHB:
            yield from _iter_pcapng(path, buf)
        else:
            yield from _iter_pcap(path, buf)
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


def _iter_pcap(path: Path, buf: bytes | mmap.mmap) -> Iterator[Frame]:
    size = len(buf)
    if size < 24:
        raise PcapError(path, 0, "truncated pcap header")
    magic_le = _U32_LE.unpack_from(buf)[0]
    magic_be = _U32_BE.unpack_from(buf)[0]
    if magic_le in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS):
        order, magic = "<", magic_le
    elif magic_be in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS):
        order, magic = ">", magic_be
    else:
        raise PcapError(path, 0, f"unknown magic 0x{magic_le:08x}: not pcap or pcapng")
    linktype = struct.unpack_from(order + "I", buf, 20)[0] & 0xFFFF  # upper bits: FCS info
    unit = 1e-9 if magic == _PCAP_MAGIC_NS else 1e-6
    record = struct.Struct(order + "IIII")
    unpack_record = record.unpack_from
    raw = linktype in _RAW_LINKTYPES
    off = 24
    number = 0
    while off < size:
        if off + 16 > size:
            raise PcapError(path, off, "truncated record header")
        sec, frac, caplen, _wirelen = unpack_record(buf, off)
        if caplen > _MAX_RECORD:
            raise PcapError(path, off, f"record length {caplen}: corrupt file")
        start = off + 16
        off = start + caplen
        if off > size:
            raise PcapError(path, start - 16, f"truncated record: {caplen} bytes announced")
        number += 1
        if raw:
            yield Frame(number, sec + frac * unit, buf[start:off], None)
        else:
            l3, failure = _strip_link(linktype, buf[start:off])
            yield Frame(number, sec + frac * unit, l3, failure)


@dataclass(slots=True)
class _Interface:
    linktype: int
    unit: float  # seconds per timestamp tick
    offset: float  # if_tsoffset, seconds


def _iter_pcapng(path: Path, buf: bytes | mmap.mmap) -> Iterator[Frame]:
    size = len(buf)
    off = 0
    number = 0
    order = "<"
    u32 = _U32_LE
    interfaces: list[_Interface] = []
    last_ts = 0.0
    while off < size:
        if off + 12 > size:
            raise PcapError(path, off, "truncated block header")
        btype_le = _U32_LE.unpack_from(buf, off)[0]
        if btype_le == _PCAPNG_SHB:
            # A new section: its byte-order magic decides how everything in it is read.
            bom = _U32_LE.unpack_from(buf, off + 8)[0]
            if bom == _PCAPNG_BYTE_ORDER:
                order, u32 = "<", _U32_LE
            elif _U32_BE.unpack_from(buf, off + 8)[0] == _PCAPNG_BYTE_ORDER:
                order, u32 = ">", _U32_BE
            else:
                raise PcapError(path, off + 8, f"bad pcapng byte-order magic 0x{bom:08x}")
            interfaces = []
        btype = u32.unpack_from(buf, off)[0]
        blen = u32.unpack_from(buf, off + 4)[0]
        if blen < 12 or blen % 4:
            raise PcapError(path, off, f"bad block length {blen}")
        end = off + blen
        if end > size:
            raise PcapError(path, off, f"truncated block: {blen} bytes announced")
        if u32.unpack_from(buf, end - 4)[0] != blen:
            raise PcapError(path, end - 4, "block length trailer does not match")
        body = off + 8
        body_end = end - 4
        if btype == _PCAPNG_IDB:
            if body_end - body < 8:
                raise PcapError(path, off, "truncated interface description block")
            linktype = struct.unpack_from(order + "H", buf, body)[0]
            unit, ts_offset = _interface_options(buf, body + 8, body_end, order)
            interfaces.append(_Interface(linktype, unit, ts_offset))
        elif btype in (_PCAPNG_EPB, _PCAPNG_PB):
            if body_end - body < 20:
                raise PcapError(path, off, "truncated packet block")
            if btype == _PCAPNG_EPB:
                ifid, ts_high, ts_low, caplen, _wirelen = struct.unpack_from(
                    order + "IIIII", buf, body
                )
            else:
                ifid, _drops, ts_high, ts_low, caplen, _wirelen = struct.unpack_from(
                    order + "HHIIII", buf, body
                )
            start = body + 20
            if start + caplen > body_end:
                raise PcapError(path, off, f"captured length {caplen} exceeds its block")
            if ifid >= len(interfaces):
                raise PcapError(path, off, f"packet on undeclared interface {ifid}")
            iface = interfaces[ifid]
            last_ts = ((ts_high << 32) | ts_low) * iface.unit + iface.offset
            number += 1
            l3, failure = _strip_link(iface.linktype, buf[start : start + caplen])
            yield Frame(number, last_ts, l3, failure)
        elif btype == _PCAPNG_SPB:
            if body_end - body < 4 or not interfaces:
                raise PcapError(path, off, "simple packet block without an interface")
            wirelen = u32.unpack_from(buf, body)[0]
            start = body + 4
            caplen = min(wirelen, body_end - start)
            number += 1
            l3, failure = _strip_link(interfaces[0].linktype, buf[start : start + caplen])
            yield Frame(number, last_ts, l3, failure)
        off = end


def _interface_options(
    buf: bytes | mmap.mmap, off: int, end: int, order: str
) -> tuple[float, float]:
    """if_tsresol (seconds per tick) and if_tsoffset (seconds) from IDB options."""
    unit = 1e-6
    ts_offset = 0.0
    header = struct.Struct(order + "HH")
    while off + 4 <= end:
        code, length = header.unpack_from(buf, off)
        value = off + 4
        if code == 0 or value + length > end:
            break
        if code == _OPT_IF_TSRESOL and length >= 1:
            resol = buf[value]
            exponent = resol & 0x7F
            unit = 2.0**-exponent if resol & 0x80 else 10.0**-exponent
        elif code == _OPT_IF_TSOFFSET and length >= 8:
            ts_offset = float(struct.unpack_from(order + "q", buf, value)[0])
        off = value + ((length + 3) & ~3)
    return unit, ts_offset


_LinkResult = tuple[bytes | None, DecodeFailure | None]


def _strip_link(linktype: int, frame: bytes) -> _LinkResult:
    """The L3 bytes of a frame, or why it has none."""
    if linktype in _RAW_LINKTYPES:
        return frame, None
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None, _truncated("Ethernet", len(frame))
        off = 12
        ethertype = _U16_BE.unpack_from(frame, off)[0]
        for _ in range(_MAX_VLAN_TAGS):
            if ethertype not in _VLAN_ETHERTYPES:
                break
            off += 4
            if off + 2 > len(frame):
                return None, _truncated("VLAN tag", len(frame))
            ethertype = _U16_BE.unpack_from(frame, off)[0]
        return _by_ethertype(ethertype, frame, off + 2)
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None, _truncated("Linux cooked (SLL)", len(frame))
        return _by_ethertype(_U16_BE.unpack_from(frame, 14)[0], frame, 16)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None, _truncated("Linux cooked (SLL2)", len(frame))
        return _by_ethertype(_U16_BE.unpack_from(frame, 0)[0], frame, 20)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            return None, _truncated("loopback", len(frame))
        # NULL is in the capturing host's byte order, LOOP in network order: try both.
        family_le = _U32_LE.unpack_from(frame)[0]
        family_be = _U32_BE.unpack_from(frame)[0]
        if _AF_INET in (family_le, family_be) or family_le in _AF_INET6 or family_be in _AF_INET6:
            return frame[4:], None
        return None, DecodeFailure(
            DecodeFailureReason.UNSUPPORTED_LINK_TYPE,
            f"loopback address family {min(family_le, family_be)} (not IP)",
        )
    return None, DecodeFailure(
        DecodeFailureReason.UNSUPPORTED_LINK_TYPE, f"link type {linktype} not supported"
    )


def _by_ethertype(ethertype: int, frame: bytes, off: int) -> _LinkResult:
    if ethertype in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6):
        return frame[off:], None
    if ethertype <= 1500:
        what = "802.3 length field (LLC frame)"
    else:
        name = _ETHERTYPE_NAMES.get(ethertype)
        what = f"ethertype 0x{ethertype:04x}" + (f" ({name})" if name else "")
    return None, DecodeFailure(DecodeFailureReason.UNSUPPORTED_LINK_TYPE, f"{what}: not IP")


def _truncated(header: str, size: int) -> DecodeFailure:
    return DecodeFailure(
        DecodeFailureReason.TRUNCATED_IP, f"{size}-byte frame: {header} header cut short"
    )


def write_pcap(
    path: Path, frames: Iterable[tuple[float, bytes]], linktype: int = LINKTYPE_RAW
) -> int:
    """Write (timestamp, frame) pairs as a little-endian microsecond pcap; return the count."""
    header = struct.pack("<IHHiIII", _PCAP_MAGIC_US, 2, 4, 0, 0, 65535, linktype)
    record = struct.Struct("<IIII")
    count = 0
    with open(path, "wb") as out:
        out.write(header)
        for timestamp, frame in frames:
            sec = int(timestamp)
            usec = round((timestamp - sec) * 1e6)
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            out.write(record.pack(sec, usec, len(frame), len(frame)))
            out.write(frame)
            count += 1
    return count
