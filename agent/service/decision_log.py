"""Decision events under attack: fold repeats, rate-limit per indicator, count what was folded.

Every decision handed to `DecisionLog.record` is either logged or counted in a
`suppressed` event (emitted every `suppressed_interval` seconds and at stop), so
`logged + sum(suppressed.count) == decisions recorded`, exactly.

"Distinct" decision: the same flow, verdict, request target, indicators (with their
evidence kind, place, name and value), anomalies and decode failure make the same
decision; anything else is distinct. With the defaults (`dedupe_flow = true`,
`rate_per_indicator = 0`) only such identical repeats inside one flow are folded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from agent.config import LogSettings
from agent.core.decision import Decision, PacketMeta
from agent.events import escape_value

# Remembered decisions for de-duplication; the oldest is forgotten first (a repeat
# of a forgotten one is logged again: more lines, never fewer counts).
MAX_REMEMBERED = 16384
LOGGED = "logged"
DUPLICATE = "duplicate"
RATE_LIMIT = "rate_limit"

Emit = Callable[[Decision, PacketMeta], None]


class IndicatorKey(NamedTuple):
    """What a decision is about: its first reason's indicator, else its anomaly/failure.
    A tuple, not a dataclass: it is built and hashed for every folded decision."""

    campaign: str
    kind: str  # "ioc", "ioa", "anomaly", "decode_failure", "none"
    type: str
    value: str
    action: str  # the decision's verdict


def indicator_key(decision: Decision) -> IndicatorKey:
    verdict = decision.verdict.value
    if decision.reasons:
        reason = decision.reasons[0]
        ref = reason.indicator
        return IndicatorKey(reason.campaign, ref.kind, ref.type, ref.value, verdict)
    if decision.anomalies:
        return IndicatorKey("", "anomaly", decision.anomalies[0][0].value, "", verdict)
    if decision.decode_failure is not None:
        return IndicatorKey("", "decode_failure", decision.decode_failure.value, "", verdict)
    return IndicatorKey("", "none", "", "", verdict)


def identity(decision: Decision) -> Hashable | None:
    """The decision minus time and packet number; None when it has no flow to dedupe in."""
    flow: Hashable | None = decision.flow_id if decision.flow_id is not None else decision.flow
    if flow is None:
        return None
    return (
        flow,
        decision.verdict,
        None if decision.http is None else (decision.http.method, decision.http.target),
        tuple(
            (r.indicator.id, r.indicator.value, r.evidence.kind, r.evidence.where,
             r.evidence.name, r.evidence.value, r.action)
            for r in decision.reasons
        ),
        decision.anomalies,
        decision.decode_failure,
        decision.block_flow,
    )


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class DecisionLog:
    """Per-process gate in front of the decision logger. Not thread-safe: one per process."""

    def __init__(
        self,
        log: Any,
        emit: Emit,
        settings: LogSettings,
        *,
        source: str,
        worker: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.emit = emit
        self.source = source
        self.worker = worker
        self.clock = clock
        self.settings = settings
        self.recorded = 0
        # Cumulative: "logged", "duplicate", "rate_limit" (shipped as metric deltas).
        self.outcomes: dict[str, int] = {LOGGED: 0, DUPLICATE: 0, RATE_LIMIT: 0}
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._buckets: dict[IndicatorKey, _Bucket] = {}
        # (reason, indicator) -> (count, distinct flows) since the last `suppressed` events.
        self._folded: dict[tuple[str, IndicatorKey], list[Any]] = {}
        self._window_start = clock()

    @property
    def logged(self) -> int:
        return self.outcomes[LOGGED]

    @property
    def suppressed(self) -> int:
        return self.outcomes[DUPLICATE] + self.outcomes[RATE_LIMIT]

    def configure(self, settings: LogSettings) -> None:
        """New settings (reload); counts and remembered decisions stay."""
        self.settings = settings
        self._buckets.clear()

    def record(self, decision: Decision, meta: PacketMeta) -> str:
        """Log the decision or fold it; returns the outcome (LOGGED, DUPLICATE, RATE_LIMIT)."""
        self.recorded += 1
        settings = self.settings
        key = indicator_key(decision)
        if settings.dedupe_flow:
            ident = identity(decision)
            if ident is not None:
                if ident in self._seen:
                    self._fold(DUPLICATE, key, decision)
                    return DUPLICATE
                self._seen[ident] = None
                if len(self._seen) > MAX_REMEMBERED:
                    self._seen.popitem(last=False)
        if settings.rate_per_indicator > 0 and not self._take_token(key):
            self._fold(RATE_LIMIT, key, decision)
            return RATE_LIMIT
        self.outcomes[LOGGED] += 1
        self.emit(decision, meta)
        return LOGGED

    def _take_token(self, key: IndicatorKey) -> bool:
        now = self.clock()
        rate = self.settings.rate_per_indicator
        burst = float(self.settings.burst_per_indicator)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _fold(self, reason: str, key: IndicatorKey, decision: Decision) -> None:
        self.outcomes[reason] += 1
        entry = self._folded.get((reason, key))
        if entry is None:
            entry = self._folded[(reason, key)] = [0, set()]
        entry[0] += 1
        flows: set[Any] = entry[1]
        if len(flows) < MAX_REMEMBERED:
            flows.add(decision.flow_id if decision.flow_id is not None else decision.flow)

    def flush(self, *, force: bool = False) -> int:
        """Emit `suppressed` events if the interval is over (or `force`, at stop);
        returns how many events were written."""
        now = self.clock()
        if not force and now - self._window_start < self.settings.suppressed_interval:
            return 0
        folded, self._folded = self._folded, {}
        seconds = round(now - self._window_start, 3)
        self._window_start = now
        for (reason, key), (count, flows) in folded.items():
            fields: dict[str, Any] = {
                "source": self.source,
                "reason": reason,
                "count": count,
                "flows": len(flows),
                "action": key.action,
                "campaign": key.campaign,
                "indicator": {
                    "kind": key.kind,
                    "type": key.type,
                    "value": escape_value(key.value, self.settings.max_value_length),
                },
                "interval_s": seconds,
            }
            if self.worker is not None:
                fields["worker"] = self.worker
            self.log.warning("suppressed", **fields)
        return len(folded)
