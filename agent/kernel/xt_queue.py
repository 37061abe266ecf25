"""The xt NFQUEUE backend: iptables-nft queues what the nft chain marked.

Used where the kernel lacks the nft `queue` statement (CONFIG_NFT_QUEUE off)
but has xt compat (`-j NFQUEUE`). The rules live in the agent's own chain
`RUSTYFLAG` of the mangle table (base chains at priority -150, after the nft
marking chain at -160), jumped to from the hooks' builtin chains, for IPv4
(iptables-nft) and IPv6 (ip6tables-nft).

A packet the inspector re-injects with NF_REPEAT re-runs only the chain that
queued it (this mangle chain), so the first rule returns packets carrying the
block mark; the nft `*_post` chains (-140) then drop them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from agent.kernel.commands import HOST_RUNNER, CommandRunner
from agent.kernel.errors import KernelError
from agent.kernel.nftables import RulesetSpec

XT_TABLE = "mangle"
XT_CHAIN = "RUSTYFLAG"
XT_TOOLS: tuple[str, ...] = ("iptables-nft", "ip6tables-nft")
BUILTIN_FOR_HOOK = {"forward": "FORWARD", "input": "INPUT", "output": "OUTPUT"}


def nfqueue_target_args(spec: RulesetSpec) -> list[str]:
    """`-j NFQUEUE ...` arguments for the spec's queues and failure mode."""
    low, high = min(spec.queue_nums), max(spec.queue_nums)
    args = ["-j", "NFQUEUE"]
    if low == high:
        args += ["--queue-num", str(low)]
    else:
        # Hash balance (no --queue-cpu-fanout): a flow's packets stay on one worker.
        args += ["--queue-balance", f"{low}:{high}"]
    if not spec.fail_closed:
        args.append("--queue-bypass")
    return args


def xt_chain_rules(spec: RulesetSpec) -> list[list[str]]:
    """The `-A RUSTYFLAG ...` rules, in order."""
    block = f"{spec.block_mark:#x}/{spec.block_mark:#x}"
    queue = f"{spec.queue_mark:#x}/{spec.queue_mark:#x}"
    return [
        ["-A", XT_CHAIN, "-m", "mark", "--mark", block, "-j", "RETURN"],
        ["-A", XT_CHAIN, "-m", "mark", "--mark", queue, *nfqueue_target_args(spec)],
    ]


@dataclass(frozen=True, slots=True)
class XtQueueRules:
    """Installs and removes the agent's iptables-nft queue chain; both idempotent."""

    runner: CommandRunner = HOST_RUNNER

    def _xt(self, tool: str, *args: str) -> bool:
        return self.runner.run([tool, "-w", "-t", XT_TABLE, *args]).ok

    def _xt_check(self, tool: str, *args: str) -> None:
        self.runner.check([tool, "-w", "-t", XT_TABLE, *args])

    def install(self, spec: RulesetSpec) -> None:
        """Create-or-refresh the chain and jump to it from each hook's builtin chain.

        A spec that queues nothing (no queue numbers) removes the rules instead.
        """
        if not spec.inspects:
            self.remove()
            return
        wanted = {BUILTIN_FOR_HOOK[h] for h in spec.hooks}
        for tool in XT_TOOLS:
            if not self._xt(tool, "-n", "-L", XT_CHAIN):
                self._xt_check(tool, "-N", XT_CHAIN)
            self._xt_check(tool, "-F", XT_CHAIN)
            for rule in xt_chain_rules(spec):
                self._xt_check(tool, *rule)
            for builtin in BUILTIN_FOR_HOOK.values():
                jumped = self._xt(tool, "-C", builtin, "-j", XT_CHAIN)
                if builtin in wanted and not jumped:
                    self._xt_check(tool, "-I", builtin, "1", "-j", XT_CHAIN)
                elif builtin not in wanted:
                    self._remove_jumps(tool, builtin)

    def _remove_jumps(self, tool: str, builtin: str) -> None:
        # Bounded: a chain cannot hold more duplicate jumps than we could have added.
        for _ in range(64):
            if not self._xt(tool, "-D", builtin, "-j", XT_CHAIN):
                return

    def remove(self) -> None:
        """Delete jumps and the chain; a no-op when they are absent."""
        for tool in XT_TOOLS:
            for builtin in BUILTIN_FOR_HOOK.values():
                self._remove_jumps(tool, builtin)
            if self._xt(tool, "-n", "-L", XT_CHAIN):
                self._xt_check(tool, "-F", XT_CHAIN)
                self._xt_check(tool, "-X", XT_CHAIN)

    def installed(self) -> bool:
        return all(self._xt(tool, "-n", "-L", XT_CHAIN) for tool in XT_TOOLS)

    def hook_priorities(self, family: str = "ip") -> dict[str, int]:
        """Priority of each base chain iptables-nft created in its mangle table."""
        result = self.runner.run(["nft", "-j", "list", "table", family, XT_TABLE])
        if not result.ok:
            return {}
        try:
            items = json.loads(result.stdout).get("nftables", [])
        except json.JSONDecodeError as exc:
            raise KernelError("nft -j printed invalid JSON", str(exc)) from exc
        priorities: dict[str, int] = {}
        for item in items:
            chain = item.get("chain") if isinstance(item, dict) else None
            if isinstance(chain, dict) and "hook" in chain:
                priorities[str(chain["hook"])] = int(chain.get("prio", 0))
        return priorities
