"""Just enough nfnetlink framing for the NFLOG reader and the NFQUEUE flag setter.

Messages: nlmsghdr (len, type, flags, seq, pid; host order) + nfgenmsg
(family, version, res_id big-endian) + attributes (len, type; 4-byte aligned).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED and NLA_F_NET_BYTEORDER
NFNETLINK_V0 = 0

NLMSGHDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("!BBH")
NLATTR = struct.Struct("=HH")
NLMSGERR_CODE = struct.Struct("=i")


def align4(length: int) -> int:
    return (length + 3) & ~3


def attr(attr_type: int, payload: bytes) -> bytes:
    length = NLATTR.size + len(payload)
    return NLATTR.pack(length, attr_type) + payload + b"\0" * (align4(length) - length)


def nfnl_message(
    msg_type: int, flags: int, seq: int, *, family: int, res_id: int, attrs: bytes
) -> bytes:
    body = NFGENMSG.pack(family, NFNETLINK_V0, res_id) + attrs
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, flags, seq, 0) + body


@dataclass(frozen=True, slots=True)
class NetlinkMessage:
    msg_type: int
    flags: int
    seq: int
    body: bytes  # everything after the nlmsghdr


def split_messages(data: bytes) -> Iterator[NetlinkMessage]:
    """Netlink messages in one datagram; a truncated tail ends the walk."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, msg_type, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            return
        yield NetlinkMessage(msg_type, flags, seq, data[offset + NLMSGHDR.size : offset + length])
        offset += align4(length)


def split_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Attributes by type (flags stripped); malformed lengths end the walk."""
    attrs: dict[int, bytes] = {}
    while offset + NLATTR.size <= len(data):
        length, attr_type = NLATTR.unpack_from(data, offset)
        if length < NLATTR.size or offset + length > len(data):
            break
        attrs[attr_type & NLA_TYPE_MASK] = data[offset + NLATTR.size : offset + length]
        offset += align4(length)
    return attrs


def error_code(message: NetlinkMessage) -> int | None:
    """The (negative) errno of an NLMSG_ERROR message; 0 is an ACK."""
    if message.msg_type != NLMSG_ERROR or len(message.body) < NLMSGERR_CODE.size:
        return None
    return int(NLMSGERR_CODE.unpack_from(message.body)[0])


def wait_for_ack(sock: socket.socket, seq: int, max_datagrams: int = 64) -> int:
    """Read until the ACK/error for `seq`; returns 0 or a negative errno.

    Other messages read meanwhile are discarded, so callers request ACKs
    before traffic is steered to the socket.
    """
    for _ in range(max_datagrams):
        data = sock.recv(65536)
        for message in split_messages(data):
            code = error_code(message)
            if code is not None and message.seq == seq:
                return code
    return -errno.ETIMEDOUT
