"""STIX 2.1 bundles -> one `Campaign` per bundle.

Owns the mapping from STIX objects to the indicator model:
- indicator patterns (parsed and validated by `stix2-patterns`, never by hand)
  on ipv4-addr / ipv6-addr / domain-name / url -> IOCs; a url's path -> a File IOA;
- attack-pattern with a mitre-attack external ID (and CWE refs) -> Technique;
- `indicates` relationships name the actor/campaign an IOC belongs to;
- the first campaign / intrusion-set / threat-actor names the Campaign.

Pure; an invalid bundle is a fatal LoadProblem, a bad indicator a warning.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import stix2
from stix2patterns.pattern import Pattern
from stix2patterns.validator import run_validator

from agent.intel.model import (
    IOA,
    IOC,
    Campaign,
    CampaignKind,
    Confidence,
    IOAType,
    IPNetwork,
    LoadProblem,
    LoadResult,
    SourceRef,
    Technique,
)
from agent.intel.vuldb import slugify

# STIX object type -> the campaign kind it names, in order of preference.
_NAMING_TYPES: tuple[tuple[str, CampaignKind], ...] = (
    ("campaign", CampaignKind.CAMPAIGN),
    ("intrusion-set", CampaignKind.ACTOR),
    ("threat-actor", CampaignKind.ACTOR),
)
_INDICATED_TYPES = frozenset({"campaign", "intrusion-set", "threat-actor", "malware"})


def stix_confidence(value: object, default: Confidence = Confidence.MEDIUM) -> Confidence:
    """STIX 0-100 confidence -> High (>= 70) / Medium (>= 30) / Low."""
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    if value >= 70:
        return Confidence.HIGH
    if value >= 30:
        return Confidence.MEDIUM
    return Confidence.LOW


def unquote_stix_string(literal: str) -> str:
    """A STIX pattern string literal ('it\\'s') -> its value (it's)."""
    if len(literal) >= 2 and literal[0] == "'" and literal[-1] == "'":
        literal = literal[1:-1]
    return literal.replace("\\'", "'").replace("\\\\", "\\")


@dataclass(slots=True)
class _Bundle:
    path: str
    objects: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    problems: list[LoadProblem] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.problems.append(LoadProblem(SourceRef(self.path), message, fatal=False))

    def of_type(self, stix_type: str) -> list[Mapping[str, Any]]:
        return [o for o in self.objects.values() if o.get("type") == stix_type]


def parse_stix(text: str, path: str) -> LoadResult:
    """Parse one STIX 2.1 bundle (JSON text). Never raises on any text."""
    source = SourceRef(path)
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return LoadResult(problems=(LoadProblem(source, f"not JSON: {exc}"),))
    if not isinstance(raw, dict) or raw.get("type") != "bundle":
        return LoadResult(problems=(LoadProblem(source, "not a STIX bundle (type != 'bundle')"),))
    try:
        stix2.parse(raw, allow_custom=True)
    except Exception as exc:  # stix2 raises many unrelated types on bad input
        return LoadResult(problems=(LoadProblem(source, f"invalid STIX 2.1 bundle: {exc}"),))
    bundle = _Bundle(path)
    for obj in raw.get("objects") or ():
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            bundle.objects[obj["id"]] = obj
    name, kind = _campaign_name(bundle, path)
    slug = slugify(name)
    indicated = _indicated_names(bundle)
    iocs: list[IOC] = []
    ioas: list[IOA] = []
    for indicator in bundle.of_type("indicator"):
        _read_indicator(bundle, indicator, indicated, slug=slug, iocs=iocs, ioas=ioas)
    techniques = [t for ap in bundle.of_type("attack-pattern") if (t := _technique(ap, path))]
    references = sorted(
        {
            ref["url"]
            for obj in bundle.objects.values()
            if obj.get("type") in ("campaign", "intrusion-set", "threat-actor", "report")
            for ref in obj.get("external_references") or ()
            if isinstance(ref, dict) and isinstance(ref.get("url"), str)
        }
    )
    if not iocs and not ioas:
        bundle.warn("bundle has no usable indicator")
    campaign = Campaign(
        name=name,
        kind=kind,
        source=path,
        content_hash=hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        iocs=tuple(iocs),
        techniques=tuple(techniques),
        ioas=tuple(ioas),
        references=tuple(references),
        warnings=tuple(p.message for p in bundle.problems),
    )
    return LoadResult(campaigns=(campaign,), problems=tuple(bundle.problems))


def _campaign_name(bundle: _Bundle, path: str) -> tuple[str, CampaignKind]:
    named = [
        (str(obj["name"]), kind)
        for stix_type, kind in _NAMING_TYPES
        for obj in bundle.of_type(stix_type)
        if isinstance(obj.get("name"), str) and obj["name"].strip()
    ]
    if not named:
        stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
        return stem, CampaignKind.CAMPAIGN
    if len({n for n, _ in named}) > 1:
        bundle.warn(f"bundle names several campaigns/actors; using {named[0][0]!r}")
    return named[0][0].strip(), named[0][1]


def _indicated_names(bundle: _Bundle) -> dict[str, str]:
    """indicator id -> name of the campaign/actor/malware it `indicates`."""
    names: dict[str, str] = {}
    for rel in bundle.of_type("relationship"):
        if rel.get("relationship_type") != "indicates":
            continue
        src, dst = rel.get("source_ref"), rel.get("target_ref")
        target = bundle.objects.get(dst) if isinstance(dst, str) else None
        if not isinstance(src, str) or target is None:
            bundle.warn(f"relationship {rel.get('id')} points outside the bundle")
            continue
        if target.get("type") in _INDICATED_TYPES and isinstance(target.get("name"), str):
            names.setdefault(src, target["name"])
    return names


def _technique(obj: Mapping[str, Any], path: str) -> Technique | None:
    attack_id = None
    cwes: list[str] = []
    for ref in obj.get("external_references") or ():
        if not isinstance(ref, dict):
            continue
        source_name = str(ref.get("source_name", "")).lower()
        external_id = ref.get("external_id")
        if not isinstance(external_id, str):
            continue
        if source_name == "mitre-attack" and attack_id is None:
            attack_id = external_id
        elif source_name == "cwe":
            cwes.append(external_id)
    if attack_id is None:
        return None
    return Technique(
        attack_id=attack_id,
        cwes=tuple(cwes),
        description=str(obj.get("name", "")),
        confidence=stix_confidence(obj.get("confidence"), Confidence.HIGH),
        source=SourceRef(path),
    )


def _read_indicator(
    bundle: _Bundle,
    indicator: Mapping[str, Any],
    indicated: Mapping[str, str],
    *,
    slug: str,
    iocs: list[IOC],
    ioas: list[IOA],
) -> None:
    ind_id = str(indicator.get("id"))
    pattern = indicator.get("pattern")
    if indicator.get("pattern_type", "stix") != "stix" or not isinstance(pattern, str):
        bundle.warn(f"{ind_id}: pattern type {indicator.get('pattern_type')!r} not supported")
        return
    errors = run_validator(pattern)
    if errors:
        bundle.warn(f"{ind_id}: invalid pattern: {'; '.join(map(str, errors))}")
        return
    try:
        comparisons = Pattern(pattern).inspect().comparisons
    except Exception as exc:  # the pattern library raises its own parse errors
        bundle.warn(f"{ind_id}: unreadable pattern: {exc}")
        return
    confidence = stix_confidence(indicator.get("confidence"))
    actor = indicated.get(ind_id)
    source = SourceRef(bundle.path)
    for object_type, items in comparisons.items():
        for prop_path, op, literal in items:
            if prop_path != ["value"] or op != "=":
                bundle.warn(f"{ind_id}: {object_type}:{prop_path} {op} not used")
                continue
            value = unquote_stix_string(literal)
            if object_type in ("ipv4-addr", "ipv6-addr"):
                network = _network(value)
                if network is None:
                    bundle.warn(f"{ind_id}: invalid address {value!r}")
                    continue
                iocs.append(
                    _ioc(
                        slug,
                        len(iocs),
                        network,
                        None,
                        actor=actor,
                        confidence=confidence,
                        source=source,
                    )
                )
            elif object_type == "domain-name":
                iocs.append(
                    _ioc(
                        slug,
                        len(iocs),
                        None,
                        value,
                        actor=actor,
                        confidence=confidence,
                        source=source,
                    )
                )
            elif object_type == "url":
                _read_url(
                    bundle,
                    ind_id,
                    value,
                    slug=slug,
                    actor=actor,
                    confidence=confidence,
                    iocs=iocs,
                    ioas=ioas,
                )
            else:
                bundle.warn(f"{ind_id}: object type {object_type!r} not used")


def _read_url(
    bundle: _Bundle,
    ind_id: str,
    url: str,
    *,
    slug: str,
    actor: str | None,
    confidence: Confidence,
    iocs: list[IOC],
    ioas: list[IOA],
) -> None:
    source = SourceRef(bundle.path)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        bundle.warn(f"{ind_id}: invalid url {url!r}")
        return
    if host:
        # A URL's host is an address IOC when it is an IP literal, else a hostname IOC.
        network = _network(host)
        hostname = None if network is not None else host
        iocs.append(
            _ioc(
                slug,
                len(iocs),
                network,
                hostname,
                actor=actor,
                confidence=confidence,
                source=source,
            )
        )
    if parts.path and parts.path != "/":
        ioas.append(
            IOA(
                id=f"{slug}:ioa:{len(ioas) + 1}",
                type=IOAType.FILE,
                value=parts.path,
                confidence=confidence,
                source=source,
            )
        )


def _network(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _ioc(
    slug: str,
    count: int,
    network: IPNetwork | None,
    hostname: str | None,
    *,
    actor: str | None,
    confidence: Confidence,
    source: SourceRef,
) -> IOC:
    return IOC(
        id=f"{slug}:ioc:{count + 1}",
        network=network,
        hostname=hostname,
        actor=actor,
        confidence=confidence,
        source=source,
    )
