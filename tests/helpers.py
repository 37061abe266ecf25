"""Shared test helpers: the embedded campaign, a core, schema validation."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from agent.config import Settings, load_settings
from agent.core.engine import DecisionCore
from agent.events import decision_schema
from agent.intel.loading import load_intel
from agent.intel.snapshot import IntelSnapshot
from agent.wiring import build_core

REPO = Path(__file__).resolve().parent.parent
# shared/ sits beside the checkout (CI lays a copy there); /work/shared in a session.
SAMPLES = next(
    (
        candidate
        for candidate in (REPO.parent / "shared" / "samples" / "vuldb", Path("/work/shared/samples/vuldb"))
        if candidate.is_dir()
    ),
    REPO.parent / "shared" / "samples" / "vuldb",
)


def default_settings(**overrides: Any) -> Settings:
    settings = load_settings(REPO / "configs" / "agent.toml")
    return settings.model_copy(update=overrides) if overrides else settings


@cache
def default_snapshot() -> IntelSnapshot:
    load = load_intel(default_settings())
    assert load.snapshot is not None, [str(p) for p in load.errors]
    return load.snapshot


def default_core(**overrides: Any) -> DecisionCore:
    return build_core(default_settings(**overrides), default_snapshot())


def core_with_actions(**actions: str) -> DecisionCore:
    """A core whose operator config sets these actions explicitly (they beat the enrichment)."""
    base = default_settings()
    settings = base.model_copy(update={"actions": base.actions.model_copy(update=actions)})
    return build_core(settings, default_snapshot())


_VALIDATOR = jsonschema.Draft202012Validator(decision_schema())


def assert_valid_event(event: dict[str, Any]) -> None:
    errors = sorted(_VALIDATOR.iter_errors(event), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
