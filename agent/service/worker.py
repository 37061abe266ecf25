"""One inspector worker process: one NFQUEUE number, its own decision core.

The kernel spreads flows over the queues (queue balance with CPU fanout
hashes the flow), so every packet of a flow reaches the same worker and its
flow table. The main process sends new intel over a pipe; the worker swaps
its detector without losing flows.
"""

from __future__ import annotations

import os
import select
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from agent.config import Settings
from agent.core.decision import Decision, PacketMeta, Verdict
from agent.events import decision_event
from agent.intel.snapshot import IntelSnapshot
from agent.kernel.nfqueue_inspector import QueueInspector
from agent.logsetup import get_logger
from agent.wiring import build_core, build_detector, limits_from_settings

POLL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ReloadMessage:
    settings: Settings
    snapshot: IntelSnapshot


@dataclass(frozen=True, slots=True)
class StopMessage:
    pass


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
    parent = os.getppid()
    core = build_core(settings, snapshot)
    state = {"settings": settings}

    def on_decision(decision: Decision, meta: PacketMeta) -> None:
        current = state["settings"]
        log_decision(
            log,
            decision,
            meta,
            source="nfqueue",
            mode=current.mode,
            value_limit=current.log.max_value_length,
        )

    def on_error(exc: BaseException) -> None:
        log.error("inspector_error", worker=queue_num, error=f"{type(exc).__name__}: {exc}")

    inspector = QueueInspector(
        queue_num,
        core.decide,
        on_decision,
        on_error,
        block_mark=settings.nft.block_mark,
        max_len=settings.queue.max_len,
        socket_buffer=settings.queue.socket_buffer,
        fail_open_on_overload=settings.queue.fail_open_on_overload,
        fail_closed_on_error=settings.queue.fail_closed,
    )
    control.send(("ready", queue_num, snapshot.intel_version))
    try:
        while os.getppid() == parent:
            readable, _, _ = select.select(
                [inspector.fileno(), control.fileno()], [], [], POLL_SECONDS
            )
            if inspector.fileno() in readable:
                inspector.process_pending()
            if control.fileno() in readable:
                try:
                    message = control.recv()
                except EOFError:
                    return
                if isinstance(message, StopMessage):
                    # Drain what is queued so nothing waits for a verdict.
                    inspector.process_pending()
                    return
                if isinstance(message, ReloadMessage):
                    state["settings"] = message.settings
                    core.swap_detector(build_detector(message.settings, message.snapshot))
                    core.limits = limits_from_settings(message.settings)
                    control.send(("reloaded", queue_num, message.snapshot.intel_version))
                elif message == "stats":
                    control.send(("stats", queue_num, inspector.counters, len(core.flows)))
    finally:
        inspector.close()
