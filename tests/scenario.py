"""The Rusty Flag scenario: a pcap of benign and malicious traffic, and the decisions it must give.

Run `python -m tests.scenario` to rewrite tests/data/rusty-flag-scenario.pcap and
its expectations; the test suite replays the committed file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

DATA = Path(__file__).parent / "data"
PCAP = DATA / "rusty-flag-scenario.pcap"
EXPECTED = DATA / "rusty-flag-scenario.expected.json"

CLIENT = "10.211.1.2"
SERVER = "10.211.2.2"
IOC = "78.135.73.140"


@dataclass
class Expectation:
    label: str
    action: str
    evidence: list[tuple[str, str]]  # (kind, where)
    techniques: list[str]
    frames: list[int] = field(default_factory=list)


@dataclass
class ScenarioBuilder:
    frames: list[Packet] = field(default_factory=list)
    expectations: list[Expectation] = field(default_factory=list)
    clock: float = 1_700_000_000.0
    next_port: int = 40000

    def _emit(self, packet: Packet) -> int:
        self.clock += 0.001
        frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / packet
        frame.time = self.clock
        self.frames.append(frame)
        return len(self.frames)

    def tcp_flow(
        self,
        segments: list[bytes],
        *,
        dst: str = SERVER,
        dport: int = 80,
        order: list[int] | None = None,
    ) -> list[int]:
        """Handshake, client segments (optionally reordered), server ACKs; returns data frame numbers."""
        sport = self.next_port
        self.next_port += 1
        client_isn, server_isn = 1000, 5000
        self._emit(
            IP(src=CLIENT, dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=client_isn)
        )
        self._emit(
            IP(src=dst, dst=CLIENT)
            / TCP(sport=dport, dport=sport, flags="SA", seq=server_isn, ack=client_isn + 1)
        )
        self._emit(
            IP(src=CLIENT, dst=dst)
            / TCP(sport=sport, dport=dport, flags="A", seq=client_isn + 1, ack=server_isn + 1)
        )
        offsets = []
        seq = client_isn + 1
        for segment in segments:
            offsets.append(seq)
            seq += len(segment)
        numbers = []
        for index in order if order is not None else range(len(segments)):
            numbers.append(
                self._emit(
                    IP(src=CLIENT, dst=dst)
                    / TCP(
                        sport=sport, dport=dport, flags="PA", seq=offsets[index], ack=server_isn + 1
                    )
                    / Raw(segments[index])
                )
            )
        self._emit(
            IP(src=dst, dst=CLIENT)
            / TCP(sport=dport, dport=sport, flags="A", seq=server_isn + 1, ack=seq)
        )
        return numbers

    def expect(
        self,
        label: str,
        action: str,
        evidence: list[tuple[str, str]],
        techniques: list[str],
        frames: list[int],
    ) -> None:
        self.expectations.append(Expectation(label, action, evidence, techniques, frames))


def _get(path: str, host: str = "metrics.lab") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n".encode()


def _post(path: str, body: str, content_type: str = "application/x-www-form-urlencoded") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: metrics.lab\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def build() -> ScenarioBuilder:
    s = ScenarioBuilder()
    sqli, xss, typev, file_ = "T1505", "T1059.007", "T1505", "T1222"

    # Benign traffic: the app's own API used as intended, keep-alive with two requests.
    s.tcp_flow([_get("/"), _get("/api/totals/last/10")])
    s.tcp_flow([_get("/api/diffs/last/250?num=3")])
    s.tcp_flow([_post("/api/totals", "num=42&user=O%27Brien")])

    # The IOC: ICMP, TCP and UDP to 78.135.73.140, and its reply direction.
    f = s._emit(IP(src=CLIENT, dst=IOC) / ICMP(type=8, id=1, seq=1) / Raw(b"ping"))
    s.expect("icmp to IOC", "drop", [("ioc_address", "dest_ip")], [], [f])
    f = s._emit(IP(src=CLIENT, dst=IOC) / UDP(sport=5353, dport=9999) / Raw(b"hello"))
    s.expect("udp to IOC", "drop", [("ioc_address", "dest_ip")], [], [f])
    f = s._emit(IP(src=CLIENT, dst=IOC) / TCP(sport=41000, dport=80, flags="S", seq=1))
    s.expect("tcp syn to IOC", "drop", [("ioc_address", "dest_ip")], [], [f])
    f = s._emit(IP(src=IOC, dst=CLIENT) / TCP(sport=443, dport=41001, flags="SA", seq=9, ack=2))
    s.expect("tcp from IOC", "drop", [("ioc_address", "src_ip")], [], [f])

    # IOA file path touched (plain, then with dot segments and encoding).
    (f,) = s.tcp_flow([_get("/metrics-ui/server/srv.go")])
    s.expect("srv.go probe", "flag", [("file", "path")], [file_], [f])
    (f,) = s.tcp_flow([_get("/static/../metrics-ui/./server/%73rv.go")])
    s.expect("srv.go probe, evasive", "flag", [("file", "path")], [file_], [f])

    # SQL injection through num: path segment, query, form body.
    (f,) = s.tcp_flow(
        [_get("/api/totals/last/1%20UNION%20SELECT%20name,sql%20FROM%20sqlite_master--")]
    )
    s.expect(
        "sqli in path", "flag", [("sqli", "path"), ("type_violation", "path")], [sqli, typev], [f]
    )
    (f,) = s.tcp_flow([_get("/api/totals?num=1%20or%201=1")])
    s.expect(
        "sqli in query",
        "flag",
        [("sqli", "query"), ("type_violation", "query")],
        [sqli, typev],
        [f],
    )
    (f,) = s.tcp_flow([_post("/api/totals", "num=1%29%3BSELECT%20pg_sleep%285%29--")])
    s.expect(
        "sqli in form body",
        "flag",
        [("sqli", "body"), ("type_violation", "body")],
        [sqli, typev],
        [f],
    )

    # XSS through num, and a plain non-integer num.
    (f,) = s.tcp_flow([_get("/api/diffs?num=%3Cscript%3Ealert(1)%3C/script%3E")])
    s.expect(
        "xss in query", "flag", [("xss", "query"), ("type_violation", "query")], [xss, typev], [f]
    )
    (f,) = s.tcp_flow([_get("/api/diffs/last/abc")])
    s.expect("non-integer num", "flag", [("type_violation", "path")], [typev], [f])

    # A request split across three segments, sent out of order: decided when it completes.
    request = _get("/api/totals/last/5%20AND%201=CAST((SELECT%20version())%20AS%20int)")
    parts = [request[:7], request[7:30], request[30:]]
    numbers = s.tcp_flow(parts, order=[0, 2, 1])
    s.expect(
        "sqli split out of order",
        "flag",
        [("sqli", "path"), ("type_violation", "path")],
        [sqli, typev],
        [numbers[-1]],
    )

    # Keep-alive: a benign request, then an attack on the same connection.
    first, second = _get("/api/totals/last/7"), _get("/api/totals/last/7;DROP%20TABLE%20metrics")
    numbers = s.tcp_flow([first, second])
    s.expect(
        "sqli after benign keep-alive",
        "flag",
        [("sqli", "path"), ("type_violation", "path")],
        [sqli, typev],
        [numbers[1]],
    )
    return s


def expectations_json(builder: ScenarioBuilder) -> list[dict[str, Any]]:
    return [
        {
            "label": e.label,
            "action": e.action,
            "evidence": e.evidence,
            "techniques": e.techniques,
            "frames": e.frames,
        }
        for e in builder.expectations
    ]


def main() -> None:
    builder = build()
    DATA.mkdir(parents=True, exist_ok=True)
    wrpcap(str(PCAP), builder.frames)
    EXPECTED.write_text(json.dumps(expectations_json(builder), indent=1) + "\n")
    print(f"{PCAP}: {len(builder.frames)} frames, {len(builder.expectations)} expectations")


if __name__ == "__main__":
    main()
