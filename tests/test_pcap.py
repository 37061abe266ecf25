"""pcap/pcapng reading: every supported link type round-trips to the same L3 bytes."""

from __future__ import annotations

import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, Loopback
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, PcapWriter

from agent.core.decision import DecodeFailureReason
from agent.core.decode import Packet, decode_ip
from agent.core.flows import FlowTable
from agent.pcap import Frame, PcapError, iter_frames, write_pcap
from tests.lab.netns import ADDR, Lab
from tests.lab.traffic import send_segments

V4 = bytes(IP(src="10.0.0.2", dst="78.135.73.140") / TCP(sport=40000, dport=80, flags="PA")
           / Raw(b"GET /api/totals/last/1 HTTP/1.1\r\n\r\n"))  # fmt: skip
V6 = bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / UDP(sport=5353, dport=53) / Raw(b"q"))


def l3_of(frames: list[Frame]) -> list[bytes | None]:
    return [f.l3 for f in frames]


def write_scapy(path: Path, packets: list[ScapyPacket], linktype: int, endianness: str = "",
                nano: bool = False) -> None:  # fmt: skip
    writer = PcapWriter(str(path), linktype=linktype, endianness=endianness, nano=nano)
    for p in packets:
        writer.write(p)
    writer.close()


def test_write_pcap_round_trip_raw(tmp_path: Path) -> None:
    path = tmp_path / "raw.pcap"
    assert write_pcap(path, [(1700000000.25, V4), (1700000001.5, V6)]) == 2
    frames = list(iter_frames(path))
    assert [f.number for f in frames] == [1, 2]
    assert l3_of(frames) == [V4, V6]
    assert frames[0].timestamp == pytest.approx(1700000000.25)
    assert frames[1].failure is None
    assert isinstance(decode_ip(frames[0].l3 or b""), Packet)


@pytest.mark.parametrize("endianness", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endianness: str, nano: bool) -> None:
    path = tmp_path / "e.pcap"
    pkt = Ether() / IP(V4)
    pkt.time = 1700000000.123456
    write_scapy(path, [pkt], linktype=1, endianness=endianness, nano=nano)
    [frame] = list(iter_frames(path))
    assert frame.l3 == V4
    assert frame.timestamp == pytest.approx(1700000000.123456, abs=1e-6)


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (1, Ether() / IP(V4)),
        (1, Ether() / Dot1Q(vlan=10) / IP(V4)),
        (1, Ether() / Dot1AD(vlan=20) / Dot1Q(vlan=10) / IP(V4)),
        (113, CookedLinux(proto=0x0800) / IP(V4)),
        (276, CookedLinuxV2(proto=0x0800) / IP(V4)),
        (0, Loopback(type=2) / IP(V4)),
        (101, IP(V4)),
        (228, IP(V4)),
        (12, IP(V4)),
    ],
)
def test_link_types_ipv4(tmp_path: Path, linktype: int, frame: ScapyPacket) -> None:
    path = tmp_path / "l.pcap"
    write_scapy(path, [frame], linktype=linktype)
    assert l3_of(list(iter_frames(path))) == [V4]


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (1, Ether() / IPv6(V6)),
        (113, CookedLinux(proto=0x86DD) / IPv6(V6)),
        (276, CookedLinuxV2(proto=0x86DD) / IPv6(V6)),
        (0, Loopback(type=24) / IPv6(V6)),
        (229, IPv6(V6)),
    ],
)
def test_link_types_ipv6(tmp_path: Path, linktype: int, frame: ScapyPacket) -> None:
    path = tmp_path / "l6.pcap"
    write_scapy(path, [frame], linktype=linktype)
    assert l3_of(list(iter_frames(path))) == [V6]


def test_null_loopback_in_big_endian_host_order(tmp_path: Path) -> None:
    path = tmp_path / "null.pcap"
    write_pcap(path, [(1.0, struct.pack(">I", 30) + V6), (2.0, struct.pack("<I", 2) + V4)],
               linktype=0)  # fmt: skip
    assert l3_of(list(iter_frames(path))) == [V6, V4]


def test_non_ip_frames_are_typed_failures(tmp_path: Path) -> None:
    path = tmp_path / "arp.pcap"
    write_scapy(path, [Ether() / ARP(), Ether() / IP(V4), Ether(type=0x88CC) / Raw(b"x" * 30)],
                linktype=1)  # fmt: skip
    frames = list(iter_frames(path))
    assert [f.number for f in frames] == [1, 2, 3]
    assert frames[0].l3 is None and frames[0].failure is not None
    assert frames[0].failure.reason == DecodeFailureReason.UNSUPPORTED_LINK_TYPE
    assert "ARP" in frames[0].failure.detail
    assert frames[1].l3 == V4
    assert frames[2].failure is not None and "LLDP" in frames[2].failure.detail


def test_short_link_header_and_unknown_linktype(tmp_path: Path) -> None:
    short = tmp_path / "short.pcap"
    write_pcap(short, [(1.0, b"\x00" * 10)], linktype=1)
    [frame] = list(iter_frames(short))
    assert frame.failure is not None and frame.failure.reason == DecodeFailureReason.TRUNCATED_IP
    odd = tmp_path / "odd.pcap"
    write_pcap(odd, [(1.0, V4)], linktype=147)
    [frame] = list(iter_frames(odd))
    assert frame.failure is not None
    assert frame.failure.reason == DecodeFailureReason.UNSUPPORTED_LINK_TYPE


def test_pcapng_from_scapy(tmp_path: Path) -> None:
    path = tmp_path / "s.pcapng"
    writer = PcapNgWriter(str(path))
    first = Ether() / IP(V4)
    first.time = 1700000000.5
    writer.write(first)
    second = Ether() / IPv6(V6)
    second.time = 1700000001.25
    writer.write(second)
    writer.close()
    frames = list(iter_frames(path))
    assert l3_of(frames) == [V4, V6]
    assert [f.timestamp for f in frames] == pytest.approx([1700000000.5, 1700000001.25])


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    size = len(body) + 12
    return struct.pack(order + "II", btype, size) + body + struct.pack(order + "I", size)


def _option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def handmade_pcapng(order: str) -> bytes:
    """Two interfaces (Ethernet, us; raw IP, ns via if_tsresol), EPB, SPB, an unknown block."""
    shb = _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb_eth = _block(order, 1, struct.pack(order + "HHI", 1, 0, 65535))
    idb_raw = _block(order, 1, struct.pack(order + "HHI", 101, 0, 65535)
                     + _option(order, 9, b"\x09") + _option(order, 14, struct.pack(order + "q", 10))
                     + _option(order, 0, b""))  # fmt: skip
    eth = bytes(Ether() / IP(V4))
    ts_us = 1_700_000_000_000_000
    epb_eth = _block(order, 6, struct.pack(order + "IIIII", 0, ts_us >> 32, ts_us & 0xFFFFFFFF,
                                           len(eth), len(eth)) + eth)  # fmt: skip
    ts_ns = 1_700_000_002_000_000_001
    epb_raw = _block(order, 6, struct.pack(order + "IIIII", 1, ts_ns >> 32, ts_ns & 0xFFFFFFFF,
                                           len(V6), len(V6)) + V6)  # fmt: skip
    unknown = _block(order, 0x0BAD, b"custom block")
    spb = _block(order, 3, struct.pack(order + "I", len(eth)) + eth)
    return shb + idb_eth + idb_raw + epb_eth + unknown + epb_raw + spb


@pytest.mark.parametrize("order", ["<", ">"])
def test_handmade_pcapng_both_byte_orders(tmp_path: Path, order: str) -> None:
    path = tmp_path / "h.pcapng"
    path.write_bytes(handmade_pcapng(order))
    frames = list(iter_frames(path))
    assert l3_of(frames) == [V4, V6, V4]
    assert [f.number for f in frames] == [1, 2, 3]
    assert frames[0].timestamp == pytest.approx(1_700_000_000.0)
    # ns resolution plus the 10 s if_tsoffset.
    assert frames[1].timestamp == pytest.approx(1_700_000_012.000000001, abs=1e-6)
    assert frames[2].timestamp == frames[1].timestamp  # SPB: no timestamp of its own


def test_truncated_pcap_yields_good_frames_then_error(tmp_path: Path) -> None:
    path = tmp_path / "t.pcap"
    write_pcap(path, [(1.0, V4), (2.0, V4), (3.0, V6)])
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    seen: list[Frame] = []
    with pytest.raises(PcapError) as info:
        seen.extend(iter_frames(path))
    assert len(seen) == 2
    assert info.value.offset == len(data) - 16 - len(V6)
    assert "truncated record" in str(info.value)
    assert info.value.path == str(path)


def test_truncated_pcapng_block(tmp_path: Path) -> None:
    path = tmp_path / "t.pcapng"
    path.write_bytes(handmade_pcapng("<")[:-7])
    seen: list[Frame] = []
    with pytest.raises(PcapError, match="truncated block"):
        seen.extend(iter_frames(path))
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a capture file"),
        (b"hello world, this is no capture file", "unknown magic"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap header"),
    ],
)
def test_not_a_capture_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(PcapError, match=message):
        list(iter_frames(path))


def test_missing_file_is_pcap_error(tmp_path: Path) -> None:
    with pytest.raises(PcapError):
        list(iter_frames(tmp_path / "absent.pcap"))


def test_corrupt_record_length(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    write_pcap(path, [(1.0, V4)])
    data = bytearray(path.read_bytes())
    data[24 + 8 : 24 + 12] = struct.pack("<I", 0x7FFFFFFF)
    path.write_bytes(bytes(data))
    with pytest.raises(PcapError, match="corrupt"):
        list(iter_frames(path))


# ---------------------------------------------------------------- real captures (namespace lab)

LAB_REQUEST = (b"GET /api/totals/last/1%20union%20select%20name,secret%20from%20users HTTP/1.1\r\n"
               b"Host: metrics\r\nConnection: close\r\n\r\n")  # fmt: skip
# tcpdump link-layer choices on the gateway: the veth (Ethernet) and "any" (cooked).
CAPTURES = {"ether": ["-i", "gw-cli"], "sll": ["-i", "any", "-y", "LINUX_SLL"],
            "sll2": ["-i", "any", "-y", "LINUX_SLL2"]}  # fmt: skip
EXPECTED_LINKTYPE = {"ether": 1, "sll": 113, "sll2": 276}


def _start_tcpdump(lab: Lab, args: list[str], out: Path) -> subprocess.Popen[bytes]:
    proc = lab.gateway.popen(
        ["tcpdump", "-n", "-U", "--time-stamp-precision=nano", "-w", str(out), *args, "tcp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 10.0
    line = b""
    while b"listening on" not in line and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
    assert b"listening on" in line, line
    return proc


@pytest.fixture(scope="module")
def lab_captures(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real traffic through the lab gateway, captured by tcpdump in three link types."""
    lab.start_server_app()
    out = tmp_path_factory.mktemp("captures")
    procs = {name: _start_tcpdump(lab, args, out / f"{name}.pcap")
             for name, args in CAPTURES.items()}  # fmt: skip
    try:
        for addr in (ADDR.server_v4, ADDR.server_v6):
            lab.client.raw_http(addr, 80, LAB_REQUEST)
        # Out of order, with a conflicting copy of bytes 10-20 sent first.
        crafted = send_segments(lab.client, ADDR.server_v4, 8080, LAB_REQUEST,
                                cuts=[15, 40], order=[2, 0, 1],
                                extra=[(10, b"X" * 10)])  # fmt: skip
        assert crafted.handshake, crafted.error
        time.sleep(0.5)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            proc.wait(timeout=10.0)
    return {name: out / f"{name}.pcap" for name in CAPTURES}


def _client_streams(path: Path) -> tuple[dict[tuple[str, int], bytes], list[str]]:
    """Reassembled client streams by (server address, port), and the anomaly kinds seen."""
    table = FlowTable()
    streams: dict[int, bytearray] = {}
    keys: dict[int, tuple[str, int]] = {}
    anomalies: list[str] = []
    for frame in iter_frames(path):
        assert frame.l3 is not None, frame.failure
        pkt = decode_ip(frame.l3)
        assert isinstance(pkt, Packet), pkt
        update = table.feed(pkt, frame.timestamp)
        flow = update.flow
        keys[flow.id] = (flow.key.dest_ip, flow.key.dest_port)
        streams.setdefault(flow.id, bytearray()).extend(update.new_data)
        anomalies += [kind.value for kind, _ in update.anomalies]
    return {keys[i]: bytes(s) for i, s in streams.items()}, anomalies


@pytest.mark.lab
@pytest.mark.parametrize("capture", list(CAPTURES))
def test_real_capture_reassembles_client_requests(lab_captures: dict[str, Path],
                                                  capture: str) -> None:  # fmt: skip
    path = lab_captures[capture]
    linktype = struct.unpack_from("<I", path.read_bytes(), 20)[0]
    assert linktype == EXPECTED_LINKTYPE[capture]
    streams, anomalies = _client_streams(path)
    assert streams[(ADDR.server_v4, 80)] == LAB_REQUEST
    assert streams[(ADDR.server_v6, 80)] == LAB_REQUEST
    # The server kept the first copy it got; so does the flow table, and it says so.
    forged = LAB_REQUEST[:10] + b"X" * 10 + LAB_REQUEST[20:]
    assert streams[(ADDR.server_v4, 8080)] == forged
    assert "retransmission_mismatch" in anomalies
