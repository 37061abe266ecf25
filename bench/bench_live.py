"""Benchmark: the live path (NFQUEUE, xt backend here) in the namespace lab.

Three figures, each with and without the agent (`rustyflag-agent run` in the
gateway namespace, forward hook only), repeated `--repeat` times (median):

- pps: packets/s verdicted through NFQUEUE by the REAL agent vs a trivial
  accept-everything callback (bench_live_accept.py) bound to the same queues
  under the same ruleset, with 1 and 2 queues/workers. The load: one raw-socket
  sender per CPU in the client namespace, from 8 source addresses each (the
  queue balance hashes the address pair), each replaying pre-built in-sequence
  TCP segments to port 80 (no handshake: conntrack picks the flows up; flushed
  before each run), in two mixes (MIXES): `requests`, one whole HTTP request
  per segment (100 per keep-alive flow, 4,000 flows per sender), and `body`, an
  upload head then 500-byte body segments (12,000 flows per sender). Verdicted =
  growth of `id_sequence` in /proc/net/netfilter/nfnetlink_queue of the
  gateway namespace; offered = what the senders sent. A drop rule in the
  SERVER namespace discards the segments on arrival (no RST storm). Two
  figures per consumer: flat out (senders overdrive the queue: fail-open lets
  the excess through uninspected, which leaves holes in the streams the agent
  reassembles), and kept up with (`--sustained`: paced senders, the highest
  rate at which every offered segment is verdicted, found by bisection).
- goodput: a bulk TCP transfer (default 200 MB) over port 8000 (an HTTP port
  the agent inspects) by a small streaming server of this script in the server
  namespace: download (server -> client) and upload (client -> server). Three
  gateways: none (plain forwarding: no conntrack), conntrack (one `ct state`
  rule, so conntrack runs as under the agent), agent; visited A-B-C-C-B-A
  each round (the shared machine's load drifts).
- latency: N sequential GETs of the lab app (/api/totals/last/3, port 80), on
  fresh connections and on one keep-alive connection: p50 and p99.

Needs root; all traffic stays inside the lab's namespaces (no route out).
Usage: bench_live.py [--repeat 3] [--bulk-mb 200] [--bulk-runs 3] [--requests 500]
       [--seconds 3] [--skip-pps | --skip-bulk]
The spoofed sender sources (10.211.1.100-115) are on the lab's client subnet;
the gateway forwards them only to the server namespace, which drops them.
Internal modes (run inside a namespace by the bench itself): --sender, --bulk-server,
--bulk-client, --latency-client.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BULK_PORT = 8000
# First source port per sender (up to 15,000 flows each): below the ephemeral range
# (32768+), so the server-side drop rule never touches the bench's own connections.
SENDER_FIRST_PORTS = (1024, 16100)
SENDER_PORT_RANGE = "1024-31099"
# Traffic mixes for the pps runs: the payload of each segment of a flow, in order.
# requests: every segment one whole request on keep-alive connections, 100 per flow
# (100 * 87 B stays under inspect_depth, 16 KiB, so all are queued), 4,000 flows per
# sender: new flows are 1% of the segments, as on a gateway in steady state;
# body: one upload head, then 500-byte body segments (what most queued bytes of an
# upload are), 30 per flow. Enough segments for 3 s flat out.
_GET = b"GET /api/totals/last/3 HTTP/1.1\r\nHost: lab\r\n\r\n"
_POST = (b"POST /upload HTTP/1.1\r\nHost: lab\r\nContent-Type: application/octet-stream\r\n"
         b"Content-Length: 1000000\r\n\r\n")
MIXES: dict[str, tuple[list[bytes], int]] = {  # name -> (payloads, flows per sender)
    "requests": ([_GET] * 100, 4000),
    "body": ([_POST] + [b"\x5a" * 500] * 29, 6000),
}
THIS = Path(__file__).resolve()
# Each sender first opens its flows (the first segment of each) at this rate, before the
# measured window: a gateway's connections open over time. 8,000 new flows in a tenth
# of a second would measure a connection burst, not the steady state.
WARMUP_PER_SENDER = 5000.0


def warmup_seconds(mix: str) -> float:
    return MIXES[mix][1] / WARMUP_PER_SENDER


# ---------------------------------------------------------------- in-namespace modes


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _words(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def build_segments(sources: list[str], dst: str, first_port: int, flows: int,
                   payloads: list[bytes]) -> list[bytes]:
    """In-sequence TCP segments (ACK|PSH), round-major over the flows: round r of every
    flow carries payloads[r]; flow f comes from sources[f % len(sources)].

    Checksums are correct (the gateway's conntrack checks them): the constant
    part is summed once per payload and source, the source port and sequence
    number are added per segment.
    """
    daddr = socket.inet_aton(dst)
    # TCP header with sport=0, seq=0, checksum=0: the per-segment fields are summed separately.
    template = struct.pack("!HHIIBBHHH", 0, 80, 0, 1, 5 << 4, 0x18, 65535, 0, 0)
    segments = []
    offset = 0
    for payload in payloads:
        tcp_len = 20 + len(payload)
        per_source = []
        for src in sources:
            saddr = socket.inet_aton(src)
            ip_header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, 0, 0x4000, 64, 6,
                                    0, saddr, daddr)
            ip_header = ip_header[:10] + struct.pack(
                "!H", 0xFFFF - _fold(_words(ip_header))) + ip_header[12:]
            constant = _words(saddr + daddr + struct.pack("!BBH", 0, 6, tcp_len)) + _words(
                template) + _words(payload)
            per_source.append((ip_header, constant))
        seq = (1000 + offset) & 0xFFFFFFFF
        for f in range(flows):
            sport = first_port + f
            ip_header, constant = per_source[f % len(per_source)]
            check = 0xFFFF - _fold(constant + sport + (seq >> 16) + (seq & 0xFFFF))
            tcp = struct.pack("!HHI", sport, 80, seq) + template[8:16] + struct.pack(
                "!H", check) + template[18:]
            segments.append(ip_header + tcp + payload)
        offset += len(payload)
    return segments


def run_sender(cpu: int, src: str, dst: str, first_port: int, mix: str, seconds: float,
               rate: float = 0.0) -> None:
    """Pinned to `cpu` (one sender per CPU); prints what it sent. `rate` > 0 paces the
    sender to that many segments/s (in bursts of 256), else it sends flat out."""
    os.sched_setaffinity(0, {cpu})
    payloads, flows = MIXES[mix]
    # The queue balance hashes the address pair: 8 source addresses per sender (on the
    # client's subnet; nothing answers them) spread the flows over the queues.
    base = src.rsplit(".", 1)[0]
    sources = [f"{base}.{100 + 8 * cpu + k}" for k in range(8)]
    segments = build_segments(sources, dst, first_port, flows, payloads)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    print("READY", flush=True)
    sys.stdin.readline()  # the bench starts every sender at once
    target = (dst, 0)
    opened = time.monotonic()
    for index, segment in enumerate(segments[:flows]):  # the first round: opens each flow
        with contextlib.suppress(OSError):
            sock.sendto(segment, target)
        if index % 64 == 63:
            ahead = opened + index / WARMUP_PER_SENDER - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    ahead = opened + warmup_seconds(mix) - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
    sent = 0
    next_index = flows
    started = time.monotonic()
    end = started + seconds
    while next_index < len(segments) and time.monotonic() < end:
        for segment in segments[next_index:next_index + 256]:
            try:
                sock.sendto(segment, target)
                sent += 1
            except OSError:  # ENOBUFS under load: this segment was not offered
                pass
        next_index += 256
        if rate > 0:
            ahead = started + (next_index - flows) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    print(json.dumps({"sent": sent, "seconds": time.monotonic() - started}), flush=True)


def run_bulk_server(port: int) -> None:
    """`GET N` -> N bytes; `PUT N` + N bytes -> b"ok". One connection at a time, 120 s max."""
    chunk = b"\xa5" * (1 << 20)
    listener = socket.create_server(("0.0.0.0", port), reuse_port=True)
    listener.settimeout(120.0)
    print("READY", flush=True)
    buffer = bytearray(1 << 20)
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30.0)
            line = b""
            while not line.endswith(b"\n"):
                line += conn.recv(1)
            verb, size = line.split()
            left = int(size)
            if verb == b"GET":
                while left > 0:
                    left -= conn.send(chunk[: min(left, len(chunk))])
            else:
                while left > 0:
                    got = conn.recv_into(buffer, min(left, len(buffer)))
                    if not got:
                        break
                    left -= got
                conn.sendall(b"ok")


def run_bulk_client(addr: str, port: int, verb: str, size: int) -> None:
    buffer = bytearray(1 << 20)
    chunk = b"\x5a" * (1 << 20)
    started = time.perf_counter()
    with socket.create_connection((addr, port), timeout=30.0) as conn:
        conn.sendall(f"{verb} {size}\n".encode())
        left = size
        if verb == "GET":
            while left > 0:
                got = conn.recv_into(buffer, min(left, len(buffer)))
                if not got:
                    raise SystemExit(f"short download: {size - left} of {size}")
                left -= got
        else:
            while left > 0:
                left -= conn.send(chunk[: min(left, len(chunk))])
            if conn.recv(2) != b"ok":
                raise SystemExit("upload not acknowledged")
    print(json.dumps({"seconds": time.perf_counter() - started}))


def run_latency_client(addr: str, port: int, path: str, count: int, keepalive: bool) -> None:
    import http.client

    times = []
    conn = http.client.HTTPConnection(addr, port, timeout=5.0)
    for _ in range(count):
        if not keepalive:
            conn = http.client.HTTPConnection(addr, port, timeout=5.0)
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - started)
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status}")
        if not keepalive:
            conn.close()
    conn.close()
    print(json.dumps({"times": times}))


# ---------------------------------------------------------------- host side (the lab)

from tests.lab.demo import RunningAgent, start_agent  # noqa: E402
from tests.lab.netns import ADDR, Lab, Netns, lab_unavailable_reason, python_env  # noqa: E402


def write_config(workdir: Path, queues: list[int]) -> Path:
    intel = workdir / "intel"
    intel.mkdir(exist_ok=True)
    campaigns = THIS.parents[1] / "configs" / "campaigns"
    for name in ("rusty-flag.md", "rusty-flag.enrich.toml"):
        (intel / name).write_bytes((campaigns / name).read_bytes())
    config = workdir / f"agent-q{len(queues)}.toml"
    config.write_text(
        f'mode = "enforce"\n[intel]\nsources = [{json.dumps(str(intel))}]\n'
        f'[nft]\nhooks = ["forward"]\n[queue]\nnums = {json.dumps(queues)}\n'
        '[log]\noutput = "stdout"\nformat = "json"\n'
    )
    return config


def ns_python(ns: Netns, *argv: str, timeout: float = 120.0) -> dict[str, Any]:
    proc = ns.run([sys.executable, str(THIS), *argv], timeout=timeout, env=python_env())
    parsed: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return parsed


def spawn_ready(ns: Netns, argv: list[str], stdin: bool = False) -> subprocess.Popen[str]:
    proc = ns.popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True,
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, env=python_env())
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "READY":
        raise RuntimeError(f"{argv[:2]} did not start: {line!r}")
    return proc


def stop_group(proc: subprocess.Popen[Any]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            continue


def queue_sequences(gw: Netns) -> dict[int, int]:
    from agent.kernel.nfqueue_config import parse_queue_stats

    text = gw.run(["cat", "/proc/net/netfilter/nfnetlink_queue"], check=False).stdout
    return {s.queue_num: s.id_sequence for s in parse_queue_stats(text)}


def consumer_cpu_seconds(gw: Netns) -> float:
    """utime+stime of every process in the gateway namespace (the queue consumers)."""
    ticks = 0
    for pid in gw.pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class PpsResult:
    verdicted_pps: float
    offered_pps: float
    # Verdicts per CPU-second of the consumers: the per-packet cost without contention.
    per_cpu_second: float
    busiest_queue_share: float  # 1.0 with one queue; ~0.5 when the balance spreads flows


def measure_pps(lab: Lab, seconds: float, mix: str, rate: float = 0.0) -> PpsResult:
    """Start one sender per CPU at once; verdicts/s over the middle of the run."""
    # Fresh conntrack: flows of earlier runs (same 5-tuples) must not count against the depth.
    lab.gateway.run(["conntrack", "-F"], check=False)
    senders = []
    for cpu, first in enumerate(SENDER_FIRST_PORTS[: os.cpu_count() or 1]):
        senders.append(spawn_ready(lab.client, [
            str(THIS), "--sender", str(cpu), ADDR.client_v4, ADDR.server_v4, str(first),
            mix, str(seconds), str(rate / len(SENDER_FIRST_PORTS[: os.cpu_count() or 1]))],
            stdin=True))
    for proc in senders:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    time.sleep(warmup_seconds(mix) + seconds * 0.2)
    cpu0 = consumer_cpu_seconds(lab.gateway)
    before, t0 = queue_sequences(lab.gateway), time.monotonic()
    time.sleep(seconds * 0.6)
    after, t1 = queue_sequences(lab.gateway), time.monotonic()
    consumer_cpu = consumer_cpu_seconds(lab.gateway) - cpu0
    sent = 0.0
    for proc in senders:
        out, _ = proc.communicate(timeout=warmup_seconds(mix) + seconds + 30.0)
        report = json.loads(out.strip().splitlines()[-1])
        sent += report["sent"] / report["seconds"]
    per_queue = [after.get(q, 0) - before.get(q, 0) for q in after]
    verdicted = sum(per_queue)
    share = max(per_queue) / verdicted if verdicted else 0.0
    return PpsResult(verdicted / (t1 - t0), sent, verdicted / consumer_cpu if consumer_cpu > 0 else 0.0, share)


def drop_bench_segments_at_server(lab: Lab) -> None:
    """The server namespace discards the senders' segments at once (else it answers RSTs)."""
    rules = (
        "table inet rf_bench {\n chain pre {\n  type filter hook prerouting priority -300;\n"
        f"  tcp dport 80 tcp sport {SENDER_PORT_RANGE} drop\n }}\n}}\n"
    )
    lab.server.run(["nft", "-f", "-"], input=rules)


def install_ruleset_only(lab: Lab, config: Path) -> Callable[[], None]:
    """The agent's ruleset for `config` without the agent (the trivial-callback baseline)."""
    from agent.config import load_settings
    from agent.intel.loading import load_intel
    from agent.kernel.commands import CommandRunner
    from agent.kernel.nftables import NftablesAdapter, render_ruleset
    from agent.kernel.xt_queue import XtQueueRules
    from agent.service.daemon import ruleset_spec

    settings = load_settings(config)
    snapshot = load_intel(settings).snapshot
    assert snapshot is not None
    spec = ruleset_spec(settings, snapshot, "xt")
    runner = CommandRunner.in_netns(lab.gateway.name)
    NftablesAdapter(runner, spec.table).apply(render_ruleset(spec))
    XtQueueRules(runner).install(spec)

    def remove() -> None:
        XtQueueRules(runner).remove()
        NftablesAdapter(runner, spec.table).delete_table()

    return remove


def pps_trivial(lab: Lab, config: Path, queues: list[int], seconds: float, mix: str,
                rate: float = 0.0) -> PpsResult:
    remove = install_ruleset_only(lab, config)
    acceptors = [spawn_ready(lab.gateway, [str(THIS.parent / "bench_live_accept.py"), str(q)])
                 for q in queues]
    try:
        return measure_pps(lab, seconds, mix, rate)
    finally:
        for proc in acceptors:
            stop_group(proc)
        remove()


def pps_agent(lab: Lab, config: Path, seconds: float, workdir: Path, mix: str,
              rate: float = 0.0) -> PpsResult:
    agent = start_agent(lab, config, workdir / f"pps-{time.monotonic_ns()}.jsonl")
    try:
        return measure_pps(lab, seconds, mix, rate)
    finally:
        stop_agent(agent)


# A paced run "keeps up" when the consumer verdicts this share of what was offered: the
# rest went past the queue (fail-open on overload), uninspected.
KEEP_UP_SHARE = 0.98
SEARCH_STEPS = 6
SEARCH_SECONDS = 2.0


def sustained_pps(trial: Callable[[float], PpsResult], high: float) -> tuple[float, PpsResult | None]:
    """The highest offered rate (bisection in (0, high]) the consumer keeps up with: every
    queued segment verdicted, none let past the queue. Overdriven, the queue overflows
    and fail-open lets segments through uninspected; for a stateful inspector that also
    leaves holes in the streams it reassembles, so the overdriven figure understates it."""
    low, best = 0.0, None
    for _ in range(SEARCH_STEPS):
        rate = (low + high) / 2
        result = trial(rate)
        if result.offered_pps >= 0.9 * rate and result.verdicted_pps >= KEEP_UP_SHARE * result.offered_pps:
            low, best = rate, result
        else:
            high = rate
    return low, best


def stop_agent(agent: RunningAgent) -> None:
    if agent.stop(timeout=15.0) is None:
        stop_group(agent.proc)


# none: a bare forwarding gateway (no conntrack in its namespace); conntrack: the same with
# one nft rule that needs conntrack (what the agent's ruleset also turns on); agent: enforcing.
SETUPS = ("none", "conntrack", "agent")


def conntrack_only(lab: Lab, on: bool) -> None:
    if on:
        rules = ("table inet rf_bench_ct {\n chain bench_fwd {\n  type filter hook forward priority 0;\n"
                 "  ct state established,related counter accept\n }\n}\n")
        lab.gateway.run(["nft", "-f", "-"], input=rules)
    else:
        lab.gateway.run(["nft", "delete", "table", "inet", "rf_bench_ct"], check=False)


def goodput(lab: Lab, size: int, runs: int) -> dict[str, float]:
    """MB/s per direction: the best of `runs` transfers (a 200 MB transfer takes ~0.2 s, so
    one scheduling hiccup from a neighbour's load swings a single run by 2x)."""
    out = {}
    for verb, label in (("GET", "download"), ("PUT", "upload")):
        best = 0.0
        for _ in range(runs):
            report = ns_python(lab.client, "--bulk-client", ADDR.server_v4, str(BULK_PORT),
                               verb, str(size))
            best = max(best, size / report["seconds"] / 1e6)
        out[label] = best
    return out


def latency(lab: Lab, count: int) -> dict[str, list[float]]:
    out = {}
    for keepalive, label in ((False, "fresh"), (True, "keep-alive")):
        report = ns_python(lab.client, "--latency-client", ADDR.server_v4, "80",
                           "/api/totals/last/3", str(count), "1" if keepalive else "0")
        out[label] = report["times"]
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_bench(args: argparse.Namespace) -> int:
    if (reason := lab_unavailable_reason()) is not None:
        print(f"skipped: {reason}")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="rf-bench-live-"))
    size = args.bulk_mb * 1_000_000
    pps: dict[str, list[PpsResult]] = {}
    sustained: dict[str, tuple[float, PpsResult | None]] = {}
    bulk: dict[str, list[float]] = {}
    lat: dict[str, list[float]] = {}
    with Lab() as lab:
        if lab.isolation_problems():
            raise SystemExit(f"lab not isolated: {lab.isolation_problems()}")
        lab.start_server_app()
        drop_bench_segments_at_server(lab)
        bulk_server = None if args.skip_bulk else spawn_ready(
            lab.server, [str(THIS), "--bulk-server", str(BULK_PORT)])
        configs = {n: write_config(workdir, list(range(n))) for n in (1, 2)}
        for rep in range(args.repeat):
            print(f"round {rep + 1}/{args.repeat} (load {os.getloadavg()[0]:.2f})", flush=True)
            for mix in MIXES if not args.skip_pps else ():
                for n, config in configs.items():
                    pps.setdefault(f"{mix} trivial q{n}", []).append(
                        pps_trivial(lab, config, list(range(n)), args.seconds, mix))
                    pps.setdefault(f"{mix} agent q{n}", []).append(
                        pps_agent(lab, config, args.seconds, workdir, mix))
            for mix in MIXES if not args.skip_pps and rep == 0 and args.sustained else ():
                for n, config in configs.items():
                    high = 1.25 * median([r.verdicted_pps for r in pps[f"{mix} trivial q{n}"]])
                    queues = list(range(n))
                    for consumer in ("trivial", "agent"):
                        def trial(rate: float, consumer: str = consumer, config: Path = config,
                                  queues: list[int] = queues, mix: str = mix) -> PpsResult:
                            if consumer == "trivial":
                                return pps_trivial(lab, config, queues, SEARCH_SECONDS, mix, rate)
                            return pps_agent(lab, config, SEARCH_SECONDS, workdir, mix, rate)
                        sustained[f"{mix} {consumer} q{n}"] = sustained_pps(trial, high)
            # A-B-C-C-B-A, rotated each round: the machine's load drifts (neighbours), and a
            # mirrored order cancels a linear drift; the first setup after the pps runs varies.
            order = SETUPS[rep % len(SETUPS):] + SETUPS[:rep % len(SETUPS)]
            for label in (order + order[::-1]) if not args.skip_bulk else ():
                agent = start_agent(lab, configs[2], workdir / f"run-{rep}.jsonl") \
                    if label == "agent" else None
                if label == "conntrack":
                    conntrack_only(lab, True)
                try:
                    for direction, mbps in goodput(lab, size, args.bulk_runs).items():
                        bulk.setdefault(f"{direction} {label}", []).append(mbps)
                    for kind, times in latency(lab, args.requests).items():
                        lat.setdefault(f"{kind} {label} p50", []).append(pct(times, 0.5))
                        lat.setdefault(f"{kind} {label} p99", []).append(pct(times, 0.99))
                finally:
                    if agent is not None:
                        stop_agent(agent)
                    if label == "conntrack":
                        conntrack_only(lab, False)
        if bulk_server is not None:
            stop_group(bulk_server)
    report(pps, bulk, lat, args, sustained)
    return 0


def report(pps: dict[str, list[PpsResult]], bulk: dict[str, list[float]],
           lat: dict[str, list[float]], args: argparse.Namespace,
           sustained: dict[str, tuple[float, PpsResult | None]] | None = None) -> None:
    print(f"\nmachine: {os.cpu_count()} CPUs, kernel {os.uname().release}, "
          f"Python {sys.version.split()[0]}; median of {args.repeat} rounds "
          "(goodput, latency: of 2 visits per round)")
    if pps:
        report_pps(pps, args)
    if sustained:
        report_sustained(sustained)
    if not bulk:
        return
    print(f"\nbulk goodput, {args.bulk_mb} MB over port {BULK_PORT} (MB/s, best of "
          f"{args.bulk_runs} per visit)")
    print(f"{'direction':<12}" + "".join(f"{label:>12}" for label in SETUPS)
          + f"{'agent/none':>12}{'agent/ct':>10}")
    for direction in ("download", "upload"):
        cells = [median(bulk[f"{direction} {label}"]) for label in SETUPS]
        print(f"{direction:<12}" + "".join(f"{c:>12,.0f}" for c in cells)
              + f"{cells[-1] / cells[0]:>12.2f}{cells[-1] / cells[1]:>10.2f}")
    print(f"\nHTTP latency, {args.requests} sequential GETs of the lab app (ms)")
    print(f"{'connection':<12}" + "".join(f"{q + ' ' + label:>16}" for q in ("p50", "p99")
                                          for label in SETUPS))
    for kind in ("fresh", "keep-alive"):
        cells = [median(lat[f"{kind} {label} {q}"]) * 1000
                 for q in ("p50", "p99") for label in SETUPS]
        print(f"{kind:<12}" + "".join(f"{c:>16.2f}" for c in cells))


def report_sustained(sustained: dict[str, tuple[float, PpsResult | None]]) -> None:
    print(f"\nNFQUEUE packets/s kept up with (paced senders, bisection in {SEARCH_STEPS} steps of "
          f"{SEARCH_SECONDS:g} s; kept up = at least {KEEP_UP_SHARE:.0%} of offered segments "
          "verdicted, none past the queue)")
    print(f"{'mix':<9}{'consumer':<12}{'rate':>10}{'verdicted/s':>12}{'vs trivial':>11}"
          f"{'per CPU-s':>11}{'vs trivial':>11}")
    for mix in MIXES:
        for n in (1, 2):
            _, base = sustained.get(f"{mix} trivial q{n}", (0.0, None))
            for consumer in ("trivial", "agent"):
                rate, result = sustained.get(f"{mix} {consumer} q{n}", (0.0, None))
                if result is None or base is None:
                    print(f"{mix:<9}{consumer + ' q' + str(n):<12}{'none kept up':>22}")
                    continue
                print(f"{mix:<9}{consumer + ' q' + str(n):<12}{rate:>10,.0f}"
                      f"{result.verdicted_pps:>12,.0f}{result.verdicted_pps / base.verdicted_pps:>10.2f}x"
                      f"{result.per_cpu_second:>11,.0f}"
                      f"{result.per_cpu_second / base.per_cpu_second:>10.2f}x")


def report_pps(pps: dict[str, list[PpsResult]], args: argparse.Namespace) -> None:
    print(f"\nNFQUEUE packets/s ({args.seconds:g} s per run; one raw sender per CPU)")
    print(f"{'mix':<9}{'consumer':<12}{'verdicted/s':>12}{'offered/s':>11}{'vs trivial':>11}"
          f"{'per CPU-s':>11}{'vs trivial':>11}{'top queue':>10}  runs (verdicted/s)")
    for mix in MIXES:
        for n in (1, 2):
            base = median([r.verdicted_pps for r in pps[f"{mix} trivial q{n}"]])
            base_cpu = median([r.per_cpu_second for r in pps[f"{mix} trivial q{n}"]])
            for label in (f"trivial q{n}", f"agent q{n}"):
                runs = pps[f"{mix} {label}"]
                value = median([r.verdicted_pps for r in runs])
                per_cpu = median([r.per_cpu_second for r in runs])
                offered = median([r.offered_pps for r in runs])
                print(f"{mix:<9}{label:<12}{value:>12,.0f}{offered:>11,.0f}"
                      f"{value / base:>10.2f}x{per_cpu:>11,.0f}{per_cpu / base_cpu:>10.2f}x"
                      f"{median([r.busiest_queue_share for r in runs]):>10.0%}  "
                      + " ".join(f"{r.verdicted_pps / 1000:.1f}k" for r in runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bulk-mb", type=int, default=200)
    parser.add_argument("--bulk-runs", type=int, default=3,
                        help="transfers per setup visit (best of)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--skip-pps", action="store_true", help="goodput and latency only")
    parser.add_argument("--skip-bulk", action="store_true", help="packets/s only")
    parser.add_argument("--sustained", action=argparse.BooleanOptionalAction, default=True,
                        help="also search the highest rate each consumer keeps up with (round 1)")
    parser.add_argument("--sender", nargs=7, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--bulk-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bulk-client", nargs=4, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--latency-client", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        cpu, src, dst, first, mix, seconds, rate = args.sender
        run_sender(int(cpu), src, dst, int(first), mix, float(seconds), float(rate))
        return 0
    if args.bulk_server:
        run_bulk_server(args.bulk_server)
        return 0
    if args.bulk_client:
        addr, port, verb, size = args.bulk_client
        run_bulk_client(addr, int(port), verb, int(size))
        return 0
    if args.latency_client:
        addr, port, path, count, keepalive = args.latency_client
        run_latency_client(addr, int(port), path, int(count), keepalive == "1")
        return 0
    return run_bench(args)


if __name__ == "__main__":
    raise SystemExit(main())
