"""Feed refresh cost against medallion on loopback: first load, incremental, idle poll, load_intel.

    .venv/bin/python bench/bench_feeds.py [--indicators 2000] [--page-size 500] [--new 10]

Prints wall times and bytes; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import FeedSettings, IntelSettings, Settings
from agent.intel.feeds import FeedManager
from agent.intel.loading import load_intel
from tests.feeds_servers import (
    COLLECTION_ID,
    READER,
    campaign_objects,
    indicator,
    medallion,
)

REPO = Path(__file__).resolve().parent.parent
ENV = {"RUSTYFLAG_FEED_FLEET_USER": READER[0], "RUSTYFLAG_FEED_FLEET_PASSWORD": READER[1]}


def address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--indicators", type=int, default=2000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--new", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, medallion(Path(tmp) / "medallion") as server:
        objects = campaign_objects(REPO / "tests" / "data" / "intel" / "stix-rusty-flag.json")
        objects += [indicator(address(i)) for i in range(args.indicators)]
        started = time.perf_counter()
        for i in range(0, len(objects), 500):
            server.add(objects[i : i + 500])
        print(f"server: {len(objects)} objects posted in {time.perf_counter() - started:.2f} s")
        feed = FeedSettings(
            name="fleet", url=server.api_root, kind="taxii", collection=COLLECTION_ID,
            page_size=args.page_size, timeout=60,
        )  # fmt: skip
        settings = Settings(
            intel=IntelSettings(sources=[], feeds=[feed], state_dir=str(Path(tmp) / "state"))
        )
        manager = FeedManager(settings, environ=ENV)

        def timed(label: str) -> None:
            # Wall time is mostly medallion's memory backend (a linear scan per request);
            # the agent's own cost is its CPU time (the server is another process).
            t0, c0 = time.perf_counter(), time.process_time()
            [outcome] = manager.refresh(force=True)
            took, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(
                f"{label:<24} wall {took * 1000:9.1f} ms  agent cpu {cpu * 1000:8.1f} ms  "
                f"status={outcome.status.value:<9} objects_changed={outcome.objects_changed:<6} "
                f"bytes={outcome.bytes_fetched}"
            )

        timed("first load")
        timed("idle poll")
        server.add([indicator(address(args.indicators + i)) for i in range(args.new)])
        timed(f"+{args.new} new objects")
        t0, c0 = time.perf_counter(), time.process_time()
        load = load_intel(settings)  # the same parse a reload does
        took, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert load.snapshot is not None
        print(
            f"{'load_intel from cache':<24} wall {took * 1000:9.1f} ms  agent cpu {cpu * 1000:8.1f} ms  "
            f"iocs={load.snapshot.ioc_count} size={manager.cached_sources()[0].stat().st_size} B"
        )


if __name__ == "__main__":
    main()
