"""The agent's nftables ruleset: rendering (pure) and applying it (`nft -f -`).

Layout (see docs/kernel.md for the measurements behind it):
- exact IOC addresses live in plain hash sets (`ioc_v4`, `ioc_v6`): a hash set
  of /32s loads ~4x faster than an interval set and needs far less memory;
- IOC prefixes live in small interval sets (`ioc_net_v4`, `ioc_net_v6`);
- one regular chain `rf_filter` holds the IOC lookups (a hit jumps to a small
  log + count + drop chain per set and direction), the blocked-flow rules and
  the queue rules; one base chain per hook (priority mangle - 10 = -160)
  jumps to it: after conntrack (-200), so ct state/mark/bytes are known, and
  before iptables mangle (-150) so the xt queue rule sees the mark set here,
  and before filter (0);
- a second base chain per hook at mangle + 10 (-140) turns an inspector's
  block mark into a conntrack mark and a drop, for packets the xt backend
  re-injects with NF_REPEAT (a repeat re-runs only the chain that queued).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.core.http import HTTP_REQUEST_STARTS
from agent.kernel.commands import HOST_RUNNER, CommandRunner
from agent.kernel.errors import KernelError

Hook = Literal["forward", "input", "output"]
QueueBackend = Literal["nft", "xt"]

ALL_HOOKS: tuple[Hook, ...] = ("forward", "input", "output")
DEFAULT_HTTP_PORTS: tuple[int, ...] = (80, 8000, 8080, 6862, 6870)
FILTER_PRIORITY = "mangle - 10"  # -160
POST_QUEUE_PRIORITY = "mangle + 10"  # -140
FILTER_CHAIN = "rf_filter"
BLOCK_CHAIN = "rf_block"
# nft reads a batch whole, but one enormous `add element` line costs memory in
# the parser; 4096 elements a line measured as fast as larger chunks (bench).
DEFAULT_CHUNK_ELEMENTS = 4096
# DNS queries and TLS ClientHellos sit in the first few packets of a flow.
DNS_TLS_FIRST_PACKETS = 5
# `@ih` loads from the first byte after the transport header; the load fails
# (and the rule does not match) when there is no payload, so `& 0 == 0` is
# "this packet carries payload".
HAS_PAYLOAD = "@ih,0,8 & 0x0 == 0x0"
# Past the depth, a segment that starts a request (a method token, or the CRLF
# some servers skip before one) or is too small to tell is still queued,
# marked so the inspector knows the bytes before it never came. Without this
# a client could pad a keep-alive connection past the depth with harmless
# requests and send the attack after them.
# Past the depth, segments at least this long (IP length) are taken for bulk data.
BULK_SEGMENT_BYTES = 1200

SET_NAMES: tuple[str, ...] = ("ioc_v4", "ioc_v6", "ioc_net_v4", "ioc_net_v6")


@dataclass(frozen=True, slots=True)
class RulesetSpec:
    """Everything the ruleset depends on, as plain data."""

    table: str = "rustyflag"
    exact_v4: tuple[ipaddress.IPv4Address, ...] = ()
    exact_v6: tuple[ipaddress.IPv6Address, ...] = ()
    prefixes_v4: tuple[ipaddress.IPv4Network, ...] = ()
    prefixes_v6: tuple[ipaddress.IPv6Network, ...] = ()
    hooks: tuple[Hook, ...] = ALL_HOOKS
    dry_run: bool = False
    log_group: int = 7
    log_rate_per_second: int = 10
    log_burst: int = 20
    http_ports: tuple[int, ...] = DEFAULT_HTTP_PORTS
    queue_nums: tuple[int, ...] = (0,)
    fail_closed: bool = False
    inspect_depth_bytes: int = 16384
    queue_dns_tls: bool = False
    queue_backend: QueueBackend = "nft"
    block_mark: int = 0x10000000
    # Only used by the xt backend: nft marks, iptables-nft queues what is marked.
    queue_mark: int = 0x20000000
    reset_blocked: bool = True
    queue_past_depth: bool = True
    # Set on packets queued past the depth (see HTTP_REQUEST_STARTS).
    past_depth_mark: int = 0x40000000
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    # Optional `size` hint for the exact-address hash sets (0: none).
    set_size_hint: int = 0

    def __post_init__(self) -> None:
        problems = spec_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def queue_range(self) -> str:
        """`0` or `0-1`: NFQUEUE numbers must be one contiguous range."""
        low, high = min(self.queue_nums), max(self.queue_nums)
        return str(low) if low == high else f"{low}-{high}"

    @property
    def inspects(self) -> bool:
        return bool(self.queue_nums) and (bool(self.http_ports) or self.queue_dns_tls)


def _single_bit(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0 and value < 2**32


def spec_problems(spec: RulesetSpec) -> tuple[str, ...]:
    """Why a spec cannot be rendered (empty when it can)."""
    problems: list[str] = []
    if not spec.table.isidentifier():
        problems.append(f"table name {spec.table!r} is not an identifier")
    if not spec.hooks or any(h not in ALL_HOOKS for h in spec.hooks):
        problems.append(f"hooks must be a non-empty subset of {ALL_HOOKS}")
    if len(set(spec.hooks)) != len(spec.hooks):
        problems.append("hooks repeat")
    nums = sorted(set(spec.queue_nums))
    if nums and (nums[0] < 0 or nums[-1] > 65535 or nums != list(range(nums[0], nums[-1] + 1))):
        problems.append(f"queue_nums {spec.queue_nums} are not one contiguous range in 0..65535")
    if not 0 <= spec.log_group <= 65535:
        problems.append("log_group out of range")
    if spec.log_rate_per_second < 1 or spec.log_burst < 1:
        problems.append("log rate and burst must be positive")
    if any(not 0 < p < 65536 for p in spec.http_ports):
        problems.append("http_ports out of range")
    if spec.inspect_depth_bytes < 1:
        problems.append("inspect_depth_bytes must be positive")
    marks = (spec.block_mark, spec.queue_mark, spec.past_depth_mark)
    if not all(_single_bit(mark) for mark in marks):
        problems.append("block, queue and past-depth marks must each be one bit of a 32-bit mark")
    if len(set(marks)) != len(marks):
        problems.append("block, queue and past-depth marks must differ")
    if spec.queue_backend not in ("nft", "xt"):
        problems.append(f"unknown queue_backend {spec.queue_backend!r}")
    if spec.chunk_elements < 1:
        problems.append("chunk_elements must be positive")
    return tuple(problems)


# --- rendering ---------------------------------------------------------------


def _counter_name(set_name: str, direction: str) -> str:
    return f"{set_name}_{direction}"


COUNTER_NAMES: tuple[str, ...] = (
    *(_counter_name(s, d) for s in SET_NAMES for d in ("src", "dst")),
    "blocked_flow",
    "queued_http",
    "queued_dns",
    "queued_tls",
    "queued_past_depth",
)


def _queue_action(spec: RulesetSpec, extra_mark: int = 0) -> str:
    if spec.queue_backend == "xt":
        return f"meta mark set meta mark | {spec.queue_mark | extra_mark:#010x}"
    # No `fanout`: the default balance hashes the address pair and protocol, so every
    # packet of a flow (both directions) reaches the same worker and its flow table.
    # CPU fanout follows the CPU that handled the packet and splits flows.
    flags = [] if spec.fail_closed else ["bypass"]
    marked = f"meta mark set meta mark | {extra_mark:#010x} " if extra_mark else ""
    return f"{marked}queue num {spec.queue_range}" + (f" {','.join(flags)}" if flags else "")


def _ioc_chain_name(set_name: str, direction: str) -> str:
    return f"rf_{set_name}_{direction}"


def _ioc_rules(spec: RulesetSpec) -> list[str]:
    """One set lookup per set and direction; a hit jumps to that pair's own chain.

    Benign packets (nearly all) then cost 8 lookups, not 16 (log + drop rules).
    """
    rules: list[str] = []
    for set_name in SET_NAMES:
        family = "ip" if set_name.endswith("v4") else "ip6"
        for direction, field in (("src", "saddr"), ("dst", "daddr")):
            rules.append(f"{family} {field} @{set_name} jump "
                         f"{_ioc_chain_name(set_name, direction)}")
    return rules


def _ioc_chains(spec: RulesetSpec) -> list[tuple[str, list[str]]]:
    """Log (rate-limited, new flows only), then count and drop (counter only in dry-run)."""
    limit = f"limit rate {spec.log_rate_per_second}/second burst {spec.log_burst} packets"
    chains: list[tuple[str, list[str]]] = []
    for set_name in SET_NAMES:
        for direction in ("src", "dst"):
            prefix = f"rf:{set_name}:{direction}"
            verdict = "" if spec.dry_run else " drop"
            chains.append((_ioc_chain_name(set_name, direction), [
                # The limit sits on the log rule only, so it can never limit the drop.
                f"ct state {{ new, untracked }} {limit} "
                f'log prefix "{prefix}" group {spec.log_group}',
                f'counter name "{_counter_name(set_name, direction)}"{verdict}',
            ]))
    return chains


def _block_rules(spec: RulesetSpec) -> list[str]:
    """Copy the inspector's packet mark to the flow, then drop every packet of the flow."""
    bit = f"{spec.block_mark:#010x}"
    rules = [f"meta mark & {bit} == {bit} ct mark set ct mark | {bit}"]
    counted = f'ct mark & {bit} == {bit}'
    if spec.dry_run:
        rules.append(f'{counted} counter name "blocked_flow"')
        return rules
    if spec.reset_blocked:
        # Our own RST is attached to the blocked flow's conntrack and crosses the
        # output hook: let RSTs of blocked flows through, they carry no data.
        rules.append(f"{counted} tcp flags & rst == rst return")
        rules.append(
            f'{counted} meta l4proto tcp counter name "blocked_flow" reject with tcp reset'
        )
    rules.append(f'{counted} counter name "blocked_flow" drop')
    return rules


def _queue_rules(spec: RulesetSpec) -> list[str]:
    if not spec.inspects:
        return []
    action = _queue_action(spec)
    rules: list[str] = []
    if spec.http_ports:
        # The client's SYN tells the inspector where the stream starts, so a first
        # segment that arrives after a later one is still placed right.
        rules.append(
            f"meta l4proto tcp tcp dport @http_ports ct direction original "
            f'tcp flags & (syn | ack) == syn counter name "queued_http" {action}'
        )
        rules.append(
            f"meta l4proto tcp tcp dport @http_ports ct direction original "
            f"ct original bytes < {spec.inspect_depth_bytes} {HAS_PAYLOAD} "
            f'counter name "queued_http" {action}'
        )
    if spec.queue_dns_tls:
        first = f"ct direction original ct original packets <= {DNS_TLS_FIRST_PACKETS}"
        rules.append(f'meta l4proto udp udp dport 53 {first} counter name "queued_dns" {action}')
        for port, counter in ((53, "queued_dns"), (443, "queued_tls")):
            rules.append(
                f"meta l4proto tcp tcp dport {port} {first} {HAS_PAYLOAD} "
                f'counter name "{counter}" {action}'
            )
    if spec.http_ports and spec.queue_past_depth:
        rules.extend(_past_depth_rules(spec))  # last: it ends with a `return`
    return rules


def _past_depth_rules(spec: RulesetSpec) -> list[str]:
    past = (f"meta l4proto tcp tcp dport @http_ports ct direction original "
            f"ct original bytes >= {spec.inspect_depth_bytes}")
    action = f'counter name "queued_past_depth" {_queue_action(spec, spec.past_depth_mark)}'
    if spec.queue_backend == "xt":
        action += " return"  # marking does not end the chain: count each packet once
    starts = ", ".join(f"{int.from_bytes(token, 'big'):#010x}" for token in HTTP_REQUEST_STARTS)
    return [
        f"{past} @ih,0,32 {{ {starts} }} {action}",
        f"{past} @ih,0,16 0x0d0a {action}",
        # Full-sized segments are bulk (uploads): they stay in the kernel. Shorter ones
        # are the bodies of small requests (a form's `num=...`) and tiny split tricks.
        f"{past} meta length >= {BULK_SEGMENT_BYTES} return",
        f"{past} {HAS_PAYLOAD} {action}",
    ]


def _elements(values: Sequence[object], chunk: int) -> Iterator[str]:
    for start in range(0, len(values), chunk):
        yield ", ".join(str(v) for v in values[start : start + chunk])


def _merged_v4(networks: Iterable[ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
    return list(ipaddress.collapse_addresses(networks))


def _merged_v6(networks: Iterable[ipaddress.IPv6Network]) -> list[ipaddress.IPv6Network]:
    return list(ipaddress.collapse_addresses(networks))


def _set_contents(spec: RulesetSpec) -> list[tuple[str, Sequence[object]]]:
    # Interval sets reject overlapping elements, so prefixes are merged first.
    return [
        ("ioc_v4", spec.exact_v4),
        ("ioc_v6", spec.exact_v6),
        ("ioc_net_v4", _merged_v4(spec.prefixes_v4)),
        ("ioc_net_v6", _merged_v6(spec.prefixes_v6)),
    ]


def _add_element_lines(spec: RulesetSpec) -> Iterator[str]:
    for set_name, values in _set_contents(spec):
        for chunk in _elements(values, spec.chunk_elements):
            yield f"add element inet {spec.table} {set_name} {{ {chunk} }}"


def render_ruleset(spec: RulesetSpec) -> str:
    """The whole table as ONE `nft -f -` transaction that creates or replaces it."""
    t = spec.table
    size = f" size {spec.set_size_hint};" if spec.set_size_hint else ""
    lines = [
        "# rustyflag-agent ruleset: one transaction, create-or-replace.",
        f"table inet {t} {{}}",
        f"delete table inet {t}",
        f"table inet {t} {{",
        f"\tset ioc_v4 {{ type ipv4_addr;{size} }}",
        f"\tset ioc_v6 {{ type ipv6_addr;{size} }}",
        "\tset ioc_net_v4 { type ipv4_addr; flags interval; }",
        "\tset ioc_net_v6 { type ipv6_addr; flags interval; }",
    ]
    ports = ", ".join(str(p) for p in sorted(set(spec.http_ports)))
    port_elements = f" elements = {{ {ports} }};" if ports else ""
    lines.append(f"\tset http_ports {{ type inet_service;{port_elements} }}")
    lines.extend(f"\tcounter {name} {{}}" for name in COUNTER_NAMES)
    for chain, rules in _ioc_chains(spec):
        lines.append(f"\tchain {chain} {{")
        lines.extend(f"\t\t{rule}" for rule in rules)
        lines.append("\t}")
    lines.append(f"\tchain {FILTER_CHAIN} {{")
    filter_rules = (*_ioc_rules(spec), *_block_rules(spec), *_queue_rules(spec))
    lines.extend(f"\t\t{rule}" for rule in filter_rules)
    lines.append("\t}")
    lines.append(f"\tchain {BLOCK_CHAIN} {{")
    lines.extend(f"\t\t{rule}" for rule in _block_rules(spec))
    lines.append("\t}")
    for hook in spec.hooks:
        lines.append(f"\tchain {hook} {{")
        lines.append(f"\t\ttype filter hook {hook} priority {FILTER_PRIORITY}; policy accept;")
        lines.append(f"\t\tjump {FILTER_CHAIN}")
        lines.append("\t}")
        lines.append(f"\tchain {hook}_post {{")
        lines.append(f"\t\ttype filter hook {hook} priority {POST_QUEUE_PRIORITY}; policy accept;")
        lines.append(f"\t\tjump {BLOCK_CHAIN}")
        lines.append("\t}")
    lines.append("}")
    lines.extend(_add_element_lines(spec))
    return "\n".join(lines) + "\n"


def render_set_update(spec: RulesetSpec) -> str:
    """Replace the IOC set contents in ONE transaction: no moment where an IOC passes."""
    lines = ["# rustyflag-agent set reload: flush and refill atomically."]
    lines.extend(f"flush set inet {spec.table} {name}" for name in SET_NAMES)
    lines.extend(_add_element_lines(spec))
    return "\n".join(lines) + "\n"


# --- applying ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NftablesAdapter:
    """Applies rendered text with `nft -f -` and reads the table back."""

    runner: CommandRunner = HOST_RUNNER
    table: str = "rustyflag"

    def apply(self, text: str) -> None:
        """Run one transaction; nft's message (file:line: Error ...) is kept in the error."""
        result = self.runner.run(["nft", "-f", "-"], stdin=text)
        if not result.ok:
            raise KernelError("nft -f - rejected the transaction", _first_lines(result.stderr))

    def check(self, text: str) -> None:
        """Like `apply` with `nft -c`: the kernel validates, nothing is committed."""
        result = self.runner.run(["nft", "-c", "-f", "-"], stdin=text)
        if not result.ok:
            raise KernelError("nft -c rejected the transaction", _first_lines(result.stderr))

    def table_exists(self) -> bool:
        return self.runner.run(["nft", "list", "table", "inet", self.table]).ok

    def delete_table(self) -> None:
        """Idempotent: creating the table first makes the delete always succeed."""
        self.apply(f"table inet {self.table} {{}}\ndelete table inet {self.table}\n")

    def list_json(self) -> list[dict[str, object]]:
        result = self.runner.check(["nft", "-j", "list", "table", "inet", self.table])
        return _nftables_items(result.stdout)

    def counters(self) -> dict[str, tuple[int, int]]:
        """(packets, bytes) per named counter of the table."""
        result = self.runner.check(["nft", "-j", "list", "counters", "table", "inet", self.table])
        return parse_counters(result.stdout)

    def set_element_count(self, set_name: str) -> int:
        result = self.runner.check(["nft", "-j", "list", "set", "inet", self.table, set_name])
        for item in _nftables_items(result.stdout):
            body = item.get("set")
            if isinstance(body, dict):
                elems = body.get("elem", [])
                return len(elems) if isinstance(elems, list) else 0
        return 0


def _first_lines(text: str, limit: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[:limit])


def _nftables_items(text: str) -> list[dict[str, object]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KernelError("nft -j printed invalid JSON", str(exc)) from exc
    items = doc.get("nftables", []) if isinstance(doc, dict) else []
    return [item for item in items if isinstance(item, dict)]


def parse_counters(text: str) -> dict[str, tuple[int, int]]:
    """Named counters from `nft -j list counters ...` output."""
    counters: dict[str, tuple[int, int]] = {}
    for item in _nftables_items(text):
        body = item.get("counter")
        if isinstance(body, dict) and isinstance(body.get("name"), str):
            counters[str(body["name"])] = (int(body.get("packets", 0)), int(body.get("bytes", 0)))
    return counters
