"""Traffic probes sent from inside a lab namespace (usually the client).

Each probe runs a bounded subprocess via `ip netns exec`: `curl`, `ping`, or
the project's python running `tests.lab.probe` (sockets, http.client) or
`tests.lab.crafted` (scapy). Results are typed values; a failure to get an
answer (refused, reset, timeout) is a result, not an exception.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.lab.netns import Netns

# Slack over a probe's own timeout for process start-up (python + scapy import).
_SPAWN_SLACK = 10.0
_STATUS_MARK = "\n@@rf-http-status@@"


def http_url(addr: str, port: int, path: str = "/") -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return f"http://{host}:{port}{path}"


@dataclass(frozen=True, slots=True)
class HttpResult:
    """One HTTP exchange by curl: status None when no response arrived."""

    status: int | None
    body: str
    error: str | None
    exit_code: int  # curl's: 0 ok, 7 refused, 28 timeout, 52 empty reply, 56 reset
    elapsed: float

    @property
    def answered(self) -> bool:
        return self.status is not None


def curl(
    ns: Netns,
    url: str,
    *,
    method: str = "GET",
    data: str | None = None,
    headers: Sequence[str] = (),
    max_time: float = 3.0,
    connect_timeout: float = 2.0,
) -> HttpResult:
    """Fetch `url` with curl inside `ns`; the path is sent as-is (no normalization)."""
    args = [
        "curl", "-sS", "-g", "--path-as-is", "--http1.1",
        "--max-time", f"{max_time:g}", "--connect-timeout", f"{connect_timeout:g}",
        "-X", method, "-o", "-", "-w", _STATUS_MARK + "%{http_code}",
    ]
    for header in headers:
        args += ["-H", header]
    if data is not None:
        args += ["--data-raw", data]
    args.append(url)
    started = time.monotonic()
    proc = ns.run(args, check=False, timeout=max_time + _SPAWN_SLACK)
    elapsed = time.monotonic() - started
    body, _, code = proc.stdout.rpartition(_STATUS_MARK)
    status = int(code) if code.isdigit() and int(code) > 0 else None
    error = proc.stderr.strip() or None
    return HttpResult(status, body, error, proc.returncode, elapsed)


@dataclass(frozen=True, slots=True)
class PingResult:
    sent: int
    received: int

    @property
    def ok(self) -> bool:
        return self.received > 0


_PING_STATS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def ping(ns: Netns, addr: str, *, count: int = 2, timeout: float = 3.0) -> PingResult:
    """`ping -c count`, each reply awaited up to `timeout` seconds (v4 or v6 by address)."""
    wait = str(max(1, math.ceil(timeout)))  # older iputils take whole seconds only
    args = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", wait, addr]
    proc = ns.run(args, check=False, timeout=timeout + 0.2 * count + _SPAWN_SLACK)
    m = _PING_STATS.search(proc.stdout)
    if m is None:
        return PingResult(count, 0)
    return PingResult(int(m[1]), int(m[2]))


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A socket probe: `ok` when connected/sent and a reply came back."""

    ok: bool
    reply: bytes
    error: str | None
    elapsed: float


def _run_probe(ns: Netns, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    proc = ns.python_module(
        "tests.lab.probe", check=False, timeout=timeout + _SPAWN_SLACK, input=json.dumps(request)
    )
    if proc.returncode != 0:
        return {"ok": False, "error": f"probe failed: {proc.stderr.strip()[-500:]}"}
    parsed: dict[str, Any] = json.loads(proc.stdout)
    return parsed


def _probe_result(out: dict[str, Any]) -> ProbeResult:
    return ProbeResult(
        bool(out.get("ok")),
        bytes.fromhex(str(out.get("reply", ""))),
        out.get("error"),
        float(out.get("elapsed", 0.0)),
    )


def udp_probe(
    ns: Netns, addr: str, port: int, *, payload: bytes = b"rf-probe", timeout: float = 2.0
) -> ProbeResult:
    """Send one datagram and wait up to `timeout` for one reply."""
    req = {"kind": "udp", "addr": addr, "port": port, "payload": payload.hex(),
           "timeout": timeout}
    return _probe_result(_run_probe(ns, req, timeout))


def tcp_connect(
    ns: Netns, addr: str, port: int, *, timeout: float = 2.0, payload: bytes | None = None
) -> ProbeResult:
    """Connect (and, with `payload`, send it and read the reply) within `timeout`."""
    req = {"kind": "tcp", "addr": addr, "port": port,
           "payload": payload.hex() if payload is not None else None, "timeout": timeout}
    return _probe_result(_run_probe(ns, req, timeout))


def raw_http(ns: Netns, addr: str, port: int, data: bytes, *, timeout: float = 3.0) -> ProbeResult:
    """Send raw bytes on a new TCP connection; read until close or `timeout`."""
    req = {"kind": "raw", "addr": addr, "port": port, "payload": data.hex(), "timeout": timeout}
    return _probe_result(_run_probe(ns, req, timeout))


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request for `keepalive` (path must be URL-safe: percent-encode)."""

    method: str = "GET"
    path: str = "/"
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Exchange:
    """What one request on the shared connection got: status None = no response."""

    request: Request
    status: int | None
    body: str
    error: str | None  # "reset", "timeout", "closed", "not sent (...)" or an OS error


@dataclass(frozen=True, slots=True)
class KeepAliveResult:
    exchanges: tuple[Exchange, ...]
    # Every answered request came over the first TCP connection (no reconnect).
    single_connection: bool
    local_port: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def statuses(self) -> tuple[int | None, ...]:
        return tuple(e.status for e in self.exchanges)


def keepalive(
    ns: Netns, addr: str, port: int, requests: Sequence[Request], *, timeout: float = 3.0
) -> KeepAliveResult:
    """Send `requests` one after another on ONE TCP connection (HTTP/1.1 keep-alive).

    Stops at the first request without a response; later ones are reported
    as "not sent". Never reconnects.
    """
    req = {
        "kind": "keepalive", "addr": addr, "port": port, "timeout": timeout,
        "requests": [
            {"method": r.method, "path": r.path, "body": r.body, "headers": list(r.headers)}
            for r in requests
        ],
    }
    out = _run_probe(ns, req, timeout * max(1, len(requests)))
    raw = out.get("exchanges", [])
    exchanges = []
    for i, r in enumerate(requests):
        got = raw[i] if i < len(raw) else {"status": None, "body": "",
                                            "error": out.get("error", "not sent")}
        exchanges.append(Exchange(r, got.get("status"), str(got.get("body", "")), got.get("error")))
    return KeepAliveResult(
        tuple(exchanges), bool(out.get("single_connection", False)), out.get("local_port")
    )


@dataclass(frozen=True, slots=True)
class CraftedResult:
    """A scapy-driven TCP flow: handshake, crafted data segments, what came back."""

    handshake: bool
    response: bytes  # server payload, reassembled in sequence order
    rst_received: bool
    fin_received: bool
    sport: int
    error: str | None

    @property
    def status(self) -> int | None:
        m = re.match(rb"HTTP/1\.[01] (\d{3})", self.response)
        return int(m[1]) if m else None


def send_segments(
    ns: Netns,
    addr: str,
    port: int,
    payload: bytes,
    *,
    cuts: Sequence[int] = (),
    order: Sequence[int] | None = None,
    extra: Sequence[tuple[int, bytes]] = (),
    cpus: Sequence[int] = (),
    timeout: float = 3.0,
    ifname: str | None = None,
) -> CraftedResult:
    """Open a TCP flow with scapy and send `payload` cut at byte offsets `cuts`.

    `order` permutes the segments (e.g. `[1, 0, 2]` sends the second segment
    first: out of order). `extra` segments `(offset, bytes)` go out BEFORE
    the payload's: overlapping data or a conflicting "retransmission" (the
    server's kernel keeps the first copy it receives). `cpus` pins the
    sender: data segment i goes out from CPU `cpus[i % len(cpus)]` (over veth
    the gateway processes a packet on the sender's CPU, so this decides which
    NFQUEUE a CPU-fanout rule picks); empty: wherever the scheduler runs it.
    The client namespace's kernel is kept from
    resetting the flow by a small nft rule in THAT namespace (table
    `inet rf_lab_scapy`, source ports 61000-61999 only).
    """
    req = {
        "addr": addr, "port": port, "payload": payload.hex(), "cuts": list(cuts),
        "order": list(order) if order is not None else None, "timeout": timeout,
        "extra": [[offset, data.hex()] for offset, data in extra],
        "cpus": list(cpus),
        "iface": ifname,
    }
    proc = ns.python_module(
        "tests.lab.crafted", check=False, timeout=timeout * 3 + _SPAWN_SLACK * 2,
        input=json.dumps(req),
    )
    if proc.returncode != 0:
        return CraftedResult(False, b"", False, False, 0,
                             f"crafted sender failed: {proc.stderr.strip()[-800:]}")
    out: dict[str, Any] = json.loads(proc.stdout)
    return CraftedResult(
        bool(out["handshake"]), bytes.fromhex(out["response"]), bool(out["rst"]),
        bool(out["fin"]), int(out["sport"]), out.get("error"),
    )

