"""Benchmark: loading and atomically replacing the IOC sets with nft 1.0.6.

For 10k, 256k and 1M random public-looking IPv4 addresses (fixed seed):
- render: Python time to render the text (render_ruleset / render_set_update);
- load: `nft -f` of the whole ruleset with the set filled (first apply);
- replace: `nft -f` of the flush + add transaction with a different set;
- max RSS of the `nft` process (/usr/bin/time %M);
- kernel memory: slab + vmalloc growth over the first load (host-wide, so noisy).
Also the same replace as one raw netlink batch (agent.kernel.nft_batch).
Variants: chunk size (elements per `add element` line), stdin vs file, set size hint.
Runs inside a throwaway network namespace with no links but lo (no route out).

Usage: bench_nft_sets.py [--sizes 10000,256000,1000000] [--variants]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.kernel.nftables import RulesetSpec, render_ruleset, render_set_update

TARGET_REPLACE_S = {256_000: 1.5, 1_000_000: 5.0}


def public_v4(count: int, seed: int) -> tuple[ipaddress.IPv4Address, ...]:
    """Distinct random addresses outside private, reserved and multicast space."""
    rng = random.Random(seed)
    seen: set[int] = set()
    out: list[ipaddress.IPv4Address] = []
    while len(out) < count:
        value = rng.randrange(1 << 24, 224 << 24)
        if value in seen:
            continue
        addr = ipaddress.IPv4Address(value)
        if not addr.is_global:
            continue
        seen.add(value)
        out.append(addr)
    return tuple(out)


def nft_run(ns: str, text: str, via_file: bool) -> tuple[float, int, float]:
    """Apply `text` with nft inside `ns`; (seconds, max RSS of nft in KiB, CPU seconds).

    CPU time (user + sys, the kernel's insert included: nft's sendmsg runs
    the batch) does not depend on how busy the machine is; wall time does.

    RSS comes from /usr/bin/time: a child forked from this (large) Python
    process would report the parent's RSS as its own high-water mark.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as fh:
        fh.write(text)
        path = fh.name
    rss_file = path + ".rss"
    try:
        argv = ["ip", "netns", "exec", ns, "/usr/bin/time", "-f", "%M %U %S", "-o", rss_file,
                "nft", "-f", path if via_file else "-"]
        with open(path, "rb") as stdin:
            started = time.perf_counter()
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL if via_file else stdin,
                                  capture_output=True, check=False)
            elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"nft failed: {proc.stderr.decode()[:2000]}")
        rss, user, system = Path(rss_file).read_text().split()[-3:]
        return elapsed, int(rss), float(user) + float(system)
    finally:
        os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(rss_file)


def kernel_memory_kib() -> int:
    """Slab + vmalloc in use, host-wide: a rough (noisy) view of what the sets cost the kernel."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(fields["Slab"].split()[0]) + int(fields["VmallocUsed"].split()[0])


def make_namespace() -> str:
    ns = f"rf-k-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    route = subprocess.run(["ip", "-n", ns, "route", "get", "8.8.8.8"],
                           check=False, capture_output=True)
    if route.returncode == 0:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
        raise SystemExit(f"namespace {ns} has a route out; refusing to run")
    return ns


def bench_one(ns: str, size: int, spec_base: RulesetSpec, via_file: bool, label: str) -> None:
    first = public_v4(size, seed=1)
    second = public_v4(size, seed=2)
    spec = dataclasses.replace(spec_base, exact_v4=first)
    t0 = time.perf_counter()
    full_text = render_ruleset(spec)
    render_full = time.perf_counter() - t0
    kernel_before = kernel_memory_kib()
    load_s, load_rss, _load_cpu = nft_run(ns, full_text, via_file)
    kernel_delta = kernel_memory_kib() - kernel_before
    replace_spec = dataclasses.replace(spec_base, exact_v4=second)
    t0 = time.perf_counter()
    update_text = render_set_update(replace_spec)
    render_update = time.perf_counter() - t0
    replace_s, replace_rss, replace_cpu = nft_run(ns, update_text, via_file)
    count = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "set", "inet", "rustyflag", "ioc_v4"],
        capture_output=True, text=True, check=True,
    ).stdout.count(".") // 3
    target = TARGET_REPLACE_S.get(size)
    verdict = "" if target is None else (" OK" if replace_s < target else f" MISS(<{target}s)")
    print(
        f"{label:<28} n={size:>9,} text={len(update_text) / 1e6:6.1f}MB "
        f"render={render_full:5.2f}s/{render_update:5.2f}s "
        f"load={load_s:6.2f}s rss={load_rss / 1024:7.1f}MiB "
        f"replace={replace_s:6.2f}s (cpu {replace_cpu:5.2f}s) rss={replace_rss / 1024:7.1f}MiB "
        f"elements={count:,} kernel~{kernel_delta / 1024:+.0f}MiB{verdict}",
        flush=True,
    )


NETLINK_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from bench.bench_nft_sets import public_v4
from agent.kernel.nftables import RulesetSpec
from agent.kernel.nft_batch import send_batch, set_update_batch
size = int(sys.argv[2])
timings = {}
for label, seed in (("load", 1), ("replace", 2)):
    spec = RulesetSpec(queue_backend="xt", exact_v4=public_v4(size, seed))
    t0 = time.perf_counter()
    batch = set_update_batch(spec)
    t1 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    send_batch(batch)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    t2 = time.perf_counter()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    timings[label] = (t1 - t0, t2 - t1, len(batch.data), cpu)
print(json.dumps(timings))
"""


def bench_netlink(ns: str, size: int, size_hint: int = 0) -> None:
    """Same replace via agent.kernel.nft_batch (raw netlink batch, no nft process)."""
    empty = RulesetSpec(queue_backend="xt", set_size_hint=size_hint)
    nft_run(ns, render_ruleset(empty), via_file=False)  # the table, empty sets
    repo = str(Path(__file__).resolve().parents[1])
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, "/usr/bin/time", "-f", "%M", "-o", rss.name,
             sys.executable, "-c", NETLINK_CHILD, repo, str(size)],
            capture_output=True, text=True, check=True,
        )
        rss_kib = int(Path(rss.name).read_text().split()[-1])
    timings = json.loads(proc.stdout)
    build, send, nbytes, send_cpu = timings["replace"]
    target = TARGET_REPLACE_S.get(size)
    total = build + send
    verdict = "" if target is None else (" OK" if total < target else f" MISS(<{target}s)")
    print(
        f"{'netlink batch' + (f' size {size_hint}' if size_hint else ''):<28} n={size:>9,} batch={nbytes / 1e6:5.1f}MB "
        f"build={build:5.2f}s load-send={timings['load'][1]:5.2f}s replace-send={send:5.2f}s "
        f"(cpu {send_cpu:5.2f}s) replace total={total:5.2f}s python max RSS={rss_kib / 1024:7.1f}MiB "
        f"(incl. {2 * size:,} address objects){verdict}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,256000,1000000")
    parser.add_argument("--variants", action="store_true", help="also try chunk sizes etc.")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ns = make_namespace()
    # A SIGTERM still deletes the namespace (via the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        base = RulesetSpec(queue_backend="xt")  # xt: renders on kernels without nft queue
        for size in sizes:
            bench_one(ns, size, base, via_file=False, label="default (stdin, 4096/line)")
        for size in sizes:
            bench_netlink(ns, size)
        if args.variants:
            for size in sizes:
                for chunk in (256, 1024, 16384, 65536):
                    spec = dataclasses.replace(base, chunk_elements=chunk)
                    bench_one(ns, size, spec, via_file=False, label=f"chunk {chunk}/line")
                bench_one(ns, size, base, via_file=True, label="nft -f FILE")
                spec = dataclasses.replace(base, set_size_hint=2 * size)
                bench_one(ns, size, spec, via_file=False, label=f"size hint {2 * size}")
                bench_netlink(ns, size, size_hint=2 * size)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


if __name__ == "__main__":
    main()
