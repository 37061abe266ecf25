"""`rustyflag-agent replay`: a pcap through the same decision core as the live path."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.core.decision import Decision, PacketMeta, Verdict
from agent.core.engine import DecisionCore
from agent.events import decision_event
from agent.pcap import iter_frames

EventSink = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class ReplaySummary:
    packets: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    techniques: Counter[str] = field(default_factory=Counter)
    campaigns: Counter[str] = field(default_factory=Counter)
    decode_failures: Counter[str] = field(default_factory=Counter)
    events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": "replay_summary",
            "packets": self.packets,
            "events": self.events,
            "actions": dict(sorted(self.actions.items())),
            "techniques": dict(sorted(self.techniques.items())),
            "campaigns": dict(sorted(self.campaigns.items())),
            "decode_failures": dict(sorted(self.decode_failures.items())),
        }


def _count(summary: ReplaySummary, decision: Decision) -> None:
    summary.actions[decision.verdict.value] += 1
    if decision.decode_failure is not None:
        summary.decode_failures[decision.decode_failure.value] += 1
    for reason in decision.reasons:
        summary.campaigns[reason.campaign] += 1
        if reason.technique is not None:
            summary.techniques[reason.technique.attack_id] += 1


def replay_pcap(
    path: Path,
    core: DecisionCore,
    sink: EventSink,
    *,
    mode: str,
    include_accepts: bool = False,
    value_limit: int = 256,
) -> ReplaySummary:
    """Decide every frame; send an event for each notable decision (or every one)."""
    summary = ReplaySummary()
    decide = core.decide
    for frame in iter_frames(path):
        summary.packets += 1
        if frame.l3 is None:
            reason = frame.failure.reason.value if frame.failure is not None else "no_ip"
            summary.decode_failures[reason] += 1
            summary.actions[Verdict.ACCEPT.value] += 1
            continue
        decision = decide(frame.l3, PacketMeta(timestamp=frame.timestamp, packet_no=frame.number))
        _count(summary, decision)
        if decision.is_notable or decision.verdict != Verdict.ACCEPT or include_accepts:
            summary.events += 1
            sink(
                decision_event(
                    decision,
                    timestamp=frame.timestamp,
                    source="replay",
                    mode=mode,
                    packet_no=frame.number,
                    value_limit=value_limit,
                )
            )
    return summary


def json_line_sink(write: Callable[[str], Any]) -> EventSink:
    def sink(event: dict[str, Any]) -> None:
        write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")

    return sink


def text_line_sink(write: Callable[[str], Any]) -> EventSink:
    """A readable line per decision for a terminal."""

    def sink(event: dict[str, Any]) -> None:
        reasons = event.get("reasons") or []
        what = (
            "; ".join(
                f"{r['evidence']['kind']}@{r['evidence']['where']}"
                f"{'=' + r['evidence']['name'] if 'name' in r['evidence'] else ''}"
                f" -> {r['technique']['id'] if r['technique'] else '-'} ({r['campaign']})"
                for r in reasons
            )
            or ",".join(a["kind"] for a in event.get("anomalies", []))
            or event.get("decode_failure", "")
        )
        flow = f"{event.get('src_ip', '?')}:{event.get('src_port', 0)} -> {event.get('dest_ip', '?')}:{event.get('dest_port', 0)}"
        http = event.get("http")
        target = f" {http['http_method']} {http['url']}" if http else ""
        write(f"#{event.get('packet', '-'):<6} {event['action']:<10} {flow}{target}  {what}\n")

    return sink
