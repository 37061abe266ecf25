"""One inspector worker process: one NFQUEUE number, its own decision core.

The kernel spreads flows over the queues (queue balance hashes the address
pair and protocol), so every packet of a flow reaches the same worker and its
flow table. The main process sends new intel over a pipe; the worker swaps
its detector without losing flows.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import select
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from agent.config import Settings
from agent.core.decision import Decision, PacketMeta, Verdict
from agent.errors import AgentError
from agent.events import decision_event
from agent.gctune import tune_gc
from agent.intel.loading import load_intel
from agent.intel.snapshot import IntelSnapshot, paused_gc
from agent.kernel.nfqueue_inspector import QueueInspector
from agent.logsetup import get_logger
from agent.service.decision_log import DecisionLog
from agent.service.logfile import LogSink
from agent.service.metrics import SHIP_INTERVAL_S, WorkerTally, ship_delta
from agent.wiring import build_core, build_detector, limits_from_settings

POLL_SECONDS = 1.0
LATENCY_SAMPLE = 8  # one packet in this many is timed for the decide-latency histogram


@dataclass(frozen=True, slots=True)
class ReloadMessage:
    """Switch to new settings and intel. The worker reads the same sources itself:
    pickling the campaigns costs more than parsing them (100k IOCs: 1.4 s to dump per
    worker, 2.4 s to load, vs 0.9 s to parse), and the snapshot holds closures that
    cannot be pickled at all. The main process already validated the sources; it
    compares the `intel_version` each worker acks with its own and replaces a worker
    that read something else (a file changed in between)."""

    settings: Settings
    extra_intel: tuple[Path, ...]
    include_configured: bool
    intel_version: str


def load_for_worker(message: ReloadMessage) -> IntelSnapshot | None:
    with paused_gc():
        return load_intel(
            message.settings, message.extra_intel, include_configured=message.include_configured
        ).snapshot


class BackgroundLoad:
    """Reads the intel in a thread while the worker keeps deciding packets on the old
    detector (the GIL interleaves them: slower for a moment, never stopped). A pipe
    becomes readable when the load is done, so `select` sees it."""

    def __init__(self, message: ReloadMessage) -> None:
        self.message = message
        self.started = time.monotonic()
        self.done_at = self.started
        self._snapshot: IntelSnapshot | None = None
        self._read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="intel-load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._snapshot = load_for_worker(self.message)
        except Exception:  # a bug in a parser must not kill the worker; old intel stays
            self._snapshot = None
        self.done_at = time.monotonic()
        os.write(self._write_fd, b"x")

    def fileno(self) -> int:
        return self._read_fd

    def result(self) -> IntelSnapshot | None:
        self._thread.join()
        os.close(self._read_fd)
        os.close(self._write_fd)
        return self._snapshot


def picklable_settings(settings: Settings) -> Settings:
    """The same values as a plain `Settings`: `load_settings` returns an instance of a
    class made at run time (bound to its TOML file), which pickle cannot name."""
    if type(settings) is Settings:
        return settings
    return Settings.model_construct(_fields_set=settings.model_fields_set, **dict(settings))


@dataclass(frozen=True, slots=True)
class StopMessage:
    pass


@dataclass(frozen=True, slots=True)
class ReopenLogMessage:
    """SIGUSR1 reached the main process: open log.output again (after rotation)."""


def freeze_long_lived(*, full: bool) -> None:
    """Move what exists now (modules, intel, detector) out of the GC's reach: it lives
    until the next reload, and collections that re-scan it would stall decisions.

    `full` (at start) collects everything first: ~60 ms here. After a reload nothing
    is collected: loading runs with the GC paused, so the whole new intel sits in the
    youngest generation and even `gc.collect(0)` would walk all of it (100k IOCs:
    1.1 s with the worker deciding nothing). Freezing without collecting leaks
    nothing because loading leaves no cyclic garbage and the old snapshot and
    detector are acyclic (freed by reference counting): tests/test_service_units.py
    checks both for every sample source.
    """
    if full:
        gc.collect()
    gc.freeze()
    tune_gc()


def log_decision(
    log: Any, decision: Decision, meta: PacketMeta, *, source: str, mode: str, value_limit: int
) -> None:
    event = decision_event(
        decision, timestamp=meta.timestamp, source=source, mode=mode, value_limit=value_limit
    )
    name = event.pop("event")
    if meta.queue is not None:
        event["worker"] = meta.queue
    if decision.verdict in (Verdict.DROP, Verdict.WOULD_DROP, Verdict.FLAG):
        log.warning(name, **event)
    else:
        log.info(name, **event)


def worker_main(
    queue_num: int, settings: Settings, snapshot: IntelSnapshot, control: Connection
) -> None:
    """Entry point of a forked worker; returns when told to stop or the parent dies."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log = get_logger()
    # Inherited logging writes to the parent's stream; a reopen gives this
    # process its own.
    sink = LogSink()
    sink.settings = settings.log
    parent = os.getppid()
    core = build_core(settings, snapshot)
    freeze_long_lived(full=True)
    state = {"settings": settings}

    def emit(decision: Decision, meta: PacketMeta) -> None:
        current = state["settings"]
        log_decision(
            log,
            decision,
            meta,
            source="nfqueue",
            mode=current.mode,
            value_limit=current.log.max_value_length,
        )

    # Observability (agent/service/metrics.py, decision_log.py): plain counting per
    # packet; deltas go to the main process about once a second.
    tally = WorkerTally(queue_num)
    gate = DecisionLog(log, emit, settings.log, source="nfqueue", worker=queue_num)

    def on_decision(decision: Decision, meta: PacketMeta) -> None:
        tally.record(decision)
        gate.record(decision, meta)

    # The latency histogram samples one packet in LATENCY_SAMPLE: timing each one would
    # cost a sizeable share of what the fast lane spends on a request.
    sampled = itertools.count()
    decide = core.decide

    def timed_decide(payload: bytes, meta: PacketMeta) -> Decision:
        if next(sampled) % LATENCY_SAMPLE:
            return decide(payload, meta)
        started = time.perf_counter()
        decision = decide(payload, meta)
        tally.observe_latency(time.perf_counter() - started)
        return decision

    def ship_metrics(*, wait: bool) -> None:
        gate.flush(force=wait)
        ship_delta(
            control,
            lambda: tally.take_delta(
                inspector.counters,
                core.flows,
                gate.outcomes,
                core.lane.stats() if core.lane is not None else None,
            ),
            wait=wait,
        )

    def on_error(exc: BaseException) -> None:
        log.error("inspector_error", worker=queue_num, error=f"{type(exc).__name__}: {exc}")

    try:
        inspector = QueueInspector(
            queue_num,
            timed_decide,
            on_decision,
            on_error,
            block_mark=settings.nft.block_mark,
            past_depth_mark=settings.nft.past_depth_mark,
            max_len=settings.queue.max_len,
            socket_buffer=settings.queue.socket_buffer,
            fail_open_on_overload=settings.queue.fail_open_on_overload,
            fail_closed_on_error=settings.queue.fail_closed,
        )
    except OSError as exc:
        # One JSON line, not a traceback; the main process reports the failed start.
        log.error("worker_start_failed", worker=queue_num, error=str(exc))
        raise SystemExit(1) from None
    control.send(("ready", queue_num, snapshot.intel_version))
    loading: BackgroundLoad | None = None
    next_ship = time.monotonic() + SHIP_INTERVAL_S
    try:
        while os.getppid() == parent:
            fds = [inspector.fileno(), control.fileno()]
            fds += [loading.fileno()] if loading is not None else []
            readable, _, _ = select.select(fds, [], [], POLL_SECONDS)
            if inspector.fileno() in readable:
                inspector.process_pending()
            if time.monotonic() >= next_ship:
                ship_metrics(wait=False)
                next_ship = time.monotonic() + SHIP_INTERVAL_S
            if loading is not None and loading.fileno() in readable:
                finished, loading = loading, None
                fresh = finished.result()
                if fresh is None:
                    # Keep deciding on the old intel; the main process replaces us.
                    control.send(("reload_failed", queue_num, None))
                    continue
                message = finished.message
                state["settings"] = message.settings
                core.swap_detector(build_detector(message.settings, fresh))
                core.limits = limits_from_settings(message.settings)
                gate.configure(message.settings.log)
                del fresh
                control.send(("reloaded", queue_num, core.detector.intel_version))
                switched = time.monotonic()
                # After the ack: the switch is done, this only tidies up.
                freeze_long_lived(full=False)
                log.info(
                    "worker_reloaded",
                    worker=queue_num,
                    intel_version=message.intel_version,
                    load_ms=round((finished.done_at - finished.started) * 1000, 1),
                    switch_ms=round((switched - finished.done_at) * 1000, 1),
                    gc_ms=round((time.monotonic() - switched) * 1000, 1),
                )
            if control.fileno() in readable:
                try:
                    message = control.recv()
                except EOFError:
                    return
                if isinstance(message, StopMessage):
                    # Drain what is queued so nothing waits for a verdict.
                    inspector.process_pending()
                    ship_metrics(wait=True)  # last `suppressed` events and counts
                    return
                if isinstance(message, ReopenLogMessage):
                    with contextlib.suppress(AgentError):
                        sink.reopen()
                elif isinstance(message, ReloadMessage):
                    if message.settings.log != state["settings"].log:
                        with contextlib.suppress(AgentError):
                            sink.apply(message.settings.log)
                    if loading is not None:
                        loading.result()  # superseded (main waits for acks: rare)
                    loading = BackgroundLoad(message)
                elif message == "stats":
                    control.send(("stats", queue_num, inspector.counters, len(core.flows)))
    finally:
        if loading is not None:
            loading.result()
        inspector.close()
