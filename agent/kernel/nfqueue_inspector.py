"""The NFQUEUE end of the live path: packets from one kernel queue through a decide function.

netfilterqueue owns the netlink socket; this module binds it, turns each
packet into (bytes, PacketMeta), applies the Decision as a verdict, and never
lets an exception leave a packet without a verdict.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from netfilterqueue import NetfilterQueue, Packet

from agent.core.decision import Decision, PacketMeta, Verdict
from agent.kernel.nflog import HOOK_NAMES
from agent.kernel.nfqueue_config import set_fail_open

Decide = Callable[[bytes, PacketMeta], Decision]
_ACCEPT = Verdict.ACCEPT
_ACCEPT_VALUE = Verdict.ACCEPT.value
OnDecision = Callable[[Decision, PacketMeta], None]
OnError = Callable[[BaseException], None]


@dataclass(slots=True)
class QueueCounters:
    packets: int = 0
    accepted: int = 0
    dropped: int = 0
    flows_blocked: int = 0
    errors: int = 0
    by_verdict: dict[str, int] = field(default_factory=dict)
    # Plain accepts (most packets) are counted here, apart: see verdict_counts().
    plain_accepts: int = 0

    def verdict_counts(self) -> dict[str, int]:
        """Packets by verdict value."""
        counts = dict(self.by_verdict)
        if self.plain_accepts:
            counts[_ACCEPT_VALUE] = counts.get(_ACCEPT_VALUE, 0) + self.plain_accepts
        return counts


class QueueInspector:
    """Binds NFQUEUE `queue_num`; `process_pending()` handles what is queued without blocking."""

    def __init__(
        self,
        queue_num: int,
        decide: Decide,
        on_decision: OnDecision,
        on_error: OnError,
        *,
        block_mark: int,
        past_depth_mark: int = 0,
        max_len: int = 4096,
        socket_buffer: int = 8 << 20,
        fail_open_on_overload: bool = True,
        fail_closed_on_error: bool = False,
    ) -> None:
        self.queue_num = queue_num
        self.decide = decide
        self.on_decision = on_decision
        self.on_error = on_error
        self.block_mark = block_mark
        self.past_depth_mark = past_depth_mark
        self.fail_closed_on_error = fail_closed_on_error
        self.counters = QueueCounters()
        self._queue = NetfilterQueue()
        self._queue.bind(
            queue_num, self._handle, max_len=max_len, range=65535, sock_len=socket_buffer
        )
        if fail_open_on_overload:
            # Overload policy: accept instead of drop when the queue is full (counted by the kernel).
            fd = os.dup(self._queue.get_fd())
            try:
                set_fail_open(fd, queue_num, True)
            finally:
                os.close(fd)

    def fileno(self) -> int:
        return self._queue.get_fd()

    def process_pending(self) -> None:
        self._queue.run(block=False)

    def close(self) -> None:
        self._queue.unbind()

    def _handle(self, packet: Packet) -> None:
        counters = self.counters
        counters.packets += 1
        try:
            # Positional: this runs once per queued packet (timestamp, hook, packet_no,
            # queue, past_depth).
            meta = PacketMeta(
                packet.get_timestamp() or time.time(),
                HOOK_NAMES.get(packet.hook) or str(packet.hook),
                None,
                self.queue_num,
                bool(packet.get_mark() & self.past_depth_mark),
            )
            decision = self.decide(packet.get_payload(), meta)
            verdict = decision.verdict
            if verdict is _ACCEPT and not decision.is_notable:
                packet.accept()  # most packets: nothing to count by verdict or to log
                counters.accepted += 1
                counters.plain_accepts += 1
                return
            counters.by_verdict[verdict.value] = counters.by_verdict.get(verdict.value, 0) + 1
            if verdict == Verdict.DROP:
                if decision.block_flow:
                    # Re-inject with the block mark: the ruleset copies it to the conntrack
                    # mark and drops (or resets) the rest of the flow in the kernel.
                    packet.set_mark(packet.get_mark() | self.block_mark)
                    packet.repeat()
                    counters.flows_blocked += 1
                else:
                    packet.drop()
                counters.dropped += 1
            else:
                packet.accept()
                counters.accepted += 1
            if decision.is_notable or verdict != Verdict.ACCEPT:
                self.on_decision(decision, meta)
        except Exception as exc:  # a packet must always get a verdict
            counters.errors += 1
            try:
                if self.fail_closed_on_error:
                    packet.drop()
                else:
                    packet.accept()
            except Exception as verdict_exc:  # already verdicted before the error
                self.on_error(verdict_exc)
            self.on_error(exc)
