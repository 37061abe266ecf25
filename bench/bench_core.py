"""Throughput of the decision core and of `replay`, against Suricata on the same pcap (issue 3).

Prints, for the mixed pcap made by make_mixed_pcap.py (generated when missing):
- core: packets/s of `DecisionCore.decide` over frames read beforehand, wall and
  CPU time (`time.process_time`), best of N runs, each on a fresh core;
- replay: `rustyflag-agent replay FILE --json > /dev/null` end to end, wall time
  and the child's CPU time, best of N;
- suricata: `suricata -r FILE -k none` with a minimal config and one rule, wall
  time, best of N (or why it could not run);
- fresh flows: one whole GET per new flow (the live worst case: every queued
  packet is a request), microseconds of CPU per packet, with the default GC,
  with `gc.freeze()` after building the core, with a larger gen-0 threshold
  too, and with GC off (reference);
- IOA scaling: per-request cost of `Detector.request_reasons` and core packets/s
  with the Rusty Flag page alone (2 IOAs) and with a synthetic page of 7,200
  File IOAs added (realistic VulDB-like paths).

    python bench/bench_core.py [--pcap FILE] [--runs 3] [--skip-replay] [--skip-suricata]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import Settings, load_settings
from agent.core.decision import PacketMeta
from agent.core.decode import Packet, decode_ip
from agent.core.engine import DecisionCore
from agent.core.flows import FlowTable
from agent.core.http import HttpRequest, HttpRequestStream
from agent.intel.loading import load_intel
from agent.intel.model import IOAType
from agent.intel.snapshot import IntelSnapshot
from agent.pcap import iter_frames
from agent.wiring import build_core
from bench.make_mixed_pcap import IpBuilder

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
SAMPLES = REPO.parent / "shared" / "samples" / "vuldb"
AGENT = Path(sys.executable).parent / "rustyflag-agent"
HTTP_PORTS = frozenset({80, 8080})


@dataclass(frozen=True, slots=True)
class Timing:
    wall: float
    cpu: float


def best_of(runs: int, once: Callable[[], Timing]) -> Timing:
    timings = [once() for _ in range(runs)]
    return Timing(min(t.wall for t in timings), min(t.cpu for t in timings))


def settings() -> Settings:
    return load_settings(REPO / "configs" / "agent.toml")


def snapshot_with(*pages: Path) -> IntelSnapshot:
    load = load_intel(settings(), pages)
    assert load.snapshot is not None, [str(p) for p in load.errors]
    return load.snapshot


# -- the pcap -------------------------------------------------------------------------------


def read_frames(path: Path) -> list[tuple[bytes, PacketMeta]]:
    return [
        (frame.l3, PacketMeta(timestamp=frame.timestamp, packet_no=frame.number))
        for frame in iter_frames(path)
        if frame.l3 is not None
    ]


def http_requests(frames: list[tuple[bytes, PacketMeta]]) -> list[HttpRequest]:
    """The HTTP requests in the pcap, reassembled and parsed as the core does."""
    table = FlowTable(max_flows=1 << 20)
    streams: dict[int, HttpRequestStream] = {}
    requests: list[HttpRequest] = []
    for data, meta in frames:
        packet = decode_ip(data)
        if not isinstance(packet, Packet) or packet.proto != 6:
            continue
        update = table.feed(packet, meta.timestamp)
        if update.to_server and update.new_data and update.flow.key.dest_port in HTTP_PORTS:
            stream = streams.setdefault(update.flow.id, HttpRequestStream(max_body=16384))
            requests.extend(stream.feed(update.new_data))
    return requests


# -- core and replay ------------------------------------------------------------------------


def time_core(
    make_core: Callable[[], DecisionCore], frames: list[tuple[bytes, PacketMeta]], *, freeze: bool
) -> Timing:
    core = make_core()
    gc.collect()
    if freeze:
        gc.freeze()
    decide = core.decide
    wall, cpu = time.perf_counter(), time.process_time()
    for data, meta in frames:
        decide(data, meta)
    timing = Timing(time.perf_counter() - wall, time.process_time() - cpu)
    if freeze:
        gc.unfreeze()
    return timing


def verdicts(core: DecisionCore, frames: list[tuple[bytes, PacketMeta]]) -> Counter[str]:
    return Counter(core.decide(data, meta).verdict.value for data, meta in frames)


def time_command(command: list[str]) -> Timing:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True, cwd=REPO)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu)


# -- Suricata -------------------------------------------------------------------------------

_SURICATA_YAML = """%YAML 1.1
---
default-rule-path: {dir}
rule-files: [bench.rules]
default-log-dir: {dir}
outputs:
  - eve-log:
      enabled: yes
      filetype: regular
      filename: eve.json
      types: [alert]
app-layer:
  protocols:
    http: {{enabled: yes}}
    tls: {{enabled: yes}}
    dns: {{udp: {{enabled: yes}}, tcp: {{enabled: yes}}}}
stream:
  reassembly: {{depth: 16kb}}
"""
_SURICATA_RULES = (
    'alert http any any -> any any (msg:"srv.go"; http.uri; content:"srv.go"; nocase; '
    "sid:1000001; rev:1;)\n"
    'drop ip any any -> 78.135.73.140 any (msg:"Rusty Flag IOC"; sid:1000002; rev:1;)\n'
)


def suricata(pcap: Path, runs: int) -> tuple[str, Timing | None]:
    binary = shutil.which("suricata")
    if binary is None:
        return "not installed (no suricata package reachable from this machine's apt mirror)", None
    version = subprocess.run(
        [binary, "-V"], check=False, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-suricata-") as tmp:
        (Path(tmp) / "bench.rules").write_text(_SURICATA_RULES)
        config = Path(tmp) / "suricata.yaml"
        config.write_text(_SURICATA_YAML.format(dir=tmp))
        command = [binary, "-c", str(config), "-r", str(pcap), "-k", "none", "-l", tmp]
        timing = best_of(runs, lambda: time_command(command))
    return version, timing


# -- the synthetic 7,200-File-IOA campaign --------------------------------------------------

_FILE_ROW = re.compile(r"^\d+ \| File \| `([^`]+)` \|", re.MULTILINE)
_DIRS = ("admin", "Administrator/PHP", "adminapi", "api/v1", "api/v2", "cgi-bin", "include",
         "modules", "plugins", "wp-content/plugins", "system", "manager", "portal", "user",
         "vendor", "backend", "dashboard/ajax", "classes", "controller", "goform")  # fmt: skip
_VERBS = ("add", "edit", "delete", "update", "view", "manage", "export", "import", "upload",
          "reset", "list", "save", "search", "print", "download", "approve")  # fmt: skip
_NOUNS = ("activity", "user", "product", "category", "student", "appointment", "distributor",
          "expense", "invoice", "order", "report", "setting", "profile", "nurse", "song",
          "ticket", "customer", "supplier", "employee", "booking")  # fmt: skip
_EXTS = (".php", ".do", ".jsp", ".asp", ".aspx", ".cgi", ".action", "")


def synthetic_page(count: int, seed: int = 7) -> str:
    """A VulDB-style page with `count` distinct File IOAs, seeded with the samples' real ones."""
    paths: list[str] = []
    seen: set[str] = set()
    for sample in sorted(SAMPLES.glob("*.md")):
        for value in _FILE_ROW.findall(sample.read_text()):
            if value not in seen and "srv.go" not in value:
                seen.add(value)
                paths.append(value)
    rng = random.Random(seed)
    while len(paths) < count:
        name = f"{rng.choice(_VERBS)}{rng.choice(('_', '-', ''))}{rng.choice(_NOUNS)}"
        if rng.random() < 0.3:
            name += rng.choice(("s", "_list", "_action", "2", "_new"))
        path = f"/{rng.choice(_DIRS)}/{name}{rng.choice(_EXTS)}"
        if path not in seen:
            seen.add(path)
            paths.append(path)
    rows = "\n".join(
        f"{index} | File | `{path}` | {rng.choice(('High', 'Medium', 'Low'))}"
        for index, path in enumerate(paths[:count], 1)
    )
    return (
        "# Synthetic Files - Cyber Threat Intelligence\n\n"
        "## TTP - Tactics, Techniques, Procedures\n\n"
        "ID | Technique | Weakness | Description | Confidence\n"
        "-- | --------- | -------- | ----------- | ----------\n"
        "1 | T1006 | CWE-22, CWE-24 | Path Traversal | High\n\n"
        "## IOA - Indicator of Attack\n\n"
        "ID | Type | Indicator | Confidence\n"
        "-- | ---- | --------- | ----------\n"
        f"{rows}\n"
    )


def time_requests(core: DecisionCore, requests: list[HttpRequest], repeat: int) -> Timing:
    reasons_for = core.detector.request_reasons
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        for request in requests:
            reasons_for(request)
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


# -- fresh flows, one GET each ---------------------------------------------------------------

_FRESH_GET = (
    b"GET /api/totals/last/3 HTTP/1.1\r\nHost: 10.0.0.2\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
)


def fresh_get_frames(count: int) -> list[tuple[bytes, PacketMeta]]:
    """One in-sequence GET segment per new flow (no handshake), as the live bench queues."""
    ip = IpBuilder()
    return [
        (
            ip.tcp(bytes((10, 1, i >> 8 & 255, i & 255)), bytes((10, 0, 0, 2)),
                   20000 + i % 40000, 80, 1000, 1, 0x18, _FRESH_GET),
            PacketMeta(timestamp=1.0 + i * 1e-5),
        )
        for i in range(count)
    ]  # fmt: skip


# -- main -----------------------------------------------------------------------------------


def _pps(count: int, timing: Timing) -> str:
    return f"{count / timing.wall:>9,.0f} pkt/s wall ({timing.wall:.2f} s), " \
           f"{count / timing.cpu:>9,.0f} pkt/s CPU ({timing.cpu:.2f} s)"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pcap", type=Path, default=OUT / "mixed.pcap")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-replay", action="store_true")
    parser.add_argument("--skip-suricata", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args(argv)
    if not args.pcap.exists():
        subprocess.run([sys.executable, str(REPO / "bench" / "make_mixed_pcap.py"),
                        "--out", str(args.pcap)], check=True)  # fmt: skip

    print(f"python {sys.version.split()[0]} ({sys.executable}); load: {os.getloadavg()}")
    frames = read_frames(args.pcap)
    count = len(frames)
    print(f"pcap {args.pcap.name}: {count} IP frames")

    default = snapshot_with()
    config = settings()

    def make_default() -> DecisionCore:
        return build_core(config, default)

    print(f"verdicts: {dict(verdicts(make_default(), frames))}")
    plain = best_of(args.runs, lambda: time_core(make_default, frames, freeze=False))
    print(f"core (decide over pre-read frames):  {_pps(count, plain)}")
    frozen = best_of(args.runs, lambda: time_core(make_default, frames, freeze=True))
    print(f"core, gc.freeze() after build:       {_pps(count, frozen)}")
    gc.disable()
    no_gc = best_of(args.runs, lambda: time_core(make_default, frames, freeze=False))
    gc.enable()
    print(f"core, GC disabled (reference only):  {_pps(count, no_gc)}")

    if not args.skip_replay:
        command = [str(AGENT), "replay", str(args.pcap), "--json"]
        replay = best_of(args.runs, lambda: time_command(command))
        print(f"replay end to end (--json >/dev/null): {_pps(count, replay)}")
    if not args.skip_suricata:
        version, timing = suricata(args.pcap, args.runs)
        if timing is None:
            print(f"suricata: {version}")
        else:
            print(f"suricata {version} -r -k none: {_pps(count, timing)}")

    fresh = fresh_get_frames(30_000)
    default_threshold = gc.get_threshold()
    for label, freeze, threshold in (
        ("default GC", False, default_threshold),
        ("gc.freeze() after build", True, default_threshold),
        ("gc.freeze(), threshold 50000/20/100", True, (50_000, 20, 100)),
        ("GC off (reference)", False, None),
    ):
        if threshold is None:
            gc.disable()
        else:
            gc.set_threshold(*threshold)
        timing = best_of(args.runs, partial(time_core, make_default, fresh, freeze=freeze))
        gc.enable()
        gc.set_threshold(*default_threshold)
        print(f"fresh flows, one GET each, {label}: {timing.cpu / len(fresh) * 1e6:.1f} us/packet "
              f"CPU ({len(fresh) / timing.cpu:,.0f} pkt/s)")  # fmt: skip

    if not args.skip_scaling:
        page = OUT / "synthetic-7200-files.md"
        page.write_text(synthetic_page(7200))
        big = snapshot_with(page)
        files = len(big.ioas(IOAType.FILE))
        requests = http_requests(frames)
        repeat = 3
        small_core, big_core = make_default(), build_core(config, big)
        print(f"IOA scaling: {len(requests)} HTTP requests x {repeat}; File IOAs 1 vs {files}")
        small = best_of(args.runs, lambda: time_requests(small_core, requests, repeat))
        large = best_of(args.runs, lambda: time_requests(big_core, requests, repeat))
        n = len(requests) * repeat
        print(f"  request_reasons, Rusty Flag only:  {small.cpu / n * 1e6:6.2f} us/request CPU "
              f"({small.wall / n * 1e6:6.2f} wall)")  # fmt: skip
        print(f"  request_reasons, + {files} File IOAs: {large.cpu / n * 1e6:6.2f} us/request CPU "
              f"({large.wall / n * 1e6:6.2f} wall)  ratio {large.cpu / small.cpu:.2f}x")  # fmt: skip

        def make_big() -> DecisionCore:
            return build_core(config, big)

        big_frames = best_of(args.runs, lambda: time_core(make_big, frames, freeze=False))
        print(f"  core, + {files} File IOAs:  {_pps(count, big_frames)}  "
              f"ratio {big_frames.cpu / plain.cpu:.2f}x; verdicts "
              f"{dict(verdicts(make_big(), frames))}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
