"""The decision core: packet bytes in, a Decision out. No I/O.

The live NFQUEUE path and `replay` both call `DecisionCore.decide()`; only
the ends (where bytes come from, where verdicts and events go) differ.
Flow state lives here; the Detector (intel-dependent) is swapped on reload
without losing flows.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from agent.core.decision import (
    AnomalyKind,
    Decision,
    FlowKey,
    HttpInfo,
    PacketMeta,
    Reason,
    Verdict,
    Where,
)
from agent.core.decode import DecodeFailure, Packet, decode_ip
from agent.core.detector import Detector
from agent.core.flows import Flow, FlowTable, FlowUpdate
from agent.core.http import HttpRequestStream, starts_request
from agent.core.params import body_never_read
from agent.core.tlsdns import dns_query_name, tls_client_hello_sni
from agent.intel.model import Action, EvidenceKind

try:  # The fast lane is C (_lane.c); without it every packet takes the Python path.
    from agent.core._lane import Lane
except ImportError:  # pragma: no cover - a build without the extension
    Lane = None  # type: ignore[assignment,misc]

_TCP = 6
_UDP = 17
_DNS_PORT = 53
_TLS_PORT = 443
_BODY_ONLY = frozenset({Where.BODY})
# A segment this short that starts no request, past the depth: a split request line.
TINY_SEGMENT_BYTES = 8
DEFAULT_HTTP_PORTS = frozenset({80, 8000, 8080, 6862, 6870})
_HEAD_PAST_DEPTH = "request head longer than the inspection depth: its end is not inspected"
_HEAD_SPLIT_PAST_DEPTH = "request head split past the inspection depth: its rest is not inspected"
# Payload of a segment the kernel takes for bulk past the depth (IP length >= 1200).
_BULK_PAYLOAD_BYTES = 1100
# Holes a flow's stream keeps awaiting the bytes of; past that the oldest is given up
# (under overload most holes are segments fail-open let past: they never come).
MAX_OPEN_GAPS = 16
_SEQ_MASK = 0xFFFFFFFF
_SEQ_HALF = 0x80000000
_GAP_OUT_OF_ORDER = "segment out of order inside a hole the stream moved past: not inspected"


class _Gap:
    """Client bytes [next, end) the stream skipped: a request started after a hole (a
    segment the queue let past on overload, a reordering). Its bytes, should they come,
    are parsed on a stream of their own, in order, so skipping never hides a request."""

    __slots__ = ("early_seq", "end", "next", "stream")

    def __init__(self, start: int, end: int) -> None:
        self.next = start
        self.end = end
        # Built when the hole's first byte comes: most holes never fill (overload).
        self.stream: HttpRequestStream | None = None
        self.early_seq = -1


@dataclass(frozen=True, slots=True)
class CoreLimits:
    http_ports: frozenset[int] = DEFAULT_HTTP_PORTS
    inspect_depth: int = 16384
    max_flows: int = 65536
    idle_timeout: float = 120.0
    # Idle keep-alive HTTP flows go through the C fast lane (see _admit): same decisions.
    fast_lane: bool = True


class _FlowState:
    """The core's per-flow state: the HTTP parser (HTTP flows only), which request heads
    were inspected early, and the flow's plain-accept Decision.

    Most packets carry nothing notable; their Decision is the same for the whole flow
    (and intel version), so it is built once and shared instead of once per packet.
    """

    __slots__ = (
        "accept",
        "carried",
        "carried_anomalies",
        "early_seq",
        "exhausted",
        "gaps",
        "lane_key",
        "stream",
    )

    def __init__(self) -> None:
        self.stream: HttpRequestStream | None = None
        self.early_seq = -1
        self.accept: Decision | None = None
        # The stream hit the inspection depth inside one request: later bytes are unseen.
        self.exhausted = False
        self.lane_key: bytes | None = None  # the flow's key in the fast lane, once admitted
        self.gaps: list[_Gap] = []
        # Found in body bytes the fast lane kept aside, for the flow's next decision.
        self.carried: list[Reason] = []
        self.carried_anomalies: list[tuple[AnomalyKind, str]] = []

    def add_gap(self, start: int, end: int) -> None:
        """Await the bytes [start, end) the stream moved past (the fast lane calls it too)."""
        if len(self.gaps) >= MAX_OPEN_GAPS:
            del self.gaps[0]  # given up: its bytes, should they come, are not inspected
        self.gaps.append(_Gap(start, end))


def _in_head(flow: Flow) -> bool:
    state = flow.inspector_state
    return isinstance(state, _FlowState) and state.stream is not None and state.stream.in_head


def _exhausted(flow: Flow) -> bool:
    state = flow.inspector_state
    return isinstance(state, _FlowState) and state.exhausted


def _opaque_body_left(state: _FlowState) -> int | None:
    """Bytes still to come of a body nothing reads (an opaque upload, Content-Length
    framed) whose request head was inspected; None when not in such a body."""
    stream = state.stream
    if stream is None:
        return None
    left = stream.body_left()
    if left is None:
        return None
    pending = stream.head_pending()
    if (
        pending is None
        or pending.seq != state.early_seq
        or not body_never_read(pending.header("content-type"))
    ):
        return None
    return left


def _between_requests(flow: Flow) -> bool:
    """Every client byte delivered so far was part of a complete request (or none came)."""
    state = flow.inspector_state
    stream = flow.stream
    if stream is None or stream.data:
        return False
    if not isinstance(state, _FlowState):
        return True
    return not state.exhausted and (state.stream is None or state.stream.idle)


_Holes = list[tuple[int, int, int]]  # (offset in the kept bytes, hole size, seq after it)


def _lane_catch_up(
    core: weakref.ref[DecisionCore],
) -> Callable[[object, object, bytes, _Holes], None]:
    """The lane's hand-back of a flow whose body bytes it kept aside (a weak reference:
    the core stays free of reference cycles)."""

    def catch_up(flow: object, state: object, body: bytes, holes: _Holes) -> None:
        owner = core()
        if owner is not None and isinstance(flow, Flow) and isinstance(state, _FlowState):
            owner._catch_up(flow, state, body, holes)

    return catch_up


def _lane_forgetter(lane: Lane) -> Callable[[Flow], None]:
    """The flow table's `on_forget`: a flow that leaves the table leaves the lane. (A
    closure over the lane, not a method: the core stays free of reference cycles.)"""

    def forget(flow: Flow) -> None:
        state = flow.inspector_state
        if isinstance(state, _FlowState) and state.lane_key is not None:
            lane.discard(state.lane_key)
            state.lane_key = None

    return forget


class DecisionCore:
    def __init__(self, detector: Detector, limits: CoreLimits | None = None) -> None:
        self.detector = detector
        self.limits = limits or CoreLimits()
        self.flows = FlowTable(
            max_flows=self.limits.max_flows,
            idle_timeout=self.limits.idle_timeout,
            depth=self.limits.inspect_depth,
            server_ports=self.limits.http_ports,
        )
        self.lane: Lane | None = None
        if Lane is not None and self.limits.fast_lane:
            self.lane = Lane(
                self.limits.inspect_depth, MAX_OPEN_GAPS, _lane_catch_up(weakref.ref(self))
            )
            self.flows.on_forget = _lane_forgetter(self.lane)
            self._configure_lane()

    def swap_detector(self, detector: Detector) -> None:
        """Switch to new intel; flows in progress keep their state (the lane starts empty)."""
        self.detector = detector
        self._configure_lane()

    def _configure_lane(self) -> None:
        lane = self.lane
        if lane is None:
            return
        screen = self.detector.lane_screen()
        if screen is None:
            lane.disable()
        else:
            lane.configure(*screen)

    # -- the one entry point ---------------------------------------------------------------

    def decide(self, data: bytes, meta: PacketMeta) -> Decision:
        lane = self.lane
        if lane is not None:
            # A client segment of an admitted idle keep-alive flow holding one simple
            # request that matches nothing: accepted in C. Anything else: None, and the
            # flow is handed back to the Python path below, consistently.
            fast = lane.screen(data, meta.timestamp, meta.past_depth)
            if fast is not None:
                return cast(Decision, fast)
        detector = self.detector
        packet = decode_ip(data)
        if isinstance(packet, DecodeFailure):
            return Decision(Verdict.ACCEPT, detector.intel_version, decode_failure=packet.reason)

        if lane is not None and packet.proto == _TCP and not packet.fragment:
            # A client segment of a flow the lane holds reached Python (the lane parses only
            # IPv4 without options and IPv6 without extension headers): take the flow back
            # first, so the stream is where the lane left it.
            seen = self.flows.peek(packet)
            if seen is not None and seen[1]:
                held = seen[0].inspector_state
                if isinstance(held, _FlowState) and held.lane_key is not None:
                    lane.release(held.lane_key)
        # Most packets touch no IOC: probe first, build the reasons list only on a hit.
        match = detector.snapshot.match_address
        address_hit = bool(match(packet.src) or match(packet.dst))
        update = self.flows.feed(packet, meta.timestamp)
        flow = update.flow
        new_data = update.new_data
        carried: list[Reason] = []
        carried_anomalies: list[tuple[AnomalyKind, str]] = []
        state = flow.inspector_state
        if isinstance(state, _FlowState) and (state.carried or state.carried_anomalies):
            carried, state.carried = state.carried, []
            carried_anomalies, state.carried_anomalies = state.carried_anomalies, []
        past_depth_anomaly: tuple[AnomalyKind, str] | None = None
        gap_info: HttpInfo | None = None
        gap_reasons: list[Reason] = []
        gap_anomalies: list[tuple[AnomalyKind, str]] = []
        if not new_data and packet.payload and packet.proto == _TCP and update.to_server:
            # A client segment off the stream's next byte (behind it or after a hole).
            update, gap_info, past_depth_anomaly = self._off_stream(
                packet, meta, update, gap_reasons, gap_anomalies
            )
            new_data = update.new_data
        if (
            not new_data
            and not address_hit
            and not update.anomalies
            and past_depth_anomaly is None
            and gap_info is None
            and not gap_anomalies
            and not carried
            and not carried_anomalies
            and not flow.blocked
            and (
                packet.proto != _UDP
                or packet.dport != _DNS_PORT
                or not packet.payload
                or not detector.has_hostnames
            )
        ):
            # The common case (ACKs, server->client data, non-DNS datagrams): nothing to inspect.
            return self._plain_accept(flow)
        reasons = detector.address_reasons(packet) if address_hit else []
        reasons.extend(gap_reasons)
        reasons.extend(carried)
        anomalies = list(update.anomalies) + gap_anomalies + carried_anomalies
        if past_depth_anomaly is not None:
            anomalies.append(past_depth_anomaly)
        http_info: HttpInfo | None = gap_info

        if flow.blocked:
            return self._finish(
                reasons, flow, update.to_server, None, anomalies, already_blocked=True
            )

        if update.to_server and new_data:
            if packet.proto == _TCP and flow.key.dest_port in self.limits.http_ports:
                http_info = self._inspect_http(
                    flow,
                    new_data,
                    update.depth_reached,
                    reasons,
                    anomalies,
                    past_depth=meta.past_depth,
                )
            elif (
                packet.proto == _TCP and flow.key.dest_port == _TLS_PORT and detector.has_hostnames
            ):
                sni = tls_client_hello_sni(new_data)
                if sni:
                    reasons.extend(detector.hostname_reasons(sni, Where.SNI))
        if (
            packet.proto == _UDP
            and packet.dport == _DNS_PORT
            and packet.payload
            and detector.has_hostnames
        ):
            qname = dns_query_name(packet.payload)
            if qname:
                reasons.extend(detector.hostname_reasons(qname, Where.DNS))
        if not reasons and not anomalies and http_info is None:
            return self._plain_accept(flow)
        if lane is not None and http_info is not None and not reasons and not anomalies:
            self._admit(lane, data, packet, flow, meta)
        return self._finish(
            reasons, flow, update.to_server, http_info, anomalies, already_blocked=False
        )

    def _off_stream(
        self,
        packet: Packet,
        meta: PacketMeta,
        update: FlowUpdate,
        reasons: list[Reason],
        anomalies: list[tuple[AnomalyKind, str]],
    ) -> tuple[FlowUpdate, HttpInfo | None, tuple[AnomalyKind, str] | None]:
        """A client segment that added nothing to the stream: the bytes of a hole the stream
        moved past, or a segment after a hole (the update after moving the stream there)."""
        flow = update.flow
        state = flow.inspector_state
        gap_info: HttpInfo | None = None
        if isinstance(state, _FlowState) and state.gaps:
            gap_info = self._fill_gap(state, packet.seq, packet.payload, reasons, anomalies)
        http_flow = flow.key.dest_port in self.limits.http_ports
        if (
            not meta.past_depth
            and not flow.blocked
            and http_flow
            and isinstance(state, _FlowState)
            and self.flows.is_ahead(flow, packet.seq)
        ):
            # A hole inside the body of an upload nothing reads: only its length counts.
            hole = self._opaque_body_hole(flow, packet.seq, len(packet.payload))
            if hole:
                self._skip_body_hole(flow, state, hole, packet.seq)
                return self.flows.feed(packet, meta.timestamp), gap_info, None
        if (
            not meta.past_depth
            and http_flow
            and self.flows.is_ahead(flow, packet.seq)
            and starts_request(packet.payload)
            and _between_requests(flow)
        ):
            # A request after a hole, between requests: the hole may never fill (a segment
            # the queue let past on overload), so inspect from here and await the hole's
            # bytes on a stream of their own.
            if not isinstance(state, _FlowState):
                state = flow.inspector_state = _FlowState()
            expected = self.flows.expected_seq(flow)
            if expected is not None:
                # The flow's parser is between requests: it goes on at the new request.
                state.add_gap(expected, packet.seq)
                self.flows.resync(flow, packet.seq)
                return self.flows.feed(packet, meta.timestamp), gap_info, None
        if (meta.past_depth or _exhausted(flow)) and self.flows.is_ahead(flow, packet.seq):
            # Past the depth only request starts and short segments arrive: restart the
            # stream at a request start; after a gap inside a head (a full-sized segment
            # the kernel kept) or a tiny non-start, the evasion shape is an anomaly.
            if starts_request(packet.payload):
                self.flows.resync(flow, packet.seq)
                flow.inspector_state = None
                return self.flows.feed(packet, meta.timestamp), gap_info, None
            if meta.past_depth and (len(packet.payload) < TINY_SEGMENT_BYTES or _in_head(flow)):
                return update, gap_info, (
                    AnomalyKind.PAST_DEPTH_FRAGMENT,
                    f"{len(packet.payload)}-byte segment after a gap past the inspection depth",
                )
        return update, gap_info, None

    def _admit(self, lane: Lane, data: bytes, packet: Packet, flow: Flow, meta: PacketMeta) -> None:
        """Hand an idle keep-alive HTTP flow to the fast lane, at its next client byte.

        Only when the Python stream is exactly where a fresh one would be: every byte so
        far was a complete request that matched nothing, no bytes are held, the flow is
        open, not blocked, not past the depth, to no IOC address.
        """
        state = flow.inspector_state
        stream = flow.stream
        if (
            meta.past_depth
            or flow.blocked
            or flow.closed
            or flow.client_fin
            or flow.server_fin
            or not isinstance(state, _FlowState)
            or state.exhausted
            or state.stream is None
            or stream is None
            or stream.base is None
            or stream.held is not None
            or self.detector.snapshot.match_address(packet.src)
            or self.detector.snapshot.match_address(packet.dst)
        ):
            return
        body_left = budget = 0
        if state.stream.idle:
            if stream.data or not state.stream.keeps_alive:
                return
        else:
            # In an opaque upload's body the lane keeps the bytes aside, unparsed, and
            # hands them back (_catch_up) when anything else comes.
            left = _opaque_body_left(state)
            budget = self.limits.inspect_depth - 1 - len(stream.data)
            if left is None or budget <= 0:
                return
            body_left = left
        recency = self.flows.recency(packet, flow)
        expected = self.flows.expected_seq(flow)
        if recency is None or expected is None:
            return
        active, lookup = recency
        state.lane_key = lane.admit(
            data, expected, flow, self._plain_accept(flow), active, lookup, state, body_left,
            budget,
        )  # fmt: skip

    def _catch_up(self, flow: Flow, state: _FlowState, body: bytes, holes: _Holes) -> None:
        """Body bytes the fast lane kept aside, and the holes between them, delivered and
        parsed as the Python path would have, segment by segment (what they hold is
        carried to the flow's next decision)."""
        start = 0
        for offset, size, seq_after in [*holes, (len(body), 0, 0)]:
            if offset > start:
                piece = body[start:offset]
                self.flows.append_in_order(flow, piece)
                self._inspect_http(
                    flow, piece, False, state.carried, state.carried_anomalies, past_depth=False
                )
            if size:
                self._skip_body_hole(flow, state, size, seq_after)
            start = offset

    def _opaque_body_hole(self, flow: Flow, seq: int, size: int) -> int:
        """The size of the hole before a segment at `seq` inside the body of an upload
        nothing reads, when the segment stays inside that body; else 0."""
        state = flow.inspector_state
        if not isinstance(state, _FlowState) or state.exhausted:
            return 0
        left = _opaque_body_left(state)
        expected = self.flows.expected_seq(flow)
        if left is None or expected is None:
            return 0
        hole = (seq - expected) & _SEQ_MASK
        return hole if 0 < hole < _SEQ_HALF and hole + size <= left else 0

    def _skip_body_hole(self, flow: Flow, state: _FlowState, size: int, seq_after: int) -> None:
        """Bytes missing inside a body nothing reads (a segment the queue let past): only
        the length counts, so the parser takes placeholders and the stream goes on after."""
        assert state.stream is not None
        state.stream.feed(bytes(size))
        self.flows.resync(flow, seq_after)

    def _fill_gap(
        self,
        state: _FlowState,
        seq: int,
        payload: bytes,
        reasons: list[Reason],
        anomalies: list[tuple[AnomalyKind, str]],
    ) -> HttpInfo | None:
        """Bytes behind the stream: those of an open gap are parsed in order on its stream."""
        for gap in state.gaps:
            left = (gap.end - gap.next) & _SEQ_MASK
            offset = (seq - gap.next) & _SEQ_MASK
            if offset >= _SEQ_HALF:
                # Starts before the gap's next byte: only its unseen tail counts.
                skip = (gap.next - seq) & _SEQ_MASK
                if skip >= len(payload):
                    continue
                payload, seq, offset = payload[skip:], gap.next, 0
            if offset >= left:
                continue  # not this gap
            if offset:
                anomalies.append((AnomalyKind.STREAM_GAP, _GAP_OUT_OF_ORDER))
                return None
            data = payload[:left]
            gap.next = (gap.next + len(data)) & _SEQ_MASK
            stream = gap.stream
            if stream is None:
                stream = gap.stream = HttpRequestStream(max_body=self.limits.inspect_depth)
            requests = stream.feed(data)
            if gap.next == gap.end:
                requests.extend(stream.finish())
                state.gaps.remove(gap)
            pending = stream.head_pending() if gap in state.gaps else None
            if pending is not None and pending.seq > gap.early_seq:
                requests.append(pending)  # a head now, before its body
            info: HttpInfo | None = None
            for request in requests:
                early = request is pending
                only = _BODY_ONLY if (not early and request.seq == gap.early_seq) else None
                found, path = self.detector.request_reasons(request, only=only)
                reasons.extend(found)
                if early:
                    gap.early_seq = request.seq
                anomalies.extend((AnomalyKind.HTTP_PARSE_ERROR, a) for a in request.anomalies)
                info = HttpInfo(request.method, request.host, request.target, path)
            return info
        return None

    def _plain_accept(self, flow: Flow) -> Decision:
        """ACCEPT with the flow's key and id, nothing else: what `_finish` gives when nothing
        was found, shared by every such packet of the flow under the same intel."""
        state = flow.inspector_state
        if not isinstance(state, _FlowState):
            state = flow.inspector_state = _FlowState()
        accept = state.accept
        version = self.detector.intel_version
        if accept is None or accept.intel_version != version:
            accept = state.accept = Decision(
                Verdict.ACCEPT, version, flow=flow.key, flow_id=flow.id
            )
        return accept

    # -- HTTP ------------------------------------------------------------------------------

    def _inspect_http(
        self,
        flow: Flow,
        data: bytes,
        depth_reached: bool,
        reasons: list[Reason],
        anomalies: list[tuple[AnomalyKind, str]],
        *,
        past_depth: bool,
    ) -> HttpInfo | None:
        state = flow.inspector_state
        if not isinstance(state, _FlowState):
            state = flow.inspector_state = _FlowState()
        stream = state.stream
        if stream is None:
            stream = state.stream = HttpRequestStream(max_body=self.limits.inspect_depth)
        requests = stream.feed(data)
        if past_depth and stream.in_head and len(data) < _BULK_PAYLOAD_BYTES:
            # Past the kernel's depth a head's next full-sized segment is not queued. A
            # client writes a head at once (MSS-sized segments, a short last one), so a
            # short segment that leaves its head open is the shape of a split evasion.
            anomalies.append((AnomalyKind.PAST_DEPTH_FRAGMENT, _HEAD_SPLIT_PAST_DEPTH))
        if depth_reached:
            if stream.in_head:
                # A head padded past the depth: its end (a query, a cookie) is unseen.
                anomalies.append((AnomalyKind.DEPTH_EXCEEDED, _HEAD_PAST_DEPTH))
            # What is left of a request at the depth limit is inspected as it stands.
            requests.extend(stream.finish())
            state.exhausted = True
        elif requests and stream.idle:
            # Between keep-alive requests: the next one gets a whole depth of its own.
            self.flows.reset_depth(flow)
        pending = stream.head_pending()
        if pending is not None and pending.seq > state.early_seq:
            # Inspect the head now: a malicious target is stopped before its body arrives.
            requests.append(pending)
        info: HttpInfo | None = None
        for request in requests:
            early = request is pending
            only = _BODY_ONLY if (not early and request.seq == state.early_seq) else None
            found, path = self.detector.request_reasons(request, only=only)
            reasons.extend(found)
            if early and request.version != "0.9":
                # (An HTTP/0.9 line's headers may still come: its head is not done.)
                state.early_seq = request.seq
            for text in request.anomalies:
                anomalies.append((AnomalyKind.HTTP_PARSE_ERROR, text))
            info = HttpInfo(request.method, request.host, request.target, path)
        return info

    # -- verdict ---------------------------------------------------------------------------

    def _finish(
        self,
        reasons: list[Reason],
        flow: Flow,
        to_server: bool,
        http: HttpInfo | None,
        anomalies: list[tuple[AnomalyKind, str]],
        *,
        already_blocked: bool,
    ) -> Decision:
        dry_run = self.detector.policy.dry_run
        verdict = Verdict.ACCEPT
        if already_blocked:
            verdict = Verdict.WOULD_DROP if dry_run else Verdict.DROP
        for reason in reasons:
            if reason.action == Action.DROP:
                verdict = Verdict.WOULD_DROP if dry_run else Verdict.DROP
                break
            if reason.action == Action.FLAG:
                verdict = Verdict.FLAG
        if anomalies and verdict in (Verdict.ACCEPT, Verdict.FLAG):
            policy = self.detector.policy
            anomaly_action = policy.overrides.get(
                EvidenceKind.HTTP_ANOMALY
            ) or policy.default_action(EvidenceKind.HTTP_ANOMALY)
            if anomaly_action == Action.DROP:
                verdict = Verdict.WOULD_DROP if dry_run else Verdict.DROP
            elif anomaly_action == Action.FLAG:
                verdict = Verdict.FLAG
        block = verdict == Verdict.DROP and flow.key.proto == "TCP"
        if block:
            flow.blocked = True
        key = flow.key
        if not to_server and (reasons or anomalies):
            # Events name the packet's own direction (as EVE does), e.g. a reply from an IOC.
            key = FlowKey(key.proto, key.dest_ip, key.dest_port, key.src_ip, key.src_port)
        return Decision(
            verdict,
            self.detector.intel_version,
            reasons=tuple(reasons),
            flow=key,
            flow_id=flow.id,
            http=http,
            anomalies=tuple(anomalies),
            block_flow=block and not already_blocked,
        )
