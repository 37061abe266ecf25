"""Which intel the agent loads: configured sources, `--intel` additions, the embedded default."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.config import EMBEDDED_INTEL, Settings
from agent.intel.allowlist import Allowlist, apply_allowlist
from agent.intel.feed_store import cached_feed_sources
from agent.intel.model import LoadProblem, LoadResult, SourceRef
from agent.intel.snapshot import IntelSnapshot, build_snapshot
from agent.intel.sources import load_sources


def embedded_intel_dir() -> Path:
    """The default campaign shipped with the agent (wheel) or in the source tree."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (
        package_dir / "default_intel",
        package_dir.parent / "configs" / "campaigns",
        Path("/etc/rustyflag-agent/campaigns"),
    ):
        if candidate.is_dir():
            return candidate
    return package_dir / "default_intel"


@dataclass(frozen=True, slots=True)
class IntelLoad:
    """The outcome of loading every source: a snapshot when usable, and all problems."""

    sources: tuple[Path, ...]
    result: LoadResult
    snapshot: IntelSnapshot | None

    @property
    def errors(self) -> tuple[LoadProblem, ...]:
        return tuple(p for p in self.result.problems if p.fatal)

    @property
    def warnings(self) -> tuple[LoadProblem, ...]:
        return tuple(p for p in self.result.problems if not p.fatal)


def resolve_sources(
    settings: Settings, extra: Sequence[Path] = (), *, include_configured: bool = True
) -> list[Path]:
    paths: list[Path] = []
    if include_configured:
        for source in settings.intel.sources:
            paths.append(embedded_intel_dir() if source == EMBEDDED_INTEL else Path(source))
        # Feeds' last good copies: what a gateway enforces with or without network.
        paths.extend(cached_feed_sources(settings)[0])
    paths.extend(extra)
    return paths


def load_intel(
    settings: Settings, extra: Sequence[Path] = (), *, include_configured: bool = True
) -> IntelLoad:
    """Load every source; the snapshot is None when any source has a fatal problem."""
    paths = resolve_sources(settings, extra, include_configured=include_configured)
    overrides: dict[Path, str] = {Path(k): v for k, v in settings.intel.formats.items()}
    feed_warnings: tuple[LoadProblem, ...] = ()
    if include_configured:
        feed_formats, feed_warnings = cached_feed_sources(settings)
        overrides.update(feed_formats)
    if not paths:
        problem = LoadProblem(
            SourceRef("intel"), "no intel sources (configure intel.sources or pass --intel)"
        )
        return IntelLoad((), LoadResult((), (problem, *feed_warnings)), None)
    result = load_sources(paths, overrides)
    if feed_warnings:
        result = LoadResult(result.campaigns, (*result.problems, *feed_warnings))
    allow = Allowlist.build(settings.intel.never_block, settings.intel.allow_hostnames)
    campaigns, allow_warnings = apply_allowlist(result.campaigns, allow)
    if allow_warnings:
        result = LoadResult(campaigns, (*result.problems, *allow_warnings))
    snapshot = build_snapshot(result.campaigns) if result.ok and result.campaigns else None
    if result.ok and not result.campaigns:
        problem = LoadProblem(SourceRef(str(paths[0])), "no campaign found in the intel sources")
        result = LoadResult(result.campaigns, (*result.problems, problem))
    return IntelLoad(tuple(paths), result, snapshot)
