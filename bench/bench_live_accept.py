"""The baseline for bench_live.py: bind one NFQUEUE and accept every packet, nothing else.

Same binding as the agent's inspector (max_len, socket buffer, fail-open on
overload), so the difference in packets/s is the decision core and the
agent's per-packet bookkeeping. Runs until SIGTERM; prints READY once bound.
Usage (inside the gateway namespace): bench_live_accept.py QUEUE_NUM
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netfilterqueue import NetfilterQueue, Packet

from agent.kernel.nfqueue_config import set_fail_open


def accept(packet: Packet) -> None:
    packet.accept()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("queue_num", type=int)
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--socket-buffer", type=int, default=8 << 20)
    args = parser.parse_args()
    queue = NetfilterQueue()
    queue.bind(args.queue_num, accept, max_len=args.max_len, range=65535,
               sock_len=args.socket_buffer)
    fd = os.dup(queue.get_fd())
    try:
        set_fail_open(fd, args.queue_num, True)
    finally:
        os.close(fd)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print("READY", flush=True)
    try:
        queue.run(block=True)
    finally:
        queue.unbind()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
