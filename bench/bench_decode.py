"""Per-packet cost of decode_ip and FlowTable.feed on a mix of TCP HTTP flows.

Prints us/packet and packets/s for: decode only, feed only (pre-decoded), decode + feed.
Packets are built by hand (no scapy): IPv4 and IPv6 HTTP sessions with handshake,
request (sometimes split in two segments), response, ACKs and FIN teardown, with
many flows interleaved as on a busy gateway.
"""

from __future__ import annotations

import argparse
import gc
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.core.decode import Packet, decode_ip
from agent.core.flows import FlowTable
from agent.pcap import iter_frames, write_pcap

SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
# An Ethernet header with the IPv4 ethertype (the reader only looks at the ethertype).
ETHER_V4 = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"


def ipv4_tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
             payload: bytes = b"") -> bytes:  # fmt: skip
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    return ip + tcp


def ipv6_tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
             payload: bytes = b"") -> bytes:  # fmt: skip
    # With NOP/timestamp options, as Linux sends them.
    opts = b"\x01\x01\x08\x0a" + struct.pack("!II", 1, 2)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 8 << 4, flags, 65535, 0, 0)
    tcp += opts + payload
    ip = struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, 64, src, dst)
    return ip + tcp


def session(rng: random.Random, n: int) -> list[bytes]:
    v6 = rng.random() < 0.2
    build = ipv6_tcp if v6 else ipv4_tcp
    if v6:
        cip = b"\x20\x01\x0d\xb8" + rng.randbytes(12)
        sip = b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01"
    else:
        cip = bytes([10, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)])
        sip = bytes([192, 0, 2, 80])
    cport = 1024 + n % 60000
    sport = rng.choice((80, 8080, 8000))
    cisn, sisn = rng.getrandbits(32), rng.getrandbits(32)
    num = rng.choice(("7", "1%20union%20select%20null", "25", "abc"))
    request = (
        f"GET /api/totals/last/{num}?page={rng.randrange(100)} HTTP/1.1\r\n"
        "Host: metrics.example\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n"
    ).encode()
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\n\r\n" + b"x" * 600
    c, s = (cisn + 1) & 0xFFFFFFFF, (sisn + 1) & 0xFFFFFFFF
    out = [
        build(cip, sip, cport, sport, cisn, 0, SYN),
        build(sip, cip, sport, cport, sisn, c, SYN | ACK),
        build(cip, sip, cport, sport, c, s, ACK),
    ]
    if rng.random() < 0.3:  # the request split in two segments
        cut = rng.randrange(1, len(request))
        out.append(build(cip, sip, cport, sport, c, s, ACK | PSH, request[:cut]))
        out.append(build(cip, sip, cport, sport, (c + cut) & 0xFFFFFFFF, s, ACK | PSH,
                         request[cut:]))  # fmt: skip
    else:
        out.append(build(cip, sip, cport, sport, c, s, ACK | PSH, request))
    c = (c + len(request)) & 0xFFFFFFFF
    out += [
        build(sip, cip, sport, cport, s, c, ACK),
        build(sip, cip, sport, cport, s, c, ACK | PSH, response),
    ]
    s = (s + len(response)) & 0xFFFFFFFF
    out += [
        build(cip, sip, cport, sport, c, s, ACK),
        build(cip, sip, cport, sport, c, s, ACK | FIN),
        build(sip, cip, sport, cport, s, (c + 1) & 0xFFFFFFFF, ACK | FIN),
        build(cip, sip, cport, sport, (c + 1) & 0xFFFFFFFF, (s + 1) & 0xFFFFFFFF, ACK),
    ]
    return out


def traffic(flows: int, concurrent: int, seed: int = 1) -> list[bytes]:
    """Interleave sessions: up to `concurrent` open at once, packets picked round-robin-ish."""
    rng = random.Random(seed)
    pending = [session(rng, i) for i in range(flows)]
    active: list[list[bytes]] = []
    out: list[bytes] = []
    while pending or active:
        while pending and len(active) < concurrent:
            active.append(pending.pop())
        i = rng.randrange(len(active))
        out.append(active[i].pop(0))
        if not active[i]:
            active[i] = active[-1]
            active.pop()
    return out


def best_of(rounds: int, fn: object) -> float:
    """Best CPU time of `rounds` runs: process time, so other busy processes distort less."""
    assert callable(fn)
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flows", type=int, default=20000)
    parser.add_argument("--concurrent", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    raw = traffic(args.flows, args.concurrent)
    decoded = [decode_ip(r) for r in raw]
    packets = [p for p in decoded if isinstance(p, Packet)]
    assert len(packets) == len(raw), "bench traffic must decode"
    n = len(raw)
    print(f"{n} packets, {args.flows} flows, {args.concurrent} concurrent, "
          f"{sum(map(len, raw)) / n:.0f} bytes/packet average")  # fmt: skip

    def decode_only() -> None:
        for r in raw:
            decode_ip(r)

    def feed_only() -> None:
        table = FlowTable()
        now = 1000.0
        for p in packets:
            now += 0.00001
            table.feed(p, now)

    def decode_and_feed(max_flows: int = 65536) -> None:
        table = FlowTable(max_flows=max_flows)
        now = 1000.0
        stream_bytes = 0
        for r in raw:
            now += 0.00001
            p = decode_ip(r)
            if isinstance(p, Packet):
                stream_bytes += len(table.feed(p, now).new_data)

    def loop_only() -> None:
        for r in raw:
            isinstance(r, Packet)

    base = best_of(args.rounds, loop_only)
    def full_table() -> None:
        # A table smaller than the concurrent flows: every new flow evicts one.
        decode_and_feed(max_flows=args.concurrent // 2)

    def without_gc() -> None:
        gc.disable()
        try:
            decode_and_feed()
        finally:
            gc.enable()

    for name, fn in (("decode_ip", decode_only), ("FlowTable.feed", feed_only),
                     ("decode_ip + feed", decode_and_feed),
                     ("  table full", full_table), ("  gc disabled", without_gc)):  # fmt: skip
        t = best_of(args.rounds, fn)
        print(f"{name:20s} {t / n * 1e6:6.2f} us/packet  {n / t:10,.0f} packets/s  "
              f"(loop overhead {base / n * 1e6:.2f} us/packet included)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, linktype, link_header in (("raw IP", 101, b""),
                                            ("Ethernet", 1, ETHER_V4)):  # fmt: skip
            path = Path(tmp) / f"bench-{linktype}.pcap"
            write_pcap(path, ((1000.0 + i * 1e-5, link_header + r) for i, r in enumerate(raw)),
                       linktype=linktype)  # fmt: skip

            def read_all(path: Path = path) -> None:
                for _frame in iter_frames(path):
                    pass

            t = best_of(args.rounds, read_all)
            print(f"{'iter_frames ' + name:20s} {t / n * 1e6:6.2f} us/packet  {n / t:10,.0f} "
                  f"packets/s  ({path.stat().st_size / 1e6:.1f} MB file)")  # fmt: skip
    table = FlowTable()
    now = 1000.0
    for p in packets:
        now += 0.00001
        table.feed(p, now)
    print(f"after one pass: {len(table)} flows in table, evictions {table.evictions}, "
          f"expirations {table.expirations}")  # fmt: skip


if __name__ == "__main__":
    main()
