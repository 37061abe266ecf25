"""The NFLOG reader against the kernel: the ruleset's drop logs, read in the gateway."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

import pytest

from agent.kernel.nftables import render_ruleset
from tests.kernel_helpers import IOC_V4, IOC_V6, kernel_state, lab_spec, stop
from tests.lab.netns import GW_CLIENT_IF, GW_SERVER_IF, Lab, python_env

pytestmark = pytest.mark.lab

READER = r"""
import json, select, sys, time
from agent.kernel.nflog import NflogReader
want = int(sys.argv[2])
with NflogReader(int(sys.argv[1]), copy_range=64) as reader:
    print("ready", flush=True)
    got = []
    deadline = time.monotonic() + float(sys.argv[3])
    while len(got) < want and time.monotonic() < deadline:
        select.select([reader], [], [], 0.2)
        got += reader.read_messages()
    for m in got:
        print(json.dumps({"prefix": m.prefix, "hook": m.hook_name, "family": m.family,
                          "payload": m.payload.hex(), "indev": m.indev, "outdev": m.outdev,
                          "hw": m.hw_protocol, "mark": m.mark}))
    print(json.dumps({"lost": reader.lost_overruns}))
"""


def read_logs(
    lab: Lab, group: int, want: int, traffic: object, wait_s: float = 8.0
) -> list[dict[str, object]]:
    reader = lab.gateway.popen(
        [sys.executable, "-c", READER, str(group), str(want), str(wait_s)],
        env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
        assert callable(traffic)
        traffic()
        reader.wait(timeout=15)
    finally:
        out, err = stop(reader)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and lines[-1] == {"lost": 0}, err
    return lines[:-1]


def test_kernel_drops_are_logged_with_prefix_hook_and_payload(lab: Lab) -> None:
    ifindex = {link["ifname"]: link["ifindex"] for link in lab.gateway.ip_json("link", "show")}
    with kernel_state(lab.gateway) as nft:
        nft.apply(render_ruleset(lab_spec(log_group=11)))

        def traffic() -> None:
            lab.client.ping(str(IOC_V4), count=2)
            lab.client.ping(str(IOC_V6), count=1)

        messages = read_logs(lab, 11, 3, traffic)
    v4 = [m for m in messages if m["prefix"] == "rf:ioc_v4:dst"]
    v6 = [m for m in messages if m["prefix"] == "rf:ioc_v6:dst"]
    assert len(v4) == 2 and len(v6) >= 1, messages
    first = v4[0]
    assert first["hook"] == "forward" and first["family"] == 2 and first["hw"] == 0x0800
    assert first["indev"] == ifindex[GW_CLIENT_IF] and first["outdev"] == ifindex[GW_SERVER_IF]
    packet = bytes.fromhex(str(first["payload"]))
    assert len(packet) == 64  # the copy range
    assert ipaddress.IPv4Address(packet[16:20]) == IOC_V4
    assert packet[9] == 1  # ICMP
    six = bytes.fromhex(str(v6[0]["payload"]))
    assert v6[0]["family"] == 10 and ipaddress.IPv6Address(six[24:40]) == IOC_V6


def test_log_rate_limit_never_limits_the_drop(lab: Lab) -> None:
    with kernel_state(lab.gateway) as nft:
        nft.apply(render_ruleset(lab_spec(log_group=12, log_rate_per_second=1, log_burst=1)))

        def traffic() -> None:
            lab.client.run(["ping", "-n", "-q", "-i", "0.01", "-c", "50", "-W", "1",
                            str(IOC_V4)], check=False, timeout=10)

        messages = read_logs(lab, 12, 50, traffic, wait_s=2.0)
        dropped = nft.counters()["ioc_v4_dst"][0]
    assert dropped == 50  # every packet dropped
    assert 1 <= len(messages) <= 3  # but logging was limited to ~1/s, burst 1


def test_reader_binds_and_closes_in_a_namespace_without_traffic(lab: Lab) -> None:
    out = lab.gateway.python(
        "from agent.kernel.nflog import NflogReader\n"
        "r = NflogReader(13)\nprint(len(r.read_messages()), r.fileno() > 0)\nr.close()\n",
        timeout=10,
    ).stdout.split()
    assert out == ["0", "True"]


LATENCY = r"""
import select, subprocess, sys, time
from agent.kernel.nflog import NflogReader
with NflogReader(int(sys.argv[1])) as reader:
    started = time.monotonic()
    ping = subprocess.Popen(["ping", "-n", "-q", "-c", "1", "-W", "1", sys.argv[2]],
                            stdout=subprocess.DEVNULL)
    got = []
    while not got and time.monotonic() - started < 3:
        select.select([reader], [], [], 0.05)
        got = reader.read_messages()
    print(got[0].prefix if got else "none", time.monotonic() - started)
    ping.wait()
"""


def test_a_lone_log_message_is_not_held_back_for_a_second(lab: Lab) -> None:
    # The kernel's default batching (100 messages or 1 s) would hold it ~1 s.
    with kernel_state(lab.gateway) as nft:
        nft.apply(render_ruleset(lab_spec(log_group=14)))
        out = lab.gateway.python(LATENCY, "14", str(IOC_V4), timeout=15).stdout.split()
    assert out[0] == "rf:ioc_v4:dst"  # the gateway's own ping, output hook
    assert float(out[1]) < 0.6
