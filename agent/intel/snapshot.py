"""The merged, immutable view of every loaded campaign: lookups and nftables sets.

Built once per (re)load by `build_snapshot`; the packet path only reads it.
`match_address` is on the hot path (src and dst of every packet): exact
addresses sit in a dict keyed by the packed bytes from the IP header, prefixes
in one dict per distinct prefix length keyed by the masked integer, and a miss
returns a shared empty tuple without allocating.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

from agent.intel.model import IOA, IOC, Campaign, Enrichment, IOAType, SourceRef

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class IocHit:
    campaign: Campaign
    ioc: IOC


@dataclass(frozen=True, slots=True)
class IoaHit:
    campaign: Campaign
    ioa: IOA


@dataclass(frozen=True, slots=True)
class CampaignCounts:
    name: str
    source: str
    iocs: int
    techniques: int
    ioas: int
    withheld: tuple[tuple[str, int], ...]


NO_IOC_HITS: tuple[IocHit, ...] = ()
NO_IOA_HITS: tuple[IoaHit, ...] = ()

# (mask, masked int -> hits) for one prefix length.
_PrefixTable = tuple[int, dict[int, tuple[IocHit, ...]]]


@dataclass(frozen=True, slots=True, eq=False)
class IntelSnapshot:
    campaigns: tuple[Campaign, ...]
    intel_version: str
    warnings: tuple[str, ...]
    counts: tuple[CampaignCounts, ...]
    # Hot path: a closure over plain dicts (see `_address_matcher`).
    match_address: Callable[[bytes], tuple[IocHit, ...]]
    argument_ioas: Mapping[str, tuple[IoaHit, ...]]
    exact_v4: frozenset[ipaddress.IPv4Address]
    exact_v6: frozenset[ipaddress.IPv6Address]
    prefixes_v4: tuple[ipaddress.IPv4Network, ...]
    prefixes_v6: tuple[ipaddress.IPv6Network, ...]
    _hostnames: Mapping[str, tuple[IocHit, ...]]
    _ioas_by_type: Mapping[IOAType, tuple[IoaHit, ...]]

    def match_hostname(self, name: str) -> tuple[IocHit, ...]:
        """Exact, case-insensitive hostname match (a trailing dot is ignored)."""
        return self._hostnames.get(normalize_hostname(name), NO_IOC_HITS)

    def ioas(self, type: IOAType) -> tuple[IoaHit, ...]:
        return self._ioas_by_type.get(type, NO_IOA_HITS)

    @property
    def ioc_count(self) -> int:
        return sum(c.iocs for c in self.counts)

    @property
    def ioa_count(self) -> int:
        return sum(c.ioas for c in self.counts)

    @property
    def technique_count(self) -> int:
        return sum(c.techniques for c in self.counts)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic GC while building intel.

    Loading creates hundreds of thousands of acyclic objects that all survive;
    each automatic collection would re-scan them all (measured: parsing runs
    3x slower with the GC on). Restores the previous state, nests safely.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def normalize_hostname(name: str) -> str:
    return name.strip().rstrip(".").lower()


def intel_version_of(campaigns: Iterable[Campaign]) -> str:
    """First 16 hex of sha256 over sorted content hashes and enrichment contents.

    The enrichment enters by value (not its file path), so moving a config
    directory does not change the version; editing any value does.
    """
    parts = sorted(f"{c.content_hash}|{_enrichment_contents(c.enrichment)}" for c in campaigns)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _enrichment_contents(enrichment: Enrichment | None) -> str:
    if enrichment is None:
        return ""
    return repr(dataclasses.replace(enrichment, source=SourceRef("")))


def build_snapshot(campaigns: Sequence[Campaign]) -> IntelSnapshot:
    with paused_gc():
        return _build(tuple(campaigns))


def _build(campaigns: tuple[Campaign, ...]) -> IntelSnapshot:
    exact: dict[bytes, list[IocHit]] = defaultdict(list)
    prefixes: dict[tuple[int, int], dict[int, list[IocHit]]] = defaultdict(
        lambda: defaultdict(list)
    )
    hostnames: dict[str, list[IocHit]] = defaultdict(list)
    by_type: dict[IOAType, list[IoaHit]] = defaultdict(list)
    arguments: dict[str, list[IoaHit]] = defaultdict(list)
    warnings: list[str] = []
    seen_names: dict[str, str] = {}
    for campaign in campaigns:
        if campaign.name in seen_names:
            warnings.append(
                f"campaign {campaign.name!r} loaded twice ({seen_names[campaign.name]}, "
                f"{campaign.source}); both kept"
            )
        seen_names.setdefault(campaign.name, campaign.source)
        warnings.extend(campaign.warnings)
        for ioc in campaign.iocs:
            hit = IocHit(campaign, ioc)
            network = ioc.network
            if network is not None:
                if network.prefixlen == network.max_prefixlen:
                    exact[network.network_address.packed].append(hit)
                else:
                    key = (network.version, network.prefixlen)
                    prefixes[key][int(network.network_address)].append(hit)
            if ioc.hostname:
                hostnames[normalize_hostname(ioc.hostname)].append(hit)
        for ioa in campaign.ioas:
            ioa_hit = IoaHit(campaign, ioa)
            by_type[ioa.type].append(ioa_hit)
            if ioa.type is IOAType.ARGUMENT:
                for name in ioa.value.split("/"):
                    if name.strip():
                        arguments[name.strip().lower()].append(ioa_hit)
    exact_v4, exact_v6, prefixes_v4, prefixes_v6 = _nft_sets(exact, prefixes)
    return IntelSnapshot(
        campaigns=campaigns,
        intel_version=intel_version_of(campaigns),
        warnings=tuple(warnings),
        counts=tuple(
            CampaignCounts(
                c.name, c.source, len(c.iocs), len(c.techniques), len(c.ioas), c.withheld
            )
            for c in campaigns
        ),
        match_address=_address_matcher(exact, prefixes),
        argument_ioas=MappingProxyType({k: tuple(v) for k, v in arguments.items()}),
        exact_v4=exact_v4,
        exact_v6=exact_v6,
        prefixes_v4=prefixes_v4,
        prefixes_v6=prefixes_v6,
        _hostnames=MappingProxyType({k: tuple(v) for k, v in hostnames.items()}),
        _ioas_by_type=MappingProxyType({k: tuple(v) for k, v in by_type.items()}),
    )


def _address_matcher(
    exact: Mapping[bytes, list[IocHit]],
    prefixes: Mapping[tuple[int, int], Mapping[int, list[IocHit]]],
) -> Callable[[bytes], tuple[IocHit, ...]]:
    exact_hits: dict[bytes, tuple[IocHit, ...]] = {k: tuple(v) for k, v in exact.items()}
    tables: dict[int, tuple[_PrefixTable, ...]] = {}
    for version, width, bits in ((4, 4, 32), (6, 16, 128)):
        tables[width] = tuple(
            (
                ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1),
                {k: tuple(v) for k, v in prefixes[(version, plen)].items()},
            )
            for (v, plen) in sorted(prefixes, reverse=True)  # longest prefix first
            if v == version
        )
    v4_tables, v6_tables = tables[4], tables[16]
    get_exact = exact_hits.get
    from_bytes = int.from_bytes

    if not v4_tables and not v6_tables:
        # The common case (VulDB lists single addresses): one dict probe.
        def match_exact_only(packed: bytes) -> tuple[IocHit, ...]:
            return get_exact(packed, NO_IOC_HITS)

        return match_exact_only

    def match_with_prefixes(packed: bytes) -> tuple[IocHit, ...]:
        hits = get_exact(packed, NO_IOC_HITS)
        prefix_tables = v4_tables if len(packed) == 4 else v6_tables
        if not prefix_tables:
            return hits
        value = from_bytes(packed, "big")
        for mask, table in prefix_tables:
            found = table.get(value & mask)
            if found is not None:
                hits = hits + found
        return hits

    return match_with_prefixes


def _nft_sets(
    exact: Mapping[bytes, list[IocHit]],
    prefixes: Mapping[tuple[int, int], Mapping[int, list[IocHit]]],
) -> tuple[
    frozenset[ipaddress.IPv4Address],
    frozenset[ipaddress.IPv6Address],
    tuple[ipaddress.IPv4Network, ...],
    tuple[ipaddress.IPv6Network, ...],
]:
    nets_v4: list[ipaddress.IPv4Network] = []
    nets_v6: list[ipaddress.IPv6Network] = []
    for (version, plen), table in prefixes.items():
        for value in table:
            if version == 4:
                nets_v4.append(ipaddress.IPv4Network((value, plen)))
            else:
                nets_v6.append(ipaddress.IPv6Network((value, plen)))
    merged_v4 = tuple(ipaddress.collapse_addresses(nets_v4))
    merged_v6 = tuple(ipaddress.collapse_addresses(nets_v6))
    covered_v4 = _coverage(merged_v4, 32)
    covered_v6 = _coverage(merged_v6, 128)
    exact_v4: set[ipaddress.IPv4Address] = set()
    exact_v6: set[ipaddress.IPv6Address] = set()
    for packed in exact:
        if len(packed) == 4:
            if not covered_v4(int.from_bytes(packed, "big")):
                exact_v4.add(ipaddress.IPv4Address(packed))
        elif not covered_v6(int.from_bytes(packed, "big")):
            exact_v6.add(ipaddress.IPv6Address(packed))
    return frozenset(exact_v4), frozenset(exact_v6), merged_v4, merged_v6


def _coverage(
    networks: Sequence[ipaddress.IPv4Network] | Sequence[ipaddress.IPv6Network], bits: int
) -> Callable[[int], bool]:
    """A test 'is this address (as int) inside one of `networks`?'."""
    by_len: dict[int, set[int]] = defaultdict(set)
    for net in networks:
        by_len[net.prefixlen].add(int(net.network_address))
    masks = [
        (((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1), starts) for plen, starts in by_len.items()
    ]

    def covered(value: int) -> bool:
        return any((value & mask) in starts for mask, starts in masks)

    return covered
