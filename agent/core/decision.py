"""What the decision core returns for one packet: a Decision with its reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from agent.intel.model import Action, Confidence, EvidenceKind


class Verdict(StrEnum):
    """The outcome for a packet. In dry-run a DROP becomes WOULD_DROP."""

    ACCEPT = "accept"
    FLAG = "flag"
    DROP = "drop"
    WOULD_DROP = "would_drop"


class Where(StrEnum):
    """Where in the traffic the evidence was found."""

    SRC_IP = "src_ip"
    DEST_IP = "dest_ip"
    PATH = "path"
    QUERY = "query"
    BODY = "body"
    COOKIE = "cookie"
    HEADER = "header"
    HOST = "host"
    SNI = "sni"
    DNS = "dns"
    PORT = "port"
    STREAM = "stream"


class PacketMeta(NamedTuple):
    """What the capture end knows about a packet besides its bytes.

    A NamedTuple, not a frozen dataclass: one is built per queued packet, and a
    tuple builds in a third of the time (immutable all the same)."""

    timestamp: float
    hook: str = "forward"
    packet_no: int | None = None  # 1-based pcap frame number in replay
    queue: int | None = None
    # The kernel queued this packet past the flow's inspection depth because it
    # starts a new HTTP request (or is a tiny segment): bytes before it never came.
    past_depth: bool = False


@dataclass(frozen=True, slots=True)
class FlowKey:
    """A directional 5-tuple (client -> server for TCP flows)."""

    proto: str  # "TCP", "UDP", "ICMP", "IPv6-ICMP" or the protocol number
    src_ip: str
    src_port: int
    dest_ip: str
    dest_port: int


@dataclass(frozen=True, slots=True)
class IndicatorRef:
    kind: str  # "ioc" or "ioa"
    id: str
    type: str  # ioc: "address" / "network" / "hostname"; ioa: IOAType value
    value: str
    confidence: Confidence


@dataclass(frozen=True, slots=True)
class TechniqueRef:
    attack_id: str
    name: str
    cwes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Evidence:
    kind: EvidenceKind
    where: Where
    value: str  # normalized value (truncated and escaped when the event is built)
    name: str | None = None  # parameter or header name
    detail: str | None = (
        None  # classifier detail, e.g. "union select" or a libinjection fingerprint
    )


@dataclass(frozen=True, slots=True)
class Reason:
    campaign: str
    indicator: IndicatorRef
    technique: TechniqueRef | None
    evidence: Evidence
    action: Action


@dataclass(frozen=True, slots=True)
class HttpInfo:
    method: str
    host: str | None
    target: str  # the raw request target, as sent
    path: str  # normalized path


class DecodeFailureReason(StrEnum):
    """Why a packet could not be decoded. Malformed packets are data."""

    TRUNCATED_IP = "truncated_ip"
    BAD_IP_VERSION = "bad_ip_version"
    BAD_IP_HEADER_LENGTH = "bad_ip_header_length"
    BAD_IP_TOTAL_LENGTH = "bad_ip_total_length"
    TRUNCATED_EXTENSION_HEADER = "truncated_extension_header"
    TRUNCATED_TRANSPORT = "truncated_transport"
    BAD_TCP_OFFSET = "bad_tcp_offset"
    BAD_UDP_LENGTH = "bad_udp_length"
    FRAGMENT = "fragment"
    UNSUPPORTED_LINK_TYPE = "unsupported_link_type"


class AnomalyKind(StrEnum):
    """Protocol anomalies the inspector reports (a reason to flag, not to pass silently)."""

    HTTP_PARSE_ERROR = "http_parse_error"
    RETRANSMISSION_MISMATCH = "retransmission_mismatch"
    DOUBLE_ENCODING = "double_encoding"
    DEPTH_EXCEEDED = "depth_exceeded"
    # A short segment past the inspection depth that does not start a request: the
    # shape of a request line split to slip past what the kernel still queues.
    PAST_DEPTH_FRAGMENT = "past_depth_fragment"
    # Bytes that arrived out of order inside a gap the stream was resynchronized over
    # (a request after a hole is inspected at once; the hole's bytes only in order).
    STREAM_GAP = "stream_gap"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    intel_version: str
    reasons: tuple[Reason, ...] = ()
    flow: FlowKey | None = None
    flow_id: int | None = None
    http: HttpInfo | None = None
    decode_failure: DecodeFailureReason | None = None
    anomalies: tuple[tuple[AnomalyKind, str], ...] = field(default=())
    # True when the rest of the flow should be dropped by the kernel (conntrack mark).
    block_flow: bool = False

    @property
    def is_notable(self) -> bool:
        """True when the decision must be logged (anything but a plain accept)."""
        return bool(self.reasons or self.decode_failure or self.anomalies)
