"""The rendered ruleset in a real kernel: the lab gateway drops IOCs, reloads atomically."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import subprocess
import sys
import time

import pytest

from agent.kernel.errors import KernelError
from agent.kernel.nftables import render_ruleset, render_set_update
from agent.kernel.queue_backend import probe_queue_backend
from tests.kernel_helpers import IOC_V4, IOC_V6, kernel_state, lab_spec, runner_for, stop
from tests.lab.netns import Lab

pytestmark = pytest.mark.lab


def test_applied_ruleset_is_in_the_kernel(lab: Lab) -> None:
    with kernel_state(lab.gateway) as nft:
        spec = lab_spec(prefixes_v4=(ipaddress.IPv4Network("192.0.2.0/24"),))
        nft.apply(render_ruleset(spec))
        nft.apply(render_ruleset(spec))  # create-or-replace: a second apply works too
        assert nft.table_exists()
        items = nft.list_json()
        chains = {c["name"]: c for i in items if isinstance(c := i.get("chain"), dict)}
        for hook in ("forward", "input", "output"):
            assert chains[hook]["hook"] == hook and chains[hook]["prio"] == -160
            assert chains[f"{hook}_post"]["prio"] == -140
        assert nft.set_element_count("ioc_v4") == 1
        assert nft.set_element_count("ioc_v6") == 1
        assert nft.set_element_count("ioc_net_v4") == 1
        assert set(nft.counters()) >= {"ioc_v4_src", "ioc_v4_dst", "blocked_flow", "queued_http"}
        nft.delete_table()
        nft.delete_table()  # idempotent
        assert not nft.table_exists()


def test_kernel_error_carries_nft_line(lab: Lab) -> None:
    with kernel_state(lab.gateway) as nft:
        with pytest.raises(KernelError) as caught:
            nft.apply("table inet rustyflag {\n\tchain c {\n\t\tip saddr @nosuchset drop\n\t}\n}\n")
        assert "/dev/stdin:3:" in caught.value.detail or ":3:" in caught.value.detail
        assert not nft.table_exists()


def test_nft_queue_backend_is_valid_except_where_the_kernel_lacks_queue(lab: Lab) -> None:
    runner = runner_for(lab.gateway)
    probe = probe_queue_backend(runner)
    text = render_ruleset(lab_spec(queue_backend="nft", queue_nums=(0, 1), queue_dns_tls=True))
    result = runner.run(["nft", "-c", "-f", "-"], stdin=text)
    if probe.nft_queue:
        assert result.ok, result.stderr
        return
    # Every error points at a line whose only unsupported part is the queue statement.
    lines = text.splitlines()
    error_lines = [int(part.split(":")[1]) for part in result.stderr.splitlines()
                   if part.startswith("/dev/stdin:")]
    assert error_lines, result.stderr
    assert all("queue num 0-1 bypass" in lines[n - 1] for n in error_lines)
    assert len(set(error_lines)) == 8  # http SYN + 4 queue rules + 3 past-depth queue rules
    without_queue = text.replace("queue num 0-1 bypass", "accept")
    assert runner.run(["nft", "-c", "-f", "-"], stdin=without_queue).ok


def test_iocs_are_dropped_both_ways_and_counted(lab: Lab) -> None:
    lab.start_server_app()
    assert lab.client.ping(str(IOC_V4)).ok  # reachable before the ruleset
    with kernel_state(lab.gateway) as nft:
        nft.apply(render_ruleset(lab_spec()))
        assert not lab.client.ping(str(IOC_V4), count=3).ok
        assert not lab.client.ping(str(IOC_V6), count=2).ok
        # The IOC as source: the server pings the client from the IOC address.
        reverse = lab.server.run(["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1",
                                  "-I", str(IOC_V4), lab.addr.client_v4], check=False)
        assert " 0 received" in reverse.stdout
        assert lab.client.ping(lab.addr.server_v4).ok  # others pass
        counters = nft.counters()
        assert counters["ioc_v4_dst"][0] >= 3
        assert counters["ioc_v6_dst"][0] >= 2
        assert counters["ioc_v4_src"][0] >= 2
        assert counters["ioc_net_v4_dst"] == (0, 0)


def test_dry_run_counts_without_dropping(lab: Lab) -> None:
    with kernel_state(lab.gateway) as nft:
        nft.apply(render_ruleset(lab_spec(dry_run=True)))
        assert lab.client.ping(str(IOC_V4), count=2).ok
        assert nft.counters()["ioc_v4_dst"][0] >= 2


def random_public(count: int, seed: int) -> tuple[ipaddress.IPv4Address, ...]:
    rng = random.Random(seed)
    return tuple(ipaddress.IPv4Address(rng.randrange(11 << 24, 100 << 24)) for _ in range(count))


# Connects to the IOC again and again until stopped (bounded: 60 s, 3000 attempts).
TCP_LOOP = r"""
import signal, socket, sys, time
attempts = connected = 0
stop = False
def finish(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, finish)
deadline = time.monotonic() + 60
while not stop and attempts < 3000 and time.monotonic() < deadline:
    attempts += 1
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.1).close()
        connected += 1
    except OSError:
        pass
print(attempts, connected)
"""


def test_reload_is_atomic_no_reply_during_20_reloads(lab: Lab) -> None:
    with kernel_state(lab.gateway) as nft:
        spec = lab_spec(exact_v4=(IOC_V4, *random_public(50_000, 0)))
        nft.apply(render_ruleset(spec))
        lab.start_server_app()
        pinger = lab.client.popen(
            ["ping", "-n", "-i", "0.01", "-c", "3000", "-w", "60", str(IOC_V4)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        connector = lab.client.popen(
            [sys.executable, "-c", TCP_LOOP, str(IOC_V4), "80"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            started = time.monotonic()
            for seed in range(1, 21):
                reload_spec = dataclasses.replace(
                    spec, exact_v4=(*random_public(50_000, seed), IOC_V4))
                nft.apply(render_set_update(reload_spec))
            reload_seconds = time.monotonic() - started
        finally:
            out, _err = stop(pinger)
            tcp_out, _err = stop(connector)
        assert nft.set_element_count("ioc_v4") >= 49_000
        assert "bytes from" not in out, out[-500:]
        attempts, connected = (int(n) for n in tcp_out.split())
        assert attempts >= 5 and connected == 0
        sent = nft.counters()["ioc_v4_dst"][0]
        assert sent >= 20, f"the pinger barely ran during {reload_seconds:.1f}s of reloads"
        # A reload without the IOC lets it through: the set is what decides.
        nft.apply(render_set_update(dataclasses.replace(spec, exact_v4=random_public(10, 99))))
        assert lab.client.ping(str(IOC_V4)).ok
        assert lab.client.tcp_connect(str(IOC_V4), 80).ok


BLOCK_TRIGGER = b"EVIL"
# Stands in for the inspector: marks the packet carrying BLOCK_TRIGGER with the block
# bit before rf_filter runs, as a re-injected (NF_REPEAT) packet would arrive.
MARKER_TABLE = """table inet rf_test_marker {
\tchain forward {
\t\ttype filter hook forward priority mangle - 20; policy accept;
\t\ttcp dport 7777 @ih,0,32 == 0x4556494c meta mark set meta mark | 0x10000000
\t}
}
"""

FLOW_PROBE = r"""
import json, socket, sys, time
addr, port = sys.argv[1], int(sys.argv[2])
events = []
s = socket.create_connection((addr, port), timeout=2)
s.sendall(b"hello"); events.append(s.recv(100).decode())
try:
    s.sendall(b"EVIL request"); events.append(s.recv(100).decode() or "eof")
except OSError as exc:
    events.append(type(exc).__name__)
s.close()
t = socket.create_connection((addr, port), timeout=2)
t.sendall(b"again"); events.append(t.recv(100).decode()); t.close()
print(json.dumps(events))
"""


def test_marked_flow_is_reset_and_stays_blocked(lab: Lab) -> None:
    lab.start_server_app()
    runner = runner_for(lab.gateway)
    with kernel_state(lab.gateway) as nft:
        nft.apply(render_ruleset(lab_spec()))
        runner.check(["nft", "-f", "-"], stdin=MARKER_TABLE)
        try:
            out = lab.client.python(FLOW_PROBE, lab.addr.server_v4, "7777", timeout=20).stdout
        finally:
            runner.run(["nft", "delete", "table", "inet", "rf_test_marker"])
        first, blocked, fresh = __import__("json").loads(out)
        assert first == "hello"
        assert blocked == "ConnectionResetError"
        assert fresh == "again"  # only the marked flow is blocked
        assert nft.counters()["blocked_flow"][0] >= 1
        conntrack = runner.run(["conntrack", "-L", "-p", "tcp", "--dport", "7777",
                                "--mark", "0x10000000/0x10000000"])
        assert conntrack.ok and "dport=7777" in conntrack.stdout
