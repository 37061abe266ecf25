"""A scapy TCP client run INSIDE a namespace: `python -m tests.lab.crafted < request.json`.

Does the handshake itself, sends the payload as crafted segments (split,
reordered), acknowledges what the server sends, then closes with FIN. The
namespace's kernel knows nothing of this flow and would answer the SYN-ACK
with a RST, so an nft table in THIS namespace (never the host) drops
kernel RSTs from the source ports scapy uses (61000-61999, outside the
kernel's ephemeral range). Bounded by the request's timeout throughout.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from typing import Any

from scapy.config import conf
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet
from scapy.sendrecv import AsyncSniffer, send

SPORT_RANGE = (61000, 61999)
RST_GUARD = f"""
table inet rf_lab_scapy {{}}
flush table inet rf_lab_scapy
table inet rf_lab_scapy {{
    chain out {{
        type filter hook output priority 0; policy accept;
        tcp sport {SPORT_RANGE[0]}-{SPORT_RANGE[1]} tcp flags & rst == rst drop
    }}
}}
"""


def install_rst_guard() -> None:
    subprocess.run(["nft", "-f", "-"], input=RST_GUARD, text=True, check=True, timeout=10.0)


def segments(payload: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    """(offset, bytes) pieces of `payload` cut at the given offsets."""
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(payload)), len(payload)]
    return [(lo, payload[lo:hi]) for lo, hi in itertools.pairwise(bounds) if hi > lo]


class Flow:
    def __init__(self, addr: str, port: int, iface: str | None) -> None:
        self.addr = addr
        self.port = port
        self.sport = random.randint(*SPORT_RANGE)  # not security relevant
        self.ip: Packet = IPv6(dst=addr) if ":" in addr else IP(dst=addr)
        if iface:
            self.iface = iface
        else:  # the interface the namespace routes `addr` through
            table = conf.route6 if ":" in addr else conf.route
            self.iface = str(table.route(addr)[0])
        self.isn = random.randint(1, 2**31)
        self.server_next = 0  # next server sequence number we expect
        self.received: dict[int, bytes] = {}
        self.rst = False
        self.fin = False
        self.fin_seq: int | None = None
        self.synack = threading.Event()
        self.lock = threading.Lock()

    def matches(self, pkt: Packet) -> bool:
        return bool(
            pkt.haslayer(TCP)
            and pkt[TCP].sport == self.port
            and pkt[TCP].dport == self.sport
            and (pkt.haslayer(IPv6) or pkt.haslayer(IP))
        )

    def on_packet(self, pkt: Packet) -> None:
        tcp = pkt[TCP]
        flags = str(tcp.flags)
        with self.lock:
            if "R" in flags:
                self.rst = True
            if "S" in flags and "A" in flags:
                self.server_next = (tcp.seq + 1) % 2**32
                self.synack.set()
                return
            data = bytes(tcp.payload)
            if data:
                self.received.setdefault(tcp.seq, data)
            if "F" in flags:
                self.fin = True
                self.fin_seq = (tcp.seq + len(data)) % 2**32

    def segment(self, flags: str, seq_offset: int, data: bytes = b"") -> Packet:
        pkt: Packet = self.ip / TCP(
            sport=self.sport, dport=self.port, flags=flags,
            seq=(self.isn + 1 + seq_offset) % 2**32, ack=self.server_next,
        ) / data
        return pkt

    def contiguous(self, initial: int) -> tuple[bytes, int]:
        """Server bytes in order from `initial`, and the next expected sequence number."""
        with self.lock:
            out = b""
            nxt = initial
            while nxt in self.received:
                out += self.received[nxt]
                nxt = (nxt + len(self.received[nxt])) % 2**32
            return out, nxt


def run(req: dict[str, Any]) -> dict[str, Any]:
    install_rst_guard()
    if req.get("cpus"):
        os.sched_setaffinity(0, {int(req["cpus"][0])})
    flow = Flow(req["addr"], int(req["port"]), req.get("iface"))
    timeout = float(req["timeout"])
    payload = bytes.fromhex(req["payload"])
    pieces = segments(payload, list(req.get("cuts") or []))
    order = req.get("order") or list(range(len(pieces)))
    started = threading.Event()
    sniffer = AsyncSniffer(
        iface=flow.iface, store=False, lfilter=flow.matches, prn=flow.on_packet,
        started_callback=started.set,
    )
    sniffer.start()
    result: dict[str, Any] = {"handshake": False, "response": "", "rst": False, "fin": False,
                              "sport": flow.sport, "error": None}
    try:
        if not started.wait(timeout):
            result["error"] = "sniffer did not start"
            return result
        for _attempt in range(3):
            send(flow.segment("S", -1), verbose=False)
            if flow.synack.wait(timeout / 3):
                break
        if not flow.synack.is_set():
            result["error"] = "no SYN-ACK"
            return result
        result["handshake"] = True
        initial = flow.server_next
        send(flow.segment("A", 0), verbose=False)
        decoys = [(int(o), bytes.fromhex(h)) for o, h in req.get("extra") or []]
        cpus = [int(c) for c in req.get("cpus") or []]
        for number, (offset, data) in enumerate([*decoys, *(pieces[i] for i in order)]):
            if cpus:
                # Sent from this CPU: the gateway's NFQUEUE CPU fanout follows the sender (veth).
                os.sched_setaffinity(0, {cpus[number % len(cpus)]})
            send(flow.segment("PA", offset, data), verbose=False)
            time.sleep(0.02)  # keep the wire order as given
        deadline = time.monotonic() + timeout
        acked = initial
        while time.monotonic() < deadline and not flow.rst:
            _, nxt = flow.contiguous(initial)
            if nxt != acked:
                flow.server_next = nxt
                send(flow.segment("A", len(payload)), verbose=False)
                acked = nxt
            if flow.fin and nxt == flow.fin_seq:
                flow.server_next = (nxt + 1) % 2**32
                break
            time.sleep(0.02)
        if not flow.rst:
            send(flow.segment("FA", len(payload)), verbose=False)
            time.sleep(0.05)
    finally:
        sniffer.stop()
    data, _ = flow.contiguous(initial)
    result.update(response=data.hex(), rst=flow.rst, fin=flow.fin)
    return result


def main() -> int:
    req = json.loads(sys.stdin.read())
    print(json.dumps(run(req)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
