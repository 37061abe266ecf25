"""Intel loading and lookup speed.

Prints: VulDB Markdown parse rate (pages/s, IOC rows/s) over the sample pages
replicated to >= 400k IOC rows (mostly actor-meterpreter.md, about 1,000 rows
a page), snapshot build time for the same campaigns, and `match_address`
lookups/s (hits and misses, v4 and v6, with and without prefix tables).
Single process; the parser is pure, so no file I/O is timed.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.intel.model import IOC, Campaign, CampaignKind, Confidence, SourceRef
from agent.intel.snapshot import build_snapshot, paused_gc
from agent.intel.sources import load_source
from agent.intel.vuldb import parse_vuldb

SAMPLES = Path("/work/shared/samples/vuldb")
REPO = Path(__file__).resolve().parent.parent


def sample_pages() -> list[tuple[str, str]]:
    pages = sorted(p for p in SAMPLES.glob("*.md") if p.name != "NOTICE.md")
    pages += sorted((REPO / "tests" / "data" / "intel").glob("vuldb-*.md"))
    return [(str(p), p.read_text(encoding="utf-8")) for p in pages]


def bench_parse(min_rows: int, repeats: int) -> list[Campaign]:
    pages = sample_pages()
    # Each page once, then meterpreter (the big page) until min_rows is reached.
    big = next(p for p in pages if p[0].endswith("actor-meterpreter.md"))
    work = list(pages)
    rows_per_big = len(parse_vuldb(big[1], big[0]).campaigns[0].iocs)
    total = sum(len(parse_vuldb(t, p).campaigns[0].iocs) for p, t in pages)
    copy = 0
    while total < min_rows:
        copy += 1
        # Vary the title so every copy is a distinct campaign, as in the real collection.
        work.append((f"{big[0]}.{copy}", big[1].replace("# Meterpreter", f"# Meterpreter{copy}")))
        total += rows_per_big
    campaigns: list[Campaign] = []
    rows = 0
    for label, pause in (("GC paused (as load_source runs it)", True), ("GC on", False)):
        best = best_cpu = float("inf")
        for _ in range(repeats):
            campaigns = []
            gc.collect()
            start_cpu = time.process_time()
            start = time.perf_counter()
            if pause:
                with paused_gc():
                    campaigns = [c for p, t in work for c in parse_vuldb(t, p).campaigns]
            else:
                campaigns = [c for p, t in work for c in parse_vuldb(t, p).campaigns]
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - start_cpu)
        rows = sum(len(c.iocs) for c in campaigns)
        print(f"vuldb parse, {label}: {len(work)} pages, {rows} IOC rows, best of {repeats}")
        print(
            f"  wall {best:.3f} s: {len(work) / best:,.0f} pages/s, {rows / best:,.0f} IOC rows/s"
        )
        print(f"  cpu  {best_cpu:.3f} s: {rows / best_cpu:,.0f} IOC rows/s")
    bench_load_dir(work, rows)
    return campaigns


def bench_load_dir(work: list[tuple[str, str]], rows: int) -> None:
    """The same pages as files in a directory, through load_source (reads + decode)."""
    with tempfile.TemporaryDirectory() as tmp:
        for n, (_, text) in enumerate(work):
            Path(tmp, f"page-{n:04d}.md").write_text(text, encoding="utf-8")
        gc.collect()
        start = time.perf_counter()
        result = load_source(Path(tmp))
        elapsed = time.perf_counter() - start
    loaded = sum(len(c.iocs) for c in result.campaigns)
    assert loaded == rows and result.ok
    print(f"load_source(dir): {len(work)} files, {loaded} IOC rows in {elapsed:.3f} s")
    print(f"  {len(work) / elapsed:,.0f} pages/s, {loaded / elapsed:,.0f} IOC rows/s")


def bench_snapshot(campaigns: list[Campaign]) -> None:
    start = time.perf_counter()
    snap = build_snapshot(campaigns)
    elapsed = time.perf_counter() - start
    print(
        f"build_snapshot: {len(campaigns)} campaigns, {snap.ioc_count} IOCs "
        f"({len(snap.exact_v4)} distinct v4) in {elapsed:.3f} s"
    )


def _lookup_rate(label: str, match: object, probes: list[bytes], rounds: int) -> None:
    assert callable(match)
    start = time.perf_counter()
    for _ in range(rounds):
        for packed in probes:
            match(packed)
    elapsed = time.perf_counter() - start
    count = rounds * len(probes)
    print(f"  {label}: {count / elapsed:,.0f} lookups/s ({elapsed / count * 1e9:.0f} ns each)")


def bench_lookup(rounds: int) -> None:
    """Lookups against 250k distinct random /32s (the real collection's size), +/- prefixes."""
    rng = random.Random(7)
    addresses = _random_campaign(rng, 250_000)
    exact_only = build_snapshot([addresses])
    with_prefixes = build_snapshot([addresses, _prefix_campaign(rng)])
    hits = [
        ioc.network.network_address.packed
        for ioc in addresses.iocs[:: len(addresses.iocs) // 1000]
        if ioc.network is not None
    ]
    misses_v4 = [rng.getrandbits(32).to_bytes(4, "big") for _ in range(1000)]
    misses_v6 = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(1000)]
    print(f"match_address ({len(exact_only.exact_v4)} exact v4):")
    for label, snap in (("exact-only", exact_only), ("+1,100 prefixes", with_prefixes)):
        _lookup_rate(f"{label} v4 hit", snap.match_address, hits, rounds)
        _lookup_rate(f"{label} v4 miss", snap.match_address, misses_v4, rounds)
        _lookup_rate(f"{label} v6 miss", snap.match_address, misses_v6, rounds)


def _random_campaign(rng: random.Random, count: int) -> Campaign:
    iocs = tuple(
        IOC(
            f"r:ioc:{n}",
            ipaddress.IPv4Network(rng.getrandbits(32)),
            None,
            None,
            Confidence.HIGH,
            SourceRef("random", n + 1),
        )
        for n in range(count)
    )
    return Campaign("random", CampaignKind.ACTOR, "random", "r", iocs=iocs)


def _prefix_campaign(rng: random.Random) -> Campaign:
    iocs = []
    for n in range(1000):
        plen = rng.choice((16, 20, 24, 28))
        net = ipaddress.IPv4Network((rng.getrandbits(32), plen), strict=False)
        iocs.append(
            IOC(f"p:ioc:{n}", net, None, None, Confidence.HIGH, SourceRef("prefixes", n + 1))
        )
    for n in range(100):
        net6 = ipaddress.IPv6Network((rng.getrandbits(128), 48), strict=False)
        iocs.append(IOC(f"p6:ioc:{n}", net6, None, None, Confidence.HIGH, SourceRef("p6", n)))
    return Campaign("prefixes", CampaignKind.CAMPAIGN, "prefixes", "p", iocs=tuple(iocs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min-rows", type=int, default=400_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lookup-rounds", type=int, default=200)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if not SAMPLES.is_dir():
        print(f"sample pages not found at {SAMPLES}", file=sys.stderr)
        return 1
    campaigns = bench_parse(args.min_rows, args.repeats)
    bench_snapshot(campaigns)
    bench_lookup(args.lookup_rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
