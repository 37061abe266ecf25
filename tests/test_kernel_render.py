"""Pure tests of the kernel adapters: ruleset rendering, xt arguments, parsers."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.kernel.netlink import attr, nfnl_message
from agent.kernel.nflog import (
    NFULA_IFINDEX_INDEV,
    NFULA_MARK,
    NFULA_PACKET_HDR,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    NFULA_TIMESTAMP,
    PACKET_MSG_TYPE,
    parse_nflog_batch,
)
from agent.kernel.nfqueue_config import parse_queue_stats
from agent.kernel.nftables import (
    RulesetSpec,
    parse_counters,
    render_ruleset,
    render_set_update,
)
from agent.kernel.xt_queue import nfqueue_target_args, xt_chain_rules

DATA = Path(__file__).parent / "data"
IOC = ipaddress.IPv4Address("78.135.73.140")


def campaign_spec(**overrides: object) -> RulesetSpec:
    base = RulesetSpec(
        exact_v4=(IOC, ipaddress.IPv4Address("203.0.113.7")),
        exact_v6=(ipaddress.IPv6Address("2001:db8:bad::140"),),
        prefixes_v4=(ipaddress.IPv4Network("198.51.100.0/25"),
                     ipaddress.IPv4Network("198.51.100.128/25")),
        prefixes_v6=(ipaddress.IPv6Network("2001:db8:dead::/48"),),
        queue_nums=(0, 1),
        queue_dns_tls=True,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["nft", "xt"])
def test_rendering_matches_golden(backend: str) -> None:
    text = render_ruleset(campaign_spec(queue_backend=backend))
    golden = DATA / f"kernel_ruleset_{backend}.nft"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_ruleset_replaces_table_in_one_transaction() -> None:
    lines = render_ruleset(campaign_spec()).splitlines()
    assert lines[1:4] == ["table inet rustyflag {}", "delete table inet rustyflag",
                          "table inet rustyflag {"]


def test_nft_backend_queues_with_bypass_and_flow_hash_balance() -> None:
    text = render_ruleset(campaign_spec())
    # http syn, http head, dns udp, dns tcp, tls, and three past-depth rules
    assert text.count("queue num 0-1 bypass") == 8
    # CPU fanout would split a flow across workers (seen in the lab): hash balance only.
    assert "fanout" not in text
    assert "tcp flags & (syn | ack) == syn" in text
    assert "meta mark set meta mark | 0x20000000" not in text


def test_fail_closed_and_single_queue() -> None:
    text = render_ruleset(campaign_spec(fail_closed=True, queue_nums=(3,)))
    assert 'counter name "queued_http" queue num 3\n' in text
    assert "bypass" not in text and "fanout" not in text


def test_xt_backend_marks_instead_of_queueing() -> None:
    text = render_ruleset(campaign_spec(queue_backend="xt"))
    assert "queue num" not in text
    assert text.count("meta mark set meta mark | 0x20000000") == 5  # + the http SYN rule
    assert text.count("meta mark set meta mark | 0x60000000") == 3  # past depth


def test_dry_run_renders_no_drop_or_reject() -> None:
    text = render_ruleset(campaign_spec(dry_run=True))
    assert " drop" not in text and "reject" not in text
    assert 'counter name "ioc_v4_dst"' in text
    assert 'log prefix "rf:ioc_v4:dst" group 7' in text


def test_every_set_drops_both_directions_and_logs_new_flows_with_its_own_limit() -> None:
    text = render_ruleset(campaign_spec(log_rate_per_second=3, log_burst=9))
    for set_name, family in (("ioc_v4", "ip"), ("ioc_v6", "ip6"),
                             ("ioc_net_v4", "ip"), ("ioc_net_v6", "ip6")):
        for direction, field in (("src", "saddr"), ("dst", "daddr")):
            chain = f"rf_{set_name}_{direction}"
            assert f"{family} {field} @{set_name} jump {chain}\n" in text
            body = text.split(f"chain {chain} {{\n", 1)[1].split("}\n", 1)[0]
            log, drop = body.strip().splitlines()
            assert log.strip() == ("ct state { new, untracked } limit rate 3/second burst 9 "
                                   f'packets log prefix "rf:{set_name}:{direction}" group 7')
            assert drop.strip() == f'counter name "{set_name}_{direction}" drop'


def test_blocked_flow_rules_precede_queue_rules() -> None:
    text = render_ruleset(campaign_spec())
    copy = text.index("ct mark set ct mark | 0x10000000")
    reset = text.index("reject with tcp reset")
    queue = text.index("queue num")
    assert copy < reset < queue
    no_reset = render_ruleset(campaign_spec(reset_blocked=False))
    assert "reject" not in no_reset and 'counter name "blocked_flow" drop' in no_reset


def test_only_requested_hooks_get_base_chains() -> None:
    text = render_ruleset(campaign_spec(hooks=("forward",)))
    assert "hook forward priority mangle - 10" in text
    assert "hook forward priority mangle + 10" in text
    assert "hook input" not in text and "hook output" not in text


def test_prefixes_are_merged_for_the_interval_set() -> None:
    text = render_ruleset(campaign_spec())
    assert "add element inet rustyflag ioc_net_v4 { 198.51.100.0/24 }" in text


def test_no_dns_tls_queue_without_hostname_iocs() -> None:
    text = render_ruleset(campaign_spec(queue_dns_tls=False))
    assert "dport 53" not in text and "dport 443" not in text
    assert "ct original bytes < 16384" in text


def test_set_update_flushes_and_refills_in_one_batch_in_chunks() -> None:
    addresses = tuple(ipaddress.IPv4Address(0x0B000000 + i) for i in range(1_000_000))
    spec = RulesetSpec(exact_v4=addresses, chunk_elements=4096)
    lines = render_set_update(spec).splitlines()
    flushes = [i for i, line in enumerate(lines) if line.startswith("flush set")]
    adds = [i for i, line in enumerate(lines) if line.startswith("add element")]
    assert len(flushes) == 4 and max(flushes) < min(adds)
    assert len(adds) == -(-1_000_000 // 4096)
    assert all(lines[i].count(",") < 4096 for i in adds)
    assert sum(lines[i].count(",") + 1 for i in adds) == 1_000_000


def test_empty_sets_render_no_add_element() -> None:
    text = render_set_update(RulesetSpec())
    assert "add element" not in text and text.count("flush set") == 4


@pytest.mark.parametrize(
    "bad",
    [{"queue_nums": (0, 2)}, {"hooks": ("prerouting",)}, {"block_mark": 3},
     {"block_mark": 0x20000000}, {"table": "bad name"}, {"http_ports": (0,)}],
)
def test_invalid_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RulesetSpec(**bad)  # type: ignore[arg-type]


def test_xt_rules_return_blocked_packets_before_queueing() -> None:
    spec = campaign_spec(queue_backend="xt")
    rules = xt_chain_rules(spec)
    assert rules[0][-2:] == ["-j", "RETURN"] and "0x10000000/0x10000000" in rules[0]
    assert rules[1][-4:] == ["NFQUEUE", "--queue-balance", "0:1", "--queue-bypass"]
    single = nfqueue_target_args(campaign_spec(queue_nums=(2,), fail_closed=True))
    assert single == ["-j", "NFQUEUE", "--queue-num", "2"]


def test_parse_counters() -> None:
    text = ('{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "inet", '
            '"name": "ioc_v4_dst", "table": "rustyflag", "handle": 3, "packets": 5, '
            '"bytes": 420}}]}')
    assert parse_counters(text) == {"ioc_v4_dst": (5, 420)}


def test_parse_queue_stats() -> None:
    text = "    0  12345     2 2 65531     7     1       99  1\n    1 -4000 0 2 65531 0 0 0 1\n"
    stats = parse_queue_stats(text)
    assert len(stats) == 2
    first = stats[0]
    assert (first.queue_num, first.portid, first.queue_total, first.copy_mode, first.copy_range,
            first.queue_dropped, first.user_dropped, first.id_sequence) == (
        0, 12345, 2, 2, 65531, 7, 1, 99)
    assert parse_queue_stats("garbage\n\n1 2 3\n") == []


def nflog_packet(prefix: bytes, payload: bytes, hook: int = 2, mark: int = 9) -> bytes:
    attrs = (attr(NFULA_PACKET_HDR, struct.pack("!HBx", 0x0800, hook))
             + attr(NFULA_MARK, struct.pack("!I", mark))
             + attr(NFULA_TIMESTAMP, struct.pack("!QQ", 1_700_000_000, 250_000))
             + attr(NFULA_IFINDEX_INDEV, struct.pack("!I", 4))
             + attr(NFULA_PREFIX, prefix + b"\0")
             + attr(NFULA_PAYLOAD, payload))
    return nfnl_message(PACKET_MSG_TYPE, 0, 0, family=2, res_id=7, attrs=attrs)


def test_parse_nflog_batch_reads_every_attribute() -> None:
    batch = nflog_packet(b"rf:ioc_v4:dst", b"\x45" + b"\0" * 19) + nflog_packet(
        b"rf:ioc_v4:src", b"\x45abc", hook=1, mark=0)
    first, second = parse_nflog_batch(batch)
    assert first.prefix == "rf:ioc_v4:dst" and first.hook_name == "forward"
    assert first.family == 2 and first.hw_protocol == 0x0800 and first.mark == 9
    assert first.timestamp == pytest.approx(1_700_000_000.25)
    assert first.indev == 4 and first.outdev is None and len(first.payload) == 20
    assert second.prefix == "rf:ioc_v4:src" and second.hook_name == "input"
    assert second.payload == b"\x45abc"


def test_parse_nflog_batch_stops_at_truncation() -> None:
    whole = nflog_packet(b"rf:a", b"x" * 40)
    assert len(parse_nflog_batch(whole + whole[:30])) == 1
    assert parse_nflog_batch(whole[:-5]) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parse_nflog_batch_never_raises(data: bytes) -> None:
    for message in parse_nflog_batch(data):
        assert isinstance(message.prefix, str)


def test_past_depth_queues_request_starts_and_short_segments_marked() -> None:
    text = render_ruleset(campaign_spec())
    past = [line.strip() for line in text.splitlines() if "ct original bytes >= 16384" in line]
    assert len(past) == 4
    assert "0x504f5354" in past[0] and "0x47455420" in past[0]  # "POST", "GET "
    assert "@ih,0,16 0x0d0a" in past[1]
    assert past[2].endswith("meta length >= 1200 return")  # full-sized bulk segments: skip
    assert all("meta mark set meta mark | 0x40000000 queue num 0-1" in p
               for p in (past[0], past[1], past[3]))
    filter_chain = text.split("chain rf_filter {", 1)[1].split("\t}", 1)[0].strip().splitlines()
    assert filter_chain[-1].strip() == past[3]  # after every other rule (one is a return)
    xt = render_ruleset(campaign_spec(queue_backend="xt"))
    assert xt.count("meta mark set meta mark | 0x60000000") == 3
    assert "ct original bytes >=" not in render_ruleset(campaign_spec(queue_past_depth=False))
