"""The raw netlink set reload (agent.kernel.nft_batch): same result as nft, atomic."""

from __future__ import annotations

import dataclasses
import ipaddress
import pickle
import subprocess
import sys

import pytest

from agent.kernel.netlink import NLMSGHDR, split_attrs, split_messages
from agent.kernel.nft_batch import (
    MAX_LIST_BYTES,
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    set_update_batch,
)
from agent.kernel.nftables import RulesetSpec, render_ruleset, render_set_update
from tests.kernel_helpers import IOC_V4, kernel_state, lab_spec, runner_for, stop
from tests.lab.netns import Lab, python_env

V4 = ipaddress.IPv4Network
V6 = ipaddress.IPv6Network


def spec_with(count: int, **overrides: object) -> RulesetSpec:
    fields: dict[str, object] = {
        "queue_backend": "xt",
        "exact_v4": tuple(ipaddress.IPv4Address(0x0B000000 + i) for i in range(count)),
        "exact_v6": (ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("2001:db8::2")),
        # Adjacent CIDRs (11/8 + 12/8) must merge into one range; 255/8 reaches the top.
        "prefixes_v4": (V4("11.0.0.0/8"), V4("12.0.0.0/8"), V4("192.168.0.0/16"),
                        V4("255.0.0.0/8")),
        "prefixes_v6": (V6("2001:db8:bad::/48"), V6("::/8")),
    }
    fields.update(overrides)
    return RulesetSpec(**fields)  # type: ignore[arg-type]


def test_batch_is_framed_flushes_first_and_keeps_lists_small() -> None:
    batch = set_update_batch(spec_with(20_000))
    messages = list(split_messages(batch.data))
    assert sum(NLMSGHDR.size + len(m.body) for m in messages) <= len(batch.data)
    assert messages[0].msg_type == NFNL_MSG_BATCH_BEGIN
    assert messages[-1].msg_type == NFNL_MSG_BATCH_END
    kinds = [m.msg_type & 0xFF for m in messages[1:-1]]
    assert kinds[:4] == [14, 14, 14, 14]  # four DELSETELEM (flush) before any NEWSETELEM
    assert set(kinds[4:]) == {12}
    assert len(messages) == batch.messages and messages[-2].seq == batch.last_seq
    assert all(len(m.body) < MAX_LIST_BYTES + 200 for m in messages)
    assert len(kinds) - 4 >= 20_000 * 16 // MAX_LIST_BYTES


def test_interval_encoding_matches_nft() -> None:
    batch = set_update_batch(spec_with(0, exact_v6=(), prefixes_v6=()))
    ranges = [m for m in split_messages(batch.data) if m.msg_type & 0xFF == 12]
    assert len(ranges) == 1
    elements = split_attrs(ranges[0].body, 4)[3]
    keys = []
    offset = 0
    while offset < len(elements):
        length = int.from_bytes(elements[offset:offset + 2], "little")
        inner = split_attrs(elements[offset + 4:offset + length])
        key = split_attrs(inner[1])[1]
        keys.append((str(ipaddress.IPv4Address(key)), 3 in inner))
        offset += (length + 3) & ~3
    assert keys == [("0.0.0.0", True), ("11.0.0.0", False), ("13.0.0.0", True),
                    ("192.168.0.0", False), ("192.169.0.0", True), ("255.0.0.0", False)]


LIST_SETS = ["nft", "list", "set", "inet", "rustyflag"]


def covered_ranges(listing: str) -> list[tuple[int, int]]:
    """The address ranges an `nft list set` output matches, merged (adjacent too)."""
    body = listing.split("elements = {", 1)[1].split("}", 1)[0] if "elements" in listing else ""
    ranges: list[tuple[int, int]] = []
    for token in (t.strip() for t in body.split(",")):
        if not token:
            continue
        if "-" in token:
            first, last = token.split("-")
            ranges.append((int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))))
        else:
            net = ipaddress.ip_network(token)
            ranges.append((int(net.network_address), int(net.broadcast_address)))
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return merged


def list_sets(lab: Lab) -> list[list[tuple[int, int]]]:
    runner = runner_for(lab.gateway)
    return [covered_ranges(runner.check([*LIST_SETS, name]).stdout)
            for name in ("ioc_v4", "ioc_v6", "ioc_net_v4", "ioc_net_v6")]


RELOAD = r"""
import ipaddress, pickle, sys
from agent.kernel.errors import KernelError
from agent.kernel.nft_batch import replace_set_contents
specs = pickle.load(sys.stdin.buffer)
for spec in specs:
    try:
        replace_set_contents(spec)
    except KernelError as exc:
        print("KernelError", exc.detail)
        break
else:
    print("ok")
"""


def run_batches(lab: Lab, specs: list[RulesetSpec]) -> str:
    proc = subprocess.run(
        [*lab.gateway.exec_prefix(), sys.executable, "-c", RELOAD],
        input=pickle.dumps(specs), capture_output=True, env=python_env(), timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return proc.stdout.decode().strip()


@pytest.mark.lab
def test_batch_gives_the_same_sets_as_nft(lab: Lab) -> None:
    spec = spec_with(5_000)
    with kernel_state(lab.gateway) as nft:
        nft.apply(render_ruleset(dataclasses.replace(spec, exact_v4=())))
        nft.apply(render_set_update(spec))
        by_nft = list_sets(lab)
        nft.apply(render_set_update(dataclasses.replace(spec, exact_v4=(), prefixes_v4=())))
        assert run_batches(lab, [spec]) == "ok"
        assert list_sets(lab) == by_nft
        assert nft.set_element_count("ioc_v4") == 5_000
        assert list_sets(lab)[2] == [(0x0B000000, 0x0CFFFFFF), (0xC0A80000, 0xC0A8FFFF),
                                     (0xFF000000, 0xFFFFFFFF)]


PARTIAL_TABLE = """table inet rf_partial {
\tset ioc_v4 { type ipv4_addr; elements = { 78.135.73.140 }; }
\tset ioc_v6 { type ipv6_addr; }
\tset ioc_net_v4 { type ipv4_addr; flags interval; elements = { 10.0.0.0/8 }; }
}
"""


@pytest.mark.lab
def test_failed_batch_changes_nothing(lab: Lab) -> None:
    runner = runner_for(lab.gateway)
    runner.check(["nft", "-f", "-"], stdin=PARTIAL_TABLE)
    try:
        # Three flushes and the adds would succeed; the fourth set is missing: all or nothing.
        out = run_batches(lab, [spec_with(100, table="rf_partial")])
        assert out.startswith("KernelError"), out
        listing = runner.check(["nft", "list", "table", "inet", "rf_partial"]).stdout
        assert "78.135.73.140" in listing and "10.0.0.0/8" in listing
        assert "11.0.0.1" not in listing
    finally:
        runner.run(["nft", "delete", "table", "inet", "rf_partial"])


@pytest.mark.lab
def test_batch_reloads_are_atomic_under_a_ping_flood(lab: Lab) -> None:
    base = lab_spec()
    specs = [dataclasses.replace(base, exact_v4=(
        *(ipaddress.IPv4Address((seed << 24) + i) for i in range(50_000)), IOC_V4))
        for seed in range(11, 31)]
    with kernel_state(lab.gateway) as nft:
        nft.apply(render_ruleset(base))
        pinger = lab.client.popen(
            ["ping", "-n", "-i", "0.005", "-c", "4000", "-w", "60", str(IOC_V4)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert run_batches(lab, specs) == "ok"
        finally:
            out, _err = stop(pinger)
        assert "bytes from" not in out
        assert nft.counters()["ioc_v4_dst"][0] >= 20
        assert nft.set_element_count("ioc_v4") == 50_001
