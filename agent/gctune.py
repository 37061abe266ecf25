"""Garbage-collector settings for long-running decision loops (workers and replay)."""

from __future__ import annotations

import gc

# Each new flow leaves ~20 GC-tracked objects (parser, buffers); with the default
# thresholds full collections re-walk them all: nearly half of a new flow's cost.
# Fewer, larger young collections: one-GET-per-flow 38.6 -> 21.9 us (bench_core).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
