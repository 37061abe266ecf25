"""Benchmark: NflogReader throughput (messages/s) and losses under a UDP flood.

Inside a throwaway namespace (lo only): an nft rule logs every UDP datagram to
127.0.0.9 to an NFLOG group; a sender floods N datagrams while the reader
(another process in the namespace) drains and parses them.

Usage: bench_nflog.py [--count 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
GROUP = 21
RULESET = f"""table inet rf_bench_nflog {{
\tchain out {{
\t\ttype filter hook output priority 0; policy accept;
\t\tip daddr 127.0.0.9 udp dport 9 log prefix "rf:bench" group {GROUP}
\t}}
}}
"""

READER = r"""
import json, select, sys, time
sys.path.insert(0, sys.argv[1])
from agent.kernel.nflog import NflogReader
count = int(sys.argv[2])
with NflogReader(int(sys.argv[3]), copy_range=128) as reader:
    print("ready", flush=True)
    got = 0
    first = last = None
    idle_deadline = time.monotonic() + 30
    while got < count and time.monotonic() < idle_deadline:
        ready, _, _ = select.select([reader], [], [], 3.0)
        if not ready:
            if first is not None:
                break  # the flood is over
            continue
        batch = reader.read_messages(4096)
        if batch and first is None:
            first = time.perf_counter()
        got += len(batch)
        last = time.perf_counter()
    elapsed = (last - first) if first and last else 0.0
    print(json.dumps({"received": got, "seconds": elapsed, "enobufs": reader.lost_overruns}))
"""

SENDER = r"""
import socket, sys, time
count = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * 64
started = time.perf_counter()
for _ in range(count):
    s.sendto(payload, ("127.0.0.9", 9))
print(count / (time.perf_counter() - started))
"""


def parse_rate(rounds: int = 2000) -> float:
    """Userspace ceiling: parse_nflog_batch on 64-message datagrams (128-byte payloads)."""
    import struct
    import time

    sys.path.insert(0, REPO)
    from agent.kernel.netlink import attr, nfnl_message
    from agent.kernel.nflog import (
        NFULA_MARK,
        NFULA_PACKET_HDR,
        NFULA_PAYLOAD,
        NFULA_PREFIX,
        PACKET_MSG_TYPE,
        parse_nflog_batch,
    )

    message = nfnl_message(
        PACKET_MSG_TYPE, 0, 0, family=2, res_id=GROUP,
        attrs=attr(NFULA_PACKET_HDR, struct.pack("!HBx", 0x0800, 2))
        + attr(NFULA_MARK, struct.pack("!I", 0))
        + attr(NFULA_PREFIX, b"rf:ioc_v4:dst\0")
        + attr(NFULA_PAYLOAD, b"E" * 128),
    )
    datagram = message * 64
    started = time.perf_counter()
    for _ in range(rounds):
        parse_nflog_batch(datagram)
    return rounds * 64 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    args = parser.parse_args()
    ns = f"rf-k-bnflog-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        if subprocess.run(["ip", "-n", ns, "route", "get", "8.8.8.8"],
                          capture_output=True, check=False).returncode == 0:
            raise SystemExit("namespace has a route out; refusing to run")
        exec_ns = ["ip", "netns", "exec", ns]
        subprocess.run([*exec_ns, "nft", "-f", "-"], input=RULESET, text=True, check=True)
        reader = subprocess.Popen(
            [*exec_ns, sys.executable, "-c", READER, REPO, str(args.count), str(GROUP)],
            stdout=subprocess.PIPE, text=True,
        )
        assert reader.stdout is not None
        if reader.stdout.readline().strip() != "ready":
            raise SystemExit("reader did not start")
        sent_rate = float(subprocess.run(
            [*exec_ns, sys.executable, "-c", SENDER, str(args.count)],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout)
        out, _ = reader.communicate(timeout=120)
        result = json.loads(out.strip().splitlines()[-1])
        rate = result["received"] / result["seconds"] if result["seconds"] else 0.0
        print(f"sent {args.count:,} datagrams at {sent_rate:,.0f}/s; reader got "
              f"{result['received']:,} ({result['received'] / args.count:.1%}) at "
              f"{rate:,.0f} msg/s, ENOBUFS events {result['enobufs']}")
        print(f"parse_nflog_batch alone: {parse_rate():,.0f} msg/s")
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


if __name__ == "__main__":
    main()
