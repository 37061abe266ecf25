"""Helpers for the kernel adapter tests: adapters bound to a lab namespace, cleanup."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
from collections.abc import Iterator

from agent.kernel.commands import CommandRunner
from agent.kernel.nftables import NftablesAdapter, RulesetSpec
from agent.kernel.xt_queue import XtQueueRules
from tests.lab.netns import ADDR, Netns

IOC_V4 = ipaddress.IPv4Address(ADDR.ioc_v4)
IOC_V6 = ipaddress.IPv6Address(ADDR.ioc_v6)


def lab_spec(**overrides: object) -> RulesetSpec:
    """The Rusty Flag IOCs, xt backend (this kernel has no nft queue)."""
    fields: dict[str, object] = {
        "exact_v4": (IOC_V4,),
        "exact_v6": (IOC_V6,),
        "queue_backend": "xt",
    }
    fields.update(overrides)
    return RulesetSpec(**fields)  # type: ignore[arg-type]


def runner_for(ns: Netns) -> CommandRunner:
    return CommandRunner.in_netns(ns.name, timeout_s=60.0)


@contextlib.contextmanager
def kernel_state(ns: Netns) -> Iterator[NftablesAdapter]:
    """An adapter for `ns`; the table and xt rules are removed afterwards."""
    runner = runner_for(ns)
    adapter = NftablesAdapter(runner)
    try:
        yield adapter
    finally:
        adapter.delete_table()
        XtQueueRules(runner).remove()


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop a process started with start_new_session (its own group) and collect output."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
    return out or "", err or ""
