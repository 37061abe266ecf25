"""The flow table: per-connection state and reassembly of the client->server TCP stream.

Owns: `FlowTable.feed(packet, now) -> FlowUpdate`. Pure (time comes from the caller).

- Flows are keyed by the unordered 5-tuple. The client is the sender of the SYN
  (SYN without ACK) or the receiver of a SYN-ACK; a flow first seen mid-stream
  takes as server the side whose port is in `server_ports`, else the lower port.
  UDP, ICMP and other protocols get a flow (an id for events) but no reassembly.
- Only the client->server stream is reassembled, up to `depth` bytes per flow
  (`reset_depth(flow)` starts a new budget, e.g. per keep-alive request). The first
  copy of a byte wins; a later copy with different bytes is reported as
  `AnomalyKind.RETRANSMISSION_MISMATCH`. Out-of-order bytes are held (within
  `depth`) and released when the gap fills. Memory per TCP flow: the delivered
  bytes (kept to check retransmissions, at most depth) plus, while a gap is open,
  at most 2 x depth for held bytes and their mask.
- Closing: RST, or FIN from both sides, reports `closed=True` once and moves the
  flow to a short-lived "closing" list (`close_linger` seconds) so trailing ACKs
  and retransmissions keep the same flow; its delivered bytes are freed. Client
  bytes after the close (e.g. after a forged RST) reopen it instead of starting
  a flow with a new id: they continue the stream (older bytes are no longer
  compared), and bytes held across a gap are kept for that.
- Bounded: at most `max_flows` flows, and at most about `max_buffered_bytes` of
  stream buffers in all (closing, then least recently seen flows are evicted;
  counted in `evictions`); idle flows expire lazily in `feed` (`expirations`).
- IP fragments touch their flow but never add stream bytes (see decode.py).
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.core.decision import AnomalyKind, FlowKey
from agent.core.decode import (
    PROTO_TCP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Packet,
    proto_name,
)

_SEQ_MASK = 0xFFFFFFFF
_SEQ_HALF = 0x80000000
_SEQ_SPACE = 0x100000000
_SYN_ACK = TCP_SYN | TCP_ACK
# Stale flows removed per feed call at most: keeps the worst-case call cheap.
_EXPIRE_BATCH = 32
_NO_ANOMALIES: tuple[tuple[AnomalyKind, str], ...] = ()
_FlowLookup = tuple[int, bytes, int, bytes, int]


@dataclass(slots=True, eq=False)
class ClientStream:
    """Reassembly of the client->server byte stream, by stream offset (0 = first byte)."""

    base: int | None = None  # sequence number of stream offset 0, once known
    data: bytearray = field(default_factory=bytearray)  # contiguous bytes, at most depth
    # Out-of-order bytes by stream offset, `held_mask` 0xFF where `held` has one.
    # Exist only while a gap is open; they grow to the highest held offset (< depth).
    held: bytearray | None = None
    held_mask: bytearray | None = None
    beyond_depth: bool = False  # a segment carried bytes past depth
    depth_reported: bool = False

    def footprint(self) -> int:
        """Bytes this stream holds in buffers."""
        held = self.held
        return len(self.data) + (2 * len(held) if held is not None else 0)

    def restart(self) -> None:
        """Forget the delivered bytes: offset 0 becomes the next byte, depth counts anew."""
        done = len(self.data)
        if self.base is not None:
            self.base = (self.base + done) & _SEQ_MASK
        self.data = bytearray()
        if self.held is not None and self.held_mask is not None:
            del self.held[:done]
            del self.held_mask[:done]
        self.beyond_depth = self.depth_reported = False

    def add(self, offset: int, segment: bytes, depth: int) -> tuple[bytes, list[str]]:
        """Place `segment` at stream `offset`: (newly contiguous bytes, mismatch details)."""
        mismatches: list[str] = []
        end = offset + len(segment)
        if end > depth:
            self.beyond_depth = True
            if offset >= depth:
                return b"", mismatches
            segment = segment[: depth - offset]
            end = depth
        if offset < 0:  # bytes before the stream start (e.g. a bad mid-stream guess)
            if end <= 0:
                return b"", mismatches
            segment = segment[-offset:]
            offset = 0
        data = self.data
        have = len(data)
        if offset < have:
            overlap_end = min(end, have)
            if data[offset:overlap_end] != segment[: overlap_end - offset]:
                mismatches.append(_mismatch_detail(offset, overlap_end))
            if end <= have:
                return b"", mismatches
            segment = segment[have - offset :]
            offset = have
        if offset == have and self.held is None:
            data += segment
            return segment, mismatches
        return self._hold(offset, end, segment, mismatches), mismatches

    def _hold(self, offset: int, end: int, segment: bytes, mismatches: list[str]) -> bytes:
        """Merge a segment into the held bytes (first copy wins) and release what is contiguous."""
        held, mask = self.held, self.held_mask
        if held is None or mask is None:
            held = self.held = bytearray(end)
            mask = self.held_mask = bytearray(end)
        elif len(held) < end:
            grow = bytes(end - len(held))
            held += grow
            mask += grow
        size = end - offset
        filled = mask[offset:end]
        if 0xFF in filled:
            # Bitwise merge over the whole range at C speed: keep held bytes where filled.
            keep = int.from_bytes(filled, "big")
            old = int.from_bytes(held[offset:end], "big")
            new = int.from_bytes(segment, "big")
            if (old ^ new) & keep:
                mismatches.append(_mismatch_detail(offset, end))
            held[offset:end] = ((old & keep) | (new & ~keep)).to_bytes(size, "big")
        else:
            held[offset:end] = segment
        mask[offset:end] = b"\xff" * size
        have = len(self.data)
        if mask[have] != 0xFF:
            return b""
        stop = mask.find(0, have)
        if stop < 0:
            stop = len(mask)
        released = bytes(held[have:stop])
        self.data += released
        if stop >= len(mask):
            self.held = self.held_mask = None
        else:
            mask[have:stop] = bytes(stop - have)
        return released


def _lookup_of(pkt: Packet) -> _FlowLookup:
    """The flow-table key of a packet: its 5-tuple, the same in both directions."""
    src, dst, sport, dport = pkt.src, pkt.dst, pkt.sport, pkt.dport
    if src < dst or (src == dst and sport <= dport):
        return (pkt.proto, src, sport, dst, dport)
    return (pkt.proto, dst, dport, src, sport)


def _mismatch_detail(start: int, end: int) -> str:
    return f"client stream offset {start}-{end}: retransmitted bytes differ from the first copy"


@dataclass(slots=True, eq=False)
class Flow:
    """One connection. Mutable: the table and the HTTP layer update it in place."""

    id: int
    key: FlowKey  # client -> server
    created: float
    last_seen: float
    client_ip: bytes
    client_port: int
    midstream: bool  # first seen without its handshake
    stream: ClientStream | None  # TCP only
    inspector_state: object | None = None  # the decision core's per-flow state (HTTP parser...)
    blocked: bool = False
    client_fin: bool = False
    server_fin: bool = False
    closed: bool = False
    closed_at: float = 0.0


@dataclass(frozen=True, slots=True, init=False)
class FlowUpdate:
    """What one packet did to its flow."""

    flow: Flow
    to_server: bool
    new_data: bytes  # newly contiguous client->server bytes, in order
    anomalies: tuple[tuple[AnomalyKind, str], ...]
    depth_reached: bool  # the stream filled `depth` and more bytes came: reported once
    closed: bool  # RST or both FINs seen with this packet: reported once

    # One per packet: storing through the slot descriptors costs half the generated
    # frozen __init__ (the instance is still frozen afterwards).
    def __init__(  # noqa: PLR0917
        self,
        flow: Flow,
        to_server: bool,
        new_data: bytes,
        anomalies: tuple[tuple[AnomalyKind, str], ...],
        depth_reached: bool,
        closed: bool,
    ) -> None:
        _set_flow(self, flow)
        _set_to_server(self, to_server)
        _set_new_data(self, new_data)
        _set_anomalies(self, anomalies)
        _set_depth_reached(self, depth_reached)
        _set_closed(self, closed)


(_set_flow, _set_to_server, _set_new_data, _set_anomalies, _set_depth_reached, _set_closed) = (
    FlowUpdate.__dict__[name].__set__ for name in FlowUpdate.__slots__
)


class FlowTable:
    """Bounded table of flows with lazy idle expiry and client-stream reassembly."""

    def __init__(
        self,
        max_flows: int = 65536,
        idle_timeout: float = 120.0,
        depth: int = 16384,
        server_ports: frozenset[int] = frozenset({80, 8000, 8080, 6862, 6870}),
        *,
        close_linger: float = 5.0,
        max_buffered_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        if max_flows < 1 or depth < 1 or max_buffered_bytes < 1:
            raise ValueError("max_flows, depth and max_buffered_bytes must be positive")
        self.max_flows = max_flows
        self.idle_timeout = idle_timeout
        self.depth = depth
        self.server_ports = server_ports
        self.close_linger = close_linger
        self.max_buffered_bytes = max_buffered_bytes
        self.buffered_bytes = 0  # stream bytes held by all flows
        self.evictions = 0  # flows dropped for room (max_flows or max_buffered_bytes)
        self.expirations = 0  # flows dropped as idle (or after their close linger)
        # Both ordered oldest first: active by last touch, closing by close time.
        self._active: OrderedDict[_FlowLookup, Flow] = OrderedDict()
        self._closing: OrderedDict[_FlowLookup, Flow] = OrderedDict()
        self._next_id = 1
        self._next_expiry = float("inf")
        # Called with every flow that leaves the table (the core's fast lane forgets it).
        self.on_forget: Callable[[Flow], None] | None = None

    def __len__(self) -> int:
        return len(self._active) + len(self._closing)

    def flows(self) -> list[Flow]:
        """All flows, active first (oldest first), then closing ones."""
        return [*self._active.values(), *self._closing.values()]

    def feed(self, pkt: Packet, now: float) -> FlowUpdate:
        """Account one packet to its flow (creating it) and reassemble client bytes."""
        if now >= self._next_expiry:
            self._expire(now)
        src = pkt.src
        sport = pkt.sport
        lookup = _lookup_of(pkt)
        flow = self._active.get(lookup)
        if flow is not None:
            if now - flow.last_seen > self.idle_timeout:
                del self._active[lookup]
                self._forget(flow)
                self.expirations += 1
                flow = None
            else:
                self._active.move_to_end(lookup)
        else:
            flow = self._closing.get(lookup)
            if flow is not None and now - flow.closed_at > self.close_linger:
                del self._closing[lookup]
                self._forget(flow)
                self.expirations += 1
                flow = None
        if pkt.proto != PROTO_TCP or pkt.fragment:
            if flow is None:
                flow = self._create(lookup, pkt, now)
            flow.last_seen = now
            return FlowUpdate(
                flow, src == flow.client_ip and sport == flow.client_port,
                b"", _NO_ANOMALIES, False, False,
            )  # fmt: skip
        flags = pkt.tcp_flags
        if flow is None:
            flow = self._create(lookup, pkt, now)
        elif flags & _SYN_ACK == TCP_SYN and self._is_new_connection(flow, pkt):
            self._remove(lookup, flow)
            flow = self._create(lookup, pkt, now)
        flow.last_seen = now
        to_server = src == flow.client_ip and sport == flow.client_port
        stream = flow.stream
        if stream is None:  # the flow began with IP fragments
            stream = flow.stream = ClientStream()
            flow.midstream = True
        new_data = b""
        anomalies = _NO_ANOMALIES
        depth_reached = False
        closed = False
        if to_server:
            payload = pkt.payload
            if payload and not flags & TCP_RST:
                seq = pkt.seq + 1 if flags & TCP_SYN else pkt.seq
                base = stream.base
                if base is None:
                    base = stream.base = seq & _SEQ_MASK
                offset = (seq - base) & _SEQ_MASK
                if offset >= _SEQ_HALF:
                    offset -= _SEQ_SPACE
                data = stream.data
                if (
                    offset == len(data)
                    and stream.held is None
                    and offset + len(payload) < self.depth
                ):
                    # In-order segment inside depth: the common case.
                    data += payload
                    new_data = payload
                    self.buffered_bytes += len(payload)
                else:
                    before = stream.footprint()
                    new_data, mismatches = stream.add(offset, payload, self.depth)
                    self.buffered_bytes += stream.footprint() - before
                    if mismatches:
                        anomalies = tuple(
                            (AnomalyKind.RETRANSMISSION_MISMATCH, m) for m in mismatches
                        )
                    if (
                        stream.beyond_depth
                        and not stream.depth_reported
                        and len(stream.data) >= self.depth
                    ):
                        stream.depth_reported = depth_reached = True
            if flags & TCP_FIN:
                flow.client_fin = True
        else:
            if flags & _SYN_ACK == _SYN_ACK and stream.base is None:
                # The SYN-ACK acknowledges the client's ISN + 1: the first client byte.
                stream.base = pkt.ack & _SEQ_MASK
            if flags & TCP_FIN:
                flow.server_fin = True
        if flow.closed:
            if new_data or anomalies:
                self._reopen(lookup, flow)
        elif flags & TCP_RST or (flow.client_fin and flow.server_fin):
            closed = True
            self._close(lookup, flow, now)
        if self.buffered_bytes > self.max_buffered_bytes:
            self._shed(flow)
        return FlowUpdate(flow, to_server, new_data, anomalies, depth_reached, closed)

    def reset_depth(self, flow: Flow) -> None:
        """Give the rest of a flow's client stream a fresh `depth` (e.g. per HTTP request).

        For the inspector to call when everything delivered so far is dealt with (a
        complete request on a keep-alive connection): the retained bytes are freed, so
        later retransmissions of them are no longer compared. Bytes already dropped
        because depth was reached stay lost: call it before depth is reached.
        """
        stream = flow.stream
        if stream is not None:
            before = stream.footprint()
            stream.restart()
            self.buffered_bytes += stream.footprint() - before

    def resync(self, flow: Flow, seq: int) -> None:
        """Restart the client stream at sequence number `seq`, forgetting what came before.

        For a stream the inspector sees only in part: past the kernel's per-flow
        depth, only packets that start a new HTTP request are queued, so the bytes
        in between never arrive and the next request starts after a gap.
        """
        stream = flow.stream
        if stream is None:
            return
        before = stream.footprint()
        stream.base = seq & _SEQ_MASK
        stream.data = bytearray()
        stream.held = stream.held_mask = None
        stream.beyond_depth = stream.depth_reported = False
        self.buffered_bytes += stream.footprint() - before

    def peek(self, pkt: Packet) -> tuple[Flow, bool] | None:
        """(the packet's flow, whether it goes client -> server), changing nothing."""
        lookup = _lookup_of(pkt)
        flow = self._active.get(lookup) or self._closing.get(lookup)
        if flow is None:
            return None
        return flow, pkt.src == flow.client_ip and pkt.sport == flow.client_port

    def append_in_order(self, flow: Flow, data: bytes) -> None:
        """Deliver client bytes that follow the stream's last byte (taken from a segment the
        core's fast lane kept aside), as `feed` would have; they must stay under depth."""
        stream = flow.stream
        if stream is None or stream.held is not None or len(stream.data) + len(data) >= self.depth:
            raise ValueError("append_in_order: not an in-order append inside depth")
        stream.data += data
        self.buffered_bytes += len(data)

    def expected_seq(self, flow: Flow) -> int | None:
        """Sequence number of the next contiguous client byte, once the stream start is known."""
        stream = flow.stream
        if stream is None or stream.base is None:
            return None
        return (stream.base + len(stream.data)) & _SEQ_MASK

    def is_ahead(self, flow: Flow, seq: int) -> bool:
        """True when `seq` lies beyond the next expected client byte (a gap before it)."""
        stream = flow.stream
        if stream is None or stream.base is None:
            return False
        offset = (seq - stream.base) & _SEQ_MASK
        return offset < _SEQ_HALF and offset > len(stream.data)

    def _is_new_connection(self, flow: Flow, pkt: Packet) -> bool:
        """A SYN on a known flow: a new connection reusing the 5-tuple, or a retransmission."""
        stream = flow.stream
        if stream is None or flow.closed:
            return True
        if not (pkt.src == flow.client_ip and pkt.sport == flow.client_port):
            return True  # the roles swapped
        isn_next = (pkt.seq + 1) & _SEQ_MASK
        if stream.base == isn_next:
            return False  # SYN retransmission
        if stream.data or stream.held is not None:
            return True
        stream.base = isn_next  # nothing received yet: follow the latest SYN
        return False

    def _create(self, lookup: _FlowLookup, pkt: Packet, now: float) -> Flow:
        if len(self._active) + len(self._closing) >= self.max_flows:
            victims = self._closing if self._closing else self._active
            self._forget(victims.popitem(last=False)[1])
            self.evictions += 1
        client_is_src = True
        midstream = False
        stream: ClientStream | None = None
        if pkt.proto == PROTO_TCP and not pkt.fragment:
            stream = ClientStream()
            syn_ack = pkt.tcp_flags & _SYN_ACK
            if syn_ack == TCP_SYN:
                stream.base = (pkt.seq + 1) & _SEQ_MASK
            elif syn_ack == _SYN_ACK:
                client_is_src = False
                stream.base = pkt.ack & _SEQ_MASK
            else:
                midstream = True
                client_is_src = self._src_is_client(pkt)
        else:
            client_is_src = self._src_is_client(pkt)
        if client_is_src:
            cip, cport, sip, sport = pkt.src, pkt.sport, pkt.dst, pkt.dport
        else:
            cip, cport, sip, sport = pkt.dst, pkt.dport, pkt.src, pkt.sport
        family = socket.AF_INET if len(cip) == 4 else socket.AF_INET6
        key = FlowKey(
            proto_name(pkt.proto),
            socket.inet_ntop(family, cip),
            cport,
            socket.inet_ntop(family, sip),
            sport,
        )
        flow = Flow(self._next_id, key, now, now, cip, cport, midstream, stream)
        self._next_id += 1
        self._active[lookup] = flow
        if self._next_expiry == float("inf"):
            self._next_expiry = now + self.idle_timeout
        return flow

    def _src_is_client(self, pkt: Packet) -> bool:
        """Orientation without a handshake: the server listens on a known or the lower port."""
        if pkt.dport in self.server_ports:
            return True
        if pkt.sport in self.server_ports:
            return False
        return pkt.sport >= pkt.dport

    def _close(self, lookup: _FlowLookup, flow: Flow, now: float) -> None:
        flow.closed = True
        flow.closed_at = now
        self._active.pop(lookup, None)
        self._closing[lookup] = flow
        stream = flow.stream
        if stream is not None:
            # Free the delivered bytes (a table under load is mostly closing flows). Held
            # bytes stay: after a forged RST the gap may still fill, and bytes after the
            # close continue the stream at offset 0 of a fresh window.
            before = stream.footprint()
            stream.restart()
            self.buffered_bytes += stream.footprint() - before
        self._next_expiry = min(self._next_expiry, now + self.close_linger)

    def _reopen(self, lookup: _FlowLookup, flow: Flow) -> None:
        flow.closed = False
        flow.client_fin = flow.server_fin = False
        self._closing.pop(lookup, None)
        self._active[lookup] = flow

    def _remove(self, lookup: _FlowLookup, flow: Flow) -> None:
        if self._active.pop(lookup, None) is None:
            self._closing.pop(lookup, None)
        self._forget(flow)

    def _forget(self, flow: Flow) -> None:
        """Account for the buffers of a flow that left the table."""
        if flow.stream is not None:
            self.buffered_bytes -= flow.stream.footprint()
        if self.on_forget is not None:
            self.on_forget(flow)

    def recency(
        self, pkt: Packet, flow: Flow
    ) -> tuple[OrderedDict[_FlowLookup, Flow], _FlowLookup] | None:
        """(the active flows by recency, `flow`'s key there) when `pkt` belongs to active `flow`:
        lets the fast lane touch a flow as `feed` would (`move_to_end`)."""
        lookup = _lookup_of(pkt)
        if self._active.get(lookup) is not flow:
            return None
        return self._active, lookup

    def _shed(self, keep: Flow) -> None:
        """Over the memory budget: evict flows, closing then least recently seen, not `keep`."""
        for flows in (self._closing, self._active):
            while flows and self.buffered_bytes > self.max_buffered_bytes:
                lookup, victim = next(iter(flows.items()))
                if victim is keep:
                    break
                del flows[lookup]
                self._forget(victim)
                self.evictions += 1

    def _expire(self, now: float) -> None:
        """Drop up to a batch of stale flows and note when the next one can go stale."""
        budget = _EXPIRE_BATCH
        active = self._active
        idle = self.idle_timeout
        while active and budget:
            lookup, flow = next(iter(active.items()))
            if now - flow.last_seen <= idle:
                break
            del active[lookup]
            self._forget(flow)
            self.expirations += 1
            budget -= 1
        closing = self._closing
        linger = self.close_linger
        while closing and budget:
            lookup, flow = next(iter(closing.items()))
            if now - flow.closed_at <= linger:
                break
            del closing[lookup]
            self._forget(flow)
            self.expirations += 1
            budget -= 1
        if not budget:
            self._next_expiry = now  # more may be stale: continue on the next packet
            return
        deadline = float("inf")
        if active:
            deadline = next(iter(active.values())).last_seen + idle
        if closing:
            deadline = min(deadline, next(iter(closing.values())).closed_at + linger)
        # Strictly after the deadline: a flow is stale once now - last_seen > idle.
        self._next_expiry = deadline
