"""Reading intel from disk: format detection, directories, enrichment attachment.

The only I/O in `agent.intel`: files are read here and handed to the pure
parsers. Every failure (unreadable file, undecodable bytes, parse error,
enrichment error) comes back as a LoadProblem with file:line, never raised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from agent.intel.enrichment import ENRICH_SUFFIX, check_against_campaign, parse_enrichment
from agent.intel.model import Campaign, LoadProblem, LoadResult, SourceRef
from agent.intel.plainlist import parse_plainlist
from agent.intel.snapshot import paused_gc
from agent.intel.stix import parse_stix
from agent.intel.vuldb import TITLE_SUFFIX, parse_vuldb

Format = Literal["vuldb", "stix", "plain"]
FORMATS: tuple[Format, ...] = ("vuldb", "stix", "plain")

_PARSERS: dict[str, Callable[[str, str], LoadResult]] = {
    "vuldb": parse_vuldb,
    "stix": parse_stix,
    "plain": parse_plainlist,
}
# Files in a directory that are never pages.
_SKIPPED_NAMES = frozenset({"NOTICE.md", "README.adoc"})


def detect_format(text: str) -> Format:
    """Guess the format from content: JSON bundle -> stix, VulDB title -> vuldb, else plain."""
    head = text.lstrip("\ufeff \t\r\n")
    if head.startswith("{"):
        return "stix"  # JSON: the STIX parser says precisely if it is not a bundle
    for line in head.split("\n", 20)[:20]:
        stripped = line.strip()
        if stripped.startswith("# ") and stripped.endswith(TITLE_SUFFIX):
            return "vuldb"
    return "plain"


def _read_text(path: Path) -> tuple[str | None, LoadProblem | None]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, LoadProblem(SourceRef(str(path)), f"cannot read: {exc.strerror or exc}")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, LoadProblem(SourceRef(str(path), line), f"not UTF-8: {exc.reason}")


def enrichment_path(page: Path) -> Path:
    """`dir/rusty-flag.md` -> `dir/rusty-flag.enrich.toml` (the stem: last suffix dropped)."""
    return page.with_name(page.stem + ENRICH_SUFFIX)


def _attach_enrichment(page: Path, result: LoadResult) -> LoadResult:
    enrich_file = enrichment_path(page)
    if not enrich_file.is_file() or len(result.campaigns) != 1:
        return result
    text, problem = _read_text(enrich_file)
    if problem is not None or text is None:
        return LoadResult(result.campaigns, (*result.problems, *(p for p in [problem] if p)))
    parsed = parse_enrichment(text, str(enrich_file))
    if isinstance(parsed, list):
        return LoadResult(result.campaigns, (*result.problems, *parsed))
    campaign = result.campaigns[0]
    mismatches = check_against_campaign(parsed, text, campaign)
    if mismatches:
        return LoadResult(result.campaigns, (*result.problems, *mismatches))
    enriched = dataclasses.replace(campaign, enrichment=parsed)
    return LoadResult((enriched,), result.problems)


def _load_file(path: Path, fmt: str | None) -> LoadResult:
    text, problem = _read_text(path)
    if problem is not None or text is None:
        return LoadResult(problems=tuple(p for p in [problem] if p))
    chosen = fmt or detect_format(text)
    parser = _PARSERS.get(chosen)
    if parser is None:
        return LoadResult(
            problems=(
                LoadProblem(
                    SourceRef(str(path)), f"unknown format {chosen!r} (known: {', '.join(FORMATS)})"
                ),
            )
        )
    try:
        result = parser(text, str(path))
    except Exception as exc:  # last line of defence: a parser bug must not stop the agent
        return LoadResult(
            problems=(LoadProblem(SourceRef(str(path)), f"{chosen} parser failed: {exc!r}"),)
        )
    return _attach_enrichment(path, result)


def load_source(path: Path, fmt: str | None = None) -> LoadResult:
    """Load a file, or every page of a directory (sorted; enrichment files attach to pages)."""
    if path.is_dir():
        try:
            entries = sorted(p for p in path.iterdir() if p.is_file())
        except OSError as exc:
            return LoadResult(
                problems=(LoadProblem(SourceRef(str(path)), f"cannot list: {exc.strerror}"),)
            )
        pages = [
            p
            for p in entries
            if not p.name.endswith(ENRICH_SUFFIX)
            and p.name not in _SKIPPED_NAMES
            and not p.name.startswith(".")
        ]
        with paused_gc():
            return merge_results([_load_file(p, fmt) for p in pages])
    if not path.exists():
        return LoadResult(problems=(LoadProblem(SourceRef(str(path)), "no such file"),))
    if path.name.endswith(ENRICH_SUFFIX):
        return LoadResult(
            problems=(
                LoadProblem(
                    SourceRef(str(path)),
                    "an enrichment file is not a source: load the page beside it",
                ),
            )
        )
    return _load_file(path, fmt)


def load_sources(
    paths: Sequence[Path], fmt_overrides: Mapping[Path, str] | None = None
) -> LoadResult:
    """Load several files/directories; `fmt_overrides` forces a format per path."""
    overrides = fmt_overrides or {}
    with paused_gc():
        return merge_results([load_source(p, overrides.get(p)) for p in paths])


def merge_results(results: Iterable[LoadResult]) -> LoadResult:
    campaigns: list[Campaign] = []
    problems: list[LoadProblem] = []
    for result in results:
        campaigns.extend(result.campaigns)
        problems.extend(result.problems)
    return LoadResult(tuple(campaigns), tuple(problems))
