"""Notice when someone deletes the agent's nftables table (nftables.service restart).

`nftables.service` loads /etc/nftables.conf, which usually starts with
`flush ruleset`: every table goes, ours too, and the gateway would forward
IOC traffic until the agent restarts. The kernel announces each ruleset change
on the NFNLGRP_NFTABLES multicast group; the main loop listens and puts the
ruleset back within milliseconds instead of waiting for a unit restart.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import socket

from agent.kernel.netlink import NETLINK_NETFILTER, NFGENMSG, split_attrs, split_messages

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE = 0
NFT_MSG_DELTABLE = 2
NFTA_TABLE_NAME = 1
NFPROTO_INET = 1
MAX_DATAGRAMS_PER_DRAIN = 256


class TableGone(enum.Enum):
    NO = "no"  # untouched, or deleted and created again (our own create-or-replace)
    YES = "yes"  # the last event for it was a delete
    UNKNOWN = "unknown"  # events were lost (ENOBUFS): ask the kernel


_TABLE_EVENTS_GONE = {
    NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE: TableGone.NO,
    NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELTABLE: TableGone.YES,
}


class TableWatch:
    """Non-blocking listener; `table_gone()` drains and tells whether ours went."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
        try:
            self._sock.bind((0, 0))
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        except OSError:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def table_gone(self, table: str) -> TableGone:
        """Drain the events; the net effect on inet table `table`."""
        wanted = table.encode()
        gone = TableGone.NO
        lost = False
        for _ in range(MAX_DATAGRAMS_PER_DRAIN):
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    lost = True
                    continue
                break
            for message in split_messages(data):
                if message.msg_type not in _TABLE_EVENTS_GONE or len(message.body) < NFGENMSG.size:
                    continue
                family = message.body[0]
                name = split_attrs(message.body, NFGENMSG.size).get(NFTA_TABLE_NAME, b"")
                if family == NFPROTO_INET and name.rstrip(b"\0") == wanted:
                    gone = _TABLE_EVENTS_GONE[message.msg_type]
        return TableGone.UNKNOWN if lost else gone

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
