"""Which NFQUEUE backend this kernel supports: the nft `queue` statement or xt NFQUEUE.

Both probes really ask the kernel and leave nothing behind: the nft probe
creates and deletes a scratch table in one committed transaction; the xt
probe adds and deletes a scratch chain with a `-j NFQUEUE` rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from agent.kernel.commands import HOST_RUNNER, CommandRunner

ProbeChoice = Literal["nft", "xt"] | None


@dataclass(frozen=True, slots=True)
class QueueBackendProbe:
    nft_queue: bool
    xt_nfqueue: bool
    chosen: ProbeChoice
    detail: str


def _probe_nft(runner: CommandRunner, scratch: str) -> tuple[bool, str]:
    # Committed (not `nft -c`) so the kernel's expression lookup surely runs;
    # the table is created and deleted in the same transaction.
    text = (
        f"table inet {scratch} {{\n"
        "\tchain c {\n"
        "\t\ttype filter hook output priority 0; policy accept;\n"
        "\t\tmeta mark 0x7ffffffe queue num 0 bypass\n"
        "\t}\n"
        "}\n"
        f"delete table inet {scratch}\n"
    )
    result = runner.run(["nft", "-f", "-"], stdin=text)
    if result.ok:
        return True, "nft queue: accepted"
    # Belt and braces: nothing should exist after a failed batch.
    runner.run(["nft", "delete", "table", "inet", scratch])
    return False, f"nft queue: {_last_line(result.stderr)}"


def _probe_xt(runner: CommandRunner, scratch: str) -> tuple[bool, str]:
    had_mangle = runner.run(["nft", "list", "table", "ip", "mangle"]).ok
    base = ["iptables-nft", "-w", "-t", "mangle"]
    created = runner.run([*base, "-N", scratch])
    if not created.ok:
        return False, f"xt NFQUEUE: cannot create chain: {_last_line(created.stderr)}"
    added = runner.run(
        [*base, "-A", scratch, "-m", "mark", "--mark", "0x7ffffffe",
         "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"]
    )
    runner.run([*base, "-F", scratch])
    runner.run([*base, "-X", scratch])
    if not had_mangle:
        # iptables-nft left an empty `ip mangle` table that did not exist before.
        runner.run(["nft", "delete", "table", "ip", "mangle"])
    if added.ok:
        return True, "xt NFQUEUE: accepted"
    return False, f"xt NFQUEUE: {_last_line(added.stderr)}"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for line in lines:
        if "Error" in line or "error" in line:
            return line.strip()
    return lines[-1].strip() if lines else "failed without a message"


def probe_queue_backend(runner: CommandRunner = HOST_RUNNER) -> QueueBackendProbe:
    """Probe both backends; prefer nft (one ruleset, no iptables) when it works."""
    suffix = os.getpid() % 100000
    nft_ok, nft_detail = _probe_nft(runner, f"rf_probe_{suffix}")
    xt_ok, xt_detail = _probe_xt(runner, f"RF_PROBE_{suffix}")
    chosen: ProbeChoice = "nft" if nft_ok else "xt" if xt_ok else None
    return QueueBackendProbe(nft_ok, xt_ok, chosen, f"{nft_detail}; {xt_detail}")
