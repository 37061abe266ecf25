"""NFQUEUE settings netfilterqueue does not expose, and the kernel's queue statistics.

`set_fail_open` sends NFQNL_MSG_CONFIG with NFQA_CFG_FLAGS/NFQA_CFG_MASK on
the library's own socket: the kernel only accepts config for a queue from
the netlink port that bound it. With FAIL_OPEN, a full queue accepts
packets instead of dropping them.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from agent.kernel.errors import KernelError
from agent.kernel.netlink import (
    NETLINK_NETFILTER,
    NLM_F_ACK,
    NLM_F_REQUEST,
    attr,
    nfnl_message,
    wait_for_ack,
)

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_CONFIG = 2
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQA_CFG_F_FAIL_OPEN = 0x1
QUEUE_STATS_PATH = Path("/proc/net/netfilter/nfnetlink_queue")
ACK_TIMEOUT_S = 2.0


def set_fail_open(fd: int, queue_num: int, enabled: bool) -> None:
    """Set or clear FAIL_OPEN on a bound queue; `fd` is `NetfilterQueue.get_fd()`.

    Call it right after `bind()` and before the ruleset steers traffic to the
    queue: packets read while waiting for the ACK would be lost.
    """
    flags = NFQA_CFG_F_FAIL_OPEN if enabled else 0
    attrs = attr(NFQA_CFG_FLAGS, struct.pack("!I", flags)) + attr(
        NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)
    )
    seq = int.from_bytes(os.urandom(3), "big") + 1
    msg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
    message = nfnl_message(msg_type, NLM_F_REQUEST | NLM_F_ACK, seq,
                           family=socket.AF_UNSPEC, res_id=queue_num, attrs=attrs)
    # A duplicate of the library's fd: same socket, so the same netlink port id.
    was_blocking = os.get_blocking(fd)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER,
                         fileno=os.dup(fd))
    try:
        sock.settimeout(ACK_TIMEOUT_S)
        sock.send(message)
        code = wait_for_ack(sock, seq)
    except OSError as exc:
        raise KernelError(f"NFQUEUE {queue_num}: config request failed", str(exc)) from exc
    finally:
        # settimeout set O_NONBLOCK on the shared file description: restore the library's mode.
        os.set_blocking(sock.fileno(), was_blocking)
        sock.close()
    if code != 0:
        raise KernelError(
            f"NFQUEUE {queue_num}: kernel refused FAIL_OPEN={enabled}", os.strerror(-code)
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One line of /proc/net/netfilter/nfnetlink_queue (per network namespace)."""

    queue_num: int
    portid: int
    queue_total: int  # packets waiting for a verdict now
    copy_mode: int
    copy_range: int
    queue_dropped: int  # dropped because the queue was full
    user_dropped: int  # dropped because the netlink socket buffer overran
    id_sequence: int


def parse_queue_stats(text: str) -> list[QueueStats]:
    stats: list[QueueStats] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or not all(f.lstrip("-").isdigit() for f in fields[:8]):
            continue
        stats.append(QueueStats(*(int(f) for f in fields[:8])))
    return stats


def read_queue_stats(path: Path = QUEUE_STATS_PATH) -> list[QueueStats]:
    """Stats of the bound queues of the caller's namespace; none when the module is absent."""
    try:
        return parse_queue_stats(path.read_text())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KernelError(f"cannot read {path}", str(exc)) from exc
