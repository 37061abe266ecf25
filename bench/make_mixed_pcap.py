"""Generate a mixed pcap for the throughput benchmark (bench_core.py).

Mostly benign HTTP (browser and API requests with realistic headers, keep-alive
connections, responses with bodies from server to client), a small share of
Rusty Flag attacks (SQLi/XSS through `num`, srv.go probes, non-integer `num`),
and non-HTTP noise: TLS on 443 (ClientHello with SNI, records both ways), DNS
query/response, ICMP echo, UDP on other ports, TCP on other ports (SSH, Postgres).

Flows interleave (up to `--concurrency` open at once), every packet has valid IP
and TCP/UDP checksums, Ethernet link type. Deterministic for a given seed.

    python bench/make_mixed_pcap.py --packets 200000 --out bench/out/mixed.pcap
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_ETHER = bytes.fromhex("0200000000020200000000010800")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_PSEUDO = struct.Struct("!4s4sBBH")
_CSUM = struct.Struct("=H")  # native order: the ones'-complement sum is byte-order neutral
_TCP_FIN, _TCP_SYN, _TCP_RST, _TCP_PSH, _TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_MSS = 1448

# (timestamp, Ethernet frame)
Frame = tuple[float, bytes]


def _checksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\x00"
    total = sum(array("H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class IpBuilder:
    """Builds IPv4 packets with a running identification field."""

    def __init__(self) -> None:
        self.ident = 1

    def packet(self, src: bytes, dst: bytes, proto: int, transport: bytes, ttl: int = 64) -> bytes:
        self.ident = (self.ident + 1) & 0xFFFF
        header = bytearray(
            _IPV4.pack(0x45, 0, 20 + len(transport), self.ident, 0x4000, ttl, proto, 0, src, dst)
        )
        header[10:12] = _CSUM.pack(_checksum(bytes(header)))
        return bytes(header) + transport

    def tcp(self, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
            flags: int, payload: bytes = b"") -> bytes:  # fmt: skip
        segment = bytearray(_TCP.pack(sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0))
        segment += payload
        pseudo = _PSEUDO.pack(src, dst, 0, 6, len(segment))
        segment[16:18] = _CSUM.pack(_checksum(pseudo + bytes(segment)))
        return self.packet(src, dst, 6, bytes(segment))

    def udp(self, src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
        datagram = bytearray(_UDP.pack(sport, dport, 8 + len(payload), 0)) + payload
        pseudo = _PSEUDO.pack(src, dst, 0, 17, len(datagram))
        datagram[6:8] = _CSUM.pack(_checksum(pseudo + bytes(datagram)) or 0xFFFF)
        return self.packet(src, dst, 17, bytes(datagram))

    def icmp_echo(self, src: bytes, dst: bytes, kind: int, ident: int, seq: int) -> bytes:
        body = bytearray(struct.pack("!BBHHH", kind, 0, 0, ident, seq)) + bytes(range(48))
        body[2:4] = _CSUM.pack(_checksum(bytes(body)))
        return self.packet(src, dst, 1, bytes(body))


@dataclass
class _Tcp:
    """One TCP connection: tracks both sequence numbers, yields raw IP packets."""

    ip: IpBuilder
    client: bytes
    server: bytes
    cport: int
    sport: int
    cseq: int = 1000
    sseq: int = 5000

    def handshake(self) -> Iterator[bytes]:
        yield self.ip.tcp(self.client, self.server, self.cport, self.sport, self.cseq, 0, _TCP_SYN)
        yield self.ip.tcp(self.server, self.client, self.sport, self.cport, self.sseq,
                          self.cseq + 1, _TCP_SYN | _TCP_ACK)  # fmt: skip
        self.cseq += 1
        self.sseq += 1
        yield self.to_server(b"", _TCP_ACK)

    def to_server(self, payload: bytes, flags: int = _TCP_PSH | _TCP_ACK) -> bytes:
        packet = self.ip.tcp(self.client, self.server, self.cport, self.sport, self.cseq,
                             self.sseq, flags, payload)  # fmt: skip
        self.cseq += len(payload) + (1 if flags & _TCP_FIN else 0)
        return packet

    def to_client(self, payload: bytes, flags: int = _TCP_PSH | _TCP_ACK) -> bytes:
        packet = self.ip.tcp(self.server, self.client, self.sport, self.cport, self.sseq,
                             self.cseq, flags, payload)  # fmt: skip
        self.sseq += len(payload) + (1 if flags & _TCP_FIN else 0)
        return packet

    def send_client(self, data: bytes) -> Iterator[bytes]:
        """Client data in MSS segments (the server ACKs every second one)."""
        for index, start in enumerate(range(0, len(data), _MSS)):
            yield self.to_server(data[start : start + _MSS])
            if index % 2 == 1:
                yield self.to_client(b"", _TCP_ACK)

    def send_server(self, data: bytes) -> Iterator[bytes]:
        """Server data in MSS segments, the client ACKs every second one and the last."""
        starts = range(0, len(data), _MSS)
        for index, start in enumerate(starts):
            yield self.to_client(data[start : start + _MSS])
            if index % 2 == 1 or start == starts[-1]:
                yield self.to_server(b"", _TCP_ACK)

    def close(self) -> Iterator[bytes]:
        yield self.to_server(b"", _TCP_FIN | _TCP_ACK)
        yield self.to_client(b"", _TCP_ACK)
        yield self.to_client(b"", _TCP_FIN | _TCP_ACK)
        yield self.to_server(b"", _TCP_ACK)


_HOSTS = ("metrics.lab", "metrics.example.com", "intranet.example.com", "shop.example.org")
_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.32.3",
)
_STATIC = ("/static/js/app.3f9a1c.js", "/static/css/main.css", "/images/logo.png",
           "/favicon.ico", "/", "/index.html", "/dashboard", "/static/js/vendor.js",
           "/fonts/inter.woff2", "/docs/getting-started")  # fmt: skip
_WORDS = ("cpu", "memory", "disk", "latency", "errors", "requests", "alpha", "beta", "gamma")


def _benign_request(rng: random.Random, host: str, agent: str) -> bytes:
    roll = rng.random()
    common = (
        f"Host: {host}\r\nUser-Agent: {agent}\r\n"
        "Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
        f"Cookie: session={rng.getrandbits(64):016x}; theme=dark\r\nConnection: keep-alive\r\n"
    )
    if roll < 0.45:
        path = rng.choice(_STATIC)
        if rng.random() < 0.3:
            path += f"?v={rng.randint(1, 99)}"
        return (f"GET {path} HTTP/1.1\r\n{common}Accept: */*\r\n"
                f"Referer: http://{host}/dashboard\r\n\r\n").encode()  # fmt: skip
    if roll < 0.8:
        kind = rng.choice(("totals", "diffs"))
        if rng.random() < 0.7:
            target = f"/api/{kind}/last/{rng.randint(1, 365)}"
        else:
            target = f"/api/{kind}?num={rng.randint(1, 365)}&metric={rng.choice(_WORDS)}"
        return f"GET {target} HTTP/1.1\r\n{common}Accept: application/json\r\n\r\n".encode()
    if roll < 0.9:
        body = (f"user={rng.choice(_WORDS)}{rng.randint(1, 999)}&password=hunter{rng.randint(1, 99)}"
                "%21&remember=on&num=" + str(rng.randint(1, 50)))  # fmt: skip
        content_type = "application/x-www-form-urlencoded"
        target = "/login"
    else:
        body = (f'{{"metric": "{rng.choice(_WORDS)}", "range": {{"num": {rng.randint(1, 90)}, '
                f'"unit": "d"}}, "tags": ["{rng.choice(_WORDS)}"]}}')  # fmt: skip
        content_type = "application/json"
        target = "/api/query"
    return (f"POST {target} HTTP/1.1\r\n{common}Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()  # fmt: skip


_ATTACKS = (
    "GET /api/totals/last/1%20UNION%20SELECT%20name,sql%20FROM%20sqlite_master-- HTTP/1.1",
    "GET /api/totals?num=1%20or%201=1 HTTP/1.1",
    "GET /api/diffs?num=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1",
    "GET /api/diffs/last/abc HTTP/1.1",
    "GET /metrics-ui/server/srv.go HTTP/1.1",
    "GET /static/../metrics-ui/./server/%73rv.go HTTP/1.1",
    "GET /api/totals/last/7;DROP%20TABLE%20metrics HTTP/1.1",
)
_ATTACK_FORM = "num=1%29%3BSELECT%20pg_sleep%285%29--"


def _attack_request(rng: random.Random, host: str) -> bytes:
    if rng.random() < 0.15:
        return (f"POST /api/totals HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sqlmap/1.8\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(_ATTACK_FORM)}\r\n\r\n{_ATTACK_FORM}").encode()  # fmt: skip
    line = rng.choice(_ATTACKS)
    return f"{line}\r\nHost: {host}\r\nUser-Agent: sqlmap/1.8\r\nAccept: */*\r\n\r\n".encode()


def _response(rng: random.Random) -> bytes:
    size = int(min(60_000, rng.lognormvariate(7.5, 1.2)))  # median ~1.8 kB, long tail
    body = (b"<div class=row>metric value 12345 </div>\n" * (size // 40 + 1))[:size]
    kind = rng.choice(("text/html; charset=utf-8", "application/json", "application/javascript"))
    head = (f"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Sat, 28 Nov 2026 08:00:00 GMT\r\n"
            f"Content-Type: {kind}\r\nContent-Length: {size}\r\nCache-Control: max-age=60\r\n"
            "Connection: keep-alive\r\n\r\n")  # fmt: skip
    return head.encode() + body


@dataclass
class _Counts:
    requests: int = 0
    attacks: int = 0
    flows: dict[str, int] = field(default_factory=dict)


class _Generator:
    def __init__(self, seed: int, attack_share: float) -> None:
        self.rng = random.Random(seed)
        self.ip = IpBuilder()
        self.attack_share = attack_share
        self.counts = _Counts()
        self.next_port = 20000

    def _client(self) -> bytes:
        return bytes((10, 20, self.rng.randint(0, 15), self.rng.randint(2, 250)))

    def _server(self) -> bytes:
        return bytes((10, 30, 0, self.rng.randint(2, 40)))

    def _port(self) -> int:
        self.next_port = 20000 if self.next_port >= 60000 else self.next_port + 1
        return self.next_port

    def http(self) -> Iterator[bytes]:
        rng = self.rng
        conn = _Tcp(self.ip, self._client(), self._server(), self._port(),
                    rng.choice((80, 80, 80, 8080)), rng.getrandbits(31), rng.getrandbits(31))  # fmt: skip
        host, agent = rng.choice(_HOSTS), rng.choice(_AGENTS)
        yield from conn.handshake()
        for _ in range(rng.choice((1, 1, 2, 3, 4, 6))):
            self.counts.requests += 1
            if rng.random() < self.attack_share:
                self.counts.attacks += 1
                request = _attack_request(rng, host)
            else:
                request = _benign_request(rng, host, agent)
            yield from conn.send_client(request)
            yield from conn.send_server(_response(rng))
        yield from conn.close()

    def tls(self) -> Iterator[bytes]:
        rng = self.rng
        conn = _Tcp(self.ip, self._client(), self._server(), self._port(), 443,
                    rng.getrandbits(31), rng.getrandbits(31))  # fmt: skip
        yield from conn.handshake()
        yield conn.to_server(_client_hello(f"{rng.choice(_WORDS)}.example.net", rng))
        yield from conn.send_server(rng.randbytes(rng.randint(2500, 5000)))
        yield conn.to_server(rng.randbytes(rng.randint(80, 160)))
        for _ in range(rng.randint(1, 4)):
            yield from conn.send_client(rng.randbytes(rng.randint(100, 900)))
            yield from conn.send_server(rng.randbytes(rng.randint(200, 6000)))
        yield from conn.close()

    def other_tcp(self) -> Iterator[bytes]:
        rng = self.rng
        conn = _Tcp(self.ip, self._client(), self._server(), self._port(),
                    rng.choice((22, 5432, 3306, 6379)), rng.getrandbits(31), rng.getrandbits(31))  # fmt: skip
        yield from conn.handshake()
        for _ in range(rng.randint(2, 8)):
            yield from conn.send_client(rng.randbytes(rng.randint(40, 400)))
            yield from conn.send_server(rng.randbytes(rng.randint(40, 2000)))
        yield from conn.close()

    def dns(self) -> Iterator[bytes]:
        rng = self.rng
        client, resolver, port = self._client(), bytes((10, 30, 0, 53)), self._port()
        name = f"{rng.choice(_WORDS)}{rng.randint(1, 99)}.example.com"
        ident = rng.getrandbits(16)
        question = b"".join(bytes((len(p),)) + p.encode() for p in name.split(".")) + b"\x00"
        query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + b"\x00\x01\x00\x01"
        yield self.ip.udp(client, resolver, port, 53, query)
        answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04" + rng.randbytes(4)
        reply = struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + b"\x00\x01\x00\x01"
        yield self.ip.udp(resolver, client, 53, port, reply + answer)

    def icmp(self) -> Iterator[bytes]:
        client, server, ident = self._client(), self._server(), self.rng.getrandbits(16)
        for seq in range(1, self.rng.randint(2, 4)):
            yield self.ip.icmp_echo(client, server, 8, ident, seq)
            yield self.ip.icmp_echo(server, client, 0, ident, seq)

    def other_udp(self) -> Iterator[bytes]:
        rng = self.rng
        client, server, port = self._client(), self._server(), self._port()
        dport = rng.choice((123, 514, 161, 5353, 40000 + rng.randint(0, 999)))
        for _ in range(rng.randint(1, 4)):
            yield self.ip.udp(client, server, port, dport, rng.randbytes(rng.randint(40, 300)))
            if rng.random() < 0.6:
                yield self.ip.udp(server, client, dport, port, rng.randbytes(rng.randint(40, 300)))

    def flow(self) -> tuple[str, Iterator[bytes]]:
        # Shares of flows chosen so HTTP is ~3/4 of the packets.
        kinds = (("http", self.http, 0.50), ("tls", self.tls, 0.07), ("dns", self.dns, 0.22),
                 ("icmp", self.icmp, 0.06), ("udp", self.other_udp, 0.10),
                 ("tcp", self.other_tcp, 0.05))  # fmt: skip
        name, make, _share = self.rng.choices(kinds, weights=[k[2] for k in kinds])[0]
        self.counts.flows[name] = self.counts.flows.get(name, 0) + 1
        return name, make()


def _client_hello(sni: str, rng: random.Random) -> bytes:
    name = sni.encode()
    server_name = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    extensions = struct.pack("!HH", 0, len(server_name)) + server_name
    extensions += struct.pack("!HH", 10, 4) + b"\x00\x02\x00\x1d"  # supported groups
    body = (b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32)
            + b"\x00\x04\x13\x01\x13\x02" + b"\x01\x00"
            + struct.pack("!H", len(extensions)) + extensions)  # fmt: skip
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def generate(packets: int, seed: int, concurrency: int, attack_share: float
             ) -> tuple[list[Frame], _Counts]:  # fmt: skip
    """About `packets` frames: flows are started until the count is reached, then finished."""
    gen = _Generator(seed, attack_share)
    rng = random.Random(seed + 1)
    active: list[Iterator[bytes]] = []
    frames: list[Frame] = []
    clock = 1_800_000_000.0
    while len(frames) < packets or active:
        while len(active) < concurrency and len(frames) < packets:
            active.append(gen.flow()[1])
        if not active:
            break
        index = rng.randrange(len(active))
        packet = next(active[index], None)
        if packet is None:
            active[index] = active[-1]
            active.pop()
            continue
        clock += rng.expovariate(20_000.0)  # ~20k packets/s of capture time
        frames.append((clock, _ETHER + packet))
    return frames, gen.counts


def write_pcap(path: Path, frames: list[Frame]) -> None:
    """Little-endian microsecond pcap, Ethernet link type."""
    record = struct.Struct("<IIII")
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for timestamp, frame in frames:
            sec = int(timestamp)
            usec = min(999_999, round((timestamp - sec) * 1e6))
            out.write(record.pack(sec, usec, len(frame), len(frame)))
            out.write(frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--attack-share", type=float, default=0.01, help="of HTTP requests")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "mixed.pcap")
    args = parser.parse_args(argv)
    frames, counts = generate(args.packets, args.seed, args.concurrency, args.attack_share)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_pcap(args.out, frames)
    size = args.out.stat().st_size
    print(f"{args.out}: {len(frames)} packets, {size / 1e6:.1f} MB, flows {counts.flows}, "
          f"HTTP requests {counts.requests} (attacks {counts.attacks})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
