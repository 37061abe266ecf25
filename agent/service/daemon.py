"""`rustyflag-agent run`: rules in place, inspector workers, NFLOG reader, SIGHUP reload.

Lifecycle: load config and intel -> probe the queue backend -> apply the
ruleset in one nft transaction -> start one worker per queue -> READY.
SIGHUP: rebuild everything aside; apply only when all of it is valid, so a
bad file keeps the old state. SIGTERM: queue rules go first (nothing stalls
in a queue nobody reads), then the table unless `keep_rules_on_stop`.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import select
import signal
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from agent.config import DEFAULT_CONFIG_PATH, Settings, load_settings
from agent.core.decision import Decision, FlowKey, PacketMeta, Verdict
from agent.core.decode import DecodeFailure, decode_ip
from agent.core.detector import Detector
from agent.errors import AgentError, ConfigError, Problem
from agent.intel.feed_refresher import FeedRefresher
from agent.intel.feeds import FeedManager, FeedOutcome
from agent.intel.loading import load_intel, resolve_sources
from agent.intel.snapshot import IntelSnapshot, paused_gc
from agent.kernel.commands import CommandRunner
from agent.kernel.errors import KernelError
from agent.kernel.nflog import NflogMessage, NflogReader
from agent.kernel.nfqueue_config import read_queue_stats
from agent.kernel.nft_batch import replace_set_contents
from agent.kernel.nftables import NftablesAdapter, RulesetSpec, render_ruleset
from agent.kernel.queue_backend import probe_queue_backend
from agent.kernel.table_watch import TableGone, TableWatch
from agent.kernel.xt_queue import XtQueueRules
from agent.logsetup import get_logger
from agent.service.decision_log import DecisionLog
from agent.service.logfile import LogSink
from agent.service.metrics import AgentInfo, MetricsHub, is_metrics_message
from agent.service.permissions import source_problems
from agent.service.sdnotify import Notifier, watchdog_interval
from agent.service.worker import (
    ReloadMessage,
    ReopenLogMessage,
    StopMessage,
    log_decision,
    picklable_settings,
    worker_main,
)
from agent.wiring import build_detector

WORKER_START_TIMEOUT = 10.0
RELOAD_ACK_TIMEOUT = 10.0
RESTORE_RETRY_SECONDS = 0.2


@dataclass
class _Worker:
    queue_num: int
    process: BaseProcess
    control: Connection


@dataclass
class _State:
    settings: Settings
    snapshot: IntelSnapshot
    detector: Detector
    spec: RulesetSpec
    reloads: int = 0
    reload_failures: int = 0
    workers: list[_Worker] = field(default_factory=list)


def ruleset_spec(settings: Settings, snapshot: IntelSnapshot, backend: str) -> RulesetSpec:
    has_hostnames = any(
        ioc.hostname and ioc.network is None for c in snapshot.campaigns for ioc in c.iocs
    )
    return RulesetSpec(
        table=settings.nft.table,
        exact_v4=tuple(sorted(snapshot.exact_v4)),
        exact_v6=tuple(sorted(snapshot.exact_v6)),
        prefixes_v4=snapshot.prefixes_v4,
        prefixes_v6=snapshot.prefixes_v6,
        hooks=tuple(settings.nft.hooks),
        dry_run=settings.dry_run,
        log_group=settings.nft.log_group,
        log_rate_per_second=settings.nft.log_rate_per_second,
        http_ports=tuple(settings.http.ports),
        queue_nums=tuple(settings.queue.nums),
        fail_closed=settings.queue.fail_closed,
        inspect_depth_bytes=settings.http.inspect_depth,
        queue_dns_tls=has_hostnames,
        queue_backend="xt" if backend == "xt" else "nft",
        block_mark=settings.nft.block_mark,
        queue_mark=settings.nft.queue_mark,
        queue_past_depth=settings.nft.queue_past_depth,
        past_depth_mark=settings.nft.past_depth_mark,
        reset_blocked=settings.nft.reset_blocked,
    )


def _structural(old: RulesetSpec, new: RulesetSpec) -> bool:
    """True when more than set contents changed (chains or rules must be rebuilt)."""
    same_sets = {"exact_v4": (), "exact_v6": (), "prefixes_v4": (), "prefixes_v6": ()}
    return replace(old, **same_sets) != replace(new, **same_sets)  # type: ignore[arg-type]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _indicator_keys(snapshot: IntelSnapshot) -> set[tuple[str, str, str]]:
    """(campaign, kind, value) of every indicator: what a reload added or removed."""
    keys = {(c.name, "ioc", i.value) for c in snapshot.campaigns for i in c.iocs}
    keys |= {(c.name, a.type.value, a.value) for c in snapshot.campaigns for a in c.ioas}
    return keys


class Agent:
    def __init__(
        self,
        config_path: Path | None,
        extra_intel: list[Path],
        include_configured: bool,
        dry_run_flag: bool,
        log_sink: LogSink | None = None,
    ) -> None:
        self.config_path = config_path
        self.extra_intel = extra_intel
        self.include_configured = include_configured
        self.dry_run_flag = dry_run_flag
        self.log = get_logger()
        self.notifier = Notifier()
        self.runner = CommandRunner()
        self.backend = "nft"
        self.nflog: NflogReader | None = None
        self.log_sink = log_sink if log_sink is not None else LogSink()
        self._signals: list[int] = []
        self._mp = multiprocessing.get_context("fork")
        self.metrics = MetricsHub(queue_stats=read_queue_stats)
        self._nflog_gate: DecisionLog | None = None

    # -- building state (nothing applied) ---------------------------------------------------

    def _load(self) -> tuple[Settings, IntelSnapshot]:
        settings = load_settings(self.config_path)
        if self.dry_run_flag:
            settings = settings.model_copy(update={"mode": "dry-run"})
        if os.geteuid() == 0:
            sources = resolve_sources(
                settings, self.extra_intel, include_configured=self.include_configured
            )
            unsafe = source_problems(self._config_file(), sources)
            if unsafe:
                raise AgentError(unsafe)
        load = load_intel(settings, self.extra_intel, include_configured=self.include_configured)
        for warning in load.warnings:
            self.log.warning("intel_warning", problem=str(warning))
        if load.snapshot is None:
            raise AgentError(
                [Problem(p.source.path, p.source.line, p.message) for p in load.errors]
            )
        return settings, load.snapshot

    def _config_file(self) -> Path | None:
        if self.config_path is not None:
            return self.config_path
        return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None

    def _choose_backend(self, settings: Settings) -> str:
        probe = probe_queue_backend(self.runner)
        wanted = settings.queue.backend
        if wanted == "auto":
            if probe.chosen is None:
                raise AgentError(
                    [Problem("kernel", 0, f"no NFQUEUE backend works: {probe.detail}")]
                )
            chosen = probe.chosen
        else:
            works = probe.nft_queue if wanted == "nft" else probe.xt_nfqueue
            if not works:
                raise AgentError(
                    [
                        Problem(
                            "config queue.backend",
                            0,
                            f"{wanted} queueing is not available: {probe.detail}",
                        )
                    ]
                )
            chosen = wanted
        self.log.info(
            "queue_backend",
            backend=chosen,
            nft_queue=probe.nft_queue,
            xt_nfqueue=probe.xt_nfqueue,
            detail=probe.detail,
        )
        return chosen

    # -- kernel -----------------------------------------------------------------------------

    def _nft(self, settings: Settings) -> NftablesAdapter:
        return NftablesAdapter(self.runner, settings.nft.table)

    def _apply_full(self, settings: Settings, spec: RulesetSpec) -> None:
        self._nft(settings).apply(render_ruleset(spec))
        xt = XtQueueRules(self.runner)
        if spec.queue_backend == "xt" and spec.inspects:
            xt.install(spec)
        else:
            xt.remove()

    def _remove_queue_rules(self, state: _State) -> None:
        spec = state.spec
        if spec.queue_backend == "xt":
            XtQueueRules(self.runner).remove()
        else:
            self._nft(state.settings).apply(render_ruleset(replace(spec, queue_nums=())))

    # -- workers ----------------------------------------------------------------------------

    def _start_worker(self, queue_num: int, settings: Settings, snapshot: IntelSnapshot) -> _Worker:
        parent_end, child_end = self._mp.Pipe()
        process = self._mp.Process(
            target=worker_main,
            args=(queue_num, settings, snapshot, child_end),
            name=f"rustyflag-q{queue_num}",
            daemon=True,
        )
        process.start()
        child_end.close()
        message = None
        with contextlib.suppress(EOFError, OSError):
            if parent_end.poll(WORKER_START_TIMEOUT):
                message = parent_end.recv()
        if message is None:
            process.kill()
            process.join(timeout=1)
            raise AgentError(
                [
                    Problem(
                        f"queue {queue_num}",
                        0,
                        f"inspector worker did not start (exit code {process.exitcode}); "
                        "is another program bound to this NFQUEUE number?",
                    )
                ]
            )
        self.log.info("worker_started", queue=queue_num, pid=process.pid, intel_version=message[2])
        return _Worker(queue_num, process, parent_end)

    def _stop_workers(self, state: _State) -> None:
        for worker in state.workers:
            with contextlib.suppress(OSError):
                worker.control.send(StopMessage())
        for worker in state.workers:
            worker.process.join(timeout=3)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=1)
            self._read_worker_metrics(worker)  # its last delta, sent before it exited

    # -- NFLOG: kernel drops are decisions too ----------------------------------------------

    def _nflog_decision(
        self, state: _State, message: NflogMessage
    ) -> tuple[Decision, PacketMeta] | None:
        packet = decode_ip(message.payload)
        if isinstance(packet, DecodeFailure):
            return None
        reasons = state.detector.address_reasons(packet)
        if not reasons:
            return None
        verdict = Verdict.WOULD_DROP if state.settings.dry_run else Verdict.DROP
        flow = FlowKey(
            packet.proto_name,
            packet.src_text,
            packet.sport,
            packet.dst_text,
            packet.dport,
        )
        decision = Decision(
            verdict, state.detector.intel_version, reasons=tuple(reasons), flow=flow
        )
        meta = PacketMeta(
            timestamp=message.timestamp or time.time(), hook=message.hook_name or "unknown"
        )
        return decision, meta

    def _drain_nflog(self, state: _State) -> None:
        if self.nflog is None:
            return
        for message in self.nflog.read_messages():
            built = self._nflog_decision(state, message)
            if built is not None:
                outcome = self._nflog_log(state).record(*built)
                self.metrics.record_main(built[0], "nflog", outcome)

    def _nflog_log(self, state: _State) -> DecisionLog:
        settings = state.settings

        def emit(decision: Decision, meta: PacketMeta) -> None:
            log_decision(
                self.log,
                decision,
                meta,
                source="nflog",
                mode=settings.mode,
                value_limit=settings.log.max_value_length,
            )

        if self._nflog_gate is None:
            self._nflog_gate = DecisionLog(self.log, emit, settings.log, source="nflog")
        elif self._nflog_gate.settings is not settings.log:
            self._nflog_gate.configure(settings.log)
        self._nflog_gate.emit = emit
        return self._nflog_gate

    # -- metrics (agent/service/metrics.py) -------------------------------------------------

    def _agent_info(self, state: _State) -> AgentInfo:
        snapshot = state.snapshot
        return AgentInfo(
            snapshot.intel_version,
            state.settings.mode,
            self.backend,
            len(snapshot.campaigns),
            snapshot.ioc_count,
            snapshot.ioa_count,
            tuple(state.settings.queue.nums),
        )

    def _start_metrics(self, state: _State) -> None:
        self.metrics.kernel_counters = self._nft(state.settings).counters
        self.metrics.set_info(self._agent_info(state))
        if not state.settings.metrics.enabled:
            return
        try:
            self.metrics.serve(state.settings.metrics)
        except OSError as exc:
            # Enforcement matters more than the dashboard: keep running, say so.
            self.log.error(
                "metrics_unavailable", listen=state.settings.metrics.listen, problem=str(exc)
            )
            return
        self.log.info("metrics_listening", listen=state.settings.metrics.listen)

    def _read_worker_metrics(self, worker: _Worker) -> Any:
        """Add every metrics delta waiting on the worker's pipe; returns the first other
        message (an ack; a "gone" tuple when the worker closed it), None when empty."""
        try:
            while worker.control.poll(0):
                message = worker.control.recv()
                if not is_metrics_message(message):
                    return message
                self.metrics.add(message[2])
        except (EOFError, OSError):
            return ("gone", worker.queue_num, None)  # never a valid ack
        return None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> _State:
        settings, snapshot = self._load()
        self.backend = self._choose_backend(settings)
        spec = ruleset_spec(settings, snapshot, self.backend)
        self.nflog = NflogReader(settings.nft.log_group)
        state = _State(settings, snapshot, build_detector(settings, snapshot), spec)
        self._apply_full(settings, spec)
        try:
            for queue_num in settings.queue.nums:
                state.workers.append(self._start_worker(queue_num, settings, snapshot))
        except BaseException as exc:
            # Rules are in but not every queue has a reader: take the queue rules out
            # (nothing may wait for a verdict), then what `stop` always does.
            self.log.error(
                "start_failed",
                problem=f"{type(exc).__name__}: {exc}",
                action="removing queue rules"
                + ("" if settings.nft.keep_rules_on_stop else " and the table"),
            )
            self.stop(state)
            raise
        self._log_rules(state, "rules_applied")
        self._start_metrics(state)
        return state

    def _status_line(self, state: _State) -> str:
        return (
            f"{len(state.snapshot.campaigns)} campaigns, {state.snapshot.ioc_count} IOC, "
            f"{state.snapshot.ioa_count} IOA; mode {state.settings.mode}; queue backend {self.backend}; "
            f"intel {state.snapshot.intel_version}"
        )

    def _log_rules(self, state: _State, event: str) -> None:
        self.log.info(
            event,
            table=state.spec.table,
            mode=state.settings.mode,
            backend=self.backend,
            exact_v4=len(state.spec.exact_v4),
            exact_v6=len(state.spec.exact_v6),
            prefixes_v4=len(state.spec.prefixes_v4),
            prefixes_v6=len(state.spec.prefixes_v6),
            queues=list(state.spec.queue_nums),
            fail_closed=state.spec.fail_closed,
            intel_version=state.snapshot.intel_version,
        )

    def reload(self, state: _State) -> _State:
        """Build everything aside, then switch; on any error keep the whole old state."""
        started = time.monotonic()
        self.notifier.reloading()
        old_version = state.snapshot.intel_version
        try:
            with paused_gc():
                settings, snapshot = self._load()
            loaded = time.monotonic()
            if list(settings.queue.nums) != list(state.settings.queue.nums):
                raise AgentError(
                    [Problem("config queue.nums", 0, "queue numbers change only on restart")]
                )
            spec = ruleset_spec(settings, snapshot, self.backend)
            detector = build_detector(settings, snapshot)
            if settings.log != state.settings.log:
                self.log_sink.apply(settings.log)
            if _structural(state.spec, spec):
                self._apply_full(settings, spec)
            else:
                # Same transaction as `nft -f render_set_update(spec)`, without an nft
                # process (100k IOCs: seconds and hundreds of MiB in nft).
                replace_set_contents(spec)
        except (AgentError, KernelError, OSError) as exc:
            state.reload_failures += 1
            self.metrics.reload_failed()
            problems = (
                exc.problems if isinstance(exc, AgentError) else (Problem("kernel", 0, str(exc)),)
            )
            for problem in problems:
                self.log.error(
                    "reload_failed", problem=str(problem), kept_intel_version=old_version
                )
            self.notifier.ready(self._status_line(state))
            return state
        for worker in state.workers:
            worker.control.send(
                ReloadMessage(
                    picklable_settings(settings),
                    tuple(self.extra_intel),
                    self.include_configured,
                    snapshot.intel_version,
                )
            )
        applied = time.monotonic()
        self._await_reload_acks(state, snapshot.intel_version)
        old_ids, new_ids = _indicator_keys(state.snapshot), _indicator_keys(snapshot)
        new_state = _State(
            settings,
            snapshot,
            detector,
            spec,
            state.reloads + 1,
            state.reload_failures,
            state.workers,
        )
        self.log.info(
            "reload",
            old_intel_version=old_version,
            new_intel_version=snapshot.intel_version,
            indicators_added=len(new_ids - old_ids),
            indicators_removed=len(old_ids - new_ids),
            mode=settings.mode,
            duration_ms=_ms(time.monotonic() - started),
            load_ms=_ms(loaded - started),
            apply_ms=_ms(applied - loaded),
            workers_ms=_ms(time.monotonic() - applied),
        )
        self.metrics.kernel_counters = self._nft(settings).counters  # the table may be renamed
        self.metrics.reload_succeeded(self._agent_info(new_state))
        self.notifier.ready(self._status_line(new_state))
        return new_state

    def _await_reload_acks(self, state: _State, intel_version: str) -> None:
        deadline = time.monotonic() + RELOAD_ACK_TIMEOUT
        for worker in state.workers:
            ack = None
            with contextlib.suppress(EOFError, OSError):
                # Metrics deltas share the pipe: add them and keep waiting for the ack.
                while ack is None and worker.control.poll(max(0.0, deadline - time.monotonic())):
                    ack = self._read_worker_metrics(worker)
            if ack is None or ack[2] != intel_version:
                # Killed, so the main loop restarts it on the new state: no worker
                # may keep deciding on old intel.
                self.log.error(
                    "worker_reload_failed",
                    queue=worker.queue_num,
                    ack=repr(ack),
                    intel_version=intel_version,
                )
                worker.process.kill()
                worker.process.join(timeout=1)

    def stop(self, state: _State) -> None:
        self.notifier.stopping()
        try:
            self._remove_queue_rules(state)
        except KernelError as exc:
            self.log.error("stop_failed", step="remove queue rules", problem=str(exc))
        self._stop_workers(state)
        if not state.settings.nft.keep_rules_on_stop:
            try:
                self._nft(state.settings).delete_table()
            except KernelError as exc:
                self.log.error("stop_failed", step="delete table", problem=str(exc))
        if self.nflog is not None:
            self.nflog.close()
        if self._nflog_gate is not None:
            self._nflog_gate.flush(force=True)
        self.metrics.close()
        self.log.info("stopped", kept_rules=state.settings.nft.keep_rules_on_stop)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)

    def serve(self) -> int:
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_fd)
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(signum, self._on_signal)
        # Listening before the rules go in: a flush at any later moment is seen.
        watch = self._open_table_watch()
        state = self.start()  # enforces the feeds' cached copies: no network needed
        self.notifier.ready(self._status_line(state))
        self.log.info("ready", status=self._status_line(state))
        # Feeds are fetched in a background thread: the main loop never waits on the network.
        feeds = FeedRefresher(FeedManager(state.settings))
        feeds.start()
        watchdog = watchdog_interval()
        next_watchdog = time.monotonic()
        restore_pending = known_gone = False
        try:
            while True:
                fds = [read_fd] + ([self.nflog.fileno()] if self.nflog else [])
                fds += [w.process.sentinel for w in state.workers]
                fds += [w.control.fileno() for w in state.workers]
                fds += [watch.fileno()] if watch is not None else []
                fds.append(feeds.fileno())
                timeout = RESTORE_RETRY_SECONDS if restore_pending else (watchdog or 1.0)
                readable, _, _ = select.select(fds, [], [], min(timeout, watchdog or timeout))
                if watch is not None and watch.fileno() in readable:
                    gone = watch.table_gone(state.settings.nft.table)
                    if gone is not TableGone.NO:
                        restore_pending = True
                        known_gone = gone is TableGone.YES
                if restore_pending:
                    restore_pending = not self._restore_rules(state, known_gone)
                if read_fd in readable:
                    with contextlib.suppress(BlockingIOError):
                        os.read(read_fd, 512)
                if self.nflog is not None and self.nflog.fileno() in readable:
                    self._drain_nflog(state)
                for worker in state.workers:
                    if worker.control.fileno() in readable:
                        self._read_worker_metrics(worker)  # a late ack is stale: dropped
                if self._nflog_gate is not None:
                    self._nflog_gate.flush()
                self._restart_dead_workers(state)
                if watchdog is not None and time.monotonic() >= next_watchdog:
                    self.notifier.watchdog()
                    next_watchdog = time.monotonic() + watchdog
                signals, self._signals = self._signals, []
                if signal.SIGTERM in signals or signal.SIGINT in signals:
                    break
                if signal.SIGUSR1 in signals:
                    self._reopen_logs(state)
                if signal.SIGHUP in signals:
                    # Signals that arrived during a reload coalesce into one more reload.
                    state = self.reload(state)
                    if signal.SIGHUP in self._signals:
                        self._signals = [s for s in self._signals if s != signal.SIGHUP]
                        state = self.reload(state)
                    feeds.update_settings(state.settings)
                    feeds.request(force=True)  # fetched in the background; a change reloads
                if feeds.fileno() in readable and self._feeds_changed(feeds.take()):
                    state = self.reload(state)
                    feeds.update_settings(state.settings)
        finally:
            feeds.stop()
            if watch is not None:
                watch.close()
            self.stop(state)
        return 0

    def _feeds_changed(self, outcomes: list[FeedOutcome]) -> bool:
        for outcome in outcomes:
            log = self.log.info if outcome.ok else self.log.error
            log("feed_refresh", **outcome.log_fields())
        return any(outcome.changed for outcome in outcomes)

    def _open_table_watch(self) -> TableWatch | None:
        try:
            return TableWatch()
        except OSError as exc:
            self.log.warning(
                "table_watch_unavailable",
                problem=str(exc),
                effect="a flushed ruleset comes back only when the agent restarts",
            )
            return None

    def _restore_rules(self, state: _State, known_gone: bool) -> bool:
        """Put the ruleset back if another program deleted our table; True when in place.
        `known_gone`: the kernel said so (no `nft list` round trip on the hot path)."""
        started = time.monotonic()
        if not known_gone and self._nft(state.settings).table_exists():
            return True
        try:
            self._apply_full(state.settings, state.spec)
        except KernelError as exc:
            self.log.error("rules_restore_failed", problem=str(exc), retry_s=RESTORE_RETRY_SECONDS)
            return False
        self.log.warning(
            "rules_restored",
            reason="table deleted by another program (nftables.service restart, flush ruleset)",
            duration_ms=_ms(time.monotonic() - started),
            intel_version=state.snapshot.intel_version,
        )
        return True

    def _reopen_logs(self, state: _State) -> None:
        try:
            self.log_sink.reopen()
        except AgentError as exc:
            # Keep logging where we were; the error goes there.
            self.log.error("log_reopen_failed", problem=str(exc.problems[0]))
            return
        for worker in state.workers:
            with contextlib.suppress(OSError):
                worker.control.send(ReopenLogMessage())
        self.log.info("log_reopened", output=state.settings.log.output)

    def _restart_dead_workers(self, state: _State) -> None:
        for index, worker in enumerate(state.workers):
            if not worker.process.is_alive():
                self.log.error(
                    "worker_died", queue=worker.queue_num, exitcode=worker.process.exitcode
                )
                self._read_worker_metrics(worker)
                self.metrics.worker_restarted()
                state.workers[index] = self._start_worker(
                    worker.queue_num, state.settings, state.snapshot
                )


def run_agent(settings: Settings, args: argparse.Namespace) -> int:
    sink = LogSink()
    sink.apply(settings.log)
    if os.geteuid() != 0:
        raise AgentError(
            [Problem("run", 0, "needs root (CAP_NET_ADMIN) to manage nftables and NFQUEUE")]
        )
    agent = Agent(
        args.config, list(args.intel), not args.no_default_intel, bool(args.dry_run), sink
    )
    try:
        return agent.serve()
    except KernelError as exc:
        raise AgentError([Problem("kernel", 0, str(exc))]) from exc
    except ConfigError:
        raise
