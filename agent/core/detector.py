"""Matching intel against traffic: built once per intel snapshot, immutable, swapped on reload.

The Detector turns what the packet and HTTP layers found (addresses, a
request, a hostname) into Reasons: which campaign, which indicator, which
technique, what evidence, and the action policy gives it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

import ahocorasick

from agent.core.classify import Finding, classify_value
from agent.core.decision import Evidence, IndicatorRef, Reason, TechniqueRef, Where
from agent.core.decode import Packet
from agent.core.http import HttpRequest
from agent.core.normalize import normalize_path
from agent.core.params import Param, base_name, extract_params
from agent.core.routes import RouteMatcher
from agent.intel.model import (
    IOA,
    IOC,
    Action,
    ArgumentType,
    Campaign,
    Confidence,
    EvidenceKind,
    IOAType,
)
from agent.intel.snapshot import IntelSnapshot

# Without an enrichment, evidence maps to the campaign's technique that names this CWE.
_FALLBACK_CWES: dict[EvidenceKind, tuple[str, ...]] = {
    EvidenceKind.SQLI: ("CWE-89",),
    EvidenceKind.XSS: ("CWE-79", "CWE-80"),
    EvidenceKind.TYPE_VIOLATION: ("CWE-20", "CWE-89"),
    EvidenceKind.FILE: ("CWE-22", "CWE-275"),
    EvidenceKind.LIBRARY: ("CWE-22",),
    EvidenceKind.INPUT_VALUE: ("CWE-22", "CWE-20"),
}
_PATH_END = frozenset("/?;&")  # what may follow a matched IOA path (& after a query IOA)
_NUMERIC_TYPES = frozenset({ArgumentType.INTEGER, ArgumentType.NUMBER})
# After an argument's name: a member (`[x]`, `.x`), not an index (`[0]`, `[]`).
_OBJECT_MEMBER = re.compile(r"(?:\[[0-9]*\])*(?:\.|\[[^\]0-9])")


@dataclass(frozen=True, slots=True)
class Policy:
    """What the operator decided: defaults per evidence kind and the drop threshold."""

    # Actions the operator set explicitly: they win over a campaign's enrichment.
    overrides: dict[EvidenceKind, Action] = field(default_factory=dict)
    # Built-in defaults: used when neither the operator nor the enrichment says.
    actions: dict[EvidenceKind, Action] = field(default_factory=dict)
    drop_min_confidence: Confidence = Confidence.LOW
    dry_run: bool = False
    max_value_length: int = 256

    def default_action(self, kind: EvidenceKind) -> Action:
        return self.actions.get(
            kind, Action.DROP if kind == EvidenceKind.IOC_ADDRESS else Action.FLAG
        )


@dataclass(frozen=True, slots=True)
class _ArgumentWatch:
    campaign: Campaign
    ioa: IOA
    expected: ArgumentType | None


def _pattern_key(value: str) -> str:
    """A Snort-style content pattern (`abc|0d 0a|`) as text: hex runs between pipes become characters."""
    parts = value.split("|")
    if len(parts) < 3 or len(parts) % 2 == 0:
        return value.lower()
    out: list[str] = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            out.append(part.lower())
            continue
        try:
            out.append(bytes.fromhex(part).decode("latin-1"))
        except ValueError:
            return value.lower()
    return "".join(out)


def _ioa_key(ioa: IOA) -> str:
    if ioa.type in (IOAType.FILE, IOAType.LIBRARY):
        return _ioa_path_key(ioa.value)
    if ioa.type == IOAType.PATTERN:
        return _pattern_key(ioa.value)
    return ioa.value.lower()


def _ioa_path_key(value: str) -> str:
    """An IOA path as it appears in a normalized, lower-cased request path."""
    text = unquote(value.strip()).replace("\\", "/").lower()
    while "//" in text:
        text = text.replace("//", "/")
    return text


def _windows_alias(path: str, start: int) -> bool:
    """Whether the rest of the segment from `start` names the same file on Windows:
    trailing dots and spaces (`srv.go.`, `srv.go%20`) or the default stream (`::$DATA`)."""
    end = start
    length = len(path)
    while end < length and path[end] not in _PATH_END:
        end += 1
    tail = path[start:end]
    return not tail.strip(". ") or tail.startswith("::$data")


class Detector:
    def __init__(self, snapshot: IntelSnapshot, policy: Policy) -> None:
        self.snapshot = snapshot
        self.policy = policy
        self.intel_version = snapshot.intel_version
        self._technique_cache: dict[tuple[str, EvidenceKind], TechniqueRef | None] = {}
        self._action_cache: dict[tuple[str, EvidenceKind, Confidence], Action] = {}

        templates: list[str] = []
        argument_types: dict[tuple[str, str], ArgumentType] = {}
        for campaign in snapshot.campaigns:
            if campaign.enrichment is not None:
                templates.extend(campaign.enrichment.routes)
                for name, kind in campaign.enrichment.argument_types:
                    argument_types[(campaign.name, name.lower())] = kind
        self.routes = RouteMatcher(sorted(set(templates)))
        # Without hostname IOCs no Host, SNI or DNS name can hit: the lookups are skipped.
        self.has_hostnames = any(
            ioc.hostname for campaign in snapshot.campaigns for ioc in campaign.iocs
        )

        self._arguments: dict[str, tuple[_ArgumentWatch, ...]] = {
            name: tuple(
                _ArgumentWatch(hit.campaign, hit.ioa, argument_types.get((hit.campaign.name, name)))
                for hit in hits
            )
            for name, hits in snapshot.argument_ioas.items()
        }
        path_ioas = [
            hit.ioa for kind in (IOAType.FILE, IOAType.LIBRARY) for hit in snapshot.ioas(kind)
        ]
        self._path_keys_with_query = any("?" in ioa.value for ioa in path_ioas)
        self._paths = self._automaton(
            (hit.campaign, hit.ioa)
            for kind in (IOAType.FILE, IOAType.LIBRARY)
            for hit in snapshot.ioas(kind)
        )
        self._values = self._automaton(
            (hit.campaign, hit.ioa) for hit in snapshot.ioas(IOAType.INPUT_VALUE)
        )
        self._patterns = self._automaton(
            (hit.campaign, hit.ioa) for hit in snapshot.ioas(IOAType.PATTERN)
        )

    def lane_screen(
        self,
    ) -> tuple[list[bytes], list[bytes], list[tuple[list[bytes], list[int]]]] | None:
        """What the core's fast lane (engine.py, _lane.c) must know to pass a request as
        matching nothing: every IOA path key, every watched argument name, and the route
        templates with a watched capture (segments, kinds: 0 literal, 1 capture, 2 watched).

        None when the intel has something the lane does not screen (hostnames, input
        values, patterns): then every request goes through the Python path.
        """
        if self.has_hostnames or self._values is not None or self._patterns is not None:
            return None
        keys = [str(key).encode() for key in self._paths] if self._paths else []
        names = [name.encode() for name in self._arguments]
        routes: list[tuple[list[bytes], list[int]]] = []
        for template in self.routes.templates:
            trimmed = template.split("?", 1)[0].strip("/")
            segments = trimmed.split("/") if trimmed else []
            kinds = []
            for segment in segments:
                if len(segment) > 2 and segment[0] == "{" and segment[-1] == "}":
                    watched = segment[1:-1].strip().lower() in self._arguments
                    kinds.append(2 if watched else 1)
                else:
                    kinds.append(0)
            if 2 in kinds:
                routes.append(([s.lower().encode() for s in segments], kinds))
        return keys, names, routes

    # -- building -------------------------------------------------------------------------

    @staticmethod
    def _automaton(entries: Iterable[tuple[Campaign, IOA]]) -> ahocorasick.Automaton | None:
        table: dict[str, list[tuple[Campaign, IOA]]] = {}
        for campaign, ioa in entries:
            key = _ioa_key(ioa)
            if key:
                table.setdefault(key, []).append((campaign, ioa))
        if not table:
            return None
        automaton = ahocorasick.Automaton()
        for key, hits in table.items():
            automaton.add_word(key, (key, tuple(hits)))
        automaton.make_automaton()
        return automaton

    def technique(self, campaign: Campaign, kind: EvidenceKind) -> TechniqueRef | None:
        cache_key = (campaign.name, kind)
        if cache_key in self._technique_cache:
            return self._technique_cache[cache_key]
        found = None
        if campaign.enrichment is not None:
            attack_id = campaign.enrichment.technique_for(kind)
            if attack_id is not None:
                found = campaign.technique(attack_id)
        if found is None:
            for cwe in _FALLBACK_CWES.get(kind, ()):
                found = next((t for t in campaign.techniques if cwe in t.cwes), None)
                if found is not None:
                    break
        ref = (
            None if found is None else TechniqueRef(found.attack_id, found.description, found.cwes)
        )
        self._technique_cache[cache_key] = ref
        return ref

    def action(self, campaign: Campaign, kind: EvidenceKind, confidence: Confidence) -> Action:
        cache_key = (campaign.name, kind, confidence)
        cached = self._action_cache.get(cache_key)
        if cached is not None:
            return cached
        action = self.policy.overrides.get(kind)
        if action is None and campaign.enrichment is not None:
            action = campaign.enrichment.action_for(kind)
        if action is None:
            action = self.policy.default_action(kind)
        if action == Action.DROP and confidence.rank < self.policy.drop_min_confidence.rank:
            action = Action.FLAG
        self._action_cache[cache_key] = action
        return action

    def _reason(
        self,
        campaign: Campaign,
        indicator: IndicatorRef,
        evidence: Evidence,
    ) -> Reason:
        return Reason(
            campaign=campaign.name,
            indicator=indicator,
            technique=self.technique(campaign, evidence.kind),
            evidence=evidence,
            action=self.action(campaign, evidence.kind, indicator.confidence),
        )

    # -- IOCs -----------------------------------------------------------------------------

    @staticmethod
    def _ioc_ref(ioc: IOC, *, hostname: bool = False) -> IndicatorRef:
        if hostname:
            kind = "hostname"
            value = ioc.hostname or ""
        else:
            assert ioc.network is not None
            exact = ioc.network.prefixlen == ioc.network.max_prefixlen
            kind = "address" if exact else "network"
            value = ioc.value
        return IndicatorRef("ioc", ioc.id, kind, value, ioc.confidence)

    def address_reasons(self, packet: Packet) -> list[Reason]:
        """IOC addresses in the packet's source or destination (mirrors the kernel sets)."""
        match = self.snapshot.match_address
        src_hits, dst_hits = match(packet.src), match(packet.dst)
        if not src_hits and not dst_hits:
            return []
        reasons: list[Reason] = []
        for hits, text, where in (
            (src_hits, packet.src_text, Where.SRC_IP),
            (dst_hits, packet.dst_text, Where.DEST_IP),
        ):
            for hit in hits:
                evidence = Evidence(EvidenceKind.IOC_ADDRESS, where, text)
                reasons.append(self._reason(hit.campaign, self._ioc_ref(hit.ioc), evidence))
        return reasons

    def hostname_reasons(self, hostname: str, where: Where) -> list[Reason]:
        reasons: list[Reason] = []
        for hit in self.snapshot.match_hostname(hostname):
            evidence = Evidence(EvidenceKind.IOC_HOSTNAME, where, hostname)
            reasons.append(
                self._reason(hit.campaign, self._ioc_ref(hit.ioc, hostname=True), evidence)
            )
        return reasons

    # -- IOAs in HTTP -----------------------------------------------------------------------

    @staticmethod
    def _ioa_ref(ioa: IOA) -> IndicatorRef:
        return IndicatorRef("ioa", ioa.id, ioa.type.value, ioa.value, ioa.confidence)

    def _path_reasons(self, lowered_path: str) -> list[Reason]:
        if self._paths is None:
            return []
        reasons: list[Reason] = []
        seen: set[str] = set()
        length = len(lowered_path)
        for end, (key, hits) in self._paths.iter(lowered_path):
            start = end - len(key) + 1
            # Segment boundaries: "srv.go" must not match "/xsrv.go" nor "/srv.gold".
            if key[0] != "/" and start > 0 and lowered_path[start - 1] != "/":
                continue
            if (
                key[-1] not in _PATH_END
                and end + 1 < length
                and lowered_path[end + 1] not in _PATH_END
                and not _windows_alias(lowered_path, end + 1)
            ):
                continue
            if key in seen:
                continue
            seen.add(key)
            for campaign, ioa in hits:
                kind = EvidenceKind.LIBRARY if ioa.type == IOAType.LIBRARY else EvidenceKind.FILE
                evidence = Evidence(kind, Where.PATH, lowered_path)
                reasons.append(self._reason(campaign, self._ioa_ref(ioa), evidence))
        return reasons

    def _value_reasons(
        self, automaton: ahocorasick.Automaton | None, text: str, where: Where, name: str | None
    ) -> list[Reason]:
        if automaton is None or not text:
            return []
        reasons: list[Reason] = []
        seen: set[str] = set()
        for _end, (key, hits) in automaton.iter(text.lower()):
            if key in seen:
                continue
            seen.add(key)
            for campaign, ioa in hits:
                kind = (
                    EvidenceKind.PATTERN
                    if ioa.type == IOAType.PATTERN
                    else EvidenceKind.INPUT_VALUE
                )
                evidence = Evidence(kind, where, text, name=name)
                reasons.append(self._reason(campaign, self._ioa_ref(ioa), evidence))
        return reasons

    def _argument_reasons(
        self, param: Param, name: str, *, structured: bool = False
    ) -> list[Reason]:
        """`structured`: the argument `name` is an object (`num[x]=`, `{"num": {...}}`) and
        `param` one of its members; a number-typed argument is then violated whatever the value."""
        watches = self._arguments.get(name)
        if not watches:
            return []
        reasons: list[Reason] = []
        findings_by_type: dict[ArgumentType | None, tuple[Finding, ...]] = {}
        for watch in watches:
            findings = findings_by_type.get(watch.expected)
            if findings is None:
                findings = classify_value(param.value, watch.expected)
                if (
                    structured
                    and watch.expected in _NUMERIC_TYPES
                    and not any(f.kind == EvidenceKind.TYPE_VIOLATION for f in findings)
                ):
                    violation = Finding(
                        EvidenceKind.TYPE_VIOLATION, f"expected {watch.expected}, got an object"
                    )
                    findings = (violation, *findings)
                findings_by_type[watch.expected] = findings
            for finding in findings:
                evidence = Evidence(
                    finding.kind,
                    param.where,
                    param.value,
                    name=name,
                    detail=finding.detail,
                )
                reasons.append(self._reason(watch.campaign, self._ioa_ref(watch.ioa), evidence))
        return reasons

    def request_reasons(
        self, request: HttpRequest, *, only: frozenset[Where] | None = None
    ) -> tuple[list[Reason], str]:
        """Reasons for one HTTP request, and its normalized path.

        `only` restricts the evidence to some locations (used when the head of a
        request was inspected before its body arrived).
        """
        target = request.target
        normalized = normalize_path(target)
        lowered = normalized.path_lower
        reasons: list[Reason] = []
        head_wanted = only is None or Where.PATH in only
        if head_wanted:
            haystack = lowered
            if self._path_keys_with_query:
                # IOA paths such as "/ajax.php?action=login" include a query.
                query = target.partition("?")[2]
                if query:
                    haystack = f"{lowered}?{unquote(query).lower()}"
            reasons.extend(self._path_reasons(haystack))
            if self._values is not None or self._patterns is not None:
                decoded_target = unquote(target)
                reasons.extend(self._value_reasons(self._values, decoded_target, Where.PATH, None))
                reasons.extend(
                    self._value_reasons(self._patterns, decoded_target, Where.PATH, None)
                )
        arguments = self._arguments
        if arguments or self._values is not None:
            params: Sequence[Param] = extract_params(request, self.routes, path=normalized).params
            for param in params:
                if only is not None and param.where not in only:
                    continue
                name, full_name = param.name, param.full_name
                object_of = ""
                if full_name != name and full_name:
                    # `num[x]`, `{"num": {...}}`: a member of an object named like an IOA
                    # argument (PHP, qs and mysqljs hand the handler the object).
                    base = base_name(full_name)
                    if base in arguments and _OBJECT_MEMBER.match(full_name, len(base)):
                        object_of = base
                        reasons.extend(self._argument_reasons(param, base, structured=True))
                if name in arguments and name != object_of:  # most parameters are not
                    reasons.extend(self._argument_reasons(param, name))
                if self._values is not None and param.where != Where.PATH:
                    reasons.extend(
                        self._value_reasons(self._values, param.value, param.where, param.name)
                    )
        if self.has_hostnames and (only is None or Where.HOST in only) and request.host:
            host = (
                request.host.rsplit(":", 1)[0] if not request.host.startswith("[") else request.host
            )
            reasons.extend(self.hostname_reasons(host.strip().rstrip(".").lower(), Where.HOST))
        if len(reasons) > 1:
            # The same evidence reached twice (two routes, a repeated parameter) is one reason.
            reasons = list(dict.fromkeys(reasons))
        return reasons, normalized.path
