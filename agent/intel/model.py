"""The indicator model: what a campaign says, typed and immutable.

Loaders (VulDB Markdown, STIX 2.1, plain lists) produce `Campaign`s; many
campaigns merge into one `IntelSnapshot` (see `snapshot.py`) whose content
hash, `intel_version`, every decision carries.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Confidence(StrEnum):
    HIGH = "High"
    MEDIUM = "Medium"
    LOW = "Low"

    @property
    def rank(self) -> int:
        return {"High": 3, "Medium": 2, "Low": 1}[self.value]


class CampaignKind(StrEnum):
    ACTOR = "actor"
    CAMPAIGN = "campaign"


class IOAType(StrEnum):
    FILE = "file"
    ARGUMENT = "argument"
    LIBRARY = "library"
    INPUT_VALUE = "input_value"
    PATTERN = "pattern"
    NETWORK_PORT = "network_port"


class Action(StrEnum):
    """What the agent does with traffic that matches an indicator."""

    ACCEPT = "accept"
    FLAG = "flag"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where an indicator was read: file and 1-based line (0 if not line-based)."""

    path: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    confidence: Confidence


@dataclass(frozen=True, slots=True)
class IOC:
    """An indicator of compromise: an address/prefix and/or a hostname.

    A VulDB row carries both an IP and (sometimes) the hostname it resolved
    to; both are kept in one IOC so a decision can name the row it came from.
    """

    id: str
    network: IPNetwork | None
    hostname: str | None
    actor: str | None
    confidence: Confidence
    source: SourceRef

    @property
    def value(self) -> str:
        if self.network is not None:
            if self.network.prefixlen == self.network.max_prefixlen:
                return str(self.network.network_address)
            return str(self.network)
        return self.hostname or ""


@dataclass(frozen=True, slots=True)
class Technique:
    """A MITRE ATT&CK technique with the CWE weaknesses it exploits."""

    attack_id: str
    cwes: tuple[str, ...]
    description: str
    confidence: Confidence
    source: SourceRef


@dataclass(frozen=True, slots=True)
class IOA:
    """An indicator of attack: a fragment seen in attack traffic."""

    id: str
    type: IOAType
    value: str
    confidence: Confidence
    source: SourceRef


class ArgumentType(StrEnum):
    INTEGER = "integer"
    NUMBER = "number"
    STRING = "string"


class EvidenceKind(StrEnum):
    """Kinds of evidence the inspector can find; the enrichment maps each to a technique."""

    IOC_ADDRESS = "ioc_address"
    IOC_HOSTNAME = "ioc_hostname"
    FILE = "file"
    LIBRARY = "library"
    SQLI = "sqli"
    XSS = "xss"
    TYPE_VIOLATION = "type_violation"
    INPUT_VALUE = "input_value"
    PATTERN = "pattern"
    NETWORK_PORT = "network_port"
    HTTP_ANOMALY = "http_anomaly"


@dataclass(frozen=True, slots=True)
class Enrichment:
    """What an operator adds to a campaign page that the page itself lacks."""

    source: SourceRef
    cves: tuple[str, ...] = ()
    # Route templates such as "/api/totals/last/{num}": `{name}` is a path parameter.
    routes: tuple[str, ...] = ()
    argument_types: tuple[tuple[str, ArgumentType], ...] = ()
    # Evidence kind -> ATT&CK ID of one of the campaign's techniques.
    evidence_techniques: tuple[tuple[EvidenceKind, str], ...] = ()
    # Evidence kind -> action; overrides the config's defaults for this campaign.
    actions: tuple[tuple[EvidenceKind, Action], ...] = ()
    notes: str = ""

    def argument_type(self, name: str) -> ArgumentType | None:
        for arg, kind in self.argument_types:
            if arg == name:
                return kind
        return None

    def technique_for(self, evidence: EvidenceKind) -> str | None:
        for kind, attack_id in self.evidence_techniques:
            if kind == evidence:
                return attack_id
        return None

    def action_for(self, evidence: EvidenceKind) -> Action | None:
        for kind, action in self.actions:
            if kind == evidence:
                return action
        return None


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    kind: CampaignKind
    source: str
    content_hash: str
    actors: tuple[Actor, ...] = ()
    iocs: tuple[IOC, ...] = ()
    techniques: tuple[Technique, ...] = ()
    ioas: tuple[IOA, ...] = ()
    references: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    related_campaigns: tuple[str, ...] = ()
    # Section name ("ioc", "ttp", "ioa", "country") -> items the page withheld.
    withheld: tuple[tuple[str, int], ...] = ()
    warnings: tuple[str, ...] = ()
    enrichment: Enrichment | None = None

    def technique(self, attack_id: str) -> Technique | None:
        for technique in self.techniques:
            if technique.attack_id == attack_id:
                return technique
        return None


@dataclass(frozen=True, slots=True)
class LoadProblem:
    """A typed error or warning from a loader, located at file:line."""

    source: SourceRef
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a loader returns: campaigns it could read and the problems it met."""

    campaigns: tuple[Campaign, ...] = ()
    problems: tuple[LoadProblem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not any(p.fatal for p in self.problems)
