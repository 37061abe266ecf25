"""Decision -> one structured event (a plain dict, logged as one JSON line).

Field names follow Suricata's EVE JSON convention where one exists
(`src_ip`, `dest_port`, `proto`, `flow_id`, `http.hostname`, `http.url`,
`http.http_method`), so EVE tooling and dashboards read them as they are.
The JSON Schema is `agent/schema/decision-event.schema.json`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from agent.core.decision import Decision, Reason

TRUNCATION_MARKER = "...[truncated]"


def escape_value(value: str, limit: int) -> str:
    """Printable, bounded text for a log: control characters become \\xNN."""
    clipped = value[:limit]
    if not clipped.isprintable():
        clipped = "".join(
            c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
            for c in clipped
        )[:limit]
    if len(value) > limit:
        return clipped + TRUNCATION_MARKER
    return clipped


def iso_timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def _reason_dict(reason: Reason, limit: int) -> dict[str, Any]:
    indicator = reason.indicator
    evidence = reason.evidence
    technique = reason.technique
    out: dict[str, Any] = {
        "action": reason.action.value,
        "campaign": reason.campaign,
        "indicator": {
            "kind": indicator.kind,
            "id": indicator.id,
            "type": indicator.type,
            "value": escape_value(indicator.value, limit),
            "confidence": indicator.confidence.value,
        },
        "technique": None
        if technique is None
        else {"id": technique.attack_id, "name": technique.name, "cwe": list(technique.cwes)},
        "evidence": {
            "kind": evidence.kind.value,
            "where": evidence.where.value,
            "value": escape_value(evidence.value, limit),
        },
    }
    if evidence.name is not None:
        out["evidence"]["name"] = escape_value(evidence.name, limit)
    if evidence.detail is not None:
        out["evidence"]["detail"] = escape_value(evidence.detail, limit)
    return out


def decision_event(
    decision: Decision,
    *,
    timestamp: float,
    source: str,
    mode: str,
    packet_no: int | None = None,
    value_limit: int = 256,
) -> dict[str, Any]:
    """The event for one decision; validated by the schema in tests."""
    event: dict[str, Any] = {
        "event": "decision",
        "timestamp": iso_timestamp(timestamp),
        "source": source,
        "mode": mode,
        "action": decision.verdict.value,
        "intel_version": decision.intel_version,
    }
    if packet_no is not None:
        event["packet"] = packet_no
    if decision.flow_id is not None:
        event["flow_id"] = decision.flow_id
    if decision.flow is not None:
        flow = decision.flow
        event.update(
            src_ip=flow.src_ip,
            src_port=flow.src_port,
            dest_ip=flow.dest_ip,
            dest_port=flow.dest_port,
            proto=flow.proto,
        )
    if decision.http is not None:
        http = decision.http
        event["http"] = {
            "http_method": escape_value(http.method, 32),
            "hostname": None if http.host is None else escape_value(http.host, value_limit),
            "url": escape_value(http.target, value_limit),
            "path": escape_value(http.path, value_limit),
        }
    event["reasons"] = [_reason_dict(r, value_limit) for r in decision.reasons]
    if decision.anomalies:
        event["anomalies"] = [
            {"kind": kind.value, "detail": escape_value(detail, value_limit)}
            for kind, detail in decision.anomalies
        ]
    if decision.decode_failure is not None:
        event["decode_failure"] = decision.decode_failure.value
    if decision.block_flow:
        event["flow_blocked"] = True
    return event


@cache
def decision_schema() -> dict[str, Any]:
    text = resources.files("agent").joinpath("schema/decision-event.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema
