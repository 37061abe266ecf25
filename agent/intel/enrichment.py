"""Operator enrichment TOML (`<page stem>.enrich.toml`) -> `Enrichment`.

Owns the enrichment file format (docs/enrichment.md): CVEs, notes, route
templates, argument types, evidence-kind -> technique and -> action maps.
`parse_enrichment` validates what it can alone; `check_against_campaign`
validates what needs the page (campaign name, technique IDs on the page).
Pure: errors come back as LoadProblems with file:line, never as exceptions.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

from agent.intel.model import (
    Action,
    ArgumentType,
    Campaign,
    Enrichment,
    EvidenceKind,
    LoadProblem,
    SourceRef,
)

ENRICH_SUFFIX = ".enrich.toml"

_KNOWN_KEYS = frozenset(
    {"campaign", "cves", "notes", "routes", "arguments", "techniques", "actions"}
)
_CVE = re.compile(r"CVE-\d{4}-\d{4,}")
_ATTACK_ID = re.compile(r"T\d{4}(?:\.\d{3})?")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_ARG_NAME = re.compile(r"[^\s=&]+")


def line_of(text: str, key: str, after_line: int = 0) -> int:
    """1-based line where `key` is assigned (or a table header names it); 0 if unknown.

    tomllib gives no positions, so the text is searched: good enough to point
    an operator at the right line.
    """
    lines = text.split("\n")
    for index in range(after_line, len(lines)):
        stripped = lines[index].strip()
        for candidate in (key, f'"{key}"', f"'{key}'"):
            if stripped.startswith(candidate):
                rest = stripped[len(candidate) :].lstrip()
                if rest.startswith("="):
                    return index + 1
        if stripped in (f"[{key}]", f"[ {key} ]"):
            return index + 1
    return 0


def validate_route(template: str) -> str | None:
    """None if `template` is a well-formed route ('/a/{name}/b'), else why not."""
    if not template.startswith("/"):
        return "must start with '/'"
    if any(c in template for c in " ?#\t"):
        return "must be a path only (no spaces, query or fragment)"
    names: set[str] = set()
    for segment in template.split("/")[1:]:
        if "{" not in segment and "}" not in segment:
            continue
        if not (segment.startswith("{") and segment.endswith("}")):
            return f"parameter segment {segment!r} must be exactly '{{name}}'"
        name = segment[1:-1]
        if not _PARAM_NAME.fullmatch(name):
            return f"bad parameter name {name!r}"
        if name in names:
            return f"parameter {name!r} repeated"
        names.add(name)
    return None


def parse_enrichment(text: str, path: str) -> Enrichment | list[LoadProblem]:
    """Parse and validate one enrichment file; the campaign name is checked later.

    The `campaign` key is required; it is returned via `enrichment_campaign_name`.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _toml_error_line(str(exc))
        return [LoadProblem(SourceRef(path, line), f"invalid TOML: {exc}")]
    problems: list[LoadProblem] = []

    def err(key: str, message: str, table: str | None = None) -> None:
        start = line_of(text, table) if table else 0
        line = line_of(text, key, start) or start
        problems.append(LoadProblem(SourceRef(path, line), message))

    for key in data:
        if key not in _KNOWN_KEYS:
            err(key, f"unknown key {key!r} (known: {', '.join(sorted(_KNOWN_KEYS))})")
    campaign = data.get("campaign")
    if not isinstance(campaign, str) or not campaign.strip():
        err("campaign", "'campaign' (the page's campaign name) is required")
    cves = _str_list(data, "cves", err)
    for cve in cves:
        if not _CVE.fullmatch(cve):
            err("cves", f"{cve!r} is not a CVE ID (CVE-YYYY-NNNN)")
    notes = data.get("notes", "")
    if not isinstance(notes, str):
        err("notes", "'notes' must be a string")
        notes = ""
    routes = _str_list(data, "routes", err)
    for route in routes:
        why = validate_route(route)
        if why:
            err("routes", f"route {route!r}: {why}")
    arguments: list[tuple[str, ArgumentType]] = []
    for name, kind in _table(data, "arguments", err).items():
        if not _ARG_NAME.fullmatch(name):
            err(name, f"bad argument name {name!r}", "arguments")
        elif kind not in ArgumentType._value2member_map_:
            err(
                name,
                f"argument {name!r}: type {kind!r} is not one of "
                f"{', '.join(t.value for t in ArgumentType)}",
                "arguments",
            )
        else:
            arguments.append((name, ArgumentType(kind)))
    techniques: list[tuple[EvidenceKind, str]] = []
    for kind, attack_id in _table(data, "techniques", err).items():
        evidence = _evidence(kind)
        if evidence is None:
            err(kind, f"unknown evidence kind {kind!r}", "techniques")
        elif not isinstance(attack_id, str) or not _ATTACK_ID.fullmatch(attack_id):
            err(
                kind,
                f"{kind}: {attack_id!r} is not an ATT&CK ID (T1234 or T1234.567)",
                "techniques",
            )
        else:
            techniques.append((evidence, attack_id))
    actions: list[tuple[EvidenceKind, Action]] = []
    for kind, action in _table(data, "actions", err).items():
        evidence = _evidence(kind)
        if evidence is None:
            err(kind, f"unknown evidence kind {kind!r}", "actions")
        elif action not in Action._value2member_map_:
            err(kind, f"{kind}: action {action!r} is not one of accept, flag, drop", "actions")
        else:
            actions.append((evidence, Action(action)))
    if problems:
        return problems
    return Enrichment(
        source=SourceRef(path, 1),
        cves=tuple(cves),
        routes=tuple(routes),
        argument_types=tuple(arguments),
        evidence_techniques=tuple(techniques),
        actions=tuple(actions),
        notes=notes,
    )


def enrichment_campaign_name(text: str) -> str | None:
    """The `campaign` value of an enrichment file, or None if unreadable."""
    try:
        value = tomllib.loads(text).get("campaign")
    except tomllib.TOMLDecodeError:
        return None
    return value.strip() if isinstance(value, str) else None


def check_against_campaign(
    enrichment: Enrichment, text: str, campaign: Campaign
) -> list[LoadProblem]:
    """Checks that need the page: campaign name and technique IDs present on it."""
    path = enrichment.source.path
    problems: list[LoadProblem] = []
    name = enrichment_campaign_name(text)
    if name != campaign.name:
        problems.append(
            LoadProblem(
                SourceRef(path, line_of(text, "campaign")),
                f"campaign {name!r} does not match the page's campaign {campaign.name!r}",
            )
        )
    start = line_of(text, "techniques")
    for kind, attack_id in enrichment.evidence_techniques:
        if campaign.technique(attack_id) is None:
            on_page = ", ".join(t.attack_id for t in campaign.techniques) or "none"
            problems.append(
                LoadProblem(
                    SourceRef(path, line_of(text, kind.value, start) or start),
                    f"{kind.value}: technique {attack_id} is not on the page "
                    f"(page lists: {on_page})",
                )
            )
    return problems


def _evidence(kind: str) -> EvidenceKind | None:
    return EvidenceKind(kind) if kind in EvidenceKind._value2member_map_ else None


def _str_list(data: Mapping[str, Any], key: str, err: Callable[..., None]) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        err(key, f"{key!r} must be a list of strings")
        return []
    return value


def _table(data: Mapping[str, Any], key: str, err: Callable[..., None]) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        err(key, f"[{key}] must be a table")
        return {}
    return value


def _toml_error_line(message: str) -> int:
    # tomllib messages end with "(at line N, column M)".
    found = re.search(r"at line (\d+)", message)
    return int(found.group(1)) if found else 0
