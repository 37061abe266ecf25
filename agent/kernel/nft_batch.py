"""IOC set reloads as one raw nf_tables netlink batch: no `nft` process.

`nft -f` spends ~3 µs and ~390 bytes of its own memory per element parsing
and evaluating text (1M addresses: ~3 s and ~390 MiB). The kernel only needs
NFT_MSG_DELSETELEM (no element list = flush the set) and NFT_MSG_NEWSETELEM
messages, which this module builds directly; BATCH_BEGIN/BATCH_END make them
one transaction, exactly like `render_set_update` + `nft -f`.

Interval sets get the element encoding nft itself sends (seen with
`nft --debug=netlink`): a range start, and its end + 1 flagged INTERVAL_END;
a leading 0-address END element when the first range does not start at 0.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from agent.kernel.errors import KernelError
from agent.kernel.netlink import (
    NETLINK_NETFILTER,
    NLM_F_ACK,
    NLM_F_REQUEST,
    attr,
    error_code,
    nfnl_message,
    split_messages,
)
from agent.kernel.nftables import RulesetSpec

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14
NFPROTO_INET = 1
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000

NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_FLAGS = 3
NFTA_DATA_VALUE = 1
NFT_SET_ELEM_INTERVAL_END = 1

# An attribute length is 16 bits: an element list must stay below 64 KiB.
MAX_LIST_BYTES = 60_000
SO_SNDBUFFORCE = 32  # linux; not exported by the socket module
ACK_TIMEOUT_S = 30.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nested(attr_type: int, payload: bytes) -> bytes:
    return attr(attr_type | NLA_F_NESTED, payload)


def _element(key: bytes, interval_end: bool = False) -> bytes:
    body = _nested(NFTA_SET_ELEM_KEY, attr(NFTA_DATA_VALUE, key))
    if interval_end:
        body += attr(NFTA_SET_ELEM_FLAGS, struct.pack("!I", NFT_SET_ELEM_INTERVAL_END))
    return _nested(NFTA_LIST_ELEM, body)


def _key_elements(addresses: Iterable[Address]) -> Iterator[bytes]:
    # Fixed layout per address family (the key is last, 4-byte aligned): the
    # attribute headers are built once and the packed address appended.
    headers: dict[int, bytes] = {}
    for address in addresses:
        packed = address.packed
        header = headers.get(len(packed))
        if header is None:
            header = headers[len(packed)] = _element(bytes(len(packed)))[: -len(packed)]
        yield header + packed


def _interval_elements(networks: Sequence[Network]) -> Iterator[bytes]:
    """Ranges merged (adjacent CIDRs too), encoded start + END(end + 1) as nft does."""
    if not networks:
        return
    width = networks[0].max_prefixlen // 8
    top = (1 << networks[0].max_prefixlen) - 1
    ranges: list[list[int]] = []
    for net in sorted(networks, key=lambda n: int(n.network_address)):
        start, end = int(net.network_address), int(net.broadcast_address)
        if ranges and start <= ranges[-1][1] + 1:
            ranges[-1][1] = max(ranges[-1][1], end)
        else:
            ranges.append([start, end])
    if ranges[0][0] != 0:
        yield _element(bytes(width), interval_end=True)
    for start, end in ranges:
        yield _element(start.to_bytes(width, "big"))
        if end != top:
            yield _element((end + 1).to_bytes(width, "big"), interval_end=True)


@dataclass(frozen=True, slots=True)
class SetBatch:
    """One transaction's bytes and the sequence number whose ACK ends it."""

    data: bytes
    last_seq: int
    messages: int


def set_update_batch(spec: RulesetSpec, first_seq: int = 1) -> SetBatch:
    """Pure: the netlink equivalent of `render_set_update(spec)` (flush + refill, atomic)."""
    table = spec.table.encode() + b"\0"
    contents: list[tuple[str, Iterator[bytes]]] = [
        ("ioc_v4", _key_elements(spec.exact_v4)),
        ("ioc_v6", _key_elements(spec.exact_v6)),
        ("ioc_net_v4", _interval_elements(list(spec.prefixes_v4))),
        ("ioc_net_v6", _interval_elements(list(spec.prefixes_v6))),
    ]
    seq = first_seq
    parts = [nfnl_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, family=socket.AF_UNSPEC,
                          res_id=NFNL_SUBSYS_NFTABLES, attrs=b"")]
    set_msg = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM
    del_msg = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM
    for name, _elements in contents:
        seq += 1
        names = attr(NFTA_SET_ELEM_LIST_TABLE, table) + attr(NFTA_SET_ELEM_LIST_SET,
                                                             name.encode() + b"\0")
        parts.append(nfnl_message(del_msg, NLM_F_REQUEST | NLM_F_ACK, seq,
                                  family=NFPROTO_INET, res_id=0, attrs=names))
    for name, elements in contents:
        names = attr(NFTA_SET_ELEM_LIST_TABLE, table) + attr(NFTA_SET_ELEM_LIST_SET,
                                                             name.encode() + b"\0")
        for chunk in _chunks(elements):
            seq += 1
            attrs = names + _nested(NFTA_SET_ELEM_LIST_ELEMENTS, chunk)
            parts.append(nfnl_message(set_msg, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK, seq,
                                      family=NFPROTO_INET, res_id=0, attrs=attrs))
    last = seq
    seq += 1
    parts.append(nfnl_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, family=socket.AF_UNSPEC,
                              res_id=NFNL_SUBSYS_NFTABLES, attrs=b""))
    return SetBatch(b"".join(parts), last, len(parts))


def _chunks(elements: Iterator[bytes]) -> Iterator[bytes]:
    chunk: list[bytes] = []
    size = 0
    for element in elements:
        if size + len(element) > MAX_LIST_BYTES:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(element)
        size += len(element)
    if chunk:
        yield b"".join(chunk)


def send_batch(batch: SetBatch) -> None:
    """Send one batch in ONE sendmsg (the kernel's unit of atomicity) and check every ACK.

    The socket is opened in the caller's network namespace.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, len(batch.data) + 65536)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.settimeout(ACK_TIMEOUT_S)
        sent = sock.send(batch.data)
        if sent != len(batch.data):
            raise KernelError("nf_tables batch", f"sent {sent} of {len(batch.data)} bytes")
        _wait_for_batch(sock, batch.last_seq)
    except OSError as exc:
        raise KernelError("nf_tables batch failed", str(exc)) from exc
    finally:
        sock.close()


def _wait_for_batch(sock: socket.socket, last_seq: int) -> None:
    # Every message asks for an ACK; the first error aborts the whole batch in the kernel.
    while True:
        for message in split_messages(sock.recv(1 << 16)):
            code = error_code(message)
            if code is None:
                continue
            if code != 0:
                kind = message.body[4 + 4 : 4 + 6]  # the failed request's nlmsg_type
                msg_type = struct.unpack("=H", kind)[0] if len(kind) == 2 else 0
                raise KernelError(
                    "nf_tables rejected the batch",
                    f"{os.strerror(-code)} (message seq {message.seq}, type {msg_type:#x})",
                )
            if message.seq == last_seq:
                return


def replace_set_contents(spec: RulesetSpec) -> None:
    """Flush and refill the IOC sets of `spec.table` in one transaction, in this namespace.

    Equivalent to `NftablesAdapter.apply(render_set_update(spec))`, without an
    `nft` process (see the module docstring for the cost difference).
    """
    send_batch(set_update_batch(spec))
