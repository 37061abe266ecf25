"""Settings + intel snapshot -> a ready decision core (shared by replay and the live path)."""

from __future__ import annotations

from agent.config import Settings
from agent.core.detector import Detector, Policy
from agent.core.engine import CoreLimits, DecisionCore
from agent.intel.model import EvidenceKind
from agent.intel.snapshot import IntelSnapshot


def policy_from_settings(settings: Settings) -> Policy:
    actions = {kind: settings.actions.for_kind(kind) for kind in EvidenceKind}
    explicit = settings.actions.model_fields_set
    overrides = {kind: action for kind, action in actions.items() if kind.value in explicit}
    return Policy(
        overrides=overrides,
        actions=actions,
        drop_min_confidence=settings.actions.drop_min_confidence,
        dry_run=settings.dry_run,
        max_value_length=settings.log.max_value_length,
    )


def limits_from_settings(settings: Settings) -> CoreLimits:
    return CoreLimits(
        http_ports=frozenset(settings.http.ports),
        inspect_depth=settings.http.inspect_depth,
        max_flows=settings.http.max_flows,
        idle_timeout=settings.http.idle_timeout,
    )


def build_detector(settings: Settings, snapshot: IntelSnapshot) -> Detector:
    return Detector(snapshot, policy_from_settings(settings))


def build_core(settings: Settings, snapshot: IntelSnapshot) -> DecisionCore:
    return DecisionCore(build_detector(settings, snapshot), limits_from_settings(settings))
