"""A raw netlink NFLOG reader: the kernel's `log group N` messages, parsed.

No maintained Python library reads NFLOG; this one binds a group, asks for
packet copies of `copy_range` bytes and parses NFULNL_MSG_PACKET messages.
`parse_nflog_batch` is pure (bytes in, messages out) and never raises.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from agent.kernel.errors import KernelError
from agent.kernel.netlink import (
    NETLINK_NETFILTER,
    NFGENMSG,
    NLM_F_ACK,
    NLM_F_REQUEST,
    attr,
    nfnl_message,
    split_attrs,
    split_messages,
    wait_for_ack,
)

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2

NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10

PACKET_HDR = struct.Struct("!HBx")
TIMESTAMP = struct.Struct("!QQ")
BE32 = struct.Struct("!I")
PACKET_MSG_TYPE = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
# netfilter hook numbers (NF_INET_*) as names, for NFLOG and NFQUEUE events.
HOOK_NAMES = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
DEFAULT_RCVBUF = 4 * 1024 * 1024
ACK_TIMEOUT_S = 2.0
SO_RCVBUFFORCE = 33  # linux; not exported by the socket module


@dataclass(frozen=True, slots=True)
class NflogMessage:
    family: int  # NFPROTO_IPV4 (2) or NFPROTO_IPV6 (10)
    prefix: str
    payload: bytes  # raw L3 packet, truncated to the copy range
    hw_protocol: int | None
    hook: int | None
    timestamp: float | None
    mark: int | None
    indev: int | None
    outdev: int | None

    @property
    def hook_name(self) -> str | None:
        return None if self.hook is None else HOOK_NAMES.get(self.hook, str(self.hook))


def _be32(value: bytes | None) -> int | None:
    return BE32.unpack(value)[0] if value is not None and len(value) >= 4 else None


def _parse_packet(body: bytes) -> NflogMessage | None:
    if len(body) < NFGENMSG.size:
        return None
    family = body[0]
    attrs = split_attrs(body, NFGENMSG.size)
    hw_protocol = hook = None
    if (hdr := attrs.get(NFULA_PACKET_HDR)) is not None and len(hdr) >= PACKET_HDR.size:
        hw_protocol, hook = PACKET_HDR.unpack_from(hdr)
    timestamp = None
    if (ts := attrs.get(NFULA_TIMESTAMP)) is not None and len(ts) >= TIMESTAMP.size:
        sec, usec = TIMESTAMP.unpack_from(ts)
        timestamp = sec + usec / 1e6
    prefix = attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("utf-8", "replace")
    return NflogMessage(
        family=family,
        prefix=prefix,
        payload=attrs.get(NFULA_PAYLOAD, b""),
        hw_protocol=hw_protocol,
        hook=hook,
        timestamp=timestamp,
        mark=_be32(attrs.get(NFULA_MARK)),
        indev=_be32(attrs.get(NFULA_IFINDEX_INDEV)),
        outdev=_be32(attrs.get(NFULA_IFINDEX_OUTDEV)),
    )


def parse_nflog_batch(data: bytes) -> list[NflogMessage]:
    """NFLOG packet messages in one netlink datagram; anything else is skipped."""
    messages: list[NflogMessage] = []
    for message in split_messages(data):
        if message.msg_type != PACKET_MSG_TYPE:
            continue
        parsed = _parse_packet(message.body)
        if parsed is not None:
            messages.append(parsed)
    return messages


class NflogReader:
    """Bound to one NFLOG group; `read_messages` never blocks (select on `fileno()`)."""

    def __init__(
        self,
        group: int,
        copy_range: int = 128,
        rcvbuf: int = DEFAULT_RCVBUF,
        *,
        batch_messages: int = 64,
        flush_timeout_s: float = 0.1,
    ) -> None:
        """`batch_messages`/`flush_timeout_s`: the kernel sends when either is reached.

        The kernel's defaults (100 messages, 1 s) hold a quiet period's last log
        messages back for up to a second.
        """
        self.group = group
        self.copy_range = copy_range
        self.lost_overruns = 0  # ENOBUFS events: the kernel dropped messages for us
        self._seq = 0
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self._sock.bind((0, 0))
            self._set_rcvbuf(rcvbuf)
            self._sock.settimeout(ACK_TIMEOUT_S)
            self._configure(attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), "bind")
            mode = struct.pack("!IBx", copy_range, NFULNL_COPY_PACKET)
            self._configure(attr(NFULA_CFG_MODE, mode), "copy mode")
            self._configure(attr(NFULA_CFG_QTHRESH, BE32.pack(max(1, batch_messages))),
                            "queue threshold")
            timeout_cs = max(1, round(flush_timeout_s * 100))  # the kernel counts 1/100 s
            self._configure(attr(NFULA_CFG_TIMEOUT, BE32.pack(timeout_cs)), "flush timeout")
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def _set_rcvbuf(self, size: int) -> None:
        try:  # root may exceed rmem_max; others get what rmem_max allows
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def _configure(self, attrs: bytes, what: str) -> None:
        self._seq += 1
        msg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
        message = nfnl_message(msg_type, NLM_F_REQUEST | NLM_F_ACK, self._seq,
                               family=socket.AF_UNSPEC, res_id=self.group, attrs=attrs)
        try:
            self._sock.send(message)
            code = wait_for_ack(self._sock, self._seq)
        except OSError as exc:
            raise KernelError(f"NFLOG group {self.group}: {what} failed", str(exc)) from exc
        if code != 0:
            raise KernelError(f"NFLOG group {self.group}: {what} refused", os.strerror(-code))

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_messages(self, max_messages: int = 256) -> list[NflogMessage]:
        """Whatever is queued now, up to about `max_messages` (whole datagrams)."""
        messages: list[NflogMessage] = []
        while len(messages) < max_messages:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost_overruns += 1
                    continue
                raise KernelError(f"NFLOG group {self.group}: recv failed", str(exc)) from exc
            messages.extend(parse_nflog_batch(data))
        return messages

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._sock.close()

    def __enter__(self) -> NflogReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
